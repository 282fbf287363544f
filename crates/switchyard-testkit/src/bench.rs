//! The benchmark's own tools as real processes: `switchyard backend` with
//! the options `scripts/bench-proxies` relies on (capacity, streamed bytes,
//! upload sink), and `switchyard load` run to its end with its JSON report,
//! so a test can check that what the benchmark measures is real.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;

use crate::process::ChildProcess;

pub struct BackendProcess {
    pub addr: SocketAddr,
    _process: ChildProcess,
}

impl BackendProcess {
    /// `switchyard backend --listen ADDR EXTRA…`, once its `/health` answers;
    /// its log is `dir/backend-PORT.log`.
    pub async fn start(bin: &Path, addr: SocketAddr, dir: &Path, extra: &[&str]) -> Self {
        let mut args: Vec<OsString> =
            vec!["backend".into(), "--listen".into(), addr.to_string().into()];
        args.extend(extra.iter().map(OsString::from));
        let log = dir.join(format!("backend-{}-{}.log", addr.ip(), addr.port()));
        BackendProcess {
            addr,
            _process: ChildProcess::start(&format!("backend {addr}"), bin, args, log, addr).await,
        }
    }
}

/// Runs `switchyard load ARGS --json` to its end: its report, or what it
/// printed on failure.
pub async fn load(bin: &Path, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = tokio::process::Command::new(bin)
        .arg("load")
        .args(args)
        .arg("--json")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("spawn switchyard load: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "switchyard load {args:?}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).map_err(|e| format!("switchyard load {args:?}: {e} in {stdout:?}"))
}

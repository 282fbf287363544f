//! `switchyard control` as a real child process, and `switchyard ctl` run
//! against it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::process::ChildProcess;

pub struct ControlProcess {
    pub addr: SocketAddr,
    process: ChildProcess,
}

impl ControlProcess {
    pub async fn start(bin: &Path, config: &Path, addr: SocketAddr, dir: &Path) -> ControlProcess {
        ControlProcess::start_with(bin, config, addr, dir, &[]).await
    }

    /// [`ControlProcess::start`] with more flags for `switchyard control`
    /// (e.g. `--adopt`).
    pub async fn start_with(
        bin: &Path,
        config: &Path,
        addr: SocketAddr,
        dir: &Path,
        flags: &[&str],
    ) -> ControlProcess {
        let mut args: Vec<std::ffi::OsString> =
            vec!["control".into(), "--config".into(), config.into()];
        args.extend(flags.iter().map(|f| f.into()));
        let log = dir.join("control.log");
        ControlProcess {
            addr,
            process: ChildProcess::start("control plane", bin, args, log, addr).await,
        }
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    pub async fn restart(&mut self) {
        self.process.restart().await;
    }

    /// SIGTERM and the exit status within `within` (`None`: it hung).
    pub async fn terminate(
        &mut self,
        within: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        self.process.terminate(within).await
    }

    /// The typed API client of this control plane, acting with `token`.
    pub fn api(&self, token: Option<&str>) -> switchyard_api::Client {
        switchyard_api::Client::new(&format!("http://{}", self.addr), token.map(str::to_string))
    }

    /// `switchyard ctl --json ARGS` against this control plane: (exit code, parsed JSON output).
    pub fn ctl(&self, token: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
        let out = Command::new(self.process.bin())
            .args([
                "ctl",
                "--json",
                "--url",
                &format!("http://{}", self.addr),
                "--token",
                token,
            ])
            .args(args)
            .output()
            .expect("run switchyard ctl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let v = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
        (
            out.status.code().unwrap_or(-1),
            v,
            format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        )
    }
}

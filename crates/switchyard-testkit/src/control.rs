//! `switchyard control` as a real child process, and `switchyard ctl` run
//! against it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::process::ChildProcess;

pub struct ControlProcess {
    pub addr: SocketAddr,
    /// Set when the plane serves HTTPS: the CA its certificate comes from.
    ca: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
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
            ca: None,
            process: ChildProcess::start("control plane", bin, args, log, addr).await,
        }
    }

    /// A plane serving HTTPS (`[control.tls]` in `config`) with a
    /// certificate issued by the CA in `ca_file`.
    pub async fn start_https(
        bin: &Path,
        config: &Path,
        addr: SocketAddr,
        dir: &Path,
        ca_file: &Path,
    ) -> ControlProcess {
        let ca = switchyard_api::tls::read_ca_file(&ca_file.display().to_string())
            .expect("the test CA file");
        let args = vec!["control".into(), "--config".into(), config.into()];
        let log = dir.join("control.log");
        ControlProcess {
            addr,
            ca: Some(ca.clone()),
            process: ChildProcess::start_https("control plane", bin, args, log, addr, ca).await,
        }
    }

    /// The plane's base URL.
    pub fn url(&self) -> String {
        match self.ca {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    pub async fn restart(&mut self) {
        self.process.restart().await;
    }

    /// SIGSTOP: frozen mid-flight (a GC pause, a stalled VM), sockets open.
    pub fn pause(&self) {
        self.process.pause();
    }

    /// SIGCONT: wakes a paused plane where it stopped.
    pub fn resume(&self) {
        self.process.resume();
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
        switchyard_api::Client::with_roots(
            &self.url(),
            token.map(str::to_string),
            std::time::Duration::from_secs(10),
            self.ca.as_deref().unwrap_or_default(),
        )
        .expect("a client trusting the test CA")
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

    /// `switchyard ctl --json ARGS` that the plane must refuse: exit code 1
    /// ("refused by the server"), and the plane's typed error body.
    pub fn ctl_refused(&self, token: &str, args: &[&str]) -> switchyard_api::ErrorBody {
        let (code, v, out) = self.ctl(token, args);
        assert_eq!(code, 1, "refused by the plane: {out}");
        serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("not the plane's error body ({e}): {v}"))
    }
}

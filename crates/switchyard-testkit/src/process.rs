//! A `switchyard` subcommand as a real child process: started with its output
//! in a log file, waited for until its `/health` answers, killed with SIGKILL
//! and restarted. The edge and the control plane differ only in their
//! arguments and in what a test asks of them afterwards, so both are built on
//! this one piece.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::Req;

/// How long a process may take to answer `/health` before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A program a test needs from the system (etcd, BIND's named, chromium):
/// the first `name` on PATH or in `also` (Debian puts daemons in sbin, often
/// not on a user's PATH). Tests never skip when it is missing — that would
/// hide what went untested — so its absence fails them with `install`, how
/// to get it.
pub fn system_binary(name: &str, also: &[&str], install: &str) -> PathBuf {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(also.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH: {install}"))
}

pub struct ChildProcess {
    /// Names the process in failure messages (`edge us-east-a`, `control plane`).
    what: String,
    bin: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    health: SocketAddr,
    /// Set when `/health` is served over HTTPS: the CA that issued the
    /// process's certificate.
    health_ca: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
    child: Option<Child>,
}

impl ChildProcess {
    /// Runs `bin --exit-on-stdin-eof ARGS` and returns once `health` answers
    /// `/health` with a success. The flag and the piped stdin tie the child's
    /// life to the test's even when the test process is killed.
    pub async fn start(
        what: &str,
        bin: &Path,
        args: Vec<OsString>,
        log: PathBuf,
        health: SocketAddr,
    ) -> ChildProcess {
        let mut p = ChildProcess {
            what: what.into(),
            bin: bin.into(),
            args,
            log,
            health,
            health_ca: None,
            child: None,
        };
        p.spawn().await;
        p
    }

    /// [`ChildProcess::start`] for a process serving `/health` over HTTPS
    /// with a certificate issued by `ca` for the health address.
    pub async fn start_https(
        what: &str,
        bin: &Path,
        args: Vec<OsString>,
        log: PathBuf,
        health: SocketAddr,
        ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    ) -> ChildProcess {
        let mut p = ChildProcess {
            what: what.into(),
            bin: bin.into(),
            args,
            log,
            health,
            health_ca: Some(ca),
            child: None,
        };
        p.spawn().await;
        p
    }

    async fn healthy(&self) -> bool {
        match &self.health_ca {
            None => Req::get(self.health, "/health")
                .send()
                .await
                .is_ok_and(|r| r.status.is_success()),
            Some(ca) => switchyard_api::Client::with_roots(
                &format!("https://{}", self.health),
                None,
                Duration::from_secs(2),
                ca,
            )
            .expect("a TLS client trusting the test CA")
            .health()
            .await
            .is_ok(),
        }
    }

    async fn spawn(&mut self) {
        // Appended, so a restarted process's log follows the killed one's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("{} log: {e}", self.what));
        let child = Command::new(&self.bin)
            .arg("--exit-on-stdin-eof")
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.what));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("{} exited with {st} at start:\n{}", self.what, self.log());
            }
            if self.healthy().await {
                return;
            }
            if Instant::now() > deadline {
                panic!("{} did not come up:\n{}", self.what, self.log());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    /// SIGTERM, then waits up to `within` for the process to exit: its exit
    /// status, or `None` if it was still running (it is then killed).
    pub async fn terminate(
        &mut self,
        within: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// SIGSTOP: the process stays, frozen, holding its sockets and its
    /// memory, as in a long GC pause or a stalled VM; `resume` wakes it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`ChildProcess::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.what));
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} ({}) failed", self.what);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

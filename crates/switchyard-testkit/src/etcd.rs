//! A real etcd cluster on free loopback ports for tests, killed on drop.
//! Tests never skip when etcd is missing: that would hide that the etcd
//! backend went untested.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::client::Req;

/// One member of a cluster.
pub struct Etcd {
    child: Child,
    /// How it was started, to start it again on the same data.
    command: (PathBuf, Vec<String>),
    /// `http://127.0.0.1:PORT` (`https://` with TLS), what clients use.
    pub endpoint: String,
    /// Where `/health` answers over plain HTTP: the client port, or with
    /// TLS a metrics port of its own (the client port wants a certificate).
    health: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn etcd_binary() -> PathBuf {
    crate::process::system_binary(
        "etcd",
        &[],
        "the etcd tests need a real etcd server; install Debian's etcd-server \
         (`apt-get install etcd-server`), or run scripts/test, which installs it",
    )
}

/// A port nothing listens on right now. The OS may hand a released port out
/// again, so the ones already given out here are remembered: tests run in
/// parallel and must not start two members on one port.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind an ephemeral port")
            .local_addr()
            .expect("local address")
            .port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// PEM files for a member serving its clients over TLS and requiring a
/// client certificate signed by `ca` (`--client-cert-auth`).
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Etcd {
    /// A one-member cluster, serving.
    pub async fn start() -> Etcd {
        Etcd::cluster(1).await.pop().expect("one member")
    }

    /// A one-member cluster serving clients over TLS with client
    /// certificates required.
    pub async fn start_tls(tls: &EtcdTls) -> Etcd {
        Etcd::start_members(1, Some(tls))
            .await
            .pop()
            .expect("one member")
    }

    /// `n` members forming one cluster, all serving.
    pub async fn cluster(n: usize) -> Vec<Etcd> {
        Etcd::start_members(n, None).await
    }

    async fn start_members(n: usize, tls: Option<&EtcdTls>) -> Vec<Etcd> {
        let binary = etcd_binary();
        for attempt in 1.. {
            let mut members = Etcd::spawn(&binary, n, tls);
            match Etcd::wait_ready(&mut members).await {
                Ok(()) => return members,
                // Something outside these tests took a port between our probe
                // and etcd's bind; new ports will do.
                Err(e) if attempt < 3 && e.contains("address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }

    fn spawn(binary: &Path, n: usize, tls: Option<&EtcdTls>) -> Vec<Etcd> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let dir = tempfile::tempdir().expect("temp dir");
                let scheme = if tls.is_some() { "https" } else { "http" };
                let endpoint = format!("{scheme}://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let log = dir.path().join("etcd.log");
                let mut args: Vec<String> = vec![
                    "--name".into(),
                    format!("m{i}"),
                    "--data-dir".into(),
                    dir.path().join("data").display().to_string(),
                    "--listen-client-urls".into(),
                    endpoint.clone(),
                    "--advertise-client-urls".into(),
                    endpoint.clone(),
                    "--listen-peer-urls".into(),
                    peer_url.clone(),
                    "--initial-advertise-peer-urls".into(),
                    peer_url,
                    "--initial-cluster".into(),
                    initial_cluster.clone(),
                ];
                let mut health = SocketAddr::from(([127, 0, 0, 1], *client));
                if let Some(t) = tls {
                    let metrics = free_port();
                    health = SocketAddr::from(([127, 0, 0, 1], metrics));
                    args.extend([
                        "--cert-file".into(),
                        t.cert.display().to_string(),
                        "--key-file".into(),
                        t.key.display().to_string(),
                        "--trusted-ca-file".into(),
                        t.ca.display().to_string(),
                        "--client-cert-auth".into(),
                        "--listen-metrics-urls".into(),
                        format!("http://127.0.0.1:{metrics}"),
                    ]);
                }
                let child = Etcd::run(binary, &args, &log);
                Etcd {
                    child,
                    command: (binary.to_path_buf(), args),
                    endpoint,
                    health,
                    log,
                    _dir: dir,
                }
            })
            .collect()
    }

    fn run(binary: &Path, args: &[String], log: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("etcd log");
        Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
    }

    /// Starts a killed member again on its data; it rejoins its cluster.
    pub fn restart(&mut self) {
        self.kill9();
        self.child = Etcd::run(&self.command.0, &self.command.1, &self.log);
    }

    /// Every member answers its health check (which needs a leader).
    async fn wait_ready(members: &mut [Etcd]) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for m in members {
            loop {
                if let Some(status) = m.child.try_wait().map_err(|e| e.to_string())? {
                    return Err(format!(
                        "etcd at {} exited ({status}) before serving:\n{}",
                        m.endpoint,
                        m.log_tail()
                    ));
                }
                let healthy = Req::get(m.health, "/health")
                    .send()
                    .await
                    .is_ok_and(|r| r.status.is_success() && r.body.contains("true"));
                if healthy {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "etcd at {} did not serve within 30s:\n{}",
                        m.endpoint,
                        m.log_tail()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// The last lines of the member's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills the member (SIGKILL).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill9();
    }
}

//! `switchyard edge` as a real child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{Reply, Req};
use crate::ADMIN_TOKEN;

pub struct EdgeProcess {
    pub zone: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl EdgeProcess {
    pub async fn start(
        bin: &Path,
        config: &Path,
        zone: &str,
        listen: SocketAddr,
        admin: SocketAddr,
        dir: &Path,
    ) -> EdgeProcess {
        let mut e = EdgeProcess {
            zone: zone.into(),
            listen,
            admin,
            bin: bin.into(),
            config: config.into(),
            log: dir.join(format!("edge-{zone}.log")),
            child: None,
        };
        e.spawn().await;
        e
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("edge log");
        let child = Command::new(&self.bin)
            .args(["--exit-on-stdin-eof", "edge", "--config"])
            .arg(&self.config)
            .args(["--zone", &self.zone])
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn switchyard edge");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "edge {} exited with {st} at start:\n{}",
                    self.zone,
                    self.log()
                );
            }
            if let Ok(r) = Req::get(self.admin, "/health").send().await {
                if r.status.is_success() {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!("edge {} did not come up:\n{}", self.zone, self.log());
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

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A client request to this edge for the test service.
    pub fn get(&self, path: &str) -> Req {
        Req::get(self.listen, path).host(crate::topology::HOST)
    }

    pub fn put(&self, path: &str) -> Req {
        Req::put(self.listen, path).host(crate::topology::HOST)
    }

    pub async fn put_controls(&self, controls: &serde_json::Value) -> Reply {
        Req::put(self.admin, "/controls")
            .bearer(ADMIN_TOKEN)
            .body(controls.to_string())
            .send()
            .await
            .expect("admin answers")
    }

    pub async fn status(&self) -> serde_json::Value {
        Req::get(self.admin, "/status")
            .send()
            .await
            .expect("admin answers")
            .json()
    }

    pub async fn metrics(&self) -> String {
        Req::get(self.admin, "/metrics")
            .send()
            .await
            .expect("admin answers")
            .body
    }

    /// Sends requests through the edge until `instance` reports `health`
    /// (`healthy`, `ejected` or `probing`) in `/status`.
    pub async fn drive_until_health(&self, instance: &str, health: &str, within: Duration) {
        crate::eventually(&format!("{instance} is {health}"), within, || async {
            let _ = self.get("/items/1").send().await;
            let i = self.instance(instance).await;
            (i["health"] == health).then_some(()).ok_or(i.to_string())
        })
        .await;
    }

    /// The `/status` entry of one instance of the test service.
    pub async fn instance(&self, name: &str) -> serde_json::Value {
        let s = self.status().await;
        s["services"][0]["instances"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no instance {name} in {s}"))
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `switchyard control` as a real child process.
pub struct ControlProcess {
    pub addr: SocketAddr,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl ControlProcess {
    pub async fn start(bin: &Path, config: &Path, addr: SocketAddr, dir: &Path) -> ControlProcess {
        let mut c = ControlProcess {
            addr,
            bin: bin.into(),
            config: config.into(),
            log: dir.join("control.log"),
            child: None,
        };
        c.spawn().await;
        c
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("control log");
        self.child = Some(
            Command::new(&self.bin)
                .args(["--exit-on-stdin-eof", "control", "--config"])
                .arg(&self.config)
                .env("RUST_LOG", "info")
                .stdin(Stdio::piped())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn switchyard control"),
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "control plane exited with {st} at start:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok(r) = Req::get(self.addr, "/health").send().await {
                if r.status.is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "control plane did not come up:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

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

    /// The typed API client of this control plane, acting with `token`.
    pub fn api(&self, token: Option<&str>) -> switchyard_api::Client {
        switchyard_api::Client::new(&format!("http://{}", self.addr), token.map(str::to_string))
    }

    /// `switchyard ctl --json ARGS` against this control plane: (exit code, parsed JSON output).
    pub fn ctl(&self, token: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
        let out = Command::new(&self.bin)
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

impl Drop for ControlProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

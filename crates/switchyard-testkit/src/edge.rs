//! `switchyard edge` as a real child process, with the requests a test sends
//! through it and to its admin API.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::client::{Reply, Req};
use crate::process::ChildProcess;
use crate::{ADMIN_TOKEN, HOST};

pub struct EdgeProcess {
    pub zone: String,
    pub listen: SocketAddr,
    /// The TLS listener, when the topology gives the edge one.
    pub listen_tls: Option<SocketAddr>,
    pub admin: SocketAddr,
    process: ChildProcess,
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
        Self::start_with(bin, config, zone, (listen, admin), dir, &[]).await
    }

    /// [`EdgeProcess::start`] with more `switchyard edge` arguments.
    pub async fn start_with(
        bin: &Path,
        config: &Path,
        zone: &str,
        (listen, admin): (SocketAddr, SocketAddr),
        dir: &Path,
        extra: &[&str],
    ) -> EdgeProcess {
        let mut args: Vec<std::ffi::OsString> = vec![
            "edge".into(),
            "--config".into(),
            config.into(),
            "--zone".into(),
            zone.into(),
        ];
        args.extend(extra.iter().map(Into::into));
        let log = dir.join(format!("edge-{zone}.log"));
        EdgeProcess {
            zone: zone.into(),
            listen,
            listen_tls: None,
            admin,
            process: ChildProcess::start(&format!("edge {zone}"), bin, args, log, admin).await,
        }
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    pub async fn restart(&mut self) {
        self.process.restart().await;
    }

    /// SIGTERM, then waits up to `within` for the edge to exit (see
    /// [`ChildProcess::terminate`]).
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.process.terminate(within).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// A client request to this edge for the test service.
    pub fn get(&self, path: &str) -> Req {
        Req::get(self.listen, path).host(HOST)
    }

    pub fn put(&self, path: &str) -> Req {
        Req::put(self.listen, path).host(HOST)
    }

    pub async fn put_controls(&self, controls: &serde_json::Value) -> Reply {
        Req::put(self.admin, "/controls")
            .bearer(ADMIN_TOKEN)
            .body(controls.to_string())
            .send()
            .await
            .expect("admin answers")
    }

    /// The edge's admin status, typed.
    pub async fn status(&self) -> switchyard_api::edge::EdgeStatus {
        let r = Req::get(self.admin, "/status")
            .send()
            .await
            .expect("admin answers");
        serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("unreadable status ({e}): {}", r.body))
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
    pub async fn drive_until_health(
        &self,
        instance: &str,
        health: switchyard_api::edge::Health,
        within: Duration,
    ) {
        crate::eventually(&format!("{instance} is {health:?}"), within, || async {
            let _ = self.get("/items/1").send().await;
            let i = self.instance(instance).await;
            (i.health == health).then_some(()).ok_or(format!("{i:?}"))
        })
        .await;
    }

    /// Waits until the active health check of `instance` is in `state`,
    /// and returns its view then.
    pub async fn wait_check(
        &self,
        instance: &str,
        state: switchyard_api::edge::CheckState,
        within: Duration,
    ) -> switchyard_api::edge::CheckView {
        crate::eventually(
            &format!("{instance}'s check is {state:?}"),
            within,
            || async {
                let c = self.instance(instance).await.check;
                (c.state == state).then_some(()).ok_or(format!("{c:?}"))
            },
        )
        .await;
        self.instance(instance).await.check
    }

    /// The `/status` entry of one instance of the test service.
    /// One instance of the edge's first service.
    pub async fn instance(&self, name: &str) -> switchyard_api::edge::InstanceView {
        let s = self.status().await;
        s.services[0]
            .instance(name)
            .cloned()
            .unwrap_or_else(|| panic!("no instance {name} in {s:?}"))
    }
}

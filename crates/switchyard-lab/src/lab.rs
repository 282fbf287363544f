//! The whole topology on one machine: stores, links, catalog instances and
//! edges, as real processes (links run inside the lab process), plus the
//! helpers drills use to break things and to ask the edges what they see.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::link::{Link, LinkSettings};
use crate::load::{self, Group, GroupDns, Recorder};
use crate::procs::{wait_listening, Supervisor};
use crate::resolve::Resolver;
use crate::topology::{Topology, ADMIN_TOKEN, DNS_USERS, HOST};

pub struct Lab {
    pub topo: Topology,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub procs: Supervisor,
    pub links: Arc<BTreeMap<String, Link>>,
    /// What the control plane told people (its receivers point here).
    pub inbox: crate::inbox::Inbox,
    /// The lab's control plane, with the lab's admin token.
    pub api: switchyard_api::Client,
    /// The lab's own servers; dropping the set stops them.
    _tasks: tokio::task::JoinSet<()>,
}

/// What a control write to the edges achieved.
#[derive(Debug)]
pub struct EdgeAnswer {
    pub zone: String,
    pub status: u16,
    pub body: String,
}

impl Lab {
    /// Starts everything and waits until every part listens.
    pub async fn start(topo: Topology, dir: &Path, bin: &Path) -> anyhow::Result<Lab> {
        std::fs::create_dir_all(dir)?;
        let state = dir.join("state");
        let config_path = dir.join("switchyard.toml");
        std::fs::write(
            &config_path,
            topo.switchyard_config(&state.display().to_string(), Some(topo.service.min_healthy)),
        )?;
        let mut procs = Supervisor::new(bin, &dir.join("logs"))?;
        for r in &topo.regions {
            let mut args = vec![
                "lab".into(),
                "store".into(),
                "--listen".into(),
                topo.store_addr(&r.name).to_string(),
                "--region".into(),
                r.name.clone(),
            ];
            if let Some(peer) = topo.replication_peer(&r.name) {
                args.extend(["--peer".into(), peer.to_string()]);
            }
            procs.start(&format!("store-{}", r.name), args)?;
        }
        let mut links = BTreeMap::new();
        for plan in topo.links() {
            links.insert(
                plan.name.clone(),
                Link::start(&plan.name, &plan.pipes).await?,
            );
        }
        for (name, zone, addr) in topo.all_instances() {
            procs.start(
                &name,
                vec![
                    "lab".into(),
                    "catalog".into(),
                    "--listen".into(),
                    addr.to_string(),
                    "--name".into(),
                    name.clone(),
                    "--zone".into(),
                    zone.clone(),
                    "--store".into(),
                    topo.store_link_addr(&zone).to_string(),
                ],
            )?;
        }
        let cfg = config_path.display().to_string();
        if topo.control_plane {
            procs.start(
                "control",
                vec!["control".into(), "--config".into(), cfg.clone()],
            )?;
            let addr = crate::topology::CONTROL_ADDR
                .parse()
                .expect("valid address");
            if let Err(e) = wait_listening(addr, Duration::from_secs(20)).await {
                anyhow::bail!(
                    "the control plane did not start: {e} (log in {})",
                    dir.join("logs/control.log").display()
                );
            }
        }
        for (_, zone) in topo.zones() {
            procs.start(
                &format!("edge-{zone}"),
                vec![
                    "edge".into(),
                    "--config".into(),
                    cfg.clone(),
                    "--zone".into(),
                    zone.into(),
                    "--workers".into(),
                    "1".into(),
                ],
            )?;
        }
        let inbox = crate::inbox::Inbox::default();
        let mut tasks = tokio::task::JoinSet::new();
        if topo.control_plane {
            inbox
                .serve(
                    crate::inbox::ADDR.parse().expect("valid address"),
                    &mut tasks,
                )
                .await?;
        }
        let mut lab = Lab {
            topo,
            dir: dir.into(),
            config_path,
            procs,
            links: Arc::new(links),
            inbox,
            api: switchyard_api::Client::new(
                &format!("http://{}", crate::topology::CONTROL_ADDR),
                Some(ADMIN_TOKEN.to_string()),
            ),
            _tasks: tasks,
        };
        lab.wait_ready().await?;
        // After the edges listen: a DNS server whose first probes found
        // them not yet up would count their region as returning.
        if lab.topo.dns {
            for (name, _, admin) in lab.topo.dns_servers() {
                lab.procs.start(
                    &format!("dns-{name}"),
                    vec![
                        "dns".into(),
                        "--config".into(),
                        cfg.clone(),
                        "--name".into(),
                        name.clone(),
                    ],
                )?;
                if let Err(e) = wait_listening(admin, Duration::from_secs(20)).await {
                    anyhow::bail!(
                        "DNS server {name} did not start: {e} (log in {})",
                        lab.dir.join(format!("logs/dns-{name}.log")).display()
                    );
                }
            }
        }
        Ok(lab)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let mut addrs: Vec<SocketAddr> = self
            .topo
            .regions
            .iter()
            .map(|r| self.topo.store_addr(&r.name))
            .collect();
        addrs.extend(self.topo.all_instances().into_iter().map(|(_, _, a)| a));
        for (_, z) in self.topo.zones() {
            addrs.push(self.topo.edge_addr(z));
            addrs.push(self.topo.admin_addr(z));
        }
        for a in addrs {
            if let Err(e) = wait_listening(a, Duration::from_secs(20)).await {
                let exited = self.procs.exited();
                anyhow::bail!(
                    "{e}; processes that exited: {exited:?} (logs in {})",
                    self.dir.join("logs").display()
                );
            }
        }
        Ok(())
    }

    /// The zones of a region, by name.
    pub fn region_zones(&self, region: &str) -> anyhow::Result<Vec<String>> {
        self.topo
            .regions
            .iter()
            .find(|r| r.name == region)
            .map(|r| r.zones.clone())
            .ok_or_else(|| anyhow::anyhow!("no region {region:?}"))
    }

    pub fn edge_zones(&self) -> Vec<String> {
        self.topo.zones().map(|(_, z)| z.to_string()).collect()
    }

    /// Client groups as the topology describes them.
    pub fn groups(&self) -> Vec<Group> {
        let region_of = Arc::new(self.topo.region_of_edges());
        let zone_of = Arc::new(self.topo.zone_of_edges());
        let servers: Vec<SocketAddr> = self
            .topo
            .dns_servers()
            .into_iter()
            .map(|(_, l, _)| l)
            .collect();
        self.topo
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| Group {
                name: c.name.clone(),
                source: self.topo.client_source(i),
                region: c.region.clone(),
                edges: self.topo.regions[self.topo.region_index(&c.region).expect("checked") - 1]
                    .zones
                    .iter()
                    .map(|z| self.topo.edge_addr(z))
                    .collect(),
                dns: self.topo.dns.then(|| GroupDns {
                    resolver: Resolver {
                        servers: servers.clone(),
                        source: self.topo.client_source(i),
                        name: HOST.into(),
                        port: 8080,
                        timeout: Duration::from_millis(300),
                    },
                    users: DNS_USERS,
                }),
                region_of: region_of.clone(),
                zone_of: zone_of.clone(),
                host: HOST.into(),
                home: c.home.clone(),
                rate: c.rate,
                write_percent: c.write_percent,
                timeout: Duration::from_secs(2),
            })
            .collect()
    }

    /// Starts every client group; they run until `stop` is set.
    pub fn start_load(
        &self,
        rec: &Arc<Recorder>,
        stop: &Arc<AtomicBool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.groups()
            .into_iter()
            .map(|g| tokio::spawn(load::run_group(g, rec.clone(), stop.clone())))
            .collect()
    }

    pub fn set_link(&self, name: &str, s: LinkSettings) -> anyhow::Result<()> {
        let l = self.links.get(name).ok_or_else(|| {
            anyhow::anyhow!(
                "no link {name:?} (links: {})",
                self.links.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        l.set(s).map_err(|e| anyhow::anyhow!("link {name}: {e}"))
    }

    /// Makes a region's store turn away `percent` % of writes (0 takes them
    /// all again).
    pub async fn store_writes(&self, region: &str, percent: f64) -> anyhow::Result<()> {
        let knob = crate::store::WritesKnob {
            reject: None,
            reject_percent: Some(percent),
        };
        self.store_knob(region, "/admin/writes", serde_json::to_vec(&knob)?)
            .await
    }

    /// Adds latency to a region's store (a zero delay removes it).
    pub async fn store_latency(
        &self,
        region: &str,
        latency: &crate::store::StoreLatency,
    ) -> anyhow::Result<()> {
        self.store_knob(region, "/admin/latency", serde_json::to_vec(latency)?)
            .await
    }

    async fn store_knob(&self, region: &str, path: &str, body: Vec<u8>) -> anyhow::Result<()> {
        if !self.topo.regions.iter().any(|r| r.name == region) {
            anyhow::bail!("no region {region:?}");
        }
        let (s, b) = crate::http::call(
            self.topo.store_addr(region),
            Method::POST,
            path,
            Bytes::from(body),
            std::time::Duration::from_secs(2),
        )
        .await
        .map_err(|e| anyhow::anyhow!("store of {region}: {e}"))?;
        if !s.is_success() {
            anyhow::bail!(
                "store of {region} answered {s}: {}",
                String::from_utf8_lossy(&b)
            );
        }
        Ok(())
    }

    /// Sets one catalog instance's fault knob (the default clears it).
    pub async fn instance_fault(
        &self,
        instance: &str,
        fault: &crate::catalog::InstanceFault,
    ) -> anyhow::Result<()> {
        let Some((_, _, addr)) = self
            .topo
            .all_instances()
            .into_iter()
            .find(|(n, _, _)| n == instance)
        else {
            anyhow::bail!("no instance {instance:?}");
        };
        crate::catalog::set_fault(addr, fault)
            .await
            .map_err(|e| anyhow::anyhow!("instance {instance}: {e}"))?;
        Ok(())
    }

    /// Sends a controls document to the edges of `zones`.
    pub async fn put_controls(
        &self,
        zones: &[String],
        controls: &switchyard_model::Controls,
    ) -> Vec<EdgeAnswer> {
        self.ask_edges(
            zones,
            Method::PUT,
            "/controls",
            Bytes::from(serde_json::to_vec(controls).expect("controls serialize")),
        )
        .await
    }

    /// Writes a new config for the edges and asks each to reload it.
    pub async fn push_config(&self, text: &str) -> anyhow::Result<Vec<EdgeAnswer>> {
        std::fs::write(&self.config_path, text)?;
        Ok(self
            .ask_edges(&self.edge_zones(), Method::POST, "/reload", Bytes::new())
            .await)
    }

    /// One admin call to each edge of `zones`, with every answer kept.
    async fn ask_edges(
        &self,
        zones: &[String],
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Vec<EdgeAnswer> {
        let mut out = Vec::new();
        for z in zones {
            let r = admin_call(self.topo.admin_addr(z), method.clone(), path, body.clone()).await;
            out.push(EdgeAnswer {
                zone: z.clone(),
                status: r.as_ref().map(|x| x.0.as_u16()).unwrap_or(0),
                body: r
                    .map(|x| String::from_utf8_lossy(&x.1).into_owned())
                    .unwrap_or_else(|e| e),
            });
        }
        out
    }

    /// One edge's admin status; `None` when it does not answer (or
    /// answers something this build cannot read).
    pub async fn edge_status(&self, zone: &str) -> Option<switchyard_api::edge::EdgeStatus> {
        edge_status_at(self.topo.admin_addr(zone)).await
    }

    pub async fn replication(&self, region: &str) -> Option<crate::store::Replication> {
        crate::http::get_json(
            self.topo.store_addr(region),
            "/replication",
            Duration::from_secs(1),
        )
        .await
    }

    /// A readable list of where everything listens.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let t = &self.topo;
        for r in &t.regions {
            s.push_str(&format!(
                "region {}  store {}\n",
                r.name,
                t.store_addr(&r.name)
            ));
            for z in &r.zones {
                let inst: Vec<String> = t
                    .instances(z)
                    .iter()
                    .map(|(n, a)| format!("{n} {a}"))
                    .collect();
                s.push_str(&format!(
                    "  zone {:<10} edge {}  admin http://{}  instances: {}\n",
                    z,
                    t.edge_addr(z),
                    t.admin_addr(z),
                    inst.join(", ")
                ));
            }
        }
        s.push_str(&format!(
            "links: {}\n",
            self.links.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        if t.control_plane {
            s.push_str(&format!(
                "control plane http://{}  incidents /v1/incidents  status feed /v1/status-feed\nnotifications received: http://{}/received\n",
                crate::topology::CONTROL_ADDR,
                crate::inbox::ADDR
            ));
            s.push_str(&format!(
                "console http://{}/ui/  log in with {} (operate), {} (read only) or {} (admin)\n",
                crate::topology::CONTROL_ADDR,
                crate::topology::OPERATE_TOKEN,
                crate::topology::READ_TOKEN,
                crate::topology::ADMIN_TOKEN,
            ));
        }
        if t.dns {
            for (name, listen, admin) in t.dns_servers() {
                s.push_str(&format!(
                    "dns {name} {listen} (UDP and TCP)  status http://{admin}/status\n"
                ));
            }
        }
        for (i, c) in t.clients.iter().enumerate() {
            let to = if t.dns {
                format!(
                    "{} users in {} resolving {HOST} through DNS",
                    DNS_USERS, c.region
                )
            } else {
                format!("to {} edges", c.region)
            };
            s.push_str(&format!(
                "clients {:<10} from {} {to}, {}/s, {}% writes, home {}\n",
                c.name,
                t.client_source(i),
                c.rate,
                c.write_percent,
                c.home.as_deref().unwrap_or("-")
            ));
        }
        s.push_str(&format!(
            "config {}  logs {}\n",
            self.config_path.display(),
            self.dir.join("logs").display()
        ));
        s.push_str(&format!(
            "try: curl -H 'Host: {HOST}' http://{}/items/1\n",
            t.edge_addr(&t.regions[0].zones[0])
        ));
        if let (true, Some((_, ns, _)), std::net::IpAddr::V4(c)) =
            (t.dns, t.dns_servers().first(), t.client_source(0))
        {
            let o = c.octets();
            s.push_str(&format!(
                "     dig @{} -p {} {HOST} +subnet={}.{}.{}.0/24\n",
                ns.ip(),
                ns.port(),
                o[0],
                o[1],
                o[2]
            ));
        }
        s
    }
}

/// The admin status of the edge at `admin`; `None` when it does not
/// answer (or answers something this build cannot read).
pub async fn edge_status_at(admin: SocketAddr) -> Option<switchyard_api::edge::EdgeStatus> {
    let (s, b) = admin_call(admin, Method::GET, "/status", Bytes::new())
        .await
        .ok()?;
    (s == StatusCode::OK)
        .then(|| serde_json::from_slice(&b).ok())
        .flatten()
}

async fn admin_call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    // Admin writes need the token; the helper adds it for every call.
    let fut = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake::<
            _,
            http_body_util::Full<Bytes>,
        >(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(http_body_util::Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(3), fut)
        .await
        .map_err(|_| "timeout".to_string())?
}

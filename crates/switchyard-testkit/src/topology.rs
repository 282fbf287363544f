//! A test topology: regions, zones and one service with instances, written as
//! a real config file on unique loopback addresses so tests can run side by side.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::control::ControlProcess;
use crate::edge::EdgeProcess;
use crate::upstream::Upstream;
use crate::{ADMIN_TOKEN, FORWARD_SECRET, HOST};

/// Each topology in a test process takes its own second octet of 127/8.
static NEXT: AtomicU8 = AtomicU8::new(0);

pub struct Topology {
    bin: PathBuf,
    dir: tempfile::TempDir,
    octet: u8,
    regions: Vec<(String, Vec<String>)>,
    pub min_healthy: Option<f64>,
    pub per_zone: usize,
    service_extra: String,
    /// Extra keys per route name, written into that `[[service.route]]`.
    route_extra: Vec<(String, String)>,
    edge_extra: String,
    /// The body of `[edge.tls]`; with it every zone gets an `edge_tls` address.
    edge_tls: Option<String>,
    /// The body of `[edge.peer_tls]` (needs `edge_tls`).
    peer_tls: Option<String>,
    forward_secret: bool,
    route_heartbeats: bool,
    control_extra: String,
    control: bool,
    playbooks: Option<String>,
    /// `etcd:ENDPOINT` when the control planes share an etcd, else SQLite.
    control_store: Option<String>,
    /// The CA file of an HTTPS control plane.
    control_ca: Option<PathBuf>,
    /// `[dns]` with this many servers (`ns1`, `ns2`, …); 0: none.
    dns_servers: u8,
    dns_extra: String,
    dns_probe_ms: u64,
}

impl Topology {
    /// `bin` is the `switchyard` binary (`env!("CARGO_BIN_EXE_switchyard")`);
    /// `regions` lists each region with its zones, in preference order.
    pub fn new(bin: &str, regions: &[(&str, &[&str])]) -> Topology {
        let base = (std::process::id() % 8) as u8 * 24;
        let octet = 10 + base + NEXT.fetch_add(1, Ordering::Relaxed) % 24;
        Topology {
            bin: bin.into(),
            dir: tempfile::Builder::new()
                .prefix("switchyard-test-")
                .tempdir()
                .expect("temp dir"),
            octet,
            regions: regions
                .iter()
                .map(|(r, zs)| (r.to_string(), zs.iter().map(|z| z.to_string()).collect()))
                .collect(),
            min_healthy: Some(0.5),
            per_zone: 2,
            service_extra: String::new(),
            route_extra: Vec::new(),
            edge_extra: String::new(),
            edge_tls: None,
            peer_tls: None,
            forward_secret: true,
            route_heartbeats: false,
            control_extra: String::new(),
            control_store: None,
            control_ca: None,
            control: false,
            playbooks: None,
            dns_servers: 0,
            dns_extra: String::new(),
            dns_probe_ms: 200,
        }
    }

    /// A `[dns]` section with `servers` DNS servers answering zone `test`
    /// (so the service's `svc.test`), probing edges every 200 ms, and a geo
    /// map placing [`Topology::client_ip`] of each region in that region.
    pub fn with_dns(mut self, servers: u8) -> Self {
        self.dns_servers = servers;
        self
    }

    /// How often DNS servers probe the edges; 0: never (every edge counts
    /// as alive, for tests that start no edge).
    pub fn dns_probe_interval_ms(mut self, ms: u64) -> Self {
        self.dns_probe_ms = ms;
        self
    }

    /// Extra keys for the `[dns]` table.
    pub fn dns_toml(mut self, extra: &str) -> Self {
        self.dns_extra.push_str(extra);
        self.dns_extra.push('\n');
        self
    }

    /// DNS server `n` (from 1): its name, (listen, admin).
    pub fn dns_addrs(&self, n: u8) -> (String, (SocketAddr, SocketAddr)) {
        let ip = format!("127.{}.0.{}", self.octet, 50 + n);
        (
            format!("ns{n}"),
            (
                format!("{ip}:5300").parse().unwrap(),
                format!("{ip}:9953").parse().unwrap(),
            ),
        )
    }

    /// A client address the geo map places in `region`.
    pub fn client_ip(&self, region: &str) -> std::net::IpAddr {
        let r = self
            .regions
            .iter()
            .position(|(r, _)| r == region)
            .unwrap_or_else(|| panic!("no region {region}"));
        format!("127.{}.{}.9", self.octet, 200 + r).parse().unwrap()
    }

    /// Client `i` (below 100) of many: an address in a /24 of its own that
    /// no geo prefix places and no process of this topology listens on.
    pub fn unplaced_client_ip(&self, i: u8) -> std::net::IpAddr {
        assert!(i < 100, "client {i}: only 100 unplaced clients");
        // Zones' addresses use third octets up to regions × 16 + zones.
        assert!(
            self.regions.len() < 6,
            "unplaced clients need under 6 regions"
        );
        format!("127.{}.{}.9", self.octet, 100 + i).parse().unwrap()
    }

    /// Starts DNS server `n` as a real process on the config as written now.
    pub async fn start_dns(&self, n: u8) -> crate::DnsProcess {
        let cfg = self.write_config();
        let (name, addrs) = self.dns_addrs(n);
        crate::DnsProcess::start(&self.bin, &cfg, &name, addrs, self.dir.path()).await
    }

    pub fn min_healthy(mut self, v: f64) -> Self {
        self.min_healthy = Some(v);
        self
    }

    /// Leaves `min_healthy` out, as the resolver outage's bad change did.
    pub fn without_floor(mut self) -> Self {
        self.min_healthy = None;
        self
    }

    pub fn instances_per_zone(mut self, n: usize) -> Self {
        self.per_zone = n;
        self
    }

    /// Extra TOML inside the `[[service]]` table (sub-tables go last).
    /// Gives `get-item` and `put-item` heartbeat paths (`/heartbeat/read`,
    /// [`crate::upstream::WRITE_HEARTBEAT`]), so edges probe the read and
    /// the write path of every instance apart.
    pub fn route_heartbeats(mut self) -> Self {
        self.route_heartbeats = true;
        self
    }

    /// Extra TOML tables for the control plane (`[control.notify]`, …),
    /// appended after its section.
    pub fn control_toml(mut self, extra: &str) -> Self {
        self.control_extra.push_str(extra);
        self.control_extra.push('\n');
        self
    }

    pub fn service_toml(mut self, extra: &str) -> Self {
        self.service_extra.push_str(extra);
        self.service_extra.push('\n');
        self
    }

    /// Extra keys for one of the test service's routes (`get-item`,
    /// `put-item`, `recommendations`), e.g. `timeout_ms = 50`.
    pub fn route_toml(mut self, route: &str, extra: &str) -> Self {
        self.route_extra
            .push((route.to_string(), extra.to_string()));
        self
    }

    /// Extra keys for the `[edge]` table.
    pub fn edge_toml(mut self, extra: &str) -> Self {
        self.edge_extra.push_str(extra);
        self.edge_extra.push('\n');
        self
    }

    /// Serves TLS on every zone's [`Topology::edge_tls_addr`] with the
    /// certificates of `table` (TOML after `[edge.tls]`, typically
    /// `[[edge.tls.certificate]]` entries).
    pub fn edge_tls(mut self, table: &str) -> Self {
        self.edge_tls = Some(table.to_string());
        self
    }

    /// Leaves `edge.forward_secret` out.
    pub fn without_forward_secret(mut self) -> Self {
        self.forward_secret = false;
        self
    }

    /// Forwards between edges over mTLS with `table` (TOML after
    /// `[edge.peer_tls]`: `ca_file`, `cert_file`, `key_file`, `server_name`).
    pub fn peer_tls(mut self, table: &str) -> Self {
        self.peer_tls = Some(table.to_string());
        self
    }

    /// Adds a control plane (SQLite store in the test's folder) that every
    /// edge follows, with one token per scope: `read-token`, `operate-token`,
    /// `admin-token` (each padded to the minimum length).
    pub fn with_control_plane(mut self) -> Self {
        self.control = true;
        let url = format!("control_url = \"http://{}\"", self.control_addr());
        self.edge_toml(&url)
    }

    /// [`Topology::with_control_plane`] serving its API over HTTPS with a
    /// certificate of `ca` for the control address (and those of
    /// `start_another_control(1..=3)`, which trust `ca` too); edges follow
    /// `https://` and trust `ca` only when `edges_trust_ca` (otherwise only
    /// the shipped roots, which do not know it). Returns the CA file's path.
    pub fn with_https_control_plane(
        mut self,
        ca: &crate::TestCa,
        edges_trust_ca: bool,
    ) -> (Self, PathBuf) {
        self.control = true;
        let dir = self.dir.path().to_path_buf();
        let ca_file = ca.write_pem(&dir, "control-ca.pem");
        let ips: Vec<String> = std::iter::once(self.control_addr())
            .chain((1..=3).map(|n| self.aux_addr(n)))
            .map(|a| a.ip().to_string())
            .collect();
        let cert = ca.server_cert(&ips.iter().map(String::as_str).collect::<Vec<_>>());
        let (cert_file, key_file) = cert.write_pem(&dir, "control");
        let mut edge = format!("control_url = \"https://{}\"", self.control_addr());
        if edges_trust_ca {
            edge.push_str(&format!(
                "\ncontrol_ca_file = {:?}",
                ca_file.display().to_string()
            ));
        }
        let mut t = self.edge_toml(&edge).control_toml(&format!(
            "[control.tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}",
            ca_file.display().to_string(),
            cert_file.display().to_string(),
            key_file.display().to_string()
        ));
        t.control_ca = Some(ca_file.clone());
        (t, ca_file)
    }

    /// Control planes at `control_addr()` and at `aux_addr(n)` for each of
    /// `others` (see `start_another_control`), sharing one store (see
    /// `etcd_store`): every edge follows any of them, the first by preference.
    pub fn with_control_planes(mut self, others: &[u8]) -> Self {
        self.control = true;
        let urls: Vec<String> = std::iter::once(self.control_addr())
            .chain(others.iter().map(|n| self.aux_addr(*n)))
            .map(|a| format!("\"http://{a}\""))
            .collect();
        let line = format!("control_url = [{}]", urls.join(", "));
        self.edge_toml(&line)
    }

    /// Control planes keep their state in this etcd (an endpoint such as
    /// `http://127.0.0.1:2379`) instead of a SQLite file, so several can share it.
    pub fn etcd_store(mut self, endpoint: &str) -> Self {
        self.control_store = Some(format!("etcd:{endpoint}"));
        self
    }

    /// The playbook mode (`auto`, `recommend`, `off`) of the test service.
    pub fn playbooks(mut self, mode: &str) -> Self {
        self.playbooks = Some(mode.into());
        self
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.aux_addr(7)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn place(&self, zone: &str) -> (usize, usize) {
        for (ri, (_, zs)) in self.regions.iter().enumerate() {
            if let Some(zi) = zs.iter().position(|z| z == zone) {
                return (ri + 1, zi + 1);
            }
        }
        panic!("no zone {zone} in the topology");
    }

    fn ip(&self, zone: &str, host: usize) -> String {
        let (r, z) = self.place(zone);
        format!("127.{}.{}.{}", self.octet, r * 16 + z, host)
    }

    pub fn edge_addr(&self, zone: &str) -> SocketAddr {
        format!("{}:8080", self.ip(zone, 1)).parse().unwrap()
    }

    /// The zone edge's TLS listener (used when [`Topology::edge_tls`] is set).
    pub fn edge_tls_addr(&self, zone: &str) -> SocketAddr {
        format!("{}:8443", self.ip(zone, 1)).parse().unwrap()
    }

    pub fn admin_addr(&self, zone: &str) -> SocketAddr {
        format!("{}:9901", self.ip(zone, 1)).parse().unwrap()
    }

    /// Instance `i` (from 1) of `zone`: named `{zone}-{i}`.
    pub fn instance(&self, zone: &str, i: usize) -> (String, SocketAddr) {
        (
            format!("{zone}-{i}"),
            format!("{}:8081", self.ip(zone, 10 + i)).parse().unwrap(),
        )
    }

    /// A spare address of this topology, for helpers such as a watch server.
    pub fn aux_addr(&self, n: u8) -> SocketAddr {
        format!("127.{}.0.{n}:7000", self.octet).parse().unwrap()
    }

    pub fn zones(&self) -> Vec<String> {
        self.regions.iter().flat_map(|(_, zs)| zs.clone()).collect()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("switchyard.toml")
    }

    pub fn config_text(&self) -> String {
        self.config_text_with(self.control_addr())
    }

    /// The config with the control plane listening on `control_listen`.
    fn config_text_with(&self, control_listen: SocketAddr) -> String {
        let mut t = String::new();
        writeln!(
            t,
            "[edge]\nadmin_token = {ADMIN_TOKEN:?}\nstate_dir = {:?}",
            self.dir.path().join("state").display().to_string()
        )
        .unwrap();
        if self.forward_secret {
            writeln!(t, "forward_secret = {FORWARD_SECRET:?}").unwrap();
        }
        t.push_str(&self.edge_extra);
        if let Some(tls) = &self.edge_tls {
            writeln!(t, "[edge.tls]\n{tls}").unwrap();
        }
        if let Some(peer) = &self.peer_tls {
            writeln!(t, "[edge.peer_tls]\n{peer}").unwrap();
        }
        for (r, zs) in &self.regions {
            writeln!(t, "\n[[region]]\nname = {r:?}").unwrap();
            for z in zs {
                writeln!(
                    t,
                    "[[region.zone]]\nname = {z:?}\nedge = \"{}\"\nadmin = \"{}\"",
                    self.edge_addr(z),
                    self.admin_addr(z)
                )
                .unwrap();
                if self.edge_tls.is_some() {
                    writeln!(t, "edge_tls = \"{}\"", self.edge_tls_addr(z)).unwrap();
                }
            }
        }
        writeln!(t, "\n[[service]]\nname = \"svc\"\nhosts = [{HOST:?}]").unwrap();
        if let Some(m) = self.min_healthy {
            writeln!(t, "min_healthy = {m}").unwrap();
        }
        t.push_str(&self.service_extra);
        let hb = |p: &str| {
            if self.route_heartbeats {
                format!("heartbeat_path = {p:?}\n")
            } else {
                String::new()
            }
        };
        let mut routes = format!(
            "[[service.route]]\nname = \"get-item\"\npath_prefix = \"/items/\"\nmethods = [\"GET\"]\nkind = \"read\"\npriority = \"critical\"\n{}\
             [[service.route]]\nname = \"put-item\"\npath_prefix = \"/items/\"\nmethods = [\"PUT\", \"POST\"]\nkind = \"write\"\npriority = \"normal\"\n{}\
             [[service.route]]\nname = \"recommendations\"\npath_prefix = \"/recommendations\"\nkind = \"read\"\npriority = \"sheddable\"\n",
            hb("/heartbeat/read"),
            hb(crate::upstream::WRITE_HEARTBEAT)
        );
        for (route, extra) in &self.route_extra {
            let at = format!("name = {route:?}\n");
            assert!(
                routes.contains(&at),
                "the test service has no route {route:?}"
            );
            routes = routes.replacen(&at, &format!("{at}{extra}\n"), 1);
        }
        t.push_str(&routes);
        for z in self.zones() {
            for i in 1..=self.per_zone {
                let (name, addr) = self.instance(&z, i);
                writeln!(
                    t,
                    "[[service.instance]]\nname = {name:?}\nzone = {z:?}\naddr = \"{addr}\""
                )
                .unwrap();
            }
        }
        if self.dns_servers > 0 {
            writeln!(
                t,
                "\n[dns]\nprobe_interval_ms = {}\nprobe_timeout_ms = 150\n{}",
                self.dns_probe_ms, self.dns_extra
            )
            .unwrap();
            for n in 1..=self.dns_servers {
                let (name, (listen, admin)) = self.dns_addrs(n);
                writeln!(
                    t,
                    "[[dns.server]]\nname = {name:?}\nlisten = [\"{listen}\"]\nadmin = \"{admin}\""
                )
                .unwrap();
            }
            let (_, (ns1, _)) = self.dns_addrs(1);
            writeln!(
                t,
                "[[dns.zone]]\napex = \"test\"\nns = [\"ns1.test\"]\nns_addresses = {{ \"ns1.test\" = [\"{}\"] }}",
                ns1.ip()
            )
            .unwrap();
            for (r, _) in &self.regions {
                let ip = self.client_ip(r);
                let prefix = crate::dns::prefix24(ip);
                writeln!(t, "[[dns.geo]]\nprefix = \"{prefix}\"\nregion = {r:?}").unwrap();
            }
        }
        if self.control {
            // Tests flip controls in quick succession, fail a whole region
            // over and wait for failbacks, so the wait, the removal rate and
            // the failback hold are relaxed here.
            writeln!(
                t,
                "\n[control]\nlisten = \"{}\"\nstore = \"{}\"\nplaybooks = {{ svc = {:?} }}\n[control.safety]\nflip_wait_ms = 0\nmax_removal_per_hour = 0.6\n[control.playbook]\nfailback_hold_ms = 3000",
                control_listen,
                self.control_store.clone().unwrap_or_else(|| format!(
                    "sqlite:{}",
                    self.dir.path().join("control.db").display()
                )),
                self.playbooks.as_deref().unwrap_or("off")
            )
            .unwrap();
            for scope in ["read", "operate", "admin"] {
                writeln!(t, "[[control.token]]\nname = \"{scope}-user\"\nscope = \"{scope}\"\ntoken = \"{scope}-token\"").unwrap();
            }
            t.push_str(&self.control_extra);
        }
        t
    }

    /// Writes the config file (again) and returns its path.
    pub fn write_config(&self) -> PathBuf {
        let p = self.config_path();
        std::fs::write(&p, self.config_text()).expect("write config");
        p
    }

    /// Writes the config and checks that it is refused the same way where
    /// an operator meets it: `switchyard edge` for `zone` will not start and
    /// `switchyard validate` fails, each naming every one of `wants` in its
    /// error output.
    pub fn assert_refused(&self, zone: &str, wants: &[&str]) {
        let config = self.write_config();
        for args in [vec!["edge", "--zone", zone, "--config"], vec!["validate"]] {
            let out = std::process::Command::new(&self.bin)
                .args(&args)
                .arg(&config)
                .output()
                .expect("run switchyard");
            assert!(!out.status.success(), "{args:?} accepts it: {out:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            for want in wants {
                assert!(err.contains(want), "{args:?}: {want:?} in {err}");
            }
        }
    }

    /// Starts every instance of every zone.
    pub async fn start_upstreams(&self) -> BTreeMap<String, Upstream> {
        let mut out = BTreeMap::new();
        for z in self.zones() {
            for i in 1..=self.per_zone {
                let (name, addr) = self.instance(&z, i);
                out.insert(name.clone(), Upstream::start(&name, addr).await);
            }
        }
        out
    }

    /// Starts every instance of every zone speaking TLS with `tls`.
    pub async fn start_tls_upstreams(
        &self,
        tls: std::sync::Arc<rustls::ServerConfig>,
    ) -> BTreeMap<String, Upstream> {
        let mut out = BTreeMap::new();
        for z in self.zones() {
            for i in 1..=self.per_zone {
                let (name, addr) = self.instance(&z, i);
                out.insert(
                    name.clone(),
                    Upstream::start_tls(&name, addr, tls.clone()).await,
                );
            }
        }
        out
    }

    /// Starts the edge of `zone` as a real process on the config as written now.
    /// An edge in each of `zones`, in that order.
    pub async fn start_edges(&self, zones: &[&str]) -> Vec<EdgeProcess> {
        let mut out = Vec::with_capacity(zones.len());
        for z in zones {
            out.push(self.start_edge(z).await);
        }
        out
    }

    pub async fn start_edge(&self, zone: &str) -> EdgeProcess {
        self.start_edge_with(zone, &[]).await
    }

    /// [`Topology::start_edge`] with more `switchyard edge` arguments.
    pub async fn start_edge_with(&self, zone: &str, extra: &[&str]) -> EdgeProcess {
        let cfg = self.write_config();
        let mut e = EdgeProcess::start_with(
            &self.bin,
            &cfg,
            zone,
            (self.edge_addr(zone), self.admin_addr(zone)),
            self.dir.path(),
            extra,
        )
        .await;
        e.listen_tls = self.edge_tls.as_ref().map(|_| self.edge_tls_addr(zone));
        e
    }

    /// Starts the control plane as a real process.
    pub async fn start_control(&self) -> ControlProcess {
        let cfg = self.write_config();
        match &self.control_ca {
            Some(ca) => {
                ControlProcess::start_https(
                    &self.bin,
                    &cfg,
                    self.control_addr(),
                    self.dir.path(),
                    ca,
                )
                .await
            }
            None => {
                ControlProcess::start(&self.bin, &cfg, self.control_addr(), self.dir.path()).await
            }
        }
    }

    /// Another control plane on the same config but listening on
    /// `aux_addr(n)`, with its own config file and log; edges keep
    /// following the first one.
    pub async fn start_another_control(&self, n: u8) -> ControlProcess {
        let addr = self.aux_addr(n);
        let dir = self.dir.path().join(format!("control-{n}"));
        std::fs::create_dir_all(&dir).expect("control dir");
        let cfg = dir.join("switchyard.toml");
        std::fs::write(&cfg, self.config_text_with(addr)).expect("write config");
        match &self.control_ca {
            Some(ca) => ControlProcess::start_https(&self.bin, &cfg, addr, &dir, ca).await,
            None => ControlProcess::start(&self.bin, &cfg, addr, &dir).await,
        }
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }
}

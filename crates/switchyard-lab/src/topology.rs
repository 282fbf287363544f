//! The lab's topology file and the address plan (see the design): region r,
//! zone z → `127.r.z.0/24`, the zone's edge on `.1`, instances on `.11`,
//! `.12`, …, the region's store on `127.r.0.10`, link proxies on `.100` of
//! each zone (to the store) and on `127.r.0.x` (to the other regions), client
//! group g (from 1) on `127.(200+g).0.1` (its users' client subnets are
//! `127.(200+g).k.0/24`, one /24 each), the two DNS servers on `127.0.53.1`
//! and `127.0.53.2`.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

pub const DEFAULT: &str = include_str!("../topologies/default.toml");
pub const HOST: &str = "catalog.lab";
pub const ADMIN_TOKEN: &str = "lab-admin-token";
/// The console's and the API's other two scopes, so a person (or a test)
/// can look without being able to act, and act without `force`.
pub const READ_TOKEN: &str = "lab-read-token";
pub const OPERATE_TOKEN: &str = "lab-operate-token";
/// The secret the lab's edges show each other when they forward.
pub const FORWARD_SECRET: &str = "lab-forward-secret-0123";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub name: String,
    pub instances_per_zone: usize,
    #[serde(rename = "region")]
    pub regions: Vec<RegionSpec>,
    pub service: ServiceSpec,
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientSpec>,
    /// Run a control plane that every edge follows (on by default).
    #[serde(default = "yes")]
    pub control_plane: bool,
    /// Its playbook mode for the service: `auto`, `recommend` or `off`.
    #[serde(default = "auto")]
    pub playbooks: String,
    /// Run two `switchyard dns` servers for the service's name and let the
    /// client groups find their edges through them (on by default); off,
    /// each group calls its own region's edges.
    #[serde(default = "yes")]
    pub dns: bool,
    /// Drill reports the console lists (`[control.console] reports_dir`);
    /// set by `lab up --reports`, not read from a topology file.
    #[serde(skip)]
    pub reports_dir: Option<String>,
}

fn yes() -> bool {
    true
}

fn auto() -> String {
    "auto".into()
}

/// Where the lab's control plane listens.
pub const CONTROL_ADDR: &str = "127.0.0.1:7000";

/// The lab's DNS zone: the service's name, [`HOST`], is in it.
pub const DNS_ZONE: &str = "lab";
/// The lab's DNS servers: name and address. Port 53 would need root.
pub const DNS_SERVERS: [(&str, &str); 2] = [("ns1", "127.0.53.1"), ("ns2", "127.0.53.2")];
pub const DNS_PORT: u16 = 5300;
pub const DNS_ADMIN_PORT: u16 = 9953;
/// The TTL of the service's answers: short, so a drill sees clients move
/// within seconds (production default: 30 s).
pub const DNS_TTL_S: u32 = 5;
/// How many users (client subnets, each with its own cached answer) each
/// client group stands for.
pub const DNS_USERS: u8 = 16;
/// How long a region that comes back takes to get all its clients' answers
/// back (`dns.return_ramp_s`): a drill sees the ramp in well under a minute.
pub const DNS_RETURN_RAMP_S: u32 = 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    pub name: String,
    pub zones: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub min_healthy: f64,
    pub max_rps: Option<f64>,
    pub max_concurrency: Option<u32>,
    /// Extra TOML appended inside the generated `[[service]]` table, for
    /// tuning ejection or timeouts in a scenario.
    #[serde(default)]
    pub extra_toml: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    pub name: String,
    /// The region whose edges these clients reach (the nearest one).
    pub region: String,
    /// Sent as `x-switchyard-home-region`; none by default.
    pub home: Option<String>,
    pub rate: f64,
    #[serde(default)]
    pub write_percent: f64,
}

/// One link of the lab and its pipes.
#[derive(Debug, Clone)]
pub struct LinkPlan {
    pub name: String,
    pub pipes: Vec<(SocketAddr, SocketAddr)>,
}

fn sa(ip: String, port: u16) -> SocketAddr {
    format!("{ip}:{port}")
        .parse()
        .expect("lab addresses are valid")
}

impl Topology {
    pub fn parse(text: &str) -> Result<Topology, String> {
        let t: Topology = toml::from_str(text).map_err(|e| e.to_string())?;
        t.check()?;
        Ok(t)
    }

    pub fn default_topology() -> Topology {
        Topology::parse(DEFAULT).expect("the built-in topology is valid")
    }

    fn check(&self) -> Result<(), String> {
        let mut errs = Vec::new();
        if self.regions.is_empty() || self.regions.len() > 14 {
            errs.push(format!(
                "region: between 1 and 14 regions, got {}",
                self.regions.len()
            ));
        }
        if self.instances_per_zone == 0 || self.instances_per_zone > 80 {
            errs.push(format!(
                "instances_per_zone: between 1 and 80, got {}",
                self.instances_per_zone
            ));
        }
        let mut zones = std::collections::BTreeSet::new();
        for r in &self.regions {
            if r.zones.is_empty() || r.zones.len() > 14 {
                errs.push(format!(
                    "region.{}.zones: between 1 and 14 zones, got {}",
                    r.name,
                    r.zones.len()
                ));
            }
            for z in &r.zones {
                if !zones.insert(z) {
                    errs.push(format!("region.{}.zones: duplicate zone {z:?}", r.name));
                }
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            if self.region_index(&c.region).is_none() {
                errs.push(format!(
                    "client.{}.region: unknown region {:?}",
                    c.name, c.region
                ));
            }
            if let Some(h) = &c.home {
                if self.region_index(h).is_none() {
                    errs.push(format!("client.{}.home: unknown region {h:?}", c.name));
                }
            }
            if !(c.rate > 0.0 && c.rate <= 20_000.0) {
                errs.push(format!(
                    "client.{}.rate: between 0 and 20000, got {}",
                    c.name, c.rate
                ));
            }
            if !(0.0..=100.0).contains(&c.write_percent) {
                errs.push(format!(
                    "client.{}.write_percent: a percentage, got {}",
                    c.name, c.write_percent
                ));
            }
            if i >= 55 {
                errs.push(format!(
                    "client: at most 55 groups (each has 127.(200+g).0.0/16), got {}",
                    self.clients.len()
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("\n"))
        }
    }

    pub fn region_index(&self, name: &str) -> Option<usize> {
        self.regions
            .iter()
            .position(|r| r.name == name)
            .map(|i| i + 1)
    }

    /// (region index, zone index), both from 1.
    pub fn place(&self, zone: &str) -> Option<(usize, usize)> {
        self.regions.iter().enumerate().find_map(|(ri, r)| {
            r.zones
                .iter()
                .position(|z| z == zone)
                .map(|zi| (ri + 1, zi + 1))
        })
    }

    pub fn region_of(&self, zone: &str) -> Option<&str> {
        self.regions
            .iter()
            .find(|r| r.zones.iter().any(|z| z == zone))
            .map(|r| r.name.as_str())
    }

    pub fn zones(&self) -> impl Iterator<Item = (&str, &str)> {
        self.regions
            .iter()
            .flat_map(|r| r.zones.iter().map(move |z| (r.name.as_str(), z.as_str())))
    }

    pub fn edge_addr(&self, zone: &str) -> SocketAddr {
        let (r, z) = self.place(zone).expect("known zone");
        sa(format!("127.{r}.{z}.1"), 8080)
    }

    pub fn admin_addr(&self, zone: &str) -> SocketAddr {
        let (r, z) = self.place(zone).expect("known zone");
        sa(format!("127.{r}.{z}.1"), 9901)
    }

    /// Instances of a zone: (name, address). Names are `{zone}-{i}`.
    pub fn instances(&self, zone: &str) -> Vec<(String, SocketAddr)> {
        let (r, z) = self.place(zone).expect("known zone");
        (1..=self.instances_per_zone)
            .map(|i| {
                (
                    format!("{zone}-{i}"),
                    sa(format!("127.{r}.{z}.{}", 10 + i), 8081),
                )
            })
            .collect()
    }

    pub fn all_instances(&self) -> Vec<(String, String, SocketAddr)> {
        self.zones()
            .flat_map(|(_, z)| {
                self.instances(z)
                    .into_iter()
                    .map(move |(n, a)| (n, z.to_string(), a))
            })
            .collect()
    }

    pub fn store_addr(&self, region: &str) -> SocketAddr {
        let r = self.region_index(region).expect("known region");
        sa(format!("127.{r}.0.10"), 7001)
    }

    /// Where the instances of a zone reach their store: the zone's store link.
    pub fn store_link_addr(&self, zone: &str) -> SocketAddr {
        let (r, z) = self.place(zone).expect("known zone");
        sa(format!("127.{r}.{z}.100"), 7001)
    }

    pub fn store_link_name(zone: &str) -> String {
        format!("{zone}->store")
    }

    pub fn region_link_name(from: &str, to: &str) -> String {
        format!("{from}->{to}")
    }

    /// Where region `from` reaches the edges of region `to`.
    pub fn forward_addrs(&self, from: &str, to: &str) -> Vec<SocketAddr> {
        let (r, t) = (
            self.region_index(from).expect("known region"),
            self.region_index(to).expect("known region"),
        );
        let n = self.regions[t - 1].zones.len();
        (1..=n)
            .map(|z| sa(format!("127.{r}.0.{}", 16 * t + z), 8080))
            .collect()
    }

    /// Where the store of `from` sends replication to the store of `to`.
    pub fn replication_addr(&self, from: &str, to: &str) -> SocketAddr {
        let (r, t) = (
            self.region_index(from).expect("known region"),
            self.region_index(to).expect("known region"),
        );
        sa(format!("127.{r}.0.{}", 16 * t), 7002)
    }

    pub fn links(&self) -> Vec<LinkPlan> {
        let mut out = Vec::new();
        for (region, zone) in self.zones() {
            out.push(LinkPlan {
                name: Self::store_link_name(zone),
                pipes: vec![(self.store_link_addr(zone), self.store_addr(region))],
            });
        }
        for from in &self.regions {
            for to in &self.regions {
                if from.name == to.name {
                    continue;
                }
                let mut pipes: Vec<(SocketAddr, SocketAddr)> = self
                    .forward_addrs(&from.name, &to.name)
                    .into_iter()
                    .zip(to.zones.iter().map(|z| self.edge_addr(z)))
                    .collect();
                pipes.push((
                    self.replication_addr(&from.name, &to.name),
                    self.store_addr(&to.name),
                ));
                out.push(LinkPlan {
                    name: Self::region_link_name(&from.name, &to.name),
                    pipes,
                });
            }
        }
        out
    }

    /// The replication peer of a region's store: the next region, through its link.
    pub fn replication_peer(&self, region: &str) -> Option<SocketAddr> {
        let i = self.region_index(region)?;
        if self.regions.len() < 2 {
            return None;
        }
        let next = &self.regions[i % self.regions.len()].name;
        Some(self.replication_addr(region, next))
    }

    /// The DNS servers: (name, DNS address, admin address).
    pub fn dns_servers(&self) -> Vec<(String, SocketAddr, SocketAddr)> {
        DNS_SERVERS
            .iter()
            .map(|(n, ip)| {
                (
                    n.to_string(),
                    sa(ip.to_string(), DNS_PORT),
                    sa(ip.to_string(), DNS_ADMIN_PORT),
                )
            })
            .collect()
    }

    /// The region of every edge's address, for telling where a request
    /// entered.
    pub fn region_of_edges(&self) -> std::collections::BTreeMap<IpAddr, String> {
        self.zones()
            .map(|(r, z)| (self.edge_addr(z).ip(), r.to_string()))
            .collect()
    }

    /// The zone of every edge, by its address.
    pub fn zone_of_edges(&self) -> std::collections::BTreeMap<IpAddr, String> {
        self.zones()
            .map(|(_, z)| (self.edge_addr(z).ip(), z.to_string()))
            .collect()
    }

    fn dns_config(&self, t: &mut String) {
        let servers = self.dns_servers();
        writeln!(
            t,
            "\n[dns]\nttl_s = 30\nservice_ttl_s = {{ catalog = {DNS_TTL_S} }}\nprobe_interval_ms = 500\nprobe_timeout_ms = 300\nprobe_failures = 2\nprobe_successes = 2\nreturn_ramp_s = {DNS_RETURN_RAMP_S}"
        )
        .unwrap();
        for (name, listen, admin) in &servers {
            writeln!(
                t,
                "[[dns.server]]\nname = {name:?}\nlisten = [\"{listen}\"]\nadmin = \"{admin}\""
            )
            .unwrap();
        }
        let ns: Vec<String> = servers
            .iter()
            .map(|(n, _, _)| format!("\"{n}.{DNS_ZONE}\""))
            .collect();
        let glue: Vec<String> = servers
            .iter()
            .map(|(n, l, _)| format!("\"{n}.{DNS_ZONE}\" = [\"{}\"]", l.ip()))
            .collect();
        writeln!(
            t,
            "[[dns.zone]]\napex = {DNS_ZONE:?}\nns = [{}]\nns_addresses = {{ {} }}\nnegative_ttl_s = 5",
            ns.join(", "),
            glue.join(", ")
        )
        .unwrap();
        for (i, c) in self.clients.iter().enumerate() {
            let o = match self.client_source(i) {
                IpAddr::V4(a) => a.octets(),
                IpAddr::V6(_) => unreachable!("client sources are IPv4"),
            };
            writeln!(
                t,
                "[[dns.geo]]\nprefix = \"{}.{}.0.0/16\"\nregion = {:?}",
                o[0], o[1], c.region
            )
            .unwrap();
        }
    }

    pub fn client_source(&self, index: usize) -> IpAddr {
        format!("127.{}.0.1", 201 + index)
            .parse()
            .expect("valid address")
    }

    /// The edges' config for this topology, written by the lab. `min_healthy`
    /// is a parameter so a drill can push an unsafe variant.
    pub fn switchyard_config(&self, state_dir: &str, min_healthy: Option<f64>) -> String {
        let mut t = String::new();
        writeln!(
            t,
            "# Generated by `switchyard lab` for topology {:?}.",
            self.name
        )
        .unwrap();
        writeln!(
            t,
            "[edge]\nadmin_token = {ADMIN_TOKEN:?}\nforward_secret = {FORWARD_SECRET:?}\nstate_dir = {state_dir:?}\n"
        )
        .unwrap();
        if self.control_plane {
            writeln!(t, "control_url = \"http://{CONTROL_ADDR}\"\n").unwrap();
        }
        for r in &self.regions {
            writeln!(t, "[[region]]\nname = {:?}", r.name).unwrap();
            let others: Vec<&RegionSpec> =
                self.regions.iter().filter(|o| o.name != r.name).collect();
            if !others.is_empty() {
                writeln!(t, "[region.forward_via]").unwrap();
                for o in others {
                    let addrs: Vec<String> = self
                        .forward_addrs(&r.name, &o.name)
                        .iter()
                        .map(|a| format!("\"{a}\""))
                        .collect();
                    writeln!(t, "{:?} = [{}]", o.name, addrs.join(", ")).unwrap();
                }
            }
            for z in &r.zones {
                writeln!(
                    t,
                    "[[region.zone]]\nname = {z:?}\nedge = \"{}\"\nadmin = \"{}\"",
                    self.edge_addr(z),
                    self.admin_addr(z)
                )
                .unwrap();
            }
            t.push('\n');
        }
        writeln!(t, "[[service]]\nname = \"catalog\"\nhosts = [{HOST:?}]").unwrap();
        if let Some(m) = min_healthy {
            writeln!(t, "min_healthy = {m}").unwrap();
        }
        let prefs: Vec<String> = self
            .regions
            .iter()
            .map(|r| format!("{:?}", r.name))
            .collect();
        writeln!(t, "region_preference = [{}]", prefs.join(", ")).unwrap();
        if let Some(r) = self.service.max_rps {
            writeln!(t, "[service.limits]\nmax_rps = {r}").unwrap();
            if let Some(c) = self.service.max_concurrency {
                writeln!(t, "max_concurrency = {c}").unwrap();
            }
        } else if let Some(c) = self.service.max_concurrency {
            writeln!(t, "[service.limits]\nmax_concurrency = {c}").unwrap();
        }
        t.push_str(&self.service.extra_toml);
        t.push('\n');
        t.push_str(
            "[[service.route]]\nname = \"get-item\"\npath_prefix = \"/items/\"\nmethods = [\"GET\", \"HEAD\"]\nkind = \"read\"\npriority = \"critical\"\nheartbeat_path = \"/heartbeat/get-item\"\n\
             [[service.route]]\nname = \"put-item\"\npath_prefix = \"/items/\"\nmethods = [\"PUT\", \"POST\"]\nkind = \"write\"\npriority = \"normal\"\nheartbeat_path = \"/heartbeat/put-item\"\n",
        );
        for (name, zone, addr) in self.all_instances() {
            writeln!(
                t,
                "[[service.instance]]\nname = {name:?}\nzone = {zone:?}\naddr = \"{addr}\""
            )
            .unwrap();
        }
        if self.dns {
            self.dns_config(&mut t);
        }
        if self.control_plane {
            // Drills take steps seconds apart, so flips may follow faster
            // and failbacks come sooner than the production defaults; every
            // other rule is at its default (an evacuation is a move, judged
            // by the move capacity rule, not the hourly removal budget). A
            // request is slow, for the
            // checks of the playbooks' actions, above the drills' steady-
            // state p99 (250 ms): evacuated users cross the region link, and
            // twice the pre-fault p99 would count each of them as slow.
            // Shifted zones take back a 10 % canary of real traffic before
            // their failback: a zone's clients send it about 3 requests a
            // second, so 40 requests take some 13 s of the 15 s canary.
            // Config rollouts bake 10 s per wave: an edge gets about 30
            // reads and 3 writes a second, so 25 requests judge both routes
            // of a wave within its bake, and one second with requests lets
            // a broken canary be judged (twice in a row, and rolled back)
            // a few seconds after it took the config: each second there
            // costs a sixth of the users' requests. A pass still rests on
            // the whole bake.
            writeln!(
                t,
                "\n[control]\nlisten = \"{CONTROL_ADDR}\"\nstore = \"sqlite:{state_dir}/control.db\"\nplaybooks = {{ catalog = {:?} }}\n\
                 [control.safety]\nflip_wait_ms = 2000\n\
                 [control.rollout]\nbake_ms = 10000\ntake_timeout_ms = 10000\nmax_extra_wait_ms = 20000\n[control.rollout.canary]\nmin_requests = 25\nmin_seconds = 1\n\
                 [control.playbook]\nfailback_hold_ms = 15000\nfailback_canary_percent = 10\nfailback_canary_ms = 15000\nfailback_canary_min_requests = 40\n\
                 [control.incidents]\nresolve_after_ms = 15000\nslow_p99_ms = 250\n\
                 [control.notify]\ngroup_wait_ms = 1000\n\
                 [[control.notify.receiver]]\nname = \"lab-oncall\"\nkind = \"webhook\"\nurl = \"http://{inbox}/webhook\"\n\
                 [[control.notify.receiver]]\nname = \"lab-chat\"\nkind = \"slack\"\nurl = \"http://{inbox}/slack\"\n\
                 [[control.notify.route]]\nreceivers = [\"lab-oncall\", \"lab-chat\"]\n\
                 [[control.token]]\nname = \"lab\"\nscope = \"admin\"\ntoken = {ADMIN_TOKEN:?}\n\
                 [[control.token]]\nname = \"lab-read\"\nscope = \"read\"\ntoken = {READ_TOKEN:?}\n\
                 [[control.token]]\nname = \"lab-operate\"\nscope = \"operate\"\ntoken = {OPERATE_TOKEN:?}",
                self.playbooks,
                inbox = crate::inbox::ADDR,
            )
            .unwrap();
            if let Some(d) = &self.reports_dir {
                writeln!(t, "\n[control.console]\nreports_dir = {d:?}").unwrap();
            }
        }
        t
    }
}

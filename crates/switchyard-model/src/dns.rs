//! The `[dns]` section: the authoritative DNS servers that answer for the
//! services' public names (`switchyard dns`). Raw types as written, the
//! validated settings, and the IP prefixes of the geo map.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{AccessLogTarget, Region, Service};
use crate::error::ValidationErrors;

pub mod raw {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Dns {
        /// TTL of every answer's record set, in seconds.
        pub ttl_s: Option<u32>,
        /// Per service, the TTL of its name's record sets instead of `ttl_s`.
        #[serde(default)]
        pub service_ttl_s: std::collections::BTreeMap<String, u32>,
        /// Where each server keeps its last-known-good controls; defaults
        /// to `edge.state_dir`.
        pub state_dir: Option<String>,
        /// `-` for standard output, or a file.
        pub query_log: Option<String>,
        /// The region of clients no prefix matches; defaults to the first
        /// region of each service's preference.
        pub default_region: Option<String>,
        pub probe_interval_ms: Option<u64>,
        pub probe_timeout_ms: Option<u64>,
        pub probe_failures: Option<u32>,
        /// Successes in a row before an edge taken out counts alive again.
        pub probe_successes: Option<u32>,
        /// Seconds over which a region the probes saw down gets its
        /// clients back; 0: all at once.
        pub return_ramp_s: Option<u64>,
        /// Per zone, the addresses handed out for its edge instead of the
        /// IP of `region.zone.edge`.
        #[serde(default)]
        pub edge_addresses: std::collections::BTreeMap<String, Vec<String>>,
        #[serde(default, rename = "server")]
        pub servers: Vec<Server>,
        #[serde(default, rename = "zone")]
        pub zones: Vec<Zone>,
        #[serde(default)]
        pub geo: Vec<Geo>,
        /// Outside DNS zones kept in step with the answers (RFC 2136);
        /// checked by `switchyard-dns`, which reads their key files.
        #[serde(default)]
        pub push: Vec<Push>,
        /// An `operate` token of the control plane, with which the pushing
        /// server records each push in the control plane's history.
        pub control_token: Option<String>,
        pub control_token_env: Option<String>,
        /// TCP connections one client address may hold at once.
        pub tcp_per_client: Option<u32>,
        /// How long writing one answer over TCP may take before the
        /// connection is closed (a client that does not read).
        pub tcp_write_timeout_ms: Option<u64>,
        /// `[dns.rrl]`: response rate limiting over UDP.
        pub rrl: Option<Rrl>,
    }

    /// `[dns.rrl]`.
    #[derive(Debug, Default, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Rrl {
        /// UDP answers per second to one client /24 (IPv4) or /56 (IPv6);
        /// 0 turns the limit off.
        pub responses_per_s: Option<u32>,
        /// Answers a prefix may get at once after being quiet; defaults to
        /// `responses_per_s`.
        pub burst: Option<u32>,
        /// Every `slip`-th refused answer goes out empty with TC set, so a
        /// real resolver retries over TCP; the others are dropped. 0: all
        /// dropped.
        pub slip: Option<u32>,
    }

    /// `[[dns.push]]`: one outside zone, with exactly one backend table.
    #[derive(Debug, Default, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Push {
        pub zone: Option<String>,
        pub attempts: Option<u32>,
        pub initial_backoff_ms: Option<u64>,
        pub max_backoff_ms: Option<u64>,
        /// How often to read the zone back when nothing changed here, so a
        /// change made at the provider behind Switchyard's back is undone.
        pub resync_s: Option<u64>,
        pub rfc2136: Option<Rfc2136>,
    }

    #[derive(Debug, Default, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Rfc2136 {
        pub server: Option<String>,
        pub key_file: Option<String>,
        pub key_name: Option<String>,
        pub key_algorithm: Option<String>,
        /// The secret comes from the environment, never from the file.
        pub key_secret_env: Option<String>,
        pub timeout_ms: Option<u64>,
        pub fudge_s: Option<u16>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        pub name: Option<String>,
        #[serde(default)]
        pub listen: Vec<String>,
        pub admin: Option<String>,
        /// This server runs the `[[dns.push]]` targets (one server does).
        pub push: Option<bool>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Zone {
        pub apex: Option<String>,
        #[serde(default)]
        pub ns: Vec<String>,
        /// Addresses of name servers inside the zone (glue), by name.
        #[serde(default)]
        pub ns_addresses: std::collections::BTreeMap<String, Vec<String>>,
        pub soa_rname: Option<String>,
        pub soa_refresh_s: Option<u32>,
        pub soa_retry_s: Option<u32>,
        pub soa_expire_s: Option<u32>,
        /// The SOA minimum: how long resolvers cache "no such name" and
        /// "no such type" (RFC 2308).
        pub negative_ttl_s: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Geo {
        pub prefix: Option<String>,
        pub region: Option<String>,
    }
}

pub const DEFAULT_TTL_S: u32 = 30;
/// One good probe is not proof an edge is back: a flapping edge would flap
/// the answers.
pub const DEFAULT_PROBE_SUCCESSES: u32 = 2;
/// A region coming back gets its clients back over a minute, so its
/// caches and its autoscaling catch up before the whole load is there.
pub const DEFAULT_RETURN_RAMP_S: u64 = 60;
/// An hour: a longer ramp keeps a healthy region idle for no gain.
pub const MAX_RETURN_RAMP_S: u64 = 3600;
/// TCP connections one server serves at once (over every client).
pub const MAX_TCP_CONNECTIONS: u32 = 1024;
/// Enough for a resolver pipelining queries over a few connections; far
/// from the global cap, so 64 addresses are needed to fill it.
pub const DEFAULT_TCP_PER_CLIENT: u32 = 16;
/// As long as a connection may stay idle: a reader that slow is gone.
pub const DEFAULT_TCP_WRITE_TIMEOUT_MS: u64 = 10_000;
/// Answers per second to one client prefix over UDP. The clients of an
/// authoritative server are resolvers, and one resolver /24 sending a query
/// per client subnet (ECS) per TTL reaches hundreds per second for a busy
/// name: the default only catches floods, and a limited resolver still
/// gets every answer over TCP.
pub const DEFAULT_RRL_RESPONSES_PER_S: u32 = 1000;
pub const DEFAULT_RRL_SLIP: u32 = 2;
/// Slip above 10 makes TC answers too rare to help real resolvers (BIND
/// has the same bound).
pub const MAX_RRL_SLIP: u32 = 10;
pub const MAX_RRL_RATE: u32 = 1_000_000;

/// The validated `[dns]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    pub ttl: u32,
    /// Per service, instead of `ttl`.
    pub service_ttl: BTreeMap<String, u32>,
    pub state_dir: Option<String>,
    pub query_log: Option<AccessLogTarget>,
    pub default_region: Option<String>,
    /// Zero: the server does not probe edges itself.
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub probe_failures: u32,
    /// Successes in a row that put an edge taken out back (at least 1).
    pub probe_successes: u32,
    /// How long a region the probes saw down (no edge alive) takes to get
    /// its share back once an edge is alive again; zero: at once.
    pub return_ramp: Duration,
    pub edge_addresses: BTreeMap<String, Vec<IpAddr>>,
    pub servers: Vec<DnsServer>,
    pub zones: Vec<DnsZone>,
    /// Longest prefix first, so the first match is the most specific.
    pub geo: Vec<(Prefix, String)>,
    /// As written; `switchyard-dns` checks them (it reads the key files).
    pub push: Vec<raw::Push>,
    /// The one server that pushes, when there is anything to push: the one
    /// marked `push = true`, or the only server.
    pub pusher: Option<String>,
    pub control_token: Option<String>,
    /// At least 1 and at most [`MAX_TCP_CONNECTIONS`].
    pub tcp_per_client: u32,
    pub tcp_write_timeout: Duration,
    pub rrl: RrlSettings,
}

/// Response rate limiting over UDP, per client /24 or /56.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RrlSettings {
    /// Zero: off.
    pub responses_per_s: u32,
    /// At least 1 when the limit is on.
    pub burst: u32,
    /// Every `slip`-th refused answer is sent truncated; zero: none.
    pub slip: u32,
}

impl Default for RrlSettings {
    fn default() -> Self {
        RrlSettings {
            responses_per_s: DEFAULT_RRL_RESPONSES_PER_S,
            burst: DEFAULT_RRL_RESPONSES_PER_S,
            slip: DEFAULT_RRL_SLIP,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsServer {
    pub name: String,
    /// Each address is served over UDP and TCP.
    pub listen: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub push: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsZone {
    /// Lower case, without the final dot.
    pub apex: String,
    pub ns: Vec<String>,
    pub ns_addresses: BTreeMap<String, Vec<IpAddr>>,
    pub soa_rname: String,
    pub soa_refresh: u32,
    pub soa_retry: u32,
    pub soa_expire: u32,
    pub negative_ttl: u32,
}

impl DnsSettings {
    pub fn server(&self, name: &str) -> Option<&DnsServer> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The region a client address is in by the geo map.
    pub fn region_of(&self, ip: IpAddr) -> Option<&str> {
        self.geo
            .iter()
            .find(|(p, _)| p.contains(ip))
            .map(|(_, r)| r.as_str())
    }
}

impl DnsZone {
    /// Whether `name` (lower case, no final dot) is the apex or under it.
    pub fn holds(&self, name: &str) -> bool {
        name == self.apex
            || name
                .strip_suffix(self.apex.as_str())
                .is_some_and(|head| head.ends_with('.'))
    }
}

/// An IP prefix (`192.0.2.0/24`, `2001:db8::/32`); host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn parse(s: &str) -> Result<Prefix, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a prefix of the form ip/length"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} in {s:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{l:?} in {s:?} is not a prefix length from 0 to {max}"))?;
        let p = Prefix { addr, len };
        if p.masked().addr != addr {
            return Err(format!(
                "{s:?} has bits set after /{len}; did you mean {}/{len}?",
                p.masked().addr
            ));
        }
        Ok(p)
    }

    /// `addr` with the bits after `len` cleared.
    pub fn masked(self) -> Prefix {
        Prefix {
            addr: mask(self.addr, self.len),
            len: self.len,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// `ip` with every bit after the first `len` cleared.
pub fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// A domain name as DNS compares it: lower case, no final dot. Each label
/// is 1–63 letters, digits, `-` or `_`, and the whole at most 253.
fn dns_name(v: &str, path: &str, errs: &mut ValidationErrors) -> Option<String> {
    let n = v.trim_end_matches('.').to_ascii_lowercase();
    let ok = !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Some(n)
    } else {
        errs.push(
            path,
            format!("{v:?} is not a domain name (dot-separated labels of 1 to 63 letters, digits, '-' or '_')"),
        );
        None
    }
}

fn ips(list: &[String], path: &str, errs: &mut ValidationErrors) -> Vec<IpAddr> {
    if list.is_empty() {
        errs.push(path, "at least one address is required");
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, a)| match a.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => {
                errs.push(
                    format!("{path}[{i}]"),
                    format!("{a} is the unspecified address; no client can reach it"),
                );
                None
            }
            Ok(ip) => Some(ip),
            Err(_) => {
                errs.push(
                    format!("{path}[{i}]"),
                    format!("{a:?} is not an IP address"),
                );
                None
            }
        })
        .collect()
}

fn seconds(
    v: Option<u32>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
    path: &str,
    errs: &mut ValidationErrors,
) -> u32 {
    let v = v.unwrap_or(default);
    if !range.contains(&v) {
        errs.push(
            path,
            format!(
                "must be between {} and {} seconds, got {v}",
                range.start(),
                range.end()
            ),
        );
    }
    v
}

/// Checks `[dns]` against the regions and services it answers for.
pub(crate) fn validate(
    d: &raw::Dns,
    edge: &crate::config::EdgeSettings,
    env: &impl Fn(&str) -> Option<String>,
    regions: &[Region],
    services: &[Service],
    parse_addr: impl Fn(&Option<String>, &str, &mut ValidationErrors) -> Option<SocketAddr>,
    errs: &mut ValidationErrors,
) -> DnsSettings {
    let region_known = |r: &str| regions.iter().any(|x| x.name == r);
    let ttl = seconds(d.ttl_s, DEFAULT_TTL_S, 1..=86_400, "dns.ttl_s", errs);
    let mut service_ttl = BTreeMap::new();
    for (svc, t) in &d.service_ttl_s {
        let path = format!("dns.service_ttl_s.{svc}");
        if !services.iter().any(|s| &s.name == svc) {
            errs.push(path.clone(), format!("unknown service {svc:?}"));
        }
        service_ttl.insert(svc.clone(), seconds(Some(*t), 0, 1..=86_400, &path, errs));
    }
    let query_log = match d.query_log.as_deref() {
        None => None,
        Some("-") => Some(AccessLogTarget::Stdout),
        Some("") => {
            errs.push(
                "dns.query_log",
                "empty: use \"-\" for standard output or a file path",
            );
            None
        }
        Some(p) => Some(AccessLogTarget::File(p.to_string())),
    };
    if let Some(r) = &d.default_region {
        if !region_known(r) {
            errs.push("dns.default_region", format!("unknown region {r:?}"));
        }
    }
    let probe_interval = Duration::from_millis(d.probe_interval_ms.unwrap_or(1_000));
    let probe_timeout = Duration::from_millis(d.probe_timeout_ms.unwrap_or(500));
    if !probe_interval.is_zero() && (probe_timeout.is_zero() || probe_timeout > probe_interval) {
        errs.push(
            "dns.probe_timeout_ms",
            format!(
                "must be above 0 and at most probe_interval_ms ({} ms), got {} ms",
                probe_interval.as_millis(),
                probe_timeout.as_millis()
            ),
        );
    }
    let probe_failures = d.probe_failures.unwrap_or(2);
    if probe_failures == 0 {
        errs.push("dns.probe_failures", "must be at least 1");
    }
    let probe_successes = d.probe_successes.unwrap_or(DEFAULT_PROBE_SUCCESSES);
    if probe_successes == 0 {
        errs.push("dns.probe_successes", "must be at least 1");
    }
    let return_ramp_s = d.return_ramp_s.unwrap_or(DEFAULT_RETURN_RAMP_S);
    if return_ramp_s > MAX_RETURN_RAMP_S {
        errs.push(
            "dns.return_ramp_s",
            format!("must be between 0 and {MAX_RETURN_RAMP_S} seconds, got {return_ramp_s}"),
        );
    }
    let (tcp_per_client, tcp_write_timeout) = tcp_limits(d, errs);
    let rrl = rrl(d.rrl.as_ref(), errs);
    let mut edge_addresses = BTreeMap::new();
    for (zone, list) in &d.edge_addresses {
        let path = format!("dns.edge_addresses.{zone}");
        if !regions
            .iter()
            .any(|r| r.zones.iter().any(|z| &z.name == zone))
        {
            errs.push(path.clone(), format!("unknown zone {zone:?}"));
        }
        edge_addresses.insert(zone.clone(), ips(list, &path, errs));
    }
    // An edge listening on every address cannot be handed out as is.
    for r in regions {
        for z in &r.zones {
            if z.edge.ip().is_unspecified() && !d.edge_addresses.contains_key(&z.name) {
                errs.push(
                    format!("dns.edge_addresses.{}", z.name),
                    format!(
                        "required: region.{}.zone.{}.edge listens on {}, which no client can reach",
                        r.name,
                        z.name,
                        z.edge.ip()
                    ),
                );
            }
        }
    }

    let mut servers = Vec::new();
    let mut names = BTreeSet::new();
    let mut taken: BTreeMap<SocketAddr, String> = BTreeMap::new();
    if d.servers.is_empty() {
        errs.push("dns.server", "at least one [[dns.server]] is required");
    }
    for (i, s) in d.servers.iter().enumerate() {
        // The name is part of file names in the state folder, which the
        // zones' edges share (`ZONE.lock`, `dns-NAME.lock`).
        let path = match &s.name {
            Some(n) if crate::config::valid_name(n) => {
                let p = format!("dns.server.{n}");
                let clash = format!("dns-{n}");
                if regions
                    .iter()
                    .any(|r| r.zones.iter().any(|z| z.name == clash))
                {
                    errs.push(
                        format!("{p}.name"),
                        format!(
                            "zone {clash:?} keeps its state under the same file names; rename one"
                        ),
                    );
                }
                p
            }
            Some(n) => {
                errs.push(
                    format!("dns.server[{i}].name"),
                    format!("{n:?} is not a valid name (letters, digits, '-' and '_', at most 64)"),
                );
                format!("dns.server[{i}]")
            }
            None => {
                errs.push(format!("dns.server[{i}].name"), "required");
                format!("dns.server[{i}]")
            }
        };
        if let Some(n) = &s.name {
            if !names.insert(n.clone()) {
                errs.push(
                    format!("{path}.name"),
                    format!("duplicate server name {n:?}"),
                );
            }
        }
        if s.listen.is_empty() {
            errs.push(format!("{path}.listen"), "at least one address is required");
        }
        let listen: Vec<SocketAddr> = s
            .listen
            .iter()
            .enumerate()
            .filter_map(|(j, a)| parse_addr(&Some(a.clone()), &format!("{path}.listen[{j}]"), errs))
            .collect();
        let admin = parse_addr(&s.admin, &format!("{path}.admin"), errs);
        for (j, a) in listen.iter().enumerate() {
            let p = format!("{path}.listen[{j}]");
            if let Some(prev) = taken.insert(*a, p.clone()) {
                errs.push(p, format!("duplicate address {a} (also at {prev})"));
            }
        }
        if let Some(a) = admin {
            let p = format!("{path}.admin");
            if let Some(prev) = taken.insert(a, p.clone()) {
                errs.push(p, format!("duplicate address {a} (also at {prev})"));
            }
        }
        if let (Some(name), Some(admin)) = (&s.name, admin) {
            servers.push(DnsServer {
                name: name.clone(),
                listen,
                admin,
                push: s.push.unwrap_or(false),
            });
        }
    }

    let mut zones: Vec<DnsZone> = Vec::new();
    if d.zones.is_empty() {
        errs.push("dns.zone", "at least one [[dns.zone]] is required");
    }
    for (i, z) in d.zones.iter().enumerate() {
        let Some(apex_raw) = &z.apex else {
            errs.push(format!("dns.zone[{i}].apex"), "required");
            continue;
        };
        let path = format!("dns.zone.{apex_raw}");
        let Some(apex) = dns_name(apex_raw, &format!("{path}.apex"), errs) else {
            continue;
        };
        if zones.iter().any(|o| o.apex == apex) {
            errs.push(format!("{path}.apex"), format!("duplicate zone {apex:?}"));
        }
        if z.ns.is_empty() {
            errs.push(format!("{path}.ns"), "at least one name server is required");
        }
        let ns: Vec<String> =
            z.ns.iter()
                .enumerate()
                .filter_map(|(j, n)| dns_name(n, &format!("{path}.ns[{j}]"), errs))
                .collect();
        let mut ns_addresses = BTreeMap::new();
        for (n, list) in &z.ns_addresses {
            let p = format!("{path}.ns_addresses.{n}");
            if let Some(name) = dns_name(n, &p, errs) {
                if !ns.contains(&name) {
                    errs.push(p.clone(), format!("{n:?} is not one of this zone's ns"));
                }
                let tmp = DnsZone {
                    apex: apex.clone(),
                    ns: vec![],
                    ns_addresses: BTreeMap::new(),
                    soa_rname: String::new(),
                    soa_refresh: 0,
                    soa_retry: 0,
                    soa_expire: 0,
                    negative_ttl: 0,
                };
                if !tmp.holds(&name) {
                    errs.push(
                        p.clone(),
                        format!("{n:?} is outside zone {apex:?}; glue is only for names inside it"),
                    );
                }
                ns_addresses.insert(name, ips(list, &p, errs));
            }
        }
        // A name server inside its own zone is reachable only through its
        // address in the zone (and the parent's glue): without one, the
        // delegation is lame.
        for (j, n) in ns.iter().enumerate() {
            let inside = n == &apex || n.ends_with(&format!(".{apex}"));
            if inside && !ns_addresses.contains_key(n) {
                errs.push(
                    format!("{path}.ns[{j}]"),
                    format!("{n:?} is inside the zone: give its addresses in ns_addresses"),
                );
            }
        }
        let soa_rname = match &z.soa_rname {
            Some(r) => dns_name(r, &format!("{path}.soa_rname"), errs).unwrap_or_default(),
            None => format!("hostmaster.{apex}"),
        };
        zones.push(DnsZone {
            soa_refresh: seconds(
                z.soa_refresh_s,
                3_600,
                1..=2_419_200,
                &format!("{path}.soa_refresh_s"),
                errs,
            ),
            soa_retry: seconds(
                z.soa_retry_s,
                600,
                1..=2_419_200,
                &format!("{path}.soa_retry_s"),
                errs,
            ),
            soa_expire: seconds(
                z.soa_expire_s,
                604_800,
                1..=2_419_200,
                &format!("{path}.soa_expire_s"),
                errs,
            ),
            negative_ttl: seconds(
                z.negative_ttl_s,
                DEFAULT_TTL_S,
                0..=86_400,
                &format!("{path}.negative_ttl_s"),
                errs,
            ),
            apex,
            ns,
            ns_addresses,
            soa_rname,
        });
    }
    // A zone nested in another would make the same name answered by two.
    for a in &zones {
        for b in &zones {
            if a.apex != b.apex && b.holds(&a.apex) {
                errs.push(
                    format!("dns.zone.{}.apex", a.apex),
                    format!(
                        "inside zone {:?}; one server answers each name from one zone",
                        b.apex
                    ),
                );
            }
        }
    }
    // Each service's hosts must be names DNS can answer (no port, no
    // wildcard); a service with none under a zone is simply not answered.
    for s in services {
        for (i, h) in s.hosts.iter().enumerate() {
            let name = h.trim_end_matches('.').to_ascii_lowercase();
            if zones.iter().any(|z| z.holds(&name)) && (name.contains(':') || name.contains('*')) {
                errs.push(
                    format!("service.{}.hosts[{i}]", s.name),
                    format!("{h:?} is under a [[dns.zone]] but is not a name DNS can answer"),
                );
            }
        }
    }

    let mut geo = Vec::new();
    let mut seen_prefixes = BTreeMap::new();
    for (i, g) in d.geo.iter().enumerate() {
        let path = format!("dns.geo[{i}]");
        let prefix = match &g.prefix {
            None => {
                errs.push(format!("{path}.prefix"), "required");
                None
            }
            Some(p) => match Prefix::parse(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    errs.push(format!("{path}.prefix"), e);
                    None
                }
            },
        };
        let region = match &g.region {
            None => {
                errs.push(format!("{path}.region"), "required");
                None
            }
            Some(r) if !region_known(r) => {
                errs.push(format!("{path}.region"), format!("unknown region {r:?}"));
                None
            }
            Some(r) => Some(r.clone()),
        };
        if let Some(p) = prefix {
            if let Some(prev) = seen_prefixes.insert(p.to_string(), path.clone()) {
                errs.push(
                    format!("{path}.prefix"),
                    format!("duplicate prefix {p} (also at {prev})"),
                );
            }
        }
        if let (Some(p), Some(r)) = (prefix, region) {
            geo.push((p, r));
        }
    }
    geo.sort_by_key(|g| std::cmp::Reverse(g.0.len));

    let pusher = pusher(d, errs);
    let control_token = crate::config::secret(
        "dns.control_token",
        (&d.control_token, &d.control_token_env),
        8,
        env,
        errs,
    );
    if pusher.is_some() && !edge.control_urls.is_empty() && control_token.is_none() {
        errs.push(
            "dns.control_token",
            "required with [[dns.push]] and a control plane: an operate token with which \
             the pushing server records each push in the control plane's history \
             (control_token or control_token_env)",
        );
    }

    DnsSettings {
        ttl,
        service_ttl,
        state_dir: d.state_dir.clone().or_else(|| edge.state_dir.clone()),
        query_log,
        default_region: d.default_region.clone(),
        probe_interval,
        probe_timeout,
        probe_failures,
        probe_successes,
        return_ramp: Duration::from_secs(return_ramp_s),
        edge_addresses,
        servers,
        zones,
        geo,
        push: d.push.clone(),
        pusher,
        control_token,
        tcp_per_client,
        tcp_write_timeout,
        rrl,
    }
}

fn tcp_limits(d: &raw::Dns, errs: &mut ValidationErrors) -> (u32, Duration) {
    let per_client = d.tcp_per_client.unwrap_or(DEFAULT_TCP_PER_CLIENT);
    if !(1..=MAX_TCP_CONNECTIONS).contains(&per_client) {
        errs.push(
            "dns.tcp_per_client",
            format!(
                "must be between 1 and {MAX_TCP_CONNECTIONS} (the server's TCP connections), got {per_client}"
            ),
        );
    }
    let write_ms = d
        .tcp_write_timeout_ms
        .unwrap_or(DEFAULT_TCP_WRITE_TIMEOUT_MS);
    if !(100..=120_000).contains(&write_ms) {
        errs.push(
            "dns.tcp_write_timeout_ms",
            format!("must be between 100 and 120000 ms, got {write_ms}"),
        );
    }
    (per_client, Duration::from_millis(write_ms))
}

fn rrl(r: Option<&raw::Rrl>, errs: &mut ValidationErrors) -> RrlSettings {
    let Some(r) = r else {
        return RrlSettings::default();
    };
    let rate = r.responses_per_s.unwrap_or(DEFAULT_RRL_RESPONSES_PER_S);
    if rate > MAX_RRL_RATE {
        errs.push(
            "dns.rrl.responses_per_s",
            format!("must be between 0 (off) and {MAX_RRL_RATE}, got {rate}"),
        );
    }
    let burst = r.burst.unwrap_or(rate);
    if rate > 0 && !(1..=MAX_RRL_RATE).contains(&burst) {
        errs.push(
            "dns.rrl.burst",
            format!("must be between 1 and {MAX_RRL_RATE}, got {burst}"),
        );
    }
    let slip = r.slip.unwrap_or(DEFAULT_RRL_SLIP);
    if slip > MAX_RRL_SLIP {
        errs.push(
            "dns.rrl.slip",
            format!("must be between 0 (drop every refused answer) and {MAX_RRL_SLIP}, got {slip}"),
        );
    }
    RrlSettings {
        responses_per_s: rate,
        burst,
        slip,
    }
}

/// Which server pushes. Several servers answer side by side from the same
/// state, but only one may write the outside zones: two writers would each
/// see the other's change as drift and fight over the records.
fn pusher(d: &raw::Dns, errs: &mut ValidationErrors) -> Option<String> {
    let path = |i: usize, s: &raw::Server| match &s.name {
        Some(n) => format!("dns.server.{n}.push"),
        None => format!("dns.server[{i}].push"),
    };
    let marked: Vec<(String, Option<&String>)> = d
        .servers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.push == Some(true))
        .map(|(i, s)| (path(i, s), s.name.as_ref()))
        .collect();
    if d.push.is_empty() {
        for (p, _) in &marked {
            errs.push(
                p.clone(),
                "there is no [[dns.push]] for this server to push",
            );
        }
        return None;
    }
    match marked.as_slice() {
        [] if d.servers.len() == 1 => d.servers[0].name.clone(),
        [] => {
            errs.push(
                "dns.push",
                format!(
                    "{} servers and none has push = true: mark the one that pushes \
                     (only one may, or they would fight over the records)",
                    d.servers.len()
                ),
            );
            None
        }
        [(_, name)] => name.cloned(),
        [(first, _), rest @ ..] => {
            for (p, _) in rest {
                errs.push(
                    p.clone(),
                    format!(
                        "{first} pushes already; only one server may push, or they would \
                         fight over the records"
                    ),
                );
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_mask_and_match() {
        let p = Prefix::parse("10.1.0.0/16").unwrap();
        assert!(p.contains("10.1.200.3".parse().unwrap()));
        assert!(!p.contains("10.2.0.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let p6 = Prefix::parse("2001:db8::/32").unwrap();
        assert!(p6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(Prefix::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for (bad, why) in [
            ("10.1.0.1/16", "did you mean 10.1.0.0/16"),
            ("10.1.0.0", "ip/length"),
            ("10.1.0.0/33", "0 to 32"),
            ("nope/8", "not an IP"),
        ] {
            let e = Prefix::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(
            mask("10.1.2.3".parse().unwrap(), 24),
            "10.1.2.0".parse::<IpAddr>().unwrap()
        );
    }

    const BASE: &str = r#"
[[region]]
name = "r1"
zone = [{ name = "a", edge = "0.0.0.0:8080", admin = "127.1.1.1:9901" }]
[[service]]
name = "svc"
hosts = ["svc.example.test", "*.example.test"]
min_healthy = 0.5
instance = [{ name = "i1", zone = "a", addr = "127.1.1.11:8081" }]
"#;

    fn errors(dns: &str) -> Vec<String> {
        match crate::Config::from_toml(&format!("{BASE}{dns}"), |_| None) {
            Ok(_) => Vec::new(),
            Err(e) => e.reasons(),
        }
    }

    #[test]
    fn every_problem_of_the_dns_section_is_named_with_its_path() {
        let errs = errors(
            r#"
[dns]
ttl_s = 0
service_ttl_s = { nope = 5, svc = 0 }
default_region = "mars"
probe_timeout_ms = 5000
probe_failures = 0
probe_successes = 0
return_ramp_s = 3601
edge_addresses = { nowhere = ["10.0.0.1"] }
tcp_per_client = 1025
tcp_write_timeout_ms = 50
rrl = { responses_per_s = 2000000, burst = 0, slip = 11 }
[[dns.server]]
name = "ns1"
listen = ["127.0.0.1:53", "127.0.0.1:53"]
admin = "127.0.0.1:port"
[[dns.server]]
name = "../ns2"
listen = ["127.0.0.2:53"]
admin = "127.0.0.2:9953"
[[dns.zone]]
apex = "example.test"
ns = ["ns1.example.test"]
ns_addresses = { "ns9.example.test" = ["10.0.0.9"], "ns1.example.test" = ["nope"] }
[[dns.zone]]
apex = "sub.example.test"
ns = ["bad name"]
[[dns.zone]]
apex = "other.test"
ns = ["ns.other.test", "ns.elsewhere.example"]
[[dns.geo]]
prefix = "10.1.0.1/16"
region = "r1"
[[dns.geo]]
prefix = "10.2.0.0/16"
region = "mars"
"#,
        );
        let wants = [
            "dns.ttl_s: must be between 1 and 86400",
            "dns.service_ttl_s.nope: unknown service \"nope\"",
            "dns.service_ttl_s.svc: must be between 1 and 86400 seconds, got 0",
            "dns.default_region: unknown region \"mars\"",
            "dns.probe_timeout_ms: must be above 0 and at most probe_interval_ms",
            "dns.probe_failures: must be at least 1",
            "dns.probe_successes: must be at least 1",
            "dns.return_ramp_s: must be between 0 and 3600 seconds, got 3601",
            "dns.edge_addresses.nowhere: unknown zone",
            "dns.tcp_per_client: must be between 1 and 1024 (the server's TCP connections), got 1025",
            "dns.tcp_write_timeout_ms: must be between 100 and 120000 ms, got 50",
            "dns.rrl.responses_per_s: must be between 0 (off) and 1000000, got 2000000",
            "dns.rrl.burst: must be between 1 and 1000000, got 0",
            "dns.rrl.slip: must be between 0 (drop every refused answer) and 10, got 11",
            "dns.edge_addresses.a: required: region.r1.zone.a.edge listens on 0.0.0.0",
            "dns.server.ns1.listen[1]: duplicate address 127.0.0.1:53",
            "dns.server.ns1.admin: not an address",
            "dns.server[1].name: \"../ns2\" is not a valid name",
            "dns.zone.example.test.ns_addresses.ns9.example.test: \"ns9.example.test\" is not one of this zone's ns",
            "dns.zone.example.test.ns_addresses.ns1.example.test[0]: \"nope\" is not an IP address",
            "dns.zone.sub.example.test.ns[0]: \"bad name\" is not a domain name",
            "dns.zone.sub.example.test.apex: inside zone \"example.test\"",
            "dns.zone.other.test.ns[0]: \"ns.other.test\" is inside the zone: give its addresses in ns_addresses",
            "service.svc.hosts[1]: \"*.example.test\" is under a [[dns.zone]]",
            "dns.geo[0].prefix: \"10.1.0.1/16\" has bits set after /16; did you mean 10.1.0.0/16?",
            "dns.geo[1].region: unknown region \"mars\"",
        ];
        for w in wants {
            assert!(
                errs.iter().any(|e| e.starts_with(w)),
                "{w:?} not in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), wants.len(), "{errs:#?}");
        assert_eq!(
            errors("[dns]\n"),
            [
                "dns.edge_addresses.a: required: region.r1.zone.a.edge listens on 0.0.0.0, which no client can reach",
                "dns.server: at least one [[dns.server]] is required",
                "dns.zone: at least one [[dns.zone]] is required",
            ]
        );
    }

    #[test]
    fn one_server_pushes_and_a_control_plane_needs_its_token() {
        let servers = |marks: [&str; 2]| {
            format!(
                "[dns]\nedge_addresses = {{ a = [\"10.0.0.1\"] }}\n\
                 [[dns.server]]\nname = \"ns1\"\nlisten = [\"127.0.0.1:53\"]\nadmin = \"127.0.0.1:9953\"\n{}\n\
                 [[dns.server]]\nname = \"ns2\"\nlisten = [\"127.0.0.2:53\"]\nadmin = \"127.0.0.2:9953\"\n{}\n\
                 [[dns.zone]]\napex = \"other.test\"\nns = [\"ns.elsewhere\"]\n",
                marks[0], marks[1]
            )
        };
        let push = "[[dns.push]]\nzone = \"example.test\"\n";
        assert_eq!(
            errors(&format!("{}{push}", servers(["", ""]))),
            ["dns.push: 2 servers and none has push = true: mark the one that pushes (only one may, or they would fight over the records)"]
        );
        assert_eq!(
            errors(&format!("{}{push}", servers(["push = true", "push = true"]))),
            ["dns.server.ns2.push: dns.server.ns1.push pushes already; only one server may push, or they would fight over the records"]
        );
        assert_eq!(
            errors(&servers(["", "push = true"])),
            ["dns.server.ns2.push: there is no [[dns.push]] for this server to push"]
        );
        let text = format!("{BASE}{}{push}", servers(["", "push = true"]));
        let c = crate::Config::from_toml(&text, |_| None).unwrap();
        assert_eq!(c.dns.as_ref().unwrap().pusher.as_deref(), Some("ns2"));
        // With a control plane, pushes are audited there: a token is needed.
        let followed = format!("[edge]\ncontrol_url = \"http://127.0.0.1:7000\"\n{text}");
        let errs = crate::Config::from_toml(&followed, |_| None)
            .unwrap_err()
            .reasons();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("dns.control_token: required"),
            "{errs:?}"
        );
        let with_token = followed.replace("[dns]\n", "[dns]\ncontrol_token_env = \"CP_TOKEN\"\n");
        let c = crate::Config::from_toml(&with_token, |k| {
            (k == "CP_TOKEN").then(|| "operate-token".to_string())
        })
        .unwrap();
        assert_eq!(
            c.dns.unwrap().control_token.as_deref(),
            Some("operate-token")
        );
    }

    #[test]
    fn a_server_whose_state_files_would_be_a_zones_is_refused() {
        let text = BASE.replace("name = \"a\"", "name = \"dns-ns1\"").replace("zone = \"a\"", "zone = \"dns-ns1\"")
            + "[dns]\nedge_addresses = { dns-ns1 = [\"10.0.0.1\"] }\n[[dns.server]]\nname = \"ns1\"\nlisten = [\"127.0.0.1:53\"]\nadmin = \"127.0.0.1:9953\"\n[[dns.zone]]\napex = \"other.test\"\nns = [\"ns.elsewhere\"]\n";
        let errs = crate::Config::from_toml(&text, |_| None)
            .unwrap_err()
            .reasons();
        assert_eq!(
            errs,
            ["dns.server.ns1.name: zone \"dns-ns1\" keeps its state under the same file names; rename one"]
        );
    }

    /// A valid `[dns]` section for [`BASE`].
    const VALID_DNS: &str = "[dns]\nedge_addresses = { a = [\"10.0.0.1\"] }\n[[dns.server]]\nname = \"ns1\"\nlisten = [\"127.0.0.1:53\"]\nadmin = \"127.0.0.1:9953\"\n[[dns.zone]]\napex = \"other.test\"\nns = [\"ns.elsewhere\"]\n";

    /// The validated `[dns]` of a small valid config with `extra` keys in it.
    fn valid_dns_with(extra: &str) -> DnsSettings {
        let text = format!(
            "{BASE}{}",
            VALID_DNS.replace("[dns]\n", &format!("[dns]\n{extra}"))
        );
        crate::Config::from_toml(&text, |_| None)
            .unwrap()
            .dns
            .unwrap()
    }

    #[test]
    fn an_edge_needs_two_good_probes_and_a_region_a_minute_to_come_back_unless_told() {
        let read = valid_dns_with;
        let d = read("");
        assert_eq!(
            (d.probe_successes, d.return_ramp),
            (2, Duration::from_secs(60))
        );
        let d = read("probe_successes = 1\nreturn_ramp_s = 0\n");
        assert_eq!((d.probe_successes, d.return_ramp), (1, Duration::ZERO));
        assert_eq!(
            read("return_ramp_s = 3600\n").return_ramp,
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn client_limits_have_defaults_and_can_be_set_or_turned_off() {
        let read = valid_dns_with;
        let d = read("");
        assert_eq!(
            (d.tcp_per_client, d.tcp_write_timeout, d.rrl),
            (
                16,
                Duration::from_secs(10),
                RrlSettings {
                    responses_per_s: 1000,
                    burst: 1000,
                    slip: 2
                }
            )
        );
        // The burst follows the rate unless given.
        let d = read(
            "tcp_per_client = 1024\ntcp_write_timeout_ms = 500\nrrl = { responses_per_s = 20 }\n",
        );
        assert_eq!(d.tcp_per_client, 1024);
        assert_eq!(d.tcp_write_timeout, Duration::from_millis(500));
        assert_eq!(
            (d.rrl.responses_per_s, d.rrl.burst, d.rrl.slip),
            (20, 20, 2)
        );
        let d = read("rrl = { responses_per_s = 0, burst = 0, slip = 0 }\n");
        assert_eq!(d.rrl.responses_per_s, 0, "0 is off; the burst is then moot");
        assert_eq!(
            errors(&VALID_DNS.replace("[dns]\n", "[dns]\ntcp_per_client = 0\n")),
            ["dns.tcp_per_client: must be between 1 and 1024 (the server's TCP connections), got 0"]
        );
        let unknown = errors(&VALID_DNS.replace("[dns]\n", "[dns]\nrrl = { rate = 5 }\n"));
        assert!(
            unknown.len() == 1 && unknown[0].contains("rate"),
            "{unknown:?}"
        );
    }

    #[test]
    fn a_zone_holds_its_apex_and_names_below_it_only() {
        let z = DnsZone {
            apex: "example.test".into(),
            ns: vec![],
            ns_addresses: BTreeMap::new(),
            soa_rname: String::new(),
            soa_refresh: 0,
            soa_retry: 0,
            soa_expire: 0,
            negative_ttl: 0,
        };
        assert!(z.holds("example.test"));
        assert!(z.holds("a.b.example.test"));
        assert!(!z.holds("badexample.test"));
        assert!(!z.holds("test"));
    }
}

//! Everything a query is answered from, built whole and swapped in at once
//! (the request path never locks): the zones with their SOA and NS records,
//! the names that exist, and the answer table of every service.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{Name, RData, Record};
use switchyard_model::dns::DnsZone;
use switchyard_model::{Config, Controls, Service};

use prometheus_client::metrics::counter::Counter;

use crate::answers::{self, Choice, EdgeHealth, ServiceAnswers};

/// What a name under a zone is.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A service's public name: index into [`View::answers`].
    Service(usize),
    /// A name server's address inside its own zone (glue).
    Glue(Vec<IpAddr>),
    /// Exists only because names below it do (RFC 8020: not NXDOMAIN).
    Empty,
}

pub struct ZoneView {
    pub zone: DnsZone,
    pub soa: SOA,
    pub ns: Vec<Name>,
}

pub struct View {
    pub config: Arc<Config>,
    pub controls: Arc<Controls>,
    /// The SOA serial: the controls' version (modulo 2³²), which moves with
    /// every change the control plane makes.
    pub serial: u32,
    pub ttl: u32,
    pub zones: Vec<ZoneView>,
    /// Lower case, without the final dot.
    pub names: HashMap<String, Entry>,
    pub answers: Vec<ServiceAnswers>,
    /// The answer table again, as wire bytes ready to copy
    /// ([`crate::packet::respond_fast`]): one entry per [`View::answers`].
    pub fast: Vec<FastAnswers>,
    /// Per zone apex (lower case, no final dot), the answers that are the
    /// same for every client, as the full path encodes them.
    pub fast_static: HashMap<String, ZoneFast>,
}

/// A whole answer that is the same for every client.
pub struct StaticAnswer {
    /// The answer to the question asked in lower case with id 0, no
    /// flags and no EDNS.
    pub bytes: Vec<u8>,
    /// `queries_total` for it over UDP and TCP, resolved on first use.
    pub counters: [OnceLock<Counter>; 2],
}

/// The query types whose NXDOMAIN answers are taken fast, with their names
/// (labels of `queries_total`).
pub const NX_TYPES: [(u16, &str); 10] = [
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (65, "HTTPS"),
];

pub struct ZoneFast {
    pub soa: Option<StaticAnswer>,
    pub ns: Option<StaticAnswer>,
    /// NXDOMAIN for a name one label below the apex, by that label's
    /// length (index 0 unused): the full path's answer for a name with a
    /// label of that length. The SOA it carries is compressed against the
    /// apex inside the question, which sits at the same offset for every
    /// label of that length, so only the label and the type differ.
    pub nx: Vec<Option<Vec<u8>>>,
    /// Names (lower case, no final dot) whose NXDOMAIN answer the encoder
    /// compresses differently (the SOA's own names would point at the
    /// question whole): left to the full path.
    pub nx_unlike: Vec<String>,
    /// `queries_total` for NXDOMAIN, by [`NX_TYPES`] and transport.
    pub nx_counters: [[OnceLock<Counter>; 2]; NX_TYPES.len()],
}

/// One service's answers as records on the wire, in the order and with the
/// weights of its [`ServiceAnswers`], so the same draw picks the same one.
pub struct FastAnswers {
    pub by_region: HashMap<String, Vec<FastChoice>>,
    pub default: Vec<FastChoice>,
    /// The `fail_open` counter of the service, resolved on first use.
    pub fail_open: OnceLock<Counter>,
}

impl FastAnswers {
    pub fn for_region(&self, region: Option<&str>) -> &[FastChoice] {
        region
            .and_then(|r| self.by_region.get(r))
            .unwrap_or(&self.default)
    }
}

pub struct FastChoice {
    pub weight: f64,
    pub region: String,
    pub fail_open: bool,
    /// The A records, then the AAAA records; `None` when the region has no
    /// address of that family (the full path answers NODATA).
    pub sets: [Option<FastSet>; 2],
}

/// One family's records of a choice, each owned by a pointer to the
/// question (offset 12), written twice in a row: the answers rotated to
/// start at address `k` are the `n` records from the `k`-th on.
pub struct FastSet {
    pub n: usize,
    pub rr_len: usize,
    pub doubled: Vec<u8>,
    /// `queries_total` for this type, rcode NOERROR, this region, by
    /// transport (UDP, TCP): resolved once per view instead of a label
    /// lookup per query.
    pub counters: [OnceLock<Counter>; 2],
}

impl FastSet {
    /// The records rotated to start at the address `id` picks.
    pub fn rotated(&self, id: u16) -> &[u8] {
        let start = usize::from(id) % self.n;
        &self.doubled[start * self.rr_len..(start + self.n) * self.rr_len]
    }
}

fn fast_choices(choices: &[Choice], ttl: u32) -> Vec<FastChoice> {
    choices
        .iter()
        .map(|c| {
            let set = |v4: bool| {
                let of: Vec<IpAddr> = c
                    .addrs
                    .iter()
                    .copied()
                    .filter(|a| a.is_ipv4() == v4)
                    .collect();
                if of.is_empty() {
                    return None;
                }
                let mut doubled = Vec::new();
                for a in of.iter().chain(&of) {
                    // Owner: a pointer to the question's name, as the
                    // encoder compresses it.
                    doubled.extend_from_slice(&[0xc0, 12]);
                    let (t, data): (u16, Vec<u8>) = match a {
                        IpAddr::V4(a) => (1, a.octets().to_vec()),
                        IpAddr::V6(a) => (28, a.octets().to_vec()),
                    };
                    doubled.extend_from_slice(&t.to_be_bytes());
                    doubled.extend_from_slice(&1u16.to_be_bytes());
                    doubled.extend_from_slice(&ttl.to_be_bytes());
                    doubled.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    doubled.extend_from_slice(&data);
                }
                Some(FastSet {
                    n: of.len(),
                    rr_len: doubled.len() / (2 * of.len()),
                    doubled,
                    counters: Default::default(),
                })
            };
            FastChoice {
                weight: c.weight,
                region: c.region.clone(),
                fail_open: answers::failed_open(c),
                sets: [set(true), set(false)],
            }
        })
        .collect()
}

fn name(s: &str) -> Name {
    // Names were checked at validation; a failure here is a bug there.
    let mut n = Name::from_ascii(s).unwrap_or_else(|e| panic!("validated name {s:?}: {e}"));
    n.set_fqdn(true);
    n
}

/// The services with a host under one of the config's DNS zones, in config order.
pub fn answered_services(config: &Config) -> Vec<&Service> {
    let Some(dns) = &config.dns else {
        return Vec::new();
    };
    config
        .services
        .iter()
        .filter(|s| {
            s.hosts
                .iter()
                .any(|h| dns.zones.iter().any(|z| z.holds(&normal(h))))
        })
        .collect()
}

/// A name as the tables key it.
pub fn normal(h: &str) -> String {
    h.trim_end_matches('.').to_ascii_lowercase()
}

impl View {
    pub fn build(
        config: Arc<Config>,
        controls: Arc<Controls>,
        health: &impl EdgeHealth,
        now_ms: u64,
    ) -> View {
        let services = answered_services(&config);
        let answers = answers::table(&config, &controls, health, now_ms, &services);
        let dns = config.dns.as_ref();
        let serial = (controls.version % (1u64 << 32)) as u32;
        let mut names = HashMap::new();
        let mut zones = Vec::new();
        for z in dns.map(|d| d.zones.as_slice()).unwrap_or_default() {
            let ns: Vec<Name> = z.ns.iter().map(|n| name(n)).collect();
            let soa = SOA::new(
                ns.first().cloned().unwrap_or_else(|| name(&z.apex)),
                name(&z.soa_rname),
                serial,
                z.soa_refresh as i32,
                z.soa_retry as i32,
                z.soa_expire as i32,
                z.negative_ttl,
            );
            for (n, ips) in &z.ns_addresses {
                names.insert(n.clone(), Entry::Glue(ips.clone()));
            }
            zones.push(ZoneView {
                zone: z.clone(),
                soa,
                ns,
            });
        }
        for (i, s) in services.iter().enumerate() {
            for h in &s.hosts {
                let h = normal(h);
                if zones.iter().any(|z| z.zone.holds(&h)) {
                    names.insert(h, Entry::Service(i));
                }
            }
        }
        // Every name between an existing name and its apex exists too.
        let existing: Vec<String> = names.keys().cloned().collect();
        for n in existing {
            let Some(z) = zones.iter().find(|z| z.zone.holds(&n)) else {
                continue;
            };
            let mut rest = n.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.len() <= z.zone.apex.len() {
                    break;
                }
                names.entry(parent.to_string()).or_insert(Entry::Empty);
                rest = parent;
            }
        }
        let fast = answers
            .iter()
            .map(|sa| FastAnswers {
                by_region: sa
                    .by_region
                    .iter()
                    .map(|(r, c)| (r.clone(), fast_choices(c, sa.ttl)))
                    .collect(),
                default: fast_choices(&sa.default, sa.ttl),
                fail_open: OnceLock::new(),
            })
            .collect();
        let mut view = View {
            fast,
            fast_static: HashMap::new(),
            ttl: dns.map_or(switchyard_model::dns::DEFAULT_TTL_S, |d| d.ttl),
            config,
            controls,
            serial,
            zones,
            names,
            answers,
        };
        // Asked of the full path, so the bytes are its own.
        let mut fast_static = HashMap::new();
        for z in &view.zones {
            let apex = &z.zone.apex;
            let ask = |name: &str, qtype| {
                let q = crate::packet::canonical_query(name, qtype);
                crate::packet::respond_full(
                    &view,
                    &q,
                    IpAddr::from([0, 0, 0, 0]),
                    crate::packet::Transport::Tcp,
                )
            };
            let answer = |qtype| {
                let out = ask(apex, qtype);
                // Positive answers only; anything else stays with the
                // full path.
                out.bytes
                    .filter(|_| out.info.rcode == "NOERROR" && out.info.region.is_none())
                    .map(|bytes| StaticAnswer {
                        bytes,
                        counters: Default::default(),
                    })
            };
            // Every name the SOA's own names end with.
            let mut nx_unlike: Vec<String> = Vec::new();
            for n in [&z.soa.mname, &z.soa.rname] {
                let n = normal(&n.to_ascii());
                let mut rest = n.as_str();
                loop {
                    nx_unlike.push(rest.to_string());
                    match rest.split_once('.') {
                        Some((_, r)) => rest = r,
                        None => break,
                    }
                }
            }
            let nx = (0..=63usize)
                .map(|len| {
                    // A label of that length naming nothing.
                    let name = (b'a'..=b'z')
                        .map(|c| format!("{}.{apex}", char::from(c).to_string().repeat(len)))
                        .find(|n| {
                            len > 0
                                && n.len() <= 253
                                && !view.names.contains_key(n)
                                && view.zone_of(n).is_some_and(|zv| zv.zone.apex == *apex)
                                && !nx_unlike.contains(n)
                        })?;
                    let out = ask(&name, 1);
                    out.bytes.filter(|_| out.info.rcode == "NXDOMAIN")
                })
                .collect();
            fast_static.insert(
                apex.clone(),
                ZoneFast {
                    soa: answer(6),
                    ns: answer(2),
                    nx,
                    nx_unlike,
                    nx_counters: Default::default(),
                },
            );
        }
        view.fast_static = fast_static;
        view
    }

    /// The zone holding `name` (normalised), if any.
    pub fn zone_of(&self, name: &str) -> Option<&ZoneView> {
        self.zones
            .iter()
            .filter(|z| z.zone.holds(name))
            .max_by_key(|z| z.zone.apex.len())
    }
}

impl ZoneView {
    pub fn soa_record(&self, ttl: u32) -> Record {
        Record::from_rdata(name(&self.zone.apex), ttl, RData::SOA(self.soa.clone()))
    }

    pub fn ns_records(&self, owner: &Name, ttl: u32) -> Vec<Record> {
        self.ns
            .iter()
            .map(|n| Record::from_rdata(owner.clone(), ttl, RData::NS(NS(n.clone()))))
            .collect()
    }

    /// Glue for the zone's own name servers.
    pub fn glue(&self, ttl: u32) -> Vec<Record> {
        self.zone
            .ns_addresses
            .iter()
            .flat_map(|(n, ips)| ips.iter().map(move |ip| address(&name(n), ttl, *ip)))
            .collect()
    }
}

pub fn address(owner: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(a) => RData::A(A(a)),
        IpAddr::V6(a) => RData::AAAA(AAAA(a)),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

//! Everything a query is answered from, built whole and swapped in at once
//! (the request path never locks): the zones with their SOA and NS records,
//! the names that exist, and the answer table of every service.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{Name, RData, Record};
use switchyard_model::dns::DnsZone;
use switchyard_model::{Config, Controls, Service};

use crate::answers::{self, EdgeHealth, ServiceAnswers};

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
        View {
            ttl: dns.map_or(switchyard_model::dns::DEFAULT_TTL_S, |d| d.ttl),
            config,
            controls,
            serial,
            zones,
            names,
            answers,
        }
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

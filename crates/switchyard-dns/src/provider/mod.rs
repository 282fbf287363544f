//! Pushing steering decisions to a DNS service Switchyard does not run (the
//! "Denominator layer"): the addresses the steering library chose for each
//! public name become A/AAAA record sets at an outside provider.
//!
//! The pieces, and why they are split this way:
//! - [`Desired`] and [`Current`]: record sets, provider-neutral.
//! - [`diff`]: pure; decides which RRsets change. Every backend gets the same
//!   "send only what changed" behaviour without reimplementing it.
//! - [`Provider`]: what a backend implements — read the sets of the names
//!   Switchyard manages, apply a [`Diff`] atomically where the service allows.
//!   Backends classify their failures into [`ProviderError`]; retry policy is
//!   not theirs.
//! - [`push`]: the driver — read, diff, apply, retry transient failures,
//!   re-read on a conflicting concurrent change, and report a [`PushReport`]
//!   whose [`PushSummary`] is what the control plane's history records.
//! - [`follow`]: push on every change of the desired state and re-check
//!   periodically, undoing drift made at the provider.
//! - [`config`]: the validated `[[push]]` tables that name zone and backend.
//!
//! The one backend today is [`rfc2136::Rfc2136`] (dynamic UPDATE with TSIG).
//! docs/dns-providers.md says how to add Route 53, NS1 or PowerDNS.

pub mod config;
pub mod desired;
pub mod diff;
pub mod follow;
pub mod push;
pub mod rfc2136;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

pub use diff::{diff, Diff, RrsetChange};
pub use follow::{follow, FollowOptions};
pub use push::{push, PushOptions, PushOutcome, PushReport, PushSummary};

/// The largest TTL DNS allows (RFC 2181 §8).
pub const MAX_TTL: u32 = 0x7fff_ffff;

/// A domain name as the providers see it: lowercase, absolute (ends in a
/// dot), each label 1–63 octets, at most 255 octets on the wire. Kept as text
/// so summaries serialize readably and backends with HTTP APIs use it as is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsName(String);

impl DnsName {
    /// Parses `text`, with or without the final dot.
    pub fn parse(text: &str) -> Result<DnsName, InvalidRecords> {
        let bad = |why: &str| InvalidRecords::Name {
            name: text.to_string(),
            why: why.to_string(),
        };
        let trimmed = text.strip_suffix('.').unwrap_or(text);
        if trimmed.is_empty() {
            // The root is a valid name but never a zone or owner we manage.
            return Err(bad(
                "empty name (the root is not a zone Switchyard manages)",
            ));
        }
        let mut wire_len = 1;
        for label in trimmed.split('.') {
            if label.is_empty() {
                return Err(bad("empty label (two dots in a row)"));
            }
            if label.len() > 63 {
                return Err(bad("a label is longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
            {
                return Err(bad(
                    "only letters, digits, '-', '_' and '*' are allowed in labels",
                ));
            }
            wire_len += label.len() + 1;
        }
        if wire_len > 255 {
            return Err(bad("longer than 255 octets"));
        }
        Ok(DnsName(format!("{}.", trimmed.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if `self` is `zone` or below it.
    pub fn is_in(&self, zone: &DnsName) -> bool {
        self == zone || self.0.ends_with(&format!(".{}", zone.0))
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DnsName {
    type Error = InvalidRecords;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        DnsName::parse(&s)
    }
}

impl From<DnsName> for String {
    fn from(n: DnsName) -> String {
        n.0
    }
}

/// The record types Switchyard manages: the addresses of edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AddrType {
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
}

impl AddrType {
    pub const ALL: [AddrType; 2] = [AddrType::A, AddrType::Aaaa];

    pub fn of(addr: &IpAddr) -> AddrType {
        match addr {
            IpAddr::V4(_) => AddrType::A,
            IpAddr::V6(_) => AddrType::Aaaa,
        }
    }
}

impl fmt::Display for AddrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddrType::A => "A",
            AddrType::Aaaa => "AAAA",
        })
    }
}

/// Which RRset: owner name and type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RrKey {
    pub name: DnsName,
    #[serde(rename = "type")]
    pub rtype: AddrType,
}

impl fmt::Display for RrKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.rtype)
    }
}

/// The contents of one RRset. Never empty: an absent RRset is `None` where
/// one is expected, so "no records" has one spelling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RrSet {
    pub ttl: u32,
    pub addrs: BTreeSet<IpAddr>,
}

/// What Switchyard wants in one zone.
///
/// The owner names in `names` are Switchyard's: at each of them the A and
/// AAAA RRsets are exactly those in `sets` (a type absent there is deleted at
/// the provider). Every other name and type in the zone is left alone, so
/// Switchyard can share a zone with records people manage by hand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub zone: DnsName,
    pub names: BTreeSet<DnsName>,
    pub sets: BTreeMap<RrKey, RrSet>,
}

impl Desired {
    pub fn new(zone: &str) -> Result<Desired, InvalidRecords> {
        Ok(Desired {
            zone: DnsName::parse(zone)?,
            names: BTreeSet::new(),
            sets: BTreeMap::new(),
        })
    }

    /// Makes `owner` answer with `addrs` (IPv4 ones as its A RRset, IPv6 ones
    /// as its AAAA RRset, both with `ttl`), replacing what was set for it
    /// before. No addresses means the name stays managed with no address
    /// records: that is how a name is emptied at the provider.
    pub fn set(
        &mut self,
        owner: &str,
        ttl: u32,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Result<&mut Desired, InvalidRecords> {
        let name = DnsName::parse(owner)?;
        if !name.is_in(&self.zone) {
            return Err(InvalidRecords::OutsideZone {
                name: name.to_string(),
                zone: self.zone.to_string(),
            });
        }
        if ttl > MAX_TTL {
            return Err(InvalidRecords::Ttl {
                name: name.to_string(),
                ttl,
            });
        }
        let mut by_type: BTreeMap<AddrType, BTreeSet<IpAddr>> = BTreeMap::new();
        for a in addrs {
            by_type.entry(AddrType::of(&a)).or_default().insert(a);
        }
        for rtype in AddrType::ALL {
            let key = RrKey {
                name: name.clone(),
                rtype,
            };
            match by_type.remove(&rtype) {
                Some(addrs) => {
                    self.sets.insert(key, RrSet { ttl, addrs });
                }
                None => {
                    self.sets.remove(&key);
                }
            }
        }
        self.names.insert(name);
        Ok(self)
    }

    /// How many RRsets are in scope: two types per managed name.
    pub fn rrsets_in_scope(&self) -> usize {
        self.names.len() * AddrType::ALL.len()
    }
}

/// What a provider holds for the managed names of one zone. Sets at other
/// names or of other types are not read, or are ignored by [`diff`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub sets: BTreeMap<RrKey, RrSet>,
}

/// Desired records that cannot be sent anywhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecords {
    #[error("invalid DNS name `{name}`: {why}")]
    Name { name: String, why: String },
    #[error("owner name `{name}` is not inside zone `{zone}`")]
    OutsideZone { name: String, zone: String },
    #[error("TTL {ttl} of `{name}` is above the DNS maximum of {MAX_TTL}")]
    Ttl { name: String, ttl: u32 },
}

/// Why a provider could not read or change a zone. Every variant names the
/// zone and the server (or API endpoint) so the operator knows where to look.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// No answer in time, connection refused or reset: may pass by itself.
    #[error("zone {zone}: {server} unreachable: {detail}")]
    Unreachable {
        zone: String,
        server: String,
        detail: String,
    },
    /// The service answered that it failed (SERVFAIL, HTTP 5xx, throttling):
    /// may pass by itself.
    #[error("zone {zone}: {server} failed the request ({code}): {detail}")]
    ServerFailure {
        zone: String,
        server: String,
        code: String,
        detail: String,
    },
    /// The service refused: wrong credentials, not allowed, not
    /// authoritative. Retrying cannot help; an operator must act.
    #[error("zone {zone}: {server} refused the request ({code}): {detail}")]
    Rejected {
        zone: String,
        server: String,
        code: String,
        detail: String,
    },
    /// The records changed under us between read and apply (a failed
    /// prerequisite, a stale change token). Reading again resolves it.
    #[error("zone {zone}: {server}: records changed since they were read ({code}): {detail}")]
    Conflict {
        zone: String,
        server: String,
        code: String,
        detail: String,
    },
    /// The answer could not be trusted or understood (bad signature,
    /// malformed message, wrong ID).
    #[error("zone {zone}: {server} sent an unusable response: {detail}")]
    BadResponse {
        zone: String,
        server: String,
        detail: String,
    },
    /// A managed name holds something that forbids address records there
    /// (a CNAME, a delegation).
    #[error("zone {zone}: {server}: cannot manage `{name}`: {detail}")]
    Unmanageable {
        zone: String,
        server: String,
        name: String,
        detail: String,
    },
}

impl ProviderError {
    /// Worth trying again after a pause.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::Unreachable { .. } | ProviderError::ServerFailure { .. }
        )
    }

    /// A short stable word for metrics and summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Unreachable { .. } => "unreachable",
            ProviderError::ServerFailure { .. } => "server_failure",
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::Conflict { .. } => "conflict",
            ProviderError::BadResponse { .. } => "bad_response",
            ProviderError::Unmanageable { .. } => "unmanageable",
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An outside DNS service Switchyard can write to. Object-safe, so the
/// backend can be chosen from configuration at run time.
pub trait Provider: Send + Sync {
    /// Who is written to, for messages and the audit trail:
    /// e.g. `rfc2136 192.0.2.53:53 key switchyard.`.
    fn describe(&self) -> String;

    /// The A and AAAA RRsets at `names` in `zone`. A backend that can only
    /// list a whole zone lists it and keeps these names.
    fn current<'a>(
        &'a self,
        zone: &'a DnsName,
        names: &'a BTreeSet<DnsName>,
    ) -> BoxFuture<'a, Result<Current, ProviderError>>;

    /// Makes the RRsets of `diff` look like each change's `to`, all or
    /// nothing where the service can. A backend should refuse (with
    /// [`ProviderError::Conflict`]) when an RRset no longer holds the
    /// change's `from`, so a concurrent writer's change is not overwritten
    /// blindly.
    fn apply<'a>(&'a self, diff: &'a Diff) -> BoxFuture<'a, Result<(), ProviderError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_and_checked() {
        assert_eq!(
            DnsName::parse("Svc.Example.TEST").unwrap().as_str(),
            "svc.example.test."
        );
        assert_eq!(
            DnsName::parse("svc.example.test.").unwrap().as_str(),
            "svc.example.test."
        );
        for bad in [
            "",
            ".",
            "a..b",
            "a b.test",
            &format!("{}.test", "x".repeat(64)),
        ] {
            let err = DnsName::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
        let zone = DnsName::parse("example.test").unwrap();
        assert!(DnsName::parse("a.example.test").unwrap().is_in(&zone));
        assert!(DnsName::parse("example.test").unwrap().is_in(&zone));
        assert!(!DnsName::parse("badexample.test").unwrap().is_in(&zone));
    }

    #[test]
    fn desired_splits_families_and_refuses_names_outside_the_zone() {
        let mut d = Desired::new("example.test").unwrap();
        d.set(
            "svc.example.test",
            30,
            ["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(d.sets.len(), 2);
        // Setting again replaces: the AAAA set goes away.
        d.set("svc.example.test", 30, ["192.0.2.2".parse().unwrap()])
            .unwrap();
        assert_eq!(d.sets.len(), 1);
        let a = &d.sets[&RrKey {
            name: DnsName::parse("svc.example.test").unwrap(),
            rtype: AddrType::A,
        }];
        assert_eq!(a.addrs.iter().next().unwrap().to_string(), "192.0.2.2");

        let err = d.set("svc.other.test", 30, []).unwrap_err();
        assert_eq!(
            err.to_string(),
            "owner name `svc.other.test.` is not inside zone `example.test.`"
        );
        let err = d.set("svc.example.test", MAX_TTL + 1, []).unwrap_err();
        assert!(err.to_string().contains("TTL 2147483648"), "{err}");
    }
}

//! Desired vs current → the RRsets that must change, and nothing else.

use serde::{Deserialize, Serialize};

use super::{AddrType, Current, Desired, DnsName, RrKey, RrSet};

/// One RRset moving from `from` to `to`. `from: None` creates it, `to: None`
/// deletes it, both `Some` replace it (addresses, TTL or both changed).
/// `from` is what was read: backends use it as a precondition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RrsetChange {
    #[serde(flatten)]
    pub key: RrKey,
    pub from: Option<RrSet>,
    pub to: Option<RrSet>,
}

/// The changes to one zone, in a stable order (by name, then type).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    pub zone: DnsName,
    pub changes: Vec<RrsetChange>,
    /// RRsets in scope that already match (present and equal).
    pub unchanged: usize,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Compares the managed RRsets only: sets in `current` at names `desired`
/// does not manage are never touched. An RRset counts as changed when its
/// TTL or its set of addresses differs; the order addresses were given in
/// does not matter.
pub fn diff(desired: &Desired, current: &Current) -> Diff {
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for name in &desired.names {
        for rtype in AddrType::ALL {
            let key = RrKey {
                name: name.clone(),
                rtype,
            };
            let want = desired.sets.get(&key);
            let have = current.sets.get(&key);
            match (want, have) {
                (None, None) => {}
                (Some(w), Some(h)) if w == h => unchanged += 1,
                _ => changes.push(RrsetChange {
                    key,
                    from: have.cloned(),
                    to: want.cloned(),
                }),
            }
        }
    }
    Diff {
        zone: desired.zone.clone(),
        changes,
        unchanged,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn key(name: &str, rtype: AddrType) -> RrKey {
        RrKey {
            name: DnsName::parse(name).unwrap(),
            rtype,
        }
    }

    fn set(ttl: u32, list: &[&str]) -> RrSet {
        RrSet {
            ttl,
            addrs: ips(list).into_iter().collect(),
        }
    }

    fn current(sets: &[(RrKey, RrSet)]) -> Current {
        Current {
            sets: sets.iter().cloned().collect(),
        }
    }

    #[test]
    fn equal_sets_in_any_order_send_nothing() {
        let mut d = Desired::new("example.test").unwrap();
        d.set("svc.example.test", 30, ips(&["192.0.2.2", "192.0.2.1"]))
            .unwrap();
        let c = current(&[(
            key("svc.example.test", AddrType::A),
            set(30, &["192.0.2.1", "192.0.2.2"]),
        )]);
        let out = diff(&d, &c);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(out.unchanged, 1);
    }

    #[test]
    fn a_failover_replaces_only_the_set_that_moved() {
        let mut d = Desired::new("example.test").unwrap();
        // Region A's users now get region B's edges; region B's own name and
        // the AAAA set are as they were.
        d.set(
            "a.svc.example.test",
            30,
            ips(&["198.51.100.1", "198.51.100.2", "2001:db8:b::1"]),
        )
        .unwrap();
        d.set(
            "b.svc.example.test",
            30,
            ips(&["198.51.100.1", "198.51.100.2"]),
        )
        .unwrap();
        let c = current(&[
            (
                key("a.svc.example.test", AddrType::A),
                set(30, &["192.0.2.1", "192.0.2.2"]),
            ),
            (
                key("a.svc.example.test", AddrType::Aaaa),
                set(30, &["2001:db8:b::1"]),
            ),
            (
                key("b.svc.example.test", AddrType::A),
                set(30, &["198.51.100.1", "198.51.100.2"]),
            ),
        ]);
        let out = diff(&d, &c);
        assert_eq!(
            out.changes,
            vec![RrsetChange {
                key: key("a.svc.example.test", AddrType::A),
                from: Some(set(30, &["192.0.2.1", "192.0.2.2"])),
                to: Some(set(30, &["198.51.100.1", "198.51.100.2"])),
            }]
        );
        assert_eq!(out.unchanged, 2);
    }

    #[test]
    fn ttl_change_alone_is_a_change() {
        let mut d = Desired::new("example.test").unwrap();
        d.set("svc.example.test", 60, ips(&["192.0.2.1"])).unwrap();
        let c = current(&[(
            key("svc.example.test", AddrType::A),
            set(30, &["192.0.2.1"]),
        )]);
        let out = diff(&d, &c);
        assert_eq!(out.changes.len(), 1);
        assert_eq!(out.changes[0].to.as_ref().unwrap().ttl, 60);
    }

    #[test]
    fn creates_and_deletes_and_leaves_unmanaged_names_alone() {
        let mut d = Desired::new("example.test").unwrap();
        d.set("new.example.test", 30, ips(&["2001:db8::7"]))
            .unwrap();
        // Managed with no addresses: its sets are deleted.
        d.set("gone.example.test", 30, []).unwrap();
        let c = current(&[
            (
                key("gone.example.test", AddrType::A),
                set(30, &["192.0.2.9"]),
            ),
            (
                key("gone.example.test", AddrType::Aaaa),
                set(30, &["2001:db8::9"]),
            ),
            (
                key("www.example.test", AddrType::A),
                set(300, &["192.0.2.80"]),
            ),
        ]);
        let out = diff(&d, &c);
        let summary: Vec<(String, bool, bool)> = out
            .changes
            .iter()
            .map(|ch| (ch.key.to_string(), ch.from.is_some(), ch.to.is_some()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("gone.example.test. A".to_string(), true, false),
                ("gone.example.test. AAAA".to_string(), true, false),
                ("new.example.test. AAAA".to_string(), false, true),
            ]
        );
        assert_eq!(out.unchanged, 0);
    }
}

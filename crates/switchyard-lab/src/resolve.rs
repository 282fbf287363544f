//! How the lab's clients find the edges: a stub resolver over real UDP (TCP
//! when an answer is truncated) to the lab's DNS servers, and the "users" of
//! a client group, each with its own client subnet (EDNS Client Subnet) and
//! its own cached answer.
//!
//! hickory's resolver crate caches and retries, but it cannot send a client
//! subnet per query, and the lab needs one per user so that a group behaves
//! like many clients of one geography: DNS splits clients, not groups, when
//! a region takes part of the traffic. So this builds and reads messages
//! with hickory-proto and does the little a stub does itself.
//!
//! A user keeps its answer for the TTL the server gave (at least a second),
//! then asks again; users of a group expire at staggered moments, as caches
//! of many clients do. A user whose connection to an edge is refused asks
//! again at once (at most once a second), as resilient clients do, instead
//! of failing until the TTL runs out. When no server answers, a user keeps
//! its last answer (serve stale) and tries again a second later.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Asks the name servers in order, each for at most `timeout`.
#[derive(Debug, Clone)]
pub struct Resolver {
    pub servers: Vec<SocketAddr>,
    /// The address queries leave from: where the DNS server places a client
    /// that sends no subnet.
    pub source: IpAddr,
    pub name: String,
    /// The port the answered addresses are called on (DNS has no port).
    pub port: u16,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub addrs: Vec<SocketAddr>,
    pub ttl: Duration,
    pub server: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no name server answered within {timeout:?} (tried {servers:?}): {last}")]
    NoAnswer {
        servers: Vec<SocketAddr>,
        timeout: Duration,
        last: String,
    },
    #[error("{server} answered {rcode} for {name}")]
    Rcode {
        server: SocketAddr,
        name: String,
        rcode: ResponseCode,
    },
    #[error("{server} answered no address for {name}")]
    Empty { server: SocketAddr, name: String },
    #[error("the name {0:?} is not a domain name: {1}")]
    Name(String, String),
}

impl Resolver {
    /// One lookup of the A records, with `subnet` as the client subnet.
    pub async fn resolve(&self, subnet: Option<(IpAddr, u8)>) -> Result<Answer, ResolveError> {
        let query = self.query(subnet)?;
        let mut last = String::from("no server configured");
        for &server in &self.servers {
            let reply =
                match tokio::time::timeout(self.timeout, self.exchange(server, &query)).await {
                    Ok(Ok(m)) => m,
                    Ok(Err(e)) => {
                        last = format!("{server}: {e}");
                        continue;
                    }
                    Err(_) => {
                        last = format!("{server}: timed out");
                        continue;
                    }
                };
            let rcode = reply.metadata.response_code;
            if rcode != ResponseCode::NoError {
                return Err(ResolveError::Rcode {
                    server,
                    name: self.name.clone(),
                    rcode,
                });
            }
            let mut ttl = u32::MAX;
            let addrs: Vec<SocketAddr> = reply
                .answers
                .iter()
                .filter_map(|r| {
                    let ip = match &r.data {
                        RData::A(a) => IpAddr::V4(a.0),
                        _ => return None,
                    };
                    ttl = ttl.min(r.ttl);
                    Some(SocketAddr::new(ip, self.port))
                })
                .collect();
            if addrs.is_empty() {
                return Err(ResolveError::Empty {
                    server,
                    name: self.name.clone(),
                });
            }
            return Ok(Answer {
                addrs,
                ttl: Duration::from_secs(u64::from(ttl)),
                server,
            });
        }
        Err(ResolveError::NoAnswer {
            servers: self.servers.clone(),
            timeout: self.timeout,
            last,
        })
    }

    fn query(&self, subnet: Option<(IpAddr, u8)>) -> Result<Message, ResolveError> {
        let name = Name::from_ascii(&self.name)
            .map_err(|e| ResolveError::Name(self.name.clone(), e.to_string()))?;
        let mut m = Message::query();
        m.metadata.id = rand::random();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name, RecordType::A));
        let mut e = Edns::new();
        e.set_max_payload(1232);
        if let Some((addr, len)) = subnet {
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(addr, len, 0)));
        }
        m.set_edns(e);
        Ok(m)
    }

    /// One query and its answer: UDP, then TCP when the answer is truncated.
    async fn exchange(&self, server: SocketAddr, query: &Message) -> std::io::Result<Message> {
        let bytes = query.to_vec().map_err(std::io::Error::other)?;
        let sock = tokio::net::UdpSocket::bind(SocketAddr::new(self.source, 0)).await?;
        sock.connect(server).await?;
        sock.send(&bytes).await?;
        let mut buf = vec![0u8; 4096];
        let reply = loop {
            let n = sock.recv(&mut buf).await?;
            // Anything else on this socket (a late answer to nobody, a
            // forged one) is not ours: keep waiting for our id.
            if let Ok(m) = Message::from_vec(&buf[..n]) {
                if m.metadata.id == query.metadata.id {
                    break m;
                }
            }
        };
        if !reply.metadata.truncation {
            return Ok(reply);
        }
        let s = tokio::net::TcpSocket::new_v4()?;
        s.bind(SocketAddr::new(self.source, 0))?;
        let mut s = s.connect(server).await?;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        s.write_all(&framed).await?;
        let len = s.read_u16().await?;
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await?;
        Message::from_vec(&buf).map_err(std::io::Error::other)
    }
}

/// One client of a group: its subnet and its cached answer.
pub struct User {
    pub subnet: (IpAddr, u8),
    answer: ArcSwap<Vec<SocketAddr>>,
    /// Woken when a call to an edge of the answer was refused.
    refresh: Notify,
    /// When the user last asked, so a storm of refusals asks once a second.
    asked: Mutex<Option<Instant>>,
}

/// Shortest time between two lookups of one user.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

impl User {
    pub fn new(subnet: (IpAddr, u8)) -> User {
        User {
            subnet,
            answer: ArcSwap::from_pointee(Vec::new()),
            refresh: Notify::new(),
            asked: Mutex::new(None),
        }
    }

    /// The addresses this user calls now (empty before its first answer).
    pub fn addrs(&self) -> Arc<Vec<SocketAddr>> {
        self.answer.load_full()
    }

    /// A call to one of the answer's edges was refused: ask again soon.
    pub fn refused(&self) {
        self.refresh.notify_one();
    }

    async fn ask(&self, r: &Resolver) -> Result<Answer, ResolveError> {
        *self.asked.lock().expect("user lock") = Some(Instant::now());
        let a = r.resolve(Some(self.subnet)).await?;
        self.answer.store(Arc::new(a.addrs.clone()));
        Ok(a)
    }

    /// Keeps the answer fresh until the task is dropped. The first renewal
    /// comes after `phase` of the first TTL, so a group's users do not all
    /// ask in the same instant.
    pub async fn keep_fresh(self: Arc<Self>, r: Resolver, phase: f64) {
        let mut first = true;
        loop {
            let wait = match self.ask(&r).await {
                Ok(a) if first => a.ttl.max(MIN_INTERVAL).mul_f64(phase.clamp(0.0, 1.0)),
                Ok(a) => a.ttl.max(MIN_INTERVAL),
                Err(e) => {
                    tracing::debug!(error = %e, "lab client: lookup failed; keeping the last answer");
                    MIN_INTERVAL
                }
            };
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.refresh.notified() => {
                    let since = self.asked.lock().expect("user lock").map(|t| t.elapsed());
                    if let Some(s) = since.filter(|s| *s < MIN_INTERVAL) {
                        tokio::time::sleep(MIN_INTERVAL - s).await;
                    }
                }
            }
        }
    }
}

/// `users` users, each with a /24 of its own as its client subnet, from
/// `base`'s on: user k has `a.b.(c+k).0/24`. A /24 is what DNS servers and
/// edges draw a client by (`switchyard_steer::client_draw`), so users that
/// shared one would all be sent the same way, as one client.
pub fn users_of(base: Ipv4Addr, users: u8) -> Vec<Arc<User>> {
    let o = base.octets();
    let users = u32::from(users.clamp(1, 64)).min(256 - u32::from(o[2]));
    (0..users)
        .map(|k| {
            let ip = Ipv4Addr::new(o[0], o[1], (u32::from(o[2]) + k) as u8, 0);
            Arc::new(User::new((IpAddr::V4(ip), 24)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_get_a_24_each_from_their_groups_on() {
        let u = users_of(Ipv4Addr::new(127, 201, 0, 1), 16);
        let subnets: Vec<String> = u
            .iter()
            .map(|u| format!("{}/{}", u.subnet.0, u.subnet.1))
            .collect();
        assert_eq!(subnets.len(), 16);
        assert_eq!(subnets[0], "127.201.0.0/24");
        assert_eq!(subnets[15], "127.201.15.0/24");
        let distinct: std::collections::BTreeSet<_> = subnets.iter().collect();
        assert_eq!(distinct.len(), 16);
        // Never past the group's /16.
        assert_eq!(users_of(Ipv4Addr::new(127, 201, 250, 1), 16).len(), 6);
    }
}

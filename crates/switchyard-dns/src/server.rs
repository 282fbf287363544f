//! The UDP and TCP loops around [`crate::packet::respond_fast`] and
//! [`crate::packet::respond_full`]. Queries are
//! answered from the view in force; metrics are counted and the query log
//! line is handed to its writer thread, never waited on.
//!
//! What a client can hold is bounded: over UDP, answers per second by
//! [`crate::rrl`]; over TCP, [`MAX_TCP`] connections in all and
//! `dns.tcp_per_client` per address (a connection over either is closed at
//! once, so it neither waits in the backlog nor holds a slot), each closed
//! when idle for [`TCP_IDLE`] or when an answer cannot be written within
//! `dns.tcp_write_timeout_ms` (a client that sends and never reads).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::metrics::{ActionLabels, QueryLabels, ReasonLabels, ServiceLabels};
use crate::packet::{respond_fast, respond_full, slipped, FastAnswer, Info, Transport};
use crate::rrl::Verdict;
use crate::state::Dns;

/// A TCP connection with no complete query for this long is closed
/// (RFC 7766 suggests seconds, not minutes).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections served at once.
pub const MAX_TCP: u32 = switchyard_model::dns::MAX_TCP_CONNECTIONS;

/// Why a TCP connection was closed as soon as it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address holds `dns.tcp_per_client` connections already.
    PerClient,
    /// The server holds [`MAX_TCP`].
    Global,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::PerClient => "per_client",
            Refused::Global => "global",
        }
    }
}

/// The TCP connections held, in all and per client address. The map only
/// holds addresses with a connection open, so it is bounded by the global
/// cap.
pub struct TcpSlots {
    max: u32,
    held: Mutex<(u32, HashMap<IpAddr, u32>)>,
}

/// One connection's place; given back when dropped.
pub struct TcpSlot {
    slots: Arc<TcpSlots>,
    ip: IpAddr,
}

impl TcpSlots {
    pub fn new(max: u32) -> Arc<TcpSlots> {
        Arc::new(TcpSlots {
            max,
            held: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for a connection from `ip`, if neither it nor the server is
    /// at its limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, per_client: u32) -> Result<TcpSlot, Refused> {
        let ip = ip.to_canonical();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *held;
        let mine = per_ip.get(&ip).copied().unwrap_or(0);
        if mine >= per_client {
            return Err(Refused::PerClient);
        }
        if *total >= self.max {
            return Err(Refused::Global);
        }
        *total += 1;
        per_ip.insert(ip, mine + 1);
        Ok(TcpSlot {
            slots: self.clone(),
            ip,
        })
    }

    /// Connections held by `ip`, and in all.
    pub fn held(&self, ip: IpAddr) -> (u32, u32) {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        (held.1.get(&ip.to_canonical()).copied().unwrap_or(0), held.0)
    }
}

impl Drop for TcpSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *held;
        *total -= 1;
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Answers one packet: the bytes to send back, if any.
pub fn handle(
    dns: &Dns,
    packet: &[u8],
    client: SocketAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    let view = dns.view();
    let t = match transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    };
    if let Some(f) = respond_fast(&view, packet, client.ip(), transport) {
        // Counter handles resolved once per view (the family keeps the
        // same counter for the labels), not a labelled lookup per query.
        f.counter(transport)
            .get_or_init(|| {
                dns.metrics
                    .queries
                    .get_or_create(&QueryLabels {
                        qtype: Cow::Borrowed(f.qtype),
                        rcode: Cow::Borrowed(f.rcode()),
                        region: f.region().unwrap_or_default().to_string(),
                        transport: Cow::Borrowed(t),
                    })
                    .clone()
            })
            .inc();
        if let FastAnswer::Service {
            service, choice, ..
        } = &f.answer
        {
            if choice.fail_open {
                view.fast[*service]
                    .fail_open
                    .get_or_init(|| {
                        dns.metrics
                            .fail_open
                            .get_or_create(&ServiceLabels {
                                service: view.answers[*service].service.clone(),
                            })
                            .clone()
                    })
                    .inc();
            }
        }
        if let Some(log) = &dns.query_log {
            log.log(line(client, t, f.info(packet)));
        }
        return Some(f.bytes);
    }
    let out = respond_full(&view, packet, client.ip(), transport);
    let i = &out.info;
    dns.metrics
        .queries
        .get_or_create(&QueryLabels {
            qtype: i.qtype.clone(),
            rcode: Cow::Borrowed(i.rcode),
            region: i.region.clone().unwrap_or_default(),
            transport: Cow::Borrowed(t),
        })
        .inc();
    if i.truncated {
        dns.metrics.truncated.inc();
    }
    if i.fail_open {
        if let Some(s) = &i.service {
            dns.metrics
                .fail_open
                .get_or_create(&ServiceLabels { service: s.clone() })
                .inc();
        }
    }
    if let Some(log) = &dns.query_log {
        log.log(line(client, t, out.info));
    }
    out.bytes
}

fn line(client: SocketAddr, transport: &'static str, i: Info) -> crate::QueryLine {
    crate::QueryLine {
        time: humantime_now(),
        client: client.ip().to_string(),
        transport,
        qtype: i.qtype.to_string(),
        name: i.name,
        rcode: i.rcode,
        ecs: i.ecs,
        client_region: i.client_region,
        service: i.service,
        region: i.region,
        truncated: i.truncated,
        fail_open: i.fail_open,
    }
}

fn humantime_now() -> String {
    let ms = switchyard_model::time::now_ms();
    switchyard_model::time::rfc3339_ms(ms as i64)
}

/// One task per worker thread reads the shared socket, so a burst is
/// answered in parallel without a queue in between.
pub fn spawn_udp(tasks: &mut tokio::task::JoinSet<()>, dns: Arc<Dns>, sock: Arc<UdpSocket>) {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    for _ in 0..n {
        let (dns, sock) = (dns.clone(), sock.clone());
        tasks.spawn(async move {
            let mut buf = vec![0u8; 65_535];
            loop {
                let (len, from) = match sock.recv_from(&mut buf).await {
                    Ok(x) => x,
                    // ICMP errors from earlier sends surface here; the
                    // socket itself is fine.
                    Err(e) => {
                        tracing::debug!(error = %e, "udp receive");
                        continue;
                    }
                };
                let Some(out) = udp_answer(&dns, &buf[..len], from) else {
                    continue;
                };
                if let Err(e) = sock.send_to(&out, from).await {
                    tracing::debug!(error = %e, %from, "udp send");
                }
            }
        });
    }
}

/// The bytes to send back to a UDP query, if any, once the client's prefix
/// is within its rate: a refused query costs a hash and a shard lock, not
/// an answer (and is neither counted as a query nor logged, so a flood
/// cannot flood the log).
fn udp_answer(dns: &Dns, packet: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let rrl = dns
        .view()
        .config
        .dns
        .as_ref()
        .map(|d| d.rrl)
        .unwrap_or_default();
    let action = match dns.rrl.check_now(from.ip(), &rrl) {
        Verdict::Answer => return handle(dns, packet, from, Transport::Udp),
        Verdict::Slip => "slipped",
        Verdict::Drop => "dropped",
    };
    dns.metrics
        .rrl
        .get_or_create(&ActionLabels { action })
        .inc();
    if action == "slipped" {
        slipped(packet)
    } else {
        None
    }
}

/// Serves one listener; `slots` is shared by every listener of the server.
pub async fn serve_tcp(dns: Arc<Dns>, listener: TcpListener, slots: Arc<TcpSlots>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (per_client, write_timeout) = dns.config().dns.as_ref().map_or(
            (
                switchyard_model::dns::DEFAULT_TCP_PER_CLIENT,
                Duration::from_millis(switchyard_model::dns::DEFAULT_TCP_WRITE_TIMEOUT_MS),
            ),
            |d| (d.tcp_per_client, d.tcp_write_timeout),
        );
        let slot = match slots.admit(from.ip(), per_client) {
            Ok(s) => s,
            Err(why) => {
                // Dropping the stream closes it: the client learns at once
                // instead of waiting in the backlog.
                dns.metrics
                    .tcp_refused
                    .get_or_create(&ReasonLabels {
                        reason: why.label(),
                    })
                    .inc();
                tracing::debug!(%from, reason = why.label(), "tcp connection refused");
                continue;
            }
        };
        let dns = dns.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tcp_conn(&dns, stream, from, write_timeout).await;
        });
    }
}

/// Queries on one connection, each framed by a two-byte length (RFC 1035
/// 4.2.2), answered in order until the client closes, goes quiet, or stops
/// reading its answers.
async fn tcp_conn(
    dns: &Dns,
    mut s: TcpStream,
    from: SocketAddr,
    write_timeout: Duration,
) -> std::io::Result<()> {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, s.read_u16()).await {
            Ok(Ok(l)) => usize::from(l),
            _ => return Ok(()),
        };
        buf.resize(len, 0);
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let Some(out) = handle(dns, &buf, from, Transport::Tcp) else {
            // Nothing to answer (a response, a stub of a header): a TCP
            // peer sending that is not speaking DNS; hang up.
            return Ok(());
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        // A client that pipelines queries and never reads fills the socket
        // buffers, and the write would wait forever holding the slot.
        match tokio::time::timeout(write_timeout, s.write_all(&framed)).await {
            Ok(r) => r?,
            Err(_) => {
                dns.metrics.tcp_write_timeouts.inc();
                tracing::debug!(%from, "tcp answer not read in time; closing");
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_gets_its_share_and_the_rest_is_left_to_others() {
        let slots = TcpSlots::new(5);
        let a: Vec<TcpSlot> = (0..2)
            .map(|_| slots.admit(ip("10.0.0.1"), 2).unwrap())
            .collect();
        assert_eq!(
            slots.admit(ip("10.0.0.1"), 2).err(),
            Some(Refused::PerClient)
        );
        // The same address seen through a dual-stack socket is the same client.
        assert_eq!(
            slots.admit(ip("::ffff:10.0.0.1"), 2).err(),
            Some(Refused::PerClient)
        );
        let b: Vec<TcpSlot> = ["10.0.0.2", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|i| slots.admit(ip(i), 2).unwrap())
            .collect();
        assert_eq!(slots.admit(ip("10.0.0.4"), 2).err(), Some(Refused::Global));
        drop(b);
        assert_eq!(slots.held(ip("10.0.0.2")), (0, 2));
        drop(a);
        assert_eq!(slots.held(ip("10.0.0.1")), (0, 0));
        // Addresses with nothing open are forgotten: the map stays bounded.
        assert!(slots.held.lock().unwrap().1.is_empty());
        assert!(slots.admit(ip("10.0.0.1"), 2).is_ok());
    }
}

//! The UDP and TCP loops around [`crate::packet::respond_fast`] and
//! [`crate::packet::respond_full`]. Queries are
//! answered from the view in force; metrics are counted and the query log
//! line is handed to its writer thread, never waited on.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::metrics::{QueryLabels, ServiceLabels};
use crate::packet::{respond_fast, respond_full, FastAnswer, Info, Transport};
use crate::state::Dns;

/// A TCP connection with no complete query for this long is closed
/// (RFC 7766 suggests seconds, not minutes).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections served at once; more wait in the kernel's backlog.
const MAX_TCP: usize = 1024;

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
                if let Some(out) = handle(&dns, &buf[..len], from, Transport::Udp) {
                    if let Err(e) = sock.send_to(&out, from).await {
                        tracing::debug!(error = %e, %from, "udp send");
                    }
                }
            }
        });
    }
}

pub async fn serve_tcp(dns: Arc<Dns>, listener: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let dns = dns.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp_conn(&dns, stream, from).await;
        });
    }
}

/// Queries on one connection, each framed by a two-byte length (RFC 1035
/// 4.2.2), answered in order until the client closes or goes quiet.
async fn tcp_conn(dns: &Dns, mut s: TcpStream, from: SocketAddr) -> std::io::Result<()> {
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
        s.write_all(&framed).await?;
    }
}

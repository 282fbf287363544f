//! `switchyard dns` against hostile clients, as a real process on real
//! sockets: one address cannot take every TCP connection, a client that
//! never reads its answers loses its connection, and a prefix flooding UDP
//! is rate limited while other clients are answered in full.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use switchyard_testkit::{eventually, sample, DnsProcess, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const NAME: &str = "svc.test.";

/// Two regions, so two client addresses in two /24s (`client_ip`); the
/// server does not probe (no edge runs).
fn lab(dns_keys: &str) -> Topology {
    Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])])
        .with_dns(1)
        .dns_probe_interval_ms(0)
        .dns_toml(dns_keys)
}

fn query(id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.add_query(Query::query(Name::from_ascii(NAME).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

fn framed(id: u16) -> Vec<u8> {
    let q = query(id);
    let mut f = (q.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(&q);
    f
}

async fn connect_from(from: IpAddr, server: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    if let Some(b) = recv_buffer {
        s.set_recv_buffer_size(b).unwrap();
    }
    s.bind(SocketAddr::new(from, 0)).unwrap();
    s.connect(server).await.expect("connect")
}

/// A connection the server has taken (it answered one query on it), left
/// open. Connecting is not enough: the kernel completes handshakes before
/// the server accepts them, and not always in the order they were made.
async fn admitted(from: IpAddr, server: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let mut s = connect_from(from, server, recv_buffer).await;
    s.write_all(&framed(1)).await.unwrap();
    let len = s.read_u16().await.expect("the server answers");
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await.unwrap();
    s
}

/// One query over a new TCP connection from `from`: the answer, or `None`
/// when the server closes the connection instead.
async fn tcp_ask(ns: &DnsProcess, from: IpAddr) -> Option<Message> {
    let mut s = connect_from(from, ns.listen, None).await;
    let exchange = async {
        s.write_all(&framed(7)).await.ok()?;
        let len = s.read_u16().await.ok()?;
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await.ok()?;
        Message::from_vec(&buf).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .expect("the server answers or closes within 2 s")
}

#[tokio::test]
async fn one_address_cannot_take_every_tcp_connection() {
    let lab = lab("tcp_per_client = 4");
    let ns = lab.start_dns(1).await;
    let (greedy, other) = (lab.client_ip("r1"), lab.client_ip("r2"));
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(admitted(greedy, ns.listen, None).await);
    }
    // The fifth from the same address is closed at once ...
    assert!(tcp_ask(&ns, greedy).await.is_none());
    // ... while another address is served.
    let m = tcp_ask(&ns, other)
        .await
        .expect("another client is answered");
    assert_eq!(m.answers.len(), 1, "{m:?}");
    let metrics = ns.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "switchyard_dns_tcp_refused_total{reason=\"per_client\"}"
        ),
        1.0,
        "{metrics}"
    );
    // A connection closed gives its place back.
    drop(idle.pop());
    eventually(
        "the greedy address is served again",
        Duration::from_secs(2),
        || async {
            match tcp_ask(&ns, greedy).await {
                Some(_) => Ok(()),
                None => Err("still refused".to_string()),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_loses_its_connection() {
    // Forty zones: each answer carries forty addresses (about 700 bytes),
    // so a few thousand unread answers fill every socket buffer.
    let zones: Vec<String> = (1..=40).map(|i| format!("z{i}")).collect();
    let zs: Vec<&str> = zones.iter().map(String::as_str).collect();
    let lab = Topology::new(BIN, &[("r1", &zs)])
        .instances_per_zone(1)
        .with_dns(1)
        .dns_probe_interval_ms(0)
        .dns_toml("tcp_per_client = 1\ntcp_write_timeout_ms = 1000");
    let ns = lab.start_dns(1).await;
    let me = lab.client_ip("r1");
    let started = Instant::now();
    // A small receive window, queries pipelined, nothing ever read.
    let mut deaf = admitted(me, ns.listen, Some(4096)).await;
    let writer = tokio::spawn(async move {
        let batch: Vec<u8> = (0..100).flat_map(framed).collect();
        for _ in 0..200 {
            if deaf.write_all(&batch).await.is_err() {
                break;
            }
        }
        // Held open (and unread) until the test ends.
        std::future::pending::<()>().await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tcp_ask(&ns, me).await.is_none(),
        "the deaf connection holds the address's one place"
    );
    eventually(
        "the stuck write times out and frees the place",
        Duration::from_secs(4),
        || async {
            match tcp_ask(&ns, me).await {
                Some(_) => Ok(()),
                None => Err("still refused".to_string()),
            }
        },
    )
    .await;
    // Well before the 10 s idle timeout could have done it.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let metrics = ns.metrics().await;
    assert_eq!(
        sample(&metrics, "switchyard_dns_tcp_write_timeouts_total"),
        1.0,
        "{metrics}"
    );
    writer.abort();
}

#[tokio::test]
async fn a_flooding_prefix_is_rate_limited_over_udp_and_others_are_answered() {
    let lab = lab("rrl = { responses_per_s = 20 }");
    let ns = lab.start_dns(1).await;
    let (flooder, other) = (lab.client_ip("r1"), lab.client_ip("r2"));
    let sock = UdpSocket::bind(SocketAddr::new(flooder, 0)).await.unwrap();
    let flood_started = Instant::now();
    let flood = async {
        for id in 0..200u16 {
            sock.send_to(&query(id), ns.listen).await.unwrap();
        }
        flood_started.elapsed()
    };
    // Another /24 asks at the same time, and gets every answer.
    let polite = async {
        for _ in 0..10 {
            let m = ns.ask(NAME, RecordType::A).from(other).udp().await;
            assert!(!m.metadata.truncation && m.answers.len() == 1, "{m:?}");
        }
    };
    let (flood_took, ()) = tokio::join!(flood, polite);
    let (mut full, mut truncated) = (0u32, 0u32);
    let mut last_reply = flood_took;
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await
    {
        last_reply = flood_started.elapsed();
        let m = Message::from_vec(&buf[..n]).unwrap();
        if m.metadata.truncation {
            assert!(m.answers.is_empty(), "{m:?}");
            truncated += 1;
        } else {
            full += 1;
        }
    }
    // The burst, plus what the rate refilled until the last answer went out
    // (a millisecond more for the server's clock ticks).
    let most = 21 + (20.0 * last_reply.as_secs_f64()).ceil() as u32;
    assert!(
        (20..=most).contains(&full),
        "{full} answers, the last {last_reply:?} after the flood began"
    );
    // Half of the refused ones slip out truncated (slip = 2).
    let refused = 200 - full;
    assert!(
        truncated.abs_diff(refused / 2) <= 1,
        "{truncated} truncated of {refused} refused"
    );
    let metrics = ns.metrics().await;
    let count = |action: &str| {
        sample(
            &metrics,
            &format!("switchyard_dns_rrl_total{{action=\"{action}\"}}"),
        )
    };
    assert_eq!(count("slipped") as u32, truncated, "{metrics}");
    assert_eq!(
        (count("slipped") + count("dropped")) as u32,
        refused,
        "{metrics}"
    );
    // TCP is never limited: the flooder's resolver still gets its answer.
    let m = tcp_ask(&ns, flooder).await.expect("answered over TCP");
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn switchyard_validate_names_each_bad_limit_with_its_path() {
    let lab = lab(
        "tcp_per_client = 0\ntcp_write_timeout_ms = 10\nrrl = { responses_per_s = 2000000, slip = 11 }",
    );
    let out = std::process::Command::new(BIN)
        .arg("validate")
        .arg(lab.write_config())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for path in [
        "dns.tcp_per_client: must be between 1 and 1024",
        "dns.tcp_write_timeout_ms: must be between 100 and 120000 ms, got 10",
        "dns.rrl.responses_per_s: must be between 0 (off) and 1000000, got 2000000",
        "dns.rrl.slip: must be between 0 (drop every refused answer) and 10, got 11",
    ] {
        assert!(text.contains(path), "{path:?} not in {text}");
    }
}

//! The edge's own HTTP/1.x server, byte by byte: request framing (chunked
//! with extensions and trailers, Content-Length refused when ambiguous),
//! pipelining, HTTP/1.0, HEAD, 100-continue, heads over the limits, an
//! over-limit upload that still gets its 413, and idle keep-alive
//! connections that hold no buffer. Every test writes raw bytes to a real
//! edge process in front of real upstreams.

use std::time::Duration;

use switchyard_testkit::upstream::Digest;
use switchyard_testkit::{eventually, Topology, HOST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// One raw client connection that reads responses as they come.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

struct Resp {
    head: String,
    body: Vec<u8>,
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr) -> Raw {
        Raw {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.s.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// Reads more bytes; false at EOF.
    async fn fill(&mut self) -> bool {
        let mut b = [0u8; 16384];
        let n = tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut b))
            .await
            .expect("the edge answers within 5 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&b[..n]);
        n > 0
    }

    /// The next response; `no_body` for an answer to HEAD.
    async fn response(&mut self, no_body: bool) -> Resp {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill().await,
                "closed before a response head: {:?}",
                self.text()
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let lower = head.to_ascii_lowercase();
        let length = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|n| n.trim().parse::<usize>().unwrap());
        let status: u16 = head[9..12].parse().unwrap();
        if no_body || status == 204 || status == 304 || (100..200).contains(&status) {
            return Resp {
                head,
                body: Vec::new(),
            };
        }
        let body = if let Some(n) = length {
            while self.buf.len() < n {
                assert!(self.fill().await, "closed mid-body");
            }
            self.buf.drain(..n).collect()
        } else if lower.contains("transfer-encoding: chunked") {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.fill().await, "closed mid-chunk");
                };
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&self.buf[..line_end]).trim(),
                    16,
                )
                .unwrap();
                while self.buf.len() < line_end + 2 + size + 2 {
                    assert!(self.fill().await, "closed mid-chunk");
                }
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break body;
                }
            }
        } else {
            while self.fill().await {}
            std::mem::take(&mut self.buf)
        };
        Resp { head, body }
    }

    /// Whether the edge closes the connection within 3 s.
    async fn closes(&mut self) -> bool {
        let mut b = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(3), self.s.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

fn gauge(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_are_framed_by_length_or_chunks_with_extensions_and_trailers() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).instances_per_zone(1);
    let ups = lab.start_upstreams().await;
    let up = &ups["a-1"];
    let a = lab.start_edge("a").await;
    let mut c = Raw::connect(a.listen).await;
    c.send(&format!(
        "PUT /items/1 HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0\r\nx-checksum: 1\r\n\r\n"
    ))
    .await;
    let r = c.response(false).await;
    assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
    assert_eq!(up.last_body(), Some((11, Digest::of(b"hello world"))));
    // The same connection, now a body by length.
    c.send(&format!(
        "PUT /items/2 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\n\r\nabcd"
    ))
    .await;
    let r = c.response(false).await;
    assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
    assert_eq!(up.last_body(), Some((4, Digest::of(b"abcd"))));
}

/// Large bodies are read straight from the socket into frames of their own,
/// up to 64 KiB a read: a read must stop at the end of a chunk's data or of
/// a body by length, whatever the client has already sent behind it.
#[tokio::test(flavor = "multi_thread")]
async fn large_chunks_and_lengths_read_in_big_frames_arrive_byte_for_byte() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).instances_per_zone(1);
    let ups = lab.start_upstreams().await;
    let up = &ups["a-1"];
    let a = lab.start_edge("a").await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut c = Raw::connect(a.listen).await;
    // Chunks above and below the direct-read threshold, all written at once
    // so that reads find the next chunk's bytes behind the current one.
    let mut wire =
        format!("PUT /items/1 HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    let mut at = 0;
    for n in [100_000usize, 20_000, 3, 70_000, 17_000, 92_997] {
        wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        wire.extend_from_slice(&data[at..at + n]);
        wire.extend_from_slice(b"\r\n");
        at += n;
    }
    assert_eq!(at, data.len());
    wire.extend_from_slice(b"0\r\nx-checksum: 1\r\n\r\n");
    c.s.write_all(&wire).await.unwrap();
    let r = c.response(false).await;
    assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
    assert_eq!(up.last_body(), Some((data.len() as u64, Digest::of(&data))));

    // A body by length with a request pipelined right behind it.
    let mut wire = format!(
        "PUT /items/2 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .into_bytes();
    wire.extend_from_slice(&data);
    wire.extend_from_slice(
        format!("PUT /items/3 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 3\r\n\r\nxyz").as_bytes(),
    );
    let before = up.requests();
    c.s.write_all(&wire).await.unwrap();
    for _ in 0..2 {
        let r = c.response(false).await;
        assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
    }
    assert_eq!(up.requests(), before + 2);
    assert_eq!(up.last_body(), Some((3, Digest::of(b"xyz"))));
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_or_malformed_framing_gets_400_and_a_close() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).instances_per_zone(1);
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    for (what, framing) in [
        (
            "both",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ),
        ("not a number", "Content-Length: five\r\n"),
        ("differing", "Content-Length: 5\r\nContent-Length: 6\r\n"),
        ("negative", "Content-Length: -5\r\n"),
        ("unknown coding", "Transfer-Encoding: gzip\r\n"),
    ] {
        let mut c = Raw::connect(a.listen).await;
        c.send(&format!(
            "PUT /items/1 HTTP/1.1\r\nHost: {HOST}\r\n{framing}\r\nhello"
        ))
        .await;
        let r = c.response(false).await;
        assert!(r.head.starts_with("HTTP/1.1 400"), "{what}: {}", r.head);
        assert!(
            String::from_utf8_lossy(&r.body).contains("bad_request"),
            "{what}"
        );
        assert!(c.closes().await, "{what}: the connection is closed");
    }
    // A malformed chunk size mid-body: the request fails, the edge stays up.
    let mut c = Raw::connect(a.listen).await;
    c.send(&format!(
        "PUT /items/1 HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    ))
    .await;
    let r = c.response(false).await;
    assert!(r.head.starts_with("HTTP/1.1 400"), "{}", r.head);
    assert_eq!(ups["a-1"].requests(), 0, "nothing reached the instance");
    let mut c = Raw::connect(a.listen).await;
    c.send(&format!("GET /items/1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
        .await;
    assert!(c.response(false).await.head.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order_and_head_has_no_body() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).instances_per_zone(1);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let mut c = Raw::connect(a.listen).await;
    // Three requests in one write; the middle one a HEAD.
    c.send(&format!(
        "GET /download/3 HTTP/1.1\r\nHost: {HOST}\r\n\r\n\
         HEAD /download/7 HTTP/1.1\r\nHost: {HOST}\r\n\r\n\
         GET /download/5 HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    ))
    .await;
    let first = c.response(false).await;
    assert_eq!(first.body.len(), 3, "{}", first.head);
    let head = c.response(true).await;
    assert!(head.head.starts_with("HTTP/1.1 200"), "{}", head.head);
    let third = c.response(false).await;
    assert_eq!(
        third.body.len(),
        5,
        "{}: no HEAD body bytes before it",
        third.head
    );
    assert!(third.head.to_ascii_lowercase().contains("\r\ndate: "));
}

#[tokio::test(flavor = "multi_thread")]
async fn http_1_0_closes_unless_asked_to_keep_alive() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).instances_per_zone(1);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let mut c = Raw::connect(a.listen).await;
    c.send(&format!("GET /items/1 HTTP/1.0\r\nHost: {HOST}\r\n\r\n"))
        .await;
    let r = c.response(false).await;
    assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
    assert!(c.closes().await);

    let mut c = Raw::connect(a.listen).await;
    for _ in 0..2 {
        c.send(&format!(
            "GET /items/1 HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n"
        ))
        .await;
        let r = c.response(false).await;
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("connection: keep-alive"),
            "{}",
            r.head
        );
    }
    // A body of unknown length to an HTTP/1.0 client ends with the close.
    c.send(&format!(
        "GET /trickle/10 HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n"
    ))
    .await;
    let end = loop {
        if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        assert!(c.fill().await);
    };
    let head = String::from_utf8_lossy(&c.buf[..end]).to_ascii_lowercase();
    assert!(head.contains("connection: close"), "{head}");
    assert!(!head.contains("chunked"), "{head}");
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_is_answered_when_the_body_is_wanted() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).instances_per_zone(1);
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let mut c = Raw::connect(a.listen).await;
    c.send(&format!(
        "PUT /items/1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    ))
    .await;
    let interim = c.response(true).await;
    assert!(interim.head.starts_with("HTTP/1.1 100"), "{}", interim.head);
    c.send("hello").await;
    let r = c.response(false).await;
    assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
    assert_eq!(ups["a-1"].last_body(), Some((5, Digest::of(b"hello"))));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_over_twice_the_limit_gets_431_and_a_split_head_is_served() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).edge_toml("max_header_bytes = 4096");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let mut c = Raw::connect(a.listen).await;
    let big = "x".repeat(9000);
    c.send(&format!(
        "GET /items/1 HTTP/1.1\r\nHost: {HOST}\r\nx-big: {big}\r\n\r\n"
    ))
    .await;
    let r = c.response(false).await;
    assert!(r.head.starts_with("HTTP/1.1 431"), "{}", r.head);
    assert!(String::from_utf8_lossy(&r.body).contains("headers_too_large"));
    // Between one and two times the limit: the proxy's own JSON answer.
    let mut c = Raw::connect(a.listen).await;
    let mid = "x".repeat(5000);
    c.send(&format!(
        "GET /items/1 HTTP/1.1\r\nHost: {HOST}\r\nx-big: {mid}\r\n\r\n"
    ))
    .await;
    let r = c.response(false).await;
    assert!(r.head.starts_with("HTTP/1.1 431"), "{}", r.head);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(body.contains("request headers are"), "{body}");
    // A head in pieces, byte by byte at first.
    let mut c = Raw::connect(a.listen).await;
    for b in "GET /items".chars() {
        c.send(&b.to_string()).await;
    }
    c.send(&format!("/1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
        .await;
    assert!(c.response(false).await.head.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_over_the_limit_gets_its_413_over_http_1_1() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(1)
        .edge_toml("max_body_bytes = 1048576");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    // No length: chunked, so only counting can tell it is over the limit;
    // the client keeps writing while the answer comes.
    let s = TcpStream::connect(a.listen).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let head =
            format!("PUT /items/1 HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n");
        wr.write_all(head.as_bytes()).await?;
        let chunk = format!("{:x}\r\n{}\r\n", 65536, "y".repeat(65536));
        for _ in 0..32 {
            wr.write_all(chunk.as_bytes()).await?;
        }
        wr.write_all(b"0\r\n\r\n").await?;
        Ok::<_, std::io::Error>(wr)
    });
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("payload_too_large") {
        let n = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut b))
            .await
            .expect("an answer in time")
            .expect("no reset before the answer is read");
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&b[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 413"));
    // 2 MiB in all is within what the edge drains, so the upload ends
    // cleanly and the connection serves the next request.
    let mut wr = writer.await.unwrap().expect("the whole upload was taken");
    wr.write_all(format!("GET /items/1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut next = Vec::new();
    while !String::from_utf8_lossy(&next).contains("HTTP/1.1 200") {
        let n = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&next));
        next.extend_from_slice(&b[..n]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_hold_no_buffers() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).instances_per_zone(1);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let mut idle = Vec::new();
    for _ in 0..40 {
        let mut c = Raw::connect(a.listen).await;
        c.send(&format!("GET /items/1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
            .await;
        assert!(c.response(false).await.head.starts_with("HTTP/1.1 200"));
        idle.push(c);
    }
    // One connection halfway through a head holds its buffer meanwhile.
    let mut partial = Raw::connect(a.listen).await;
    partial.send("GET /items/1 HTTP/1.1\r\nHo").await;
    eventually(
        "a buffer lent to the unfinished head",
        Duration::from_secs(3),
        || async {
            let m = a.metrics().await;
            let open = gauge(&m, "switchyard_client_connections{listener=\"proxy\"}");
            let lent = gauge(&m, "switchyard_h1_buffers_outstanding");
            if open == 41.0 && lent == 1.0 {
                Ok(())
            } else {
                Err(format!("open {open}, lent {lent}"))
            }
        },
    )
    .await;
    partial.send(&format!("st: {HOST}\r\n\r\n")).await;
    assert!(partial
        .response(false)
        .await
        .head
        .starts_with("HTTP/1.1 200"));
    eventually(
        "no buffer on an idle connection",
        Duration::from_secs(3),
        || async {
            let m = a.metrics().await;
            let lent = gauge(&m, "switchyard_h1_buffers_outstanding");
            if lent == 0.0 {
                Ok(())
            } else {
                Err(format!("lent {lent}"))
            }
        },
    )
    .await;
    // And they are still good for another request each.
    for c in idle.iter_mut().take(5) {
        c.send(&format!("GET /items/1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
            .await;
        assert!(c.response(false).await.head.starts_with("HTTP/1.1 200"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_closes_while_it_waits_frees_its_slot_at_once() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).instances_per_zone(1);
    let ups = lab.start_upstreams().await;
    ups["a-1"].set_delay(Duration::from_secs(3));
    let a = lab.start_edge("a").await;
    let mut c = Raw::connect(a.listen).await;
    c.send(&format!("GET /items/1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
        .await;
    eventually("the request in flight", Duration::from_secs(2), || async {
        match a.status().await.services[0].limits.inflight {
            1 => Ok(()),
            n => Err(format!("inflight {n}")),
        }
    })
    .await;
    drop(c);
    // Well before the instance would answer.
    eventually(
        "the request dropped",
        Duration::from_millis(1500),
        || async {
            match a.status().await.services[0].limits.inflight {
                0 => Ok(()),
                n => Err(format!("inflight {n}")),
            }
        },
    )
    .await;
}

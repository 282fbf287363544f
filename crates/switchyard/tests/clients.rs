//! Clients that hold the edge's resources without using them: connections
//! that send nothing, send slowly, or never finish. Every test here is a
//! hostile client on a raw socket against a real edge process.

use std::time::{Duration, Instant};

use switchyard_testkit::{eventually, Topology, HOST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Waits until the edge closes `s` (EOF or reset) and returns how long that
/// took, or panics after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within.saturating_sub(t.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the edge kept the connection open for {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_sends_nothing_is_closed_on_both_listeners() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).edge_toml("client_header_timeout_ms = 300");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    for addr in [a.listen, a.admin] {
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let took = closed_within(&mut silent, Duration::from_secs(3)).await;
        assert!(
            took >= Duration::from_millis(250),
            "{addr}: closed before the timeout ({took:?})"
        );
        // Less than the h2 preface, then nothing: hyper cannot yet tell the
        // protocol, and the connection must still be closed.
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial.write_all(b"PRI * HT").await.unwrap();
        closed_within(&mut partial, Duration::from_secs(3)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed_and_a_slow_valid_client_is_served() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).edge_toml("client_header_timeout_ms = 600");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;

    // A slow client, within the limit: the head in three pieces over 300 ms.
    let mut s = TcpStream::connect(a.listen).await.unwrap();
    for piece in [
        "GET /items/1 HTTP/1.1\r\n".to_string(),
        format!("Host: {HOST}\r\n"),
        "\r\n".to_string(),
    ] {
        s.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Then idle on the kept-alive connection: closed after the timeout.
    let took = closed_within(&mut s, Duration::from_secs(3)).await;
    assert!(
        took >= Duration::from_millis(300),
        "closed too early ({took:?})"
    );
}

/// The idle timeout is not only for h2: an HTTP/1.1 connection between
/// requests is closed by whichever of the two timeouts is shorter.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http1_connection_is_closed_by_the_shorter_idle_timeout() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .edge_toml("client_header_timeout_ms = 30000\nclient_idle_timeout_ms = 600");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let mut s = TcpStream::connect(a.listen).await.unwrap();
    for _ in 0..2 {
        // Each request comes within the idle limit of the one before.
        s.write_all(format!("GET /items/1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let took = closed_within(&mut s, Duration::from_secs(3)).await;
    assert!(
        took >= Duration::from_millis(100),
        "closed too early ({took:?})"
    );
}

/// Reads one response head and as much body as arrives with it.
async fn read_head(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_request_bodies_hold_no_concurrency_slot_and_get_408() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .edge_toml("client_body_timeout_ms = 800")
        .service_toml("[service.limits]\nmax_concurrency = 10\n");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;

    // Thirty clients, three times the limit: a head announcing 100 bytes,
    // then one byte, then nothing.
    let mut slow = Vec::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(a.listen).await.unwrap();
        let head = format!("PUT /items/1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\nx");
        s.write_all(head.as_bytes()).await.unwrap();
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    for path in ["/items/1", "/recommendations"] {
        let r = a.get(path).send().await.unwrap();
        assert_eq!(r.status, 200, "{path} while bodies trickle: {}", r.body);
    }
    let r = a.put("/items/2").body("{}").send().await.unwrap();
    assert_eq!(r.status, 200, "a complete write: {}", r.body);
    assert!(t.elapsed() < Duration::from_millis(500), "served at once");

    for mut s in slow {
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        assert!(head.contains("request_timeout"), "{head}");
    }
    assert_eq!(a.status().await.services[0].limits.inflight, 0);
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_file_descriptors_the_edge_backs_off_and_recovers() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    assert_eq!(a.get("/items/1").send().await.unwrap().status, 200);
    let pid = a.pid().expect("edge running");
    let ok = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=64:64"])
        .status()
        .expect("prlimit (util-linux) is installed");
    assert!(ok.success());

    // More connections than the edge has descriptors: the rest wait in the
    // backlog and every accept fails with EMFILE.
    let mut held = Vec::new();
    for _ in 0..120 {
        held.push(TcpStream::connect(a.listen).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = (cpu_ticks(pid) - c0) as f64 / 100.0 / t0.elapsed().as_secs_f64();
    assert!(
        used < 0.2,
        "the edge used {used:.2} cores while out of descriptors"
    );

    drop(held);
    eventually("the edge serves again", Duration::from_secs(10), || async {
        match a.get("/items/1").send().await {
            Ok(r) if r.status == 200 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let m = a.metrics().await;
    assert!(
        m.contains("switchyard_accept_errors_total{listener=\"proxy\",kind=\"emfile\"}"),
        "{m}"
    );
    let log = a.log();
    let episodes = log.matches("cannot accept connections").count();
    assert!(
        (1..=4).contains(&episodes),
        "logged once per episode and worker, got {episodes}:\n{log}"
    );
}

/// Sends one raw request and reads until the edge closes or 3 s pass.
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_are_parsed_as_generously_as_nginx_and_as_strictly_as_the_rfc() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).instances_per_zone(1);
    let ups = lab.start_upstreams().await;
    let up = ups.values().next().unwrap();
    let a = lab.start_edge("a").await;

    // 150 ordinary headers, about 3 KB: served.
    let many: String = (0..150)
        .map(|i| format!("x-h-{i:03}: v{i:03}\r\n"))
        .collect();
    let r = raw(
        a.listen,
        &format!("GET /items/1 HTTP/1.1\r\nHost: {HOST}\r\n{many}Connection: close\r\n\r\n"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(up.last_header("x-h-149").as_deref(), Some("v149"));

    // Two Host headers: which one is meant is ambiguous, so refused.
    let r = raw(
        a.listen,
        &format!(
            "GET /items/1 HTTP/1.1\r\nHost: {HOST}\r\nHost: evil.test\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("\"error\":\"bad_request\""), "{r}");

    // Headers named in Connection are for this hop only.
    let r = raw(
        a.listen,
        &format!(
            "GET /items/1 HTTP/1.1\r\nHost: {HOST}\r\nConnection: close, X-Secret\r\n\
             X-Secret: 1\r\nX-Kept: 2\r\n\r\n"
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(up.last_header("x-secret"), None);
    assert_eq!(up.last_header("x-kept").as_deref(), Some("2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn header_limits_are_configurable_and_answered_in_json() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).edge_toml("max_headers = 20");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let head = |n: usize| {
        let hs: String = (0..n).map(|i| format!("x-h-{i}: v\r\n")).collect();
        format!("GET /items/1 HTTP/1.1\r\nHost: {HOST}\r\n{hs}Connection: close\r\n\r\n")
    };
    assert!(raw(a.listen, &head(15)).await.starts_with("HTTP/1.1 200"));
    let r = raw(a.listen, &head(30)).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    assert!(r.contains("\"error\":\"headers_too_large\""), "{r}");
    // Past twice the limit hyper's parser answers itself, without a body.
    let r = raw(a.listen, &head(60)).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_h2_connection_is_closed_after_the_idle_timeout() {
    use http_body_util::{BodyExt, Empty};
    let lab = Topology::new(BIN, &[("r1", &["a"])]).edge_toml("client_idle_timeout_ms = 600");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(a.listen).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<bytes::Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        io,
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    // Two requests 400 ms apart: each is within the idle limit.
    for _ in 0..2 {
        let req = http::Request::get(format!("http://{HOST}/items/1"))
            .body(Empty::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let t = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(3), conn)
        .await
        .expect("the edge closed the idle h2 connection");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(100),
        "closed too early ({took:?})"
    );
}

/// A connection from a chosen loopback source address.
async fn connect_from(src: &str, to: std::net::SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// What the edge answers a connection from `src` before it closes it.
async fn refusal(src: &str, to: std::net::SocketAddr) -> String {
    let mut s = connect_from(src, to).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_client_cannot_take_every_connection() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .edge_toml("max_client_connections = 8\nmax_connections_per_client = 5");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    // A hostile client holds its five connections silently.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from("127.0.0.3", a.listen).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = refusal("127.0.0.3", a.listen).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("\"error\":\"too_many_connections\""),
        "{answer}"
    );
    assert!(
        answer.contains("127.0.0.3 holds its limit of 5"),
        "{answer}"
    );
    // Everyone else is still served.
    let mut other = connect_from("127.0.0.4", a.listen).await;
    other
        .write_all(format!("GET /items/1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut other).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The edge's own ceiling: three more fill it, and the next is refused.
    let mut more = Vec::new();
    for _ in 0..2 {
        more.push(connect_from("127.0.0.5", a.listen).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = refusal("127.0.0.6", a.listen).await;
    assert!(answer.contains("limit of 8 client connections"), "{answer}");
    // Connections that close free their places.
    drop(held);
    drop(more);
    eventually(
        "a closed connection frees its place",
        Duration::from_secs(3),
        || async {
            let mut s = connect_from("127.0.0.3", a.listen).await;
            s.write_all(format!("GET /items/1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let head = read_head(&mut s).await;
            head.starts_with("HTTP/1.1 200").then_some(()).ok_or(head)
        },
    )
    .await;
    let m = a.metrics().await;
    for limit in ["per_client", "total"] {
        assert!(
            m.contains(&format!(
                "switchyard_connections_refused_total{{listener=\"proxy\",limit=\"{limit}\"}}"
            )),
            "{m}"
        );
    }
    assert!(
        m.contains("switchyard_client_connections{listener=\"proxy\"}"),
        "{m}"
    );
}

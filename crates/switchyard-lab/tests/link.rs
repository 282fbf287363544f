//! Link proxies on real sockets: clean, delayed, failing, resetting,
//! throttled and cut.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchyard_lab::link::{Link, LinkSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server: returns whatever it receives.
async fn echo(addr: &str) -> SocketAddr {
    let l = TcpListener::bind(addr).await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    a
}

/// An echo server whose listener closes when its task is aborted.
async fn echo_task(addr: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind(addr).await.unwrap();
    let a = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1024];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (a, task)
}

async fn link(n: u8) -> (Link, SocketAddr) {
    let target = echo(&format!("127.77.{n}.2:0")).await;
    let l = Link::start(
        "test",
        &[(format!("127.77.{n}.1:0").parse().unwrap(), target)],
    )
    .await
    .unwrap();
    let listen = l.pipes[0].0;
    (l, listen)
}

async fn round_trip(addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(payload).await?;
    let mut out = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut out))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    Ok(out)
}

#[tokio::test]
async fn a_clean_link_passes_data_unchanged() {
    let (_l, addr) = link(1).await;
    assert_eq!(round_trip(addr, b"hello").await.unwrap(), b"hello");
}

#[tokio::test]
async fn latency_is_added_each_way() {
    let (l, addr) = link(2).await;
    let t = Instant::now();
    round_trip(addr, b"x").await.unwrap();
    let clean = t.elapsed();
    l.set(LinkSettings {
        latency_ms: 100,
        ..Default::default()
    })
    .unwrap();
    let t = Instant::now();
    round_trip(addr, b"x").await.unwrap();
    let slow = t.elapsed();
    assert!(
        slow >= Duration::from_millis(200),
        "one round trip crosses the link twice: {slow:?}"
    );
    assert!(slow < clean + Duration::from_millis(1000), "{slow:?}");
}

#[tokio::test]
async fn failing_connections_are_closed_before_anything_is_forwarded() {
    let (l, addr) = link(3).await;
    l.set(LinkSettings {
        fail_percent: 100.0,
        ..Default::default()
    })
    .unwrap();
    assert!(round_trip(addr, b"x").await.is_err());
    assert_eq!(l.view().failed, 1);
}

#[tokio::test]
async fn reset_connections_lose_the_request_with_a_reset() {
    let (l, addr) = link(4).await;
    l.set(LinkSettings {
        reset_percent: 100.0,
        ..Default::default()
    })
    .unwrap();
    let err = round_trip(addr, b"x").await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
        ),
        "{err:?}"
    );
    assert_eq!(l.view().reset, 1);
}

#[tokio::test]
async fn bandwidth_is_limited() {
    let (l, addr) = link(5).await;
    l.set(LinkSettings {
        bandwidth_kbps: 64,
        ..Default::default()
    })
    .unwrap();
    let t = Instant::now();
    let data = vec![7u8; 32 * 1024];
    assert_eq!(round_trip(addr, &data).await.unwrap(), data);
    // 32 KiB at 64 KiB/s takes half a second; the two directions overlap.
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_cut_breaks_open_connections_and_refuses_new_ones_until_restored() {
    let (l, addr) = link(6).await;
    let mut open = TcpStream::connect(addr).await.unwrap();
    open.write_all(b"a").await.unwrap();
    let mut b = [0u8; 1];
    open.read_exact(&mut b).await.unwrap();
    l.set(LinkSettings {
        cut: true,
        ..Default::default()
    })
    .unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(
        n.is_err() || rest.is_empty(),
        "the open connection is broken"
    );
    assert!(
        round_trip(addr, b"x").await.is_err(),
        "new connections are refused"
    );
    l.set(LinkSettings::default()).unwrap();
    assert_eq!(round_trip(addr, b"back").await.unwrap(), b"back");
}

#[tokio::test]
async fn bad_settings_are_refused_and_change_nothing() {
    let (l, _) = link(7).await;
    let e = l
        .set(LinkSettings {
            fail_percent: 120.0,
            ..Default::default()
        })
        .unwrap_err();
    assert!(e.contains("fail_percent"), "{e}");
    assert!(l.settings().is_clean());
}

#[tokio::test]
async fn a_far_end_that_is_gone_is_refused_through_the_link_until_it_listens_again() {
    let (far, server) = echo_task("127.77.8.2:0").await;
    let l = Link::start("test", &[("127.77.8.1:0".parse().unwrap(), far)])
        .await
        .unwrap();
    let addr = l.pipes[0].0;
    assert_eq!(round_trip(addr, b"up").await.unwrap(), b"up");
    // The far end dies: its listener closes.
    server.abort();
    let _ = server.await;
    // The first caller finds it gone (accepted, then closed); after that the
    // link refuses, as a network path to a dead host would.
    let _ = round_trip(addr, b"x").await;
    let refused = wait_for(Duration::from_secs(5), || async {
        matches!(TcpStream::connect(addr).await, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    })
    .await;
    assert!(
        refused,
        "the link still accepts with nothing at its far end"
    );
    let (_, _again) = echo_task(&far.to_string()).await;
    let back = wait_for(Duration::from_secs(5), || async {
        round_trip(addr, b"back").await.is_ok_and(|b| b == b"back")
    })
    .await;
    assert!(back, "the link did not listen again once the far end did");
}

async fn wait_for<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

//! The watch-stream subscriber against a real socket: it hands over every
//! controls document, tells what it cannot read, and reconnects both when
//! the stream ends and when it goes silent (a half-open connection that TCP
//! has not noticed), so an edge never sits on a dead stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use switchyard_api::watch::{follow_with, Follower};
use switchyard_model::Controls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Default)]
struct Seen {
    url: String,
    versions: Mutex<Vec<u64>>,
    unreadable: AtomicUsize,
    downs: AtomicUsize,
}

impl Follower for Seen {
    fn control_urls(&self) -> Vec<String> {
        vec![self.url.clone()]
    }
    fn identity(&self) -> Vec<(&'static str, String)> {
        vec![("zone", "z1".into())]
    }
    fn connected(&self, up: bool) {
        if !up {
            self.downs.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn controls(&self, c: Controls) {
        self.versions.lock().unwrap().push(c.version);
    }
    fn unreadable(&self, _reason: &str) {
        self.unreadable.fetch_add(1, Ordering::SeqCst);
    }
}

/// A watch endpoint that answers each connection with `events` and then,
/// if `hold`, keeps the connection open and silent. Returns the request
/// lines it was sent.
async fn serve(
    events: &'static str,
    hold: bool,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let _ = tx.send(head.lines().next().unwrap_or("").to_string());
                let body = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n{events}"
                );
                let _ = s.write_all(body.as_bytes()).await;
                if hold {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            });
        }
    });
    (url, rx)
}

async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn every_document_arrives_typed_and_a_bad_one_is_reported_not_applied() {
    let (url, mut requests) = serve(
        ": keep-alive\n\nevent: controls\ndata: {\"version\": 3}\n\nevent: other\ndata: x\n\nevent: controls\ndata: {\"version\": 4, \"nonsense\": 1}\n\nevent: controls\ndata: {\"version\":\ndata: 5}\n\n",
        true,
    )
    .await;
    let seen = std::sync::Arc::new(Seen {
        url,
        ..Default::default()
    });
    let s = seen.clone();
    let task = tokio::spawn(async move { follow_with(&*s, Duration::from_secs(60)).await });
    until("two documents and one refusal", || {
        seen.versions.lock().unwrap().len() == 2 && seen.unreadable.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(
        *seen.versions.lock().unwrap(),
        vec![3, 5],
        "multi-line data is joined"
    );
    let first = requests.recv().await.unwrap();
    assert!(first.starts_with("GET /v1/watch?zone=z1 "), "{first}");
    task.abort();
}

#[tokio::test]
async fn a_silent_stream_is_dropped_and_followed_again() {
    let (url, mut requests) = serve("event: controls\ndata: {\"version\": 1}\n\n", true).await;
    let seen = std::sync::Arc::new(Seen {
        url,
        ..Default::default()
    });
    let s = seen.clone();
    let task = tokio::spawn(async move { follow_with(&*s, Duration::from_millis(300)).await });
    // The server never closes: only the silence limit can end the stream.
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), requests.recv())
            .await
            .expect("the follower connects again")
            .unwrap();
    }
    assert!(seen.downs.load(Ordering::SeqCst) >= 2);
    until("each connection starts with the full state", || {
        seen.versions.lock().unwrap().len() >= 3
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn a_stream_that_ends_is_followed_again() {
    let (url, mut requests) = serve("event: controls\ndata: {\"version\": 9}\n\n", false).await;
    let seen = std::sync::Arc::new(Seen {
        url,
        ..Default::default()
    });
    let s = seen.clone();
    let task = tokio::spawn(async move { follow_with(&*s, Duration::from_secs(60)).await });
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), requests.recv())
            .await
            .expect("the follower connects again")
            .unwrap();
    }
    until("a document from each", || {
        seen.versions.lock().unwrap().len() >= 2
    })
    .await;
    task.abort();
}

//! A minimal server of the control plane's watch stream (server-sent events)
//! for edge tests that need to control the stream itself: it sends the
//! current controls on connect, every set pushed afterwards, and keep-alives.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::broadcast;

pub struct WatchServer {
    pub addr: SocketAddr,
    current: Arc<Mutex<serde_json::Value>>,
    tx: broadcast::Sender<String>,
    task: tokio::task::JoinHandle<()>,
}

impl WatchServer {
    pub async fn start(addr: SocketAddr, initial: serde_json::Value) -> WatchServer {
        let l = crate::upstream::bind_retrying(addr).await;
        let addr = l.local_addr().unwrap();
        let current = Arc::new(Mutex::new(initial));
        let (tx, _) = broadcast::channel::<String>(16);
        let (cur, tx2) = (current.clone(), tx.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = l.accept().await else {
                    continue;
                };
                let (cur, tx) = (cur.clone(), tx2.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |_req| {
                        let first = format!("event: controls\ndata: {}\n\n", cur.lock().unwrap());
                        let rx = tx.subscribe();
                        async move {
                            let head = futures_once(first);
                            // Keep-alives as the control plane sends them: a
                            // follower drops a stream silent for 15 s.
                            let rest = futures_util::stream::unfold(rx, |mut rx| async move {
                                let ev = tokio::select! {
                                    r = rx.recv() => r.ok()?,
                                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {
                                        ": keep-alive\n\n".to_string()
                                    }
                                };
                                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(ev))), rx))
                            });
                            use futures_util::StreamExt;
                            let body = StreamBody::new(head.chain(rest));
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "text/event-stream")
                                    .body(body.boxed_unsync())
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        WatchServer {
            addr,
            current,
            tx,
            task,
        }
    }

    /// Makes `controls` the current set and sends it to every watcher.
    pub fn push(&self, controls: serde_json::Value) {
        let ev = format!("event: controls\ndata: {controls}\n\n");
        *self.current.lock().unwrap() = controls;
        let _ = self.tx.send(ev);
    }

    /// Goes away entirely: listener and streams closed.
    pub fn stop(self) {
        drop(self);
    }
}

fn futures_once(s: String) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures_util::stream::once(async move { Ok(Frame::data(Bytes::from(s))) })
}

impl Drop for WatchServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

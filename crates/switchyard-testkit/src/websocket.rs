//! A real WebSocket echo server (tokio-tungstenite) on a loopback address,
//! and a client, for tests of `Upgrade` through the edge. The server answers
//! every text or binary message with the same message, and its first reply
//! on a connection is preceded by a text message naming itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use tokio_tungstenite::tungstenite::Message as WsMessage;

pub struct EchoServer {
    pub addr: SocketAddr,
    open: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    pub async fn start(name: &str, addr: SocketAddr) -> EchoServer {
        let l = crate::upstream::bind_retrying(addr).await;
        let addr = l.local_addr().expect("bound");
        let open = Arc::new(AtomicU64::new(0));
        let (name, o) = (name.to_string(), open.clone());
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (name, o) = (name.clone(), o.clone());
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                        return;
                    };
                    o.fetch_add(1, Ordering::Relaxed);
                    if ws
                        .send(Message::text(format!("hello from {name}")))
                        .await
                        .is_ok()
                    {
                        while let Some(Ok(m)) = ws.next().await {
                            if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                                break;
                            }
                        }
                    }
                    o.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        EchoServer { addr, open, task }
    }

    /// WebSocket connections this server holds open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub type WsClient = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `ws://addr/path` with `host` as its Host.
pub async fn connect(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    req.headers_mut().insert(
        http::header::HOST,
        http::HeaderValue::from_str(host).expect("a valid host"),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(ws)
}

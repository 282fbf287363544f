//! `switchyard dns` as a real child process, and the queries a test sends
//! it over real UDP and TCP sockets (built and read with hickory-proto).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::Req;
use crate::process::ChildProcess;

pub struct DnsProcess {
    pub name: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    process: ChildProcess,
}

impl DnsProcess {
    pub async fn start(
        bin: &Path,
        config: &Path,
        name: &str,
        (listen, admin): (SocketAddr, SocketAddr),
        dir: &Path,
    ) -> DnsProcess {
        let args = vec![
            "dns".into(),
            "--config".into(),
            config.into(),
            "--name".into(),
            name.into(),
        ];
        let log = dir.join(format!("dns-{name}.log"));
        DnsProcess {
            name: name.into(),
            listen,
            admin,
            process: ChildProcess::start(&format!("dns {name}"), bin, args, log, admin).await,
        }
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    pub async fn restart(&mut self) {
        self.process.restart().await;
    }

    /// SIGTERM, then waits up to `within` for the server to exit.
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.process.terminate(within).await
    }

    /// Waits (up to 5 s) until the server answers from the control plane's
    /// state rather than its config's defaults or its last-known-good file.
    pub async fn following(&self) {
        crate::eventually(
            "the DNS server follows the plane",
            Duration::from_secs(5),
            || async {
                let s = self.status().await.source;
                (s == "control-plane").then_some(()).ok_or(s)
            },
        )
        .await;
    }

    /// `/status`, typed.
    pub async fn status(&self) -> switchyard_api::dns::DnsStatus {
        let r = Req::get(self.admin, "/status")
            .send()
            .await
            .expect("admin answers");
        serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("unreadable status ({e}): {}", r.body))
    }

    pub async fn metrics(&self) -> String {
        Req::get(self.admin, "/metrics")
            .send()
            .await
            .expect("admin answers")
            .body
    }

    /// A question to this server.
    pub fn ask(&self, name: &str, qtype: RecordType) -> Ask {
        Ask {
            server: self.listen,
            name: name.into(),
            qtype,
            edns: None,
            subnet: None,
            from: None,
        }
    }
}

/// One query, sent over UDP or TCP.
pub struct Ask {
    server: SocketAddr,
    name: String,
    qtype: RecordType,
    edns: Option<u16>,
    subnet: Option<(IpAddr, u8)>,
    from: Option<IpAddr>,
}

impl Ask {
    /// With EDNS, offering a buffer of `payload` bytes.
    pub fn edns(mut self, payload: u16) -> Self {
        self.edns = Some(payload);
        self
    }

    /// With EDNS Client Subnet `addr/len` (and EDNS at 1232 unless set).
    pub fn subnet(mut self, addr: &str, len: u8) -> Self {
        self.subnet = Some((addr.parse().expect("a subnet address"), len));
        self.edns.get_or_insert(1232);
        self
    }

    /// Sent from this source address (a resolver placed by the geo map).
    pub fn from(mut self, ip: IpAddr) -> Self {
        self.from = Some(ip);
        self
    }

    fn bytes(&self, id: u16) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.add_query(Query::query(
            Name::from_ascii(&self.name).expect("a name"),
            self.qtype,
        ));
        if let Some(p) = self.edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            if let Some((a, l)) = self.subnet {
                e.options_mut()
                    .insert(EdnsOption::Subnet(ClientSubnet::new(a, l, 0)));
            }
            m.set_edns(e);
        }
        m.to_vec().expect("query encodes")
    }

    /// Over UDP; panics when nothing comes back within 2 s.
    pub async fn udp(&self) -> Message {
        self.udp_raw(&self.bytes(rand::random()))
            .await
            .expect("an answer over UDP")
    }

    /// `packet` as is over UDP; `None` when nothing comes back within 2 s.
    pub async fn udp_raw(&self, packet: &[u8]) -> Option<Message> {
        let bind = SocketAddr::new(self.from.unwrap_or("127.0.0.1".parse().unwrap()), 0);
        let s = tokio::net::UdpSocket::bind(bind).await.expect("bind udp");
        s.send_to(packet, self.server).await.expect("send");
        let mut buf = vec![0u8; 65_535];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(Message::from_vec(&buf[..n]).expect("the answer parses"))
    }

    /// Over TCP (length-framed).
    pub async fn tcp(&self) -> Message {
        let q = self.bytes(rand::random());
        let mut s = match self.from {
            Some(ip) => {
                let sock = tokio::net::TcpSocket::new_v4().expect("tcp socket");
                sock.bind(SocketAddr::new(ip, 0)).expect("bind tcp");
                sock.connect(self.server).await.expect("connect")
            }
            None => tokio::net::TcpStream::connect(self.server)
                .await
                .expect("connect"),
        };
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        s.write_all(&framed).await.expect("write");
        let len = s.read_u16().await.expect("length");
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await.expect("answer");
        Message::from_vec(&buf).expect("the answer parses")
    }
}

/// The addresses of an answer, as text, in order.
pub fn addrs(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

/// The /24 holding an IPv4 address, as `a.b.c.0/24`.
pub fn prefix24(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(_) => panic!("an IPv4 address"),
    }
}

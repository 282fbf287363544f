//! RFC 2136 dynamic UPDATE signed with TSIG (RFC 8945), over TCP.
//!
//! - **Reading** queries the primary for the A and AAAA sets of each managed
//!   name (signed, over the same TCP connection). Not AXFR: that needs
//!   `allow-transfer` for the key and moves the whole zone when Switchyard
//!   owns a handful of names in it.
//! - **Applying** sends one UPDATE for the whole diff, so a failover's
//!   changes land together or not at all. Each replaced or deleted RRset
//!   carries a value-dependent prerequisite (RFC 2136 §2.4.2: "exactly these
//!   addresses are there"), each created one an "RRset does not exist"
//!   prerequisite (§2.4.3): a change someone made after our read is never
//!   overwritten blindly; the server answers YXRRSET/NXRRSET, which becomes
//!   [`ProviderError::Conflict`] and the driver reads again.
//! - **TCP only**: an UPDATE for many names does not fit 512 bytes, and a
//!   TCP exchange cannot be answered by an off-path spoofer.
//! - Every response is checked against the request's TSIG; an error the
//!   server reports in its TSIG record (BADKEY, BADSIG, BADTIME) is named.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigVerifier, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{AddrType, BoxFuture, Current, Diff, DnsName, Provider, ProviderError, RrKey, RrSet};

/// A TSIG key as BIND's `tsig-keygen` writes it.
#[derive(Clone)]
pub struct TsigKey {
    pub name: DnsName,
    pub algorithm: TsigAlg,
    secret: Vec<u8>,
}

/// The HMACs hickory implements (the truncated and legacy ones are not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsigAlg {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl TsigAlg {
    pub fn parse(text: &str) -> Result<TsigAlg, KeyError> {
        match text.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Ok(TsigAlg::HmacSha256),
            "hmac-sha384" => Ok(TsigAlg::HmacSha384),
            "hmac-sha512" => Ok(TsigAlg::HmacSha512),
            other => Err(KeyError::Algorithm(other.to_string())),
        }
    }

    fn hickory(self) -> TsigAlgorithm {
        match self {
            TsigAlg::HmacSha256 => TsigAlgorithm::HmacSha256,
            TsigAlg::HmacSha384 => TsigAlgorithm::HmacSha384,
            TsigAlg::HmacSha512 => TsigAlgorithm::HmacSha512,
        }
    }
}

impl fmt::Display for TsigAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TsigAlg::HmacSha256 => "hmac-sha256",
            TsigAlg::HmacSha384 => "hmac-sha384",
            TsigAlg::HmacSha512 => "hmac-sha512",
        })
    }
}

// The secret must not reach logs.
impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("TSIG key name: {0}")]
    Name(String),
    #[error(
        "TSIG key algorithm `{0}` is not supported (use hmac-sha256, hmac-sha384 or hmac-sha512)"
    )]
    Algorithm(String),
    #[error("TSIG key `{name}`: secret is not valid base64: {why}")]
    Secret { name: String, why: String },
    #[error("TSIG key `{name}`: secret is empty")]
    EmptySecret { name: String },
    #[error("TSIG key file: {0}")]
    File(String),
}

impl TsigKey {
    pub fn new(name: &str, algorithm: TsigAlg, secret_base64: &str) -> Result<TsigKey, KeyError> {
        let name = DnsName::parse(name).map_err(|e| KeyError::Name(e.to_string()))?;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret_base64.trim())
            .map_err(|e| KeyError::Secret {
                name: name.to_string(),
                why: e.to_string(),
            })?;
        if secret.is_empty() {
            return Err(KeyError::EmptySecret {
                name: name.to_string(),
            });
        }
        Ok(TsigKey {
            name,
            algorithm,
            secret,
        })
    }

    /// Reads the first `key "NAME" { algorithm ALG; secret "B64"; };`
    /// statement of a BIND key file (what `tsig-keygen` prints), so the
    /// operator hands Switchyard the same file named includes.
    pub fn from_bind_key_file(text: &str) -> Result<TsigKey, KeyError> {
        let text: String = text
            .lines()
            .map(|l| {
                let l = l.split("//").next().unwrap_or("");
                l.split('#').next().unwrap_or("")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let rest = text
            .trim_start()
            .strip_prefix("key")
            .ok_or_else(|| KeyError::File("expected a `key \"NAME\" { ... };` statement".into()))?;
        let (name, body) = rest
            .split_once('{')
            .ok_or_else(|| KeyError::File("missing `{` after the key name".into()))?;
        let name = name.trim().trim_matches('"');
        let body = body
            .split_once('}')
            .ok_or_else(|| KeyError::File(format!("key `{name}`: missing `}}`")))?
            .0;
        let mut algorithm = None;
        let mut secret = None;
        for stmt in body.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let (word, value) = stmt
                .split_once(char::is_whitespace)
                .ok_or_else(|| KeyError::File(format!("key `{name}`: cannot read `{stmt}`")))?;
            let value = value.trim().trim_matches('"');
            match word {
                "algorithm" => algorithm = Some(TsigAlg::parse(value)?),
                "secret" => secret = Some(value.to_string()),
                other => {
                    return Err(KeyError::File(format!(
                        "key `{name}`: unknown statement `{other}`"
                    )))
                }
            }
        }
        let algorithm =
            algorithm.ok_or_else(|| KeyError::File(format!("key `{name}`: no `algorithm`")))?;
        let secret = secret.ok_or_else(|| KeyError::File(format!("key `{name}`: no `secret`")))?;
        TsigKey::new(name, algorithm, &secret)
    }
}

/// Where and how to send updates.
#[derive(Clone, Debug)]
pub struct Rfc2136Config {
    /// The zone's primary (the server that accepts updates).
    pub server: SocketAddr,
    pub key: TsigKey,
    /// For connecting, and for each answer to arrive.
    pub timeout: Duration,
    /// Allowed clock difference to the server, in seconds (RFC 8945
    /// recommends 300).
    pub fudge: u16,
}

impl Rfc2136Config {
    pub fn new(server: SocketAddr, key: TsigKey) -> Rfc2136Config {
        Rfc2136Config {
            server,
            key,
            timeout: Duration::from_secs(5),
            fudge: 300,
        }
    }
}

/// Queries in flight at once on the reading connection: enough to hide the
/// round trip to a distant primary, few enough not to meet a server's
/// per-connection limits.
const PIPELINE: usize = 32;

pub struct Rfc2136 {
    cfg: Rfc2136Config,
    signer: TSigner,
}

impl Rfc2136 {
    pub fn new(cfg: Rfc2136Config) -> Result<Rfc2136, KeyError> {
        let name = Name::from_ascii(cfg.key.name.as_str())
            .map_err(|e| KeyError::Name(format!("`{}`: {e}", cfg.key.name)))?;
        let signer = TSigner::new(
            cfg.key.secret.clone(),
            cfg.key.algorithm.hickory(),
            name,
            cfg.fudge,
        )
        .map_err(|e| KeyError::Algorithm(format!("{}: {e}", cfg.key.algorithm)))?;
        Ok(Rfc2136 { cfg, signer })
    }

    /// Sends one UPDATE carrying `diff` and waits for the server's answer.
    /// Exposed for callers that already hold a diff; [`super::push`] is
    /// the usual way in.
    pub async fn send_update(&self, diff: &Diff) -> Result<(), ProviderError> {
        let zone = &diff.zone;
        let msg = update_message(diff).map_err(|detail| ProviderError::BadResponse {
            zone: zone.to_string(),
            server: self.cfg.server.to_string(),
            detail,
        })?;
        self.timed(zone, async {
            let mut conn = self.connect(zone).await?;
            let resp = conn.exchange(self, zone, msg, Purpose::Update).await?;
            self.check_rcode(zone, &resp, Purpose::Update)
        })
        .await
    }

    async fn read(
        &self,
        zone: &DnsName,
        names: &BTreeSet<DnsName>,
    ) -> Result<Current, ProviderError> {
        let mut conn = self.timed(zone, self.connect(zone)).await?;
        let wanted: Vec<(&DnsName, AddrType)> = names
            .iter()
            .flat_map(|n| AddrType::ALL.map(|t| (n, t)))
            .collect();
        let mut sets = BTreeMap::new();
        // IDs counted up from a random start: unique among the queries in
        // flight, still unpredictable to an outsider.
        let mut next_id = Message::query().metadata.id;
        for window in wanted.chunks(PIPELINE) {
            let mut asked = HashMap::new();
            for &(name, rtype) in window {
                let mut q = query_message(name, rtype).map_err(|detail| {
                    self.bad_response(zone, format!("cannot query `{name}`: {detail}"))
                })?;
                q.metadata.id = next_id;
                next_id = next_id.wrapping_add(1);
                let id = conn.send(self, zone, q, Purpose::Query).await?;
                asked.insert(id, (name, rtype));
            }
            for _ in window {
                let (id, resp) = self.timed(zone, conn.recv(self, zone)).await?;
                let (name, rtype) = asked.remove(&id).expect("recv only returns ids it sent");
                if let Some(set) = self.rrset_from(zone, name, rtype, &resp)? {
                    sets.insert(
                        RrKey {
                            name: name.clone(),
                            rtype,
                        },
                        set,
                    );
                }
            }
        }
        Ok(Current { sets })
    }

    /// The RRset a query's answer holds for `name`, or none.
    fn rrset_from(
        &self,
        zone: &DnsName,
        name: &DnsName,
        rtype: AddrType,
        resp: &Message,
    ) -> Result<Option<RrSet>, ProviderError> {
        match resp.metadata.response_code {
            ResponseCode::NoError => {}
            // The name does not exist yet: no records, which we may create.
            ResponseCode::NXDomain if resp.metadata.authoritative => return Ok(None),
            _ => self.check_rcode(zone, resp, Purpose::Query)?,
        }
        if !resp.metadata.authoritative {
            return Err(ProviderError::Unmanageable {
                zone: zone.to_string(),
                server: self.cfg.server.to_string(),
                name: name.to_string(),
                detail: "the answer is not authoritative: the server does not serve this zone, \
                         or the name is delegated to other servers"
                    .into(),
            });
        }
        let mut ttl = None;
        let mut addrs = BTreeSet::new();
        for r in &resp.answers {
            let owner = r.name.to_ascii().to_ascii_lowercase();
            let owner = owner.trim_end_matches('.');
            if owner != name.as_str().trim_end_matches('.') {
                continue;
            }
            let addr: IpAddr = match (&r.data, rtype) {
                (RData::A(a), AddrType::A) => IpAddr::V4(a.0),
                (RData::AAAA(a), AddrType::Aaaa) => IpAddr::V6(a.0),
                (RData::CNAME(target), _) => {
                    return Err(ProviderError::Unmanageable {
                        zone: zone.to_string(),
                        server: self.cfg.server.to_string(),
                        name: name.to_string(),
                        detail: format!(
                            "it is a CNAME (to {}), which cannot have address records beside it",
                            target.0
                        ),
                    })
                }
                _ => continue,
            };
            // RRs of one set share a TTL (RFC 2181 §5.2); the lowest is what
            // resolvers would use if a server broke that.
            ttl = Some(ttl.map_or(r.ttl, |t: u32| t.min(r.ttl)));
            addrs.insert(addr);
        }
        Ok(ttl.map(|ttl| RrSet { ttl, addrs }))
    }

    fn check_rcode(
        &self,
        zone: &DnsName,
        resp: &Message,
        purpose: Purpose,
    ) -> Result<(), ProviderError> {
        let rcode = resp.metadata.response_code;
        let server = self.cfg.server.to_string();
        let key = &self.cfg.key.name;
        let (zone_s, code) = (zone.to_string(), rcode_name(rcode));
        let rejected = |detail: String| ProviderError::Rejected {
            zone: zone_s.clone(),
            server: server.clone(),
            code: code.clone(),
            detail,
        };
        match rcode {
            ResponseCode::NoError => Ok(()),
            ResponseCode::ServFail => Err(ProviderError::ServerFailure {
                zone: zone_s.clone(),
                server: server.clone(),
                code: code.clone(),
                detail: "the server could not complete the request".into(),
            }),
            ResponseCode::YXRRSet
            | ResponseCode::NXRRSet
            | ResponseCode::YXDomain
            | ResponseCode::NXDomain
                if purpose == Purpose::Update =>
            {
                Err(ProviderError::Conflict {
                    zone: zone_s.clone(),
                    server: server.clone(),
                    code: code.clone(),
                    detail: "a prerequisite (the RRsets as last read) no longer holds".into(),
                })
            }
            ResponseCode::Refused if purpose == Purpose::Update => Err(rejected(format!(
                "key `{key}` may not update zone {zone} (see allow-update / update-policy), \
                 or the server is not the zone's primary"
            ))),
            ResponseCode::Refused => Err(rejected(format!(
                "the server does not answer queries for zone {zone} from this host (allow-query), \
                 or does not serve it"
            ))),
            ResponseCode::NotAuth => Err(rejected(format!(
                "the server is not authoritative for zone {zone}"
            ))),
            ResponseCode::NotZone => Err(rejected(format!(
                "a name in the update is outside zone {zone}"
            ))),
            _ => Err(rejected("the server does not accept this request".into())),
        }
    }

    /// The error for a TSIG error the server put in its response.
    fn tsig_rejected(&self, zone: &DnsName, rcode: ResponseCode, err: TsigError) -> ProviderError {
        let key = &self.cfg.key.name;
        let alg = self.cfg.key.algorithm;
        let (name, detail) = match err {
            TsigError::BadKey => (
                "BADKEY".to_string(),
                format!(
                    "the server does not know TSIG key `{key}` with algorithm {alg}: check the key \
                     name and algorithm against the server's `key` statement"
                ),
            ),
            TsigError::BadSig => (
                "BADSIG".to_string(),
                format!(
                    "the signature made with TSIG key `{key}` did not verify: the secret differs \
                     from the server's"
                ),
            ),
            TsigError::BadTime => (
                "BADTIME".to_string(),
                format!(
                    "this host's clock and the server's differ by more than {}s",
                    self.cfg.fudge
                ),
            ),
            TsigError::BadTrunc => (
                "BADTRUNC".to_string(),
                "the server refused the MAC length".to_string(),
            ),
            TsigError::Unknown(n) => (format!("TSIG error {n}"), "unknown TSIG error".to_string()),
        };
        ProviderError::Rejected {
            zone: zone.to_string(),
            server: self.cfg.server.to_string(),
            code: format!("{}/{name}", rcode_name(rcode)),
            detail,
        }
    }

    fn bad_response(&self, zone: &DnsName, detail: String) -> ProviderError {
        ProviderError::BadResponse {
            zone: zone.to_string(),
            server: self.cfg.server.to_string(),
            detail,
        }
    }

    fn unreachable(&self, zone: &DnsName, detail: String) -> ProviderError {
        ProviderError::Unreachable {
            zone: zone.to_string(),
            server: self.cfg.server.to_string(),
            detail,
        }
    }

    async fn timed<T>(
        &self,
        zone: &DnsName,
        work: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        match tokio::time::timeout(self.cfg.timeout, work).await {
            Ok(r) => r,
            Err(_) => {
                Err(self.unreachable(zone, format!("no answer within {:?}", self.cfg.timeout)))
            }
        }
    }

    async fn connect(&self, zone: &DnsName) -> Result<Conn, ProviderError> {
        let stream = TcpStream::connect(self.cfg.server)
            .await
            .map_err(|e| self.unreachable(zone, format!("TCP connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            pending: HashMap::new(),
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Query,
    Update,
}

struct Conn {
    stream: TcpStream,
    /// Requests sent and not answered yet, with what checks their answer.
    pending: HashMap<u16, (Option<TSigVerifier>, Purpose)>,
}

impl Conn {
    /// Signs `msg` and sends it with its two-byte length (RFC 1035 §4.2.2).
    /// Several may be in flight on one connection (RFC 7766 §6.2.1.1).
    async fn send(
        &mut self,
        p: &Rfc2136,
        zone: &DnsName,
        mut msg: Message,
        purpose: Purpose,
    ) -> Result<u16, ProviderError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let verifier = msg
            .finalize(&p.signer, now)
            .map_err(|e| p.bad_response(zone, format!("cannot sign the request: {e}")))?;
        let bytes = msg
            .to_vec()
            .map_err(|e| p.bad_response(zone, format!("cannot encode the request: {e}")))?;
        let len = u16::try_from(bytes.len()).map_err(|_| {
            p.bad_response(
                zone,
                format!(
                    "the request is {} bytes, more than one DNS message can carry; push fewer \
                     names per zone",
                    bytes.len()
                ),
            )
        })?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        self.stream
            .write_all(&framed)
            .await
            .map_err(|e| p.unreachable(zone, format!("TCP send: {e}")))?;
        self.pending.insert(msg.metadata.id, (verifier, purpose));
        Ok(msg.metadata.id)
    }

    /// Reads one answer and checks that it answers a request in flight and
    /// is signed by the key. A TSIG error in the answer is returned as such,
    /// before looking at the signature: those answers are unsigned by design.
    async fn recv(&mut self, p: &Rfc2136, zone: &DnsName) -> Result<(u16, Message), ProviderError> {
        let io = |e: std::io::Error| p.unreachable(zone, format!("TCP receive: {e}"));
        let mut len = [0u8; 2];
        self.stream.read_exact(&mut len).await.map_err(io)?;
        let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut answer).await.map_err(io)?;

        let resp = Message::from_vec(&answer)
            .map_err(|e| p.bad_response(zone, format!("cannot parse the answer: {e}")))?;
        let id = resp.metadata.id;
        let Some((mut verifier, purpose)) = self.pending.remove(&id) else {
            return Err(p.bad_response(
                zone,
                format!("the answer (id {id}) does not answer any request sent"),
            ));
        };
        if resp.metadata.message_type != MessageType::Response {
            return Err(p.bad_response(zone, format!("message {id} is not a response")));
        }
        match resp.signature.as_ref().map(|s| s.data.error) {
            Some(Some(err)) => return Err(p.tsig_rejected(zone, resp.metadata.response_code, err)),
            Some(None) => {
                if let Some(v) = verifier.as_mut() {
                    v.verify(&answer).map_err(|e| {
                        p.bad_response(
                            zone,
                            format!("the answer's TSIG signature does not verify: {e}"),
                        )
                    })?;
                }
            }
            // An unsigned error answer still says why (and can only make
            // the push fail or retry); an unsigned success might be forged.
            None if resp.metadata.response_code != ResponseCode::NoError => {
                p.check_rcode(zone, &resp, purpose)?;
            }
            None => {
                return Err(p.bad_response(
                    zone,
                    format!(
                        "the answer is not signed with TSIG key `{}`",
                        p.cfg.key.name
                    ),
                ))
            }
        }
        Ok((id, resp))
    }

    async fn exchange(
        &mut self,
        p: &Rfc2136,
        zone: &DnsName,
        msg: Message,
        purpose: Purpose,
    ) -> Result<Message, ProviderError> {
        self.send(p, zone, msg, purpose).await?;
        Ok(self.recv(p, zone).await?.1)
    }
}

/// The mnemonic operators know from dig and the RFCs (hickory's Display
/// spells them out in words).
fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("RCODE {}", u16::from(other)),
    }
}

fn hname(n: &DnsName) -> Result<Name, String> {
    Name::from_ascii(n.as_str()).map_err(|e| format!("`{n}`: {e}"))
}

fn record_type(t: AddrType) -> RecordType {
    match t {
        AddrType::A => RecordType::A,
        AddrType::Aaaa => RecordType::AAAA,
    }
}

fn query_message(name: &DnsName, rtype: AddrType) -> Result<Message, String> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(hname(name)?, record_type(rtype)));
    Ok(msg)
}

/// The UPDATE for a whole diff (RFC 2136 §2: zone, prerequisite and update
/// sections in the query, answer and authority slots).
fn update_message(diff: &Diff) -> Result<Message, String> {
    let zone = hname(&diff.zone)?;
    let mut msg = Message::query();
    msg.metadata.op_code = OpCode::Update;
    msg.metadata.recursion_desired = false;
    let mut zq = Query::query(zone, RecordType::SOA);
    zq.set_query_class(DNSClass::IN);
    msg.add_query(zq);
    for ch in &diff.changes {
        let name = hname(&ch.key.name)?;
        let rtype = record_type(ch.key.rtype);
        match &ch.from {
            // §2.4.2: the RRset is exactly these (TTL 0, class of the zone).
            Some(from) => {
                for a in &from.addrs {
                    let mut r = Record::from_rdata(name.clone(), 0, RData::from(*a));
                    r.dns_class = DNSClass::IN;
                    msg.answers.push(r);
                }
            }
            // §2.4.3: no RRset of this type at the name.
            None => {
                let mut r = Record::update0(name.clone(), 0, rtype).into_record_of_rdata();
                r.dns_class = DNSClass::NONE;
                msg.answers.push(r);
            }
        }
        if ch.from.is_some() {
            // §2.5.2: delete the RRset.
            let mut r = Record::update0(name.clone(), 0, rtype).into_record_of_rdata();
            r.dns_class = DNSClass::ANY;
            msg.authorities.push(r);
        }
        if let Some(to) = &ch.to {
            // §2.5.1: add each RR.
            for a in &to.addrs {
                let mut r = Record::from_rdata(name.clone(), to.ttl, RData::from(*a));
                r.dns_class = DNSClass::IN;
                msg.authorities.push(r);
            }
        }
    }
    Ok(msg)
}

impl Provider for Rfc2136 {
    fn describe(&self) -> String {
        format!("rfc2136 {} key {}", self.cfg.server, self.cfg.key.name)
    }

    fn current<'a>(
        &'a self,
        zone: &'a DnsName,
        names: &'a BTreeSet<DnsName>,
    ) -> BoxFuture<'a, Result<Current, ProviderError>> {
        Box::pin(self.read(zone, names))
    }

    fn apply<'a>(&'a self, diff: &'a Diff) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.send_update(diff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{diff, Desired};

    #[test]
    fn key_file_as_tsig_keygen_writes_it() {
        let text = "key \"switchyard\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\";\n};\n";
        let key = TsigKey::from_bind_key_file(text).unwrap();
        assert_eq!(key.name.as_str(), "switchyard.");
        assert_eq!(key.algorithm, TsigAlg::HmacSha256);
        assert_eq!(key.secret, b"secret-secret-secret");
        assert!(!format!("{key:?}").contains("c2Vj"));

        let err =
            TsigKey::from_bind_key_file(&text.replace("hmac-sha256", "hmac-md5")).unwrap_err();
        assert!(err.to_string().contains("`hmac-md5`"), "{err}");
        let err = TsigKey::new("k", TsigAlg::HmacSha256, "not base64!").unwrap_err();
        assert!(
            err.to_string().starts_with("TSIG key `k.`: secret"),
            "{err}"
        );
    }

    #[test]
    fn update_carries_prerequisites_and_only_the_changed_sets() {
        let mut d = Desired::new("example.test").unwrap();
        d.set("a.example.test", 30, ["198.51.100.1".parse().unwrap()])
            .unwrap();
        d.set("b.example.test", 30, ["198.51.100.1".parse().unwrap()])
            .unwrap();
        let mut current = Current::default();
        current.sets.insert(
            RrKey {
                name: DnsName::parse("a.example.test").unwrap(),
                rtype: AddrType::A,
            },
            RrSet {
                ttl: 30,
                addrs: ["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()].into(),
            },
        );
        current.sets.insert(
            RrKey {
                name: DnsName::parse("b.example.test").unwrap(),
                rtype: AddrType::A,
            },
            RrSet {
                ttl: 30,
                addrs: ["198.51.100.1".parse().unwrap()].into(),
            },
        );
        let msg = update_message(&diff(&d, &current)).unwrap();
        assert_eq!(msg.metadata.op_code, OpCode::Update);
        // Prerequisites: the two addresses a. held; nothing about b.
        let prereq: Vec<String> = msg.answers.iter().map(|r| r.to_string()).collect();
        assert_eq!(prereq.len(), 2, "{prereq:?}");
        assert!(
            prereq.iter().all(|r| r.starts_with("a.example.test.")),
            "{prereq:?}"
        );
        // Update: delete a.'s A set, add its one new address.
        let upd: Vec<(String, DNSClass)> = msg
            .authorities
            .iter()
            .map(|r| (r.name.to_string(), r.dns_class))
            .collect();
        assert_eq!(
            upd,
            vec![
                ("a.example.test.".to_string(), DNSClass::ANY),
                ("a.example.test.".to_string(), DNSClass::IN),
            ]
        );
    }
}

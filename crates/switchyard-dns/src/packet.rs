//! One packet in, at most one packet out: the whole of answering a query,
//! without I/O, so the UDP and TCP loops share it and a property test can
//! feed it anything.
//!
//! - Fewer than 12 bytes (no header to answer to) and responses are
//!   dropped: answering a response is how reflection loops start.
//! - A packet that does not parse: FORMERR. Another opcode than QUERY:
//!   NOTIMP. Not exactly one question: FORMERR. EDNS version above 0:
//!   BADVERS. A class other than IN, a name outside every zone, or a zone
//!   transfer: REFUSED.
//! - In a zone: the apex has SOA and NS; a service's name has A/AAAA from
//!   the answer table; other types at existing names are NODATA (NOERROR,
//!   no answer, SOA in authority) and names that do not exist are NXDOMAIN
//!   with the SOA, whose TTL is the negative TTL (RFC 2308). `ANY` gets one
//!   record set (RFC 8482).
//! - EDNS Client Subnet (RFC 7871): the client's subnet places it, and the
//!   option is echoed with the scope equal to the source prefix when the
//!   answer is a service's addresses (it depends on no bit the resolver did
//!   not send), 0 for every other answer (the same for all clients).
//!   Without it (or with a source prefix of 0) the resolver's own address
//!   places the client.
//! - Over UDP an answer larger than the client's EDNS buffer (512 without
//!   EDNS, at most 1232) goes out empty with TC set, so the client asks
//!   again over TCP.
//!
//! The common question, A or AAAA at a service's name, is answered by
//! [`respond_fast`] from the view's precomputed records without building a
//! message; anything it is not sure of goes to [`respond_full`] (hickory),
//! and both give the same bytes (a property test holds them to it).

use std::borrow::Cow;
use std::net::IpAddr;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::answers::pick;
use std::sync::OnceLock;
use switchyard_steer::client_draw;

use prometheus_client::metrics::counter::Counter;

use crate::view::{
    address, normal, Entry, FastChoice, FastSet, StaticAnswer, View, ZoneFast, NX_TYPES,
};

/// The largest UDP answer sent, whatever the client offers (DNS flag day
/// 2020: no IP fragmentation).
pub const MAX_UDP: u16 = 1232;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What was asked and answered, for metrics and the query log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Info {
    pub name: String,
    /// Borrowed for every type hickory names: no allocation per query.
    pub qtype: Cow<'static, str>,
    pub rcode: &'static str,
    pub service: Option<String>,
    /// The region whose edges were answered.
    pub region: Option<String>,
    /// The client's region by the geo map (from ECS or the resolver's address).
    pub client_region: Option<String>,
    /// The client subnet the resolver sent, `addr/source`.
    pub ecs: Option<String>,
    pub truncated: bool,
    pub fail_open: bool,
}

pub struct Outcome {
    /// `None`: nothing is sent.
    pub bytes: Option<Vec<u8>>,
    pub info: Info,
}

fn rcode_name(r: ResponseCode) -> &'static str {
    match r {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "OTHER",
    }
}

fn dropped() -> Outcome {
    Outcome {
        bytes: None,
        info: Info {
            rcode: "DROPPED",
            ..Default::default()
        },
    }
}

/// Answers `packet`, received from `client` over `transport`: the fast
/// path when it takes the query, else the full one.
pub fn respond(view: &View, packet: &[u8], client: IpAddr, transport: Transport) -> Outcome {
    match respond_fast(view, packet, client, transport) {
        Some(f) => {
            let info = f.info(packet);
            Outcome {
                bytes: Some(f.bytes),
                info,
            }
        }
        None => respond_full(view, packet, client, transport),
    }
}

/// An answer [`respond_fast`] gave, with what metrics need borrowed from
/// the view (nothing allocated but the packet).
pub struct Fast<'v> {
    pub bytes: Vec<u8>,
    pub qtype: &'static str,
    pub answer: FastAnswer<'v>,
    pub client_region: Option<&'v str>,
    /// The client subnet, when one with a source prefix was sent.
    pub ecs: Option<(IpAddr, u8)>,
    /// Where the question's name ends in the packet.
    pub name_end: usize,
    view: &'v View,
}

pub enum FastAnswer<'v> {
    /// A service's addresses: index into the view's answers, the region
    /// picked and its records of the family asked.
    Service {
        service: usize,
        choice: &'v FastChoice,
        set: &'v FastSet,
    },
    /// An answer the same for every client (the apex's SOA or NS).
    Static(&'v StaticAnswer),
    /// NXDOMAIN in a zone, for the query type at this index of
    /// [`NX_TYPES`].
    NxDomain(&'v ZoneFast, usize),
}

impl Fast<'_> {
    /// `queries_total` for this answer over `transport`, resolved once per
    /// view.
    pub fn counter(&self, transport: Transport) -> &OnceLock<Counter> {
        let slots = match &self.answer {
            FastAnswer::Service { set, .. } => &set.counters,
            FastAnswer::Static(s) => &s.counters,
            FastAnswer::NxDomain(z, t) => &z.nx_counters[*t],
        };
        &slots[transport as usize]
    }

    /// The region whose edges were answered.
    pub fn region(&self) -> Option<&str> {
        match &self.answer {
            FastAnswer::Service { choice, .. } => Some(&choice.region),
            FastAnswer::Static(_) | FastAnswer::NxDomain(..) => None,
        }
    }

    pub fn rcode(&self) -> &'static str {
        match &self.answer {
            FastAnswer::NxDomain(..) => "NXDOMAIN",
            _ => "NOERROR",
        }
    }

    /// The same [`Info`] the full path gives (for the query log and tests).
    pub fn info(&self, packet: &[u8]) -> Info {
        let mut name = String::with_capacity(self.name_end - 12);
        let mut i = 12;
        while packet[i] != 0 {
            let l = usize::from(packet[i]);
            // Only letters, digits, `-` and `_` are let through: nothing
            // to escape.
            name.extend(packet[i + 1..i + 1 + l].iter().map(|b| char::from(*b)));
            name.push('.');
            i += 1 + l;
        }
        let (service, fail_open) = match &self.answer {
            FastAnswer::Service {
                service, choice, ..
            } => (
                Some(self.view.answers[*service].service.clone()),
                choice.fail_open,
            ),
            FastAnswer::Static(_) | FastAnswer::NxDomain(..) => (None, false),
        };
        Info {
            name,
            qtype: Cow::Borrowed(self.qtype),
            rcode: self.rcode(),
            service,
            region: self.region().map(str::to_string),
            client_region: self.client_region.map(str::to_string),
            ecs: self.ecs.map(|(a, l)| format!("{a}/{l}")),
            truncated: false,
            fail_open,
        }
    }
}

/// A name's longest wire form (RFC 1035 3.1).
const MAX_NAME: usize = 255;

/// The question asked, for [`StaticAnswer`]s built by the view: `name`
/// (lower case, no final dot) of `qtype`, class IN, id 0, no flags, no EDNS.
pub fn canonical_query(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.').filter(|l| !l.is_empty()) {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// The common questions answered from precomputed bytes: exactly one
/// question, class IN, at a name in letters, digits, `-` and `_` without
/// compression; A or AAAA at a service's name, SOA or NS at a zone's apex
/// asked in lower case, or NXDOMAIN for a name one label below an apex
/// (the apex in lower case; a type of [`NX_TYPES`]); no other records but an OPT of version 0 with
/// no option or one well-formed client subnet; an answer that fits. The
/// id, RD, the question (with its case: 0x20) and the subnet are copied
/// from the query; the records rotate by the id as on the full path.
/// `None` for anything else: the full path answers it.
pub fn respond_fast<'v>(
    view: &'v View,
    p: &[u8],
    client: IpAddr,
    transport: Transport,
) -> Option<Fast<'v>> {
    let u16_at =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?])) };
    // QR 0, opcode QUERY; one question, no answer or authority records.
    if p.len() < 12 || p[2] & 0xf8 != 0 || p[4..10] != [0, 1, 0, 0, 0, 0] {
        return None;
    }
    let arcount = u16_at(10)?;
    if arcount > 1 {
        return None;
    }
    let mut key = [0u8; MAX_NAME];
    let mut klen = 0;
    let mut i = 12;
    loop {
        let l = usize::from(*p.get(i)?);
        if l == 0 {
            i += 1;
            break;
        }
        // Labels only (no pointer), and the name with its root label
        // within 255 bytes.
        if l > 63 || i + 1 + l - 12 > MAX_NAME - 1 {
            return None;
        }
        let label = p.get(i + 1..i + 1 + l)?;
        if klen > 0 {
            key[klen] = b'.';
            klen += 1;
        }
        // hickory writes a label starting with `-` escaped: the log line
        // would differ.
        if label[0] == b'-' {
            return None;
        }
        for b in label {
            if !(b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') {
                return None;
            }
            key[klen] = b.to_ascii_lowercase();
            klen += 1;
        }
        i += 1 + l;
    }
    let name_end = i;
    let qtype = u16_at(i)?;
    if u16_at(i + 2)? != 1 {
        return None;
    }
    let question_end = i + 4;
    // The OPT record, if any, must end the packet.
    let mut limit = 512;
    let mut ecs: Option<&[u8]> = None;
    let edns = arcount == 1;
    if edns {
        let o = question_end;
        // Root owner, type OPT, version 0.
        if p.get(o) != Some(&0) || u16_at(o + 1)? != 41 || *p.get(o + 6)? != 0 {
            return None;
        }
        limit = u16_at(o + 3)?.clamp(512, MAX_UDP);
        let rdlen = usize::from(u16_at(o + 9)?);
        let rdata = p.get(o + 11..)?;
        if rdata.len() != rdlen {
            return None;
        }
        if !rdata.is_empty() {
            // Exactly one option: a client subnet of a known family whose
            // address is as long as its source prefix says.
            let (code, olen) = (u16_at(o + 11)?, usize::from(u16_at(o + 13)?));
            let body = &rdata[4..];
            if code != 8 || olen != body.len() || body.len() < 4 {
                return None;
            }
            let source = usize::from(body[2]);
            let max = match u16::from_be_bytes([body[0], body[1]]) {
                1 => 32,
                2 => 128,
                _ => return None,
            };
            if source > max || body.len() != 4 + source.div_ceil(8) {
                return None;
            }
            ecs = Some(body);
        }
    } else if question_end != p.len() {
        return None;
    }
    let name = std::str::from_utf8(&key[..klen]).ok()?;
    // Where the client is, and what of it is known for the draw (its
    // subnet, else the resolver's whole address), as the full path.
    let (placed_by, known, ecs_addr) = match ecs {
        Some(b) if b[2] > 0 => {
            let source = b[2];
            let addr = if b[1] == 1 {
                let mut o = [0u8; 4];
                o[..b.len() - 4].copy_from_slice(&b[4..]);
                IpAddr::from(o)
            } else {
                let mut o = [0u8; 16];
                o[..b.len() - 4].copy_from_slice(&b[4..]);
                IpAddr::from(o)
            };
            let masked = switchyard_model::dns::mask(addr, source);
            (masked, source, Some((addr, source)))
        }
        _ => (client, u8::MAX, None),
    };
    let client_region = view
        .config
        .dns
        .as_ref()
        .and_then(|d| d.region_of(placed_by));
    let id = [p[0], p[1]];
    let question = &p[12..question_end];
    let opt_len = if edns {
        11 + ecs.map_or(0, |b| 4 + b.len())
    } else {
        0
    };
    let entry = view.names.get(name);
    let (mut out, answer, qtype_name, scope) = match (qtype, entry) {
        (1 | 28, Some(Entry::Service(s))) => {
            let family = usize::from(qtype == 28);
            let sa = &view.answers[*s];
            let choices = view.fast[*s].for_region(client_region);
            let x = client_draw(&sa.service, placed_by, known);
            let choice = switchyard_steer::weighted_at(choices, |c| c.weight, x)?;
            let set = choice.sets[family].as_ref()?;
            let answers = set.rotated(u16::from_be_bytes(id));
            let len = 12 + question.len() + answers.len() + opt_len;
            let mut out = Vec::with_capacity(len);
            out.extend_from_slice(&id);
            // QR and AA, RD as asked; RA, AD, CD and the rcode all 0.
            out.push(0x84 | (p[2] & 0x01));
            out.push(0);
            out.extend_from_slice(&[0, 1]);
            out.extend_from_slice(&(set.n as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(question);
            out.extend_from_slice(answers);
            let answer = FastAnswer::Service {
                service: *s,
                choice,
                set,
            };
            // This answer is the subnet's own: the scope is the whole
            // source prefix.
            let scope = ecs.map_or(0, |b| b[2]);
            (out, answer, if qtype == 1 { "A" } else { "AAAA" }, scope)
        }
        (6 | 2, _) if view.fast_static.contains_key(name) => {
            let zf = &view.fast_static[name];
            let st = if qtype == 6 { &zf.soa } else { &zf.ns }.as_ref()?;
            // The name exactly as the answer was built with (lower case):
            // another case would be echoed, and compressed, differently.
            if st.bytes.get(12..name_end) != Some(&p[12..name_end]) {
                return None;
            }
            let mut out = Vec::with_capacity(st.bytes.len() + opt_len);
            out.extend_from_slice(&st.bytes);
            out[..2].copy_from_slice(&id);
            out[2] |= p[2] & 0x01;
            let answer = FastAnswer::Static(st);
            // The same for every client: scope 0.
            (out, answer, if qtype == 6 { "SOA" } else { "NS" }, 0)
        }
        _ => {
            // NXDOMAIN for a name one label below an apex.
            let (t, qtype_name) = NX_TYPES
                .iter()
                .enumerate()
                .find(|(_, (t, _))| *t == qtype)
                .map(|(i, (_, n))| (i, *n))?;
            let (_, apex) = name.split_once('.')?;
            let zf = view.fast_static.get(apex)?;
            if entry.is_some()
                || view.fast_static.contains_key(name)
                || zf.nx_unlike.iter().any(|n| n == name)
            {
                return None;
            }
            let label_end = 13 + usize::from(p[12]);
            let tpl = zf.nx.get(usize::from(p[12]))?.as_ref()?;
            // The apex in the case the answer was built with.
            if tpl.get(label_end..name_end) != Some(&p[label_end..name_end]) {
                return None;
            }
            let mut out = Vec::with_capacity(tpl.len() + opt_len);
            out.extend_from_slice(tpl);
            out[..2].copy_from_slice(&id);
            out[2] |= p[2] & 0x01;
            out[13..label_end].copy_from_slice(&p[13..label_end]);
            out[name_end..name_end + 2].copy_from_slice(&p[name_end..name_end + 2]);
            (out, FastAnswer::NxDomain(zf, t), qtype_name, 0)
        }
    };
    if edns {
        let ar = u16::from_be_bytes([out[10], out[11]]) + 1;
        out[10..12].copy_from_slice(&ar.to_be_bytes());
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&MAX_UDP.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        match ecs {
            Some(b) => {
                out.extend_from_slice(&((4 + b.len()) as u16).to_be_bytes());
                out.extend_from_slice(&[0, 8]);
                out.extend_from_slice(&(b.len() as u16).to_be_bytes());
                out.extend_from_slice(&b[..3]);
                out.push(scope);
                out.extend_from_slice(&b[4..]);
            }
            None => out.extend_from_slice(&[0, 0]),
        }
    }
    if transport == Transport::Udp && out.len() > usize::from(limit) {
        return None;
    }
    Some(Fast {
        bytes: out,
        qtype: qtype_name,
        answer,
        client_region,
        ecs: ecs_addr,
        name_end,
        view,
    })
}

/// Answers `packet` with hickory: parsed whole, answered by the rules,
/// encoded.
pub fn respond_full(view: &View, packet: &[u8], client: IpAddr, transport: Transport) -> Outcome {
    let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
        return dropped();
    };
    if header.metadata.message_type == MessageType::Response {
        return dropped();
    }
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => {
            let mut m = Message::error_msg(
                header.metadata.id,
                header.metadata.op_code,
                ResponseCode::FormErr,
            );
            m.metadata.recursion_desired = header.metadata.recursion_desired;
            return finish(m, None, transport, Info::default());
        }
    };
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.add_queries(req.queries.iter().cloned());
    let mut info = Info::default();
    if let Some(q) = req.queries.first() {
        info.name = q.name().to_ascii();
        info.qtype = match q.query_type() {
            t @ RecordType::Unknown(_) => Cow::Owned(t.to_string()),
            t => Cow::Borrowed(t.into()),
        };
    }
    let limit = match &req.edns {
        Some(e) => e.max_payload().clamp(512, MAX_UDP),
        None => 512,
    };
    // Our OPT record, echoing the client subnet once its scope is known.
    let mut edns = req.edns.as_ref().map(|_| {
        let mut e = Edns::new();
        e.set_max_payload(MAX_UDP);
        e.set_version(0);
        e
    });
    if req.metadata.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        return finish(resp, edns.zip(Some(limit)), transport, info);
    }
    if req.queries.len() != 1 {
        resp.metadata.response_code = ResponseCode::FormErr;
        return finish(resp, edns.zip(Some(limit)), transport, info);
    }
    if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
        resp.metadata.response_code = ResponseCode::BADVERS;
        return finish(resp, edns.zip(Some(limit)), transport, info);
    }
    let q = &req.queries[0];
    // Where the client is: its subnet from ECS, else the resolver itself.
    let subnet = req
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::Subnet))
        .and_then(|o| match o {
            EdnsOption::Subnet(cs) => Some(*cs),
            _ => None,
        });
    // With what of the client is known for the draw: its subnet, else the
    // resolver's whole address.
    let (placed_by, known) = match subnet {
        Some(cs) if cs.source_prefix() > 0 => {
            info.ecs = Some(format!("{}/{}", cs.addr(), cs.source_prefix()));
            let addr = switchyard_model::dns::mask(cs.addr(), cs.source_prefix());
            // Scope 0 unless the answer turns out to depend on the subnet
            // (RFC 7871 7.2.1): SOA, NS and negative answers hold for all.
            if let Some(e) = edns.as_mut() {
                e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                    cs.addr(),
                    cs.source_prefix(),
                    0,
                )));
            }
            (addr, cs.source_prefix())
        }
        other => {
            if let (Some(cs), Some(e)) = (other, edns.as_mut()) {
                e.options_mut()
                    .insert(EdnsOption::Subnet(ClientSubnet::new(cs.addr(), 0, 0)));
            }
            (client, u8::MAX)
        }
    };
    let dns = view.config.dns.as_ref();
    info.client_region = dns.and_then(|d| d.region_of(placed_by)).map(str::to_string);
    let mut edns = edns.zip(Some(limit));

    if q.query_class() != DNSClass::IN {
        resp.metadata.response_code = ResponseCode::Refused;
        return finish(resp, edns, transport, info);
    }
    let qname = normal(&info.name);
    let Some(zone) = view.zone_of(&qname) else {
        resp.metadata.response_code = ResponseCode::Refused;
        return finish(resp, edns, transport, info);
    };
    if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) {
        resp.metadata.response_code = ResponseCode::Refused;
        return finish(resp, edns, transport, info);
    }
    resp.metadata.authoritative = true;
    let ttl = view.ttl;
    let owner = q.name().clone();
    let is_apex = qname == zone.zone.apex;
    let entry = view.names.get(&qname);
    if !is_apex && entry.is_none() {
        resp.metadata.response_code = ResponseCode::NXDomain;
        resp.add_authority(zone.soa_record(zone.zone.negative_ttl.min(ttl)));
        return finish(resp, edns, transport, info);
    }
    let qtype = q.query_type();
    let any = qtype == RecordType::ANY;
    let mut answers: Vec<Record> = Vec::new();
    let mut additionals: Vec<Record> = Vec::new();
    match entry {
        Some(Entry::Service(i)) if matches!(qtype, RecordType::A | RecordType::AAAA) || any => {
            let sa = &view.answers[*i];
            info.service = Some(sa.service.clone());
            let ttl = sa.ttl;
            let choices = sa.for_region(info.client_region.as_deref());
            if let Some(c) = pick(choices, client_draw(&sa.service, placed_by, known)) {
                // This answer is the subnet's own: say for how much of it.
                if let (Some(cs), Some((e, _))) = (subnet, edns.as_mut()) {
                    if cs.source_prefix() > 0 {
                        let echo =
                            ClientSubnet::new(cs.addr(), cs.source_prefix(), cs.source_prefix());
                        e.options_mut().remove(EdnsCode::Subnet);
                        e.options_mut().insert(EdnsOption::Subnet(echo));
                    }
                }
                info.region = Some(c.region.clone());
                info.fail_open = crate::answers::failed_open(c);
                let want_v4 =
                    qtype == RecordType::A || (any && c.addrs.iter().any(|a| a.is_ipv4()));
                // Rotated by the query's id: clients and stub resolvers
                // mostly use the first address, and every zone's edge
                // should get its part of them, not the first zone's all.
                let of_family: Vec<IpAddr> = c
                    .addrs
                    .iter()
                    .copied()
                    .filter(|a| a.is_ipv4() == want_v4)
                    .collect();
                let start = usize::from(req.metadata.id) % of_family.len().max(1);
                answers.extend(
                    of_family[start..]
                        .iter()
                        .chain(&of_family[..start])
                        .map(|a| address(&owner, ttl, *a)),
                );
            }
        }
        Some(Entry::Glue(ips)) if matches!(qtype, RecordType::A | RecordType::AAAA) || any => {
            let want_v4 = qtype == RecordType::A || (any && ips.iter().any(|a| a.is_ipv4()));
            answers.extend(
                ips.iter()
                    .filter(|a| a.is_ipv4() == want_v4)
                    .map(|a| address(&owner, ttl, *a)),
            );
        }
        _ => {}
    }
    if is_apex && answers.is_empty() {
        match qtype {
            RecordType::SOA => answers.push(with_owner(zone.soa_record(ttl), &owner)),
            RecordType::ANY => answers.push(with_owner(zone.soa_record(ttl), &owner)),
            RecordType::NS => {
                answers.extend(zone.ns_records(&owner, ttl));
                additionals.extend(zone.glue(ttl));
            }
            _ => {}
        }
    }
    if answers.is_empty() {
        // NODATA: the name exists, the type does not.
        resp.add_authority(zone.soa_record(zone.zone.negative_ttl.min(ttl)));
    } else {
        resp.add_answers(answers);
        resp.add_additionals(additionals);
    }
    finish(resp, edns, transport, info)
}

fn with_owner(mut r: Record, owner: &Name) -> Record {
    r.name = owner.clone();
    r
}

/// Encodes the answer; over UDP one too large for the client goes out as
/// its header and question with TC set.
fn finish(
    mut resp: Message,
    edns: Option<(Edns, u16)>,
    transport: Transport,
    mut info: Info,
) -> Outcome {
    let limit = match (&edns, transport) {
        (_, Transport::Tcp) => usize::from(u16::MAX),
        (Some((_, l)), Transport::Udp) => usize::from(*l),
        (None, Transport::Udp) => 512,
    };
    if let Some((e, _)) = edns {
        resp.set_edns(e);
    }
    info.rcode = rcode_name(resp.metadata.response_code);
    let bytes = match resp.to_vec() {
        Ok(b) if b.len() <= limit => Some(b),
        Ok(_) => {
            info.truncated = true;
            let mut t = resp.truncate();
            t.metadata.authoritative = resp.metadata.authoritative;
            t.to_vec().ok()
        }
        // Nothing we built should fail to encode; if it does, the client
        // gets SERVFAIL rather than silence.
        Err(e) => {
            tracing::error!(error = %e, "could not encode an answer");
            let mut m = Message::error_msg(
                resp.metadata.id,
                resp.metadata.op_code,
                ResponseCode::ServFail,
            );
            m.add_queries(resp.queries.iter().cloned());
            info.rcode = "SERVFAIL";
            m.to_vec().ok()
        }
    };
    Outcome { bytes, info }
}

/// The answer a rate-limited client gets instead of its own (RRL's
/// "slip"): its question, no records, TC set, so a real resolver asks
/// again over TCP. `None` (send nothing) for what [`respond`] would not
/// answer either: a response, or a packet that does not parse.
pub fn slipped(packet: &[u8]) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(packet)).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    let req = Message::from_vec(packet).ok()?;
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.truncation = true;
    resp.add_queries(req.queries.iter().cloned());
    resp.to_vec().ok()
}

/// A query for tests and tools: `name` of `qtype`, optionally with EDNS
/// (buffer size) and a client subnet.
pub fn query(
    id: u16,
    name: &str,
    qtype: RecordType,
    edns_payload: Option<u16>,
    subnet: Option<(IpAddr, u8)>,
) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("a query name"),
        qtype,
    ));
    if let Some(p) = edns_payload {
        let mut e = Edns::new();
        e.set_max_payload(p);
        if let Some((addr, len)) = subnet {
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(addr, len, 0)));
        }
        m.set_edns(e);
    }
    m.to_vec().expect("a query encodes")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::view::View;
    use hickory_proto::serialize::binary::BinEncodable;
    use proptest::prelude::*;
    use switchyard_model::{Config, Controls};

    const CONFIG: &str = r#"
[[region]]
name = "r1"
zone = [
  { name = "r1a", edge = "127.1.1.1:8080", admin = "127.1.1.1:9901" },
  { name = "r1b", edge = "127.1.2.1:8080", admin = "127.1.2.1:9901" },
]
[[region]]
name = "r2"
zone = [{ name = "r2a", edge = "127.2.1.1:8080", admin = "127.2.1.1:9901" }]

[[service]]
name = "svc"
hosts = ["svc.example.test"]
min_healthy = 0.5
instance = [{ name = "i1", zone = "r1a", addr = "127.1.1.11:8081" }]

[dns]
ttl_s = 20
edge_addresses = { r2a = ["127.2.1.1", "2001:db8::21"] }
[[dns.server]]
name = "ns1"
listen = ["127.0.0.1:5353"]
admin = "127.0.0.1:9953"
[[dns.zone]]
apex = "example.test"
ns = ["ns1.example.test"]
ns_addresses = { "ns1.example.test" = ["127.0.0.53"] }
negative_ttl_s = 5
[[dns.geo]]
prefix = "10.2.0.0/16"
region = "r2"
[[dns.geo]]
prefix = "2001:db8:2::/48"
region = "r2"
"#;

    fn view() -> View {
        let cfg = Config::from_toml(CONFIG, |_| None).unwrap();
        View::build(
            Arc::new(cfg),
            Arc::new(Controls::default()),
            &|_: &str| true,
            0,
        )
    }

    fn ask(q: &[u8], from: &str) -> (Message, Info) {
        let out = respond(&view(), q, from.parse().unwrap(), Transport::Udp);
        (Message::from_vec(&out.bytes.unwrap()).unwrap(), out.info)
    }

    /// The answer's addresses, sorted (their order rotates by query id).
    fn addrs(m: &Message) -> Vec<String> {
        let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_slipped_answer_is_the_question_with_tc_and_no_records() {
        let q = query(7, "svc.example.test.", RecordType::A, Some(1232), None);
        let m = Message::from_vec(&slipped(&q).unwrap()).unwrap();
        assert_eq!(m.metadata.id, 7);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert!(m.metadata.truncation && m.metadata.recursion_desired);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].name().to_ascii(), "svc.example.test.");
        assert!(m.answers.is_empty() && m.authorities.is_empty());
        // Never an answer to a response, nor to noise.
        assert_eq!(slipped(&m.to_vec().unwrap()), None);
        assert_eq!(slipped(&[1, 2, 3]), None);
    }

    #[test]
    fn the_query_type_is_named_without_allocating_when_hickory_knows_it() {
        // The name labels a counter on every query: a static str, not a
        // String formatted per packet.
        let (_, info) = ask(
            &query(1, "svc.example.test.", RecordType::AAAA, None, None),
            "10.1.0.1",
        );
        assert!(
            matches!(info.qtype, Cow::Borrowed("AAAA")),
            "{:?}",
            info.qtype
        );
        let unknown = RecordType::Unknown(65280);
        let (_, info) = ask(
            &query(1, "svc.example.test.", unknown, None, None),
            "10.1.0.1",
        );
        assert_eq!(info.qtype, unknown.to_string());
    }

    #[test]
    fn the_addresses_rotate_with_the_query_id_so_every_zones_edge_comes_first_for_some() {
        let first = |id| {
            let (m, _) = ask(
                &query(id, "svc.example.test.", RecordType::A, None, None),
                "10.1.0.9",
            );
            m.answers[0].data.to_string()
        };
        let firsts: std::collections::BTreeSet<String> = (0..4).map(first).collect();
        assert_eq!(firsts.len(), 2, "{firsts:?}");
    }

    #[test]
    fn a_service_name_gets_its_regions_edges_by_client_subnet_and_the_scope_is_echoed() {
        let (m, _) = ask(
            &query(7, "svc.example.test.", RecordType::A, None, None),
            "10.1.0.9",
        );
        assert_eq!(m.metadata.id, 7);
        assert!(m.metadata.authoritative);
        assert_eq!(addrs(&m), ["127.1.1.1", "127.1.2.1"]);
        assert_eq!(m.answers[0].ttl, 20);
        let ecs = Some(("10.2.3.0".parse().unwrap(), 24));
        let (m, info) = ask(
            &query(8, "SVC.Example.Test.", RecordType::A, Some(4096), ecs),
            "10.1.0.9",
        );
        assert_eq!(addrs(&m), ["127.2.1.1"]);
        assert_eq!(info.client_region.as_deref(), Some("r2"));
        // 0x20: the name comes back as it was asked.
        assert_eq!(m.answers[0].name.to_ascii(), "SVC.Example.Test.");
        let Some(EdnsOption::Subnet(cs)) = m.edns.as_ref().unwrap().option(EdnsCode::Subnet) else {
            panic!("no ECS echoed: {m:?}");
        };
        assert_eq!((cs.source_prefix(), cs.scope_prefix()), (24, 24));
    }

    #[test]
    fn an_ipv6_subnet_places_the_client_and_aaaa_answers_the_ipv6_edges() {
        let ecs = Some(("2001:db8:2:100::".parse().unwrap(), 56));
        let q = query(4, "svc.example.test.", RecordType::AAAA, Some(1232), ecs);
        let (m, info) = ask(&q, "10.1.0.9");
        assert_eq!(addrs(&m), ["2001:db8::21"]);
        assert_eq!(info.client_region.as_deref(), Some("r2"));
        let Some(EdnsOption::Subnet(cs)) = m.edns.as_ref().unwrap().option(EdnsCode::Subnet) else {
            panic!("no ECS echoed: {m:?}");
        };
        assert_eq!((cs.source_prefix(), cs.scope_prefix()), (56, 56));
        let q = query(5, "svc.example.test.", RecordType::A, Some(1232), ecs);
        assert_eq!(addrs(&ask(&q, "10.1.0.9").0), ["127.2.1.1"]);
        // A source prefix of 0: the resolver's address places the client,
        // and the scope says the answer is for every client of it.
        let zero = Some(("10.2.0.0".parse().unwrap(), 0));
        let q = query(6, "svc.example.test.", RecordType::A, Some(1232), zero);
        let (m, info) = ask(&q, "10.1.0.9");
        assert_eq!(info.client_region, None);
        assert_eq!(addrs(&m), ["127.1.1.1", "127.1.2.1"]);
        let Some(EdnsOption::Subnet(cs)) = m.edns.as_ref().unwrap().option(EdnsCode::Subnet) else {
            panic!("no ECS echoed: {m:?}");
        };
        assert_eq!(cs.scope_prefix(), 0);
    }

    #[test]
    fn answers_that_do_not_depend_on_the_client_say_so_with_scope_0() {
        let ecs = Some(("10.2.3.0".parse().unwrap(), 24));
        for (name, qtype) in [
            ("nope.example.test.", RecordType::A),
            ("example.test.", RecordType::SOA),
            ("svc.example.test.", RecordType::TXT),
        ] {
            let (m, _) = ask(&query(9, name, qtype, Some(1232), ecs), "10.1.0.9");
            let Some(EdnsOption::Subnet(cs)) = m.edns.as_ref().unwrap().option(EdnsCode::Subnet)
            else {
                panic!("no ECS echoed: {m:?}");
            };
            assert_eq!(
                (cs.source_prefix(), cs.scope_prefix()),
                (24, 0),
                "{name} {qtype}"
            );
        }
    }

    #[test]
    fn apex_negative_and_foreign_answers_follow_the_rfcs() {
        let (m, _) = ask(
            &query(1, "example.test.", RecordType::SOA, None, None),
            "10.1.0.1",
        );
        assert_eq!(m.answers[0].record_type(), RecordType::SOA);
        let (m, _) = ask(
            &query(1, "example.test.", RecordType::NS, None, None),
            "10.1.0.1",
        );
        assert_eq!(addrs(&m), ["ns1.example.test."]);
        assert_eq!(m.additionals[0].data.to_string(), "127.0.0.53");
        let (m, _) = ask(
            &query(1, "nope.example.test.", RecordType::A, None, None),
            "10.1.0.1",
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(m.authorities[0].ttl, 5, "negative TTL is the SOA minimum");
        let (m, _) = ask(
            &query(1, "svc.example.test.", RecordType::MX, None, None),
            "10.1.0.1",
        );
        assert_eq!(
            (
                m.metadata.response_code,
                m.answers.len(),
                m.authorities.len()
            ),
            (ResponseCode::NoError, 0, 1)
        );
        let (m, _) = ask(
            &query(1, "svc.example.test.", RecordType::AAAA, None, None),
            "10.1.0.1",
        );
        assert_eq!(
            (m.metadata.response_code, m.answers.len()),
            (ResponseCode::NoError, 0)
        );
        let (m, _) = ask(
            &query(1, "example.org.", RecordType::A, None, None),
            "10.1.0.1",
        );
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.authoritative);
        let (m, _) = ask(
            &query(1, "svc.example.test.", RecordType::ANY, None, None),
            "10.1.0.1",
        );
        assert_eq!(addrs(&m), ["127.1.1.1", "127.1.2.1"]);
        let (m, _) = ask(
            &query(1, "example.test.", RecordType::AXFR, None, None),
            "10.1.0.1",
        );
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn bad_packets_get_a_clear_rcode_or_nothing() {
        let v = view();
        let from: IpAddr = "10.1.0.1".parse().unwrap();
        assert!(respond(&v, &[1, 2, 3], from, Transport::Udp)
            .bytes
            .is_none());
        // A header that promises a question that is not there.
        let mut short = query(9, "svc.example.test.", RecordType::A, None, None);
        short.truncate(20);
        let m =
            Message::from_vec(&respond(&v, &short, from, Transport::Udp).bytes.unwrap()).unwrap();
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (9, ResponseCode::FormErr)
        );
        // A name that points at itself (compression loop).
        let mut lp = query(10, "svc.example.test.", RecordType::A, None, None);
        lp.truncate(12);
        lp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        let m = Message::from_vec(&respond(&v, &lp, from, Transport::Udp).bytes.unwrap()).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // Another opcode.
        let mut st = query(11, "svc.example.test.", RecordType::A, None, None);
        st[2] = (st[2] & 0x87) | (2 << 3);
        let m = Message::from_vec(&respond(&v, &st, from, Transport::Udp).bytes.unwrap()).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
        // Class CH.
        let mut ch = query(12, "svc.example.test.", RecordType::A, None, None);
        let n = ch.len();
        ch[n - 1] = 3;
        let m = Message::from_vec(&respond(&v, &ch, from, Transport::Udp).bytes.unwrap()).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        // A name longer than 255 bytes (five labels of 63).
        let mut long = query(14, "svc.example.test.", RecordType::A, None, None);
        long.truncate(12);
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        let m =
            Message::from_vec(&respond(&v, &long, from, Transport::Udp).bytes.unwrap()).unwrap();
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (14, ResponseCode::FormErr)
        );
        // A type nobody defined, at a name that exists: NODATA.
        let unknown = query(
            15,
            "svc.example.test.",
            RecordType::Unknown(65280),
            None,
            None,
        );
        let m =
            Message::from_vec(&respond(&v, &unknown, from, Transport::Udp).bytes.unwrap()).unwrap();
        assert_eq!(
            (
                m.metadata.response_code,
                m.answers.len(),
                m.authorities.len()
            ),
            (ResponseCode::NoError, 0, 1)
        );
        // A response is never answered.
        let mut r = query(13, "svc.example.test.", RecordType::A, None, None);
        r[2] |= 0x80;
        assert!(respond(&v, &r, from, Transport::Udp).bytes.is_none());
    }

    fn sane(v: &View, packet: &[u8]) {
        let from: IpAddr = "10.2.0.1".parse().unwrap();
        for t in [Transport::Udp, Transport::Tcp] {
            let out = respond(v, packet, from, t);
            let Some(b) = out.bytes else { continue };
            if t == Transport::Udp {
                assert!(
                    b.len() <= usize::from(MAX_UDP),
                    "{} bytes over UDP",
                    b.len()
                );
            }
            let m = Message::from_vec(&b).expect("our answer parses");
            assert_eq!(m.metadata.message_type, MessageType::Response);
            assert_eq!(m.metadata.id, u16::from_be_bytes([packet[0], packet[1]]));
            assert!(
                matches!(
                    m.metadata.response_code,
                    ResponseCode::NoError
                        | ResponseCode::FormErr
                        | ResponseCode::NXDomain
                        | ResponseCode::NotImp
                        | ResponseCode::Refused
                        | ResponseCode::BADVERS // 16 is BADVERS; hickory reads it back as BADSIG, TSIG's
                                                // name for the same number.
                ) || u16::from(m.metadata.response_code) == 16,
                "{:?}",
                m.metadata.response_code
            );
        }
    }

    /// Built once: the property tests run thousands of cases each, and
    /// parsing the config per case would cost more than the cases.
    fn shared_view() -> &'static View {
        static VIEW: std::sync::OnceLock<View> = std::sync::OnceLock::new();
        VIEW.get_or_init(view)
    }

    /// One piece of a name in the question as it goes on the wire: a
    /// label (of any length up to 70, so past 63 too), a compression
    /// pointer to anywhere (into the header, itself, past the end), or the
    /// root label that ends it.
    #[derive(Debug, Clone)]
    enum Piece {
        Label(Vec<u8>),
        Pointer(u16),
        End,
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..70).prop_map(Piece::Label),
            2 => proptest::collection::vec(prop::sample::select(b"abcwxyz-.*".to_vec()), 1..64).prop_map(Piece::Label),
            2 => (0u16..0x4000).prop_map(Piece::Pointer),
            1 => (0u16..64).prop_map(Piece::Pointer),
            1 => Just(Piece::End),
        ]
    }

    /// Types: the ones answered, ANY, zone transfers, and any other number.
    fn qtype() -> impl Strategy<Value = u16> {
        prop_oneof![
            prop::sample::select(vec![1u16, 2, 5, 6, 15, 16, 28, 33, 41, 251, 252, 255]),
            any::<u16>(),
        ]
    }

    /// Classes: IN mostly, CH, HS, NONE, ANY and any other number.
    fn qclass() -> impl Strategy<Value = u16> {
        prop_oneof![
            3 => Just(1u16),
            1 => prop::sample::select(vec![3u16, 4, 254, 255]),
            1 => any::<u16>(),
        ]
    }

    /// An OPT record: a payload size, a version, and options that are mostly
    /// client subnets of any family, prefix and length.
    fn opt() -> impl Strategy<Value = Vec<u8>> {
        let option = prop_oneof![
            (
                any::<u16>(),
                any::<u8>(),
                any::<u8>(),
                proptest::collection::vec(any::<u8>(), 0..20)
            )
                .prop_map(|(family, source, scope, addr)| {
                    let mut o = vec![0, 8];
                    o.extend_from_slice(&((4 + addr.len()) as u16).to_be_bytes());
                    o.extend_from_slice(&family.to_be_bytes());
                    o.extend_from_slice(&[source, scope]);
                    o.extend_from_slice(&addr);
                    o
                }),
            (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..12)).prop_map(
                |(code, data)| {
                    let mut o = code.to_be_bytes().to_vec();
                    o.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    o.extend_from_slice(&data);
                    o
                }
            ),
        ];
        (
            any::<u16>(),
            prop::sample::select(vec![0u8, 0, 0, 1, 255]),
            proptest::collection::vec(option, 0..3),
        )
            .prop_map(|(payload, version, options)| {
                let rdata: Vec<u8> = options.concat();
                let mut r = vec![0, 0, 41];
                r.extend_from_slice(&payload.to_be_bytes());
                r.extend_from_slice(&[0, version, 0, 0]);
                r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                r.extend_from_slice(&rdata);
                r
            })
    }

    prop_compose! {
        /// A query shaped on the wire piece by piece: any header bits and
        /// counts, a question name of labels and pointers, any type and
        /// class, maybe an OPT record, maybe trailing bytes, maybe cut short.
        fn wire_query()(
            id in any::<u16>(),
            flags in prop_oneof![3 => Just(0x0100u16), 1 => any::<u16>()],
            counts in prop_oneof![3 => Just([1u16, 0, 0]), 1 => any::<[u8; 3]>().prop_map(|c| c.map(u16::from))],
            pieces in proptest::collection::vec(piece(), 0..8),
            qtype in qtype(),
            qclass in qclass(),
            opt in proptest::option::of(opt()),
            trailing in proptest::collection::vec(any::<u8>(), 0..4),
            cut in proptest::option::weighted(0.2, any::<usize>()),
        ) -> Vec<u8> {
            let arcount = u16::from(opt.is_some()).max(counts[2]);
            let mut q = Vec::with_capacity(128);
            for v in [id, flags, counts[0], counts[1], 0, arcount] {
                q.extend_from_slice(&v.to_be_bytes());
            }
            for p in &pieces {
                match p {
                    Piece::Label(l) => {
                        q.push(l.len() as u8);
                        q.extend_from_slice(l);
                    }
                    Piece::Pointer(to) => q.extend_from_slice(&(0xc000 | to).to_be_bytes()),
                    Piece::End => q.push(0),
                }
            }
            q.push(0);
            q.extend_from_slice(&qtype.to_be_bytes());
            q.extend_from_slice(&qclass.to_be_bytes());
            if let Some(o) = opt {
                q.extend_from_slice(&o);
            }
            q.extend_from_slice(&trailing);
            if let Some(c) = cut {
                q.truncate(c % (q.len() + 1));
            }
            q
        }
    }

    /// Names under the zone (existing and not, in any case), at the apex,
    /// and outside it.
    fn zone_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("svc.example.test.".to_string()),
            Just("SvC.eXample.TEST.".to_string()),
            Just("example.test.".to_string()),
            Just("ns1.example.test.".to_string()),
            "[a-z0-9][a-z0-9-]{0,19}\\.example\\.test\\.",
            "([a-z]{1,63}\\.){1,3}svc\\.example\\.test\\.",
            "[a-z]{1,10}\\.(org|test|example\\.org)\\.",
        ]
    }

    /// A client subnet option: mostly well formed, sometimes of an unknown
    /// family, a prefix too long for it, or an address a byte off.
    fn ecs_option() -> impl Strategy<Value = Vec<u8>> {
        (
            prop_oneof![4 => Just(1u16), 4 => Just(2u16), 1 => any::<u16>()],
            prop_oneof![2 => 0u8..=32, 2 => 0u8..=128, 1 => Just(0u8), 1 => any::<u8>()],
            prop_oneof![4 => Just(0u8), 1 => any::<u8>()],
            // Subnets the geo map places in r2 (10.2.0.0/16,
            // 2001:db8:2::/48), and anywhere.
            prop_oneof![
                1 => Just([10, 2, 3, 77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                1 => Just([0x20, 0x01, 0x0d, 0xb8, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]),
                2 => any::<[u8; 17]>(),
            ],
            prop_oneof![8 => Just(0i8), 1 => -1i8..=1],
        )
            .prop_map(|(family, source, scope, addr, off)| {
                let n = (usize::from(source).div_ceil(8) as isize + isize::from(off)).clamp(0, 17)
                    as usize;
                let mut o = vec![0, 8];
                o.extend_from_slice(&((4 + n) as u16).to_be_bytes());
                o.extend_from_slice(&family.to_be_bytes());
                o.extend_from_slice(&[source, scope]);
                o.extend_from_slice(&addr[..n]);
                o
            })
    }

    prop_compose! {
        /// The questions the fast path is for, and their near misses: any
        /// id and flags, the service's name (and others) in any case, A,
        /// AAAA and a few other types, EDNS with any buffer size, version,
        /// extended rcode and flags, with or without a client subnet or
        /// another option, sometimes a byte too many or too few.
        fn common_query()(
            id in any::<u16>(),
            flags in prop_oneof![4 => Just(0x0100u16), 2 => Just(0u16), 2 => any::<u16>()],
            name in prop_oneof![
                6 => Just("svc.example.test".to_string()),
                3 => Just("example.test".to_string()),
                2 => prop::sample::select(vec![
                    "ns1.example.test", "nope.example.test", "svc.example.org",
                    // The SOA's names and their parents, which the encoder
                    // compresses against the question whole.
                    "hostmaster.example.test", "x.ns1.example.test", "a.svc.example.test",
                ]).prop_map(str::to_string),
                3 => "[a-z0-9_-]{1,63}\\.example\\.test",
            ],
            // Lower case half the time: the apex's answers are taken fast
            // only as they were built.
            case in prop_oneof![Just(0u64), any::<u64>()],
            qtype in prop_oneof![6 => prop::sample::select(vec![1u16, 28, 6, 2]), 2 => prop::sample::select(vec![255u16, 16, 15, 5, 12, 33, 65, 41, 251, 252, 99])],
            qclass in prop_oneof![8 => Just(1u16), 1 => any::<u16>()],
            edns in proptest::option::weighted(0.8, (
                prop_oneof![2 => Just(1232u16), 1 => Just(4096u16), 2 => any::<u16>()],
                prop_oneof![6 => Just(0u8), 1 => any::<u8>()],
                prop_oneof![6 => Just(0u8), 1 => any::<u8>()],
                any::<u16>(),
                prop_oneof![
                    3 => Just(vec![]),
                    6 => ecs_option(),
                    1 => proptest::collection::vec(any::<u8>(), 0..8).prop_map(|d| {
                        let mut o = vec![0, 10, 0, d.len() as u8];
                        o.extend_from_slice(&d);
                        o
                    }),
                    1 => (ecs_option(), ecs_option()).prop_map(|(a, b)| [a, b].concat()),
                ],
            )),
            extra in prop_oneof![10 => Just(None), 1 => any::<u8>().prop_map(Some)],
        ) -> Vec<u8> {
            let mut q = Vec::with_capacity(128);
            for v in [id, flags, 1, 0, 0, u16::from(edns.is_some())] {
                q.extend_from_slice(&v.to_be_bytes());
            }
            for (k, label) in name.split('.').enumerate() {
                q.push(label.len() as u8);
                q.extend(label.bytes().enumerate().map(|(j, b)| {
                    if case >> ((k * 17 + j) % 64) & 1 == 1 { b.to_ascii_uppercase() } else { b }
                }));
            }
            q.push(0);
            q.extend_from_slice(&qtype.to_be_bytes());
            q.extend_from_slice(&qclass.to_be_bytes());
            if let Some((payload, ext, version, eflags, options)) = edns {
                q.extend_from_slice(&[0, 0, 41]);
                q.extend_from_slice(&payload.to_be_bytes());
                q.extend_from_slice(&[ext, version]);
                q.extend_from_slice(&eflags.to_be_bytes());
                q.extend_from_slice(&(options.len() as u16).to_be_bytes());
                q.extend_from_slice(&options);
            }
            if let Some(b) = extra {
                if b % 2 == 0 { q.push(b) } else { q.pop(); }
            }
            q
        }
    }

    /// The clients: placed by the geo map (IPv4 and IPv6) or not.
    fn client() -> impl Strategy<Value = IpAddr> {
        prop::sample::select(vec![
            "10.1.0.1",
            "10.2.0.9",
            "192.0.2.1",
            "2001:db8:2::1",
            "2001:db8:9::1",
        ])
        .prop_map(|s| s.parse().unwrap())
    }

    #[test]
    fn a_client_is_drawn_by_its_24_as_the_edges_draw_it_on_both_paths() {
        // r1 at half: which half of its clients keeps r1 is the edges'
        // draw of each client's /24, whether the resolver sends the /24,
        // the whole address or no subnet at all.
        let cfg = Config::from_toml(CONFIG, |_| None).unwrap();
        let mut c = Controls::default();
        c.services
            .entry("svc".into())
            .or_default()
            .regions
            .entry("r1".into())
            .or_default()
            .weight = 0.5;
        let v = View::build(Arc::new(cfg), Arc::new(c), &|_: &str| true, 0);
        let mut kept = 0;
        for i in 0..200u8 {
            let net: IpAddr = format!("10.1.{i}.0").parse().unwrap();
            let host: IpAddr = format!("10.1.{i}.77").parse().unwrap();
            let want_r1 = switchyard_steer::client_draw("svc", host, 32) < 0.5;
            kept += usize::from(want_r1);
            let want = if want_r1 {
                vec!["127.1.1.1", "127.1.2.1"]
            } else {
                vec!["127.2.1.1"]
            };
            for (q, from) in [
                (Some((net, 24)), host),
                (Some((host, 32)), "10.9.9.9".parse().unwrap()),
                (None, host),
            ] {
                let q = query(1, "svc.example.test.", RecordType::A, Some(1232), q);
                let fast = respond_fast(&v, &q, from, Transport::Udp).expect("fast path");
                let full = respond_full(&v, &q, from, Transport::Udp);
                assert_eq!(Some(&fast.bytes), full.bytes.as_ref());
                let m = Message::from_vec(&fast.bytes).unwrap();
                assert_eq!(addrs(&m), want, "{host}: {q:?} from {from}");
            }
        }
        assert!((70..=130).contains(&kept), "r1 kept {kept} of 200");
    }

    #[test]
    fn the_common_questions_take_the_fast_path_and_the_rest_do_not() {
        let v = shared_view();
        let from: IpAddr = "10.1.0.9".parse().unwrap();
        let ecs4 = Some(("10.2.3.0".parse().unwrap(), 24));
        let ecs6 = Some(("2001:db8:2:100::".parse().unwrap(), 56));
        for q in [
            query(1, "svc.example.test.", RecordType::A, None, None),
            query(2, "SvC.example.TEST.", RecordType::A, Some(1232), None),
            query(3, "svc.example.test.", RecordType::A, Some(1232), ecs4),
            query(4, "svc.example.test.", RecordType::AAAA, Some(512), ecs6),
            query(5, "example.test.", RecordType::SOA, Some(1232), ecs4),
            query(6, "example.test.", RecordType::NS, None, None),
            query(7, "example.test.", RecordType::NS, Some(1232), ecs6),
            query(8, "nope.example.test.", RecordType::A, None, None),
            query(9, "NoPe.example.test.", RecordType::TXT, Some(1232), ecs4),
        ] {
            let f = respond_fast(v, &q, from, Transport::Udp)
                .unwrap_or_else(|| panic!("the fast path takes {:?}", Message::from_vec(&q)));
            let full = respond_full(v, &q, from, Transport::Udp);
            assert_eq!(Some(&f.bytes), full.bytes.as_ref());
            assert_eq!(f.info(&q), full.info);
        }
        for q in [
            query(5, "svc.example.test.", RecordType::ANY, None, None),
            query(6, "Example.test.", RecordType::SOA, Some(1232), None),
            query(7, "a.nope.example.test.", RecordType::A, None, None),
            query(8, "ns1.example.test.", RecordType::A, None, None),
            query(8, "hostmaster.example.test.", RecordType::A, None, None),
            query(8, "nope.Example.test.", RecordType::A, None, None),
            // No IPv6 edge in r1: NODATA, from the full path.
            query(9, "svc.example.test.", RecordType::AAAA, None, None),
        ] {
            assert!(respond_fast(v, &q, from, Transport::Udp).is_none());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        /// Whatever the fast path answers, the full path answers with the
        /// same bytes (id, flags, the question in its case, the records in
        /// their rotation, TTLs, the OPT record and subnet echo) and the
        /// same facts for metrics and the query log.
        #[test]
        fn the_fast_path_answers_exactly_as_the_full_path(q in common_query(), from in client()) {
            for t in [Transport::Udp, Transport::Tcp] {
                let full = respond_full(shared_view(), &q, from, t);
                if let Some(f) = respond_fast(shared_view(), &q, from, t) {
                    prop_assert_eq!(Some(&f.bytes), full.bytes.as_ref(), "{:?}", Message::from_vec(&f.bytes));
                    prop_assert_eq!(f.info(&q), full.info);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            sane(shared_view(), &bytes);
        }

        #[test]
        fn a_valid_query_with_bytes_changed_never_panics(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let ecs = Some(("10.2.3.0".parse().unwrap(), 24));
            let mut q = query(3, "svc.example.test.", RecordType::A, Some(1232), ecs);
            for (i, b) in edits {
                let n = q.len();
                q[i % n] = b;
            }
            let keep = 12 + cut % (q.len() - 11);
            q.truncate(keep);
            sane(shared_view(), &q);
        }

        #[test]
        fn queries_built_from_labels_pointers_types_and_classes_never_panic(q in wire_query()) {
            sane(shared_view(), &q);
        }

        /// A well-formed question of any type and class: a clear rcode by
        /// the rules, and `ANY` gets at most one record set (RFC 8482).
        #[test]
        fn any_type_and_class_at_any_name_gets_the_rcode_the_rules_give(
            name in zone_name(),
            qtype in qtype(),
            qclass in qclass(),
            edns in proptest::option::of(512u16..4096),
        ) {
            let mut q = query(21, &name, RecordType::from(qtype), edns, None);
            // The class sits in the question's last two bytes, before any OPT.
            let at = 12 + Name::from_ascii(&name).unwrap().to_bytes().unwrap().len() + 2;
            q[at..at + 2].copy_from_slice(&qclass.to_be_bytes());
            sane(shared_view(), &q);
            let out = respond(shared_view(), &q, "10.1.0.1".parse().unwrap(), Transport::Tcp);
            let m = Message::from_vec(&out.bytes.expect("a well-formed query is answered")).unwrap();
            let rcode = m.metadata.response_code;
            let inside = name.to_ascii_lowercase().ends_with("example.test.");
            let rt = RecordType::from(qtype);
            if qclass != 1 || !inside || matches!(rt, RecordType::AXFR | RecordType::IXFR) {
                prop_assert_eq!(rcode, ResponseCode::Refused, "{} {} class {}", name, rt, qclass);
            } else if rt == RecordType::OPT {
                // OPT is a pseudo-type: never a question's type to answer.
                prop_assert!(matches!(rcode, ResponseCode::FormErr | ResponseCode::NoError | ResponseCode::NXDomain), "{:?}", rcode);
            } else {
                prop_assert!(matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain), "{} {}: {:?}", name, rt, rcode);
                prop_assert!(m.metadata.authoritative);
                let sets: std::collections::BTreeSet<RecordType> =
                    m.answers.iter().map(|r| r.record_type()).collect();
                prop_assert!(sets.len() <= 1, "{} {}: {:?}", name, rt, m.answers);
                if rcode == ResponseCode::NXDomain || m.answers.is_empty() {
                    prop_assert_eq!(m.authorities.len(), 1, "negative answers carry the SOA");
                }
            }
        }
    }
}

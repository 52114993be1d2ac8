//! The embedded server's answers, pure: a raw query and the zone in, the raw answer
//! out (no socket, clock or lock), so the fuzz target and the tests drive exactly
//! what the server sends. hickory-proto reads and writes the wire format.
//!
//! The zone is authoritative for its origin (`svc.mcp.<domain>`): SOA and NS at the
//! apex (the apex is its own name server, with the listen address when it is a
//! specific one), A/AAAA and SRV from the registry's projection with the configured
//! TTL, NODATA for a known name (or an empty non-terminal such as
//! `_tcp.hello.<zone>`) with another type, NXDOMAIN with the SOA for an unknown name,
//! REFUSED outside the zone, SERVFAIL while the zone is not known yet. EDNS(0) is
//! answered with an OPT of our own; over UDP an answer larger than the client's
//! size (512 without EDNS) loses its additional records first, then is sent empty
//! with TC so the client asks again over TCP.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData as WireData, Record, RecordType};

use crate::reconcile::plan::dns::{RData, Zone};

/// The largest UDP answer we send whatever the client says (the DNS flag day's
/// 1232: no fragmentation on any usual path); also what our OPT advertises.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// The smallest size a DNS client must accept over UDP (RFC 1035).
const MIN_UDP_PAYLOAD: u16 = 512;

/// How the query came, which bounds the answer's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What one name of the zone holds (both empty: an empty non-terminal).
#[derive(Debug, Default)]
struct Node {
    addrs: Vec<WireData>,
    srvs: Vec<WireData>,
}

/// The zone ready to answer from: built once per change of the registry's zone,
/// then shared read-only by every query.
#[derive(Debug)]
pub struct ZoneView {
    origin: Name,
    ttl: u32,
    serial: u32,
    soa: Record,
    ns: Record,
    apex_addrs: Vec<WireData>,
    names: HashMap<Name, Node>,
    records: usize,
    /// False until the registry's zone is known: names of the zone get SERVFAIL.
    known: bool,
}

impl ZoneView {
    /// The view of `zone` under `origin` (no trailing dot), with records of `ttl`, the
    /// SOA's `serial`, and `ns_addr` (the server's own address, None when it listens
    /// on an unspecified one) as the apex's address. A record whose name is not a
    /// valid name under the origin is left out (the projection makes none).
    pub fn new(
        zone: &Zone,
        origin: &str,
        ttl: Duration,
        serial: u32,
        ns_addr: Option<IpAddr>,
    ) -> anyhow::Result<ZoneView> {
        let origin = absolute(origin)
            .ok_or_else(|| anyhow::anyhow!("the zone origin {origin:?} is not a DNS name"))?;
        let ttl = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
        let hostmaster = Name::from_ascii("hostmaster")
            .and_then(|h| h.append_domain(&origin))
            .map_err(|e| anyhow::anyhow!("the zone origin {origin}: {e}"))?;
        let soa = Record::from_rdata(
            origin.clone(),
            ttl,
            WireData::SOA(SOA::new(
                origin.clone(),
                hostmaster,
                serial,
                3600,
                600,
                86400,
                ttl,
            )),
        );
        let ns = Record::from_rdata(origin.clone(), ttl, WireData::NS(NS(origin.clone())));
        let apex_addrs = ns_addr.filter(|a| !a.is_unspecified()).map(wire_addr);
        let mut names: HashMap<Name, Node> = HashMap::new();
        let mut records = 0;
        for record in zone {
            let Some(name) = absolute(&record.name).filter(|n| origin.zone_of(n) && *n != origin)
            else {
                continue;
            };
            let data = match &record.data {
                RData::Addr(ip) => wire_addr(*ip),
                RData::Srv { port, target } => {
                    let Some(target) = absolute(target) else {
                        continue;
                    };
                    WireData::SRV(SRV::new(0, 0, *port, target))
                }
            };
            // Every name between this one and the origin exists (empty non-terminals).
            let mut parent = name.base_name();
            while parent.num_labels() > origin.num_labels() {
                names.entry(parent.clone()).or_default();
                parent = parent.base_name();
            }
            let node = names.entry(name).or_default();
            match data {
                WireData::SRV(_) => node.srvs.push(data),
                _ => node.addrs.push(data),
            }
            records += 1;
        }
        Ok(ZoneView {
            origin,
            ttl,
            serial,
            soa,
            ns,
            apex_addrs: apex_addrs.into_iter().collect(),
            names,
            records,
            known: true,
        })
    }

    /// The view before the zone is known (after a master start, until the fleet
    /// settled): names of the zone get SERVFAIL, never an NXDOMAIN a resolver would
    /// cache; others still REFUSED.
    pub fn pending(origin: &str) -> anyhow::Result<ZoneView> {
        let mut view = ZoneView::new(&Zone::new(), origin, Duration::from_secs(1), 0, None)?;
        view.known = false;
        Ok(view)
    }

    /// Known (not [`ZoneView::pending`]).
    pub fn is_known(&self) -> bool {
        self.known
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// How many of the registry's records it answers with.
    pub fn len(&self) -> usize {
        self.records
    }

    /// No record besides SOA and NS.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }
}

/// The serial for a zone that changed: unix seconds, one past the last one when two
/// changes fall in one second, so it only grows, also across restarts of the master
/// (unless it changed more than once a second on average before the restart).
pub fn next_serial(previous: Option<u32>, unix_seconds: u64) -> u32 {
    let now = u32::try_from(unix_seconds).unwrap_or(u32::MAX);
    match previous {
        Some(p) => now.max(p.saturating_add(1)),
        None => now,
    }
}

/// `name` as an absolute, lowercase DNS name, or None when it is not one.
fn absolute(name: &str) -> Option<Name> {
    let name = name.strip_suffix('.').unwrap_or(name);
    Name::from_ascii(format!("{name}."))
        .ok()
        .map(|n| n.to_lowercase())
}

fn wire_addr(ip: IpAddr) -> WireData {
    match ip {
        IpAddr::V4(v4) => WireData::A(A(v4)),
        IpAddr::V6(v6) => WireData::AAAA(AAAA(v6)),
    }
}

/// The answer to the raw `query`, or None when nothing should be sent (too short to
/// carry a header, or itself a response: never answer an answer).
pub fn answer(query: &[u8], zone: &ZoneView, transport: Transport) -> Option<Vec<u8>> {
    let header: &[u8; 12] = query.get(..12)?.try_into().ok()?;
    if header[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([header[0], header[1]]);
    let op_code = OpCode::from_u8((header[2] >> 3) & 0x0f);
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => {
            let mut resp = Message::error_msg(id, op_code, ResponseCode::FormErr);
            resp.metadata.recursion_desired = header[2] & 0x01 != 0;
            return encode(&mut resp, Some(MIN_UDP_PAYLOAD));
        }
    };
    let mut resp = Message::response(id, request.op_code);
    resp.metadata.recursion_desired = request.recursion_desired;
    // The question is echoed only when there is exactly one (else FORMERR below,
    // which must not grow with the number of questions).
    if request.queries.len() == 1 {
        resp.add_queries(request.queries.iter().cloned());
    }
    let limit = match transport {
        Transport::Tcp => None,
        Transport::Udp => Some(request.edns.as_ref().map_or(MIN_UDP_PAYLOAD, |e| {
            e.max_payload().clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
        })),
    };
    if let Some(theirs) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(MAX_UDP_PAYLOAD);
        ours.set_dnssec_ok(theirs.flags().dnssec_ok);
        resp.set_edns(ours);
        if theirs.version() > 0 {
            resp.metadata.response_code = ResponseCode::BADVERS;
            return encode(&mut resp, limit);
        }
    }
    let code = respond(&request, &mut resp, zone);
    resp.metadata.response_code = code;
    encode(&mut resp, limit)
}

/// Fills the sections of `resp` and returns its RCODE.
fn respond(request: &Message, resp: &mut Message, zone: &ZoneView) -> ResponseCode {
    if request.op_code != OpCode::Query {
        return ResponseCode::NotImp;
    }
    let [query] = request.queries.as_slice() else {
        return ResponseCode::FormErr;
    };
    if query.query_class() != DNSClass::IN {
        return ResponseCode::Refused;
    }
    let qname = query.name();
    if !zone.origin.zone_of(qname) {
        return ResponseCode::Refused;
    }
    if !zone.known {
        return ResponseCode::ServFail;
    }
    resp.metadata.authoritative = true;
    let qtype = query.query_type();
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return ResponseCode::Refused;
    }
    let found = if *qname == zone.origin {
        apex(zone, query, resp);
        true
    } else if let Some(node) = zone.names.get(qname) {
        let wanted = |d: &&WireData| qtype == RecordType::ANY || d.record_type() == qtype;
        for data in node.addrs.iter().chain(&node.srvs).filter(wanted) {
            resp.add_answer(Record::from_rdata(qname.clone(), zone.ttl, data.clone()));
        }
        // The address of each SRV target, as additional data.
        if qtype == RecordType::SRV || qtype == RecordType::ANY {
            let mut targets: Vec<&Name> = node
                .srvs
                .iter()
                .filter_map(|d| match d {
                    WireData::SRV(s) => Some(&s.target),
                    _ => None,
                })
                .collect();
            targets.dedup();
            for target in targets {
                if let Some(t) = zone.names.get(target) {
                    for data in &t.addrs {
                        resp.add_additional(Record::from_rdata(
                            target.clone(),
                            zone.ttl,
                            data.clone(),
                        ));
                    }
                }
            }
        }
        true
    } else {
        false
    };
    if resp.answers.is_empty() {
        resp.add_authority(zone.soa.clone());
    }
    if found {
        ResponseCode::NoError
    } else {
        ResponseCode::NXDomain
    }
}

/// The apex: SOA, NS and the server's own address.
fn apex(zone: &ZoneView, query: &Query, resp: &mut Message) {
    let qtype = query.query_type();
    let any = qtype == RecordType::ANY;
    let owner = query.name().clone();
    if any || qtype == RecordType::SOA {
        let mut soa = zone.soa.clone();
        soa.name = owner.clone();
        resp.add_answer(soa);
    }
    if any || qtype == RecordType::NS {
        let mut ns = zone.ns.clone();
        ns.name = owner.clone();
        resp.add_answer(ns);
        if !any {
            for data in &zone.apex_addrs {
                resp.add_additional(Record::from_rdata(
                    zone.origin.clone(),
                    zone.ttl,
                    data.clone(),
                ));
            }
        }
    }
    for data in zone
        .apex_addrs
        .iter()
        .filter(|d| any || d.record_type() == qtype)
    {
        resp.add_answer(Record::from_rdata(owner.clone(), zone.ttl, data.clone()));
    }
}

/// The wire form of `resp` within `limit` bytes (None: TCP's 65535): without its
/// additional records if only they overflow, else truncated (TC, the question and
/// OPT only).
fn encode(resp: &mut Message, limit: Option<u16>) -> Option<Vec<u8>> {
    let limit = usize::from(limit.unwrap_or(u16::MAX));
    if let Ok(bytes) = resp.to_vec() {
        if bytes.len() <= limit {
            return Some(bytes);
        }
    }
    if !resp.additionals.is_empty() {
        resp.additionals.clear();
        if let Ok(bytes) = resp.to_vec() {
            if bytes.len() <= limit {
                return Some(bytes);
            }
        }
    }
    resp.answers.clear();
    resp.authorities.clear();
    resp.metadata.truncation = true;
    resp.metadata.message_type = MessageType::Response;
    if let Some(bytes) = resp.to_vec().ok().filter(|b| b.len() <= limit) {
        return Some(bytes);
    }
    // Not even the question fits: the header (and OPT) alone always do.
    resp.queries.clear();
    resp.to_vec().ok().filter(|b| b.len() <= limit)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn view() -> ZoneView {
        let zone: Zone = [crate::reconcile::plan::dns::DnsRecord {
            name: "hello.svc.mcp.example.net".into(),
            data: RData::Addr("10.0.0.2".parse().unwrap()),
        }]
        .into();
        ZoneView::new(
            &zone,
            "svc.mcp.example.net",
            Duration::from_secs(30),
            7,
            None,
        )
        .unwrap()
    }

    #[test]
    fn garbage_gets_formerr_or_nothing() {
        let v = view();
        assert_eq!(answer(&[], &v, Transport::Udp), None);
        assert_eq!(answer(&[0; 11], &v, Transport::Udp), None);
        // A response (QR set) is never answered.
        let mut q = [0u8; 12];
        q[2] = 0x80;
        assert_eq!(answer(&q, &v, Transport::Udp), None);
        // A header announcing a question that is not there: FORMERR, same id.
        let q = [0xab, 0xcd, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let m = Message::from_vec(&answer(&q, &v, Transport::Udp).unwrap()).unwrap();
        assert_eq!(m.id, 0xabcd);
        assert_eq!(m.response_code, ResponseCode::FormErr);
        assert_eq!(m.message_type, MessageType::Response);
        // No question at all: FORMERR.
        let q = [0xab, 0xcd, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let m = Message::from_vec(&answer(&q, &v, Transport::Udp).unwrap()).unwrap();
        assert_eq!(m.response_code, ResponseCode::FormErr);
        // Another opcode (NOTIFY): NOTIMP.
        let mut n = Message::query();
        n.metadata.op_code = OpCode::Notify;
        n.add_query(Query::query(
            Name::from_ascii("svc.mcp.example.net.").unwrap(),
            RecordType::SOA,
        ));
        let m =
            Message::from_vec(&answer(&n.to_vec().unwrap(), &v, Transport::Udp).unwrap()).unwrap();
        assert_eq!(m.response_code, ResponseCode::NotImp);
        // Another class (CH, version.bind): REFUSED.
        let mut c = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
        c.set_query_class(DNSClass::CH);
        let mut ch = Message::query();
        ch.add_query(c);
        let m =
            Message::from_vec(&answer(&ch.to_vec().unwrap(), &v, Transport::Udp).unwrap()).unwrap();
        assert_eq!(m.response_code, ResponseCode::Refused);
    }

    #[test]
    fn many_questions_get_a_formerr_that_fits() {
        // Found by the fuzzer: 43 questions, echoed, overflowed 512 bytes even
        // truncated, and the query went unanswered.
        let mut m = Message::query();
        for i in 0..43 {
            m.add_query(Query::query(
                Name::from_ascii(format!("name-{i}-with-some-length.svc.mcp.example.net."))
                    .unwrap(),
                RecordType::A,
            ));
        }
        let out = answer(&m.to_vec().unwrap(), &view(), Transport::Udp).unwrap();
        assert!(out.len() <= 512);
        let reply = Message::from_vec(&out).unwrap();
        assert_eq!(reply.response_code, ResponseCode::FormErr);
        assert!(reply.queries.is_empty());
    }

    #[test]
    fn serials_only_grow() {
        assert_eq!(next_serial(None, 1_700_000_000), 1_700_000_000);
        assert_eq!(
            next_serial(Some(1_700_000_000), 1_700_000_000),
            1_700_000_001
        );
        assert_eq!(
            next_serial(Some(1_700_000_005), 1_700_000_001),
            1_700_000_006
        );
        assert_eq!(next_serial(Some(5), 1_700_000_000), 1_700_000_000);
        assert_eq!(view().serial(), 7);
        assert_eq!(view().len(), 1);
        assert!(!ZoneView::pending("svc.mcp.example.net").unwrap().is_known());
    }
}

//! One query in, one answer out: names under the cluster domain (and
//! reverse names of cluster addresses) from the [`Zone`], everything else
//! marked for forwarding. Messages are parsed and written by hickory-proto.

use std::net::Ipv4Addr;
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::zone::{Lookup, Rec, Zone};

/// The TTL of cluster answers (CoreDNS's kubernetes plugin's default).
pub const TTL: u32 = 5;

/// What to do with a query.
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not ours: forward it (the parsed query, for the cache key).
    Forward(Message),
    /// Unparseable: no answer at all.
    Drop,
}

/// Answers `packet` from `zone`; `max_len` is what the transport carries
/// (512 for UDP without EDNS), beyond which the answer is truncated.
pub fn answer(packet: &[u8], zone: &Zone, udp: bool) -> Outcome {
    let Ok(query) = Message::from_vec(packet) else {
        // A header we can read gets FORMERR; less than that, nothing.
        if packet.len() >= 2 {
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            return encode(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr), 512).map_or(Outcome::Drop, Outcome::Reply);
        }
        return Outcome::Drop;
    };
    let max_len = if udp { query.edns.as_ref().map_or(512, |e| e.max_payload().max(512)) as usize } else { u16::MAX as usize };
    let mut resp = Message::response(query.metadata.id, query.metadata.op_code);
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    if query.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        resp.set_edns(e);
    }
    let q = match (query.metadata.op_code, query.queries.as_slice()) {
        (OpCode::Query, [q]) => q.clone(),
        (OpCode::Query, _) => return reply(resp, ResponseCode::FormErr, max_len),
        _ => return reply(resp, ResponseCode::NotImp, max_len),
    };
    resp.add_query(q.clone());
    if q.query_class() != DNSClass::IN {
        return Outcome::Forward(query);
    }
    let name = q.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
    match zone.lookup(&name) {
        Lookup::NotOurs => Outcome::Forward(query),
        Lookup::NxDomain => {
            resp.metadata.authoritative = true;
            resp.add_authority(soa(zone));
            reply(resp, ResponseCode::NXDomain, max_len)
        }
        Lookup::Empty => {
            resp.metadata.authoritative = true;
            resp.add_authority(soa(zone));
            reply(resp, ResponseCode::NoError, max_len)
        }
        Lookup::Pod(ip) => {
            resp.metadata.authoritative = true;
            if q.query_type() == RecordType::A || q.query_type() == RecordType::ANY {
                resp.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
            } else {
                resp.add_authority(soa(zone));
            }
            reply(resp, ResponseCode::NoError, max_len)
        }
        Lookup::Found(recs) => {
            resp.metadata.authoritative = true;
            let qt = q.query_type();
            let mut any = false;
            for r in recs {
                let (rt, data) = match r {
                    Rec::A(ip) => (RecordType::A, RData::A(A(*ip))),
                    Rec::Cname(t) => (RecordType::CNAME, RData::CNAME(CNAME(fqdn(t)))),
                    Rec::Srv { port, target } => (RecordType::SRV, RData::SRV(SRV::new(0, 100, *port, fqdn(target)))),
                    Rec::Ptr(t) => (RecordType::PTR, RData::PTR(PTR(fqdn(t)))),
                };
                // A CNAME answers every type, as an alias does.
                if rt == qt || qt == RecordType::ANY || rt == RecordType::CNAME {
                    resp.add_answer(Record::from_rdata(q.name().clone(), TTL, data));
                    any = true;
                }
                // SRV targets' addresses go along, as CoreDNS adds them.
                if let (true, Rec::Srv { target, .. }) = (qt == RecordType::SRV, r) {
                    if let Lookup::Found(targets) = zone.lookup(target) {
                        for t in targets {
                            if let Rec::A(ip) = t {
                                resp.add_additional(Record::from_rdata(fqdn(target), TTL, RData::A(A(*ip))));
                            }
                        }
                    }
                }
            }
            if !any {
                resp.add_authority(soa(zone));
            }
            reply(resp, ResponseCode::NoError, max_len)
        }
    }
}

fn fqdn(name: &str) -> Name {
    Name::from_str(&format!("{name}.")).unwrap_or_else(|_| Name::root())
}

/// The zone's SOA, as CoreDNS writes it (its minimum is the negative TTL).
fn soa(zone: &Zone) -> Record {
    let origin = fqdn(&zone.domain);
    let data = SOA::new(fqdn(&format!("ns.dns.{}", zone.domain)), fqdn(&format!("hostmaster.{}", zone.domain)), 1, 7200, 1800, 86400, TTL);
    Record::from_rdata(origin, TTL, RData::SOA(data))
}

fn reply(mut resp: Message, code: ResponseCode, max_len: usize) -> Outcome {
    resp.metadata.response_code = code;
    resp.metadata.message_type = MessageType::Response;
    encode(resp, max_len).map_or(Outcome::Drop, Outcome::Reply)
}

/// Encodes `m`; over `max_len`, the records are dropped and TC set, so
/// the client asks again over TCP.
fn encode(mut m: Message, max_len: usize) -> Option<Vec<u8>> {
    let bytes = m.to_vec().ok()?;
    if bytes.len() <= max_len {
        return Some(bytes);
    }
    m.answers.clear();
    m.additionals.clear();
    m.authorities.clear();
    m.metadata.truncation = true;
    m.to_vec().ok()
}

/// A query for `name` and `rtype` (for tests and the benchmark client).
pub fn query(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(fqdn(name), rtype));
    m.to_vec().unwrap_or_default()
}

/// The addresses in an answer (for tests and the benchmark client).
pub fn addresses(packet: &[u8]) -> (ResponseCode, Vec<Ipv4Addr>) {
    match Message::from_vec(packet) {
        Ok(m) => (
            m.metadata.response_code,
            m.answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect(),
        ),
        Err(_) => (ResponseCode::FormErr, Vec::new()),
    }
}

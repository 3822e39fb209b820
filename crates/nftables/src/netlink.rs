//! nf_tables over netlink: a [`Transaction`] encoded as one nfnetlink batch
//! (`BATCH_BEGIN`, its messages, `BATCH_END`), sent in one `sendmsg`, which
//! the kernel checks and commits as a whole. Attribute numbers and values
//! are those of `<linux/netfilter/nf_tables.h>`; set descriptions carry the
//! user data nft writes, so `nft list` prints the sets as nft declared them.

use std::io;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::rule::{Expr, MetaKey, Verdict};
use super::{Element, NftError, Op, SetKind, Transaction};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_IPV4: u8 = 2;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 0x2;

// Message types (NFT_MSG_*).
const NEWTABLE: u16 = 0;
const DELTABLE: u16 = 2;
const NEWCHAIN: u16 = 3;
const DELCHAIN: u16 = 5;
const NEWRULE: u16 = 6;
const DELRULE: u16 = 8;
const NEWSET: u16 = 9;
const DELSET: u16 = 11;
const NEWSETELEM: u16 = 12;
const DELSETELEM: u16 = 14;

// nft's data type numbers (its `enum datatypes`), six bits each in a concatenation.
const TYPE_INTEGER: u32 = 4;
const TYPE_IPADDR: u32 = 7;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

// Set flags.
const SET_MAP: u32 = 0x8;
const SET_TIMEOUT: u32 = 0x10;
const SET_EVAL: u32 = 0x20;

// Verdict codes.
const NF_DROP: i32 = 0;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

/// A netlink message under construction, with a stack of open nests.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in `finish`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
        buf.extend_from_slice(&[family, 0]); // nfgenmsg: family, version 0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Self { buf, nests: Vec::new() }
    }

    fn nft(kind: u16, flags: u16, seq: u32) -> Self {
        Self::new((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, seq, NFPROTO_IPV4, 0)
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(kind, &v)
    }

    fn u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_be_bytes())
    }

    fn begin(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// `nft_data` holding a value.
    fn value(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        self.begin(kind).attr(1, data).end()
    }

    fn verdict(&mut self, kind: u16, v: &Verdict) -> &mut Self {
        let (code, chain) = match v {
            Verdict::Jump(c) => (NFT_JUMP, Some(c)),
            Verdict::Goto(c) => (NFT_GOTO, Some(c)),
            Verdict::Drop => (NF_DROP, None),
            Verdict::Return => (NFT_RETURN, None),
        };
        self.begin(kind).begin(2).u32(1, code as u32);
        if let Some(c) = chain {
            self.str(2, c);
        }
        self.end().end()
    }

    fn finish(mut self, out: &mut Vec<u8>) {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&self.buf);
    }
}

/// Where an element message is closed (an element adds at most ~400 bytes).
const MESSAGE_BYTES: usize = 48 * 1024;

/// The batch for `tx`, and for each message after `BATCH_BEGIN` the index
/// of the operation it came from.
fn encode(tx: &Transaction) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(tx.ops.len() * 160);
    let mut origin = Vec::with_capacity(tx.ops.len());
    let mut seq = 0u32;
    Msg::new(NFNL_MSG_BATCH_BEGIN, 0, seq, 0, NFNL_SUBSYS_NFTABLES).finish(&mut out);
    let t = tx.table.as_str();
    for (i, op) in tx.ops.iter().enumerate() {
        let mut msgs: Vec<Msg> = Vec::with_capacity(1);
        let mut next = |kind: u16, flags: u16| {
            seq += 1;
            Msg::nft(kind, flags, seq)
        };
        match op {
            Op::AddTable => {
                let mut m = next(NEWTABLE, NLM_F_CREATE);
                m.str(1, t).u32(2, 0);
                msgs.push(m);
            }
            Op::DeleteTable => {
                let mut m = next(DELTABLE, 0);
                m.str(1, t);
                msgs.push(m);
            }
            Op::AddChain { name, hook } => {
                let mut m = next(NEWCHAIN, NLM_F_CREATE);
                m.str(1, t).str(3, name);
                if let Some(h) = hook {
                    m.begin(4).u32(1, h.hook as u32).u32(2, h.priority as u32).end();
                    m.str(7, if h.nat { "nat" } else { "filter" });
                }
                msgs.push(m);
            }
            Op::FlushChain(name) => {
                let mut m = next(DELRULE, 0);
                m.str(1, t).str(2, name);
                msgs.push(m);
            }
            Op::DeleteChain(name) => {
                let mut m = next(DELCHAIN, 0);
                m.str(1, t).str(3, name);
                msgs.push(m);
            }
            Op::AddRule { chain, rule } => {
                let mut m = next(NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
                m.str(1, t).str(2, chain).begin(4);
                for e in rule.exprs() {
                    m.begin(1);
                    expr(&mut m, e);
                    m.end();
                }
                m.end();
                msgs.push(m);
            }
            Op::AddSet { name, kind } => {
                let mut m = next(NEWSET, NLM_F_CREATE);
                set(&mut m, t, name, *kind, i as u32 + 1);
                msgs.push(m);
            }
            Op::DeleteSet { name, .. } => {
                let mut m = next(DELSET, 0);
                m.str(1, t).str(2, name);
                msgs.push(m);
            }
            Op::AddElements { set, elements } | Op::DeleteElements { set, elements } => {
                let (kind, flags) = if matches!(op, Op::AddElements { .. }) { (NEWSETELEM, NLM_F_CREATE) } else { (DELSETELEM, 0) };
                // Messages of at most ~48 KiB: the element list is one
                // attribute, whose length is 16 bits.
                let mut rest = elements.iter().peekable();
                while rest.peek().is_some() {
                    let mut m = next(kind, flags);
                    m.str(1, t).str(2, set).begin(3);
                    while let Some(e) = rest.next_if(|_| m.buf.len() < MESSAGE_BYTES) {
                        m.begin(1);
                        element(&mut m, e);
                        m.end();
                    }
                    m.end();
                    msgs.push(m);
                }
            }
        }
        for m in msgs {
            m.finish(&mut out);
            origin.push(i);
        }
    }
    seq += 1;
    Msg::new(NFNL_MSG_BATCH_END, 0, seq, 0, NFNL_SUBSYS_NFTABLES).finish(&mut out);
    (out, origin)
}

fn expr(m: &mut Msg, e: &Expr) {
    let name = |m: &mut Msg, n: &str| {
        m.str(1, n).begin(2);
    };
    match e {
        Expr::Payload { base, offset, len, dreg } => {
            name(m, "payload");
            m.u32(1, *dreg).u32(2, *base as u32).u32(3, *offset).u32(4, *len);
        }
        Expr::Meta { key, dreg } => {
            name(m, "meta");
            m.u32(2, *key as u32).u32(1, *dreg);
        }
        Expr::MetaSet { key, sreg } => {
            name(m, "meta");
            m.u32(2, *key as u32).u32(3, *sreg);
        }
        Expr::Ct { key, dreg } => {
            name(m, "ct");
            m.u32(1, *dreg).u32(2, *key as u32);
        }
        Expr::Cmp { sreg, neq, data } => {
            name(m, "cmp");
            m.u32(1, *sreg).u32(2, u32::from(*neq)).value(3, data);
        }
        Expr::Bitwise { sreg, dreg, mask, xor } => {
            name(m, "bitwise");
            m.u32(1, *sreg).u32(2, *dreg).u32(3, mask.len() as u32).value(4, mask).value(5, xor);
        }
        Expr::Lookup { set, sreg, dreg } => {
            name(m, "lookup");
            m.str(1, set).u32(2, *sreg);
            if let Some(d) = dreg {
                m.u32(3, *d);
            }
        }
        Expr::DynsetUpdate { set, sreg } => {
            name(m, "dynset");
            m.str(1, set).u32(3, 1).u32(4, *sreg);
        }
        Expr::Immediate { dreg, data } => {
            name(m, "immediate");
            m.u32(1, *dreg).value(2, data);
        }
        Expr::Verdict(v) => {
            name(m, "immediate");
            m.u32(1, super::rule::VERDICT).verdict(2, v);
        }
        Expr::Numgen { dreg, modulus } => {
            name(m, "numgen");
            m.u32(1, *dreg).u32(2, *modulus).u32(3, 1).u32(4, 0);
        }
        Expr::FibType { saddr, dreg } => {
            name(m, "fib");
            m.u32(1, *dreg).u32(2, 3).u32(3, if *saddr { 1 } else { 2 });
        }
        Expr::Dnat { addr, port, flags } => {
            name(m, "nat");
            m.u32(1, 1).u32(2, u32::from(NFPROTO_IPV4)).u32(3, *addr).u32(5, *port);
            if *flags != 0 {
                m.u32(7, *flags);
            }
        }
        Expr::Masquerade { flags } => {
            name(m, "masq");
            if *flags != 0 {
                m.u32(1, *flags);
            }
        }
        Expr::Reject { tcp_reset } => {
            name(m, "reject");
            let (kind, code) = if *tcp_reset { (1, 0) } else { (0, 3) };
            m.u32(1, kind).attr(2, &[code]);
        }
    }
    m.end();
}

/// A concatenation's type number.
fn concat(types: &[u32]) -> u32 {
    types.iter().fold(0, |acc, t| (acc << 6) | t)
}

/// A set's description; `id` names it within the transaction (the kernel
/// requires one).
fn set(m: &mut Msg, table: &str, name: &str, kind: SetKind, id: u32) {
    m.str(1, table).str(2, name);
    let (flags, key_type, key_len, data): (u32, u32, u32, Option<(u32, u32)>) = match kind {
        SetKind::ServiceVerdicts => {
            (SET_MAP, concat(&[TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]), 12, Some((NFT_DATA_VERDICT, 0)))
        }
        SetKind::PortVerdicts => (SET_MAP, concat(&[TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]), 8, Some((NFT_DATA_VERDICT, 0))),
        SetKind::Addresses | SetKind::Affinity { .. } => (0, TYPE_IPADDR, 4, None),
        SetKind::AddressPairs => (0, concat(&[TYPE_IPADDR, TYPE_IPADDR]), 8, None),
        SetKind::Endpoints => (
            SET_MAP,
            concat(&[TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE, TYPE_INTEGER]),
            16,
            Some((concat(&[TYPE_IPADDR, TYPE_INET_SERVICE]), 8)),
        ),
    };
    let flags = match kind {
        SetKind::Affinity { .. } => flags | SET_TIMEOUT | SET_EVAL,
        _ => flags,
    };
    m.u32(3, flags).u32(4, key_type).u32(5, key_len);
    if let Some((t, l)) = data {
        m.u32(6, t).u32(7, l);
    }
    m.u32(10, id);
    if let SetKind::Affinity { timeout } = kind {
        m.attr(11, &(u64::from(timeout) * 1000).to_be_bytes());
    }
    m.attr(13, &set_userdata(kind));
}

/// The set's user data as nft 1.0 writes it: the key's (and a map's
/// data's) byte order, and for `typeof` sets the expressions that
/// describe the key and data, which `nft list` prints.
fn set_userdata(kind: SetKind) -> Vec<u8> {
    // Type-length-value, one byte each for type and length.
    fn tlv(out: &mut Vec<u8>, t: u8, v: &[u8]) {
        out.push(t);
        out.push(v.len() as u8);
        out.extend_from_slice(v);
    }
    fn u32v(out: &mut Vec<u8>, t: u8, v: u32) {
        tlv(out, t, &v.to_ne_bytes());
    }
    // An expression in a `typeof`: its kind and its own description.
    fn typeof_expr(out: &mut Vec<u8>, index: u8, kind: u32, fields: &[u32]) {
        let mut inner = Vec::new();
        u32v(&mut inner, 0, kind);
        let mut data = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            u32v(&mut data, i as u8, *f);
        }
        tlv(&mut inner, 1, &data);
        tlv(out, index, &inner);
    }
    // A concatenation of `parts` (kind, fields).
    fn typeof_concat(parts: &[(u32, &[u32])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (i, (kind, fields)) in parts.iter().enumerate() {
            typeof_expr(&mut list, i as u8, *kind, fields);
        }
        let mut out = Vec::new();
        u32v(&mut out, 0, EXPR_CONCAT);
        tlv(&mut out, 1, &list);
        out
    }
    const BYTEORDER_INVALID: u32 = 0;
    const BYTEORDER_BIG: u32 = 2;
    const EXPR_PAYLOAD: u32 = 7;
    const EXPR_META: u32 = 9;
    const EXPR_CONCAT: u32 = 13;
    const EXPR_NUMGEN: u32 = 23;
    const PROTO_IP: u32 = 12;
    const PROTO_TH: u32 = 11;
    const IP_DADDR_FIELD: u32 = 12;
    const TH_DPORT_FIELD: u32 = 2;
    let mut out = Vec::new();
    match kind {
        // nft describes a `type` concatenation as an empty `typeof` one.
        SetKind::ServiceVerdicts | SetKind::PortVerdicts => {
            u32v(&mut out, 0, BYTEORDER_INVALID);
            u32v(&mut out, 1, BYTEORDER_INVALID);
            tlv(&mut out, 3, &typeof_concat(&[]));
            u32v(&mut out, 6, 0);
        }
        SetKind::AddressPairs => {
            u32v(&mut out, 0, BYTEORDER_INVALID);
            tlv(&mut out, 3, &typeof_concat(&[]));
        }
        SetKind::Addresses | SetKind::Affinity { .. } => u32v(&mut out, 0, BYTEORDER_BIG),
        SetKind::Endpoints => {
            u32v(&mut out, 0, BYTEORDER_INVALID);
            u32v(&mut out, 1, BYTEORDER_INVALID);
            let daddr: (u32, &[u32]) = (EXPR_PAYLOAD, &[PROTO_IP, IP_DADDR_FIELD]);
            let dport: (u32, &[u32]) = (EXPR_PAYLOAD, &[PROTO_TH, TH_DPORT_FIELD]);
            let l4proto: (u32, &[u32]) = (EXPR_META, &[MetaKey::L4proto as u32]);
            let numgen: (u32, &[u32]) = (EXPR_NUMGEN, &[1, 1, 0]);
            tlv(&mut out, 3, &typeof_concat(&[daddr, l4proto, dport, numgen]));
            tlv(&mut out, 4, &typeof_concat(&[daddr, dport]));
            u32v(&mut out, 6, 0);
        }
    }
    out
}

fn element(m: &mut Msg, e: &Element) {
    fn word(v: &[u8]) -> [u8; 4] {
        let mut w = [0u8; 4];
        w[..v.len()].copy_from_slice(v);
        w
    }
    let mut key = Vec::with_capacity(16);
    match e {
        Element::Service { ip, proto, port, verdict } => {
            key.extend_from_slice(&ip.octets());
            key.extend_from_slice(&word(&[proto.number()]));
            key.extend_from_slice(&word(&port.to_be_bytes()));
            m.value(1, &key).verdict(2, verdict);
        }
        Element::Port { proto, port, verdict } => {
            key.extend_from_slice(&word(&[proto.number()]));
            key.extend_from_slice(&word(&port.to_be_bytes()));
            m.value(1, &key).verdict(2, verdict);
        }
        Element::Address(ip) => {
            m.value(1, &ip.octets());
        }
        Element::AddressPair(a, b) => {
            key.extend_from_slice(&a.octets());
            key.extend_from_slice(&b.octets());
            m.value(1, &key);
        }
        Element::Endpoint { ip, proto, port, bucket, to_ip, to_port } => {
            key.extend_from_slice(&ip.octets());
            key.extend_from_slice(&word(&[proto.number()]));
            key.extend_from_slice(&word(&port.to_be_bytes()));
            key.extend_from_slice(&bucket.to_ne_bytes());
            let mut data = to_ip.octets().to_vec();
            data.extend_from_slice(&word(&to_port.to_be_bytes()));
            m.value(1, &key).value(2, &data);
        }
    }
}

/// Sends `tx` as one batch and waits for the kernel's answer.
pub fn apply(tx: &Transaction) -> Result<(), NftError> {
    if tx.ops.is_empty() {
        return Ok(());
    }
    let (batch, origin) = encode(tx);
    let last = origin.len() as u32; // the last message's sequence number
    // Only the last message asks for an acknowledgement; a refused one is
    // answered whether asked or not, before it. Mark it.
    let mut batch = batch;
    set_ack_on(&mut batch, last);
    let sock = socket(batch.len())?;
    send(&sock, &batch)?;
    let mut first_error: Option<NftError> = None;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match sock.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
                return Err(first_error.unwrap_or_else(|| NftError::Io(io::Error::new(io::ErrorKind::TimedOut, "no answer from nftables in time"))));
            }
            Err(e) => return Err(e.into()),
        };
        for (kind, body) in messages(&buf[..n]) {
            // An error message: the code, then the header of the message it answers.
            if kind != NLMSG_ERROR || body.len() < 4 + 16 {
                continue;
            }
            let code = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
            let seq = u32::from_ne_bytes([body[12], body[13], body[14], body[15]]);
            if code != 0 && first_error.is_none() {
                let op = seq.checked_sub(1).and_then(|i| origin.get(i as usize)).map_or_else(|| "the batch".to_string(), |&i| tx.op_text(&tx.ops[i]));
                first_error = Some(NftError::Refused { op, error: io::Error::from_raw_os_error(-code) });
            }
            // After a refused batch header nothing else comes.
            if seq == last || (seq == 0 && code != 0) {
                return first_error.map_or(Ok(()), Err);
            }
        }
    }
}

/// A netfilter netlink socket that can send `size` bytes in one datagram
/// (root may exceed the system's maximum, as nft does) and gives up
/// waiting for an answer after [`ANSWER_TIMEOUT`].
fn socket(size: usize) -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    let size = size + 4096;
    setsockopt(&sock, sockopt::SndBufForce, &size).or_else(|_| setsockopt(&sock, sockopt::SndBuf, &size)).map_err(io::Error::from)?;
    setsockopt(&sock, sockopt::RcvBufForce, &(1 << 20)).or_else(|_| setsockopt(&sock, sockopt::RcvBuf, &(1 << 20))).map_err(io::Error::from)?;
    setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0)).map_err(io::Error::from)?;
    Ok(sock)
}

fn send(sock: &Socket, data: &[u8]) -> io::Result<()> {
    let sent = sock.send(data, 0)?;
    if sent != data.len() {
        return Err(io::Error::other(format!("sent {sent} of {} bytes", data.len())));
    }
    Ok(())
}

/// The messages in a received datagram: (type, its bytes after the
/// netlink header).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + 16 > buf.len() {
            return None;
        }
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if len < 16 || at + len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        let body = &buf[at + 16..at + len];
        at += (len + 3) & !3;
        Some((kind, body))
    })
}

/// An attribute of an nf_tables message body (after its 4-byte nfgenmsg).
fn attribute(body: &[u8], kind: u16) -> Option<&[u8]> {
    let mut at = 4;
    while at + 4 <= body.len() {
        let len = u16::from_ne_bytes([body[at], body[at + 1]]) as usize;
        let t = u16::from_ne_bytes([body[at + 2], body[at + 3]]) & 0x3fff;
        if len < 4 || at + len > body.len() {
            return None;
        }
        if t == kind {
            return Some(&body[at + 4..at + len]);
        }
        at += (len + 3) & !3;
    }
    None
}

/// What a quick look at a table finds (see [`look`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLook {
    /// The kernel's handle for the table: a new one if it was deleted and
    /// made again.
    pub handle: u64,
    /// How many chains it holds.
    pub chains: u32,
    /// How many rules the chain asked about holds.
    pub rules: u32,
}

/// Looks at `table`, and counts the rules of its `chain`, with two small
/// requests (no rule or element is read): `None` when the table is gone.
pub fn look(table: &str, chain: &str) -> Result<Option<TableLook>, NftError> {
    const GETTABLE: u16 = 1;
    const GETRULE: u16 = 7;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_DONE: u16 = 3;
    let sock = socket(4096)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut out = Vec::new();
    let mut m = Msg::nft(GETTABLE, NLM_F_ACK, 1);
    m.str(1, table);
    m.finish(&mut out);
    send(&sock, &out)?;
    let mut found: Option<(u64, u32)> = None;
    'table: loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        for (kind, body) in messages(&buf[..n]) {
            if kind == NLMSG_ERROR {
                let code = body.get(..4).map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                match code {
                    0 => break 'table,
                    c if -c == nix::errno::Errno::ENOENT as i32 => return Ok(None),
                    c => return Err(NftError::Refused { op: format!("list table ip {table}"), error: io::Error::from_raw_os_error(-c) }),
                }
            }
            let be = |v: &[u8]| v.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            let handle = attribute(body, 4).map_or(0, be);
            let chains = attribute(body, 3).map_or(0, be) as u32;
            found = Some((handle, chains));
        }
    }
    let Some((handle, chains)) = found else { return Ok(None) };
    out.clear();
    let mut m = Msg::nft(GETRULE, NLM_F_DUMP, 2);
    m.str(1, table).str(2, chain);
    m.finish(&mut out);
    send(&sock, &out)?;
    let mut rules = 0;
    loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        for (kind, _) in messages(&buf[..n]) {
            match kind {
                NLMSG_DONE | NLMSG_ERROR => return Ok(Some(TableLook { handle, chains, rules })),
                _ => rules += 1,
            }
        }
    }
}

/// Sets `NLM_F_ACK` on the message with sequence number `seq`.
fn set_ack_on(batch: &mut [u8], seq: u32) {
    let mut at = 0;
    while at + 16 <= batch.len() {
        let len = u32::from_ne_bytes([batch[at], batch[at + 1], batch[at + 2], batch[at + 3]]) as usize;
        if u32::from_ne_bytes([batch[at + 8], batch[at + 9], batch[at + 10], batch[at + 11]]) == seq {
            let flags = u16::from_ne_bytes([batch[at + 6], batch[at + 7]]) | NLM_F_ACK;
            batch[at + 6..at + 8].copy_from_slice(&flags.to_ne_bytes());
            return;
        }
        if len == 0 {
            return;
        }
        at += len;
    }
}

/// How long the kernel may take to answer (the socket's receive timeout).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_framed_and_only_its_last_message_asks_for_an_answer() {
        let mut tx = Transaction::new("t");
        tx.push(Op::AddTable);
        tx.push(Op::AddElements { set: "s".into(), elements: (0..5000u32).map(|i| Element::Address(std::net::Ipv4Addr::from(i))).collect() });
        let (mut batch, origin) = encode(&tx);
        assert_eq!(origin, vec![0, 1, 1], "5,000 elements take two messages");
        set_ack_on(&mut batch, origin.len() as u32);
        let mut at = 0;
        let mut seen = Vec::new();
        while at < batch.len() {
            let len = u32::from_ne_bytes(batch[at..at + 4].try_into().unwrap()) as usize;
            let flags = u16::from_ne_bytes(batch[at + 6..at + 8].try_into().unwrap());
            seen.push((u16::from_ne_bytes(batch[at + 4..at + 6].try_into().unwrap()), flags & NLM_F_ACK != 0));
            assert!(len >= 20 && len.is_multiple_of(4) && len < 65536, "{len}");
            at += len;
        }
        assert_eq!(at, batch.len());
        assert_eq!(seen.first(), Some(&(NFNL_MSG_BATCH_BEGIN, false)));
        assert_eq!(seen.last(), Some(&(NFNL_MSG_BATCH_END, false)));
        assert_eq!(seen.iter().filter(|(_, ack)| *ack).count(), 1);
        assert!(seen[seen.len() - 2].1, "the last operation's message asks");
    }
}

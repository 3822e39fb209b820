//! Rules as the kernel runs them: a [`Rule`] is built from matches and
//! statements in nft's own vocabulary, and carries both its nft text (what
//! `nft list` prints back, what tests and logs read) and the nf_tables
//! expressions that [`super::netlink`] sends. Register use and byte orders
//! follow what nft 1.0 generates for the same text, so that nft decodes
//! the rules to that text again.

use std::fmt::{self, Write};
use std::net::Ipv4Addr;

use crate::Protocol;

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The network address.
    pub addr: Ipv4Addr,
    /// The prefix length, 0 to 32.
    pub len: u8,
}

/// Why a CIDR did not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid CIDR {0:?}: want an IPv4 address with a prefix length of 0 to 32, as 192.168.0.0/16")]
pub struct CidrError(String);

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a.parse().map_err(|_| CidrError(s.to_string()))?;
        let len: u8 = l.parse().ok().filter(|l| *l <= 32).ok_or_else(|| CidrError(s.to_string()))?;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Ok(Self { addr: Ipv4Addr::from(u32::from(addr) & mask), len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Where a jump, a goto or a map's verdict leads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// `jump CHAIN`: back here after it.
    Jump(String),
    /// `goto CHAIN`: not back.
    Goto(String),
    /// `drop`.
    Drop,
    /// `return`.
    Return,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Jump(c) => write!(f, "jump {c}"),
            Self::Goto(c) => write!(f, "goto {c}"),
            Self::Drop => f.write_str("drop"),
            Self::Return => f.write_str("return"),
        }
    }
}

/// A register, by its nf_tables number: `REG1` is the 16-byte register
/// whose first word is `reg32(0)`.
pub(crate) type Reg = u32;
/// The verdict register.
pub(crate) const VERDICT: Reg = 0;
/// The first 16-byte data register.
pub(crate) const REG1: Reg = 1;
/// The second 16-byte data register.
pub(crate) const REG2: Reg = 2;

/// The `n`th 32-bit register (a concatenation's parts after the first).
pub(crate) const fn reg32(n: u32) -> Reg {
    8 + n
}

/// The header a payload is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base {
    /// The network (IP) header.
    Network = 1,
    /// The transport header.
    Transport = 2,
}

/// A `meta` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaKey {
    /// The packet mark.
    Mark = 3,
    /// The layer 4 protocol.
    L4proto = 16,
}

/// A `ct` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CtKey {
    /// The connection's state bits.
    State = 0,
    /// The connection's status bits.
    Status = 2,
}

/// One nf_tables expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    /// Load `len` bytes at `offset` of a header.
    Payload { base: Base, offset: u32, len: u32, dreg: Reg },
    /// Load a `meta` key.
    Meta { key: MetaKey, dreg: Reg },
    /// Set a `meta` key.
    MetaSet { key: MetaKey, sreg: Reg },
    /// Load a conntrack key.
    Ct { key: CtKey, dreg: Reg },
    /// Compare a register: equal (or not, with `neq`).
    Cmp { sreg: Reg, neq: bool, data: Vec<u8> },
    /// `dreg = (sreg & mask) ^ xor`.
    Bitwise { sreg: Reg, dreg: Reg, mask: Vec<u8>, xor: Vec<u8> },
    /// Look up a key in a set; with `dreg`, load the map's data.
    Lookup { set: String, sreg: Reg, dreg: Option<Reg> },
    /// Update a dynamic set with the key in `sreg`.
    DynsetUpdate { set: String, sreg: Reg },
    /// Load a constant into a register.
    Immediate { dreg: Reg, data: Vec<u8> },
    /// Set the verdict.
    Verdict(Verdict),
    /// A random number below `modulus`.
    Numgen { dreg: Reg, modulus: u32 },
    /// The address type of the packet's source (`saddr`) or destination.
    FibType { saddr: bool, dreg: Reg },
    /// DNAT to the address (and port) in the registers.
    Dnat { addr: Reg, port: Reg, flags: u32 },
    /// Masquerade.
    Masquerade { flags: u32 },
    /// Refuse: a TCP reset, or ICMP port unreachable.
    Reject { tcp_reset: bool },
}

/// `NF_NAT_RANGE_PROTO_SPECIFIED`.
const NAT_PROTO_SPECIFIED: u32 = 0x2;
/// `NF_NAT_RANGE_PROTO_RANDOM_FULLY`.
const NAT_RANDOM_FULLY: u32 = 0x10;
/// `RTN_LOCAL`, fib's address type of a local address.
const RTN_LOCAL: u32 = 2;
/// The conntrack state bit of a new connection.
const CT_STATE_NEW: u32 = 8;
/// The conntrack status bit of a DNATed connection (`IPS_DST_NAT`).
const CT_STATUS_DNAT: u32 = 0x20;
/// Offsets in the IPv4 header.
const IP_SADDR: u32 = 12;
const IP_DADDR: u32 = 16;
/// The destination port's offset in a TCP, UDP or SCTP header.
const TH_DPORT: u32 = 2;

/// A rule: its nft text and its expressions.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    text: String,
    exprs: Vec<Expr>,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Rule {}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Rule {
    /// An empty rule (matches everything, does nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// The expressions, in order.
    pub(crate) fn exprs(&self) -> &[Expr] {
        &self.exprs
    }

    fn part(mut self, text: impl fmt::Display, exprs: impl IntoIterator<Item = Expr>) -> Self {
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        let _ = write!(self.text, "{text}");
        self.exprs.extend(exprs);
        self
    }

    /// `ct state new`.
    pub fn ct_state_new(self) -> Self {
        self.ct_bit(CtKey::State, CT_STATE_NEW, "ct state new")
    }

    /// `ct status dnat`.
    pub fn ct_status_dnat(self) -> Self {
        self.ct_bit(CtKey::Status, CT_STATUS_DNAT, "ct status dnat")
    }

    fn ct_bit(self, key: CtKey, bit: u32, text: &str) -> Self {
        self.part(
            text,
            [
                Expr::Ct { key, dreg: REG1 },
                Expr::Bitwise { sreg: REG1, dreg: REG1, mask: bit.to_ne_bytes().to_vec(), xor: vec![0; 4] },
                Expr::Cmp { sreg: REG1, neq: true, data: vec![0; 4] },
            ],
        )
    }

    /// `ip daddr @SET` (or `ip saddr @SET`).
    pub fn addr_in(self, saddr: bool, set: &str) -> Self {
        let field = if saddr { "saddr" } else { "daddr" };
        self.part(format_args!("ip {field} @{set}"), [addr(saddr, REG1), Expr::Lookup { set: set.into(), sreg: REG1, dreg: None }])
    }

    /// `ip saddr . ip daddr @SET`.
    pub fn addr_pair_in(self, set: &str) -> Self {
        self.part(
            format_args!("ip saddr . ip daddr @{set}"),
            [addr(true, REG1), addr(false, reg32(1)), Expr::Lookup { set: set.into(), sreg: REG1, dreg: None }],
        )
    }

    /// `ip saddr CIDR` (`!=` with `negate`), loaded as nft loads a prefix:
    /// only its bytes when it ends on a byte boundary, else masked.
    pub fn addr_in_cidr(self, saddr: bool, cidr: Cidr, negate: bool) -> Self {
        let field = if saddr { "saddr" } else { "daddr" };
        let op = if negate { "!= " } else { "" };
        let text = if cidr.len == 32 { format!("ip {field} {op}{}", cidr.addr) } else { format!("ip {field} {op}{cidr}") };
        let off = if saddr { IP_SADDR } else { IP_DADDR };
        let aligned = cidr.len.is_multiple_of(8) && cidr.len > 0;
        let bytes = if aligned { u32::from(cidr.len) / 8 } else { 4 };
        let net = &cidr.addr.octets()[..bytes as usize];
        let mut exprs = vec![Expr::Payload { base: Base::Network, offset: off, len: bytes, dreg: REG1 }];
        if !aligned {
            let mask = if cidr.len == 0 { 0 } else { u32::MAX << (32 - cidr.len) };
            exprs.push(Expr::Bitwise { sreg: REG1, dreg: REG1, mask: mask.to_be_bytes().to_vec(), xor: vec![0; 4] });
        }
        exprs.push(Expr::Cmp { sreg: REG1, neq: negate, data: net.to_vec() });
        self.part(text, exprs)
    }

    /// `fib saddr type local` (or `fib daddr type local`).
    pub fn fib_local(self, saddr: bool) -> Self {
        let field = if saddr { "saddr" } else { "daddr" };
        self.part(
            format_args!("fib {field} type local"),
            [Expr::FibType { saddr, dreg: REG1 }, Expr::Cmp { sreg: REG1, neq: false, data: RTN_LOCAL.to_ne_bytes().to_vec() }],
        )
    }

    /// `meta l4proto PROTO`.
    pub fn l4proto(self, proto: Protocol) -> Self {
        self.part(
            format_args!("meta l4proto {}", proto.nft()),
            [Expr::Meta { key: MetaKey::L4proto, dreg: REG1 }, Expr::Cmp { sreg: REG1, neq: false, data: vec![proto.number()] }],
        )
    }

    /// `numgen random mod N 0`: true for one packet in `modulus`.
    pub fn one_in(self, modulus: u32) -> Self {
        self.part(
            format_args!("numgen random mod {modulus} 0"),
            [Expr::Numgen { dreg: REG1, modulus }, Expr::Cmp { sreg: REG1, neq: false, data: vec![0; 4] }],
        )
    }

    /// `meta mark & BIT == 0`.
    pub fn mark_clear(self, bit: u32) -> Self {
        self.part(
            format_args!("meta mark & {bit:#x} == 0"),
            [
                Expr::Meta { key: MetaKey::Mark, dreg: REG1 },
                Expr::Bitwise { sreg: REG1, dreg: REG1, mask: bit.to_ne_bytes().to_vec(), xor: vec![0; 4] },
                Expr::Cmp { sreg: REG1, neq: false, data: vec![0; 4] },
            ],
        )
    }

    /// `meta mark set meta mark or BIT` (`xor` with `toggle`).
    pub fn mark_set(self, bit: u32, toggle: bool) -> Self {
        let (text, mask) = if toggle { ("xor", u32::MAX) } else { ("or", !bit) };
        self.part(
            format_args!("meta mark set meta mark {text} {bit:#x}"),
            [
                Expr::Meta { key: MetaKey::Mark, dreg: REG1 },
                Expr::Bitwise { sreg: REG1, dreg: REG1, mask: mask.to_ne_bytes().to_vec(), xor: bit.to_ne_bytes().to_vec() },
                Expr::MetaSet { key: MetaKey::Mark, sreg: REG1 },
            ],
        )
    }

    /// `update @SET { ip saddr }`.
    pub fn remember_saddr(self, set: &str) -> Self {
        self.part(format_args!("update @{set} {{ ip saddr }}"), [addr(true, REG1), Expr::DynsetUpdate { set: set.into(), sreg: REG1 }])
    }

    /// `meta l4proto PROTO dnat ip to IP:PORT`.
    pub fn dnat(self, proto: Protocol, ip: Ipv4Addr, port: u16) -> Self {
        self.l4proto(proto).part(
            format_args!("dnat ip to {ip}:{port}"),
            [
                Expr::Immediate { dreg: REG1, data: ip.octets().to_vec() },
                Expr::Immediate { dreg: REG2, data: port.to_be_bytes().to_vec() },
                Expr::Dnat { addr: REG1, port: REG2, flags: NAT_PROTO_SPECIFIED },
            ],
        )
    }

    /// `dnat ip to ip daddr . meta l4proto . th dport . numgen random mod N map @SET`:
    /// one of the `modulus` endpoints the map holds for the packet's
    /// destination.
    pub fn dnat_pick(self, set: &str, modulus: u32) -> Self {
        self.part(
            format_args!("dnat ip to ip daddr . meta l4proto . th dport . numgen random mod {modulus} map @{set}"),
            [
                addr(false, REG1),
                Expr::Meta { key: MetaKey::L4proto, dreg: reg32(1) },
                dport(reg32(2)),
                Expr::Numgen { dreg: reg32(3), modulus },
                Expr::Lookup { set: set.into(), sreg: REG1, dreg: Some(REG1) },
                Expr::Dnat { addr: REG1, port: reg32(1), flags: 0 },
            ],
        )
    }

    /// `ip daddr . meta l4proto . th dport vmap @SET`.
    pub fn service_vmap(self, set: &str) -> Self {
        self.part(
            format_args!("ip daddr . meta l4proto . th dport vmap @{set}"),
            [
                addr(false, REG1),
                Expr::Meta { key: MetaKey::L4proto, dreg: reg32(1) },
                dport(reg32(2)),
                Expr::Lookup { set: set.into(), sreg: REG1, dreg: Some(VERDICT) },
            ],
        )
    }

    /// `meta l4proto . th dport vmap @SET`.
    pub fn port_vmap(self, set: &str) -> Self {
        self.part(
            format_args!("meta l4proto . th dport vmap @{set}"),
            [Expr::Meta { key: MetaKey::L4proto, dreg: REG1 }, dport(reg32(1)), Expr::Lookup { set: set.into(), sreg: REG1, dreg: Some(VERDICT) }],
        )
    }

    /// `masquerade` (`fully-random` with `random`).
    pub fn masquerade(self, random: bool) -> Self {
        let (text, flags) = if random { ("masquerade fully-random", NAT_RANDOM_FULLY) } else { ("masquerade", 0) };
        self.part(text, [Expr::Masquerade { flags }])
    }

    /// `meta l4proto tcp reject with tcp reset`.
    pub fn reject_tcp_reset(self) -> Self {
        self.l4proto(Protocol::Tcp).part("reject with tcp reset", [Expr::Reject { tcp_reset: true }])
    }

    /// `reject` (ICMP port unreachable).
    pub fn reject(self) -> Self {
        self.part("reject", [Expr::Reject { tcp_reset: false }])
    }

    /// Ends the rule with a verdict.
    pub fn verdict(self, v: Verdict) -> Self {
        let text = v.to_string();
        self.part(text, [Expr::Verdict(v)])
    }

    /// `jump CHAIN`.
    pub fn jump(self, chain: &str) -> Self {
        self.verdict(Verdict::Jump(chain.into()))
    }

    /// `goto CHAIN`.
    pub fn goto(self, chain: &str) -> Self {
        self.verdict(Verdict::Goto(chain.into()))
    }
}

fn addr(saddr: bool, dreg: Reg) -> Expr {
    Expr::Payload { base: Base::Network, offset: if saddr { IP_SADDR } else { IP_DADDR }, len: 4, dreg }
}

fn dport(dreg: Reg) -> Expr {
    Expr::Payload { base: Base::Transport, offset: TH_DPORT, len: 2, dreg }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_reads_as_nft_writes_it() {
        let r = Rule::new().addr_in(false, "cluster-ips").addr_in_cidr(true, "10.42.0.0/16".parse().unwrap(), true).jump("mark-for-masquerade");
        assert_eq!(r.to_string(), "ip daddr @cluster-ips ip saddr != 10.42.0.0/16 jump mark-for-masquerade");
        // A byte-aligned prefix is a shorter load and a compare, as nft makes it.
        assert_eq!(r.exprs()[2], Expr::Payload { base: Base::Network, offset: 12, len: 2, dreg: REG1 });
        assert_eq!(r.exprs()[3], Expr::Cmp { sreg: REG1, neq: true, data: vec![10, 42] });
        let odd = Rule::new().addr_in_cidr(true, "10.40.0.0/13".parse().unwrap(), false);
        assert!(matches!(&odd.exprs()[1], Expr::Bitwise { mask, .. } if mask == &vec![255, 248, 0, 0]), "{odd:?}");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err() && "ten".parse::<Cidr>().is_err());
        assert_eq!("10.1.2.3/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8", "host bits cleared");
    }
}

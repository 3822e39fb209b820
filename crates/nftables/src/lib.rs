//! nftables for skiff's proxy and kubelet. A [`Transaction`] is a list of
//! operations on one table; it reads as an `nft -f` script (its `Display`,
//! what logs and tests show) and is applied by sending the same operations
//! to the kernel as one nfnetlink batch ([`netlink`]), which the kernel
//! applies atomically or not at all.
//!
//! Why not `nft -f`: at 10,000 Services the nft program spent 1.0 s of a
//! 1.4 s full sync parsing and checking its own text, and re-read the table
//! before every partial sync. Why not a crate: no maintained Rust crate
//! encodes what these rules need (verdict maps and data maps with
//! concatenated keys, `numgen`, `dynset`, `fib`): `rustables` is GPL-3.0,
//! `nftnl` wraps libnftnl without maps, `nf_tables` has no sets.

#![deny(missing_docs)]

pub mod netlink;
pub mod rule;

use std::fmt::{self, Write};
use std::net::Ipv4Addr;

pub use rule::{Cidr, Rule, Verdict};

/// A transport protocol, as nftables names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// nftables' name.
    pub fn nft(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }
}

/// Why a transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The netlink socket failed.
    #[error("nftables netlink: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel refused an operation (and so the whole transaction).
    #[error("nftables refused `{op}`: {error}")]
    Refused {
        /// The operation, as nft would write it.
        op: String,
        /// The kernel's error.
        error: std::io::Error,
    },
}

/// A base chain's hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    /// `nat` (else `filter`).
    pub nat: bool,
    /// The netfilter hook.
    pub hook: HookPoint,
    /// Its priority.
    pub priority: i32,
}

/// A netfilter hook of the `ip` family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    /// Before routing.
    Prerouting = 0,
    /// To this host.
    Input = 1,
    /// Through this host.
    Forward = 2,
    /// From this host.
    Output = 3,
    /// After routing.
    Postrouting = 4,
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hook = match self.hook {
            HookPoint::Prerouting => "prerouting",
            HookPoint::Input => "input",
            HookPoint::Forward => "forward",
            HookPoint::Output => "output",
            HookPoint::Postrouting => "postrouting",
        };
        let kind = if self.nat { "nat" } else { "filter" };
        write!(f, "type {kind} hook {hook} priority {} ;", self.priority)
    }
}

/// The kinds of sets and maps the proxy keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// `ipv4_addr . inet_proto . inet_service : verdict`.
    ServiceVerdicts,
    /// `inet_proto . inet_service : verdict`.
    PortVerdicts,
    /// `ipv4_addr`.
    Addresses,
    /// `ipv4_addr . ipv4_addr`.
    AddressPairs,
    /// A Service address, protocol, port and a random bucket to the
    /// endpoint address and port the bucket DNATs to.
    Endpoints,
    /// Client addresses remembered for `timeout` seconds (session affinity).
    Affinity {
        /// Seconds.
        timeout: u32,
    },
}

impl SetKind {
    /// `set` or `map`.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::ServiceVerdicts | Self::PortVerdicts | Self::Endpoints => "map",
            _ => "set",
        }
    }

    /// The declaration inside `{ }`.
    pub fn decl(self) -> String {
        match self {
            Self::ServiceVerdicts => "type ipv4_addr . inet_proto . inet_service : verdict ;".into(),
            Self::PortVerdicts => "type inet_proto . inet_service : verdict ;".into(),
            Self::Addresses => "type ipv4_addr ;".into(),
            Self::AddressPairs => "type ipv4_addr . ipv4_addr ;".into(),
            // `typeof`: the bucket is numgen's own integer type.
            Self::Endpoints => "typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport ;".into(),
            Self::Affinity { timeout } => format!("type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ;"),
        }
    }
}

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    /// `IP . PROTO . PORT : VERDICT`.
    Service {
        /// The address.
        ip: Ipv4Addr,
        /// The protocol.
        proto: Protocol,
        /// The port.
        port: u16,
        /// Where it leads.
        verdict: Verdict,
    },
    /// `PROTO . PORT : VERDICT`.
    Port {
        /// The protocol.
        proto: Protocol,
        /// The port.
        port: u16,
        /// Where it leads.
        verdict: Verdict,
    },
    /// `IP`.
    Address(Ipv4Addr),
    /// `IP . IP`.
    AddressPair(Ipv4Addr, Ipv4Addr),
    /// `IP . PROTO . PORT . BUCKET : TO_IP . TO_PORT`.
    Endpoint {
        /// The Service address.
        ip: Ipv4Addr,
        /// The protocol.
        proto: Protocol,
        /// The Service port.
        port: u16,
        /// The random bucket.
        bucket: u32,
        /// The endpoint's address.
        to_ip: Ipv4Addr,
        /// The endpoint's port.
        to_port: u16,
    },
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service { ip, proto, port, verdict } => write!(f, "{ip} . {} . {port} : {verdict}", proto.nft()),
            Self::Port { proto, port, verdict } => write!(f, "{} . {port} : {verdict}", proto.nft()),
            Self::Address(ip) => write!(f, "{ip}"),
            Self::AddressPair(a, b) => write!(f, "{a} . {b}"),
            Self::Endpoint { ip, proto, port, bucket, to_ip, to_port } => write!(f, "{ip} . {} . {port} . {bucket} : {to_ip} . {to_port}", proto.nft()),
        }
    }
}

/// One operation of a transaction, on the transaction's table.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Creates the table (nothing when it exists).
    AddTable,
    /// Deletes the table and all in it.
    DeleteTable,
    /// Creates a chain (a base chain with a hook).
    AddChain {
        /// Its name.
        name: String,
        /// Its hook, for a base chain.
        hook: Option<Hook>,
    },
    /// Removes a chain's rules.
    FlushChain(String),
    /// Deletes an empty, unreferenced chain.
    DeleteChain(String),
    /// Appends a rule.
    AddRule {
        /// The chain.
        chain: String,
        /// The rule.
        rule: Rule,
    },
    /// Creates a set or map.
    AddSet {
        /// Its name.
        name: String,
        /// What it holds.
        kind: SetKind,
    },
    /// Deletes a set or map.
    DeleteSet {
        /// Its name.
        name: String,
        /// What it holds.
        kind: SetKind,
    },
    /// Adds elements.
    AddElements {
        /// The set.
        set: String,
        /// The elements.
        elements: Vec<Element>,
    },
    /// Deletes elements.
    DeleteElements {
        /// The set.
        set: String,
        /// The elements.
        elements: Vec<Element>,
    },
}

/// Operations on one `ip` table, applied together or not at all.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// The table.
    pub table: String,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl Transaction {
    /// An empty transaction on `table`.
    pub fn new(table: &str) -> Self {
        Self { table: table.to_string(), ops: Vec::new() }
    }

    /// A transaction that starts `table` afresh: deleted if it exists, then
    /// made empty, so that what follows replaces it whole.
    pub fn replacing(table: &str) -> Self {
        let mut tx = Self::new(table);
        // `add` first so that `delete` never fails on a missing table.
        tx.ops.extend([Op::AddTable, Op::DeleteTable, Op::AddTable]);
        tx
    }

    /// A transaction that deletes `table` if it exists, and nothing else.
    pub fn deleting(table: &str) -> Self {
        let mut tx = Self::new(table);
        tx.ops.extend([Op::AddTable, Op::DeleteTable]);
        tx
    }

    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends an operation.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Applies it (blocking: a full sync at 10,000 Services keeps the
    /// kernel busy for about half a second).
    pub fn apply_blocking(&self) -> Result<(), NftError> {
        netlink::apply(self)
    }

    /// Applies it on a blocking thread.
    pub async fn apply(self) -> Result<(), NftError> {
        tokio::task::spawn_blocking(move || self.apply_blocking()).await.map_err(|e| NftError::Io(std::io::Error::other(e)))?
    }

    /// One operation as nft writes it.
    pub fn op_text(&self, op: &Op) -> String {
        let t = format!("ip {}", self.table);
        match op {
            Op::AddTable => format!("add table {t}"),
            Op::DeleteTable => format!("delete table {t}"),
            Op::AddChain { name, hook: None } => format!("add chain {t} {name}"),
            Op::AddChain { name, hook: Some(h) } => format!("add chain {t} {name} {{ {h} }}"),
            Op::FlushChain(name) => format!("flush chain {t} {name}"),
            Op::DeleteChain(name) => format!("delete chain {t} {name}"),
            Op::AddRule { chain, rule } => format!("add rule {t} {chain} {rule}"),
            Op::AddSet { name, kind } => format!("add {} {t} {name} {{ {} }}", kind.keyword(), kind.decl()),
            Op::DeleteSet { name, kind } => format!("delete {} {t} {name}", kind.keyword()),
            Op::AddElements { set, elements } | Op::DeleteElements { set, elements } => {
                let verb = if matches!(op, Op::AddElements { .. }) { "add" } else { "delete" };
                let mut s = format!("{verb} element {t} {set} {{ ");
                for (i, e) in elements.iter().enumerate() {
                    let _ = write!(s, "{}{e}", if i == 0 { "" } else { ", " });
                }
                s + " }"
            }
        }
    }
}

/// The transaction as an `nft -f` script.
impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for op in &self.ops {
            writeln!(f, "{}", self.op_text(op))?;
        }
        Ok(())
    }
}

/// Deletes `ip TABLE` if it exists, and nothing else.
pub async fn delete_table(table: &str) -> Result<(), NftError> {
    Transaction::deleting(table).apply().await
}

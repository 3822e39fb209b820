//! IPv4 address ranges as the cluster's flags give them (`10.43.0.0/16`):
//! the service range the API server allocates ClusterIPs from, whose 1st
//! address is the `kubernetes` Service's and 10th the cluster DNS's.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The first address (host bits cleared).
    pub base: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

/// Why a CIDR did not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid CIDR {0:?}: want an IPv4 address and a prefix length of 8 to 30, as 10.43.0.0/16")]
pub struct CidrError(String);

impl Cidr {
    /// How many addresses the block holds.
    pub fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix))
    }

    /// The `n`th address of the block (0 is the base).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base).wrapping_add(n))
    }

    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let (b, i) = (u32::from(self.base), u32::from(ip));
        i >= b && i - b < self.size()
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let err = || CidrError(s.to_string());
        let (ip, prefix) = s.split_once('/').ok_or_else(err)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        if !(8..=30).contains(&prefix) {
            return Err(err());
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        Ok(Self { base: Ipv4Addr::from(u32::from(ip) & mask), prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl Default for Cidr {
    /// k3s's service range.
    fn default() -> Self {
        Self { base: Ipv4Addr::new(10, 43, 0, 0), prefix: 16 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_answer_membership() {
        let c: Cidr = "10.43.7.9/16".parse().expect("cidr");
        assert_eq!(c.to_string(), "10.43.0.0/16");
        assert_eq!(c.nth(10), Ipv4Addr::new(10, 43, 0, 10));
        assert!(c.contains(Ipv4Addr::new(10, 43, 255, 255)));
        assert!(!c.contains(Ipv4Addr::new(10, 44, 0, 0)));
        assert_eq!(c.size(), 65536);
        assert!("10.43.0.0".parse::<Cidr>().is_err());
        assert!("10.43.0.0/33".parse::<Cidr>().is_err());
        assert!("fd00::/64".parse::<Cidr>().is_err());
    }
}

//! The node join token: what `skiff agent --token` needs to trust a server
//! it has never seen and to be trusted by it.
//!
//! The format is k3s's, so operators recognise it:
//! `K10<sha256 of the CA certificate PEM, hex>::node:<secret>`. The hash
//! pins the CA the agent downloads anonymously from `/cacerts`; the secret
//! authorises the agent to have its node certificates signed.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{PkiError, Result};

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex SHA-256 of the cluster CA certificate (PEM text).
    pub ca_hash: String,
    /// The shared secret.
    pub secret: String,
}

// The secret must not end up in logs.
impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken").field("ca_hash", &self.ca_hash).field("secret", &"<redacted>").finish()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "K10{}::node:{}", self.ca_hash, self.secret)
    }
}

/// Hex SHA-256 of a CA certificate's PEM text.
pub fn ca_hash(ca_pem: &str) -> String {
    Sha256::digest(ca_pem.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of a text (a node password's record).
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets in time independent of where they differ.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl JoinToken {
    /// Parses `K10<hash>::node:<secret>`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| PkiError::Token(format!("{why}; want K10<ca-sha256>::node:<secret> (the server's DATA_DIR/node-token)"));
        let rest = s.trim().strip_prefix("K10").ok_or_else(|| bad("the token does not start with K10"))?;
        let (hash, cred) = rest.split_once("::").ok_or_else(|| bad("the token has no '::'"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the CA hash is not 64 hex digits"));
        }
        let secret = cred.strip_prefix("node:").ok_or_else(|| bad("the credential is not node:<secret>"))?;
        if secret.is_empty() {
            return Err(bad("the secret is empty"));
        }
        Ok(Self { ca_hash: hash.to_ascii_lowercase(), secret: secret.to_string() })
    }

    /// Whether `ca_pem` is the CA this token pins.
    pub fn pins(&self, ca_pem: &str) -> bool {
        ca_hash(ca_pem) == self.ca_hash
    }

    /// Reads the token at `path`, writing a new one (mode 0600) when it is
    /// missing or pins another CA. The secret survives restarts, so agents
    /// that joined keep working.
    pub fn load_or_create(path: &Path, ca_pem: &str) -> Result<Self> {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(t) = Self::parse(&text) {
                if t.pins(ca_pem) {
                    return Ok(t);
                }
            }
        }
        let secret: String = rand::random::<[u8; 16]>().iter().map(|b| format!("{b:02x}")).collect();
        let token = Self { ca_hash: ca_hash(ca_pem), secret };
        crate::write(path, &format!("{token}\n"), true)?;
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let t = JoinToken { ca_hash: ca_hash("pem"), secret: "s3cret".into() };
        assert_eq!(JoinToken::parse(&t.to_string()).expect("parse"), t);
        assert!(t.pins("pem") && !t.pins("other"));
        for bad in ["", "K10", "K10abc::node:x", "X10aaaa::node:x", &format!("K10{}::admin:x", ca_hash("p")), &format!("K10{}::node:", ca_hash("p"))] {
            assert!(JoinToken::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(secrets_equal("abc", "abc") && !secrets_equal("abc", "abd") && !secrets_equal("abc", "ab"));
    }
}

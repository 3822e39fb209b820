//! Authentication: client certificates signed by the cluster CA, and bearer
//! tokens from a kube-apiserver `--token-auth-file`.

use std::collections::HashMap;
use std::path::Path;

use skiff_pki::CertIdentity;

/// Errors reading a token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `token,user,uid[,"group1,group2"]`.
    #[error("{path}:{line}: want token,user,uid[,\"group1,group2\"]")]
    Malformed {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
    },
}

/// Static bearer tokens, as kube-apiserver's `--token-auth-file`: a CSV of
/// `token,user,uid` with an optional fourth column of groups (quoted when
/// there are several).
#[derive(Debug, Default, Clone)]
pub struct TokenFile {
    users: HashMap<String, CertIdentity>,
}

impl TokenFile {
    /// Reads and parses a token file.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Io { path: path.display().to_string(), source })?;
        Self::parse(&text).map_err(|line| TokenFileError::Malformed { path: path.display().to_string(), line })
    }

    /// Parses the CSV text; the error is the offending line number.
    pub fn parse(text: &str) -> Result<Self, usize> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cols = split_csv(line);
            if cols.len() < 3 || cols[0].is_empty() || cols[1].is_empty() {
                return Err(i + 1);
            }
            let groups = cols.get(3).map(|g| g.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect()).unwrap_or_default();
            users.insert(cols[0].clone(), CertIdentity { user: cols[1].clone(), groups });
        }
        Ok(Self { users })
    }

    /// The user a token belongs to.
    pub fn user(&self, token: &str) -> Option<&CertIdentity> {
        self.users.get(token)
    }
}

/// Splits one CSV line, honouring double quotes.
fn split_csv(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out.into_iter().map(|s| s.trim().to_string()).collect()
}

/// What a request's `Authorization` header says.
pub(crate) enum Bearer<'a> {
    /// No bearer token was sent.
    Absent,
    /// A token was sent.
    Token(&'a str),
}

/// Reads the bearer token of a request.
pub(crate) fn bearer(headers: &hyper::HeaderMap) -> Bearer<'_> {
    match headers.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(v) if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") => Bearer::Token(v[7..].trim()),
        _ => Bearer::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_reads_kube_apiserver_csv() {
        let f = TokenFile::parse("# comment\nsecret1,alice,1001\nsecret2,bob,1002,\"dev,ops\"\nsecret3,carol,1003,admins\n").expect("parses");
        assert_eq!(f.user("secret1").map(|u| u.user.as_str()), Some("alice"));
        assert_eq!(f.user("secret2").map(|u| u.groups.clone()), Some(vec!["dev".to_string(), "ops".to_string()]));
        assert_eq!(f.user("secret3").map(|u| u.groups.clone()), Some(vec!["admins".to_string()]));
        assert!(f.user("nope").is_none());
        assert_eq!(TokenFile::parse("ok,a,1\nbroken\n").err(), Some(2));
    }
}

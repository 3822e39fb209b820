//! ServiceAccount tokens: JWTs signed with the cluster's service-account
//! key (ES256, a P-256 key under the PKI directory, made on first start),
//! with the claims kube-apiserver's TokenRequest puts in them (`iss`,
//! `sub: system:serviceaccount:NS:NAME`, `aud`, `exp`, `iat`, `nbf`, `jti`
//! and the private `kubernetes.io` claim naming the ServiceAccount and the
//! object the token is bound to). The public key is published as a JWKS
//! (`/openid/v1/jwks`) beside an OpenID discovery document, so that other
//! parties can verify tokens as they verify kube's.

use std::path::Path;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::{KeyPair, PublicKeyData};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;

use crate::{read, write, PkiError, Result};

/// A reference to an object a token names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: ObjectRef,
    /// The pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    /// The Secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    /// The node the bound pod runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// A ServiceAccount token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer (`--service-account-issuer`).
    pub iss: String,
    /// `system:serviceaccount:NAMESPACE:NAME`.
    pub sub: String,
    /// The audiences.
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time.
    pub iat: i64,
    /// Not valid before.
    pub nbf: i64,
    /// A unique id.
    pub jti: String,
    /// Who the token is for and what it is bound to.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
}

/// The service-account signing key and the issuer it signs as.
pub struct ServiceAccountKey {
    issuer: String,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl ServiceAccountKey {
    /// Loads `dir/service-account.key`, creating it on first use.
    pub fn load_or_create(dir: &Path, issuer: &str) -> Result<Self> {
        let path = dir.join("service-account.key");
        let pem = match read(&path) {
            Ok(pem) => pem,
            Err(_) => {
                std::fs::create_dir_all(dir).map_err(|source| PkiError::Io { path: dir.to_path_buf(), source })?;
                let pem = KeyPair::generate()?.serialize_pem();
                write(&path, &pem, true)?;
                pem
            }
        };
        let pair = KeyPair::from_pem(&pem)?;
        let bad = |e: jsonwebtoken::errors::Error| PkiError::Tls(format!("service-account key {}: {e}", path.display()));
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(bad)?;
        let decoding = DecodingKey::from_ec_pem(pair.public_key_pem().as_bytes()).map_err(bad)?;
        // As kube-apiserver names its keys: the SHA-256 of the public key's DER.
        let kid = b64(&sha2::Sha256::digest(pair.subject_public_key_info()));
        // The uncompressed point: 0x04, X, Y.
        let raw = pair.public_key_raw();
        let (x, y) = if raw.len() == 65 { (&raw[1..33], &raw[33..]) } else { return Err(PkiError::Tls("service-account key: not a P-256 key".into())) };
        let jwk = json!({"use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256", "x": b64(x), "y": b64(y)});
        Ok(Self { issuer: issuer.to_string(), kid, encoding, decoding, jwk })
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| PkiError::Tls(format!("signing a token: {e}")))
    }

    /// The claims of a token this key signed as this issuer, unexpired
    /// and already valid; `None` for anything else. Audiences are the
    /// caller's to check.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[&self.issuer]);
        v.validate_aud = false;
        v.validate_nbf = true;
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "iss", "sub", "nbf"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).ok().map(|d| d.claims)
    }

    /// `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk]})
    }

    /// `/.well-known/openid-configuration`, as kube-apiserver serves it.
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "https://kubernetes.default.svc.cluster.local".into(),
            sub: "system:serviceaccount:default:app".into(),
            aud: vec!["https://kubernetes.default.svc.cluster.local".into()],
            exp,
            iat: exp - 3600,
            nbf: exp - 3600,
            jti: "1".into(),
            kubernetes: KubernetesClaim {
                namespace: "default".into(),
                serviceaccount: ObjectRef { name: "app".into(), uid: "u1".into() },
                pod: Some(ObjectRef { name: "p".into(), uid: "u2".into() }),
                secret: None,
                node: None,
            },
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }

    #[test]
    fn tokens_verify_with_the_key_that_signed_them_only() {
        let dir = tempfile_dir();
        let key = ServiceAccountKey::load_or_create(&dir, "https://kubernetes.default.svc.cluster.local").expect("key");
        let c = claims(now() + 3600);
        let token = key.sign(&c).expect("sign");
        assert_eq!(key.verify(&token), Some(c.clone()));
        // The same key after a restart.
        let again = ServiceAccountKey::load_or_create(&dir, "https://kubernetes.default.svc.cluster.local").expect("key");
        assert_eq!(again.verify(&token), Some(c.clone()));
        assert_eq!(again.jwks(), key.jwks());
        // Expired, another issuer, tampered, another key.
        assert_eq!(key.verify(&key.sign(&claims(now() - 10)).expect("sign")), None);
        let other_issuer = ServiceAccountKey::load_or_create(&dir, "https://other.example").expect("key");
        assert_eq!(other_issuer.verify(&token), None);
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[1] = b64(br#"{"sub":"system:serviceaccount:kube-system:admin"}"#);
        assert_eq!(key.verify(&parts.join(".")), None);
        let other = ServiceAccountKey::load_or_create(&tempfile_dir(), "https://kubernetes.default.svc.cluster.local").expect("key");
        assert_eq!(other.verify(&token), None);
        let jwk = &key.jwks()["keys"][0];
        assert_eq!((jwk["kty"].as_str(), jwk["alg"].as_str()), (Some("EC"), Some("ES256")));
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("skiff-sa-key-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&d).expect("dir");
        d
    }
}

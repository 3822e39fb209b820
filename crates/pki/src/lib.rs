//! The cluster's public-key infrastructure: one CA that signs the API
//! server's serving certificate and every client certificate (admin,
//! components, nodes). Client identity is read back from a verified
//! certificate the way kube-apiserver does it: user = CN, groups = O.

#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod service_account;
pub mod token;

pub use service_account::ServiceAccountKey;
pub use token::JoinToken;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

/// Errors of certificate handling.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a PEM file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Generating or parsing a certificate failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// Building the TLS configuration failed.
    #[error("tls: {0}")]
    Tls(String),
    /// A join token could not be read.
    #[error("join token: {0}")]
    Token(String),
}

/// Result alias of this crate.
pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct CertPair {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// The cluster CA plus the API server's own certificates, kept as PEM files
/// in one directory.
pub struct ClusterPki {
    dir: PathBuf,
    ca: CertPair,
    /// How long the certificates this CA issues itself live.
    leaf_seconds: u64,
}

/// Certificates with less than this left are issued anew when loaded (at
/// start), as k3s renews its certificates within 90 days of their end.
pub const RENEW_WITHIN: std::time::Duration = std::time::Duration::from_secs(90 * 86_400);

/// When a PEM certificate ends (seconds since the epoch).
pub fn not_after(cert_pem: &str) -> Option<i64> {
    let der = pem_certs(cert_pem).ok()?.into_iter().next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io { path: path.to_path_buf(), source })
}

pub(crate) fn write(path: &Path, contents: &str, secret: bool) -> Result<()> {
    let io = |source| PkiError::Io { path: path.to_path_buf(), source };
    std::fs::write(path, contents).map_err(io)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// Ten years, like the certificates kubeadm's CA gets.
const CA_DAYS: i64 = 3650;
/// One year, like kubeadm's leaf certificates.
const LEAF_DAYS: i64 = 365;

fn validity(params: &mut CertificateParams, days: i64) {
    validity_seconds(params, days as u64 * 86_400);
}

fn validity_seconds(params: &mut CertificateParams, seconds: u64) {
    let now = time_now();
    params.not_before = now - std::time::Duration::from_secs(3600.min(seconds / 2));
    params.not_after = now + std::time::Duration::from_secs(seconds);
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

impl ClusterPki {
    /// Loads the CA from `dir`, creating it (and the directory) on first use.
    pub fn load_or_create(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| PkiError::Io { path: dir.clone(), source })?;
        let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let ca = if crt.exists() && key.exists() {
            CertPair { cert_pem: read(&crt)?, key_pem: read(&key)? }
        } else {
            let key_pair = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "skiff-ca");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            validity(&mut params, CA_DAYS);
            let cert = params.self_signed(&key_pair)?;
            let pair = CertPair { cert_pem: cert.pem(), key_pem: key_pair.serialize_pem() };
            write(&key, &pair.key_pem, true)?;
            write(&crt, &pair.cert_pem, false)?;
            pair
        };
        Ok(Self { dir, ca, leaf_seconds: LEAF_DAYS as u64 * 86_400 })
    }

    /// The same CA, issuing its own certificates for `lifetime` (one year
    /// by default; short ones let a test watch renewals).
    pub fn with_leaf_lifetime(mut self, lifetime: std::time::Duration) -> Self {
        self.leaf_seconds = lifetime.as_secs().max(60);
        self
    }

    /// The CA certificate (PEM).
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// Path of the CA certificate file.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn sign(&self, mut params: CertificateParams) -> Result<CertPair> {
        let ca_key = KeyPair::from_pem(&self.ca.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca.cert_pem, ca_key)?;
        let key = KeyPair::generate()?;
        validity_seconds(&mut params, self.leaf_seconds);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Issues a client certificate for user `cn`, member of `group`.
    pub fn issue_client(&self, cn: &str, group: Option<&str>) -> Result<CertPair> {
        self.sign(client_params(cn, group)?)
    }

    /// Issues a serving certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, cn: &str, names: &[String]) -> Result<CertPair> {
        self.sign(server_params(cn, names)?)
    }

    /// Issues a certificate an etcd member both serves and dials its peers
    /// with (server and client authentication), for its names and addresses.
    pub fn issue_peer(&self, cn: &str, names: &[String]) -> Result<CertPair> {
        let mut params = server_params(cn, names)?;
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        self.sign(params)
    }

    /// Signs a certificate request (PEM) whose key stays with the requester.
    /// Only the request's public key is used: subject, names and usages
    /// come from `what`, never from the request.
    pub fn sign_request(&self, csr_pem: &str, what: &Usage) -> Result<String> {
        self.sign_request_for(csr_pem, what, self.leaf_seconds)
    }

    /// Signs a certificate request (PEM) for `what`, valid for `seconds`
    /// (capped by the CA's own end), as the certificates API's signers do.
    pub fn sign_request_for(&self, csr_pem: &str, what: &Usage, seconds: u64) -> Result<String> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = match what {
            Usage::Client { user, group } => client_params(user, group.as_deref())?,
            Usage::Server { name, names } => server_params(name, names)?,
        };
        let now = time_now();
        // Backdated for clocks a little behind, by five minutes, or half the
        // lifetime of a short certificate (a kubelet renews at 70–90 % of
        // the span, which the backdate must not fill).
        params.not_before = now - std::time::Duration::from_secs(300.min(seconds / 2));
        params.not_after = now + std::time::Duration::from_secs(seconds);
        csr.params = params;
        let ca_key = KeyPair::from_pem(&self.ca.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca.cert_pem, ca_key)?;
        Ok(csr.signed_by(&issuer)?.pem())
    }

    /// Loads `name.crt`/`name.key` from the PKI directory, issuing them with
    /// `issue` when absent.
    /// A certificate within [`RENEW_WITHIN`] of its end (or unreadable) is
    /// issued anew.
    pub fn load_or_issue(&self, name: &str, issue: impl FnOnce(&Self) -> Result<CertPair>) -> Result<CertPair> {
        let (crt, key) = (self.dir.join(format!("{name}.crt")), self.dir.join(format!("{name}.key")));
        if crt.exists() && key.exists() {
            let pair = CertPair { cert_pem: read(&crt)?, key_pem: read(&key)? };
            let now = time_now().unix_timestamp();
            let fresh = not_after(&pair.cert_pem).is_some_and(|end| end - now > RENEW_WITHIN.as_secs() as i64);
            if fresh {
                return Ok(pair);
            }
            tracing::info!(certificate = name, "renewing a certificate within 90 days of its end");
        }
        let pair = issue(self)?;
        write(&key, &pair.key_pem, true)?;
        write(&crt, &pair.cert_pem, false)?;
        Ok(pair)
    }

    /// A TLS server configuration that presents `serving` and asks clients
    /// for a certificate signed by the cluster CA, without requiring one (a
    /// bearer token may authenticate instead).
    pub fn server_tls(&self, serving: &CertPair, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>> {
        server_tls(&self.ca.cert_pem, serving, alpn)
    }

    /// A TLS client configuration that trusts only the cluster CA and
    /// presents `client` (the API server's identity towards kubelets).
    pub fn client_tls(&self, client: &CertPair) -> Result<Arc<rustls::ClientConfig>> {
        client_tls(&self.ca.cert_pem, client)
    }
}

fn tls_err(e: &dyn std::fmt::Display) -> PkiError {
    PkiError::Tls(e.to_string())
}

fn roots(ca_pem: &str) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certs(ca_pem)? {
        roots.add(cert).map_err(|e| tls_err(&e))?;
    }
    Ok(roots)
}

fn private_key(pair: &CertPair) -> Result<rustls::pki_types::PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut pair.key_pem.as_bytes()).map_err(|e| tls_err(&e))?.ok_or_else(|| PkiError::Tls("no private key in PEM".into()))
}

/// A TLS server configuration presenting `serving` that asks clients for a
/// certificate signed by the CA in `ca_pem`, without requiring one. Used
/// where only the CA certificate is at hand (a joined node's kubelet).
pub fn server_tls(ca_pem: &str, serving: &CertPair, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>> {
    server_tls_from(ca_pem, CertSlot::new(serving)?, alpn)
}

/// [`server_tls`] presenting whatever `slot` holds at each handshake (a
/// kubelet renewing its serving certificate while it runs).
pub fn server_tls_from(ca_pem: &str, slot: Arc<CertSlot>, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_err(&e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(slot);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// A TLS client configuration that trusts only the CA in `ca_pem` and
/// presents whatever `slot` holds at each handshake (a kubelet renewing its
/// client certificate while it runs).
pub fn client_tls_from(ca_pem: &str, slot: Arc<CertSlot>) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&e))?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_cert_resolver(slot);
    Ok(Arc::new(cfg))
}

/// A TLS client configuration that trusts only the CAs in `ca_pem` and
/// presents no certificate (the API server calling admission webhooks).
pub fn trusting(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&e))?
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A TLS client configuration that presents `client` and does not verify
/// the server (an APIService with `insecureSkipTLSVerify`, as
/// metrics-server is commonly registered).
pub fn client_tls_unverified(client: &CertPair) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(NoServerVerification(provider.clone()));
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(CertSlot::new(client)?);
    Ok(Arc::new(cfg))
}

/// Accepts any server certificate (signatures are still checked, so the
/// handshake is with the key the certificate names).
#[derive(Debug)]
struct NoServerVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A certificate and its key that TLS configurations built with
/// [`server_tls_from`] and [`client_tls_from`] present, replaceable while
/// they are in use: new handshakes present the new pair.
#[derive(Debug)]
pub struct CertSlot {
    current: std::sync::RwLock<(CertPair, Arc<rustls::sign::CertifiedKey>)>,
}

impl CertSlot {
    /// A slot holding `pair`.
    pub fn new(pair: &CertPair) -> Result<Arc<Self>> {
        Ok(Arc::new(Self { current: std::sync::RwLock::new((pair.clone(), certified(pair)?)) }))
    }

    /// Puts `pair` in place of what the slot holds (checked first: a pair
    /// that does not load leaves the slot as it was).
    pub fn replace(&self, pair: &CertPair) -> Result<()> {
        let key = certified(pair)?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (pair.clone(), key);
        Ok(())
    }

    /// The pair the slot holds.
    pub fn pair(&self) -> CertPair {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).0.clone()
    }

    fn key(&self) -> Arc<rustls::sign::CertifiedKey> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).1.clone()
    }
}

fn certified(pair: &CertPair) -> Result<Arc<rustls::sign::CertifiedKey>> {
    let provider = rustls::crypto::ring::default_provider();
    let key = provider.key_provider.load_private_key(private_key(pair)?).map_err(|e| tls_err(&e))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(pem_certs(&pair.cert_pem)?, key)))
}

impl rustls::server::ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.key())
    }
}

impl rustls::client::ResolvesClientCert for CertSlot {
    fn resolve(&self, _issuers: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// When a PEM certificate begins (seconds since the epoch).
pub fn not_before(cert_pem: &str) -> Option<i64> {
    let der = pem_certs(cert_pem).ok()?.into_iter().next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.validity().not_before.timestamp())
}

/// A TLS client configuration that trusts only the CA in `ca_pem` and
/// presents `client`.
pub fn client_tls(ca_pem: &str, client: &CertPair) -> Result<Arc<rustls::ClientConfig>> {
    client_tls_from(ca_pem, CertSlot::new(client)?)
}

/// What a signed certificate is for.
#[derive(Debug, Clone)]
pub enum Usage {
    /// Client authentication as `user` in `group`.
    Client {
        /// The user (CN).
        user: String,
        /// The group (O).
        group: Option<String>,
    },
    /// Serving as `name` for the DNS names and IP addresses in `names`.
    Server {
        /// The subject CN.
        name: String,
        /// Subject alternative names.
        names: Vec<String>,
    },
}

/// Certificate parameters for a client: user = CN, group = O.
///
/// One group at most: rcgen keeps one value per attribute type in a
/// subject, so several O attributes cannot be written (they can be read).
fn client_params(cn: &str, group: Option<&str>) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = subject(cn, group);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// A subject naming `cn` in organization `org`.
fn subject(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

/// Certificate parameters for a server with the given DNS names and IPs.
fn server_params(cn: &str, names: &[String]) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    let mut seen = std::collections::BTreeSet::new();
    for n in names.iter().filter(|n| !n.is_empty() && seen.insert(n.to_string())) {
        params.subject_alt_names.push(match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(n.as_str().try_into()?),
        });
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

/// A new private key and a certificate request for it (PEM), to be signed
/// by [`ClusterPki::sign_request`] elsewhere.
pub fn new_request() -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::new(Vec::<String>::new())?.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// A new private key and a certificate request for it naming `cn` in
/// organization `org` (PEM request, PEM key).
pub fn new_request_for(cn: &str, org: Option<&str>) -> Result<(String, String)> {
    new_request_naming(cn, org, &[])
}

/// [`new_request_for`] that also asks for DNS names and IP addresses
/// (`names`: a serving certificate's).
pub fn new_request_naming(cn: &str, org: Option<&str>, names: &[String]) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = subject(cn, org);
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// What a certificate request (PEM) asks for: its subject's CN and
/// organizations, and its DNS names and IP addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestSubject {
    /// The common name.
    pub common_name: String,
    /// The organizations (groups, for a client certificate).
    pub organizations: Vec<String>,
    /// Subject alternative names: DNS names and IP addresses, as text.
    pub names: Vec<String>,
}

/// Reads a certificate request's subject and names; `None` when it is not
/// a PEM certificate request whose signature verifies.
pub fn request_subject(csr_pem: &str) -> Option<RequestSubject> {
    use x509_parser::prelude::*;
    let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).ok()?;
    if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
        return None;
    }
    let (_, req) = X509CertificationRequest::from_der(&pem.contents).ok()?;
    req.verify_signature().ok()?;
    let subject = &req.certification_request_info.subject;
    let text = |a: &x509_parser::x509::AttributeTypeAndValue| a.as_str().ok().map(String::from);
    let mut out = RequestSubject {
        common_name: subject.iter_common_name().next().and_then(text).unwrap_or_default(),
        organizations: subject.iter_organization().filter_map(text).collect(),
        names: Vec::new(),
    };
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for n in &san.general_names {
                match n {
                    GeneralName::DNSName(d) => out.names.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => out.names.push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
                        16 => {
                            let mut a = [0u8; 16];
                            a.copy_from_slice(b);
                            out.names.push(std::net::Ipv6Addr::from(a).to_string());
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
    }
    Some(out)
}

fn pem_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    rustls_pemfile::certs(&mut pem.as_bytes()).collect::<std::result::Result<Vec<_>, _>>().map_err(|e| PkiError::Tls(e.to_string()))
}

/// A kubeconfig naming `server`, the CA that verifies it, and a client
/// certificate and key for `user` (all as file paths; kubectl resolves
/// relative ones against the kubeconfig's folder, so pass absolute ones).
pub fn kubeconfig_yaml(server: &str, ca: &Path, cert: &Path, key: &Path, user: &str, namespace: Option<&str>) -> String {
    let ns = namespace.map(|n| format!("    namespace: {n}\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: {user}\n{ns}current-context: skiff\n",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

/// The user a verified client certificate names: CN is the user name, each O
/// a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The user name (CN).
    pub user: String,
    /// The groups (O).
    pub groups: Vec<String>,
}

/// Reads user and groups from a DER certificate (already verified by TLS).
pub fn identity_of(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    Some(CertIdentity { user, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_requests_tell_their_subject() {
        let (csr, _) = new_request_for("alice", Some("dev")).expect("request");
        let subject = request_subject(&csr).expect("parses");
        assert_eq!((subject.common_name.as_str(), subject.organizations.clone()), ("alice", vec!["dev".to_string()]));
        assert!(request_subject("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n").is_none());
        let dir = tempfile_dir("csr-subject");
        let pki = ClusterPki::load_or_create(&dir).expect("pki");
        let cert = pki.sign_request_for(&csr, &Usage::Client { user: "alice".into(), group: Some("dev".into()) }, 600).expect("signs");
        let der = pem_certs(&cert).expect("pem").remove(0);
        assert_eq!(identity_of(der.as_ref()).expect("identity").user, "alice");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn client_identity_round_trips() {
        let dir = tempfile_dir("identity");
        let pki = ClusterPki::load_or_create(&dir).expect("pki");
        let pair = pki.issue_client("alice", Some("system:masters")).expect("issue");
        let der = pem_certs(&pair.cert_pem).expect("pem").remove(0);
        let id = identity_of(&der).expect("identity");
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, vec!["system:masters"]);
        // The CA is reused, not regenerated, on the next load.
        let again = ClusterPki::load_or_create(&dir).expect("reload");
        assert_eq!(again.ca_cert_pem(), pki.ca_cert_pem());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn signed_requests_carry_the_signers_identity_not_the_requesters() {
        let dir = tempfile_dir("csr");
        let pki = ClusterPki::load_or_create(&dir).expect("pki");
        // The request names an admin; the signer decides who it is.
        let key = KeyPair::generate().expect("key");
        let mut asked = client_params("admin", Some("system:masters")).expect("params");
        asked.distinguished_name.push(DnType::CommonName, "admin");
        let csr = asked.serialize_request(&key).expect("csr").pem().expect("pem");
        let usage = Usage::Client { user: "system:node:n1".into(), group: Some("system:nodes".into()) };
        let cert = pki.sign_request(&csr, &usage).expect("sign");
        let der = pem_certs(&cert).expect("pem").remove(0);
        assert_eq!(identity_of(&der).expect("identity"), CertIdentity { user: "system:node:n1".into(), groups: vec!["system:nodes".into()] });
        // The key never left the requester, and the pair works for TLS.
        let pair = CertPair { cert_pem: cert, key_pem: key.serialize_pem() };
        client_tls(pki.ca_cert_pem(), &pair).expect("client tls");
        assert!(pki.sign_request("not a csr", &usage).is_err());
        let (csr, key) = new_request().expect("request");
        let serving = pki.sign_request(&csr, &Usage::Server { name: "n1".into(), names: vec!["n1".into(), "10.0.0.1".into()] }).expect("sign");
        server_tls(pki.ca_cert_pem(), &CertPair { cert_pem: serving, key_pem: key }, &[]).expect("server tls");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A fresh directory per test: tests run in parallel threads of one
    /// process, so the pid alone is not enough (one test removed the
    /// other's directory).
    fn tempfile_dir(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("skiff-pki-test-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}

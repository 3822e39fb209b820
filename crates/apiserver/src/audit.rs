//! The audit log, as kube-apiserver's `--audit-log-path` and
//! `--audit-policy-file`: an `audit.k8s.io/v1` Policy picks a level per
//! request (the first rule that matches its user, groups, verb, resources,
//! namespaces or non-resource URLs; none matching is `None`), and each
//! request at `Metadata` or above is written as `audit.k8s.io/v1` Events,
//! one JSON line per stage (`RequestReceived`, then `ResponseComplete`, or
//! `ResponseStarted` for watches and streams, whose end is not recorded),
//! with the request body at `Request` and the response at
//! `RequestResponse`. A thread of its own writes the file and rotates it
//! by size (`--audit-log-maxsize`, `--audit-log-maxbackup`), so no request
//! waits for the disk.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use skiff_api::rbac::{Attributes, UserInfo};

/// Errors reading a policy.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The policy is not an `audit.k8s.io/v1` Policy.
    #[error("audit policy: {0}")]
    Policy(String),
}

/// How much of a request is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing.
    None,
    /// Who, what, when and the answer's code.
    Metadata,
    /// And the request's body.
    Request,
    /// And the answer's body.
    RequestResponse,
}

impl Level {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "None" => Some(Level::None),
            "Metadata" => Some(Level::Metadata),
            "Request" => Some(Level::Request),
            "RequestResponse" => Some(Level::RequestResponse),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    level: Level,
    users: Vec<String>,
    groups: Vec<String>,
    verbs: Vec<String>,
    namespaces: Vec<String>,
    /// (group, resources, resourceNames).
    resources: Vec<(String, Vec<String>, Vec<String>)>,
    urls: Vec<String>,
    omit_stages: Vec<String>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect()).unwrap_or_default()
}

impl Rule {
    fn matches(&self, user: &UserInfo, a: &Attributes) -> bool {
        if !self.users.is_empty() && !self.users.contains(&user.name) {
            return false;
        }
        if !self.groups.is_empty() && !user.groups.iter().any(|g| self.groups.contains(g)) {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.contains(&a.verb) {
            return false;
        }
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            if !a.resource_request {
                return false;
            }
            if !self.namespaces.is_empty() && !self.namespaces.contains(&a.namespace) {
                return false;
            }
            if !self.resources.is_empty() {
                let combined = if a.subresource.is_empty() { a.resource.clone() } else { format!("{}/{}", a.resource, a.subresource) };
                let hit = self.resources.iter().any(|(group, resources, names)| {
                    *group == a.group
                        && (resources.is_empty()
                            || resources.iter().any(|r| {
                                r == "*" || *r == combined || (r == &format!("{}/*", a.resource)) || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
                            }))
                        && (names.is_empty() || names.contains(&a.name))
                });
                if !hit {
                    return false;
                }
            }
        }
        if !self.urls.is_empty() {
            if a.resource_request {
                return false;
            }
            return self.urls.iter().any(|u| u == &a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p)));
        }
        true
    }
}

/// An `audit.k8s.io/v1` Policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    omit_stages: Vec<String>,
}

impl Policy {
    /// Parses a policy (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, AuditError> {
        let doc: Value = serde_yaml::from_str(text).map_err(|e| AuditError::Policy(e.to_string()))?;
        if doc.get("kind").and_then(Value::as_str) != Some("Policy") {
            return Err(AuditError::Policy("kind must be Policy".into()));
        }
        let mut rules = Vec::new();
        for (i, r) in doc.get("rules").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let level = r.get("level").and_then(Value::as_str).unwrap_or_default();
            let level = Level::parse(level).ok_or_else(|| AuditError::Policy(format!("rules[{i}].level: Unsupported value: {level:?}")))?;
            let resources = r
                .get("resources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|g| (g.get("group").and_then(Value::as_str).unwrap_or_default().to_string(), strings(g.get("resources")), strings(g.get("resourceNames"))))
                .collect();
            rules.push(Rule {
                level,
                users: strings(r.get("users")),
                groups: strings(r.get("userGroups")),
                verbs: strings(r.get("verbs")),
                namespaces: strings(r.get("namespaces")),
                resources,
                urls: strings(r.get("nonResourceURLs")),
                omit_stages: strings(r.get("omitStages")),
            });
        }
        Ok(Self { rules, omit_stages: strings(doc.get("omitStages")) })
    }

    /// The level of a request, and the stages not to record.
    pub(crate) fn level(&self, user: &UserInfo, a: &Attributes) -> (Level, Vec<String>) {
        match self.rules.iter().find(|r| r.matches(user, a)) {
            Some(r) => (r.level, self.omit_stages.iter().chain(&r.omit_stages).cloned().collect()),
            None => (Level::None, Vec::new()),
        }
    }
}

/// Where and how the audit log is written.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `--audit-log-path`.
    pub path: PathBuf,
    /// `--audit-policy-file`, read at start.
    pub policy: PathBuf,
    /// `--audit-log-maxsize`: megabytes before the file is rotated (0: never).
    pub max_size_mb: u64,
    /// `--audit-log-maxbackup`: rotated files kept (0: all).
    pub max_backups: usize,
}

/// The audit log of a running server.
pub(crate) struct Auditor {
    policy: Policy,
    lines: std::sync::mpsc::Sender<String>,
}

impl Auditor {
    /// Reads the policy and starts the writer thread.
    pub(crate) fn start(cfg: &AuditConfig) -> Result<Self, AuditError> {
        let text = std::fs::read_to_string(&cfg.policy).map_err(|source| AuditError::Io { path: cfg.policy.display().to_string(), source })?;
        let policy = Policy::parse(&text)?;
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| AuditError::Io { path: dir.display().to_string(), source })?;
        }
        let (lines, rx) = std::sync::mpsc::channel::<String>();
        let (path, max, keep) = (cfg.path.clone(), cfg.max_size_mb * 1024 * 1024, cfg.max_backups);
        std::thread::Builder::new()
            .name("skiff-audit".into())
            .spawn(move || write_loop(&path, max, keep, rx))
            .map_err(|source| AuditError::Io { path: cfg.path.display().to_string(), source })?;
        Ok(Self { policy, lines })
    }

    /// The level of a request.
    pub(crate) fn level(&self, user: &UserInfo, a: &Attributes) -> (Level, Vec<String>) {
        self.policy.level(user, a)
    }

    /// Queues one event for the writer (never waits).
    pub(crate) fn record(&self, event: &Value) {
        let _ = self.lines.send(event.to_string());
    }
}

/// Appends lines; past `max` bytes the file is renamed with a timestamp
/// (`audit-2026-12-06T21-00-00.000.log`, as kube's rotation names it) and
/// only the newest `keep` of those stay. Ends when the server drops its
/// sender.
fn write_loop(path: &Path, max: u64, keep: usize, rx: std::sync::mpsc::Receiver<String>) {
    let open = || std::fs::OpenOptions::new().create(true).append(true).open(path);
    let mut file = open().ok();
    let mut size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    while let Ok(line) = rx.recv() {
        if max > 0 && size + line.len() as u64 + 1 > max && size > 0 {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("audit");
            let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("log");
            let stamp = chrono::Utc::now().format("%Y-%m-%dT%H-%M-%S%.3f").to_string();
            let mut rotated = path.with_file_name(format!("{stem}-{stamp}.{ext}"));
            let mut n = 1;
            while rotated.exists() {
                rotated = path.with_file_name(format!("{stem}-{stamp}-{n}.{ext}"));
                n += 1;
            }
            drop(file.take());
            let _ = std::fs::rename(path, &rotated);
            if keep > 0 {
                let dir = path.parent().unwrap_or(Path::new("."));
                let mut old: Vec<PathBuf> = std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{stem}-")) && n.ends_with(&format!(".{ext}"))))
                    .collect();
                old.sort();
                while old.len() > keep {
                    let _ = std::fs::remove_file(old.remove(0));
                }
            }
            file = open().ok();
            size = 0;
        }
        if let Some(f) = file.as_mut() {
            if writeln!(f, "{line}").is_ok() {
                size += line.len() as u64 + 1;
            }
        }
    }
}

/// What a request was, for its events.
pub(crate) struct Request<'a> {
    pub(crate) id: String,
    pub(crate) level: Level,
    pub(crate) uri: String,
    pub(crate) attrs: &'a Attributes,
    pub(crate) user: &'a UserInfo,
    pub(crate) impersonated: Option<&'a UserInfo>,
    pub(crate) source: Option<std::net::IpAddr>,
    pub(crate) agent: String,
    pub(crate) received: String,
}

fn user_json(u: &UserInfo) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    if !u.extra.is_empty() {
        v["extra"] = u.extra.iter().map(|(k, vs)| (k.clone(), json!(vs))).collect::<serde_json::Map<String, Value>>().into();
    }
    v
}

/// The time as audit events print it (microseconds, UTC).
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One event of a request at `stage`.
pub(crate) fn event(r: &Request<'_>, stage: &str, code: Option<u16>, decision: Option<(&str, &str)>, request: Option<&Value>, response: Option<&Value>) -> Value {
    let a = r.attrs;
    let mut e = json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": r.level.as_str(), "auditID": r.id, "stage": stage,
        "requestURI": r.uri, "verb": a.verb, "user": user_json(r.user),
        "sourceIPs": r.source.map(|ip| vec![ip.to_string()]).unwrap_or_default(), "userAgent": r.agent,
        "requestReceivedTimestamp": r.received, "stageTimestamp": now(),
    });
    if let Some(i) = r.impersonated {
        e["impersonatedUser"] = user_json(i);
    }
    if a.resource_request {
        let mut o = json!({"resource": a.resource, "apiVersion": a.version});
        // A create names its object in the body, not the path.
        let named = request.or(response).and_then(|b| b.pointer("/metadata/name")).and_then(Value::as_str).unwrap_or_default().to_string();
        let name = if a.name.is_empty() { &named } else { &a.name };
        for (k, v) in [("namespace", &a.namespace), ("name", name), ("apiGroup", &a.group), ("subresource", &a.subresource)] {
            if !v.is_empty() {
                o[k] = json!(v);
            }
        }
        e["objectRef"] = o;
    }
    if let Some(code) = code {
        e["responseStatus"] = json!({"metadata": {}, "code": code});
    }
    if let Some((decision, reason)) = decision {
        e["annotations"] = json!({"authorization.k8s.io/decision": decision, "authorization.k8s.io/reason": reason});
    }
    if let Some(body) = request.filter(|_| r.level >= Level::Request) {
        e["requestObject"] = body.clone();
    }
    if let Some(body) = response.filter(|_| r.level >= Level::RequestResponse) {
        e["responseObject"] = body.clone();
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_rule_decides() {
        let policy = Policy::parse(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
             - level: None\n  users: [system:kube-proxy]\n  verbs: [watch]\n\
             - level: RequestResponse\n  resources: [{group: \"\", resources: [secrets]}]\n  namespaces: [prod]\n\
             - level: Metadata\n  resources: [{group: \"\", resources: [pods/log, \"*/status\"]}]\n\
             - level: None\n  nonResourceURLs: [/healthz*]\n\
             - level: Request\n",
        )
        .expect("parses");
        let user = |name: &str| UserInfo { name: name.into(), groups: vec!["system:authenticated".into()], ..Default::default() };
        let req = |m: &str, p: &str, q: Option<&str>| Attributes::from_request(m, p, q);
        assert_eq!(policy.level(&user("system:kube-proxy"), &req("GET", "/api/v1/services", Some("watch=true"))).0, Level::None);
        assert_eq!(policy.level(&user("alice"), &req("GET", "/api/v1/namespaces/prod/secrets/db", None)).0, Level::RequestResponse);
        assert_eq!(policy.level(&user("alice"), &req("GET", "/api/v1/namespaces/dev/secrets/db", None)).0, Level::Request);
        assert_eq!(policy.level(&user("alice"), &req("GET", "/api/v1/namespaces/dev/pods/web/log", None)).0, Level::Metadata);
        assert_eq!(policy.level(&user("alice"), &req("PUT", "/apis/apps/v1/namespaces/dev/deployments/web/status", None)).0, Level::Request, "wrong group");
        assert_eq!(policy.level(&user("alice"), &req("GET", "/healthz/etcd", None)).0, Level::None);
        let (_, omit) = policy.level(&user("alice"), &req("GET", "/version", None));
        assert_eq!(omit, vec!["RequestReceived".to_string()]);
        assert!(Policy::parse("kind: Policy\nrules: [{level: Loud}]\n").is_err());
    }

    #[test]
    fn the_log_rotates_by_size_and_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..40 {
            tx.send(format!("{{\"line\":{i:04}}}")).expect("send");
        }
        drop(tx);
        // 15-byte lines, 100-byte files: 6 lines a file, 2 rotated kept.
        write_loop(&path, 100, 2, rx);
        let rotated: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").flatten().filter(|e| e.file_name() != "audit.log").collect();
        assert_eq!(rotated.len(), 2, "rotated files kept");
        let current = std::fs::read_to_string(&path).expect("current");
        assert!(current.ends_with("{\"line\":0039}\n"), "{current}");
        assert!(current.len() <= 100);
    }
}

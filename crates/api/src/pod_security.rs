//! The Pod Security Standards (`privileged`, `baseline`, `restricted`), as
//! the PodSecurity admission plugin checks a pod spec, with its wording:
//! `violates PodSecurity "restricted:latest": allowPrivilegeEscalation !=
//! false (container "c" must set securityContext.allowPrivilegeEscalation=false), …`.
//! The checks are those of the latest version; a namespace pinned to an
//! older `*-version` is held to them too.

use serde_json::Value;

/// A level of the standards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Anything goes.
    Privileged,
    /// Known privilege escalations are refused.
    Baseline,
    /// Hardened best practice.
    Restricted,
}

impl Level {
    /// Parses a namespace label's value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// The namespace label of a mode (`enforce`, `audit`, `warn`).
pub fn label(mode: &str) -> String {
    format!("pod-security.kubernetes.io/{mode}")
}

/// One failed check: the reason and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Short reason (`privileged`, `hostPath volumes`).
    pub reason: String,
    /// What must change.
    pub detail: String,
}

/// `"restricted:latest": reason (detail), …`, as kube words a violation list.
pub fn message(level: Level, version: &str, violations: &[Violation]) -> String {
    let parts: Vec<String> = violations.iter().map(|v| format!("{} ({})", v.reason, v.detail)).collect();
    format!("\"{}:{version}\": {}", level.as_str(), parts.join(", "))
}

/// `container "a"` or `containers "a", "b"`.
fn containers_phrase(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    if names.len() == 1 {
        format!("container {}", quoted[0])
    } else {
        format!("containers {}", quoted.join(", "))
    }
}

fn plural(word: &str, names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    if names.len() == 1 {
        format!("{word} {}", quoted[0])
    } else {
        format!("{word}s {}", quoted.join(", "))
    }
}

const BASELINE_CAPABILITIES: &[&str] =
    &["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"];
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
const RESTRICTED_VOLUMES: &[&str] = &["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];
const SELINUX_TYPES: &[&str] = &["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"];

/// Every container of a pod spec (init and ephemeral ones too), with its name.
fn containers(spec: &Value) -> Vec<(String, &Value)> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec.get(*k).and_then(Value::as_array).into_iter().flatten())
        .map(|c| (c.get("name").and_then(Value::as_str).unwrap_or_default().to_string(), c))
        .collect()
}

fn s<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.pointer(path).and_then(Value::as_str)
}

/// The checks a pod spec fails at `level`.
pub fn check(level: Level, spec: &Value, metadata: &Value) -> Vec<Violation> {
    // (check id, violation): kube runs its checks in the order of their ids.
    let mut out: Vec<(&str, Violation)> = Vec::new();
    if level == Level::Privileged {
        return Vec::new();
    }
    let cs = containers(spec);
    let pod_sc = spec.get("securityContext").cloned().unwrap_or(Value::Null);
    let mut push = |id: &'static str, reason: &str, detail: String| out.push((id, Violation { reason: reason.into(), detail }));

    // Baseline.
    let host: Vec<String> =
        ["hostNetwork", "hostPID", "hostIPC"].iter().filter(|k| spec.get(**k).and_then(Value::as_bool) == Some(true)).map(|k| format!("{k}=true")).collect();
    if !host.is_empty() {
        push("hostNamespaces", "host namespaces", host.join(", "));
    }
    let privileged: Vec<String> =
        cs.iter().filter(|(_, c)| c.pointer("/securityContext/privileged").and_then(Value::as_bool) == Some(true)).map(|(n, _)| n.clone()).collect();
    if !privileged.is_empty() {
        push("privileged", "privileged", format!("{} must not set securityContext.privileged=true", containers_phrase(&privileged)));
    }
    let added = added_capabilities(&cs, |cap| !BASELINE_CAPABILITIES.contains(&cap));
    if !added.is_empty() {
        let names: Vec<String> = added.iter().map(|(n, _)| n.clone()).collect();
        let mut caps: Vec<String> = added.iter().flat_map(|(_, c)| c.iter().cloned()).collect();
        caps.dedup();
        push("capabilities_baseline", "non-default capabilities", format!("{} must not include {} in securityContext.capabilities.add", containers_phrase(&names), caps.join(", ")));
    }
    let volumes = spec.get("volumes").and_then(Value::as_array).cloned().unwrap_or_default();
    let host_paths: Vec<String> =
        volumes.iter().filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null())).filter_map(|v| v.get("name").and_then(Value::as_str)).map(String::from).collect();
    if !host_paths.is_empty() {
        push("hostPathVolumes", "hostPath volumes", plural("volume", &host_paths));
    }
    let mut host_ports = Vec::new();
    for (n, c) in &cs {
        for p in c.get("ports").and_then(Value::as_array).into_iter().flatten() {
            if let Some(hp) = p.get("hostPort").and_then(Value::as_i64).filter(|p| *p != 0) {
                host_ports.push(format!("{} uses hostPort {hp}", containers_phrase(std::slice::from_ref(n))));
            }
        }
    }
    if !host_ports.is_empty() {
        push("hostPorts", "hostPort", host_ports.join(", "));
    }
    let apparmor_bad = |v: Option<&str>| v == Some("Unconfined");
    let mut apparmor = Vec::new();
    if apparmor_bad(s(&pod_sc, "/appArmorProfile/type")) {
        apparmor.push("pod must not set securityContext.appArmorProfile.type to \"Unconfined\"".to_string());
    }
    for (n, c) in &cs {
        if apparmor_bad(s(c, "/securityContext/appArmorProfile/type")) {
            apparmor.push(format!("{} must not set securityContext.appArmorProfile.type to \"Unconfined\"", containers_phrase(std::slice::from_ref(n))));
        }
    }
    for (k, v) in metadata.get("annotations").and_then(Value::as_object).into_iter().flatten() {
        if k.starts_with("container.apparmor.security.beta.kubernetes.io/") && v.as_str().is_some_and(|v| v != "runtime/default" && !v.starts_with("localhost/")) {
            apparmor.push(format!("annotation {k:?}={v}"));
        }
    }
    if !apparmor.is_empty() {
        push("appArmorProfile", "forbidden AppArmor profile", apparmor.join(", "));
    }
    let selinux_bad = |sc: &Value| {
        sc.get("seLinuxOptions").is_some_and(|o| {
            !SELINUX_TYPES.contains(&o.get("type").and_then(Value::as_str).unwrap_or_default())
                || o.get("user").and_then(Value::as_str).is_some_and(|u| !u.is_empty())
                || o.get("role").and_then(Value::as_str).is_some_and(|r| !r.is_empty())
        })
    };
    let mut selinux: Vec<String> = Vec::new();
    if selinux_bad(&pod_sc) {
        selinux.push("pod".into());
    }
    selinux.extend(cs.iter().filter(|(_, c)| c.get("securityContext").is_some_and(selinux_bad)).map(|(n, _)| containers_phrase(std::slice::from_ref(n))));
    if !selinux.is_empty() {
        push("seLinuxOptions", "seLinuxOptions", format!("{} set forbidden securityContext.seLinuxOptions", selinux.join(", ")));
    }
    let unmasked: Vec<String> = cs
        .iter()
        .filter(|(_, c)| s(c, "/securityContext/procMount").is_some_and(|p| p != "Default"))
        .map(|(n, _)| n.clone())
        .collect();
    if !unmasked.is_empty() {
        push("procMount", "procMount", format!("{} must not set securityContext.procMount to \"Unmasked\"", containers_phrase(&unmasked)));
    }
    let mut unconfined = Vec::new();
    if s(&pod_sc, "/seccompProfile/type") == Some("Unconfined") {
        unconfined.push("pod".to_string());
    }
    let unconfined_containers: Vec<String> =
        cs.iter().filter(|(_, c)| s(c, "/securityContext/seccompProfile/type") == Some("Unconfined")).map(|(n, _)| n.clone()).collect();
    if !unconfined_containers.is_empty() {
        unconfined.push(containers_phrase(&unconfined_containers));
    }
    if !unconfined.is_empty() {
        push("seccompProfile_baseline", "seccompProfile", format!("{} must not set securityContext.seccompProfile.type to \"Unconfined\"", unconfined.join(" and ")));
    }
    let sysctls: Vec<String> = pod_sc
        .get("sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| x.get("name").and_then(Value::as_str))
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .map(String::from)
        .collect();
    if !sysctls.is_empty() {
        push("sysctls", "forbidden sysctls", sysctls.join(", "));
    }
    if level == Level::Baseline {
        return sorted(out, &[]);
    }

    // Restricted.
    let mut restricted_volumes = Vec::new();
    for v in &volumes {
        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if let Some(kind) = v.as_object().and_then(|o| o.keys().find(|k| *k != "name" && !RESTRICTED_VOLUMES.contains(&k.as_str()))) {
            restricted_volumes.push(format!("volume {name:?} uses restricted volume type {kind:?}"));
        }
    }
    if !restricted_volumes.is_empty() {
        push("restrictedVolumes", "restricted volume types", restricted_volumes.join(", "));
    }
    let escalating: Vec<String> = cs
        .iter()
        .filter(|(_, c)| c.pointer("/securityContext/allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false))
        .map(|(n, _)| n.clone())
        .collect();
    if !escalating.is_empty() {
        push("allowPrivilegeEscalation", "allowPrivilegeEscalation != false", format!("{} must set securityContext.allowPrivilegeEscalation=false", containers_phrase(&escalating)));
    }
    let pod_non_root = pod_sc.get("runAsNonRoot").and_then(Value::as_bool);
    let root_containers: Vec<String> = cs
        .iter()
        .filter(|(_, c)| match c.pointer("/securityContext/runAsNonRoot").and_then(Value::as_bool) {
            Some(v) => !v,
            None => pod_non_root != Some(true),
        })
        .map(|(n, _)| n.clone())
        .collect();
    if pod_non_root == Some(false) || !root_containers.is_empty() {
        let who = if pod_non_root == Some(false) {
            "pod".to_string()
        } else if pod_non_root.is_none() && root_containers.len() == cs.len() {
            format!("pod or {}", containers_phrase(&root_containers))
        } else {
            containers_phrase(&root_containers)
        };
        let verb = if who == "pod" { "must not set securityContext.runAsNonRoot=false" } else { "must set securityContext.runAsNonRoot=true" };
        push("runAsNonRoot", "runAsNonRoot != true", format!("{who} {verb}"));
    }
    let mut zero = Vec::new();
    if pod_sc.get("runAsUser").and_then(Value::as_i64) == Some(0) {
        zero.push("pod".to_string());
    }
    let zero_containers: Vec<String> = cs.iter().filter(|(_, c)| c.pointer("/securityContext/runAsUser").and_then(Value::as_i64) == Some(0)).map(|(n, _)| n.clone()).collect();
    if !zero_containers.is_empty() {
        zero.push(containers_phrase(&zero_containers));
    }
    if !zero.is_empty() {
        push("runAsUser", "runAsUser=0", format!("{} must not set runAsUser=0", zero.join(" and ")));
    }
    let good_seccomp = |t: Option<&str>| matches!(t, Some("RuntimeDefault") | Some("Localhost"));
    let pod_seccomp = good_seccomp(s(&pod_sc, "/seccompProfile/type"));
    let unset: Vec<String> = cs
        .iter()
        .filter(|(_, c)| match s(c, "/securityContext/seccompProfile/type") {
            Some(t) => !good_seccomp(Some(t)),
            None => !pod_seccomp,
        })
        .map(|(n, _)| n.clone())
        .collect();
    if !unset.is_empty() {
        let who = if !pod_seccomp && unset.len() == cs.len() { format!("pod or {}", containers_phrase(&unset)) } else { containers_phrase(&unset) };
        push("seccompProfile_restricted", "seccompProfile", format!("{who} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\""));
    }
    let no_drop: Vec<String> = cs
        .iter()
        .filter(|(_, c)| !c.pointer("/securityContext/capabilities/drop").and_then(Value::as_array).is_some_and(|d| d.iter().any(|x| x == "ALL")))
        .map(|(n, _)| n.clone())
        .collect();
    let extra_caps = added_capabilities(&cs, |cap| cap != "NET_BIND_SERVICE");
    if !no_drop.is_empty() || !extra_caps.is_empty() {
        let mut parts = Vec::new();
        if !no_drop.is_empty() {
            parts.push(format!("{} must set securityContext.capabilities.drop=[\"ALL\"]", containers_phrase(&no_drop)));
        }
        for (n, caps) in &extra_caps {
            parts.push(format!("{} must not include {} in securityContext.capabilities.add", containers_phrase(std::slice::from_ref(n)), caps.join(", ")));
        }
        push("capabilities_restricted", "unrestricted capabilities", parts.join("; "));
    }
    // The restricted checks replace their baseline versions.
    sorted(out, &["capabilities_baseline", "seccompProfile_baseline"])
}

/// Per container, the capabilities it adds that `forbidden` refuses, quoted.
fn added_capabilities(cs: &[(String, &Value)], forbidden: impl Fn(&str) -> bool) -> Vec<(String, Vec<String>)> {
    cs.iter()
        .filter_map(|(n, c)| {
            let caps: Vec<String> = c
                .pointer("/securityContext/capabilities/add")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|cap| forbidden(cap))
                .map(|cap| format!("{cap:?}"))
                .collect();
            (!caps.is_empty()).then(|| (n.clone(), caps))
        })
        .collect()
}

fn sorted(mut out: Vec<(&str, Violation)>, overridden: &[&str]) -> Vec<Violation> {
    out.retain(|(id, _)| !overridden.contains(id));
    out.sort_by(|a, b| a.0.cmp(b.0));
    out.into_iter().map(|(_, v)| v).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_privileged_pod_fails_baseline_with_kubes_words() {
        let spec = json!({"hostNetwork": true, "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": true, "capabilities": {"add": ["SYS_ADMIN", "CHOWN"]}},
            "ports": [{"containerPort": 80, "hostPort": 8080}]}], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]});
        let v = check(Level::Baseline, &spec, &json!({}));
        let text = message(Level::Baseline, "latest", &v);
        assert_eq!(
            text,
            "\"baseline:latest\": non-default capabilities (container \"c\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add), \
             host namespaces (hostNetwork=true), hostPath volumes (volume \"root\"), hostPort (container \"c\" uses hostPort 8080), \
             privileged (container \"c\" must not set securityContext.privileged=true)"
        );
        assert!(check(Level::Privileged, &spec, &json!({})).is_empty());
    }

    #[test]
    fn restricted_wants_the_hardened_settings_and_accepts_them() {
        let plain = json!({"containers": [{"name": "c", "image": "x"}]});
        assert!(check(Level::Baseline, &plain, &json!({})).is_empty(), "a plain pod is baseline");
        let text = message(Level::Restricted, "latest", &check(Level::Restricted, &plain, &json!({})));
        assert_eq!(
            text,
            "\"restricted:latest\": allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        let hardened = json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "x", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
            "volumes": [{"name": "data", "emptyDir": {}}]});
        assert_eq!(check(Level::Restricted, &hardened, &json!({})), vec![]);
    }
}

//! Kubernetes' RBAC bootstrap policy, as kube-apiserver creates and
//! reconciles it at start (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`
//! in Kubernetes v1.33): the cluster roles, the controllers' roles, the
//! roles in kube-system and kube-public, and their bindings.

/// One policy rule: empty slices mean "none" (not "all"); `*` is the wildcard.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Verbs (`get`, `list`, …, `*`).
    pub verbs: &'static [&'static str],
    /// API groups (`""` is the core group).
    pub groups: &'static [&'static str],
    /// Resources, `resource/subresource` for subresources.
    pub resources: &'static [&'static str],
    /// Names the rule is limited to.
    pub names: &'static [&'static str],
    /// Non-resource URLs (`/healthz`, `/api/*`).
    pub urls: &'static [&'static str],
}

/// A bootstrap ClusterRole or Role.
#[derive(Debug, Clone, Copy)]
pub struct BootstrapRole {
    /// Its name.
    pub name: &'static str,
    /// The namespace of a Role; `None` for a ClusterRole.
    pub namespace: Option<&'static str>,
    /// Labels besides `kubernetes.io/bootstrapping: rbac-defaults`
    /// (e.g. `rbac.authorization.k8s.io/aggregate-to-edit: "true"`).
    pub labels: &'static [(&'static str, &'static str)],
    /// Its rules (for an aggregated role: none; the aggregation controller fills them).
    pub rules: &'static [Rule],
    /// `aggregationRule.clusterRoleSelectors`, each a single matchLabels pair.
    pub aggregate_from: &'static [(&'static str, &'static str)],
}

/// A bootstrap ClusterRoleBinding or RoleBinding.
#[derive(Debug, Clone, Copy)]
pub struct BootstrapBinding {
    /// Its name.
    pub name: &'static str,
    /// The namespace of a RoleBinding; `None` for a ClusterRoleBinding.
    pub namespace: Option<&'static str>,
    /// `roleRef`: (`ClusterRole` or `Role`, name).
    pub role: (&'static str, &'static str),
    /// Subjects: (kind `User`/`Group`/`ServiceAccount`, name, namespace for ServiceAccounts or "").
    pub subjects: &'static [(&'static str, &'static str, &'static str)],
}

/// Shorthand for a resource rule.
pub const fn r(verbs: &'static [&'static str], groups: &'static [&'static str], resources: &'static [&'static str]) -> Rule {
    Rule { verbs, groups, resources, names: &[], urls: &[] }
}
/// Shorthand for a resource rule limited to names.
pub const fn rn(verbs: &'static [&'static str], groups: &'static [&'static str], resources: &'static [&'static str], names: &'static [&'static str]) -> Rule {
    Rule { verbs, groups, resources, names, urls: &[] }
}
/// Shorthand for a non-resource rule.
#[allow(clippy::redundant_field_names)]
const fn u(verbs: &'static [&'static str], urls: &'static [&'static str]) -> Rule {
    Rule { verbs: verbs, groups: &[], resources: &[], names: &[], urls }
}

/// A ClusterRole with rules only.
const fn cluster(name: &'static str, rules: &'static [Rule]) -> BootstrapRole {
    BootstrapRole { name, namespace: None, labels: &[], rules, aggregate_from: &[] }
}

/// A Role in a namespace.
const fn role(namespace: &'static str, name: &'static str, rules: &'static [Rule]) -> BootstrapRole {
    BootstrapRole { name, namespace: Some(namespace), labels: &[], rules, aggregate_from: &[] }
}

/// A ClusterRoleBinding.
const fn cluster_binding(name: &'static str, subjects: &'static [(&'static str, &'static str, &'static str)]) -> BootstrapBinding {
    BootstrapBinding { name, namespace: None, role: ("ClusterRole", name), subjects }
}

/// A RoleBinding in a namespace.
const fn role_binding(
    namespace: &'static str,
    name: &'static str,
    role: &'static str,
    subjects: &'static [(&'static str, &'static str, &'static str)],
) -> BootstrapBinding {
    BootstrapBinding { name, namespace: Some(namespace), role: ("Role", role), subjects }
}

/// `system:controller:NAME`, a ClusterRole for the kube-controller-manager controller NAME.
macro_rules! controller {
    ($name:literal, $rules:expr) => {
        cluster(concat!("system:controller:", $name), $rules)
    };
}

/// The binding of `system:controller:NAME` to the ServiceAccount kube-system/NAME.
macro_rules! controller_binding {
    ($name:literal) => {
        cluster_binding(concat!("system:controller:", $name), &[("ServiceAccount", $name, "kube-system")])
    };
}

// Verb sets (each sorted, as the generated YAML has them).
const GET: &[&str] = &["get"];
const CREATE: &[&str] = &["create"];
const UPDATE: &[&str] = &["update"];
const PATCH: &[&str] = &["patch"];
const WATCH: &[&str] = &["watch"];
const ANY: &[&str] = &["*"];
const LW: &[&str] = &["list", "watch"];
const GLW: &[&str] = &["get", "list", "watch"];
const GLUW: &[&str] = &["get", "list", "update", "watch"];
const GLPUW: &[&str] = &["get", "list", "patch", "update", "watch"];
const CGLW: &[&str] = &["create", "get", "list", "watch"];
const CPU: &[&str] = &["create", "patch", "update"];
const PU: &[&str] = &["patch", "update"];
const DGLW: &[&str] = &["delete", "get", "list", "watch"];
const CDGLW: &[&str] = &["create", "delete", "get", "list", "watch"];
const CDGLUW: &[&str] = &["create", "delete", "get", "list", "update", "watch"];
const CDLPW: &[&str] = &["create", "delete", "list", "patch", "watch"];
const CDGLPUW: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];
const CDGPU: &[&str] = &["create", "delete", "get", "patch", "update"];
/// `create`, `update`, `patch`, `delete`, `deletecollection`.
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
/// [`WRITE`] plus `get`, `list`, `watch`.
const READ_WRITE: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

// API groups.
const CORE: &[&str] = &[""];
const ALL: &[&str] = &["*"];
const APPS: &[&str] = &["apps"];
const APPS_EXT: &[&str] = &["apps", "extensions"];
const EXT: &[&str] = &["extensions"];
const AUTHN: &[&str] = &["authentication.k8s.io"];
const AUTHZ: &[&str] = &["authorization.k8s.io"];
const AUTOSCALING: &[&str] = &["autoscaling"];
const BATCH: &[&str] = &["batch"];
const CERTS: &[&str] = &["certificates.k8s.io"];
const COORD: &[&str] = &["coordination.k8s.io"];
const DISCOVERY: &[&str] = &["discovery.k8s.io"];
const NET: &[&str] = &["networking.k8s.io"];
const POLICY: &[&str] = &["policy"];
const RBAC: &[&str] = &["rbac.authorization.k8s.io"];
const RESOURCE: &[&str] = &["resource.k8s.io"];
const STORAGE: &[&str] = &["storage.k8s.io"];
const ADMISSION: &[&str] = &["admissionregistration.k8s.io"];

/// `create`/`patch`/`update` on events of the core and `events.k8s.io` groups, which most roles carry.
const EVENTS: Rule = r(CPU, &["", "events.k8s.io"], &["events"]);

// Aggregation labels.
const TO_ADMIN: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-admin", "true");
const TO_EDIT: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-edit", "true");
const TO_VIEW: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-view", "true");

/// `system:certificates.k8s.io:SIGNER-approver`, which may approve CSRs for the signer `kubernetes.io/SIGNER`.
macro_rules! approver {
    ($signer:literal) => {
        cluster(concat!("system:certificates.k8s.io:", $signer, "-approver"), &[rn(&["approve"], CERTS, &["signers"], &[concat!("kubernetes.io/", $signer)])])
    };
}

/// Every bootstrap role: the cluster roles, then the controllers' cluster roles
/// (`system:controller:…`), then the Roles of kube-public and kube-system.
pub static ROLES: &[BootstrapRole] = &[
    // ---- cluster roles ----
    BootstrapRole { name: "admin", namespace: None, labels: &[], rules: &[], aggregate_from: &[TO_ADMIN] },
    cluster("cluster-admin", &[r(ANY, ALL, &["*"]), u(ANY, &["*"])]),
    BootstrapRole { name: "edit", namespace: None, labels: &[TO_ADMIN], rules: &[], aggregate_from: &[TO_EDIT] },
    BootstrapRole {
        name: "system:aggregate-to-admin",
        namespace: None,
        labels: &[TO_ADMIN],
        rules: &[r(CREATE, AUTHZ, &["localsubjectaccessreviews"]), r(READ_WRITE, RBAC, &["rolebindings", "roles"])],
        aggregate_from: &[],
    },
    BootstrapRole {
        name: "system:aggregate-to-edit",
        namespace: None,
        labels: &[TO_EDIT],
        rules: &[
            r(GLW, CORE, &["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"]),
            r(&["impersonate"], CORE, &["serviceaccounts"]),
            r(WRITE, CORE, &["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
            r(CREATE, CORE, &["pods/eviction"]),
            r(
                WRITE,
                CORE,
                &[
                    "configmaps",
                    "events",
                    "persistentvolumeclaims",
                    "replicationcontrollers",
                    "replicationcontrollers/scale",
                    "secrets",
                    "serviceaccounts",
                    "services",
                    "services/proxy",
                ],
            ),
            r(CREATE, CORE, &["serviceaccounts/token"]),
            r(
                WRITE,
                APPS,
                &[
                    "daemonsets",
                    "deployments",
                    "deployments/rollback",
                    "deployments/scale",
                    "replicasets",
                    "replicasets/scale",
                    "statefulsets",
                    "statefulsets/scale",
                ],
            ),
            r(WRITE, AUTOSCALING, &["horizontalpodautoscalers"]),
            r(WRITE, BATCH, &["cronjobs", "jobs"]),
            r(
                WRITE,
                EXT,
                &[
                    "daemonsets",
                    "deployments",
                    "deployments/rollback",
                    "deployments/scale",
                    "ingresses",
                    "networkpolicies",
                    "replicasets",
                    "replicasets/scale",
                    "replicationcontrollers/scale",
                ],
            ),
            r(WRITE, POLICY, &["poddisruptionbudgets"]),
            r(WRITE, NET, &["ingresses", "networkpolicies"]),
            r(READ_WRITE, COORD, &["leases"]),
            r(WRITE, RESOURCE, &["resourceclaims", "resourceclaimtemplates"]),
        ],
        aggregate_from: &[],
    },
    BootstrapRole {
        name: "system:aggregate-to-view",
        namespace: None,
        labels: &[TO_VIEW],
        rules: &[
            r(
                GLW,
                CORE,
                &[
                    "configmaps",
                    "endpoints",
                    "persistentvolumeclaims",
                    "persistentvolumeclaims/status",
                    "pods",
                    "replicationcontrollers",
                    "replicationcontrollers/scale",
                    "serviceaccounts",
                    "services",
                    "services/status",
                ],
            ),
            r(
                GLW,
                CORE,
                &[
                    "bindings",
                    "events",
                    "limitranges",
                    "namespaces/status",
                    "pods/log",
                    "pods/status",
                    "replicationcontrollers/status",
                    "resourcequotas",
                    "resourcequotas/status",
                ],
            ),
            r(GLW, CORE, &["namespaces"]),
            r(GLW, DISCOVERY, &["endpointslices"]),
            r(
                GLW,
                APPS,
                &[
                    "controllerrevisions",
                    "daemonsets",
                    "daemonsets/status",
                    "deployments",
                    "deployments/scale",
                    "deployments/status",
                    "replicasets",
                    "replicasets/scale",
                    "replicasets/status",
                    "statefulsets",
                    "statefulsets/scale",
                    "statefulsets/status",
                ],
            ),
            r(GLW, AUTOSCALING, &["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
            r(GLW, BATCH, &["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
            r(
                GLW,
                EXT,
                &[
                    "daemonsets",
                    "daemonsets/status",
                    "deployments",
                    "deployments/scale",
                    "deployments/status",
                    "ingresses",
                    "ingresses/status",
                    "networkpolicies",
                    "replicasets",
                    "replicasets/scale",
                    "replicasets/status",
                    "replicationcontrollers/scale",
                ],
            ),
            r(GLW, POLICY, &["poddisruptionbudgets", "poddisruptionbudgets/status"]),
            r(GLW, NET, &["ingresses", "ingresses/status", "networkpolicies"]),
            r(GLW, RESOURCE, &["resourceclaims", "resourceclaims/status", "resourceclaimtemplates"]),
        ],
        aggregate_from: &[],
    },
    cluster("system:auth-delegator", &[r(CREATE, AUTHN, &["tokenreviews"]), r(CREATE, AUTHZ, &["subjectaccessreviews"])]),
    cluster("system:basic-user", &[r(CREATE, AUTHZ, &["selfsubjectaccessreviews", "selfsubjectrulesreviews"]), r(CREATE, AUTHN, &["selfsubjectreviews"])]),
    cluster("system:certificates.k8s.io:certificatesigningrequests:nodeclient", &[r(CREATE, CERTS, &["certificatesigningrequests/nodeclient"])]),
    cluster("system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", &[r(CREATE, CERTS, &["certificatesigningrequests/selfnodeclient"])]),
    approver!("kube-apiserver-client"),
    approver!("kube-apiserver-client-kubelet"),
    approver!("kubelet-serving"),
    approver!("legacy-unknown"),
    cluster(
        "system:discovery",
        &[u(GET, &["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"])],
    ),
    cluster("system:heapster", &[r(GLW, CORE, &["events", "namespaces", "nodes", "pods"]), r(GLW, EXT, &["deployments"])]),
    cluster("system:kube-aggregator", &[r(GLW, CORE, &["endpoints", "services"])]),
    cluster(
        "system:kube-controller-manager",
        &[
            EVENTS,
            r(CREATE, COORD, &["leases"]),
            rn(&["get", "update"], COORD, &["leases"], &["kube-controller-manager"]),
            r(CREATE, CORE, &["secrets", "serviceaccounts"]),
            r(&["delete"], CORE, &["secrets"]),
            r(GET, CORE, &["configmaps", "namespaces", "secrets", "serviceaccounts"]),
            r(UPDATE, CORE, &["secrets", "serviceaccounts"]),
            r(CREATE, AUTHN, &["tokenreviews"]),
            r(CREATE, AUTHZ, &["subjectaccessreviews"]),
            r(LW, ALL, &["*"]),
            r(CREATE, CORE, &["serviceaccounts/token"]),
        ],
    ),
    cluster("system:kube-dns", &[r(LW, CORE, &["endpoints", "services"])]),
    cluster(
        "system:kube-scheduler",
        &[
            EVENTS,
            r(CREATE, COORD, &["leases"]),
            rn(GLUW, COORD, &["leases"], &["kube-scheduler"]),
            r(READ_WRITE, COORD, &["leasecandidates"]),
            r(GLW, CORE, &["nodes"]),
            r(DGLW, CORE, &["pods"]),
            r(CREATE, CORE, &["bindings", "pods/binding"]),
            r(PU, CORE, &["pods/status"]),
            r(GLW, CORE, &["replicationcontrollers", "services"]),
            r(GLW, APPS_EXT, &["replicasets"]),
            r(GLW, APPS, &["statefulsets"]),
            r(GLW, POLICY, &["poddisruptionbudgets"]),
            r(GLW, CORE, &["persistentvolumeclaims", "persistentvolumes"]),
            r(CREATE, AUTHN, &["tokenreviews"]),
            r(CREATE, AUTHZ, &["subjectaccessreviews"]),
            r(GLW, STORAGE, &["csinodes"]),
            r(GLW, STORAGE, &["volumeattachments"]),
            r(GLW, CORE, &["namespaces"]),
            r(GLW, STORAGE, &["csidrivers"]),
            r(GLW, STORAGE, &["csistoragecapacities"]),
        ],
    ),
    cluster(
        "system:kubelet-api-admin",
        &[
            r(GLW, CORE, &["nodes"]),
            r(&["proxy"], CORE, &["nodes"]),
            r(ANY, CORE, &["nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats"]),
            // KubeletFineGrainedAuthz, beta and on by default since v1.33.
            r(ANY, CORE, &["nodes/configz", "nodes/healthz", "nodes/pods"]),
        ],
    ),
    cluster("system:monitoring", &[u(GET, &["/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics", "/metrics/slis", "/readyz", "/readyz/*"])]),
    cluster(
        "system:node",
        &[
            r(CREATE, AUTHN, &["tokenreviews"]),
            r(CREATE, AUTHZ, &["localsubjectaccessreviews", "subjectaccessreviews"]),
            r(GLW, CORE, &["services"]),
            r(CGLW, CORE, &["nodes"]),
            r(PU, CORE, &["nodes/status"]),
            r(PU, CORE, &["nodes"]),
            r(CPU, CORE, &["events"]),
            r(GLW, CORE, &["pods"]),
            r(&["create", "delete"], CORE, &["pods"]),
            r(PU, CORE, &["pods/status"]),
            r(CREATE, CORE, &["pods/eviction"]),
            r(GLW, CORE, &["configmaps", "secrets"]),
            r(GET, CORE, &["persistentvolumeclaims", "persistentvolumes"]),
            r(GET, CORE, &["endpoints"]),
            r(CGLW, CERTS, &["certificatesigningrequests"]),
            r(CDGPU, COORD, &["leases"]),
            r(GET, STORAGE, &["volumeattachments"]),
            r(CREATE, CORE, &["serviceaccounts/token"]),
            r(&["get", "patch", "update"], CORE, &["persistentvolumeclaims/status"]),
            r(GLW, STORAGE, &["csidrivers"]),
            r(CDGPU, STORAGE, &["csinodes"]),
            r(GLW, &["node.k8s.io"], &["runtimeclasses"]),
        ],
    ),
    cluster("system:node-bootstrapper", &[r(CGLW, CERTS, &["certificatesigningrequests"])]),
    cluster("system:node-problem-detector", &[r(GET, CORE, &["nodes"]), r(PATCH, CORE, &["nodes/status"]), EVENTS]),
    cluster(
        "system:node-proxier",
        &[
            r(LW, CORE, &["endpoints", "services"]),
            r(GLW, CORE, &["nodes"]),
            EVENTS,
            // MultiCIDRServiceAllocator, GA since v1.33.
            r(LW, NET, &["servicecidrs"]),
            r(LW, DISCOVERY, &["endpointslices"]),
        ],
    ),
    cluster(
        "system:persistent-volume-provisioner",
        &[
            r(CDGLW, CORE, &["persistentvolumes"]),
            r(GLUW, CORE, &["persistentvolumeclaims"]),
            r(GLW, STORAGE, &["storageclasses"]),
            r(WATCH, CORE, &["events"]),
            EVENTS,
        ],
    ),
    cluster("system:public-info-viewer", &[u(GET, &["/healthz", "/livez", "/readyz", "/version", "/version/"])]),
    cluster(
        "system:service-account-issuer-discovery",
        &[u(GET, &["/.well-known/openid-configuration", "/.well-known/openid-configuration/", "/openid/v1/jwks", "/openid/v1/jwks/"])],
    ),
    cluster(
        "system:volume-scheduler",
        &[r(GLPUW, CORE, &["persistentvolumes"]), r(GLW, STORAGE, &["storageclasses"]), r(GLPUW, CORE, &["persistentvolumeclaims"])],
    ),
    BootstrapRole { name: "view", namespace: None, labels: &[TO_EDIT], rules: &[], aggregate_from: &[TO_VIEW] },
    // ---- controllers' cluster roles ----
    controller!(
        "attachdetach-controller",
        &[
            r(LW, CORE, &["persistentvolumeclaims", "persistentvolumes"]),
            r(GLW, CORE, &["nodes"]),
            r(PU, CORE, &["nodes/status"]),
            r(LW, CORE, &["pods"]),
            EVENTS,
            r(CDGLW, STORAGE, &["volumeattachments"]),
            r(GLW, STORAGE, &["csidrivers"]),
            r(GLW, STORAGE, &["csinodes"]),
        ]
    ),
    controller!(
        "certificate-controller",
        &[
            r(DGLW, CERTS, &["certificatesigningrequests"]),
            r(UPDATE, CERTS, &["certificatesigningrequests/approval", "certificatesigningrequests/status"]),
            rn(&["approve"], CERTS, &["signers"], &["kubernetes.io/kube-apiserver-client-kubelet"]),
            rn(
                &["sign"],
                CERTS,
                &["signers"],
                &[
                    "kubernetes.io/kube-apiserver-client",
                    "kubernetes.io/kube-apiserver-client-kubelet",
                    "kubernetes.io/kubelet-serving",
                    "kubernetes.io/legacy-unknown",
                ],
            ),
            r(CREATE, AUTHZ, &["subjectaccessreviews"]),
            EVENTS,
        ]
    ),
    controller!("clusterrole-aggregation-controller", &[r(&["escalate", "get", "list", "patch", "update", "watch"], RBAC, &["clusterroles"])]),
    controller!(
        "cronjob-controller",
        &[
            r(GLUW, BATCH, &["cronjobs"]),
            r(CDGLPUW, BATCH, &["jobs"]),
            r(UPDATE, BATCH, &["cronjobs/status"]),
            r(UPDATE, BATCH, &["cronjobs/finalizers"]),
            r(&["delete", "list", "watch"], CORE, &["pods"]),
            EVENTS,
        ]
    ),
    controller!(
        "daemon-set-controller",
        &[
            r(GLW, APPS_EXT, &["daemonsets"]),
            r(UPDATE, APPS_EXT, &["daemonsets/status"]),
            r(UPDATE, APPS_EXT, &["daemonsets/finalizers"]),
            r(LW, CORE, &["nodes"]),
            r(CDLPW, CORE, &["pods"]),
            r(CREATE, CORE, &["pods/binding"]),
            r(CDGLPUW, APPS, &["controllerrevisions"]),
            EVENTS,
        ]
    ),
    controller!(
        "deployment-controller",
        &[
            r(GLUW, APPS_EXT, &["deployments"]),
            r(UPDATE, APPS_EXT, &["deployments/status"]),
            r(UPDATE, APPS_EXT, &["deployments/finalizers"]),
            r(CDGLPUW, APPS_EXT, &["replicasets"]),
            r(GLUW, CORE, &["pods"]),
            EVENTS,
        ]
    ),
    controller!(
        "disruption-controller",
        &[
            r(GLW, APPS_EXT, &["deployments"]),
            r(GLW, APPS_EXT, &["replicasets"]),
            r(GLW, CORE, &["replicationcontrollers"]),
            r(GLW, POLICY, &["poddisruptionbudgets"]),
            r(GLW, APPS, &["statefulsets"]),
            r(UPDATE, POLICY, &["poddisruptionbudgets/status"]),
            r(PU, CORE, &["pods/status"]),
            r(GET, ALL, &["*/scale"]),
            EVENTS,
        ]
    ),
    controller!(
        "endpoint-controller",
        &[r(GLW, CORE, &["pods", "services"]), r(CDGLUW, CORE, &["endpoints"]), r(CREATE, CORE, &["endpoints/restricted"]), EVENTS]
    ),
    controller!(
        "endpointslice-controller",
        &[r(GLW, CORE, &["nodes", "pods", "services"]), r(UPDATE, CORE, &["services/finalizers"]), r(CDGLUW, DISCOVERY, &["endpointslices"]), EVENTS]
    ),
    controller!(
        "endpointslicemirroring-controller",
        &[
            r(GLW, CORE, &["endpoints", "services"]),
            r(UPDATE, CORE, &["services/finalizers"]),
            r(UPDATE, CORE, &["endpoints/finalizers"]),
            r(CDGLUW, DISCOVERY, &["endpointslices"]),
            EVENTS,
        ]
    ),
    controller!(
        "ephemeral-volume-controller",
        &[r(GLW, CORE, &["pods"]), r(UPDATE, CORE, &["pods/finalizers"]), r(CGLW, CORE, &["persistentvolumeclaims"]), EVENTS]
    ),
    controller!(
        "expand-controller",
        &[
            r(GLPUW, CORE, &["persistentvolumes"]),
            r(PU, CORE, &["persistentvolumeclaims/status"]),
            r(GLW, CORE, &["persistentvolumeclaims"]),
            EVENTS,
            r(GET, CORE, &["services"]),
        ]
    ),
    controller!("generic-garbage-collector", &[r(&["delete", "get", "list", "patch", "update", "watch"], ALL, &["*"]), EVENTS]),
    controller!(
        "horizontal-pod-autoscaler",
        &[
            r(GLW, AUTOSCALING, &["horizontalpodautoscalers"]),
            r(UPDATE, AUTOSCALING, &["horizontalpodautoscalers/status"]),
            r(&["get", "update"], ALL, &["*/scale"]),
            r(LW, CORE, &["pods"]),
            r(LW, &["metrics.k8s.io"], &["pods"]),
            r(GLW, &["custom.metrics.k8s.io"], &["*"]),
            r(GLW, &["external.metrics.k8s.io"], &["*"]),
            EVENTS,
        ]
    ),
    controller!(
        "job-controller",
        &[r(GLPUW, BATCH, &["jobs"]), r(UPDATE, BATCH, &["jobs/status"]), r(UPDATE, BATCH, &["jobs/finalizers"]), r(CDLPW, CORE, &["pods"]), EVENTS]
    ),
    controller!(
        "legacy-service-account-token-cleaner",
        &[rn(GET, CORE, &["configmaps"], &["kube-apiserver-legacy-service-account-token-tracking"]), r(&["delete", "patch"], CORE, &["secrets"])]
    ),
    controller!(
        "namespace-controller",
        &[
            r(DGLW, CORE, &["namespaces"]),
            r(UPDATE, CORE, &["namespaces/finalize", "namespaces/status"]),
            r(&["delete", "deletecollection", "get", "list", "watch"], ALL, &["*"]),
        ]
    ),
    controller!(
        "node-controller",
        &[
            r(&["delete", "get", "list", "patch", "update", "watch"], CORE, &["nodes"]),
            r(PU, CORE, &["nodes/status"]),
            r(PU, CORE, &["pods/status"]),
            r(DGLW, CORE, &["pods"]),
            EVENTS,
        ]
    ),
    controller!(
        "persistent-volume-binder",
        &[
            r(CDGLUW, CORE, &["persistentvolumes"]),
            r(UPDATE, CORE, &["persistentvolumes/status"]),
            r(GLUW, CORE, &["persistentvolumeclaims"]),
            r(UPDATE, CORE, &["persistentvolumeclaims/status"]),
            r(CDGLW, CORE, &["pods"]),
            r(GLW, STORAGE, &["storageclasses"]),
            r(LW, CORE, &["nodes"]),
            EVENTS,
            r(WATCH, CORE, &["events"]),
            r(GET, CORE, &["services"]),
        ]
    ),
    controller!("pod-garbage-collector", &[r(&["delete", "list", "watch"], CORE, &["pods"]), r(GLW, CORE, &["nodes"]), r(PATCH, CORE, &["pods/status"])]),
    controller!("pv-protection-controller", &[r(GLUW, CORE, &["persistentvolumes"]), EVENTS]),
    controller!("pvc-protection-controller", &[r(GLUW, CORE, &["persistentvolumeclaims"]), r(GLW, CORE, &["pods"]), EVENTS]),
    controller!(
        "replicaset-controller",
        &[
            r(GLUW, APPS_EXT, &["replicasets"]),
            r(UPDATE, APPS_EXT, &["replicasets/status"]),
            r(UPDATE, APPS_EXT, &["replicasets/finalizers"]),
            r(CDLPW, CORE, &["pods"]),
            EVENTS,
        ]
    ),
    controller!(
        "replication-controller",
        &[
            r(GLUW, CORE, &["replicationcontrollers"]),
            r(UPDATE, CORE, &["replicationcontrollers/status"]),
            r(UPDATE, CORE, &["replicationcontrollers/finalizers"]),
            r(CDLPW, CORE, &["pods"]),
            EVENTS,
        ]
    ),
    controller!("resourcequota-controller", &[r(LW, ALL, &["*"]), r(UPDATE, CORE, &["resourcequotas/status"]), EVENTS]),
    controller!("root-ca-cert-publisher", &[r(&["create", "update"], CORE, &["configmaps"]), EVENTS]),
    controller!("route-controller", &[r(LW, CORE, &["nodes"]), r(PATCH, CORE, &["nodes/status"]), EVENTS]),
    // SELinuxChangePolicy, beta and on by default since v1.33.
    controller!(
        "selinux-warning-controller",
        &[EVENTS, r(GLW, CORE, &["persistentvolumes"]), r(GLW, CORE, &["persistentvolumeclaims"]), r(GLW, CORE, &["pods"]), r(GLW, STORAGE, &["csidrivers"])]
    ),
    controller!("service-account-controller", &[r(CREATE, CORE, &["serviceaccounts"]), EVENTS]),
    // MultiCIDRServiceAllocator, GA since v1.33.
    controller!(
        "service-cidrs-controller",
        &[
            r(GLPUW, NET, &["servicecidrs"]),
            r(PU, NET, &["servicecidrs/finalizers"]),
            r(PU, NET, &["servicecidrs/status"]),
            r(GLW, NET, &["ipaddresses"]),
            EVENTS,
        ]
    ),
    controller!("service-controller", &[r(GLW, CORE, &["services"]), r(PU, CORE, &["services/status"]), r(LW, CORE, &["nodes"]), EVENTS]),
    controller!(
        "statefulset-controller",
        &[
            r(LW, CORE, &["pods"]),
            r(GLW, APPS, &["statefulsets"]),
            r(UPDATE, APPS, &["statefulsets/status"]),
            r(UPDATE, APPS, &["statefulsets/finalizers"]),
            r(CDGPU, CORE, &["pods"]),
            r(CDGLPUW, APPS, &["controllerrevisions"]),
            r(CGLW, CORE, &["persistentvolumeclaims"]),
            EVENTS,
            r(&["delete", "update"], CORE, &["persistentvolumeclaims"]),
            r(UPDATE, CORE, &["pods/finalizers"]),
        ]
    ),
    controller!("ttl-after-finished-controller", &[r(DGLW, BATCH, &["jobs"]), EVENTS]),
    controller!("ttl-controller", &[r(&["list", "patch", "update", "watch"], CORE, &["nodes"]), EVENTS]),
    controller!(
        "validatingadmissionpolicy-status-controller",
        &[r(GLW, ADMISSION, &["validatingadmissionpolicies"]), r(&["get", "patch", "update"], ADMISSION, &["validatingadmissionpolicies/status"]), EVENTS]
    ),
    // ---- Roles in kube-public and kube-system ----
    role("kube-public", "system:controller:bootstrap-signer", &[r(GLW, CORE, &["configmaps"]), rn(UPDATE, CORE, &["configmaps"], &["cluster-info"]), EVENTS]),
    role("kube-system", "extension-apiserver-authentication-reader", &[rn(GLW, CORE, &["configmaps"], &["extension-apiserver-authentication"])]),
    role(
        "kube-system",
        "system::leader-locking-kube-controller-manager",
        &[
            r(WATCH, CORE, &["configmaps"]),
            rn(&["get", "update"], CORE, &["configmaps"], &["kube-controller-manager"]),
            r(&["create", "get", "list", "update", "watch"], COORD, &["leases"]),
            r(&["create", "get", "list", "update", "watch"], COORD, &["leasecandidates"]),
        ],
    ),
    role(
        "kube-system",
        "system::leader-locking-kube-scheduler",
        &[
            r(WATCH, CORE, &["configmaps"]),
            rn(&["get", "update"], CORE, &["configmaps"], &["kube-scheduler"]),
            r(&["create", "get", "list", "update", "watch"], COORD, &["leases"]),
            r(&["create", "get", "list", "update", "watch"], COORD, &["leasecandidates"]),
        ],
    ),
    role("kube-system", "system:controller:bootstrap-signer", &[r(GLW, CORE, &["secrets"])]),
    role("kube-system", "system:controller:cloud-provider", &[r(CGLW, CORE, &["configmaps"])]),
    role("kube-system", "system:controller:token-cleaner", &[r(DGLW, CORE, &["secrets"]), EVENTS]),
];

/// Every bootstrap binding: the ClusterRoleBindings, the controllers'
/// ClusterRoleBindings, then the RoleBindings of kube-public and kube-system.
pub static BINDINGS: &[BootstrapBinding] = &[
    // ---- cluster role bindings ----
    cluster_binding("cluster-admin", &[("Group", "system:masters", "")]),
    cluster_binding("system:basic-user", &[("Group", "system:authenticated", "")]),
    cluster_binding("system:discovery", &[("Group", "system:authenticated", "")]),
    cluster_binding("system:kube-controller-manager", &[("User", "system:kube-controller-manager", "")]),
    cluster_binding("system:kube-dns", &[("ServiceAccount", "kube-dns", "kube-system")]),
    cluster_binding("system:kube-scheduler", &[("User", "system:kube-scheduler", "")]),
    cluster_binding("system:monitoring", &[("Group", "system:monitoring", "")]),
    // No subjects: nodes are authorized by the Node authorizer, not by this binding.
    cluster_binding("system:node", &[]),
    cluster_binding("system:node-proxier", &[("User", "system:kube-proxy", "")]),
    cluster_binding("system:public-info-viewer", &[("Group", "system:authenticated", ""), ("Group", "system:unauthenticated", "")]),
    cluster_binding("system:service-account-issuer-discovery", &[("Group", "system:serviceaccounts", "")]),
    BootstrapBinding {
        name: "system:volume-scheduler",
        namespace: None,
        role: ("ClusterRole", "system:volume-scheduler"),
        subjects: &[("User", "system:kube-scheduler", "")],
    },
    // ---- controllers' cluster role bindings ----
    controller_binding!("attachdetach-controller"),
    controller_binding!("certificate-controller"),
    controller_binding!("clusterrole-aggregation-controller"),
    controller_binding!("cronjob-controller"),
    controller_binding!("daemon-set-controller"),
    controller_binding!("deployment-controller"),
    controller_binding!("disruption-controller"),
    controller_binding!("endpoint-controller"),
    controller_binding!("endpointslice-controller"),
    controller_binding!("endpointslicemirroring-controller"),
    controller_binding!("ephemeral-volume-controller"),
    controller_binding!("expand-controller"),
    controller_binding!("generic-garbage-collector"),
    controller_binding!("horizontal-pod-autoscaler"),
    controller_binding!("job-controller"),
    controller_binding!("legacy-service-account-token-cleaner"),
    controller_binding!("namespace-controller"),
    controller_binding!("node-controller"),
    controller_binding!("persistent-volume-binder"),
    controller_binding!("pod-garbage-collector"),
    controller_binding!("pv-protection-controller"),
    controller_binding!("pvc-protection-controller"),
    controller_binding!("replicaset-controller"),
    controller_binding!("replication-controller"),
    controller_binding!("resourcequota-controller"),
    controller_binding!("root-ca-cert-publisher"),
    controller_binding!("route-controller"),
    controller_binding!("selinux-warning-controller"),
    controller_binding!("service-account-controller"),
    controller_binding!("service-cidrs-controller"),
    controller_binding!("service-controller"),
    controller_binding!("statefulset-controller"),
    controller_binding!("ttl-after-finished-controller"),
    controller_binding!("ttl-controller"),
    controller_binding!("validatingadmissionpolicy-status-controller"),
    // ---- RoleBindings in kube-public and kube-system ----
    role_binding(
        "kube-public",
        "system:controller:bootstrap-signer",
        "system:controller:bootstrap-signer",
        &[("ServiceAccount", "bootstrap-signer", "kube-system")],
    ),
    role_binding(
        "kube-system",
        "system::extension-apiserver-authentication-reader",
        "extension-apiserver-authentication-reader",
        &[("User", "system:kube-controller-manager", ""), ("User", "system:kube-scheduler", "")],
    ),
    role_binding(
        "kube-system",
        "system::leader-locking-kube-controller-manager",
        "system::leader-locking-kube-controller-manager",
        &[
            ("User", "system:kube-controller-manager", ""),
            ("ServiceAccount", "kube-controller-manager", "kube-system"),
            ("ServiceAccount", "leader-election-controller", "kube-system"),
        ],
    ),
    role_binding(
        "kube-system",
        "system::leader-locking-kube-scheduler",
        "system::leader-locking-kube-scheduler",
        &[("User", "system:kube-scheduler", ""), ("ServiceAccount", "kube-scheduler", "kube-system")],
    ),
    role_binding(
        "kube-system",
        "system:controller:bootstrap-signer",
        "system:controller:bootstrap-signer",
        &[("ServiceAccount", "bootstrap-signer", "kube-system")],
    ),
    role_binding("kube-system", "system:controller:cloud-provider", "system:controller:cloud-provider", &[("ServiceAccount", "cloud-provider", "kube-system")]),
    role_binding("kube-system", "system:controller:token-cleaner", "system:controller:token-cleaner", &[("ServiceAccount", "token-cleaner", "kube-system")]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn find(namespace: Option<&str>, name: &str) -> Option<&'static BootstrapRole> {
        ROLES.iter().find(|role| role.namespace == namespace && role.name == name)
    }

    #[test]
    fn roles_are_unique_per_namespace_and_name() {
        let mut seen = HashSet::new();
        for role in ROLES {
            assert!(seen.insert((role.namespace, role.name)), "duplicate role {:?}/{}", role.namespace, role.name);
        }
    }

    #[test]
    fn bindings_are_unique_per_namespace_and_name() {
        let mut seen = HashSet::new();
        for binding in BINDINGS {
            assert!(seen.insert((binding.namespace, binding.name)), "duplicate binding {:?}/{}", binding.namespace, binding.name);
        }
    }

    #[test]
    fn every_binding_refers_to_a_bootstrap_role() {
        for binding in BINDINGS {
            let (kind, name) = binding.role;
            let target = match kind {
                "ClusterRole" => find(None, name),
                "Role" => {
                    assert!(binding.namespace.is_some(), "ClusterRoleBinding {} refers to a Role", binding.name);
                    find(binding.namespace, name)
                }
                other => panic!("binding {} has roleRef kind {other}", binding.name),
            };
            assert!(target.is_some(), "binding {:?}/{} refers to missing {kind} {name}", binding.namespace, binding.name);
        }
    }

    #[test]
    fn subjects_are_well_formed() {
        for binding in BINDINGS {
            for &(kind, name, namespace) in binding.subjects {
                assert!(!name.is_empty(), "binding {}", binding.name);
                match kind {
                    "ServiceAccount" => assert!(!namespace.is_empty(), "binding {}: ServiceAccount {name} without namespace", binding.name),
                    "User" | "Group" => assert!(namespace.is_empty(), "binding {}: {kind} {name} with a namespace", binding.name),
                    other => panic!("binding {} has subject kind {other}", binding.name),
                }
            }
        }
    }

    #[test]
    fn rules_are_well_formed() {
        for role in ROLES {
            for rule in role.rules {
                assert!(!rule.verbs.is_empty(), "role {}: rule without verbs", role.name);
                if rule.urls.is_empty() {
                    assert!(!rule.groups.is_empty() && !rule.resources.is_empty(), "role {}: rule {rule:?}", role.name);
                } else {
                    assert!(rule.groups.is_empty() && rule.resources.is_empty() && rule.names.is_empty(), "role {}: rule {rule:?}", role.name);
                }
            }
        }
    }

    #[test]
    fn aggregated_roles_have_no_rules_and_something_to_aggregate() {
        for role in ROLES.iter().filter(|role| !role.aggregate_from.is_empty()) {
            assert!(role.rules.is_empty(), "aggregated role {} has rules", role.name);
            for selector in role.aggregate_from {
                let sources: Vec<_> = ROLES.iter().filter(|other| other.labels.contains(selector) && !other.rules.is_empty()).collect();
                assert!(!sources.is_empty(), "nothing aggregates into {} via {selector:?}", role.name);
            }
        }
        let aggregated: Vec<_> = ROLES.iter().filter(|role| !role.aggregate_from.is_empty()).map(|role| role.name).collect();
        assert_eq!(aggregated, ["admin", "edit", "view"]);
    }

    #[test]
    fn cluster_admin_can_do_everything() {
        let admin = find(None, "cluster-admin").expect("cluster-admin");
        assert!(admin.rules.iter().any(|rule| rule.verbs == ["*"] && rule.groups == ["*"] && rule.resources == ["*"] && rule.names.is_empty()));
        assert!(admin.rules.iter().any(|rule| rule.verbs == ["*"] && rule.urls == ["*"]));
        assert!(admin.aggregate_from.is_empty());
    }

    #[test]
    fn public_info_viewer_grants_health_and_version() {
        let viewer = find(None, "system:public-info-viewer").expect("system:public-info-viewer");
        for url in ["/healthz", "/livez", "/readyz", "/version", "/version/"] {
            assert!(viewer.rules.iter().any(|rule| rule.verbs.contains(&"get") && rule.urls.contains(&url)), "{url}");
        }
        let binding = BINDINGS.iter().find(|binding| binding.name == "system:public-info-viewer").expect("binding");
        assert!(binding.subjects.contains(&("Group", "system:unauthenticated", "")));
    }

    #[test]
    fn every_controller_role_is_bound_to_its_service_account() {
        let controllers: Vec<_> = ROLES.iter().filter(|role| role.namespace.is_none() && role.name.starts_with("system:controller:")).collect();
        // v1.33 with default feature gates: 33 long-standing controllers plus
        // selinux-warning-controller and service-cidrs-controller.
        assert_eq!(controllers.len(), 35);
        for role in controllers {
            let account = &role.name["system:controller:".len()..];
            let binding = BINDINGS.iter().find(|binding| binding.namespace.is_none() && binding.name == role.name).expect(role.name);
            assert_eq!(binding.role, ("ClusterRole", role.name));
            assert_eq!(binding.subjects, [("ServiceAccount", account, "kube-system")]);
        }
    }

    #[test]
    fn system_node_binding_has_no_subjects() {
        let binding = BINDINGS.iter().find(|binding| binding.name == "system:node").expect("system:node");
        assert!(binding.subjects.is_empty());
    }
}

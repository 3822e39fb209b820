//! End to end: a chart-shaped manifest — what a Helm chart renders for an
//! application with its operator bits — applies with the real kubectl
//! (server-side), every object shows in `kubectl get`, and `kubectl delete`
//! removes it all.

mod common;

use common::{kubectl, manifest, ok, wait_for};

/// The chart's CRDs (`crds/` in a chart: installed first).
const CRDS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: backups.shop.skiff.test}
spec:
  group: shop.skiff.test
  scope: Namespaced
  names: {plural: backups, singular: backup, kind: Backup, shortNames: [bk]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Schedule, type: string, jsonPath: .spec.schedule}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [schedule]
            properties:
              schedule: {type: string}
              retain: {type: integer, default: 7, minimum: 1}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// The chart's templates, rendered.
const TEMPLATES: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {app.kubernetes.io/part-of: shop}}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: shop-high}
value: 100000
description: the shop's own workloads
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: shop-runc}
handler: runc
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: shop-nginx}
spec: {controller: example.com/ingress-nginx}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: shop, namespace: shop}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: shop, namespace: shop}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get, list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: shop, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: shop}
subjects: [{kind: ServiceAccount, name: shop, namespace: shop}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: shop-backups}
rules: [{apiGroups: [shop.skiff.test], resources: [backups, backups/status], verbs: ["*"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: shop-backups}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: shop-backups}
subjects: [{kind: ServiceAccount, name: shop, namespace: shop}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: shop-config, namespace: shop}
data: {LOG_LEVEL: info}
---
apiVersion: v1
kind: Secret
metadata: {name: shop-secret, namespace: shop}
stringData: {password: hunter2}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: shop, namespace: shop}
spec: {hard: {pods: "50", requests.cpu: "20"}}
---
apiVersion: v1
kind: LimitRange
metadata: {name: shop, namespace: shop}
spec:
  limits: [{type: Container, default: {cpu: 200m, memory: 128Mi}, defaultRequest: {cpu: 100m, memory: 64Mi}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: shop
      priorityClassName: shop-high
      containers: [{name: web, image: busybox, command: [sleep, "3600"], ports: [{containerPort: 8080}], envFrom: [{configMapRef: {name: shop-config}}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 5432}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: busybox, command: [sleep, "3600"]}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: shop}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: busybox, command: [sleep, "3600"]}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: shop}
spec:
  template:
    spec: {restartPolicy: Never, containers: [{name: migrate, image: busybox, command: ["true"]}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report, namespace: shop}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec: {restartPolicy: OnFailure, containers: [{name: report, image: busybox, command: ["true"]}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  ingressClassName: shop-nginx
  rules: [{host: shop.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: shop}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 2
  maxReplicas: 5
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: shop}
spec: {minAvailable: 1, selector: {matchLabels: {app: web}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 8080}]}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: shop-backups}
webhooks:
- name: backups.shop.skiff.test
  clientConfig: {service: {namespace: shop, name: web, path: /validate}}
  rules: [{operations: [CREATE], apiGroups: [shop.skiff.test], apiVersions: [v1], resources: [backups]}]
  failurePolicy: Ignore
  sideEffects: None
  admissionReviewVersions: [v1]
---
apiVersion: shop.skiff.test/v1
kind: Backup
metadata: {name: nightly, namespace: shop}
spec: {schedule: "0 2 * * *"}
"#;

#[test]
fn a_chart_shaped_manifest_applies_shows_and_deletes_cleanly() {
    let s = common::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let crds = manifest(&dir, "crds.yaml", CRDS);
    let templates = manifest(&dir, "templates.yaml", TEMPLATES);
    ok(&s, &["apply", "--server-side", "--field-manager", "helm", "-f", &crds]);
    ok(&s, &["wait", "--for", "condition=Established", "--timeout", "20s", "crd/backups.shop.skiff.test"]);
    let out = ok(&s, &["apply", "--server-side", "--field-manager", "helm", "-f", &templates]);
    assert_eq!(out.lines().count(), TEMPLATES.matches("\nkind: ").count(), "one line per object: {out}");

    let all = ok(&s, &["-n", "shop", "get", "all"]);
    for want in [
        "deployment.apps/web",
        "service/web",
        "statefulset.apps/db",
        "daemonset.apps/agent",
        "job.batch/migrate",
        "cronjob.batch/report",
        "horizontalpodautoscaler.autoscaling/web",
    ] {
        assert!(all.contains(want), "missing {want} in kubectl get all:\n{all}");
    }
    for (kind, name) in [
        ("ingress", "web"),
        ("pdb", "web"),
        ("networkpolicy", "web"),
        ("resourcequota", "shop"),
        ("limitrange", "shop"),
        ("serviceaccount", "shop"),
        ("role", "shop"),
        ("rolebinding", "shop"),
        ("configmap", "shop-config"),
        ("secret", "shop-secret"),
        ("backups", "nightly"),
    ] {
        let row = ok(&s, &["-n", "shop", "get", kind, name, "--no-headers"]);
        assert!(row.starts_with(name), "{kind}/{name}: {row}");
    }
    for (kind, name) in [
        ("priorityclass", "shop-high"),
        ("runtimeclass", "shop-runc"),
        ("ingressclass", "shop-nginx"),
        ("clusterrole", "shop-backups"),
        ("clusterrolebinding", "shop-backups"),
        ("validatingwebhookconfiguration", "shop-backups"),
        ("crd", "backups.shop.skiff.test"),
    ] {
        let row = ok(&s, &["get", kind, name, "--no-headers"]);
        assert!(row.starts_with(name), "{kind}/{name}: {row}");
    }
    // The CR's defaults and columns; the Deployment's pods got the
    // LimitRange's defaults and the PriorityClass's value.
    assert_eq!(ok(&s, &["-n", "shop", "get", "backup", "nightly", "-o", "jsonpath={.spec.retain}"]), "7");
    assert!(ok(&s, &["-n", "shop", "get", "bk"]).contains("0 2 * * *"));
    wait_for(&s, 30, |s| kubectl(s, &["-n", "shop", "get", "pods", "-l", "app=web", "-o", "name"]).1.lines().count() == 2);
    let pod =
        ok(&s, &["-n", "shop", "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].spec.priority} {.items[0].spec.containers[0].resources.limits.cpu}"]);
    assert_eq!(pod, "100000 200m");
    // Applying again changes nothing.
    let again = ok(&s, &["apply", "--server-side", "--field-manager", "helm", "-f", &templates]);
    assert!(again.lines().all(|l| l.ends_with("serverside-applied")), "{again}");

    // Uninstall: everything goes, the namespace's content with it.
    ok(&s, &["delete", "-f", &templates, "--timeout", "90s"]);
    ok(&s, &["delete", "-f", &crds, "--timeout", "60s"]);
    let (exists, _, _) = kubectl(&s, &["get", "namespace", "shop"]);
    assert!(!exists, "the namespace is gone");
    for (kind, name) in [
        ("priorityclass", "shop-high"),
        ("clusterrole", "shop-backups"),
        ("validatingwebhookconfiguration", "shop-backups"),
        ("crd", "backups.shop.skiff.test"),
    ] {
        let (exists, _, _) = kubectl(&s, &["get", kind, name]);
        assert!(!exists, "{kind}/{name} is still there");
    }
    let pods = ok(&s, &["get", "pods", "-A", "-o", "name"]);
    assert!(!pods.contains("shop"), "{pods}");
}

//! What authorization and encryption at rest cost.
//!
//! Prints: the RBAC decision (skiff's index, as the API server asks it on
//! every request) p50/p99 at 5,000 RoleBindings and 500 ClusterRoles, for
//! allowed and refused requests; then Secret creates/s at 64 clients
//! through HTTPS by a user that is not `system:masters` (so every request
//! is authorized by RBAC), against a server with `--authorization-mode
//! Node,RBAC` and Secrets encrypted (the defaults) and one with
//! `AlwaysAllow` and no encryption, after a warm-up round each, in
//! alternating rounds, and the ratio. Secret values are random text (as
//! real keys are), so plaintext does not compress away.
//!
//! Run: `cargo build --release -p skiff && cargo run --release -p skiff-bench --bin authz [-- N]`.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use skiff_api::rbac::index::Index;
use skiff_api::rbac::{Attributes, UserInfo};
use skiff_bench::{ms, run_clients, start_skiff, Figures};

const CLUSTER_ROLES: usize = 500;
const ROLE_BINDINGS: usize = 5_000;
const NAMESPACES: usize = 50;
const RESOURCES: &[(&str, &str)] =
    &[("", "pods"), ("", "configmaps"), ("", "secrets"), ("", "services"), ("apps", "deployments"), ("apps", "statefulsets"), ("batch", "jobs"), ("", "events")];
const VERBS: &[&str] = &["get", "list", "watch", "create", "update", "patch", "delete"];

/// A cheap deterministic generator (no dependency for a benchmark's dice).
struct Dice(u64);

impl Dice {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn cluster_role(i: usize) -> Value {
    let rules: Vec<Value> = (0..6)
        .map(|k| {
            let (group, resource) = RESOURCES[(i + k) % RESOURCES.len()];
            let verbs: Vec<&str> = VERBS.iter().copied().skip((i + k) % 3).take(3).collect();
            json!({"apiGroups": [group], "resources": [resource, format!("{resource}/status")], "verbs": verbs})
        })
        .collect();
    json!({"metadata": {"name": format!("role-{i}")}, "rules": rules})
}

fn role_binding(i: usize) -> Value {
    json!({"metadata": {"name": format!("rb-{i}"), "namespace": format!("ns-{}", i % NAMESPACES)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("role-{}", i % CLUSTER_ROLES)},
        "subjects": [{"kind": "User", "name": format!("user-{}", i % 2_000), "apiGroup": "rbac.authorization.k8s.io"},
                     {"kind": "Group", "name": format!("team-{}", i % 200), "apiGroup": "rbac.authorization.k8s.io"}]})
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn decisions() {
    let cluster_roles: Vec<Value> = (0..CLUSTER_ROLES).map(cluster_role).collect();
    let bindings: Vec<Value> = (0..ROLE_BINDINGS).map(role_binding).collect();
    let built = Instant::now();
    let index = Index::build(&cluster_roles, &[], &[], &bindings);
    println!("index of {CLUSTER_ROLES} ClusterRoles and {ROLE_BINDINGS} RoleBindings built in {:.1} ms", ms(built.elapsed()));
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15);
    let (mut allowed, mut refused) = (Vec::new(), Vec::new());
    for _ in 0..200_000 {
        let user = UserInfo {
            name: format!("user-{}", dice.next(2_000)),
            groups: vec![format!("team-{}", dice.next(200)), "system:authenticated".into()],
            ..Default::default()
        };
        let (group, resource) = RESOURCES[dice.next(RESOURCES.len())];
        let a = Attributes {
            verb: VERBS[dice.next(VERBS.len())].into(),
            resource_request: true,
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            namespace: format!("ns-{}", dice.next(NAMESPACES)),
            name: "x".into(),
            ..Default::default()
        };
        let t = Instant::now();
        let decision = index.allowing(&user, &a);
        let took = t.elapsed();
        if decision.is_some() {
            allowed.push(took)
        } else {
            refused.push(took)
        }
    }
    println!("{:>10} {:>9} {:>9} {:>9}", "decision", "count", "p50 µs", "p99 µs");
    for (what, mut lat) in [("allowed", allowed), ("refused", refused)] {
        if lat.is_empty() {
            continue;
        }
        lat.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!("{what:>10} {:>9} {:>9.2} {:>9.2}", lat.len(), us(percentile(&lat, 0.5)), us(percentile(&lat, 0.99)));
    }
}

/// A kube client as a token user (not system:masters).
async fn token_client(admin_kubeconfig: &std::path::Path, token: &str) -> anyhow::Result<kube::Client> {
    let mut kc = kube::config::Kubeconfig::read_from(admin_kubeconfig)?;
    for a in &mut kc.auth_infos {
        if let Some(info) = a.auth_info.as_mut() {
            *info = kube::config::AuthInfo { token: Some(token.to_string().into()), ..Default::default() };
        }
    }
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

async fn admin_client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    Ok(kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?)
}

async fn create(c: &kube::Client, path: &str, body: Value) -> anyhow::Result<()> {
    let req = http::Request::post(path).header("content-type", "application/json").body(serde_json::to_vec(&body)?)?;
    c.request_text(req).await?;
    Ok(())
}

/// A server with the RBAC objects of the decision benchmark loaded through
/// its API, and a user `bench` allowed to create Secrets in `load`.
async fn prepared(dir: &std::path::Path, extra: &[&str]) -> anyhow::Result<(skiff_bench::Skiff, kube::Client)> {
    std::fs::create_dir_all(dir)?;
    let tokens = dir.join("tokens.csv");
    std::fs::write(&tokens, "bench-token,bench,2001\n")?;
    let mut args = vec!["--disable", "scheduler,controllers,agent,proxy,dns,cloud-controller", "--token-auth-file"];
    let tokens = tokens.display().to_string();
    args.push(&tokens);
    args.extend(extra);
    let skiff = start_skiff(dir, &args)?;
    let admin = admin_client(&skiff.kubeconfig).await?;
    for i in 0..NAMESPACES {
        create(&admin, "/api/v1/namespaces", json!({"metadata": {"name": format!("ns-{i}")}})).await?;
    }
    create(&admin, "/api/v1/namespaces", json!({"metadata": {"name": "load"}})).await?;
    let roles = futures::future::join_all((0..CLUSTER_ROLES).map(|i| {
        let admin = admin.clone();
        async move { create(&admin, "/apis/rbac.authorization.k8s.io/v1/clusterroles", cluster_role(i)).await }
    }));
    for r in roles.await {
        r?;
    }
    let n = ROLE_BINDINGS;
    run_clients(n, 32, move |i| {
        let admin = admin.clone();
        async move { create(&admin, &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/ns-{}/rolebindings", i % NAMESPACES), role_binding(i)).await }
    })
    .await?;
    let admin = admin_client(&skiff.kubeconfig).await?;
    // (Not `edit`: its rules come from the aggregation controller, which
    // this server does not run.)
    create(
        &admin,
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        json!({"metadata": {"name": "secret-writer"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "list"]}]}),
    )
    .await?;
    create(
        &admin,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/load/rolebindings",
        json!({"metadata": {"name": "bench-writes"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "secret-writer"},
               "subjects": [{"kind": "User", "name": "bench", "apiGroup": "rbac.authorization.k8s.io"}]}),
    )
    .await?;
    let bench = token_client(&skiff.kubeconfig, "bench-token").await?;
    // The binding takes effect once the watch cache has it.
    let api: Api<Secret> = Api::namespaced(bench.clone(), "load");
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.list(&Default::default()).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the bench user never got access");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((skiff, bench))
}

async fn secrets(c: &kube::Client, round: usize, n: usize) -> anyhow::Result<Figures> {
    let api: Api<Secret> = Api::namespaced(c.clone(), "load");
    // High-entropy, as keys and certificates are: a repeated byte would
    // compress to nothing in plaintext and flatter the unencrypted server.
    let mut dice = Dice(0x2545_F491_4F6C_DD1D ^ round as u64);
    let payload: String = (0..1024).map(|_| char::from(b'!' + dice.next(94) as u8)).collect();
    run_clients(n, 64, move |i| {
        let api = api.clone();
        let payload = payload.clone();
        async move {
            let s: Secret = serde_json::from_value(json!({"metadata": {"name": format!("s-{round}-{i}")}, "stringData": {"key": payload}}))?;
            api.create(&PostParams::default(), &s).await?;
            Ok(())
        }
    })
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5_000);
    decisions();
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let (on_server, on) = prepared(&dir.path().join("on"), &[]).await?;
    let (off_server, off) = prepared(&dir.path().join("off"), &["--authorization-mode", "AlwaysAllow", "--secrets-encryption=false"]).await?;
    println!("\nSecret creates (1 KiB) at 64 clients by a non-admin user, {n} per round, rounds alternating");
    println!("{:>6} {:>26} {:>9} {:>9} {:>26} {:>9} {:>9} {:>7}", "round", "Node,RBAC + encryption /s", "p50 ms", "p99 ms", "AlwaysAllow, plaintext /s", "p50 ms", "p99 ms", "ratio");
    // A round each, not counted: both servers warm.
    secrets(&on, 100, n / 5).await?;
    secrets(&off, 100, n / 5).await?;
    let (mut sum_on, mut sum_off) = (0.0, 0.0);
    for round in 0..3 {
        let (a, b) = if round % 2 == 0 {
            let a = secrets(&on, round, n).await?;
            (a, secrets(&off, round, n).await?)
        } else {
            let b = secrets(&off, round, n).await?;
            (secrets(&on, round, n).await?, b)
        };
        sum_on += a.rate;
        sum_off += b.rate;
        println!(
            "{round:>6} {:>26.0} {:>9.2} {:>9.2} {:>26.0} {:>9.2} {:>9.2} {:>7.2}",
            a.rate,
            ms(a.p50),
            ms(a.p99),
            b.rate,
            ms(b.p50),
            ms(b.p99),
            a.rate / b.rate
        );
    }
    println!("all rounds: {:.0}/s against {:.0}/s: {:.2}× (target ≥ 0.90×)", sum_on / 3.0, sum_off / 3.0, sum_on / sum_off);
    drop((on_server, off_server));
    Ok(())
}

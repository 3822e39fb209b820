//! The ClusterRole aggregation controller (kube-controller-manager's
//! `clusterrole-aggregation`): a ClusterRole with an `aggregationRule`
//! holds the union of the rules of every ClusterRole its selectors match
//! (so `admin`, `edit` and `view` grow with the roles labelled
//! `rbac.authorization.k8s.io/aggregate-to-*`, CRDs' roles included).

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use skiff_runtime::informer::{Change, Informer};
use skiff_runtime::selectors::label_selector_matches;
use tokio::sync::watch;

/// Runs the controller until shutdown.
pub async fn run(client: kube::Client, shutdown: watch::Receiver<bool>) {
    let api: Api<ClusterRole> = Api::all(client);
    let roles = Informer::<ClusterRole>::start(api.clone(), watcher::Config::default(), shutdown.clone());
    let mut changes = roles.changes();
    let mut synced = false;
    let mut stop = shutdown.clone();
    loop {
        let change = tokio::select! {
            c = changes.next() => c,
            _ = stop.wait_for(|s| *s) => return,
        };
        match change {
            None => return,
            Some(Change::Synced) => synced = true,
            Some(_) if !synced => continue,
            Some(_) => {}
        }
        // Every change may feed any aggregated role: recompute them all
        // (a handful of roles, and writes only where the union moved).
        let all: Vec<ClusterRole> = roles.store().state().iter().map(|r| (**r).clone()).collect();
        for role in all.iter().filter(|r| r.aggregation_rule.is_some()) {
            let Some(want) = aggregate(role, &all) else { continue };
            if role.rules.as_deref().unwrap_or_default() == want.as_slice() {
                continue;
            }
            let mut next = role.clone();
            next.rules = Some(want);
            let name = role.metadata.name.clone().unwrap_or_default();
            match api.replace(&name, &PostParams::default(), &next).await {
                Ok(_) => {}
                // A newer version is on its way through the watch.
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                Err(e) => tracing::warn!(role = %name, error = %e, "aggregating a ClusterRole failed"),
            }
        }
    }
}

/// The rules `role` aggregates from `all`, each once, in the order of
/// the matching roles' names (as kube sorts them), or `None` when it has
/// no aggregation rule.
fn aggregate(role: &ClusterRole, all: &[ClusterRole]) -> Option<Vec<PolicyRule>> {
    let selectors = role.aggregation_rule.as_ref()?.cluster_role_selectors.clone().unwrap_or_default();
    let mut sources: Vec<&ClusterRole> = all
        .iter()
        .filter(|r| r.metadata.name != role.metadata.name)
        .filter(|r| {
            let labels = r.metadata.labels.clone().unwrap_or_default();
            selectors.iter().any(|s| label_selector_matches(s, &labels))
        })
        .collect();
    sources.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for r in sources.iter().flat_map(|r| r.rules.iter().flatten()) {
        if !rules.contains(r) {
            rules.push(r.clone());
        }
    }
    Some(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::AggregationRule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use std::collections::BTreeMap;

    fn role(name: &str, label: Option<&str>, verbs: &[&str]) -> ClusterRole {
        ClusterRole {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                labels: label.map(|l| BTreeMap::from([(l.to_string(), "true".to_string())])),
                ..Default::default()
            },
            rules: Some(vec![PolicyRule {
                verbs: verbs.iter().map(|v| v.to_string()).collect(),
                api_groups: Some(vec!["".into()]),
                resources: Some(vec!["pods".into()]),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn an_aggregated_role_holds_the_union_of_the_matching_roles_rules() {
        let mut view = role("view", None, &[]);
        view.rules = None;
        view.aggregation_rule = Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some(BTreeMap::from([("aggregate-to-view".to_string(), "true".to_string())])),
                ..Default::default()
            }]),
        });
        let all = vec![view.clone(), role("b", Some("aggregate-to-view"), &["list"]), role("a", Some("aggregate-to-view"), &["get"]), role("c", None, &["delete"])];
        let rules = aggregate(&view, &all).expect("aggregated");
        let verbs: Vec<&str> = rules.iter().map(|r| r.verbs[0].as_str()).collect();
        assert_eq!(verbs, vec!["get", "list"], "sorted by role name, unlabelled roles left out");
        assert!(aggregate(&all[1], &all).is_none());
    }
}

//! skiff's kube-proxy. It watches Services and EndpointSlices through the
//! shared informer and programs nftables as kube-proxy's nftables mode
//! does (see [`rules`] for the layout): one table of its own, each sync one
//! atomic nftables transaction sent over netlink ([`nft`]), syncs batched so that no more than one runs
//! at a time and at most `min_sync_period` passes between a change and its
//! rules, partial where only some Service ports changed, full at start,
//! after a failed transaction and when a periodic look finds the table
//! changed from outside. `/healthz` and `/metrics` are served as
//! kube-proxy serves them (port 10256).

#![deny(missing_docs)]

pub mod health;
pub mod model;
pub mod rules;

pub use skiff_nftables as nft;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher;
use skiff_runtime::informer::{Change, Informer};
use tokio::sync::watch;

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node's name (endpoints on it are local).
    pub node_name: String,
    /// The nftables table (family `ip`) it owns.
    pub table: String,
    /// The pod network's range (`--cluster-cidr`).
    pub cluster_cidr: Option<nft::Cidr>,
    /// CIDRs of the node addresses NodePorts answer on (empty: all).
    pub nodeport_addresses: Vec<nft::Cidr>,
    /// Least time between two syncs.
    pub min_sync_period: Duration,
    /// Where `/healthz` and `/metrics` are served (None: not at all).
    pub healthz_bind_address: Option<std::net::SocketAddr>,
}

impl Options {
    /// Defaults for `node_name`: kube-proxy's flags' defaults.
    pub fn new(node_name: &str) -> Self {
        Self {
            node_name: node_name.to_string(),
            table: DEFAULT_TABLE.into(),
            cluster_cidr: None,
            nodeport_addresses: Vec::new(),
            min_sync_period: Duration::from_secs(1),
            healthz_bind_address: Some(([0, 0, 0, 0], 10256).into()),
        }
    }
}

/// The table of a proxy run with default settings.
pub const DEFAULT_TABLE: &str = "skiff-proxy";

/// The table of the proxy of the node whose data directory is `dir`:
/// [`DEFAULT_TABLE`] for the system's (`/var/lib/skiff`), a name of its own
/// for any other, so that several nodes on one machine (tests) never
/// program each other's rules.
pub fn table_for(dir: &std::path::Path) -> String {
    let system = std::path::Path::new("/var/lib/skiff");
    if dir == system || dir == system.join("agent") {
        return DEFAULT_TABLE.into();
    }
    format!("{DEFAULT_TABLE}-{:08x}", skiff_runtime::path_hash(dir))
}

/// Runs until `shutdown` flips; the rules stay in place when it ends (a
/// restarted proxy takes over without a gap; `cleanup` removes them).
pub async fn run(client: kube::Client, opts: Options, shutdown: watch::Receiver<bool>) {
    let services = Informer::<Service>::start(Api::all(client.clone()), watcher::Config::default(), shutdown.clone());
    let slices = Informer::<EndpointSlice>::start(Api::all(client), watcher::Config::default(), shutdown.clone());
    let health = Arc::new(health::State::new());
    if let Some(addr) = opts.healthz_bind_address {
        tokio::spawn(health::serve(addr, health.clone(), shutdown.clone()));
    }
    let checks = health::ServiceChecks::new(shutdown.clone());
    let mut changes = futures::stream::select(services.changes().map(Event::from), slices.changes().map(Event::from));
    let cfg = rules::RuleConfig { table: opts.table.clone(), cluster_cidr: opts.cluster_cidr, nodeport_addresses: opts.nodeport_addresses.clone() };
    let mut shutdown = shutdown;
    let (mut services_synced, mut slices_synced) = (false, false);
    // When the oldest change not yet in the rules arrived.
    let mut pending: Option<Instant> = None;
    let mut last_sync: Option<Instant> = None;
    let mut applied: Option<rules::Applied> = None;
    // The table's handle since the last full sync, to notice a table that
    // someone else deleted or replaced.
    let mut handle: Option<u64> = None;
    let mut check = tokio::time::interval(TABLE_CHECK_PERIOD);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = match (pending, last_sync) {
            (Some(_), Some(last)) if services_synced && slices_synced => Some(last + opts.min_sync_period),
            (Some(_), None) if services_synced && slices_synced => Some(Instant::now()),
            _ => None,
        };
        tokio::select! {
            ev = changes.next() => match ev {
                Some(Event::Synced(kind)) => {
                    match kind { Kind::Services => services_synced = true, Kind::Slices => slices_synced = true }
                    pending.get_or_insert_with(Instant::now);
                }
                Some(Event::Changed) => { pending.get_or_insert_with(Instant::now); }
                None => return,
            },
            _ = sleep_until(due) => {
                let since = pending.take().unwrap_or_else(Instant::now);
                let svcs = services.store().state();
                let eps = slices.store().state();
                let ports = model::service_ports(svcs.iter().map(|s| s.as_ref()), eps.iter().map(|s| s.as_ref()), &opts.node_name);
                let started = Instant::now();
                let (state, tx, full) = match applied.take().and_then(|mut a| a.partial(&ports).map(|d| (a, d))) {
                    Some((a, d)) => (a, d, false),
                    None => {
                        let (a, tx) = rules::Applied::full(&ports, &cfg);
                        (a, tx, true)
                    }
                };
                let result = if tx.is_empty() { Ok(()) } else { tx.apply().await };
                let took = started.elapsed();
                last_sync = Some(Instant::now());
                match result {
                    Ok(()) => {
                        tracing::debug!(full, ports = ports.len(), size = state.size(), seconds = took.as_secs_f64(), "synced proxy rules");
                        if full {
                            handle = look(&cfg.table).await.map(|l| l.handle);
                        }
                        health.synced(took, since.elapsed(), full);
                        checks.update(&ports);
                        applied = Some(state);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, full, "syncing proxy rules failed; the next sync is a full one");
                        applied = None;
                        pending = Some(since);
                    }
                }
            }
            _ = check.tick(), if applied.is_some() && pending.is_none() => {
                let expected = applied.as_ref().map_or(0, rules::Applied::objects);
                let seen = look(&cfg.table).await;
                let intact = seen.is_some_and(|l| Some(l.handle) == handle && l.chains as usize == expected && l.rules > 0);
                if !intact {
                    tracing::warn!(table = %cfg.table, ?seen, expected, "the proxy's table was changed from outside; a full sync follows");
                    applied = None;
                    pending = Some(Instant::now());
                }
            }
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}

/// How often the proxy looks whether its table is as it left it (a table
/// deleted or replaced, chains or sets added or removed, the dispatch
/// chain flushed: then it syncs in full). One look is two small netlink
/// requests.
pub const TABLE_CHECK_PERIOD: Duration = Duration::from_secs(10);

/// [`nft::netlink::look`] at `table`'s dispatch chain, on a blocking thread
/// (`None` also when the look fails: the next sync is then a full one).
async fn look(table: &str) -> Option<nft::netlink::TableLook> {
    let table = table.to_string();
    match tokio::task::spawn_blocking(move || nft::netlink::look(&table, "services")).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "looking at the proxy's table failed");
            None
        }
        Err(_) => None,
    }
}

/// Removes what the proxy programmed (its table), and nothing else.
pub async fn cleanup(table: &str) -> Result<(), nft::NftError> {
    nft::delete_table(table).await
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Services,
    Slices,
}

enum Event {
    Changed,
    Synced(Kind),
}

impl From<Change<Service>> for Event {
    fn from(c: Change<Service>) -> Self {
        match c {
            Change::Synced => Self::Synced(Kind::Services),
            _ => Self::Changed,
        }
    }
}

impl From<Change<EndpointSlice>> for Event {
    fn from(c: Change<EndpointSlice>) -> Self {
        match c {
            Change::Synced => Self::Synced(Kind::Slices),
            _ => Self::Changed,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_node_has_the_plain_table_and_others_one_of_their_own() {
        assert_eq!(table_for(std::path::Path::new("/var/lib/skiff/agent")), "skiff-proxy");
        let a = table_for(std::path::Path::new("/tmp/a/agent"));
        let b = table_for(std::path::Path::new("/tmp/b/agent"));
        assert!(a.starts_with("skiff-proxy-") && a != b, "{a} {b}");
        assert_eq!(a, table_for(std::path::Path::new("/tmp/a/agent")), "stable across calls");
    }
}

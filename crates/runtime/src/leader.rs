//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//! `leaderelection` does: acquire when the lease is free or expired, renew
//! well before it expires, and stop leading the moment a renewal fails, so
//! two instances never act at once.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Lease timing (client-go's defaults: 15 s / 10 s / 2 s).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a lease holds without renewal.
    pub lease_duration: Duration,
    /// A leader that cannot renew within this gives up.
    pub renew_deadline: Duration,
    /// Pause between attempts.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self { lease_duration: Duration::from_secs(15), renew_deadline: Duration::from_secs(10), retry_period: Duration::from_secs(2) }
    }
}

/// Tries once to take or keep the lease. True when we hold it afterwards.
async fn try_acquire(api: &Api<Lease>, name: &str, identity: &str, timing: Timing) -> Result<bool, kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let duration = timing.lease_duration.as_secs() as i32;
    match api.get_opt(name).await? {
        None => {
            let lease: Lease = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"holderIdentity": identity, "leaseDurationSeconds": duration, "acquireTime": crate::micro_now(),
                         "renewTime": crate::micro_now(), "leaseTransitions": 0}
            }))
            .map_err(kube::Error::SerdeError)?;
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let expires = spec.renew_time.as_ref().map(|t| t.0.as_second() + spec.lease_duration_seconds.unwrap_or(duration) as i64);
            let mine = holder == identity;
            if !mine && !holder.is_empty() && expires.is_some_and(|e| e > now.as_second()) {
                return Ok(false);
            }
            if !mine {
                spec.holder_identity = Some(identity.into());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(duration);
            // The resourceVersion we read makes this a compare-and-swap.
            match api.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Gives the lease up if we hold it, as client-go's `ReleaseOnCancel`: no
/// holder, a 1 s duration, so the next candidate (often this same server,
/// restarted) takes over at once instead of after `lease_duration`.
/// Bounded by 2 s: shutting down never waits on an API server that is
/// itself going away.
async fn release(api: &Api<Lease>, name: &str, identity: &str) {
    let attempt = async {
        loop {
            let mut lease = api.get(name).await?;
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(identity) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
            match api.replace(name, &PostParams::default(), &lease).await {
                // A renewal still in flight when leading stopped can land
                // between the read and the write: read again.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                other => return other.map(|_| ()),
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(())) => tracing::info!(lease = name, identity, "released leadership"),
        Ok(Err(e)) => tracing::debug!(error = %e, lease = name, "releasing the lease failed"),
        Err(_) => tracing::debug!(lease = name, "releasing the lease timed out"),
    }
}

/// Runs `work` only while holding the lease `namespace/name`; returns when
/// `shutdown` flips to true (giving the lease up). When leadership is lost,
/// `work` is dropped and the election starts over with a fresh `work()`.
pub async fn lead<F, Fut>(client: kube::Client, namespace: &str, name: &str, identity: &str, timing: Timing, mut shutdown: watch::Receiver<bool>, work: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let api: Api<Lease> = Api::namespaced(client, namespace);
    loop {
        // Acquire.
        loop {
            match try_acquire(&api, name, identity, timing).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, lease = name, "leader election: acquire failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(timing.retry_period) => {}
                _ = shutdown.changed() => return,
            }
        }
        tracing::info!(lease = name, identity, "became leader");
        let renew = async {
            let mut last_ok = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(timing.retry_period).await;
                match try_acquire(&api, name, identity, timing).await {
                    Ok(true) => last_ok = tokio::time::Instant::now(),
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, lease = name, "leader election: renew failed");
                        if last_ok.elapsed() > timing.renew_deadline {
                            return;
                        }
                    }
                }
            }
        };
        // `work` watches the same shutdown signal and may finish in the same
        // poll as `shutdown.changed()`: either way the lease is given up,
        // so a server stopped with SIGTERM never leaves it to expire.
        tokio::select! {
            biased;
            _ = shutdown.changed() => {}
            _ = work() => {}
            _ = renew => {
                tracing::warn!(lease = name, identity, "lost leadership");
                continue;
            }
        }
        release(&api, name, identity).await;
        return;
    }
}

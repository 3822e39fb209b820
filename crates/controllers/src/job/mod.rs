//! The Job controller: runs pods until `completions` succeed (`parallelism`
//! at a time; `Indexed` mode gives each an index), fails the Job after
//! `backoffLimit` failed pods or `activeDeadlineSeconds`, records the
//! Complete/Failed conditions, and deletes finished Jobs after
//! `ttlSecondsAfterFinished` (the TTL-after-finished controller's job).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::watch;

use crate::util::{controller_ref, controller_uid, on_shutdown, retry};
use crate::Error;

const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    recorder: skiff_runtime::events::Recorder,
}

/// Runs the controller until shutdown.
pub async fn run(client: kube::Client, informers: crate::Informers, shutdown: watch::Receiver<bool>) {
    let pod_stream = informers.pods.objects();
    let pods = informers.pods.store();
    let ctx = Arc::new(Ctx { client: client.clone(), pods, recorder: skiff_runtime::events::Recorder::new(client.clone(), "job-controller") });
    Controller::new(Api::<Job>::all(client), watcher::Config::default())
        .owns_stream(pod_stream)
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn index_of(p: &Pod) -> Option<i32> {
    p.metadata.annotations.as_ref().and_then(|a| a.get(INDEX_ANNOTATION)).and_then(|i| i.parse().ok())
}

/// `1,3-5` style rendering of completed indexes.
fn ranges(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        out.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    out.join(",")
}

fn finished(job: &Job) -> Option<String> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"))
        .map(|c| c.type_.clone())
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let now = k8s_openapi::jiff::Timestamp::now().as_second();

    if finished(&job).is_some() {
        let ttl = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
        let done_at = job
            .status
            .as_ref()
            .and_then(|s| s.completion_time.as_ref().or(s.conditions.as_ref().and_then(|c| c.last()).and_then(|c| c.last_transition_time.as_ref())))
            .map(|t| t.0.as_second())
            .unwrap_or(now);
        return Ok(match ttl {
            Some(ttl) if done_at + ttl as i64 <= now => {
                let dp = DeleteParams {
                    propagation_policy: Some(kube::api::PropagationPolicy::Background),
                    preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
                    ..Default::default()
                };
                match jobs.delete(&name, &dp).await {
                    Ok(_) => {}
                    Err(e) if crate::util::is_not_found(&e) || crate::util::is_conflict(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                Action::await_change()
            }
            Some(ttl) => Action::requeue(Duration::from_secs((done_at + ttl as i64 - now).max(1) as u64)),
            None => Action::await_change(),
        });
    }
    let spec = job.spec.clone().ok_or_else(|| Error::Invalid("no spec".into()))?;
    if spec.suspend == Some(true) {
        return Ok(Action::await_change());
    }
    let owned: Vec<Arc<Pod>> =
        ctx.pods.state().into_iter().filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()) && controller_uid(&**p) == Some(uid.as_str())).collect();
    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none()).collect();
    let succeeded: Vec<&Arc<Pod>> = owned.iter().filter(|p| phase(p) == "Succeeded").collect();
    let failed = owned.iter().filter(|p| phase(p) == "Failed").count() as i32;
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let done_indexes: BTreeSet<i32> = succeeded.iter().filter_map(|p| index_of(p)).filter(|i| completions.is_none_or(|c| *i < c)).collect();
    let n_succeeded = if indexed { done_indexes.len() as i32 } else { succeeded.len() as i32 };
    let start_time = job.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0.to_string()).unwrap_or_else(skiff_runtime::now);
    let started = job.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0.as_second()).unwrap_or(now);

    let mut failure: Option<(&str, String)> = None;
    if failed > backoff_limit {
        failure = Some(("BackoffLimitExceeded", "Job has reached the specified backoff limit".into()));
    } else if let Some(d) = spec.active_deadline_seconds {
        if now - started >= d {
            failure = Some(("DeadlineExceeded", "Job was active longer than specified deadline".into()));
        }
    }
    let complete = match completions {
        Some(c) => n_succeeded >= c,
        // Work-queue mode: done once any pod succeeded and none is running.
        None => n_succeeded > 0 && active.is_empty(),
    };
    let ts = skiff_runtime::now();
    let mut status = json!({"active": active.len(), "succeeded": n_succeeded, "failed": failed, "startTime": start_time,
        "ready": active.iter().filter(|p| skiff_runtime::resources::pod_ready(p)).count(), "uncountedTerminatedPods": {}});
    if indexed {
        status["completedIndexes"] = json!(ranges(&done_indexes));
    }
    if let Some((reason, message)) = &failure {
        for p in &active {
            let _ = pods_api.delete(p.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default()).await;
        }
        status["active"] = json!(0);
        status["conditions"] = json!([
            {"type": "FailureTarget", "status": "True", "reason": reason, "message": message, "lastProbeTime": ts, "lastTransitionTime": ts},
            {"type": "Failed", "status": "True", "reason": reason, "message": message, "lastProbeTime": ts, "lastTransitionTime": ts}]);
        ctx.recorder.record(&*job, skiff_runtime::events::EventType::Warning, reason, message);
    } else if complete {
        status["conditions"] = json!([
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": ts, "lastTransitionTime": ts},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": ts, "lastTransitionTime": ts}]);
        status["completionTime"] = json!(ts);
        ctx.recorder.record(&*job, skiff_runtime::events::EventType::Normal, "Completed", "Job completed");
    } else {
        // Start pods up to parallelism (and no more than completions still need).
        let want = match completions {
            Some(c) => parallelism.min(c - n_succeeded),
            None => parallelism,
        };
        let missing = (want - active.len() as i32).max(0);
        let template = spec.template.clone();
        let active_indexes: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
        let mut next_indexes = (0..completions.unwrap_or(0)).filter(|i| !done_indexes.contains(i) && !active_indexes.contains(i));
        for _ in 0..missing {
            let mut meta = template.metadata.clone().unwrap_or_default();
            meta.generate_name = Some(format!("{name}-"));
            meta.namespace = Some(ns.clone());
            meta.owner_references = Some(vec![controller_ref(&*job)]);
            let mut pod_spec = template.spec.clone();
            if indexed {
                let Some(i) = next_indexes.next() else { break };
                meta.generate_name = Some(format!("{name}-{i}-"));
                meta.annotations.get_or_insert_with(Default::default).insert(INDEX_ANNOTATION.into(), i.to_string());
                meta.labels.get_or_insert_with(Default::default).insert(INDEX_ANNOTATION.into(), i.to_string());
                if let Some(s) = pod_spec.as_mut() {
                    s.hostname = Some(format!("{name}-{i}"));
                }
            }
            let pod = Pod { metadata: meta, spec: pod_spec, status: None };
            match pods_api.create(&PostParams::default(), &pod).await {
                Ok(p) => ctx.recorder.record(
                    &*job,
                    skiff_runtime::events::EventType::Normal,
                    "SuccessfulCreate",
                    &format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                ),
                Err(e) => return Err(e.into()),
            }
        }
        status["active"] = json!(active.len() as i32 + missing);
    }
    let cur = serde_json::to_value(job.status.clone().unwrap_or_default())?;
    let changed = ["active", "succeeded", "failed", "ready", "completedIndexes", "conditions"]
        .iter()
        .any(|k| cur.get(*k) != status.get(*k) && !(status.get(*k) == Some(&json!(0)) && cur.get(*k).is_none()));
    if changed || job.status.as_ref().and_then(|s| s.start_time.as_ref()).is_none() {
        jobs.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    // The active deadline is a deadline, not an event.
    Ok(match spec.active_deadline_seconds {
        Some(d) if failure.is_none() && !complete => Action::requeue(Duration::from_secs((started + d - now).max(1) as u64)),
        _ => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_render_as_ranges() {
        assert_eq!(ranges(&[0, 1, 2, 4, 6, 7].into_iter().collect()), "0-2,4,6-7");
        assert_eq!(ranges(&BTreeSet::new()), "");
    }
}

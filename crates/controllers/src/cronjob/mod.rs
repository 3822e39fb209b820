//! The CronJob controller: at each time of the schedule (standard 5-field
//! cron, in UTC or `spec.timeZone`-less), creates a Job from the template,
//! honouring `concurrencyPolicy`, `suspend` and `startingDeadlineSeconds`;
//! tracks active Jobs and the last schedule/success times; deletes finished
//! Jobs beyond the history limits. It sleeps until the next scheduled time
//! (a real deadline) or until one of its Jobs changes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::watch;

use crate::util::{controller_ref, controller_uid, on_shutdown, retry};
use crate::Error;

struct Ctx {
    client: kube::Client,
    jobs: Store<Job>,
    recorder: skiff_runtime::events::Recorder,
}

/// Runs the controller until shutdown.
pub async fn run(client: kube::Client, informers: crate::Informers, shutdown: watch::Receiver<bool>) {
    let job_stream = informers.jobs.objects();
    let jobs = informers.jobs.store();
    let ctx = Arc::new(Ctx { client: client.clone(), jobs, recorder: skiff_runtime::events::Recorder::new(client.clone(), "cronjob-controller") });
    Controller::new(Api::<CronJob>::all(client), watcher::Config::default())
        .owns_stream(job_stream)
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// (The latest due time, the next time.)
pub type Times = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The most recent scheduled time in (`after`, `now`], and the next one after `now`.
pub fn schedule_times(schedule: &str, after: DateTime<Utc>, now: DateTime<Utc>) -> Result<Times, String> {
    let expr = match schedule.trim() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => other,
    };
    let cron = croner::Cron::new(expr).parse().map_err(|e| e.to_string())?;
    let mut last = None;
    // Walk forward from `after`; a long outage is capped like Kubernetes'
    // "too many missed start times" (100).
    for (n, t) in cron.iter_after(after).enumerate() {
        if t > now {
            return Ok((last, Some(t)));
        }
        last = Some(t);
        if n > 100 {
            let next = cron.find_next_occurrence(&now, false).ok();
            return Ok((last, next));
        }
    }
    Ok((last, None))
}

fn job_finished(j: &Job) -> Option<bool> {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"))
        .map(|c| c.type_ == "Complete")
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cj.metadata.namespace.clone().unwrap_or_default();
    let name = cj.metadata.name.clone().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let spec = cj.spec.clone().ok_or_else(|| Error::Invalid("no spec".into()))?;
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let cj_api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let mut jobs: Vec<Arc<Job>> =
        ctx.jobs.state().into_iter().filter(|j| j.metadata.namespace.as_deref() == Some(ns.as_str()) && controller_uid(&**j) == Some(uid.as_str())).collect();
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0));
    let active: Vec<&Arc<Job>> = jobs.iter().filter(|j| job_finished(j).is_none() && j.metadata.deletion_timestamp.is_none()).collect();

    // History limits.
    for (ok, limit) in [(true, spec.successful_jobs_history_limit.unwrap_or(3)), (false, spec.failed_jobs_history_limit.unwrap_or(1))] {
        let done: Vec<&Arc<Job>> = jobs.iter().filter(|j| job_finished(j) == Some(ok) && j.metadata.deletion_timestamp.is_none()).collect();
        let extra = done.len().saturating_sub(limit.max(0) as usize);
        for j in &done[..extra] {
            let _ = jobs_api.delete(j.metadata.name.as_deref().unwrap_or(""), &DeleteParams::background()).await;
        }
    }

    let now = Utc::now();
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let last_schedule: Option<DateTime<Utc>> =
        cj.status.as_ref().and_then(|s| s.last_schedule_time.as_ref()).and_then(|t| Utc.timestamp_opt(t.0.as_second(), 0).single());
    let created: DateTime<Utc> = cj.metadata.creation_timestamp.as_ref().and_then(|t| Utc.timestamp_opt(t.0.as_second(), 0).single()).unwrap_or(now);
    let (due, next) = match schedule_times(&spec.schedule, last_schedule.unwrap_or(created), now) {
        Ok(t) => t,
        Err(e) => {
            ctx.recorder.record(
                &*cj,
                skiff_runtime::events::EventType::Warning,
                "UnparseableSchedule",
                &format!("unparseable schedule: {:?}: {e}", spec.schedule),
            );
            return Ok(Action::await_change());
        }
    };
    let mut status = json!({
        "active": active.iter().map(|j| json!({"apiVersion": "batch/v1", "kind": "Job", "name": j.metadata.name, "namespace": ns, "uid": j.metadata.uid})).collect::<Vec<_>>(),
    });
    if let Some(t) = jobs
        .iter()
        .filter(|j| job_finished(j) == Some(true))
        .filter_map(|j| j.status.as_ref().and_then(|s| s.completion_time.as_ref()))
        .map(|t| t.0.to_string())
        .max()
    {
        status["lastSuccessfulTime"] = json!(t);
    }
    if let (Some(due), false) = (due, spec.suspend.unwrap_or(false)) {
        let too_late = spec.starting_deadline_seconds.is_some_and(|d| (now - due).num_seconds() > d);
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        let blocked = policy == "Forbid" && !active.is_empty();
        if !too_late && !blocked {
            if policy == "Replace" {
                for j in &active {
                    let _ = jobs_api.delete(j.metadata.name.as_deref().unwrap_or(""), &DeleteParams::background()).await;
                }
            }
            // Named by the scheduled minute, so a retry never makes a second Job.
            let job_name = format!("{name}-{}", due.timestamp() / 60);
            let tmpl = spec.job_template.clone();
            let mut meta = tmpl.metadata.clone().unwrap_or_default();
            meta.name = Some(job_name.clone());
            meta.namespace = Some(ns.clone());
            meta.owner_references = Some(vec![controller_ref(&*cj)]);
            meta.annotations.get_or_insert_with(Default::default).insert("batch.kubernetes.io/cronjob-scheduled-timestamp".into(), ts(due));
            let job = Job { metadata: meta, spec: tmpl.spec.clone(), status: None };
            match jobs_api.create(&PostParams::default(), &job).await {
                Ok(j) => {
                    ctx.recorder.record(&*cj, skiff_runtime::events::EventType::Normal, "SuccessfulCreate", &format!("Created job {job_name}"));
                    if let Some(list) = status["active"].as_array_mut() {
                        list.push(json!({"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "namespace": ns, "uid": j.metadata.uid}));
                    }
                }
                Err(e) if crate::util::is_conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Missed or skipped, the time counts as handled.
        status["lastScheduleTime"] = json!(ts(due));
    }
    let cur = serde_json::to_value(cj.status.clone().unwrap_or_default())?;
    let differs = ["active", "lastScheduleTime", "lastSuccessfulTime"].iter().any(|k| {
        let (a, b) = (cur.get(*k).filter(|v| !v.is_null()), status.get(*k));
        match (a, b) {
            (None, Some(Value::Array(v))) => !v.is_empty(),
            (a, b) => a != b && b.is_some(),
        }
    });
    if differs {
        cj_api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    Ok(match next {
        Some(t) => Action::requeue(Duration::from_millis(((t - now).num_milliseconds().max(0) + 200) as u64)),
        None => Action::await_change(),
    })
}

use serde_json::Value;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_finds_the_latest_due_and_the_next_time() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().expect("time");
        let (due, next) = schedule_times("*/5 * * * *", t("2026-01-01T00:00:00Z"), t("2026-01-01T00:12:30Z")).expect("parse");
        assert_eq!(due, Some(t("2026-01-01T00:10:00Z")));
        assert_eq!(next, Some(t("2026-01-01T00:15:00Z")));
        let (due, _) = schedule_times("@hourly", t("2026-01-01T00:00:00Z"), t("2026-01-01T00:30:00Z")).expect("parse");
        assert_eq!(due, None);
        assert!(schedule_times("not a schedule", t("2026-01-01T00:00:00Z"), t("2026-01-01T00:30:00Z")).is_err());
    }
}

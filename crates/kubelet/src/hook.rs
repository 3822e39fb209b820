//! Container lifecycle hooks (`postStart`, `preStop`): a command run in
//! the container, an HTTP GET to it, or a pause, as the kubelet's handler
//! runner does them. A failure is worded as the kubelet's
//! `FailedPostStartHook`/`FailedPreStopHook` events word it.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use skiff_cri::{api, Runtime};

/// Runs `handler` for container `c` (runtime id `container_id`, pod
/// address `pod_ip`) for at most `timeout`. `Err` carries the event's
/// message; `pod` is `name_namespace(uid)`, as the kubelet names it there.
pub async fn run(
    rt: &Runtime,
    handler: &LifecycleHandler,
    c: &Container,
    container_id: &str,
    pod_ip: &str,
    pod: &str,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(e) = &handler.exec {
        let cmd = e.command.clone().unwrap_or_default();
        let req = api::ExecSyncRequest { container_id: container_id.into(), cmd: cmd.clone(), timeout: timeout.as_secs().max(1) as i64 };
        let failed = match tokio::time::timeout(timeout, rt.runtime.clone().exec_sync(req)).await {
            Err(_) => Some(format!("command '{}' timed out", cmd.join(" "))),
            Ok(Err(s)) => Some(s.message().to_string()),
            Ok(Ok(r)) => {
                let out = r.into_inner();
                let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
                (out.exit_code != 0).then(|| format!("command '{}' exited with {}: {}", cmd.join(" "), out.exit_code, text.trim()))
            }
        };
        return match failed {
            None => Ok(()),
            Some(err) => {
                Err(format!("Exec lifecycle hook ([{}]) for Container {:?} in Pod {pod:?} failed - error: {err}, message: \"\"", cmd.join(" "), c.name))
            }
        };
    }
    if let Some(h) = &handler.http_get {
        let host = h.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string());
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let fail = |err: String| format!("HTTP lifecycle hook ({path}) for Container {:?} in Pod {pod:?} failed - error: {err}", c.name);
        let port = crate::probe::port_of(&h.port, c).ok_or_else(|| fail(format!("port {:?} not found in the container's ports", h.port)))?;
        let agent = format!("kube-lifecycle/{}", crate::KUBELET_VERSION);
        // As the kubelet: any answer is success; only no answer fails the hook.
        return match tokio::time::timeout(timeout, crate::probe::http_get(&host, port, &path, h.http_headers.as_deref().unwrap_or_default(), &agent)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(fail(format!("Get \"http://{host}:{port}{path}\": {e}"))),
            Err(_) => Err(fail(format!("Get \"http://{host}:{port}{path}\": context deadline exceeded"))),
        };
    }
    if let Some(s) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    // tcpSocket is accepted by the API for compatibility and, as in the kubelet, does nothing.
    Ok(())
}

//! Container probes (startup, liveness, readiness): exec through CRI
//! `ExecSync`, `httpGet`, `tcpSocket` and `grpc` from the node to the pod's IP,
//! with the probe's period, timeout and thresholds.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_cri::{api, Runtime};
use tokio::time::Instant;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// startupProbe.
    Startup,
    /// livenessProbe.
    Liveness,
    /// readinessProbe.
    Readiness,
}

/// A probe's running tally for one container instance.
#[derive(Debug, Clone)]
pub struct Tally {
    /// The container instance the tally is for.
    pub container_id: String,
    /// Current verdict (true: passing).
    pub passing: bool,
    successes: i32,
    failures: i32,
    /// When the next run is due.
    pub next: Instant,
    /// The last failure's output, for the `Unhealthy` event.
    pub last_message: String,
}

impl Tally {
    /// A fresh tally for a container started at `started`.
    pub fn new(container_id: &str, kind: Kind, probe: &Probe, started: Instant) -> Self {
        let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        // Readiness starts failing (not ready until proven); the others passing.
        Self {
            container_id: container_id.into(),
            passing: kind != Kind::Readiness,
            successes: 0,
            failures: 0,
            next: started + delay,
            last_message: String::new(),
        }
    }

    /// Records one result; returns true when the verdict flips.
    pub fn record(&mut self, probe: &Probe, ok: bool, message: String) -> bool {
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        self.next = Instant::now() + period;
        if ok {
            self.successes += 1;
            self.failures = 0;
            if !self.passing && self.successes >= probe.success_threshold.unwrap_or(1).max(1) {
                self.passing = true;
                return true;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            self.last_message = message;
            if self.passing && self.failures >= probe.failure_threshold.unwrap_or(3).max(1) {
                self.passing = false;
                return true;
            }
        }
        false
    }
}

/// The container's probe of `kind`, if it has one.
pub fn of(c: &Container, kind: Kind) -> Option<&Probe> {
    match kind {
        Kind::Startup => c.startup_probe.as_ref(),
        Kind::Liveness => c.liveness_probe.as_ref(),
        Kind::Readiness => c.readiness_probe.as_ref(),
    }
}

pub(crate) fn port_of(p: &IntOrString, c: &Container) -> Option<u16> {
    match p {
        IntOrString::Int(i) => u16::try_from(*i).ok(),
        IntOrString::String(name) => c.ports.iter().flatten().find(|p| p.name.as_deref() == Some(name)).and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Runs the probe once: `Ok(())` passes, `Err(output)` fails.
pub async fn run(rt: &Runtime, probe: &Probe, c: &Container, container_id: &str, pod_ip: &str) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &probe.exec {
        let req = api::ExecSyncRequest { container_id: container_id.into(), cmd: e.command.clone().unwrap_or_default(), timeout: timeout.as_secs() as i64 };
        let out = rt.runtime.clone().exec_sync(req).await.map_err(|s| s.message().to_string())?.into_inner();
        return if out.exit_code == 0 {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            Err(format!("command {:?} exited with {}: {}", e.command.clone().unwrap_or_default(), out.exit_code, text.trim()))
        };
    }
    if let Some(t) = &probe.tcp_socket {
        let host = t.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string());
        let port = port_of(&t.port, c).ok_or("probe port not found")?;
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(h) = &probe.http_get {
        let host = h.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string());
        let port = port_of(&h.port, c).ok_or("probe port not found")?;
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let url = format!("http://{host}:{port}{path}");
        return match tokio::time::timeout(
            timeout,
            http_get(&host, port, &path, h.http_headers.as_deref().unwrap_or_default(), &format!("kube-probe/{}", crate::KUBELET_VERSION)),
        )
        .await
        {
            Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
            Ok(Ok(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(e)) => Err(format!("Get \"{url}\": {e}")),
            Err(_) => Err(format!("Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")),
        };
    }
    if let Some(g) = &probe.grpc {
        let port = u16::try_from(g.port).map_err(|_| format!("probe port {} is out of range", g.port))?;
        return grpc(pod_ip, port, g.service.as_deref().unwrap_or(""), timeout).await;
    }
    // A probe with no handler is refused by validation; nothing to run.
    Ok(())
}

/// The gRPC health checking protocol (`grpc.health.v1.Health/Check`) in
/// plaintext, worded as the kubelet's gRPC prober words its failures.
async fn grpc(host: &str, port: u16, service: &str, timeout: Duration) -> Result<(), String> {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).map_err(|e| e.to_string())?.connect_timeout(timeout).timeout(timeout);
    let channel = endpoint.connect().await.map_err(|e| format!("timeout: failed to connect service {addr:?} within {}s: {e}", timeout.as_secs()))?;
    let resp = HealthClient::new(channel).check(HealthCheckRequest { service: service.to_string() }).await;
    match resp {
        Ok(r) => match ServingStatus::try_from(r.into_inner().status) {
            Ok(ServingStatus::Serving) => Ok(()),
            Ok(other) => Err(format!("service unhealthy (responded with {:?})", other.as_str_name())),
            Err(_) => Err("service unhealthy (responded with an unknown status)".into()),
        },
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            Err(format!("this server does not implement the grpc health protocol (grpc.health.v1.Health): {}", s.message()))
        }
        Err(s) if s.code() == tonic::Code::DeadlineExceeded => Err(format!("timeout: health rpc did not complete within {}s", timeout.as_secs())),
        Err(s) => Err(format!("rpc error: code = {:?} desc = {}", s.code(), s.message())),
    }
}

/// One HTTP GET; the response's status code, or why there was none.
pub(crate) async fn http_get(host: &str, port: u16, path: &str, headers: &[k8s_openapi::api::core::v1::HTTPHeader], user_agent: &str) -> Result<u16, String> {
    let tcp = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", format!("{host}:{port}")).header("user-agent", user_agent);
    for h in headers {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    let req = req.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::ServingStatus;

    /// A real gRPC health server (tonic-health) on a free loopback port.
    async fn health_server() -> (tonic_health::server::HealthReporter, u16) {
        let (reporter, service) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming));
        (reporter, port)
    }

    #[tokio::test]
    async fn grpc_probes_follow_the_health_protocol() {
        let (reporter, port) = health_server().await;
        let t = Duration::from_secs(2);
        reporter.set_service_status("app", ServingStatus::Serving).await;
        assert_eq!(grpc("127.0.0.1", port, "app", t).await, Ok(()));
        // The empty service is the server as a whole, serving by default.
        assert_eq!(grpc("127.0.0.1", port, "", t).await, Ok(()));
        reporter.set_service_status("app", ServingStatus::NotServing).await;
        assert_eq!(grpc("127.0.0.1", port, "app", t).await, Err("service unhealthy (responded with \"NOT_SERVING\")".into()));
        let unknown = grpc("127.0.0.1", port, "nope", t).await.expect_err("unknown service");
        assert!(unknown.starts_with("rpc error: code = NotFound"), "{unknown}");
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();
        let refused = grpc("127.0.0.1", closed, "", t).await.expect_err("nothing listens");
        assert!(refused.starts_with("timeout: failed to connect service \"127.0.0.1:"), "{refused}");
    }
}

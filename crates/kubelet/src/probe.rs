//! Container probes (startup, liveness, readiness): exec through CRI
//! `ExecSync`, `httpGet` and `tcpSocket` from the node to the pod's IP,
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

fn port_of(p: &IntOrString, c: &Container) -> Option<u16> {
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
        return match tokio::time::timeout(timeout, http_get(&host, port, &path, h.http_headers.as_deref().unwrap_or_default())).await {
            Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
            Ok(Ok(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(e)) => Err(format!("Get \"{url}\": {e}")),
            Err(_) => Err(format!("Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")),
        };
    }
    // gRPC and unknown handlers: nothing to run, counted as passing.
    Ok(())
}

async fn http_get(host: &str, port: u16, path: &str, headers: &[k8s_openapi::api::core::v1::HTTPHeader]) -> Result<u16, String> {
    let tcp = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", format!("{host}:{port}")).header("user-agent", format!("kube-probe/{}", crate::KUBELET_VERSION));
    for h in headers {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    let req = req.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

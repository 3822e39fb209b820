//! Bounded work per request, as kube-apiserver's handler chain bounds it:
//! a deadline for every request that is not long-running
//! (`--request-timeout`, shortened by a request's own `?timeout=`), and at
//! most so many requests in flight, read-only and mutating counted apart
//! (`--max-requests-inflight`, `--max-mutating-requests-inflight`). Past
//! the deadline a request is answered with a 504 `Timeout` Status; past the
//! in-flight limit at once with a 429 and `Retry-After: 1`, so one client
//! cannot keep the others waiting.

use std::sync::Arc;
use std::time::Duration;

use skiff_api::error::ApiError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits a server applies to every request.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    /// The longest a request that is not long-running may take
    /// (`--request-timeout`; kube's default 60 s).
    pub timeout: Duration,
    /// Read-only requests in flight at once (`--max-requests-inflight`;
    /// 400 as kube's; 0: no limit).
    pub max_inflight: usize,
    /// Mutating requests in flight at once
    /// (`--max-mutating-requests-inflight`; 200 as kube's; 0: no limit).
    pub max_mutating_inflight: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(60), max_inflight: 400, max_mutating_inflight: 200 }
    }
}

/// The in-flight counters of one server.
#[derive(Debug)]
pub(crate) struct InFlight {
    readonly: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
}

impl InFlight {
    pub(crate) fn new(limits: &RequestLimits) -> Self {
        let pool = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        Self { readonly: pool(limits.max_inflight), mutating: pool(limits.max_mutating_inflight) }
    }

    /// A place for one request, held until it is answered; a 429 when the
    /// pool is full (kube-apiserver does not queue here either: the
    /// client's own retry after `Retry-After` is the queue).
    pub(crate) fn admit(&self, mutating: bool) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        let pool = if mutating { &self.mutating } else { &self.readonly };
        match pool {
            None => Ok(None),
            Some(p) => p.clone().try_acquire_owned().map(Some).map_err(|_| ApiError::too_many_requests("Too many requests, please try again later.", 1)),
        }
    }
}

/// Whether a verb changes state (counted against the mutating limit).
pub(crate) fn is_mutating(method: &hyper::Method) -> bool {
    matches!(*method, hyper::Method::POST | hyper::Method::PUT | hyper::Method::PATCH | hyper::Method::DELETE)
}

/// Requests that last as long as the client wants them to: watches and
/// the streaming subresources. They have no deadline and take no
/// in-flight place, as in kube-apiserver.
pub(crate) fn is_long_running(verb: &str, subresource: &str, upgrade: bool) -> bool {
    upgrade || verb == "watch" || matches!(subresource, "log" | "exec" | "attach" | "portforward" | "proxy")
}

/// The deadline of one request: the server's, or the shorter one the
/// request asks for with `?timeout=` (a Go duration, as client-go's
/// `--request-timeout` sends it).
pub(crate) fn deadline(query: Option<&str>, server: Duration) -> Result<Duration, ApiError> {
    let asked = query.and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "timeout").map(|(_, v)| v.into_owned()));
    let Some(asked) = asked.filter(|a| !a.is_empty()) else { return Ok(server) };
    match go_duration(&asked) {
        Some(d) if !d.is_zero() => Ok(d.min(server)),
        Some(_) => Ok(server),
        None => Err(ApiError::bad_request(format!("invalid timeout specified in the request URL: {asked}"))),
    }
}

/// The 504 a request past its deadline is answered with (kube's message).
pub(crate) fn timed_out() -> ApiError {
    ApiError::timeout("Timeout: request did not complete within requested timeout - context deadline exceeded", 0)
}

/// A Go `time.Duration` string (`30s`, `1m0s`, `1.5h`, `250ms`); `None`
/// for anything else, negative durations included.
fn go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(go_duration("1m0s"), Some(Duration::from_secs(60)));
        assert_eq!(go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "30", "s", "-1s", "1x", "1e400s"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_request_shortens_the_deadline_never_lengthens_it() {
        let server = Duration::from_secs(60);
        assert_eq!(deadline(None, server).ok(), Some(server));
        assert_eq!(deadline(Some("timeout=5s&limit=1"), server).ok(), Some(Duration::from_secs(5)));
        assert_eq!(deadline(Some("timeout=10m"), server).ok(), Some(server));
        assert_eq!(deadline(Some("timeout=0s"), server).ok(), Some(server));
        assert_eq!(deadline(Some("timeout=soon"), server).map_err(|e| e.code).err(), Some(400));
    }

    #[test]
    fn a_full_pool_answers_429_with_retry_after() {
        let flight = InFlight::new(&RequestLimits { timeout: Duration::from_secs(1), max_inflight: 1, max_mutating_inflight: 0 });
        let held = flight.admit(false).expect("first");
        let refused = flight.admit(false).expect_err("second");
        assert_eq!((refused.code, refused.reason), (429, "TooManyRequests"));
        drop(held);
        assert!(flight.admit(false).is_ok(), "the place is free again");
        for _ in 0..1000 {
            assert!(flight.admit(true).is_ok(), "0 is no limit");
        }
    }
}

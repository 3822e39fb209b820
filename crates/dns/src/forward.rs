//! Names outside the cluster go to the node's upstream resolvers, with a
//! cache (answers kept for their TTL, at most five minutes; negative ones
//! for the SOA's minimum, at most 30 s) and a bound on forwards in flight.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

/// Most forwards in flight; beyond it queries get SERVFAIL at once.
const IN_FLIGHT: usize = 1024;
/// Most cached answers; a full cache is emptied (simple, and bounded).
const CACHE_ENTRIES: usize = 65_536;

/// A cached question: name (lower case), type, class.
type Question = (String, u16, u16);

/// The forwarder.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    /// Answers and until when they may be reused.
    cache: Mutex<HashMap<Question, (Instant, Vec<u8>)>>,
    slots: Semaphore,
}

impl Forwarder {
    /// Forwards to `upstreams` (tried in order).
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Self { upstreams, cache: Mutex::new(HashMap::new()), slots: Semaphore::new(IN_FLIGHT) }
    }

    /// The upstream answer to `query` (its id put back), from the cache when fresh.
    pub async fn resolve(&self, query: &Message, packet: &[u8]) -> Option<Vec<u8>> {
        let q = query.queries.first()?;
        let key = (q.name().to_ascii().to_ascii_lowercase(), u16::from(q.query_type()), u16::from(q.query_class()));
        let id = query.metadata.id.to_be_bytes();
        if let Some((until, bytes)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            if *until > Instant::now() {
                let mut b = bytes.clone();
                b[..2].copy_from_slice(&id);
                return Some(b);
            }
        }
        let Ok(_slot) = self.slots.try_acquire() else {
            return servfail(query);
        };
        for up in &self.upstreams {
            if let Some(answer) = ask(*up, packet).await {
                if let Ok(m) = Message::from_vec(&answer) {
                    if let Some(ttl) = cache_ttl(&m) {
                        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                        if cache.len() >= CACHE_ENTRIES {
                            cache.clear();
                        }
                        cache.insert(key, (Instant::now() + ttl, answer.clone()));
                    }
                }
                let mut b = answer;
                b[..2].copy_from_slice(&id);
                return Some(b);
            }
        }
        servfail(query)
    }
}

fn servfail(query: &Message) -> Option<Vec<u8>> {
    let mut m = Message::error_msg(query.metadata.id, query.metadata.op_code, ResponseCode::ServFail);
    m.queries = query.queries.clone();
    m.metadata.recursion_available = true;
    m.to_vec().ok()
}

/// How long an upstream answer may be reused.
fn cache_ttl(m: &Message) -> Option<Duration> {
    match m.metadata.response_code {
        ResponseCode::NoError if !m.answers.is_empty() => {
            let ttl = m.answers.iter().map(|r| r.ttl).min().unwrap_or(0).min(300);
            (ttl > 0).then(|| Duration::from_secs(u64::from(ttl)))
        }
        ResponseCode::NoError | ResponseCode::NXDomain => {
            let min = m.authorities.iter().find_map(|r| if let RData::SOA(s) = &r.data { Some(s.minimum.min(r.ttl)) } else { None }).unwrap_or(0);
            let ttl = min.min(30);
            (ttl > 0).then(|| Duration::from_secs(u64::from(ttl)))
        }
        _ => None,
    }
}

/// One UDP exchange with `up`, 2 s at most.
async fn ask(up: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(bind).await.ok()?;
    sock.connect(up).await.ok()?;
    sock.send(packet).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let n = tokio::time::timeout_at(deadline.into(), sock.recv(&mut buf)).await.ok()?.ok()?;
        // Only the answer to this query (same id).
        if n >= 2 && buf[..2] == packet[..2] {
            buf.truncate(n);
            return Some(buf);
        }
    }
}

/// The nameservers of a resolv.conf, port 53. With `skip_loopback` the
/// loopback ones are left out (systemd-resolved's stub, useless to pods),
/// as the kubelet leaves them out of pods' resolv.conf.
pub fn nameservers(resolv_conf: &str, skip_loopback: bool) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .filter(|ip| !skip_loopback || !ip.is_loopback())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The search domains of a resolv.conf.
pub fn searches(resolv_conf: &str) -> Vec<String> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("search").or_else(|| l.trim().strip_prefix("domain")))
        .flat_map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

//! The etcd v3 backend: the [`Store`] operations as etcd's own calls, as
//! kube-apiserver's storage layer makes them.
//!
//! - create is `Txn(If mod_revision(key) == 0, Then Put, Else Range)`;
//!   update and delete are guarded by the key's mod revision the same way;
//! - reads are `Range` at a revision with a limit, continued after the last
//!   key;
//! - a watch is one gRPC `Watch` stream from a revision, with `prev_kv` (a
//!   delete event carries the last value) and progress notifications;
//! - compaction is `Compact`, done by one API server per interval through
//!   a compare-and-swap on a shared key, as kube-apiserver's compactor does.
//!
//! Several endpoints may be given: a request that cannot reach one member
//! (connection refused or reset, no leader) moves on to the next, and a
//! watch whose member goes resumes on another from the revision after the
//! last event it delivered, so its reader sees no gap. A write whose
//! outcome is unknown (its member went while it was in flight) is retried
//! and told apart by reading the key back: the value it wrote is there, or
//! it is not.
//!
//! Keys are kept in kube-apiserver's layout for the core group
//! (`/registry/configmaps/NS/NAME`, not skiff's `/registry/core/…`), so
//! `etcdctl get --prefix /registry/configmaps/default` reads as users
//! expect. Other groups keep `/registry/GROUP/RESOURCE/…`, which is
//! kube's layout for custom and aggregated resources.
//!
//! The client is gRPC over tonic from etcd's protocol (`proto/etcd.proto`,
//! compiled by protox at build time), rather than the `etcd-client` crate,
//! because that crate's build script needs a system `protoc`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{prefix_end, Event, EventKind, KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, WatchStream};

pub mod process;

/// etcd's v3 protocol, generated from `proto/etcd.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::kv_client::KvClient;
use pb::request_op::Request as Op;
use pb::response_op::Response as OpResponse;

/// How to reach an etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs of the members, e.g. `https://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The CA that signed the members' serving certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// This client's certificate (PEM), for members that require one.
    pub cert_file: Option<PathBuf>,
    /// This client's key (PEM).
    pub key_file: Option<PathBuf>,
    /// How long one request may take before it is answered as a timeout.
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self { endpoints: Vec::new(), ca_file: None, cert_file: None, key_file: None, request_timeout: Duration::from_secs(10) }
    }
}

/// The largest answer read: a page of 5,000 objects is several MiB, past
/// gRPC's 4 MiB default (etcd itself bounds only requests).
const MAX_MESSAGE: usize = 1 << 30;

fn kv_client(ch: Channel) -> KvClient<Channel> {
    KvClient::new(ch).max_decoding_message_size(MAX_MESSAGE)
}

/// The key kube-apiserver's compactors share: each interval only the one
/// whose compare-and-swap on it succeeds compacts.
const COMPACT_KEY: &str = "compact_rev_key";

/// A [`Store`] over an etcd v3 cluster.
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    channels: Vec<Channel>,
    endpoints: Vec<String>,
    /// The member requests go to until it fails.
    active: AtomicUsize,
    /// The highest revision any response showed this process.
    revision: AtomicI64,
    /// The highest compaction revision this process knows of.
    compacted: AtomicI64,
    /// The version of [`COMPACT_KEY`] this process last saw.
    compact_version: AtomicI64,
    /// Asks every open watch for a progress notification.
    progress: broadcast::Sender<()>,
    timeout: Duration,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn read_file(p: &Option<PathBuf>) -> Result<Option<Vec<u8>>> {
    p.as_ref().map(|p| std::fs::read(p).map_err(|e| backend(format!("reading {}: {e}", p.display())))).transpose()
}

impl EtcdStore {
    /// Connects to the cluster (lazily: members are dialled on first use)
    /// and checks that one member answers.
    pub async fn connect(opts: EtcdOptions) -> Result<Self> {
        if opts.endpoints.is_empty() {
            return Err(backend("no etcd endpoints given"));
        }
        let ca = read_file(&opts.ca_file)?;
        let identity = match (read_file(&opts.cert_file)?, read_file(&opts.key_file)?) {
            (Some(c), Some(k)) => Some(Identity::from_pem(c, k)),
            (None, None) => None,
            _ => return Err(backend("an etcd client certificate needs both --datastore-certfile and --datastore-keyfile")),
        };
        let mut channels = Vec::new();
        for url in &opts.endpoints {
            let mut ep = Endpoint::from_shared(url.clone())
                .map_err(|e| backend(format!("etcd endpoint {url:?}: {e}")))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(3))
                .keep_alive_while_idle(true);
            if url.starts_with("https://") {
                let mut tls = ClientTlsConfig::new();
                if let Some(ca) = &ca {
                    tls = tls.ca_certificate(Certificate::from_pem(ca));
                }
                if let Some(id) = &identity {
                    tls = tls.identity(id.clone());
                }
                ep = ep.tls_config(tls).map_err(|e| backend(format!("etcd endpoint {url:?}: {e}")))?;
            }
            channels.push(ep.connect_lazy());
        }
        let inner = Arc::new(Inner {
            channels,
            endpoints: opts.endpoints.clone(),
            active: AtomicUsize::new(0),
            revision: AtomicI64::new(0),
            compacted: AtomicI64::new(0),
            compact_version: AtomicI64::new(0),
            progress: broadcast::channel(16).0,
            timeout: opts.request_timeout,
        });
        let store = Self { inner };
        // The first answer gives the current revision; a cluster that does
        // not answer is an error the operator sees at start.
        store.fresh_revision().await?;
        Ok(store)
    }

    /// The members' client URLs this store was given.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// A channel to the member requests currently go to.
    pub fn channel(&self) -> Channel {
        let i = self.inner.active.load(Ordering::Relaxed) % self.inner.channels.len();
        self.inner.channels[i].clone()
    }

    /// Streams a snapshot of the member's database (etcd's Maintenance
    /// `Snapshot`) into `out`; returns the revision it was taken at.
    pub async fn snapshot(&self, out: &mut (impl tokio::io::AsyncWrite + Unpin)) -> Result<Revision> {
        use tokio::io::AsyncWriteExt;
        let rev = self.fresh_revision().await?;
        let mut client = pb::maintenance_client::MaintenanceClient::new(self.channel());
        let mut stream = client.snapshot(pb::SnapshotRequest {}).await.map_err(map_status)?.into_inner();
        while let Some(part) = stream.next().await {
            let part = part.map_err(map_status)?;
            out.write_all(&part.blob).await.map_err(backend)?;
        }
        out.flush().await.map_err(backend)?;
        Ok(rev)
    }

    /// The cluster's members.
    pub async fn members(&self) -> Result<Vec<pb::Member>> {
        let inner = self.inner.clone();
        inner.retry(|ch| async move { pb::cluster_client::ClusterClient::new(ch).member_list(pb::MemberListRequest {}).await }).await.map(|r| r.members)
    }

    /// Adds a member by its peer URLs; returns it with the members after.
    pub async fn member_add(&self, peer_urls: Vec<String>) -> Result<(pb::Member, Vec<pb::Member>)> {
        let mut client = pb::cluster_client::ClusterClient::new(self.channel());
        let r = client.member_add(pb::MemberAddRequest { peer_ur_ls: peer_urls, is_learner: false }).await.map_err(map_status)?.into_inner();
        Ok((r.member.unwrap_or_default(), r.members))
    }

    /// Removes a member by its ID.
    pub async fn member_remove(&self, id: u64) -> Result<Vec<pb::Member>> {
        let mut client = pb::cluster_client::ClusterClient::new(self.channel());
        Ok(client.member_remove(pb::MemberRemoveRequest { id }).await.map_err(map_status)?.into_inner().members)
    }

    async fn txn(&self, req: pb::TxnRequest) -> Result<(pb::TxnResponse, bool)> {
        let inner = self.inner.clone();
        let (resp, ambiguous) = inner
            .retry_write(move |ch| {
                let req = req.clone();
                async move { kv_client(ch).txn(req).await }
            })
            .await?;
        self.inner.saw(resp.header.as_ref());
        Ok((resp, ambiguous))
    }

    async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse> {
        let inner = self.inner.clone();
        let resp = inner
            .retry(move |ch| {
                let req = req.clone();
                async move { kv_client(ch).range(req).await }
            })
            .await?;
        self.inner.saw(resp.header.as_ref());
        Ok(resp)
    }

    async fn get_raw(&self, key: &[u8]) -> Result<Option<pb::KeyValue>> {
        Ok(self.range(pb::RangeRequest { key: key.to_vec(), ..Default::default() }).await?.kvs.into_iter().next())
    }
}

impl Inner {
    fn saw(&self, header: Option<&pb::ResponseHeader>) {
        if let Some(h) = header {
            self.revision.fetch_max(h.revision, Ordering::SeqCst);
        }
    }

    /// Moves requests on to the next member after `failed` failed.
    fn fail_over(&self, failed: usize) {
        let next = (failed + 1) % self.channels.len();
        let _ = self.active.compare_exchange(failed, next, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Runs a read, moving on through the members while they cannot be
    /// reached, for at most the request timeout.
    async fn retry<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.retry_write(call).await.map(|(v, _)| v)
    }

    /// Runs a call through the members; also says whether an earlier
    /// attempt may have taken effect (it failed after it was sent).
    async fn retry_write<T, F, Fut>(&self, call: F) -> Result<(T, bool)>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut ambiguous = false;
        let mut attempts = 0usize;
        loop {
            let i = self.active.load(Ordering::SeqCst) % self.channels.len();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // One attempt gets a few seconds: a proposal a follower passed
            // to a leader that died is only answered by etcd's own timeout
            // (7 s), while a new leader is elected in about one.
            let status = match tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), call(self.channels[i].clone())).await {
                Ok(Ok(r)) => return Ok((r.into_inner(), ambiguous)),
                Ok(Err(s)) => s,
                Err(_) if left > ATTEMPT_TIMEOUT => tonic::Status::deadline_exceeded("etcd did not answer this attempt in time"),
                Err(_) => return Err(StoreError::Timeout(format!("etcd did not answer within {:?}", self.timeout))),
            };
            if !retryable(&status) {
                return Err(map_status(status));
            }
            ambiguous |= !sent_nothing(&status);
            tracing::debug!(endpoint = %self.endpoints[i], error = %status.message(), "etcd: moving on to the next member");
            self.fail_over(i);
            attempts += 1;
            // Once every member was tried, wait a little: an election or a
            // restart takes a moment.
            if attempts.is_multiple_of(self.channels.len()) {
                let pause = Duration::from_millis(100 * (attempts / self.channels.len()).min(5) as u64);
                if tokio::time::Instant::now() + pause >= deadline {
                    return Err(match status.code() {
                        tonic::Code::Unavailable => StoreError::Unavailable(format!("etcd: no member answered: {}", status.message())),
                        _ => map_status(status),
                    });
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// How long one attempt of a call waits before it is tried again (on the
/// next member).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors another member may not have: the member is gone or unreachable,
/// or the cluster is between leaders.
fn retryable(s: &tonic::Status) -> bool {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => true,
        _ => s.message().contains("leader changed") || s.message().contains("no leader"),
    }
}

/// Whether a failed call certainly never reached a member (so a write was
/// not applied): the connection was refused or could not be made.
fn sent_nothing(s: &tonic::Status) -> bool {
    let mut chain = s.message().to_ascii_lowercase();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = source {
        chain.push_str(&e.to_string().to_ascii_lowercase());
        source = e.source();
    }
    chain.contains("connection refused") || chain.contains("tcp connect error") || chain.contains("error trying to connect")
}

/// etcd's answers as the store's errors; the API server turns them into
/// Kubernetes' (504 `Timeout`, 429 with `Retry-After`, 410 `Expired`).
fn map_status(s: tonic::Status) -> StoreError {
    let msg = s.message();
    if msg.contains("required revision has been compacted") {
        return StoreError::Compacted { requested: 0, compacted: 0 };
    }
    if msg.contains("too many requests") {
        return StoreError::TooManyRequests(format!("etcdserver: {}", msg.trim_start_matches("etcdserver: ")));
    }
    if msg.contains("request timed out") || s.code() == tonic::Code::DeadlineExceeded {
        return StoreError::Timeout(msg.to_string());
    }
    if s.code() == tonic::Code::Unavailable {
        return StoreError::Unavailable(msg.to_string());
    }
    backend(format!("etcd: {msg}"))
}

/// skiff's key → etcd's key: the core group's resources sit directly
/// under `/registry/`, as kube-apiserver stores them.
fn to_etcd(key: &str) -> Vec<u8> {
    match key.strip_prefix("/registry/core/") {
        Some(rest) => format!("/registry/{rest}").into_bytes(),
        None => key.as_bytes().to_vec(),
    }
}

/// Groups whose names have no dot (every other group's has one, and no
/// core resource's name has one).
const DOTLESS_GROUPS: &[&str] = &["apps", "batch", "policy", "autoscaling", "extensions"];

/// etcd's key → skiff's key (the inverse of [`to_etcd`]).
fn from_etcd(key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    if let Some(rest) = key.strip_prefix("/registry/") {
        let first = rest.split('/').next().unwrap_or("");
        if rest.contains('/') && !first.contains('.') && !DOTLESS_GROUPS.contains(&first) && first != "core" {
            return format!("/registry/core/{rest}");
        }
    }
    key.into_owned()
}

/// The etcd range of a skiff prefix: `(start, end)`. skiff's `/registry/`
/// and `/registry/core/` both cover every key under etcd's `/registry/`;
/// readers of the latter filter by key afterwards.
fn etcd_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let start = to_etcd(prefix);
    let end = prefix_end(&String::from_utf8_lossy(&start)).into_bytes();
    (start, end)
}

fn kv_of(kv: pb::KeyValue) -> KeyValue {
    KeyValue { key: from_etcd(&kv.key), value: Bytes::from(kv.value), create_revision: kv.create_revision, mod_revision: kv.mod_revision }
}

fn mod_equals(key: &[u8], rev: Revision) -> pb::Compare {
    pb::Compare { result: CompareResult::Equal as i32, target: CompareTarget::Mod as i32, key: key.to_vec(), target_union: Some(TargetUnion::ModRevision(rev)) }
}

fn op(r: Op) -> pb::RequestOp {
    pb::RequestOp { request: Some(r) }
}

/// The key a failed transaction's `Else Range` read back.
fn failure_read(resp: &pb::TxnResponse) -> Option<pb::KeyValue> {
    resp.responses.iter().find_map(|r| match &r.response {
        Some(OpResponse::ResponseRange(rr)) => rr.kvs.first().cloned(),
        _ => None,
    })
}

fn header_rev(resp: &pb::TxnResponse) -> Revision {
    resp.header.as_ref().map(|h| h.revision).unwrap_or(0)
}

impl Store for EtcdStore {
    fn current_revision(&self) -> Revision {
        self.inner.revision.load(Ordering::SeqCst)
    }

    fn compacted_revision(&self) -> Revision {
        self.inner.compacted.load(Ordering::SeqCst)
    }

    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>>> {
        let key = to_etcd(key);
        Box::pin(async move { Ok(self.get_raw(&key).await?.map(kv_of)) })
    }

    fn list(&self, prefix: &str, opts: ListOptions) -> BoxFuture<'_, Result<ListResult>> {
        let prefix = prefix.to_string();
        Box::pin(async move {
            let (start, end) = etcd_range(&prefix);
            let key = match &opts.start_after {
                Some(after) => {
                    let mut k = to_etcd(after);
                    k.push(0);
                    k
                }
                None => start,
            };
            let req = pb::RangeRequest { key, range_end: end, limit: opts.limit as i64, revision: opts.revision.unwrap_or(0), ..Default::default() };
            let resp = self.range(req).await.map_err(|e| match e {
                StoreError::Compacted { .. } => {
                    StoreError::Compacted { requested: opts.revision.unwrap_or(0), compacted: self.inner.compacted.load(Ordering::SeqCst) }
                }
                StoreError::Backend(m) if m.contains("future revision") => {
                    StoreError::FutureRevision { requested: opts.revision.unwrap_or(0), current: self.current_revision() }
                }
                e => e,
            })?;
            let revision = opts.revision.unwrap_or_else(|| resp.header.as_ref().map(|h| h.revision).unwrap_or(0));
            let items = resp.kvs.into_iter().map(kv_of).filter(|kv| kv.key.starts_with(&prefix)).collect();
            Ok(ListResult { items, revision, more: resp.more })
        })
    }

    fn create(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<KeyValue>> {
        let (skiff_key, key) = (key.to_string(), to_etcd(key));
        Box::pin(async move {
            let req = pb::TxnRequest {
                compare: vec![mod_equals(&key, 0)],
                success: vec![op(Op::RequestPut(pb::PutRequest { key: key.clone(), value: value.to_vec(), ..Default::default() }))],
                failure: vec![op(Op::RequestRange(pb::RangeRequest { key: key.clone(), ..Default::default() }))],
            };
            let (resp, ambiguous) = self.txn(req).await?;
            if resp.succeeded {
                let rev = header_rev(&resp);
                return Ok(KeyValue { key: skiff_key, value, create_revision: rev, mod_revision: rev });
            }
            match failure_read(&resp) {
                // An earlier attempt that reached etcd made it.
                Some(kv) if ambiguous && kv.value == value.as_ref() && kv.version == 1 => Ok(kv_of(kv)),
                _ => Err(StoreError::AlreadyExists(skiff_key)),
            }
        })
    }

    fn update(&self, key: &str, value: Bytes, expected: Revision) -> BoxFuture<'_, Result<KeyValue>> {
        let (skiff_key, key) = (key.to_string(), to_etcd(key));
        Box::pin(async move {
            let req = pb::TxnRequest {
                compare: vec![mod_equals(&key, expected)],
                success: vec![op(Op::RequestPut(pb::PutRequest { key: key.clone(), value: value.to_vec(), prev_kv: true, ..Default::default() }))],
                failure: vec![op(Op::RequestRange(pb::RangeRequest { key: key.clone(), ..Default::default() }))],
            };
            let (resp, ambiguous) = self.txn(req).await?;
            if resp.succeeded {
                let created = resp
                    .responses
                    .iter()
                    .find_map(|r| match &r.response {
                        Some(OpResponse::ResponsePut(p)) => p.prev_kv.as_ref().map(|kv| kv.create_revision),
                        _ => None,
                    })
                    .unwrap_or(0);
                return Ok(KeyValue { key: skiff_key, value, create_revision: created, mod_revision: header_rev(&resp) });
            }
            match failure_read(&resp) {
                None => Err(StoreError::NotFound(skiff_key)),
                Some(kv) if ambiguous && kv.value == value.as_ref() && kv.mod_revision > expected => Ok(kv_of(kv)),
                Some(kv) => Err(StoreError::Conflict { key: skiff_key, expected, actual: kv.mod_revision }),
            }
        })
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> BoxFuture<'_, Result<KeyValue>> {
        let (skiff_key, key) = (key.to_string(), to_etcd(key));
        Box::pin(async move {
            let compare = match expected {
                Some(rev) => vec![mod_equals(&key, rev)],
                // Any existing key: its mod revision is above 0.
                None => vec![pb::Compare {
                    result: CompareResult::Greater as i32,
                    target: CompareTarget::Mod as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::ModRevision(0)),
                }],
            };
            let req = pb::TxnRequest {
                compare,
                success: vec![op(Op::RequestDeleteRange(pb::DeleteRangeRequest { key: key.clone(), prev_kv: true, ..Default::default() }))],
                failure: vec![op(Op::RequestRange(pb::RangeRequest { key: key.clone(), ..Default::default() }))],
            };
            let (resp, _) = self.txn(req).await?;
            if resp.succeeded {
                let prev = resp.responses.iter().find_map(|r| match &r.response {
                    Some(OpResponse::ResponseDeleteRange(d)) => d.prev_kvs.first().cloned(),
                    _ => None,
                });
                let prev = prev.ok_or_else(|| StoreError::NotFound(skiff_key.clone()))?;
                return Ok(KeyValue { key: skiff_key, value: Bytes::from(prev.value), create_revision: prev.create_revision, mod_revision: header_rev(&resp) });
            }
            match failure_read(&resp) {
                None => Err(StoreError::NotFound(skiff_key)),
                Some(kv) => Err(StoreError::Conflict { key: skiff_key, expected: expected.unwrap_or(0), actual: kv.mod_revision }),
            }
        })
    }

    fn watch(&self, prefix: &str, from: Revision) -> BoxFuture<'_, Result<WatchStream>> {
        let prefix = prefix.to_string();
        Box::pin(async move {
            // etcd accepts a watch from a compacted revision and cancels it
            // just after; a read at that revision answers at once, so the
            // caller learns it from this call, as from the other backends.
            if from > 0 {
                let at = pb::RangeRequest { key: b"/registry/".to_vec(), revision: from, count_only: true, ..Default::default() };
                match self.range(at).await {
                    Err(StoreError::Compacted { .. }) => {
                        return Err(StoreError::Compacted { requested: from, compacted: self.inner.compacted.load(Ordering::SeqCst).max(from) });
                    }
                    Err(StoreError::Backend(m)) if m.contains("future revision") => {}
                    Err(e) => return Err(e),
                    Ok(_) => {}
                }
            }
            let (tx, rx) = mpsc::channel::<Result<Event>>(256);
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(follow(self.inner.clone(), prefix, from, tx, ready_tx));
            // The watch is established (or refused, e.g. compacted) before
            // the caller writes anything it expects to see.
            match ready_rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(StoreError::Closed),
            }
            Ok(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) }).boxed())
        })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            // Only the API server whose compare-and-swap on the shared key
            // succeeds compacts this interval (kube-apiserver's scheme):
            // several servers over one etcd compact once, not once each.
            let key = COMPACT_KEY.as_bytes().to_vec();
            let known = self.inner.compact_version.load(Ordering::SeqCst);
            let req = pb::TxnRequest {
                compare: vec![pb::Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Version as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::Version(known)),
                }],
                success: vec![op(Op::RequestPut(pb::PutRequest { key: key.clone(), value: revision.to_string().into_bytes(), ..Default::default() }))],
                failure: vec![op(Op::RequestRange(pb::RangeRequest { key: key.clone(), ..Default::default() }))],
            };
            let (resp, _) = self.txn(req).await?;
            if !resp.succeeded {
                // Another server compacted since: learn how far, and skip.
                if let Some(kv) = failure_read(&resp) {
                    self.inner.compact_version.store(kv.version, Ordering::SeqCst);
                    if let Some(rev) = std::str::from_utf8(&kv.value).ok().and_then(|v| v.parse::<i64>().ok()) {
                        self.inner.compacted.fetch_max(rev, Ordering::SeqCst);
                    }
                }
                return Ok(());
            }
            self.inner.compact_version.store(known + 1, Ordering::SeqCst);
            let inner = self.inner.clone();
            let done = inner.retry(move |ch| async move { KvClient::new(ch).compact(pb::CompactionRequest { revision, physical: false }).await }).await;
            match done {
                Ok(_) | Err(StoreError::Compacted { .. }) => {
                    self.inner.compacted.fetch_max(revision, Ordering::SeqCst);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        })
    }

    fn fresh_revision(&self) -> BoxFuture<'_, Result<Revision>> {
        Box::pin(async move {
            // A read of one (absent) key: its header is the current revision.
            let resp = self.range(pb::RangeRequest { key: b"/registry/".to_vec(), keys_only: true, ..Default::default() }).await?;
            let _ = self.inner.progress.send(());
            Ok(resp.header.map(|h| h.revision).unwrap_or(0))
        })
    }
}

/// One watch: follows etcd's events under `prefix` from `from`, resuming on
/// another member from the next revision when its stream breaks.
async fn follow(inner: Arc<Inner>, prefix: String, from: Revision, tx: mpsc::Sender<Result<Event>>, ready: tokio::sync::oneshot::Sender<Result<()>>) {
    let (start, end) = etcd_range(&prefix);
    let mut ready = Some(ready);
    let mut progress = inner.progress.subscribe();
    // The next revision to deliver; 0 until the first stream says where
    // "now" is.
    let mut next = from;
    let mut failures = 0u32;
    let fail = |ready: &mut Option<tokio::sync::oneshot::Sender<Result<()>>>, e: StoreError| {
        if let Some(r) = ready.take() {
            let _ = r.send(Err(e));
            None
        } else {
            Some(e)
        }
    };
    loop {
        let i = inner.active.load(Ordering::SeqCst) % inner.channels.len();
        let (req_tx, req_rx) = mpsc::channel::<pb::WatchRequest>(4);
        let create = pb::WatchCreateRequest { key: start.clone(), range_end: end.clone(), start_revision: next, progress_notify: true, prev_kv: true };
        let _ = req_tx.send(pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)) }).await;
        let mut client = pb::watch_client::WatchClient::new(inner.channels[i].clone()).max_decoding_message_size(MAX_MESSAGE);
        let opened = tokio::select! {
            r = client.watch(tokio_stream::wrappers::ReceiverStream::new(req_rx)) => r,
            _ = tx.closed() => return,
        };
        let mut stream = match opened {
            Ok(s) => s.into_inner(),
            Err(s) => {
                failures += 1;
                if !retryable(&s) || failures as usize > inner.channels.len() * 50 {
                    if let Some(e) = fail(&mut ready, map_status(s)) {
                        let _ = tx.send(Err(e)).await;
                    }
                    return;
                }
                inner.fail_over(i);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                p = progress.recv() => {
                    if !matches!(p, Err(broadcast::error::RecvError::Closed)) {
                        let _ = req_tx.try_send(pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(pb::WatchProgressRequest {})) });
                    }
                    continue;
                }
                _ = tx.closed() => return,
            };
            let resp = match msg {
                Some(Ok(r)) => r,
                // The member went (or the stream broke): resume elsewhere.
                Some(Err(_)) | None => break,
            };
            failures = 0;
            let rev = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
            inner.revision.fetch_max(rev, Ordering::SeqCst);
            if resp.compact_revision != 0 {
                inner.compacted.fetch_max(resp.compact_revision, Ordering::SeqCst);
                let e = StoreError::Compacted { requested: next, compacted: resp.compact_revision };
                if let Some(e) = fail(&mut ready, e) {
                    let _ = tx.send(Err(e)).await;
                }
                return;
            }
            if resp.canceled {
                let e = backend(format!("etcd cancelled the watch: {}", resp.cancel_reason));
                if let Some(e) = fail(&mut ready, e) {
                    let _ = tx.send(Err(e)).await;
                }
                return;
            }
            if resp.created {
                if next == 0 {
                    next = rev + 1;
                }
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
                continue;
            }
            if resp.events.is_empty() {
                // A progress notification: nothing under the prefix
                // changed up to `rev`.
                if rev >= next {
                    next = rev + 1;
                    let kv = KeyValue { key: String::new(), value: Bytes::new(), create_revision: 0, mod_revision: rev };
                    if tx.send(Ok(Event { kind: EventKind::Progress, kv, created: false })).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            for ev in resp.events {
                let Some(kv) = ev.kv else { continue };
                let mod_rev = kv.mod_revision;
                if mod_rev < next {
                    continue;
                }
                next = mod_rev + 1;
                let event = if ev.r#type == pb::event::EventType::Delete as i32 {
                    let prev = ev.prev_kv.unwrap_or_default();
                    let kv = KeyValue { key: from_etcd(&kv.key), value: Bytes::from(prev.value), create_revision: prev.create_revision, mod_revision: mod_rev };
                    Event { kind: EventKind::Delete, kv, created: false }
                } else {
                    let created = kv.version == 1;
                    Event { kind: EventKind::Put, kv: kv_of(kv), created }
                };
                if !event.kv.key.starts_with(&prefix) {
                    continue;
                }
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
        tracing::debug!(endpoint = %inner.endpoints[i], next, "etcd watch broke; resuming on the next member");
        inner.fail_over(i);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcds_errors_become_the_stores() {
        let too_many = map_status(tonic::Status::resource_exhausted("etcdserver: too many requests"));
        assert!(matches!(&too_many, StoreError::TooManyRequests(m) if m == "etcdserver: too many requests"), "{too_many:?}");
        assert!(matches!(map_status(tonic::Status::unavailable("etcdserver: request timed out")), StoreError::Timeout(_)));
        assert!(matches!(map_status(tonic::Status::out_of_range("etcdserver: mvcc: required revision has been compacted")), StoreError::Compacted { .. }));
        assert!(matches!(map_status(tonic::Status::unavailable("connection refused")), StoreError::Unavailable(_)));
        assert!(retryable(&tonic::Status::unavailable("etcdserver: leader changed")));
        assert!(!retryable(&tonic::Status::invalid_argument("etcdserver: request is too large")));
    }

    #[test]
    fn core_keys_use_kube_layout_and_map_back() {
        assert_eq!(to_etcd("/registry/core/configmaps/default/a"), b"/registry/configmaps/default/a".to_vec());
        assert_eq!(from_etcd(b"/registry/configmaps/default/a"), "/registry/core/configmaps/default/a");
        for k in ["/registry/apps/deployments/ns/a", "/registry/stable.example.com/widgets/ns/w", "/registry/batch/jobs/ns/j", "compact_rev_key"] {
            assert_eq!(from_etcd(&to_etcd(k)), k);
        }
        assert_eq!(from_etcd(&to_etcd("/registry/core/namespaces/default")), "/registry/core/namespaces/default");
    }
}

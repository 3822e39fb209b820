//! Watches served from the watch cache: newline-delimited JSON events,
//! selector transitions (an object that stops matching is DELETED to that
//! watcher), bookmarks, `sendInitialEvents`, `timeoutSeconds`, and a 410
//! ERROR event for revisions older than the cache's window.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use serde_json::{json, Value};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::{table, ApiError, ResourceType};
use tokio::sync::{broadcast, mpsc};

use crate::cache::{CacheError, CacheEvent, Cached, Change, Message};
use crate::handler::State;
use crate::respond::Resp;

/// How often an idle watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// Default and maximum watch duration when the client names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// What one watcher asked for.
struct Request {
    rt: ResourceType,
    /// Converts custom resources stored in another version.
    converter: Option<crate::convert::Converter>,
    labels: LabelSelector,
    fields: FieldSelector,
    /// A Table per event, its row carrying this much of the object.
    table: Option<table::IncludeObject>,
    metadata: bool,
    bookmarks: bool,
    /// Protobuf frames instead of JSON lines.
    protobuf: bool,
}

impl Request {
    /// The event this watcher sees for a change, if any.
    fn view<'a>(&self, ev: &'a CacheEvent) -> Option<(&'static str, &'a Cached)> {
        let now = ev.object.matches(&self.labels, &self.fields);
        match ev.change {
            Change::Added => now.then_some(("ADDED", &*ev.object)),
            Change::Deleted => now.then_some(("DELETED", &*ev.object)),
            Change::Modified => {
                let before = ev.prev.as_ref().is_some_and(|p| p.matches(&self.labels, &self.fields));
                match (before, now) {
                    (true, true) => Some(("MODIFIED", &*ev.object)),
                    (false, true) => Some(("ADDED", &*ev.object)),
                    (true, false) => Some(("DELETED", &*ev.object)),
                    (false, false) => None,
                }
            }
        }
    }

    /// One line of the stream, the object in the watched version. A
    /// conversion that fails ends the stream with an ERROR event.
    async fn line(&self, ty: &str, obj: &Cached) -> Bytes {
        let Some(conv) = &self.converter else { return self.line_of(ty, obj, None) };
        match conv.served_bytes(&self.rt, vec![obj.json.clone()]).await {
            Ok(mut v) => {
                let json = v.pop().unwrap_or_else(|| obj.json.clone());
                if json == obj.json {
                    self.line_of(ty, obj, None)
                } else {
                    self.line_of(ty, obj, Some(json))
                }
            }
            Err(e) => event_line("ERROR", &e.to_status()),
        }
    }

    /// One line of the stream, with the object's JSON in the watched
    /// version when it had to be converted.
    fn line_of(&self, ty: &str, obj: &Cached, converted: Option<Bytes>) -> Bytes {
        if self.protobuf && converted.is_none() {
            if let Some(frame) = obj.protobuf().and_then(|env| skiff_api::protobuf::watch_frame(ty, &env)) {
                return Bytes::from(frame);
            }
        }
        let json = converted.unwrap_or_else(|| obj.json.clone());
        if let Some(include) = self.table {
            let o: Value = serde_json::from_slice(&json).unwrap_or(Value::Null);
            let rv = o.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("").to_string();
            let t = crate::read::table_of(&self.rt, &[&o], include, &rv, None);
            return event_line(ty, &t);
        }
        if self.metadata {
            return event_line(ty, &table::partial_metadata(&serde_json::from_slice(&json).unwrap_or(Value::Null)));
        }
        // The cached JSON is spliced in as is: no re-serialization per watcher.
        let mut out = Vec::with_capacity(obj.json.len() + 32);
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(ty.as_bytes());
        out.extend_from_slice(b"\",\"object\":");
        out.extend_from_slice(&json);
        out.extend_from_slice(b"}\n");
        Bytes::from(out)
    }

    fn bookmark(&self, rev: i64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rev.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta});
        if self.protobuf {
            if let Some(frame) = skiff_api::protobuf::encode_watch_event("BOOKMARK", &obj) {
                return Bytes::from(frame);
            }
        }
        event_line("BOOKMARK", &obj)
    }
}

fn event_line(ty: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn stream_response(rx: mpsc::Receiver<Bytes>, protobuf: bool) -> Result<Resp, ApiError> {
    let ctype = if protobuf { "application/vnd.kubernetes.protobuf;stream=watch" } else { "application/json" };
    let body = futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |b| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)));
    Response::builder()
        .status(200)
        .header("Content-Type", ctype)
        .header("Transfer-Encoding", "chunked")
        .body(BodyExt::boxed_unsync(StreamBody::new(body)))
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn too_large(requested: i64, current: i64) -> ApiError {
    let mut e = ApiError::new(504, "Timeout", format!("Too large resource version: {requested}, current: {current}"));
    e.details = Some(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}));
    e
}

pub(crate) fn cache_error(e: CacheError) -> ApiError {
    match e {
        CacheError::TooOld { requested, floor } => ApiError::expired(format!("too old resource version: {requested} ({floor})")),
        CacheError::TooLarge { requested, current } => too_large(requested, current),
    }
}

/// Serves `?watch=true` on a collection.
pub(crate) async fn watch(state: &State, rt: ResourceType, prefix: String, q: &HashMap<String, String>, accept: &str) -> Result<Resp, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str)).map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse_for(q.get("fieldSelector").map_or("", String::as_str), &rt).map_err(ApiError::bad_request)?;
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let send_initial = match q.get("sendInitialEvents").map(String::as_str) {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    if send_initial.is_some() && q.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") {
        return Err(ApiError::new(422, "Invalid", "sendInitialEvents is forbidden for watch unless resourceVersionMatch is set to NotOlderThan".to_string()));
    }
    let converter = crate::convert::converts(&rt).then(|| crate::convert::Converter::of(state));
    let req = Request {
        rt,
        converter,
        labels,
        fields,
        table: if crate::read::wants_table(accept) { Some(crate::read::include_object(q)?) } else { None },
        metadata: crate::read::wants_metadata(accept),
        bookmarks: flag("allowWatchBookmarks"),
        protobuf: skiff_api::protobuf::accepts(accept),
    };
    let protobuf = req.protobuf;
    let timeout = q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT);
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let rv_num = if rv.is_empty() { 0 } else { rv.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))? };
    if rv_num > 0 {
        state.cache.wait_for(rv_num).await.map_err(cache_error)?;
    }
    // Initial state for RV unset or 0, or when asked for; else resume.
    let from = match send_initial {
        Some(true) => None,
        Some(false) => Some(if rv_num > 0 { rv_num } else { state.cache.revision() }),
        None if rv_num == 0 => None,
        None => Some(rv_num),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let sub = match state.cache.subscribe(&req.rt, &prefix, from) {
        Ok(s) => s,
        Err(CacheError::TooOld { requested, floor }) => {
            // As Kubernetes does: 200, then one ERROR event carrying a 410.
            let status = ApiError::expired(format!("too old resource version: {requested} ({floor})")).to_status();
            let line = if protobuf { skiff_api::protobuf::encode_watch_event("ERROR", &status).map(Bytes::from) } else { None };
            let _ = tx.try_send(line.unwrap_or_else(|| event_line("ERROR", &status)));
            return stream_response(rx, protobuf);
        }
        Err(e) => return Err(cache_error(e)),
    };
    let mut seen = state.cache.seen();
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut last = sub.rev;
        for obj in sub.initial.iter().filter(|o| o.matches(&req.labels, &req.fields)) {
            if tx.send(req.line("ADDED", obj).await).await.is_err() {
                return;
            }
        }
        if send_initial == Some(true) && req.bookmarks && tx.send(req.bookmark(sub.rev, true)).await.is_err() {
            return;
        }
        for ev in &sub.replay {
            last = ev.rev;
            if let Some((ty, obj)) = req.view(ev) {
                if tx.send(req.line(ty, obj).await).await.is_err() {
                    return;
                }
            }
        }
        let mut live = sub.live;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        loop {
            tokio::select! {
                msg = live.recv() => match msg {
                    Ok(Message::Event(ev)) => {
                        last = ev.rev;
                        if let Some((ty, obj)) = req.view(&ev) {
                            if tx.send(req.line(ty, obj).await).await.is_err() {
                                return;
                            }
                        }
                    }
                    // Fell behind, or the cache was rebuilt: end the watch;
                    // the client resumes from its last revision.
                    Ok(Message::Reset) | Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if req.bookmarks => {
                    if !send_bookmark(&req, &tx, &mut live, &mut seen, &mut last).await {
                        return;
                    }
                }
                _ = &mut deadline => {
                    if req.bookmarks {
                        send_bookmark(&req, &tx, &mut live, &mut seen, &mut last).await;
                    }
                    return;
                }
                _ = tx.closed() => return,
                _ = shutdown.changed() => return,
            }
        }
    });
    stream_response(rx, protobuf)
}

/// Sends a bookmark at the latest applied revision, after first delivering
/// every queued event at or below it. False when the stream must end.
async fn send_bookmark(
    req: &Request,
    tx: &mpsc::Sender<Bytes>,
    live: &mut broadcast::Receiver<Message>,
    seen: &mut tokio::sync::watch::Receiver<i64>,
    last: &mut i64,
) -> bool {
    let rev = *seen.borrow_and_update();
    loop {
        match live.try_recv() {
            Ok(Message::Event(ev)) => {
                *last = ev.rev;
                if let Some((ty, obj)) = req.view(&ev) {
                    if tx.send(req.line(ty, obj).await).await.is_err() {
                        return false;
                    }
                }
            }
            Err(broadcast::error::TryRecvError::Empty) => break,
            _ => return false,
        }
    }
    let at = rev.max(*last);
    *last = at;
    tx.send(req.bookmark(at, false)).await.is_ok()
}

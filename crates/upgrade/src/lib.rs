//! Upgrade-aware HTTP proxying, as kube-apiserver's `UpgradeAwareHandler`
//! and the kubelet's streaming proxy do: the client's request (with its
//! `Upgrade: SPDY/3.1` or `websocket` headers and sub-protocol offers) is
//! replayed to the next hop; when that hop answers 101 Switching Protocols,
//! the answer goes back to the client and bytes are copied both ways until
//! either side closes. The stream protocols themselves (remotecommand v1–v5,
//! portforward) are spoken end to end by kubectl and the runtime's
//! streaming server; the hops in between never parse them.
//!
//! [`tunnel_spdy`] is the one translation, kube-apiserver's tunneling
//! handler: kubectl ≥ 1.31 carries port-forward's SPDY inside WebSocket
//! binary messages (`SPDY/3.1+portforward.k8s.io`), which the runtime's
//! streaming server does not speak; the API server opens plain SPDY to the
//! next hop and moves the SPDY bytes between the two.

#![deny(missing_docs)]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// The response body type the proxy returns.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Headers that belong to one hop (or carry the client's credentials) and
/// are not passed on.
const HOP_HEADERS: &[&str] = &["host", "authorization", "content-length", "transfer-encoding", "keep-alive", "proxy-connection"];

/// Whether the request asks for a protocol upgrade.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().get(hyper::header::UPGRADE).is_some()
}

/// Whether the request upgrades to WebSocket (rather than SPDY).
pub fn is_websocket<B>(req: &Request<B>) -> bool {
    req.headers().get(hyper::header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The WebSocket sub-protocols the client offers (`Sec-WebSocket-Protocol`), in its order.
pub fn websocket_protocols<B>(req: &Request<B>) -> Vec<String> {
    req.headers()
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Replays `req` to `path` over `backend` (an established connection to the
/// next hop, `host` naming it) and, on 101, splices the two upgraded
/// connections. Any other answer is relayed as it is.
pub async fn proxy<B, IO>(mut req: Request<B>, backend: IO, host: &str, path: &str) -> Result<Response<Body>, String>
where
    B: Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut out = Request::builder().method(req.method().clone()).uri(path).header(hyper::header::HOST, host);
    for (k, v) in req.headers() {
        if !HOP_HEADERS.contains(&k.as_str()) {
            out = out.header(k, v);
        }
    }
    let out = out.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let mut resp = match send_upgrade(backend, out).await? {
        Ok(resp) => resp,
        Err(refused) => return Ok(refused),
    };
    let back = relayed_head(&resp);
    let upstream = hyper::upgrade::on(&mut resp);
    let downstream = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let (Ok(down), Ok(up)) = tokio::join!(downstream, upstream) else {
            tracing::debug!("an upgraded stream did not open");
            return;
        };
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
    });
    back.body(Empty::new().boxed_unsync()).map_err(|e| e.to_string())
}

/// The backend's status and end-to-end headers, for the client.
fn relayed_head<B>(resp: &Response<B>) -> hyper::http::response::Builder {
    let mut back = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if !HOP_HEADERS.contains(&k.as_str()) {
            back = back.header(k, v);
        }
    }
    back
}

/// Sends an upgrade request over a fresh HTTP/1.1 connection on `backend`:
/// `Ok(response)` when the backend switched protocols, `Err(answer)` with
/// its refusal (end-to-end headers, body read whole) to relay otherwise.
async fn send_upgrade<IO>(backend: IO, out: Request<Empty<Bytes>>) -> Result<Result<Response<hyper::body::Incoming>, Response<Body>>, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(backend)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let resp = send.send_request(out).await.map_err(|e| e.to_string())?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Ok(resp));
    }
    let back = relayed_head(&resp);
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    back.body(Full::new(body).boxed_unsync()).map(Err).map_err(|e| e.to_string())
}

/// The WebSocket sub-protocol kubectl ≥ 1.31 offers for port-forward: SPDY/3.1 carried in binary messages.
pub const SPDY_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Serves a WebSocket request offering [`SPDY_TUNNEL_PROTOCOL`]: opens a
/// plain SPDY port-forward upgrade to `path` over `backend` and, once that
/// hop answers 101, accepts the WebSocket and relays SPDY bytes between the
/// client's binary messages and the backend's stream. Any other answer from
/// the backend is relayed as it is.
pub async fn tunnel_spdy<B, IO>(mut req: Request<B>, backend: IO, host: &str, path: &str) -> Result<Response<Body>, String>
where
    B: Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role, Message};

    let key = req.headers().get(hyper::header::SEC_WEBSOCKET_KEY).cloned().ok_or("a WebSocket request without Sec-WebSocket-Key")?;
    let out = Request::post(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", "portforward.k8s.io")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let mut resp = match send_upgrade(backend, out).await? {
        Ok(resp) => resp,
        Err(refused) => return Ok(refused),
    };
    let upstream = hyper::upgrade::on(&mut resp);
    let downstream = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let (Ok(down), Ok(up)) = tokio::join!(downstream, upstream) else {
            tracing::debug!("a tunneled port-forward did not open");
            return;
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(down), Role::Server, None).await;
        let (mut ws_tx, mut ws_rx) = ws.split();
        let (mut up_rx, mut up_tx) = tokio::io::split(TokioIo::new(up));
        let client_to_backend = async {
            while let Some(Ok(msg)) = ws_rx.next().await {
                match msg {
                    Message::Binary(data) if up_tx.write_all(&data).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = up_tx.shutdown().await;
        };
        let backend_to_client = async {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match up_rx.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if ws_tx.send(Message::binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = ws_tx.close().await;
        };
        tokio::join!(client_to_backend, backend_to_client);
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()))
        .header(hyper::header::SEC_WEBSOCKET_PROTOCOL, SPDY_TUNNEL_PROTOCOL)
        .body(Empty::new().boxed_unsync())
        .map_err(|e| e.to_string())
}

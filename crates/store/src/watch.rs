//! The watch machinery both backends share: replay history from the backend,
//! then follow live commits, falling back to history whenever the live feed
//! lags so that no event is ever skipped.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};

use crate::{Event, Result, Revision, StoreError, WatchStream};

/// How many history events one backend read returns at most.
pub(crate) const HISTORY_BATCH: usize = 1000;

/// Reads committed events under a prefix with revision `>= from`, in revision
/// order, at most [`HISTORY_BATCH`]; returns them with the store revision the
/// read observed.
pub(crate) type HistoryReader = Arc<dyn Fn(String, Revision) -> BoxFuture<'static, Result<(Vec<Event>, Revision)>> + Send + Sync>;

/// Starts a watch task and returns its stream. The task ends when the stream
/// is dropped, when the store closes, or after sending an error.
pub(crate) fn spawn_watch(prefix: String, from: Revision, mut live: broadcast::Receiver<Arc<Vec<Event>>>, history: HistoryReader) -> WatchStream {
    let (tx, rx) = mpsc::channel::<Result<Event>>(256);
    tokio::spawn(async move {
        let mut next = from;
        'outer: loop {
            // Catch up from history until a read returns less than a batch.
            loop {
                let read = tokio::select! {
                    r = history(prefix.clone(), next) => r,
                    _ = tx.closed() => return,
                };
                match read {
                    Ok((events, observed)) => {
                        let full = events.len() >= HISTORY_BATCH;
                        for ev in events {
                            next = ev.kv.mod_revision + 1;
                            if tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                        }
                        if !full {
                            next = next.max(observed + 1);
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            // Follow live commits.
            loop {
                let batch = tokio::select! {
                    b = live.recv() => b,
                    _ = tx.closed() => return,
                };
                match batch {
                    Ok(events) => {
                        for ev in events.iter() {
                            if ev.kv.mod_revision < next {
                                continue;
                            }
                            next = ev.kv.mod_revision + 1;
                            if ev.kv.key.starts_with(&prefix) && tx.send(Ok(ev.clone())).await.is_err() {
                                return;
                            }
                        }
                    }
                    // We fell behind the live feed: the backend has every
                    // committed event, so re-read from where we are.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue 'outer,
                    Err(broadcast::error::RecvError::Closed) => {
                        let _ = tx.send(Err(StoreError::Closed)).await;
                        return;
                    }
                }
            }
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from(rx: mpsc::Receiver<Result<Event>>) -> WatchStream {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) }).boxed()
}

//! The unidirectional SSE transport (`/connection/uni_sse`), as Centrifugo defines it: the
//! connect request comes in the `cf_connect` query parameter (JSON) or as a POST body; the
//! response is an event stream whose first event is `{"connect":{...}}`, then pushes
//! (`{"channel":...,"pub":{...}}`), `{}` pings, and a final `{"disconnect":{...}}` when the
//! server ends the connection. Each event is one `data:` line of JSON.
//!
//! A browser `EventSource` reconnects by itself whenever the stream ends; a refused
//! connect (bad token, no permission) is an HTTP error, which stops it.
//!
//! # Resuming on channels with history
//! When the connection has server-side subscriptions to channels with history, every event
//! carries an `id:` with the client's position in each of them, as a JSON object
//! `{"<channel>":[<offset>,"<epoch>"],...}`: the connect event the positions the
//! subscriptions start from, each publication event the positions including it. The
//! browser sends the last id it received back in `Last-Event-ID` when it reconnects; the
//! gateway then recovers each channel from there ([`Session::resume`]) and sends the
//! missed publications as ordinary publication events before the live ones, so a plain
//! `EventSource` loses and repeats nothing while history covers the gap. When it does not
//! (too old, or the epoch changed), the connect event's `subs` entry says `recovered`
//! absent (false) and the stream goes on from the current position.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::gateway::Inner;
use crate::node::Client;
use crate::protocol::{self, ClientError, ConnectRequest, Disconnect, StreamPosition};
use crate::queue::Next;
use crate::session::{ConnectFail, Session};

/// Most bytes of queued events written in one chunk.
const MAX_BATCH_BYTES: usize = 16 * 1024;

/// Closes the client's queue when the response body is dropped (the browser went away).
struct CloseOnDrop(Arc<Client>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.queue.close(Disconnect::CONNECTION_CLOSED);
    }
}

fn error_response(status: StatusCode, error: &ClientError) -> Response {
    let body = serde_json::json!({"error": {"code": error.code, "message": error.message}});
    (status, axum::Json(body)).into_response()
}

fn event(data: &str, out: &mut String) {
    out.push_str("data: ");
    out.push_str(data);
    out.push_str("\n\n");
}

/// Positions by channel, as event ids carry them.
type Positions = BTreeMap<String, (u64, String)>;

fn event_id(positions: &Positions) -> String {
    serde_json::to_string(positions).unwrap_or_default()
}

/// The positions a `Last-Event-ID` names (nothing for an id that is not ours).
pub(crate) fn parse_event_id(id: &str) -> BTreeMap<String, StreamPosition> {
    serde_json::from_str::<Positions>(id)
        .map(|m| {
            m.into_iter()
                .map(|(channel, (offset, epoch))| (channel, StreamPosition { offset, epoch }))
                .collect()
        })
        .unwrap_or_default()
}

/// Moves `positions` past a publication event, when `item` is one on a tracked channel
/// with an offset; true when it moved.
fn advance(positions: &mut Positions, item: &str) -> bool {
    if !item.starts_with("{\"channel\":") {
        return false;
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(item) else {
        return false;
    };
    let (Some(channel), Some(offset)) =
        (value["channel"].as_str(), value["pub"]["offset"].as_u64())
    else {
        return false;
    };
    match positions.get_mut(channel) {
        Some(p) => {
            p.0 = offset;
            true
        }
        None => false,
    }
}

fn stream_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .expect("static headers are valid")
}

/// Serves one SSE connection; `last_event_id` is the browser's `Last-Event-ID`.
pub(crate) async fn handle(
    gw: Arc<Inner>,
    request: ConnectRequest,
    last_event_id: Option<&str>,
) -> Response {
    let mut session = match Session::open(&gw, true) {
        Ok(s) => s,
        Err(reason) if reason == Disconnect::SHUTDOWN => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &ClientError::INTERNAL.with_message("shutting down"),
            );
        }
        Err(_) => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &ClientError::LIMIT_EXCEEDED.with_message("connection limit"),
            );
        }
    };
    if let Some(id) = last_event_id {
        session.resume = parse_event_id(id);
    }
    let positions: Positions;
    match session.connect(request).await {
        Ok(result) => {
            positions = session
                .positions
                .iter()
                .map(|(c, p)| (c.clone(), (p.offset, p.epoch.clone())))
                .collect();
            let first = protocol::connect_push(&result);
            session.client.queue.release(Some(Arc::from(first)), false);
        }
        Err(fail) => {
            session.finish(Disconnect::CONNECTION_CLOSED).await;
            return match fail {
                ConnectFail::Error(e) if e.temporary => {
                    // Worth retrying: a stream that ends at once, with the advice, makes
                    // an EventSource come back after its retry delay.
                    let mut out = String::new();
                    event(
                        &protocol::disconnect_push(&Disconnect::SERVER_ERROR),
                        &mut out,
                    );
                    stream_response(Body::from(out))
                }
                ConnectFail::Error(e) => {
                    let status = match e.code {
                        101 | 109 => StatusCode::UNAUTHORIZED,
                        103 => StatusCode::FORBIDDEN,
                        _ => StatusCode::BAD_REQUEST,
                    };
                    error_response(status, &e)
                }
                ConnectFail::Disconnect(_) => error_response(
                    StatusCode::UNAUTHORIZED,
                    &ClientError::UNAUTHORIZED.with_message("invalid token"),
                ),
            };
        }
    }
    let client = Arc::clone(&session.client);
    // The handling of a wake and the finish are boxed, as in the WebSocket transport: held
    // inline, their futures would make every connection's task as large as they are.
    tokio::spawn(async move {
        loop {
            let wake = session.wake().await;
            if let Err(reason) = Box::pin(session.on_wake(wake)).await {
                Box::pin(session.finish(reason)).await;
                return;
            }
        }
    });
    let guard = CloseOnDrop(Arc::clone(&client));
    // The first item is the connect push: it carries the starting positions.
    let state = (guard, positions, true);
    let stream = futures_util::stream::unfold(Some(state), |state| async move {
        let (guard, mut positions, mut first) = state?;
        let mut out = String::new();
        match guard.0.queue.next(MAX_BATCH_BYTES).await {
            Next::Items(items) => {
                for item in &items {
                    if !positions.is_empty()
                        && (std::mem::take(&mut first) || advance(&mut positions, item))
                    {
                        out.push_str("id: ");
                        out.push_str(&event_id(&positions));
                        out.push('\n');
                    }
                    event(item, &mut out);
                }
                Some((
                    Ok::<_, Infallible>(Bytes::from(out)),
                    Some((guard, positions, first)),
                ))
            }
            Next::Close(reason) if reason != Disconnect::CONNECTION_CLOSED => {
                event(&protocol::disconnect_push(&reason), &mut out);
                Some((Ok(Bytes::from(out)), None))
            }
            Next::Close(_) => None,
        }
    });
    stream_response(Body::from_stream(stream))
}

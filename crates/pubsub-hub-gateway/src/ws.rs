//! The WebSocket transport. One task per connection does both directions: it reads frames
//! and runs the session, and, interleaved with that in the same task, drains the write
//! queue into text messages (queued replies and pushes joined by `\n`), ending with a close
//! frame carrying the disconnect code and reason. A command that waits (a subscribe waits
//! for Redis) never holds up the pushes of other channels: both halves are polled together.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};

use crate::gateway::Inner;
use crate::metrics::GatewayMetrics;
use crate::node::Client;
use crate::protocol::Disconnect;
use crate::queue::Next;
use crate::session::Session;

/// Most bytes of queued messages joined into one WebSocket message. Batching saves a
/// frame and a write per message under load; the bound keeps what the WebSocket layer's
/// output buffer retains per connection small (it keeps the capacity of its largest
/// frame).
pub(crate) const MAX_BATCH_BYTES: usize = 16 * 1024;

/// How long the writer may take to send what is queued and the close frame once the
/// connection ends; then the socket is dropped.
const WRITER_GRACE: Duration = Duration::from_secs(2);

/// Serves one upgraded connection until it ends.
pub(crate) async fn handle(gw: Arc<Inner>, socket: WebSocket) {
    let mut session = match Session::open(&gw, false) {
        Ok(s) => s,
        Err(reason) => {
            let mut socket = socket;
            let _ = socket.send(close_message(&reason)).await;
            return;
        }
    };
    let (sink, stream) = socket.split();
    let client = Arc::clone(&session.client);
    let writer = write_loop(&client, sink);
    tokio::pin!(writer);
    let mut written = false;
    let reason = {
        let reader = read_loop(&gw, &mut session, stream);
        tokio::pin!(reader);
        loop {
            tokio::select! {
                reason = &mut reader => break reason,
                () = &mut writer, if !written => written = true,
            }
        }
    };
    tracing::debug!(client = %client.client_id, code = reason.code, reason = %reason.reason, "connection ends");
    // Boxed, as the commands are: leaving the channels (presence, join and leave pushes,
    // unsubscribing through the hub) is a large future, and held inline it would sit in
    // every connection's task for its whole life.
    let finish = Box::pin(session.finish(reason));
    if written {
        finish.await;
    } else {
        // `finish` closes the queue before it leaves the channels (which may wait for
        // Redis): the writer sends what is queued and the close frame meanwhile.
        let _ = tokio::join!(finish, tokio::time::timeout(WRITER_GRACE, &mut writer));
    }
}

/// Reads frames and runs the session until the connection ends; returns why.
async fn read_loop(
    gw: &Inner,
    session: &mut Session,
    mut stream: SplitStream<WebSocket>,
) -> Disconnect {
    let max = gw.config.limits.max_message_bytes;
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if text.len() > max {
                        GatewayMetrics::inc(&gw.metrics.bad_frames_total);
                        return Disconnect::MESSAGE_TOO_LARGE;
                    }
                    // Boxed: a command's future (a subscribe waits for Redis through the
                    // hub) is larger than everything else the connection holds, and is
                    // needed only while a command runs.
                    if let Err(reason) = Box::pin(session.on_frame(text.as_str())).await {
                        return reason;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    // This server speaks the JSON encoding only.
                    GatewayMetrics::inc(&gw.metrics.bad_frames_total);
                    return Disconnect::BAD_REQUEST;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Disconnect::CONNECTION_CLOSED,
                Some(Err(e)) => {
                    // Frames over the WebSocket layer's own size bound, invalid UTF-8 in a
                    // text frame, protocol violations, resets.
                    GatewayMetrics::inc(&gw.metrics.bad_frames_total);
                    tracing::debug!(client = %session.client.client_id, error = %e, "WebSocket read failed");
                    return Disconnect::CONNECTION_CLOSED;
                }
            },
            wake = session.wake() => {
                if let Err(reason) = Box::pin(session.on_wake(wake)).await {
                    return reason;
                }
            }
        }
    }
}

fn close_message(reason: &Disconnect) -> Message {
    Message::Close(Some(CloseFrame {
        code: reason.code,
        reason: reason.reason.to_string().into(),
    }))
}

/// Drains the client's write queue into the socket until the queue is closed and drained
/// (then sends the close frame) or a write fails (then closes the queue).
async fn write_loop(client: &Client, mut sink: SplitSink<WebSocket, Message>) {
    loop {
        match client.queue.next(MAX_BATCH_BYTES).await {
            Next::Items(items) => {
                if sink.send(Message::Text(join(&items).into())).await.is_err() {
                    client.queue.close(Disconnect::WRITE_ERROR);
                    return;
                }
            }
            Next::Close(reason) => {
                if reason != Disconnect::CONNECTION_CLOSED {
                    let _ = sink.send(close_message(&reason)).await;
                }
                let _ = sink.close().await;
                return;
            }
        }
    }
}

/// One message's text: the items joined by `\n`. A fresh string each time, moved into the
/// message, so the connection keeps no batch buffer between bursts.
fn join(items: &[Arc<str>]) -> String {
    let len = items.iter().map(|i| i.len() + 1).sum::<usize>();
    let mut text = String::with_capacity(len);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(item);
    }
    text
}

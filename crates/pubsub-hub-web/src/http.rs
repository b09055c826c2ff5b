//! The HTTP/1.1 server under the router: the accept loop, the connection cap, the request
//! head and body timeouts, and the graceful shutdown.
//!
//! `axum::serve` has none of these bounds: a client that sends half a request line, or a
//! `Content-Length: 100` with 9 bytes of body, holds its connection (and its task) forever,
//! and any number of them may be open. Here, with the values of [`Limits`]:
//! - hyper's HTTP/1 connection, given a timer, closes a connection whose request head has
//!   not arrived within `header_read_timeout`; the same bound applies while an idle
//!   keep-alive connection waits for its next request;
//! - the form extractor reads a request body within `body_read_timeout` as a whole (a body
//!   dripped a byte at a time gets no longer than one that stopped), else answers 408, and
//!   hyper closes the connection (the rest of that body can never be read);
//! - at most `max_connections` connections are served at once; one more is answered with a
//!   503 JSON error and closed, so a client sees why instead of hanging in the backlog (at
//!   most [`MAX_REFUSALS`] such answers at a time; beyond that a connection is just closed);
//! - after the shutdown grace period, connections still open are aborted, so no task or
//!   socket outlives [`crate::serve`].
//!
//! The router ([`crate::router`]) is the same with or without this layer, so the `oneshot`
//! tests exercise every route; the timeouts and the cap are tested on real sockets.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::app::{AppState, router};
use crate::limits::Limits;

/// After the shutdown signal, how long open requests get to finish before the server stops
/// anyway (streams end at once; this only bounds a request stuck on a stalled Redis).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How long the refusal of a connection over the cap may take (writing the 503 and
/// reading what the client sent, so that closing does not reset the connection before the
/// client has read the answer).
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// Most connections over the cap being answered at once; beyond that they are closed
/// without an answer, so a flood cannot pile up tasks and file descriptors.
pub const MAX_REFUSALS: usize = 64;

/// Pause after a failed `accept` (out of file descriptors, say) before the next one, so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves the dashboard of `state` on `listener` until `shutdown` resolves, then cancels
/// `state.shutdown` (which ends every `/events` stream), stops accepting, closes idle
/// connections and waits up to [`SHUTDOWN_GRACE`] for requests in flight.
pub(crate) async fn serve_bounded(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = state.shutdown.clone();
    let limits: Arc<Limits> = Arc::clone(&state.limits);
    let service = TowerToHyperService::new(router(state));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let graceful = GracefulShutdown::new();
    // Every connection's task, so the ones left after the grace period can be aborted.
    let mut connections = JoinSet::new();

    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "refusing a connection over max_connections");
            if let Ok(refusal) = Arc::clone(&refusals).try_acquire_owned() {
                let limit = limits.max_connections;
                connections.spawn(async move {
                    refuse(stream, limit).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let connection = http.serve_connection(TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down");
    token.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still open after the grace period; stopping anyway");
    }
    connections.shutdown().await;
    Ok(())
}

/// Answers a connection over the cap with a 503 JSON error and closes it.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let body = serde_json::json!({
        "error": format!(
            "too many open connections: the limit max_connections is {limit}; try again shortly"
        )
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\
         cache-control: no-store\r\nx-content-type-options: nosniff\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes: closing with unread bytes would send a
        // reset, which can discard the answer before the client reads it.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_TIME, exchange).await;
}

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
//! - a response that cannot be written for `write_timeout` (the client stopped reading and
//!   the socket buffers are full) fails with a time-out, and hyper closes the connection, so
//!   clients that never read cannot keep connections (and `max_connections` places) forever;
//!   see [`WriteDeadline`];
//! - every request carries its connection's peer address ([`axum::extract::ConnectInfo`]),
//!   for the wrong-token limit of [`crate::access`];
//! - at most `max_connections` connections are served at once; one more is answered with a
//!   503 JSON error and closed, so a client sees why instead of hanging in the backlog (at
//!   most [`MAX_REFUSALS`] such answers at a time; beyond that a connection is just closed);
//! - after the shutdown grace period, connections still open are aborted, so no task or
//!   socket outlives [`crate::serve`]; changes a handler handed to a task of their own
//!   (see [`crate::routes`]) get the same grace period to finish.
//!
//! The router ([`crate::router`]) is the same with or without this layer, so the `oneshot`
//! tests exercise every route; the timeouts and the cap are tested on real sockets.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ConnectInfo;
use tower::Layer;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

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
    let detached = Arc::clone(&state.detached);
    let metrics = Arc::clone(&state.metrics);
    let app = router(state);
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
        let service = TowerToHyperService::new(
            axum::Extension(ConnectInfo::<SocketAddr>(peer)).layer(app.clone()),
        );
        let stream = WriteDeadline::new(stream, limits.write_timeout);
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        let metrics = Arc::clone(&metrics);
        connections.spawn(async move {
            if let Err(e) = connection.await {
                if is_write_timeout(&e) {
                    metrics.count_write_timeout();
                    tracing::info!(%peer, "closed a connection whose client stopped reading (write_timeout)");
                } else {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
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
    if tokio::time::timeout(SHUTDOWN_GRACE, detached.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "changes still running after the grace period");
    }
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

/// The message of the error a blocked write fails with after `write_timeout`.
const WRITE_TIMEOUT_MESSAGE: &str =
    "the client stopped reading: no write progress within write_timeout";

/// True when a connection ended because a write made no progress for `write_timeout`.
fn is_write_timeout(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return io.kind() == io::ErrorKind::TimedOut && io.to_string() == WRITE_TIMEOUT_MESSAGE;
        }
        source = err.source();
    }
    false
}

/// A socket whose writes fail with [`io::ErrorKind::TimedOut`] once one has been blocked
/// for `timeout` without any byte going out.
///
/// The clock starts when a write finds the socket full (`Pending`) and stops at the next
/// write that makes progress, so it measures only the time a client leaves us unable to
/// write: an idle `/events` stream, or a client that reads slowly but reads, is never cut.
/// hyper treats the error like any failed write and closes the connection; its task then
/// ends and gives its `max_connections` place back.
pub struct WriteDeadline {
    stream: TcpStream,
    timeout: Duration,
    /// Armed while a write is blocked; one timer per connection, reset for each stall.
    stall: Pin<Box<Sleep>>,
    armed: bool,
}

impl WriteDeadline {
    /// Wraps `stream` with `timeout`.
    pub fn new(stream: TcpStream, timeout: Duration) -> Self {
        WriteDeadline {
            stream,
            timeout,
            stall: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
    }

    /// After a write made no progress: starts the clock if it is not running, and fails
    /// once it has run out. Registers the task's waker with the timer, so the error comes
    /// even if the socket never becomes writable again.
    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.armed {
            self.stall.as_mut().reset(Instant::now() + self.timeout);
            self.armed = true;
        }
        ready!(self.stall.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            WRITE_TIMEOUT_MESSAGE,
        ))
    }

    fn progressed<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.blocked(cx).map(Err),
            done => {
                self.armed = false;
                done
            }
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.progressed(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.progressed(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_flush(cx);
        this.progressed(result, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

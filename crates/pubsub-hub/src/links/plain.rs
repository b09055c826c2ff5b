//! Plain links: exact channels and patterns over one Redis connection.
//!
//! The connection is RESP3 when the server speaks it (Redis 6 and later): a
//! [`MultiplexedConnection`] whose push sender delivers each `message` and `pmessage` itself,
//! on redis-rs's reader task, through the routes it shares with the link task
//! ([`super::deliver_push`]). A message then goes from the socket to the consumers' queues
//! with no task hop in between and with its payload buffer moved, not copied; the link task
//! only handles commands, keep-alive pings and the connection's end. A server that refuses
//! RESP3 (no `HELLO`, or an ACL that forbids it) gets redis-rs's RESP2 pub/sub connection
//! instead, which the task reads itself (commands come first in its loop, and
//! [`super::DISPATCH_BATCH`] bounds a run of messages). When the connection is lost, every routed subscription gets one
//! [`Event::Disconnected`](crate::Event::Disconnected), the task reconnects with backoff
//! (on a cluster, to any reachable node) and subscribes every routed target again, then
//! tells them [`Event::Reconnected`](crate::Event::Reconnected). While disconnected it
//! refuses attaches (there is nowhere to subscribe) and still answers detaches.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use tracing::Instrument;

use futures_util::{FutureExt, StreamExt};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, PushInfo, PushKind};
use tokio::sync::mpsc;

use super::{
    Command, DISPATCH_BATCH, Ending, Gaps, Link, LinkEnv, Routes, backoff_delay, channel_name,
    deliver_push, keepalive_timer,
};
use crate::config::HubConfig;
use crate::error::{HubError, bounded, connection_broken};
use crate::locks::{read, write};
use crate::message::{Payload, now_ms};
use crate::subscription::{SubscriptionStatus, TargetKind};
use crate::topology::Topology;

/// Most targets sent in one SUBSCRIBE / PSUBSCRIBE when (re)subscribing a large set, so one
/// command stays a modest frame for Redis and for the time-out.
const SUBSCRIBE_CHUNK: usize = 512;

/// The kinds a plain link serves.
const KINDS: [TargetKind; 2] = [TargetKind::Channel, TargetKind::Pattern];

/// Whether [`PlainTask::command`] subscribes or unsubscribes.
#[derive(Clone, Copy)]
enum Action {
    Subscribe,
    Unsubscribe,
}
use Action::{Subscribe, Unsubscribe};

/// Starts a plain link task; it connects at once.
pub(super) fn spawn(env: LinkEnv, dedicated: bool) -> Arc<Link> {
    let (link, rx) = Link::handle(
        env.counters,
        SubscriptionStatus::Reconnecting {
            since_ms: now_ms(),
            attempts: 0,
            last_error: "not connected yet".into(),
        },
        false,
    );
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let task = PlainTask {
        link: Arc::clone(&link),
        topology: env.topology,
        config: env.config,
        commands: rx,
        routes: Arc::default(),
        gaps: Gaps::default(),
        ending: Ending::new(dedicated),
        last_error: String::new(),
        resp2: false,
        ended_tx,
        ended,
        next_generation: 1,
    };
    tokio::spawn(task.run());
    link
}

/// What the connected loop or a command decided.
enum Flow {
    Continue,
    /// The connection is unusable; reconnect.
    Lost(String),
    Exit,
}

/// The subscriber connection of a plain link.
enum Connection {
    /// RESP3: messages are delivered by the connection's push sender; its generation tags
    /// the end-of-connection notice it sends the task.
    Push {
        conn: MultiplexedConnection,
        generation: u64,
    },
    /// RESP2 (a server without RESP3): the task reads the messages from the stream.
    Stream {
        sink: PubSubSink,
        stream: PubSubStream,
    },
}

impl Connection {
    /// The next message of a RESP2 stream (`None`: the connection closed); never resolves
    /// for a RESP3 connection, whose messages do not pass through the task.
    async fn next_message(&mut self) -> Option<redis::Msg> {
        match self {
            Connection::Stream { stream, .. } => stream.next().await,
            Connection::Push { .. } => std::future::pending().await,
        }
    }
}

type PingFuture = Pin<Box<dyn Future<Output = Result<(), HubError>> + Send>>;

struct PlainTask {
    link: Arc<Link>,
    topology: Arc<Topology>,
    config: Arc<HubConfig>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Every routed target is subscribed on Redis while connected (Redis confirmed it
    /// before the route was added). Shared with the RESP3 connection's push sender, which
    /// reads it for every message; only this task writes it.
    routes: Arc<RwLock<Routes>>,
    gaps: Gaps,
    ending: Ending,
    last_error: String,
    /// Set once the server refused RESP3 and accepted RESP2: later connections are RESP2.
    resp2: bool,
    /// The push senders' notices that their connection ended, by generation.
    ended_tx: mpsc::UnboundedSender<u64>,
    ended: mpsc::UnboundedReceiver<u64>,
    next_generation: u64,
}

impl PlainTask {
    async fn run(mut self) {
        let mut connection = match self.connect().await {
            Ok(c) => {
                self.link.set_open_connections(1);
                self.link.set_status(SubscriptionStatus::Live);
                Some(c)
            }
            Err(e) => {
                self.last_error = e.to_string();
                self.set_reconnecting(now_ms(), 0);
                None
            }
        };
        let mut attempts: u32 = 0;
        let mut since_ms = now_ms();
        loop {
            match connection.take() {
                Some(conn) => match self.serve(conn).await {
                    Flow::Exit => break,
                    Flow::Continue => unreachable!("serve only returns Lost or Exit"),
                    Flow::Lost(error) => {
                        tracing::warn!(link = self.link.id, %error, "subscriber connection lost; reconnecting");
                        self.last_error = error.clone();
                        attempts = 0;
                        since_ms = now_ms();
                        self.link.set_open_connections(0);
                        self.set_reconnecting(since_ms, 0);
                        self.link.set_redis_targets(0);
                        let subs = read(&self.routes).subscriptions();
                        let down = self.gaps.open(&subs);
                        Gaps::tell_disconnected(down, &error, since_ms);
                    }
                },
                None => {
                    if let Flow::Exit = self.wait_backoff(attempts).await {
                        break;
                    }
                    let span = tracing::info_span!(
                        "reconnect",
                        link = self.link.id,
                        kind = "plain",
                        attempt = attempts + 1
                    );
                    match self.connect().instrument(span.clone()).await {
                        Ok(conn) => {
                            let _in_span = span.enter();
                            tracing::info!(
                                link = self.link.id,
                                attempts,
                                "subscriber connection re-established"
                            );
                            self.link.set_open_connections(1);
                            self.link.set_status(SubscriptionStatus::Live);
                            Gaps::tell_reconnected(self.gaps.close_unless(|_| false));
                            connection = Some(conn);
                        }
                        Err(e) => {
                            attempts = attempts.saturating_add(1);
                            self.last_error = e.to_string();
                            tracing::debug!(link = self.link.id, attempts, error = %self.last_error, "reconnect attempt failed");
                            self.set_reconnecting(since_ms, attempts);
                        }
                    }
                }
            }
        }
        drop(connection);
        self.ending.finish(&self.link);
    }

    fn set_reconnecting(&self, since_ms: u64, attempts: u32) {
        self.link.set_status(SubscriptionStatus::Reconnecting {
            since_ms,
            attempts,
            last_error: self.last_error.clone(),
        });
    }

    /// Opens a connection (RESP3 unless the server refused it) and subscribes every routed
    /// target.
    async fn connect(&mut self) -> Result<Connection, HubError> {
        let mut conn = if self.resp2 {
            self.open_stream().await?
        } else {
            match self.open_push().await {
                Ok(conn) => conn,
                // A refusal, not an outage: the server does not speak RESP3 (or an ACL
                // forbids `HELLO`). RESP2 it is, for this link's lifetime once it works.
                Err(e) if !connection_broken(&e) => {
                    tracing::debug!(link = self.link.id, error = %e, "RESP3 refused; subscribing over RESP2");
                    let conn = self.open_stream().await?;
                    self.resp2 = true;
                    conn
                }
                Err(e) => return Err(e),
            }
        };
        for kind in KINDS {
            let targets: Vec<String> = read(&self.routes)
                .targets(kind)
                .map(str::to_owned)
                .collect();
            let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
            self.command(&mut conn, Subscribe, kind, &targets).await?;
        }
        self.link.set_redis_targets(read(&self.routes).len());
        Ok(conn)
    }

    /// A RESP3 connection whose push sender delivers messages through the shared routes.
    async fn open_push(&mut self) -> Result<Connection, HubError> {
        let generation = self.next_generation;
        self.next_generation += 1;
        let routes = Arc::clone(&self.routes);
        let ended = self.ended_tx.clone();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.command_timeout))
            .set_push_sender(move |info: PushInfo| {
                match info.kind {
                    PushKind::Message => deliver_push(&routes, TargetKind::Channel, info.data),
                    PushKind::PMessage => deliver_push(&routes, TargetKind::Pattern, info.data),
                    PushKind::Disconnection => {
                        let _ = ended.send(generation);
                    }
                    // Confirmations of our own commands (also returned as their replies).
                    _ => {}
                }
                Ok::<(), redis::aio::SendError>(())
            });
        let budget = self.config.connect_timeout + self.config.command_timeout;
        let conn = self
            .topology
            .open_subscriber(true, self.link.id, |client| {
                let config = &config;
                async move {
                    bounded(
                        "connect",
                        budget,
                        client.get_multiplexed_async_connection_with_config(config),
                    )
                    .await
                }
            })
            .await?;
        Ok(Connection::Push { conn, generation })
    }

    /// A RESP2 pub/sub connection, read by the task.
    async fn open_stream(&self) -> Result<Connection, HubError> {
        let timeout = self.config.connect_timeout;
        let pubsub = self
            .topology
            .open_subscriber(false, self.link.id, |client| async move {
                bounded("connect", timeout, client.get_async_pubsub()).await
            })
            .await?;
        let (sink, stream) = pubsub.split();
        Ok(Connection::Stream { sink, stream })
    }

    /// The connected loop: commands, messages (RESP2), the connection's end (RESP3) and
    /// keep-alive pings.
    async fn serve(&mut self, mut conn: Connection) -> Flow {
        let mut ping_timer = keepalive_timer(&self.config);
        let mut ping: Option<PingFuture> = None;
        let generation = match &conn {
            Connection::Push { generation, .. } => *generation,
            Connection::Stream { .. } => 0,
        };
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => {
                    let Some(command) = command else { return Flow::Exit };
                    match self.handle_connected(command, &mut conn).await {
                        Flow::Continue => {}
                        other => return other,
                    }
                }
                Some(ended) = self.ended.recv() => {
                    // Notices of earlier connections are stale.
                    if ended == generation {
                        return Flow::Lost("connection closed".into());
                    }
                }
                result = async { ping.as_mut().expect("guarded").await }, if ping.is_some() => {
                    ping = None;
                    if let Err(e) = result {
                        return Flow::Lost(format!("keep-alive PING failed: {e}"));
                    }
                }
                message = conn.next_message() => {
                    let Some(message) = message else {
                        return Flow::Lost("connection closed".into());
                    };
                    self.dispatch(message);
                    let Connection::Stream { stream, .. } = &mut conn else { continue };
                    for _ in 0..DISPATCH_BATCH {
                        match stream.next().now_or_never() {
                            Some(Some(message)) => self.dispatch(message),
                            Some(None) => return Flow::Lost("connection closed".into()),
                            None => break,
                        }
                    }
                }
                _ = ping_timer.tick(), if ping.is_none() => {
                    let timeout = self.config.command_timeout;
                    ping = Some(match &conn {
                        Connection::Stream { sink, .. } => {
                            let mut sink = sink.clone();
                            Box::pin(async move {
                                bounded("PING", timeout, sink.ping::<redis::Value>()).await.map(drop)
                            })
                        }
                        Connection::Push { conn, .. } => {
                            let mut conn = conn.clone();
                            Box::pin(async move {
                                bounded(
                                    "PING",
                                    timeout,
                                    redis::cmd("PING").query_async::<redis::Value>(&mut conn),
                                )
                                .await
                                .map(drop)
                            })
                        }
                    });
                }
            }
        }
    }

    /// Routes one RESP2 message to every local subscription of its channel or pattern (the
    /// payload is copied off the connection's buffer: redis-rs's RESP2 message keeps it).
    fn dispatch(&self, msg: redis::Msg) {
        let pattern: Option<String> = msg.get_pattern().ok().flatten();
        let Ok(channel) = msg.get_channel::<Vec<u8>>() else {
            return;
        };
        let kind = if pattern.is_some() {
            TargetKind::Pattern
        } else {
            TargetKind::Channel
        };
        read(&self.routes).deliver(kind, channel_name(channel), pattern, || {
            Payload::from_bytes(msg.get_payload_bytes().to_vec())
        });
    }

    async fn handle_connected(&mut self, command: Command, conn: &mut Connection) -> Flow {
        match command {
            Command::Attach {
                sub,
                targets,
                reply,
            } => {
                let kind = sub.kind();
                let new: Vec<&str> = {
                    let routes = read(&self.routes);
                    targets
                        .iter()
                        .map(String::as_str)
                        .filter(|t| !routes.contains(kind, t))
                        .collect()
                };
                let mut outcome = Ok(());
                let mut subscribed = 0;
                for chunk in new.chunks(SUBSCRIBE_CHUNK) {
                    outcome = self.command(conn, Subscribe, kind, chunk).await;
                    if outcome.is_err() {
                        break;
                    }
                    subscribed += chunk.len();
                }
                match outcome {
                    Ok(()) => {
                        let routed = {
                            let mut routes = write(&self.routes);
                            routes.add(&sub, targets);
                            routes.len()
                        };
                        self.link.set_redis_targets(routed);
                        let _ = reply.send(Ok(()));
                        Flow::Continue
                    }
                    Err(e) => {
                        let lost = connection_broken(&e);
                        let text = e.to_string();
                        let _ = reply.send(Err(e));
                        // A refused command (e.g. an ACL error) leaves the connection usable;
                        // a time-out or I/O error does not. On a usable connection, the
                        // chunks Redis took before the refusal are given back, so nothing
                        // stays subscribed without a route (a lost connection takes them
                        // with it, and only routes are resubscribed).
                        if lost {
                            return Flow::Lost(text);
                        }
                        match self
                            .command(conn, Unsubscribe, kind, &new[..subscribed])
                            .await
                        {
                            Ok(()) => Flow::Continue,
                            Err(e) => Flow::Lost(e.to_string()),
                        }
                    }
                }
            }
            Command::Detach { sub_id, reply } => {
                let released = self.detach(sub_id);
                let mut flow = Flow::Continue;
                for kind in KINDS {
                    let targets: Vec<&str> = released
                        .iter()
                        .filter(|(k, _)| *k == kind)
                        .map(|(_, t)| t.as_str())
                        .collect();
                    if let Err(e) = self.command(conn, Unsubscribe, kind, &targets).await {
                        flow = Flow::Lost(e.to_string());
                        break;
                    }
                }
                if self.ending.detached(reply, &read(&self.routes)) {
                    return Flow::Exit;
                }
                flow
            }
            Command::Shutdown { reply } => {
                self.ending.shutdown(reply);
                Flow::Exit
            }
        }
    }

    /// Drops `sub_id`'s routes; returns the targets no one wants any more.
    fn detach(&mut self, sub_id: u64) -> Vec<(TargetKind, String)> {
        let (released, routed) = {
            let mut routes = write(&self.routes);
            (routes.remove(sub_id), routes.len())
        };
        self.gaps.forget(sub_id);
        self.link.set_redis_targets(routed);
        released
    }

    /// While disconnected: sleep the backoff, still answering commands.
    async fn wait_backoff(&mut self, attempts: u32) -> Flow {
        let sleep = tokio::time::sleep(backoff_delay(&self.config, attempts));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return Flow::Continue,
                command = self.commands.recv() => {
                    let Some(command) = command else { return Flow::Exit };
                    match command {
                        Command::Attach { reply, .. } => {
                            let _ = reply.send(Err(HubError::Unavailable(self.last_error.clone())));
                        }
                        Command::Detach { sub_id, reply } => {
                            // Nothing to tell Redis: the targets are not subscribed anywhere.
                            self.detach(sub_id);
                            if self.ending.detached(reply, &read(&self.routes)) {
                                return Flow::Exit;
                            }
                        }
                        Command::Shutdown { reply } => {
                            self.ending.shutdown(reply);
                            return Flow::Exit;
                        }
                    }
                }
            }
        }
    }

    /// `(P)SUBSCRIBE` or `(P)UNSUBSCRIBE` of `targets`, in chunks of [`SUBSCRIBE_CHUNK`];
    /// stops at the first failure.
    async fn command(
        &self,
        conn: &mut Connection,
        action: Action,
        kind: TargetKind,
        targets: &[&str],
    ) -> Result<(), HubError> {
        let timeout = self.config.command_timeout;
        for chunk in targets.chunks(SUBSCRIBE_CHUNK) {
            match conn {
                Connection::Stream { sink, .. } => match (action, kind) {
                    (Subscribe, TargetKind::Channel) => {
                        bounded("SUBSCRIBE", timeout, sink.subscribe(chunk)).await?
                    }
                    (Subscribe, TargetKind::Pattern) => {
                        bounded("PSUBSCRIBE", timeout, sink.psubscribe(chunk)).await?
                    }
                    (Unsubscribe, TargetKind::Channel) => {
                        bounded("UNSUBSCRIBE", timeout, sink.unsubscribe(chunk)).await?
                    }
                    (Unsubscribe, TargetKind::Pattern) => {
                        bounded("PUNSUBSCRIBE", timeout, sink.punsubscribe(chunk)).await?
                    }
                    (_, TargetKind::Shard) => return Err(shard_refused()),
                },
                Connection::Push { conn, .. } => match (action, kind) {
                    (Subscribe, TargetKind::Channel) => {
                        bounded("SUBSCRIBE", timeout, conn.subscribe(chunk)).await?
                    }
                    (Subscribe, TargetKind::Pattern) => {
                        bounded("PSUBSCRIBE", timeout, conn.psubscribe(chunk)).await?
                    }
                    (Unsubscribe, TargetKind::Channel) => {
                        bounded("UNSUBSCRIBE", timeout, conn.unsubscribe(chunk)).await?
                    }
                    (Unsubscribe, TargetKind::Pattern) => {
                        bounded("PUNSUBSCRIBE", timeout, conn.punsubscribe(chunk)).await?
                    }
                    (_, TargetKind::Shard) => return Err(shard_refused()),
                },
            }
        }
        Ok(())
    }
}

/// The hub sends shard channels to shard links only.
fn shard_refused() -> HubError {
    HubError::InvalidTarget("shard channels need a shard link".into())
}

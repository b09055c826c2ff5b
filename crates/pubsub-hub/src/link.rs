//! One Redis subscribe connection and the task that owns it.
//!
//! A link holds the routing table from channel / pattern to the local subscriptions that
//! want it, and reference-counts Redis subscriptions: SUBSCRIBE when a target gets its first
//! local subscriber, UNSUBSCRIBE when it loses its last. In dedicated mode every subscription
//! has a link of its own; in shared mode a few links serve every subscription.
//!
//! The task is the only owner of the connection (everyone else sends it a [`Command`]), it
//! never waits on a consumer, and when the connection is lost it reconnects with capped,
//! jittered backoff and subscribes every routed target again. It never gives up.
//!
//! This module serves exact channels and patterns over one connection. Shard channels
//! need a connection per master and live in [`crate::shard`], which reuses the [`Link`]
//! handle and its [`Command`]s.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

use futures_util::{FutureExt, StreamExt};
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};

use crate::cluster::ClusterView;
use crate::config::HubConfig;
use crate::error::{HubError, bounded, connection_broken};
use crate::hub::{HubCounters, lock};
use crate::message::{Payload, ReceivedMessage, now_ms};
use crate::subscription::{Event, Subscription, SubscriptionStatus, TargetKind};

/// Most targets sent in one SUBSCRIBE / PSUBSCRIBE when (re)subscribing a large set.
const SUBSCRIBE_CHUNK: usize = 512;
/// Most messages dispatched in a row before the task looks at its commands again.
const DISPATCH_BATCH: usize = 256;

static NEXT_LINK_ID: AtomicU64 = AtomicU64::new(1);

/// Handle to a link task (a plain link here, or a shard link from [`crate::shard`]).
pub(crate) struct Link {
    pub(crate) id: u64,
    commands: mpsc::UnboundedSender<Command>,
    /// The hub's counters, touched on every message and status change.
    pub(crate) counters: Arc<HubCounters>,
    state: Mutex<LinkState>,
    /// Targets currently subscribed on Redis through this link (for shared-mode reporting).
    pub(crate) redis_targets: AtomicU64,
    /// Redis connections the task holds open right now (`subscriber_connections`).
    pub(crate) open_connections: AtomicU64,
}

/// What a link reports to the subscriptions it serves.
struct LinkState {
    status: SubscriptionStatus,
    /// `None`: the status applies to every subscription on the link (one connection).
    /// `Some(ids)`: while the link is not live, only these subscriptions are affected; the
    /// others' targets sit on connections that are fine (shard links, one per master).
    affected: Option<HashSet<u64>>,
}

/// Where a plain link opens its connection.
// With redis' TLS features on (the dashboard's `rediss://`), `redis::Client` is ~240 bytes;
// there is one such value per link, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum Endpoint {
    /// One Redis server.
    Server(redis::Client),
    /// Any reachable node of a cluster: a PUBLISH on any node reaches subscribers on every
    /// node over the cluster bus, so a plain link may live anywhere and move on reconnect.
    Cluster(Arc<ClusterView>),
}

pub(crate) enum Command {
    Attach {
        sub: Arc<Subscription>,
        targets: Vec<String>,
        reply: oneshot::Sender<Result<(), HubError>>,
    },
    Detach {
        sub_id: u64,
        reply: oneshot::Sender<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

impl Link {
    /// A handle and the command queue its task reads.
    pub(crate) fn handle(
        counters: Arc<HubCounters>,
        status: SubscriptionStatus,
        per_subscription_status: bool,
    ) -> (Arc<Link>, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            id: NEXT_LINK_ID.fetch_add(1, Ordering::Relaxed),
            commands: tx,
            counters,
            state: Mutex::new(LinkState {
                status,
                affected: per_subscription_status.then(HashSet::new),
            }),
            redis_targets: AtomicU64::new(0),
            open_connections: AtomicU64::new(0),
        });
        (link, rx)
    }

    /// Starts a plain (channel and pattern) link task. A `dedicated` link ends when its last
    /// subscription detaches.
    pub(crate) fn spawn(
        endpoint: Endpoint,
        config: Arc<HubConfig>,
        counters: Arc<HubCounters>,
        dedicated: bool,
    ) -> Arc<Link> {
        let (link, rx) = Link::handle(
            counters,
            SubscriptionStatus::Reconnecting {
                since_ms: now_ms(),
                attempts: 0,
                last_error: "not connected yet".into(),
            },
            false,
        );
        let task = LinkTask {
            link: Arc::clone(&link),
            endpoint,
            config,
            dedicated,
            commands: rx,
            routes: HashMap::new(),
            exit_replies: Vec::new(),
            last_error: String::new(),
        };
        tokio::spawn(task.run());
        link
    }

    /// The status as subscription `sub_id` sees it: a shard link that lost one master is
    /// still live for subscriptions whose channels live on the other masters.
    pub(crate) fn status_for(&self, sub_id: u64) -> SubscriptionStatus {
        let state = lock(&self.state);
        match (&state.status, &state.affected) {
            (SubscriptionStatus::Reconnecting { .. }, Some(ids)) if !ids.contains(&sub_id) => {
                SubscriptionStatus::Live
            }
            (status, _) => status.clone(),
        }
    }

    /// Distinct channels and patterns this link holds on Redis.
    pub(crate) fn redis_targets(&self) -> u64 {
        self.redis_targets.load(Ordering::Relaxed)
    }

    /// Redis connections the link holds open.
    pub(crate) fn open_connections(&self) -> u64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    pub(crate) fn set_status(&self, status: SubscriptionStatus) {
        lock(&self.state).status = status;
        self.counters.touch();
    }

    /// Sets the status and which subscriptions it concerns (per-subscription links only);
    /// watchers are woken only if something changed.
    pub(crate) fn set_status_for(&self, status: SubscriptionStatus, affected: HashSet<u64>) {
        let mut state = lock(&self.state);
        let affected = Some(affected);
        if state.status == status && state.affected == affected {
            return;
        }
        state.status = status;
        state.affected = affected;
        drop(state);
        self.counters.touch();
    }

    /// Routes `targets` to `sub`, subscribing on Redis where needed. Returns once Redis has
    /// confirmed, so a message published afterwards is delivered.
    pub(crate) async fn attach(
        &self,
        sub: Arc<Subscription>,
        targets: Vec<String>,
    ) -> Result<(), HubError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Attach {
                sub,
                targets,
                reply,
            })
            .map_err(|_| HubError::Closed)?;
        rx.await.unwrap_or(Err(HubError::Closed))
    }

    /// Removes every route of subscription `sub_id`; targets no one else wants are
    /// unsubscribed on Redis before this returns.
    pub(crate) async fn detach(&self, sub_id: u64) {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Detach { sub_id, reply })
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Asks the task to end, without waiting.
    pub(crate) fn abandon(&self) {
        let (reply, _) = oneshot::channel();
        let _ = self.commands.send(Command::Shutdown { reply });
    }

    /// Ends the task and closes its connection.
    pub(crate) async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
    }
}

type RouteKey = (TargetKind, String);

/// What the connected loop or a command decided.
enum Flow {
    Continue,
    /// The connection is unusable; reconnect.
    Lost(String),
    Exit,
}

struct Connection {
    sink: PubSubSink,
    stream: PubSubStream,
}

type PingFuture = Pin<Box<dyn Future<Output = Result<(), HubError>> + Send>>;

struct LinkTask {
    link: Arc<Link>,
    endpoint: Endpoint,
    config: Arc<HubConfig>,
    dedicated: bool,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Target → the subscriptions that want it. A key exists only while its list is non-empty
    /// and Redis has confirmed the subscription.
    routes: HashMap<RouteKey, Vec<Arc<Subscription>>>,
    /// Answered after the connection is dropped, so callers know it is gone.
    exit_replies: Vec<oneshot::Sender<()>>,
    last_error: String,
}

impl LinkTask {
    async fn run(mut self) {
        let mut connection = match self.connect().await {
            Ok(c) => {
                self.link.open_connections.store(1, Ordering::Relaxed);
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
                        self.link.open_connections.store(0, Ordering::Relaxed);
                        self.set_reconnecting(since_ms, 0);
                        self.link.redis_targets.store(0, Ordering::Relaxed);
                        for sub in self.distinct_subs() {
                            sub.notify(Event::Disconnected {
                                error: error.clone(),
                            });
                        }
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
                            self.link.open_connections.store(1, Ordering::Relaxed);
                            self.link.set_status(SubscriptionStatus::Live);
                            for sub in self.distinct_subs() {
                                sub.notify(Event::Reconnected);
                            }
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
        self.link.open_connections.store(0, Ordering::Relaxed);
        self.link.set_status(SubscriptionStatus::Closed);
        self.link.redis_targets.store(0, Ordering::Relaxed);
        for reply in self.exit_replies.drain(..) {
            let _ = reply.send(());
        }
    }

    fn set_reconnecting(&self, since_ms: u64, attempts: u32) {
        self.link.set_status(SubscriptionStatus::Reconnecting {
            since_ms,
            attempts,
            last_error: self.last_error.clone(),
        });
    }

    fn distinct_subs(&self) -> Vec<Arc<Subscription>> {
        let mut seen = std::collections::HashSet::new();
        self.routes
            .values()
            .flatten()
            .filter(|s| seen.insert(s.id))
            .cloned()
            .collect()
    }

    /// Opens a connection and subscribes every routed target.
    async fn connect(&self) -> Result<Connection, HubError> {
        let pubsub = match &self.endpoint {
            Endpoint::Server(client) => {
                bounded(
                    "connect",
                    self.config.connect_timeout,
                    client.get_async_pubsub(),
                )
                .await?
            }
            Endpoint::Cluster(view) => view.open_pubsub(self.link.id).await?,
        };
        let (mut sink, stream) = pubsub.split();
        for kind in [TargetKind::Channel, TargetKind::Pattern] {
            let targets: Vec<&str> = self
                .routes
                .keys()
                .filter(|(k, _)| *k == kind)
                .map(|(_, t)| t.as_str())
                .collect();
            for chunk in targets.chunks(SUBSCRIBE_CHUNK) {
                subscribe_on(&mut sink, kind, chunk, self.config.command_timeout).await?;
            }
        }
        self.link
            .redis_targets
            .store(self.routes.len() as u64, Ordering::Relaxed);
        Ok(Connection { sink, stream })
    }

    /// The connected loop: commands, messages and keep-alive pings.
    async fn serve(&mut self, mut conn: Connection) -> Flow {
        let mut ping_timer = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.ping_interval,
            self.config.ping_interval,
        );
        ping_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ping: Option<PingFuture> = None;
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => {
                    let Some(command) = command else { return Flow::Exit };
                    match self.handle_connected(command, &mut conn.sink).await {
                        Flow::Continue => {}
                        other => return other,
                    }
                }
                result = async { ping.as_mut().expect("guarded").await }, if ping.is_some() => {
                    ping = None;
                    if let Err(e) = result {
                        return Flow::Lost(format!("keep-alive PING failed: {e}"));
                    }
                }
                message = conn.stream.next() => {
                    let Some(message) = message else {
                        return Flow::Lost("connection closed".into());
                    };
                    self.dispatch(message);
                    for _ in 0..DISPATCH_BATCH {
                        match conn.stream.next().now_or_never() {
                            Some(Some(message)) => self.dispatch(message),
                            Some(None) => return Flow::Lost("connection closed".into()),
                            None => break,
                        }
                    }
                }
                _ = ping_timer.tick(), if ping.is_none() => {
                    let mut sink = conn.sink.clone();
                    let timeout = self.config.command_timeout;
                    ping = Some(Box::pin(async move {
                        bounded("PING", timeout, sink.ping::<redis::Value>()).await.map(drop)
                    }));
                }
            }
        }
    }

    /// Routes one message to every local subscription of its channel or pattern.
    fn dispatch(&self, msg: redis::Msg) {
        let pattern: Option<String> = msg.get_pattern().ok().flatten();
        let channel = match msg.get_channel::<Vec<u8>>() {
            Ok(bytes) => String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            Err(_) => return,
        };
        let (subs, channel) = match &pattern {
            Some(p) => (self.routes.get(&(TargetKind::Pattern, p.clone())), channel),
            None => {
                let key = (TargetKind::Channel, channel);
                (self.routes.get(&key), key.1)
            }
        };
        let Some(subs) = subs else {
            return;
        };
        let payload = Payload::from_bytes(msg.get_payload_bytes().to_vec());
        let message = Arc::new(ReceivedMessage::new(channel, pattern, payload));
        for sub in subs {
            sub.deliver(&message);
        }
        self.link.counters.touch();
    }

    async fn handle_connected(&mut self, command: Command, sink: &mut PubSubSink) -> Flow {
        match command {
            Command::Attach {
                sub,
                targets,
                reply,
            } => {
                let kind = sub.kind();
                let new: Vec<&str> = targets
                    .iter()
                    .filter(|t| !self.routes.contains_key(&(kind, (*t).clone())))
                    .map(String::as_str)
                    .collect();
                let mut outcome = Ok(());
                let mut subscribed = 0;
                for chunk in new.chunks(SUBSCRIBE_CHUNK) {
                    outcome = subscribe_on(sink, kind, chunk, self.config.command_timeout).await;
                    if outcome.is_err() {
                        break;
                    }
                    subscribed += chunk.len();
                }
                match outcome {
                    Ok(()) => {
                        for target in targets {
                            self.routes
                                .entry((kind, target))
                                .or_default()
                                .push(Arc::clone(&sub));
                        }
                        self.link
                            .redis_targets
                            .store(self.routes.len() as u64, Ordering::Relaxed);
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
                        for chunk in new[..subscribed].chunks(SUBSCRIBE_CHUNK) {
                            if let Err(e) =
                                unsubscribe_on(sink, kind, chunk, self.config.command_timeout).await
                            {
                                return Flow::Lost(e.to_string());
                            }
                        }
                        Flow::Continue
                    }
                }
            }
            Command::Detach { sub_id, reply } => {
                let released = self.remove_routes(sub_id);
                let mut flow = Flow::Continue;
                for kind in [TargetKind::Channel, TargetKind::Pattern] {
                    let targets: Vec<&str> = released
                        .iter()
                        .filter(|(k, _)| *k == kind)
                        .map(|(_, t)| t.as_str())
                        .collect();
                    for chunk in targets.chunks(SUBSCRIBE_CHUNK) {
                        if let Err(e) =
                            unsubscribe_on(sink, kind, chunk, self.config.command_timeout).await
                        {
                            flow = Flow::Lost(e.to_string());
                            break;
                        }
                    }
                }
                self.after_detach(reply, flow)
            }
            Command::Shutdown { reply } => {
                self.exit_replies.push(reply);
                Flow::Exit
            }
        }
    }

    /// Drops `sub_id` from every route; returns the targets no one wants any more.
    fn remove_routes(&mut self, sub_id: u64) -> Vec<RouteKey> {
        let mut released = Vec::new();
        self.routes.retain(|key, subs| {
            subs.retain(|s| s.id != sub_id);
            if subs.is_empty() {
                released.push(key.clone());
                false
            } else {
                true
            }
        });
        self.link
            .redis_targets
            .store(self.routes.len() as u64, Ordering::Relaxed);
        released
    }

    /// A dedicated link exits with its last subscription, answering the detach only once
    /// the connection is gone.
    fn after_detach(&mut self, reply: oneshot::Sender<()>, flow: Flow) -> Flow {
        if self.dedicated && self.routes.is_empty() {
            self.exit_replies.push(reply);
            return Flow::Exit;
        }
        let _ = reply.send(());
        flow
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
                            self.remove_routes(sub_id);
                            if let Flow::Exit = self.after_detach(reply, Flow::Continue) {
                                return Flow::Exit;
                            }
                        }
                        Command::Shutdown { reply } => {
                            self.exit_replies.push(reply);
                            return Flow::Exit;
                        }
                    }
                }
            }
        }
    }
}

async fn subscribe_on(
    sink: &mut PubSubSink,
    kind: TargetKind,
    targets: &[&str],
    timeout: Duration,
) -> Result<(), HubError> {
    if targets.is_empty() {
        return Ok(());
    }
    match kind {
        TargetKind::Channel => bounded("SUBSCRIBE", timeout, sink.subscribe(targets)).await,
        TargetKind::Pattern => bounded("PSUBSCRIBE", timeout, sink.psubscribe(targets)).await,
        TargetKind::Shard => Err(not_plain()),
    }
}

async fn unsubscribe_on(
    sink: &mut PubSubSink,
    kind: TargetKind,
    targets: &[&str],
    timeout: Duration,
) -> Result<(), HubError> {
    if targets.is_empty() {
        return Ok(());
    }
    match kind {
        TargetKind::Channel => bounded("UNSUBSCRIBE", timeout, sink.unsubscribe(targets)).await,
        TargetKind::Pattern => bounded("PUNSUBSCRIBE", timeout, sink.punsubscribe(targets)).await,
        TargetKind::Shard => Err(not_plain()),
    }
}

/// Shard channels are never routed to a plain link (the hub sends them to shard links).
fn not_plain() -> HubError {
    HubError::InvalidTarget("shard channels need a shard link".into())
}

/// Exponential backoff from `reconnect_min`, capped at `reconnect_max`, with the delay drawn
/// uniformly from its upper half so that many links do not reconnect in lock-step.
pub(crate) fn backoff_delay(config: &HubConfig, attempts: u32) -> Duration {
    let base = config
        .reconnect_min
        .saturating_mul(1u32 << attempts.min(16))
        .min(config.reconnect_max);
    let half = base / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = HubConfig::default()
            .with_reconnect_backoff(Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..40 {
            let d = backoff_delay(&config, attempt);
            let cap = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(16))
                .min(Duration::from_secs(2));
            assert!(
                d >= cap / 2 && d <= cap,
                "attempt {attempt}: {d:?} vs {cap:?}"
            );
        }
    }
}

//! Shard links: the subscriber side of sharded pub/sub (`SSUBSCRIBE`, Redis 7+).
//!
//! A shard channel lives on the master that owns its hash slot, and Redis refuses an
//! `SSUBSCRIBE` whose channels span slots. So a shard link keeps one connection per master
//! it needs (on a single server, just one) and subscribes channel by channel, pipelined.
//! Like a plain link it is a task that owns its connections and never waits on a consumer,
//! with the same handle, commands, [`Routes`] and [`Gaps`] (see [`super`]). Unlike a plain
//! link, its `smessage`s are delivered by the connections' push senders themselves, through
//! its routes shared with the task, so a recovery that keeps the task busy (a node that does
//! not answer) holds up no message for the healthy nodes.
//!
//! # Why RESP3 and a multiplexed connection
//! redis-rs's RESP2 pub/sub connection has no `SSUBSCRIBE` and drops the connection on an
//! `smessage` it cannot parse. A RESP3 [`MultiplexedConnection`] can send any command, and
//! hands every push (`smessage`, the server's own `sunsubscribe`, its disconnect notice) to
//! a push sender; ours tags each push with the connection's generation and queues it to
//! this task.
//!
//! # Losing a node
//! A connection is lost when its socket closes, a keep-alive PING fails, a command times
//! out, or Redis ends a shard subscription we did not end ourselves: Redis 7 sends
//! `sunsubscribe` to shard subscribers when their slot moves (failover, resharding). Such
//! an unsolicited push may also have been taken by redis-rs as the reply to a request in
//! flight on that connection, so the connection is not trusted afterwards: it is dropped,
//! and every channel it carried is lost, not just the one whose slot moved. Lost channels
//! are *pending*; their subscriptions get
//! [`Event::Disconnected`](crate::Event::Disconnected) and report `Reconnecting`. With
//! capped, jittered backoff the task refreshes the cluster topology and subscribes the
//! pending channels on their (possibly new) owners; a subscription gets
//! [`Event::Reconnected`](crate::Event::Reconnected) once none of its channels is pending.
//! Subscriptions whose channels live on healthy masters stay `Live` throughout.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use tracing::Instrument;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, PushInfo, PushKind, ServerErrorKind, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    Command, DISPATCH_BATCH, Ending, Gaps, Link, LinkEnv, Routes, backoff_delay, deliver_push,
    keepalive_timer,
};
use crate::cluster::NodeAddr;
use crate::config::HubConfig;
use crate::error::{HubError, bounded, connection_broken};
use crate::locks::{read, write};
use crate::message::now_ms;
use crate::subscription::{SubscriptionStatus, TargetKind};
use crate::topology::Topology;

/// The only kind a shard link serves.
const SHARD: TargetKind = TargetKind::Shard;

/// Starts a shard link task. It opens no connection until a channel is attached.
pub(super) fn spawn(env: LinkEnv, dedicated: bool) -> Arc<Link> {
    let (link, commands) = Link::handle(env.counters, SubscriptionStatus::Live, true);
    let (push_tx, pushes) = mpsc::unbounded_channel();
    let task = ShardTask {
        link: Arc::clone(&link),
        topology: env.topology,
        config: env.config,
        commands,
        push_tx,
        pushes,
        routes: Arc::default(),
        placed: HashMap::new(),
        pending: BTreeSet::new(),
        nodes: HashMap::new(),
        next_generation: 1,
        expected_sunsubscribes: HashMap::new(),
        gaps: Gaps::default(),
        recovery: None,
        last_error: String::new(),
        ending: Ending::new(dedicated),
    };
    tokio::spawn(task.run());
    link
}

/// One RESP3 connection to one node.
struct NodeConn {
    /// Tags this connection's pushes; a new connection to the same node gets a new one, so
    /// pushes from a dropped connection are recognised and ignored.
    generation: u64,
    conn: MultiplexedConnection,
    pinging: bool,
}

/// Present while some routed channel is not subscribed anywhere.
struct Recovery {
    since_ms: u64,
    attempts: u32,
    next_at: Instant,
}

type PingFuture = Pin<Box<dyn Future<Output = (NodeAddr, u64, Result<(), HubError>)> + Send>>;

/// What came back from one pipelined `SSUBSCRIBE` round on one node.
#[derive(Default)]
struct Placement {
    confirmed: Vec<String>,
    /// Answered `MOVED` / `ASK`: our topology is stale.
    moved: Vec<String>,
    /// The first other refusal (e.g. `CLUSTERDOWN`, an ACL error).
    refused: Option<HubError>,
}

struct ShardTask {
    link: Arc<Link>,
    topology: Arc<Topology>,
    config: Arc<HubConfig>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Cloned into every connection's push sender; keeping it here means `pushes` never ends.
    push_tx: mpsc::UnboundedSender<(u64, PushInfo)>,
    pushes: mpsc::UnboundedReceiver<(u64, PushInfo)>,
    /// Every routed channel is either placed or pending. Shared with the connections' push
    /// senders, which deliver `smessage`s themselves.
    routes: Arc<RwLock<Routes>>,
    /// Channels Redis has confirmed, and the node they are subscribed on.
    placed: HashMap<String, NodeAddr>,
    /// Routed channels that are not subscribed anywhere right now.
    pending: BTreeSet<String>,
    nodes: HashMap<NodeAddr, NodeConn>,
    next_generation: u64,
    /// `sunsubscribe` pushes we caused, per (connection generation, channel); any other one
    /// is Redis telling us the slot moved.
    expected_sunsubscribes: HashMap<(u64, String), u32>,
    /// Subscriptions with a channel pending, told `Disconnected` and not yet `Reconnected`.
    gaps: Gaps,
    recovery: Option<Recovery>,
    last_error: String,
    ending: Ending,
}

impl ShardTask {
    async fn run(mut self) {
        let mut pings: FuturesUnordered<PingFuture> = FuturesUnordered::new();
        let mut ping_timer = keepalive_timer(&self.config);
        loop {
            let retry_at = self.recovery.as_ref().map(|r| r.next_at);
            tokio::select! {
                biased;
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    if self.handle(command).await {
                        break;
                    }
                }
                Some((generation, push)) = self.pushes.recv() => {
                    self.on_push(generation, push);
                    for _ in 0..DISPATCH_BATCH {
                        match self.pushes.try_recv() {
                            Ok((generation, push)) => self.on_push(generation, push),
                            Err(_) => break,
                        }
                    }
                    self.publish_state();
                }
                Some((addr, generation, result)) = pings.next(), if !pings.is_empty() => {
                    let current = self.nodes.get_mut(&addr).filter(|n| n.generation == generation);
                    if let Some(node) = current {
                        node.pinging = false;
                        if let Err(e) = result {
                            self.lose_node(&addr, format!("keep-alive PING to {addr} failed: {e}"));
                            self.publish_state();
                        }
                    }
                }
                _ = ping_timer.tick() => {
                    let timeout = self.config.command_timeout;
                    for (addr, node) in self.nodes.iter_mut().filter(|(_, n)| !n.pinging) {
                        node.pinging = true;
                        let (addr, generation, mut conn) = (addr.clone(), node.generation, node.conn.clone());
                        pings.push(Box::pin(async move {
                            let result = bounded(
                                "PING",
                                timeout,
                                redis::cmd("PING").query_async::<Value>(&mut conn),
                            )
                            .await
                            .map(drop);
                            (addr, generation, result)
                        }));
                    }
                }
                _ = sleep_until(retry_at), if retry_at.is_some() => {
                    let span = tracing::info_span!("reconnect", link = self.link.id, kind = "shard", pending = self.pending.len());
                    self.recover().instrument(span).await;
                    self.publish_state();
                }
            }
        }
        self.nodes.clear();
        self.ending.finish(&self.link);
    }

    /// Handles one command; `true` means the task should end.
    async fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Attach {
                sub,
                targets,
                reply,
            } => {
                let result = self.attach(&targets).await;
                if result.is_ok() {
                    write(&self.routes).add(&sub, targets);
                }
                {
                    let routes = read(&self.routes);
                    self.pending.retain(|ch| routes.contains(SHARD, ch));
                }
                self.reconcile();
                self.publish_state();
                let _ = reply.send(result);
                false
            }
            Command::Detach { sub_id, reply } => {
                let released: Vec<String> = write(&self.routes)
                    .remove(sub_id)
                    .into_iter()
                    .map(|(_, channel)| channel)
                    .collect();
                self.gaps.forget(sub_id);
                self.release(&released).await;
                self.reconcile();
                self.publish_state();
                self.ending.detached(reply, &read(&self.routes))
            }
            Command::Shutdown { reply } => {
                self.ending.shutdown(reply);
                true
            }
        }
    }

    /// Subscribes the channels among `targets` that are not subscribed yet (new ones, and
    /// pending ones, which get a fresh chance). On failure the new channels no one else
    /// routes are released again.
    async fn attach(&mut self, targets: &[String]) -> Result<(), HubError> {
        let wanted: Vec<String> = targets
            .iter()
            .filter(|t| !self.placed.contains_key(*t))
            .cloned()
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let result = self.place(&wanted).await;
        for channel in &wanted {
            if self.placed.contains_key(channel) {
                self.pending.remove(channel);
            }
        }
        if result.is_err() {
            let orphans: Vec<String> = {
                let routes = read(&self.routes);
                wanted
                    .into_iter()
                    .filter(|ch| !routes.contains(SHARD, ch))
                    .collect()
            };
            self.release(&orphans).await;
        }
        result
    }

    /// Subscribes `channels` on their owners; a `MOVED` answer refreshes the topology and
    /// tries once more. Placed channels are recorded even if others fail.
    async fn place(&mut self, channels: &[String]) -> Result<(), HubError> {
        let mut todo: Vec<String> = channels.to_vec();
        let mut error: Option<HubError> = None;
        for round in 0..2 {
            if todo.is_empty() {
                break;
            }
            if round > 0 {
                if let Err(e) = self.topology.refresh().await {
                    error.get_or_insert(e);
                    break;
                }
                tracing::debug!(
                    link = self.link.id,
                    channels = todo.len(),
                    "retrying after MOVED"
                );
            }
            let mut by_node: BTreeMap<NodeAddr, Vec<String>> = BTreeMap::new();
            for channel in std::mem::take(&mut todo) {
                match self.topology.shard_owner(&channel) {
                    Ok(addr) => by_node.entry(addr).or_default().push(channel),
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
            }
            for (addr, group) in by_node {
                match self.subscribe_on(&addr, &group).await {
                    Ok(placement) => {
                        for channel in placement.confirmed {
                            self.placed.insert(channel, addr.clone());
                        }
                        todo.extend(placement.moved);
                        if let Some(e) = placement.refused {
                            error.get_or_insert(e);
                        }
                    }
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
            }
        }
        if let Some(first) = todo.first() {
            error.get_or_insert(HubError::Unavailable(format!(
                "the slot of {first:?} keeps moving; the cluster topology is changing"
            )));
        }
        error.map_or(Ok(()), Err)
    }

    /// One pipelined round of single-channel `SSUBSCRIBE`s on `addr` (channels in different
    /// slots cannot share one command). A broken or confused connection is dropped.
    async fn subscribe_on(
        &mut self,
        addr: &NodeAddr,
        channels: &[String],
    ) -> Result<Placement, HubError> {
        let Some(mut conn) = self.node_conn(addr).await? else {
            // Our view named a node that is no longer a master: look again.
            return Ok(Placement {
                moved: channels.to_vec(),
                ..Placement::default()
            });
        };
        let mut pipe = redis::pipe();
        for channel in channels {
            pipe.cmd("SSUBSCRIBE").arg(channel);
        }
        let replies = match bounded(
            "SSUBSCRIBE",
            self.config.command_timeout,
            conn.req_packed_commands(&pipe, 0, channels.len()),
        )
        .await
        {
            Ok(replies) => replies,
            Err(e) => {
                self.lose_node(addr, format!("SSUBSCRIBE on {addr} failed: {e}"));
                return Err(e);
            }
        };
        let mut placement = Placement::default();
        for (channel, reply) in channels.iter().zip(replies) {
            match reply {
                Value::Push {
                    kind: PushKind::SSubscribe,
                    data,
                } if matches!(data.first(), Some(Value::BulkString(b)) if b == channel.as_bytes()) =>
                {
                    placement.confirmed.push(channel.clone());
                }
                Value::ServerError(e)
                    if matches!(
                        e.kind(),
                        Some(ServerErrorKind::Moved | ServerErrorKind::Ask)
                    ) =>
                {
                    placement.moved.push(channel.clone());
                }
                Value::ServerError(e) => {
                    placement
                        .refused
                        .get_or_insert(HubError::Redis(redis::RedisError::from(e)));
                }
                other => {
                    // Most likely an unsolicited push taken as a reply: the pairing of
                    // requests and replies on this connection is off.
                    let why = format!("unexpected reply to SSUBSCRIBE on {addr}: {other:?}");
                    self.lose_node(addr, why.clone());
                    return Err(HubError::Unavailable(why));
                }
            }
        }
        Ok(placement)
    }

    /// `SUNSUBSCRIBE`s placed `channels` and forgets them; pending ones are just forgotten.
    /// Connections left without channels are closed.
    async fn release(&mut self, channels: &[String]) {
        let mut by_node: BTreeMap<NodeAddr, Vec<String>> = BTreeMap::new();
        for channel in channels {
            self.pending.remove(channel);
            if let Some(addr) = self.placed.remove(channel) {
                by_node.entry(addr).or_default().push(channel.clone());
            }
        }
        for (addr, group) in by_node {
            let Some(node) = self.nodes.get(&addr) else {
                continue;
            };
            let (generation, mut conn) = (node.generation, node.conn.clone());
            let mut pipe = redis::pipe();
            for channel in &group {
                pipe.cmd("SUNSUBSCRIBE").arg(channel);
                *self
                    .expected_sunsubscribes
                    .entry((generation, channel.clone()))
                    .or_default() += 1;
            }
            if let Err(e) = bounded(
                "SUNSUBSCRIBE",
                self.config.command_timeout,
                conn.req_packed_commands(&pipe, 0, group.len()),
            )
            .await
            {
                self.lose_node(&addr, format!("SUNSUBSCRIBE on {addr} failed: {e}"));
            }
        }
        let in_use: HashSet<&NodeAddr> = self.placed.values().collect();
        let idle: Vec<NodeAddr> = self
            .nodes
            .keys()
            .filter(|addr| !in_use.contains(addr))
            .cloned()
            .collect();
        for addr in idle {
            self.drop_node(&addr);
        }
    }

    /// The connection to `addr`, opened (RESP3, with our push sender) if there is none.
    /// `None` if a cluster node turns out to be a replica: a replica accepts `SSUBSCRIBE`
    /// for its master's slots, so a stale view would otherwise go unnoticed.
    async fn node_conn(
        &mut self,
        addr: &NodeAddr,
    ) -> Result<Option<MultiplexedConnection>, HubError> {
        if let Some(node) = self.nodes.get(addr) {
            return Ok(Some(node.conn.clone()));
        }
        let client = self.topology.shard_client(addr)?;
        let generation = self.next_generation;
        self.next_generation += 1;
        let tx = self.push_tx.clone();
        let routes = Arc::clone(&self.routes);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.command_timeout))
            .set_push_sender(move |info: PushInfo| {
                if info.kind == PushKind::SMessage {
                    deliver_push(&routes, SHARD, info.data);
                    Ok(())
                } else {
                    tx.send((generation, info))
                }
            });
        let mut conn = bounded(
            "connect",
            self.config.connect_timeout + self.config.command_timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        if self.topology.is_cluster() && is_replica(&mut conn, self.config.command_timeout).await? {
            tracing::debug!(link = self.link.id, node = %addr, "the owner we knew is a replica now");
            return Ok(None);
        }
        self.nodes.insert(
            addr.clone(),
            NodeConn {
                generation,
                conn: conn.clone(),
                pinging: false,
            },
        );
        self.link.set_open_connections(self.nodes.len());
        Ok(Some(conn))
    }

    /// Closes the connection to `addr` (dropping the last handle ends redis-rs's driver).
    fn drop_node(&mut self, addr: &NodeAddr) -> Option<NodeConn> {
        let node = self.nodes.remove(addr)?;
        self.expected_sunsubscribes
            .retain(|(generation, _), _| *generation != node.generation);
        self.link.set_open_connections(self.nodes.len());
        Some(node)
    }

    /// The connection to `addr` is gone or untrusted: drop it, make its channels pending,
    /// tell their subscriptions, and schedule a recovery.
    fn lose_node(&mut self, addr: &NodeAddr, reason: String) {
        if self.drop_node(addr).is_none() {
            return;
        }
        let lost: Vec<String> = self
            .placed
            .iter()
            .filter(|(_, a)| *a == addr)
            .map(|(ch, _)| ch.clone())
            .collect();
        self.last_error = reason.clone();
        if lost.is_empty() {
            return;
        }
        tracing::warn!(link = self.link.id, node = %addr, channels = lost.len(), error = %reason, "shard subscriber connection lost; resubscribing");
        for channel in &lost {
            self.placed.remove(channel);
            self.pending.insert(channel.clone());
        }
        let newly = self
            .gaps
            .open(read(&self.routes).subscribers_of(SHARD, lost.iter().map(String::as_str)));
        let since_ms = self
            .recovery
            .get_or_insert_with(|| Recovery {
                since_ms: now_ms(),
                attempts: 0,
                next_at: Instant::now() + backoff_delay(&self.config, 0),
            })
            .since_ms;
        // Status first, so a consumer woken by the event already reads `Reconnecting`.
        self.publish_state();
        Gaps::tell_disconnected(newly, &reason, since_ms);
    }

    fn on_push(&mut self, generation: u64, push: PushInfo) {
        match push.kind {
            PushKind::SMessage => deliver_push(&self.routes, SHARD, push.data),
            PushKind::SUnsubscribe => {
                let Some(addr) = self.addr_of(generation) else {
                    return;
                };
                let channel = match push.data.first() {
                    Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                };
                let key = (generation, channel);
                if let Some(n) = self.expected_sunsubscribes.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        self.expected_sunsubscribes.remove(&key);
                    }
                    return;
                }
                let reason = format!(
                    "{addr} ended the shard subscription to {:?} (its slot moved to another node)",
                    key.1
                );
                self.lose_node(&addr, reason);
            }
            PushKind::Disconnection => {
                if let Some(addr) = self.addr_of(generation) {
                    self.lose_node(&addr, format!("connection to {addr} closed"));
                }
            }
            // Confirmations of our own commands (also returned as their replies), and kinds
            // a shard connection never subscribes to.
            _ => {}
        }
    }

    fn addr_of(&self, generation: u64) -> Option<NodeAddr> {
        self.nodes
            .iter()
            .find(|(_, n)| n.generation == generation)
            .map(|(addr, _)| addr.clone())
    }

    /// One recovery attempt: refresh the topology, then subscribe every pending channel on
    /// its owner.
    async fn recover(&mut self) {
        let todo: Vec<String> = self.pending.iter().cloned().collect();
        let result = match self.topology.refresh().await {
            Ok(()) => self.place(&todo).await,
            Err(e) => Err(e),
        };
        for channel in &todo {
            if self.placed.contains_key(channel) {
                self.pending.remove(channel);
            }
        }
        if let Err(e) = result {
            self.last_error = e.to_string();
        }
        if let Some(recovery) = self.recovery.as_mut()
            && !self.pending.is_empty()
        {
            recovery.attempts = recovery.attempts.saturating_add(1);
            recovery.next_at = Instant::now() + backoff_delay(&self.config, recovery.attempts);
            tracing::debug!(link = self.link.id, attempts = recovery.attempts, pending = self.pending.len(), error = %self.last_error, "shard resubscribe attempt failed");
        }
        self.reconcile();
    }

    /// Ends the recovery when nothing is pending, and tells every disconnected subscription
    /// whose channels are all subscribed again.
    fn reconcile(&mut self) {
        if self.pending.is_empty() && self.recovery.take().is_some() {
            tracing::info!(link = self.link.id, "shard subscriptions re-established");
        }
        let waiting = self.pending_subscriptions();
        let back = self.gaps.close_unless(|id| waiting.contains(&id));
        // Status first, so a consumer woken by the event already reads `Live`.
        self.publish_state();
        Gaps::tell_reconnected(back);
    }

    /// Subscriptions with at least one pending channel.
    fn pending_subscriptions(&self) -> HashSet<u64> {
        read(&self.routes)
            .subscribers_of(SHARD, self.pending.iter().map(String::as_str))
            .map(|s| s.id)
            .collect()
    }

    fn publish_state(&self) {
        let status = match &self.recovery {
            None => SubscriptionStatus::Live,
            Some(r) => SubscriptionStatus::Reconnecting {
                since_ms: r.since_ms,
                attempts: r.attempts,
                last_error: self.last_error.clone(),
            },
        };
        self.link.set_redis_targets(self.placed.len());
        self.link
            .set_status_for(status, self.pending_subscriptions());
    }
}

/// Asks `ROLE`; a node that refuses the command (e.g. by ACL) is taken for a master.
async fn is_replica(
    conn: &mut MultiplexedConnection,
    timeout: std::time::Duration,
) -> Result<bool, HubError> {
    let role: Value = match bounded("ROLE", timeout, redis::cmd("ROLE").query_async(conn)).await {
        Ok(role) => role,
        Err(e) if connection_broken(&e) => return Err(e),
        Err(_) => return Ok(false),
    };
    Ok(match role {
        Value::Array(items) => match items.first() {
            Some(Value::BulkString(b)) => b.as_slice() == b"slave",
            Some(Value::SimpleString(s)) => s == "slave",
            _ => false,
        },
        _ => false,
    })
}

/// Sleeps until `at` (never, for `None`; the select guard keeps that branch off).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

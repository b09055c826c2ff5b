//! The node: local clients, and per channel one hub subscription fanned out to the local
//! subscribers (Centrifugo's node/hub model).
//!
//! A channel exists here while at least one local client is subscribed or subscribing.
//! The first subscriber makes one hub subscription for its Redis channel (answered only once
//! Redis has confirmed it); one fan-out task reads that subscription and pushes every message
//! to every member's write queue, encoded once per transport kind. The last member to leave
//! closes the hub subscription.
//!
//! When the hub reports that the Redis connection was lost, or that the fan-out fell
//! behind (messages were dropped), every member is told through its control inbox: its
//! own task then unsubscribes it with "insufficient state" (the SDKs subscribe again, and
//! succeed once Redis is back) or, for server-side subscriptions and unidirectional
//! connections, which cannot resubscribe by themselves, disconnects it with "insufficient
//! state" so that the client reconnects.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use pubsub_hub::{Event, HubError, PubSubHub, Subscription, SubscriptionStatus};
use tokio::sync::Notify;

use crate::metrics::GatewayMetrics;
use crate::payload::publication_push_at;
use crate::protocol::StreamPosition;
use crate::protocol::wrap_push;
use crate::queue::{Pushed, WriteQueue};

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);
static NEXT_CHANNEL: AtomicU64 = AtomicU64::new(1);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A message to a client's own task, which owns its subscriptions.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// The Redis subscription of channel generation `generation` was lost.
    Lost { channel: String, generation: u64 },
    /// The server API unsubscribes the client from `channel`.
    Unsubscribe { channel: String },
}

/// What the node and the fan-out know of one connection.
pub(crate) struct Client {
    /// Process-unique number.
    pub(crate) id: u64,
    /// The protocol's client id (random, UUID-shaped).
    pub(crate) client_id: String,
    /// The user id, set once connected (empty for anonymous).
    pub(crate) user: OnceLock<String>,
    /// Unidirectional connections get pushes unwrapped.
    pub(crate) uni: bool,
    pub(crate) queue: WriteQueue,
    /// Messages for the connection's own task.
    pub(crate) control: Inbox,
    metrics: Arc<GatewayMetrics>,
}

/// A connection's control inbox. It allocates nothing until a message arrives (most
/// connections never get one), and holds each distinct message once: a second identical
/// message asks for nothing the first does not, so the inbox is bounded by the distinct
/// channels named to it.
#[derive(Default)]
pub(crate) struct Inbox {
    items: Mutex<VecDeque<Control>>,
    wake: Notify,
}

impl Inbox {
    /// Queues `control` for the connection's task, unless the same message is waiting.
    pub(crate) fn send(&self, control: Control) {
        let mut items = lock(&self.items);
        if !items.contains(&control) {
            items.push_back(control);
        }
        drop(items);
        self.wake.notify_one();
    }

    /// Waits for the next message.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is only taken when this returns it.
    pub(crate) async fn recv(&self) -> Control {
        loop {
            let woken = self.wake.notified();
            if let Some(control) = lock(&self.items).pop_front() {
                return control;
            }
            woken.await;
        }
    }
}

impl Client {
    pub(crate) fn new(
        uni: bool,
        max_messages: usize,
        max_bytes: usize,
        metrics: Arc<GatewayMetrics>,
    ) -> Arc<Client> {
        Arc::new(Client {
            id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
            client_id: random_uuid(),
            user: OnceLock::new(),
            uni,
            queue: WriteQueue::new(max_messages, max_bytes),
            control: Inbox::default(),
            metrics,
        })
    }

    /// Queues an encoded message; counts a slow disconnect when it overflowed the queue.
    pub(crate) fn send(&self, item: Arc<str>) -> bool {
        match self.queue.push(item) {
            Pushed::Queued => true,
            Pushed::Overflow => {
                GatewayMetrics::inc(&self.metrics.slow_disconnects_total);
                tracing::info!(client = %self.client_id, "client disconnected as slow");
                false
            }
            Pushed::Closed => false,
        }
    }

    /// Queues a push (unwrapped form), wrapped as the transport needs.
    pub(crate) fn send_push(&self, push: &str) -> bool {
        GatewayMetrics::inc(&self.metrics.messages_pushed_total);
        if self.uni {
            self.send(Arc::from(push))
        } else {
            self.send(Arc::from(wrap_push(push)))
        }
    }

    /// The user id ("" before connect and for anonymous clients).
    pub(crate) fn user(&self) -> &str {
        self.user.get().map(String::as_str).unwrap_or("")
    }
}

fn random_uuid() -> String {
    let a = fastrand::u64(..);
    let b = fastrand::u64(..);
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-4{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[16..20],
        &hex[20..32]
    )
}

struct Members {
    clients: HashMap<u64, Arc<Client>>,
    /// Joins in flight: the channel stays while any is.
    pending: usize,
    /// Members whose live publications are held while their subscription reads history,
    /// so that the reply with the recovered publications goes first and the seam between
    /// history and live has neither a gap nor a duplicate ([`Node::release_buffer`]).
    buffers: HashMap<u64, Buffer>,
    /// Positioned members: a hole in the channel's offsets makes them recover.
    positioned: HashSet<u64>,
    /// Members released from their buffer, with the position their reply covered: the
    /// fan-out may still be behind the history read, so a publication at or before it that
    /// arrives afterwards is one the client already has, and is not pushed again.
    floors: HashMap<u64, StreamPosition>,
}

/// The live publications held for one recovering member: `(position, bare push)`.
#[derive(Default)]
struct Buffer {
    held: Vec<(Option<StreamPosition>, Arc<str>)>,
    /// More arrived than the write queue would hold: the member is told to recover again.
    overflowed: bool,
}

/// One channel with local subscribers.
pub(crate) struct Channel {
    /// The gateway channel name (what clients see).
    name: String,
    /// The Redis channel.
    redis: String,
    /// The companion Redis channel of join and leave events, subscribed together with
    /// `redis` when the channel has `join_leave` (see [`crate::presence`]).
    companion: Option<String>,
    /// Distinguishes this channel object from a later one of the same name, so a stale
    /// `Lost` cannot end a newer subscription.
    generation: u64,
    members: Mutex<Members>,
    /// The hub subscription, once Redis has confirmed it. The async lock serialises the
    /// first subscribers' joins so that only one of them subscribes.
    sub: tokio::sync::Mutex<Option<Arc<Subscription>>>,
    /// When and why the last subscribe attempt failed. Joins queued behind a failed attempt
    /// fail at once with the same reason instead of each waiting out its own timeout (the
    /// SDKs retry with backoff).
    last_failure: Mutex<Option<(Instant, String)>>,
}

/// How a member starts.
#[derive(Clone, Copy, Debug)]
enum JoinMode {
    /// Publications are pushed at once.
    Live,
    /// Publications are held until [`Node::release_buffer`].
    Buffered { positioned: bool },
}

/// How long a failed Redis subscribe makes the joins queued behind it fail at once.
const FAILURE_MEMORY: Duration = Duration::from_secs(1);

impl Channel {
    fn hub_name(&self) -> String {
        format!("gateway:{}:{}", self.generation, self.redis)
    }
}

/// Local clients and channels.
pub(crate) struct Node {
    hub: PubSubHub,
    /// Most live publications held for one recovering member (its write queue's bound).
    hold_limit: usize,
    metrics: Arc<GatewayMetrics>,
    channels: Mutex<HashMap<String, Arc<Channel>>>,
    clients: Mutex<HashMap<u64, Arc<Client>>>,
}

/// Why a join failed.
#[derive(Debug)]
pub(crate) enum JoinError {
    /// Redis did not confirm the subscription (or is reconnecting).
    Unavailable(String),
    /// The hub refused (a limit, or it is closed).
    Hub(HubError),
}

impl Node {
    pub(crate) fn new(hub: PubSubHub, metrics: Arc<GatewayMetrics>, hold_limit: usize) -> Self {
        Node {
            hub,
            hold_limit,
            metrics,
            channels: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn hub(&self) -> &PubSubHub {
        &self.hub
    }

    /// Registers a connection.
    pub(crate) fn add_client(&self, client: &Arc<Client>) {
        lock(&self.clients).insert(client.id, Arc::clone(client));
    }

    /// Unregisters a connection.
    pub(crate) fn remove_client(&self, id: u64) {
        lock(&self.clients).remove(&id);
    }

    /// Connections open now.
    pub(crate) fn client_count(&self) -> usize {
        lock(&self.clients).len()
    }

    /// Every connection (a snapshot).
    pub(crate) fn clients(&self) -> Vec<Arc<Client>> {
        lock(&self.clients).values().cloned().collect()
    }

    /// Channels with local members, and their member counts, sorted by name.
    pub(crate) fn channel_counts(&self) -> Vec<(String, usize)> {
        let channels: Vec<Arc<Channel>> = lock(&self.channels).values().cloned().collect();
        let mut out: Vec<(String, usize)> = channels
            .iter()
            .map(|c| (c.name.clone(), lock(&c.members).clients.len()))
            .filter(|(_, n)| *n > 0)
            .collect();
        out.sort();
        out
    }

    /// Adds `client` to `channel` (Redis channel `redis`), subscribing on Redis first when
    /// it is the channel's first member. `first` (the subscribe reply) is queued to the
    /// client in the same step as the membership starts, so no publication of the channel
    /// can overtake it. With `join_leave`, the first member subscribes to the channel's
    /// join and leave companion too (whose events become pushes to every member). Returns
    /// the channel's generation.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call may leave the channel counted as joining. Only the
    /// connection's own task calls it, and that task is never dropped mid-command.
    pub(crate) async fn join(
        &self,
        channel: &str,
        redis: &str,
        client: &Arc<Client>,
        first: Option<Arc<str>>,
        join_leave: bool,
    ) -> Result<u64, JoinError> {
        self.join_with(channel, redis, client, first, JoinMode::Live, join_leave)
            .await
    }

    /// As [`Node::join`], for a subscription that reads history before going live: the
    /// membership starts with the channel's live publications held (none is pushed) until
    /// [`Node::release_buffer`]; `positioned` members recover from holes in offsets;
    /// `join_leave` as for [`Node::join`].
    ///
    /// # Cancel safety
    /// As [`Node::join`].
    pub(crate) async fn join_buffered(
        &self,
        channel: &str,
        redis: &str,
        client: &Arc<Client>,
        positioned: bool,
        join_leave: bool,
    ) -> Result<u64, JoinError> {
        self.join_with(
            channel,
            redis,
            client,
            None,
            JoinMode::Buffered { positioned },
            join_leave,
        )
        .await
    }

    /// Ends a buffered join: queues `first` (the subscribe reply with the publications up
    /// to `through`, or a unidirectional client's recovered publication pushes), then the
    /// held publications after `through` (a held one at or before
    /// it was in the history read; one without a position is live-only and always goes),
    /// and from then on pushes directly. All under the members' lock, so no publication
    /// overtakes or is lost in between. A buffer that overflowed sends the reply and then
    /// tells the member to recover again.
    pub(crate) fn release_buffer(
        &self,
        channel: &str,
        generation: u64,
        client: &Arc<Client>,
        first: Vec<Arc<str>>,
        through: &StreamPosition,
    ) {
        let ch = lock(&self.channels).get(channel).cloned();
        let Some(ch) = ch else { return };
        if ch.generation != generation {
            return;
        }
        let mut members = lock(&ch.members);
        let buffer = members.buffers.remove(&client.id).unwrap_or_default();
        for item in first {
            client.send(item);
        }
        if buffer.overflowed {
            client.control.send(Control::Lost {
                channel: ch.name.clone(),
                generation,
            });
            return;
        }
        let mut passed = false;
        for (position, push) in buffer.held {
            let seen = position
                .as_ref()
                .is_some_and(|p| p.epoch == through.epoch && p.offset <= through.offset);
            passed |= position.is_some() && !seen;
            if !seen {
                client.send_push(&push);
            }
        }
        if !passed {
            members.floors.insert(client.id, through.clone());
        }
    }

    async fn join_with(
        &self,
        channel: &str,
        redis: &str,
        client: &Arc<Client>,
        first: Option<Arc<str>>,
        mode: JoinMode,
        join_leave: bool,
    ) -> Result<u64, JoinError> {
        let ch = {
            let mut channels = lock(&self.channels);
            let ch = channels
                .entry(channel.to_owned())
                .or_insert_with(|| {
                    GatewayMetrics::inc(&self.metrics.channels);
                    Arc::new(Channel {
                        name: channel.to_owned(),
                        redis: redis.to_owned(),
                        companion: join_leave.then(|| crate::presence::join_leave_channel(redis)),
                        generation: NEXT_CHANNEL.fetch_add(1, Ordering::Relaxed),
                        members: Mutex::new(Members {
                            clients: HashMap::new(),
                            pending: 0,
                            buffers: HashMap::new(),
                            positioned: HashSet::new(),
                            floors: HashMap::new(),
                        }),
                        sub: tokio::sync::Mutex::new(None),
                        last_failure: Mutex::new(None),
                    })
                })
                .clone();
            lock(&ch.members).pending += 1;
            ch
        };
        let ready = {
            let mut sub = ch.sub.lock().await;
            match &*sub {
                Some(s) if s.status() == SubscriptionStatus::Live => Ok(()),
                Some(s) => Err(JoinError::Unavailable(format!(
                    "the Redis subscription is {}",
                    s.status().as_str()
                ))),
                None if lock(&ch.last_failure)
                    .as_ref()
                    .is_some_and(|(at, _)| at.elapsed() < FAILURE_MEMORY) =>
                {
                    let reason = lock(&ch.last_failure)
                        .as_ref()
                        .map(|(_, r)| r.clone())
                        .unwrap_or_default();
                    Err(JoinError::Unavailable(reason))
                }
                None => {
                    let name = ch.hub_name();
                    let mut targets = vec![ch.redis.clone()];
                    targets.extend(ch.companion.clone());
                    let made = if self.hub.is_cluster() {
                        self.hub.ssubscribe(&name, targets).await
                    } else {
                        self.hub.subscribe(&name, targets).await
                    };
                    match made {
                        Ok(s) => {
                            let consumer = s.consumer();
                            tokio::spawn(fan_out(
                                Arc::clone(&ch),
                                consumer,
                                Arc::clone(&self.metrics),
                                self.hold_limit,
                            ));
                            *sub = Some(s);
                            Ok(())
                        }
                        Err(e) if e.is_unavailable() || e.is_timeout() => {
                            *lock(&ch.last_failure) = Some((Instant::now(), e.to_string()));
                            Err(JoinError::Unavailable(e.to_string()))
                        }
                        Err(e) => Err(JoinError::Hub(e)),
                    }
                }
            }
        };
        match ready {
            Ok(()) => {
                let mut members = lock(&ch.members);
                members.pending -= 1;
                members.clients.insert(client.id, Arc::clone(client));
                if let JoinMode::Buffered { positioned } = mode {
                    members.buffers.insert(client.id, Buffer::default());
                    if positioned {
                        members.positioned.insert(client.id);
                    }
                }
                if let Some(first) = first {
                    client.send(first);
                }
                drop(members);
                GatewayMetrics::inc(&self.metrics.subscriptions);
                Ok(ch.generation)
            }
            Err(e) => {
                let empty = {
                    let mut members = lock(&ch.members);
                    members.pending -= 1;
                    members.clients.is_empty() && members.pending == 0
                };
                if empty {
                    self.retire(&ch).await;
                }
                Err(e)
            }
        }
    }

    /// Removes `client` from `channel` (of generation `generation`); the last member out
    /// closes the Redis subscription. Returns whether the client was a member.
    ///
    /// # Cancel safety
    /// The membership ends before the first await; a dropped call may leave the hub
    /// subscription open until the hub shuts down.
    pub(crate) async fn leave(&self, channel: &str, generation: u64, client_id: u64) -> bool {
        let ch = lock(&self.channels).get(channel).cloned();
        let Some(ch) = ch else { return false };
        if ch.generation != generation {
            return false;
        }
        let (was_member, empty) = {
            let mut members = lock(&ch.members);
            let was = members.clients.remove(&client_id).is_some();
            members.buffers.remove(&client_id);
            members.positioned.remove(&client_id);
            members.floors.remove(&client_id);
            (was, members.clients.is_empty() && members.pending == 0)
        };
        if was_member {
            GatewayMetrics::dec(&self.metrics.subscriptions);
        }
        if empty {
            self.retire(&ch).await;
        }
        was_member
    }

    /// Removes an empty channel from the map (if nobody joined meanwhile) and closes its
    /// hub subscription.
    async fn retire(&self, ch: &Arc<Channel>) {
        {
            let mut channels = lock(&self.channels);
            let members = lock(&ch.members);
            if !(members.clients.is_empty() && members.pending == 0) {
                return;
            }
            match channels.get(&ch.name) {
                Some(current) if Arc::ptr_eq(current, ch) => {
                    channels.remove(&ch.name);
                    GatewayMetrics::dec(&self.metrics.channels);
                }
                _ => return,
            }
        }
        let sub = ch.sub.lock().await.take();
        if sub.is_some() {
            self.hub.unsubscribe(&ch.hub_name()).await;
        }
    }

    /// Tells every member of `channel` that the server unsubscribes it.
    pub(crate) fn unsubscribe_members(&self, channel: &str, user: Option<&str>) -> usize {
        let ch = lock(&self.channels).get(channel).cloned();
        let Some(ch) = ch else { return 0 };
        let members = lock(&ch.members);
        let mut n = 0;
        for client in members.clients.values() {
            if user.is_none_or(|u| client.user() == u) {
                client.control.send(Control::Unsubscribe {
                    channel: channel.to_owned(),
                });
                n += 1;
            }
        }
        n
    }

    /// Closes every channel's hub subscription (after the clients are gone).
    pub(crate) async fn close_channels(&self) {
        let channels: Vec<Arc<Channel>> = lock(&self.channels).drain().map(|(_, c)| c).collect();
        for ch in channels {
            let sub = ch.sub.lock().await.take();
            if sub.is_some() {
                self.hub.unsubscribe(&ch.hub_name()).await;
                GatewayMetrics::dec(&self.metrics.channels);
            }
        }
    }
}

/// Most bytes of publications joined into one queued item for the bidirectional members
/// of a channel (pushes separated by `\n`, as the protocol allows in one frame).
pub(crate) const MAX_JOINED_BYTES: usize = 16 * 1024;

/// Reads one channel's hub subscription and pushes to its members until it is closed.
///
/// Each publication is encoded once for the whole channel (a publication kept in history
/// carries the same offset for every member). When several are waiting (the fan-out fell
/// behind a burst), they are joined into one item, so that every member costs one queue
/// entry, one wake-up and one socket write for all of them. Members reading history have
/// them held instead, members released from history skip those their reply covered, and
/// positioned members recover after a hole in the offsets ([`deliver`]).
async fn fan_out(
    ch: Arc<Channel>,
    mut consumer: pubsub_hub::Consumer,
    metrics: Arc<GatewayMetrics>,
    hold_limit: usize,
) {
    // The position of the last live publication with one. Redis runs the durable publish
    // scripts one at a time and delivers one connection's messages in order, so offsets
    // arrive consecutive; a jump (or another epoch) means publications were lost.
    let mut last: Option<StreamPosition> = None;
    let mut batch: Vec<Live> = Vec::new();
    while let Some(first) = consumer.recv().await {
        let mut next = Some(first);
        let mut bytes = 0;
        while let Some(event) = next.take() {
            match event {
                Event::Message(m) => {
                    GatewayMetrics::inc(&metrics.messages_received_total);
                    match live(&ch, &m.channel, m.payload.as_bytes(), &mut last) {
                        Some(item) => {
                            bytes += item.push.len() + WRAP_BYTES;
                            batch.push(item);
                        }
                        None => {
                            tracing::debug!(channel = %m.channel, "not a join or leave event; dropped");
                        }
                    }
                    if bytes < MAX_JOINED_BYTES {
                        next = consumer.try_recv();
                    }
                }
                other => {
                    deliver(&ch, &batch, &metrics, hold_limit);
                    batch.clear();
                    if matches!(other, Event::Lagged(_) | Event::Disconnected { .. }) {
                        // Every positioned member recovers; the next offset starts a fresh
                        // check.
                        last = None;
                    }
                    lost(&ch, &other, &metrics);
                }
            }
        }
        deliver(&ch, &batch, &metrics, hold_limit);
        batch.clear();
    }
}

/// One push the fan-out delivers, encoded once for the channel.
struct Live {
    /// The push, unwrapped.
    push: String,
    /// The publication's place in history (none for a channel without history, a plain
    /// `PUBLISH` from outside, or a join or leave push).
    position: Option<StreamPosition>,
    /// Its offset does not follow the channel's previous one: publications were lost.
    hole: bool,
}

/// Encodes one message of the channel's hub subscription (`from` is the Redis channel it
/// came on), reading its position from the live envelope and checking it against `last`,
/// which it moves. `None` for a companion message that is not a join or leave event.
fn live(ch: &Channel, from: &str, bytes: &[u8], last: &mut Option<StreamPosition>) -> Option<Live> {
    if ch.companion.as_deref() == Some(from) {
        // A join or leave event: no place in history.
        return crate::presence::join_leave_push(&ch.name, bytes).map(|push| Live {
            push,
            position: None,
            hole: false,
        });
    }
    let (position, body) = match pubsub_hub::LiveEnvelope::parse(bytes) {
        Some(e) => (
            Some(StreamPosition {
                offset: e.position.offset,
                epoch: e.position.epoch,
            }),
            e.payload,
        ),
        None => (None, bytes),
    };
    let push = publication_push_at(&ch.name, body, position.as_ref().map(|p| p.offset));
    let hole = match (&position, &*last) {
        (Some(p), Some(l)) => p.epoch != l.epoch || p.offset != l.offset + 1,
        _ => false,
    };
    if position.is_some() {
        last.clone_from(&position);
    }
    Some(Live {
        push,
        position,
        hole,
    })
}

/// What [`wrap_push`] adds to a push, and the line break between two.
const WRAP_BYTES: usize = 10;

/// Queues `batch` (oldest first) to every member of `ch`: one joined item for a
/// bidirectional client, one item per push for a unidirectional one (each push is an event
/// of its own there).
///
/// A member reading history has the pushes held in its buffer instead (at most
/// `hold_limit`; beyond that the buffer overflows and the member recovers again once
/// released). A member released with a floor skips publications at or before it (the
/// history read already gave them). A positioned member meeting a hole is told to recover
/// (through its control inbox) and gets nothing from the hole on: an offset past the hole
/// would move the client beyond publications it never had.
fn deliver(ch: &Channel, batch: &[Live], metrics: &GatewayMetrics, hold_limit: usize) {
    if batch.is_empty() {
        return;
    }
    let has_hole = batch.iter().any(|l| l.hole);
    let mut joined: Option<Arc<str>> = None;
    let mut bare: Option<Vec<Arc<str>>> = None;
    let bare_items = |batch: &[Live]| -> Vec<Arc<str>> {
        batch.iter().map(|l| Arc::from(l.push.as_str())).collect()
    };
    let mut guard = lock(&ch.members);
    let members = &mut *guard;
    let mut pushed = 0u64;
    for client in members.clients.values() {
        if let Some(buffer) = members.buffers.get_mut(&client.id) {
            let items = bare.get_or_insert_with(|| bare_items(batch));
            for (live, item) in batch.iter().zip(items.iter()) {
                if buffer.overflowed {
                    break;
                }
                if buffer.held.len() >= hold_limit {
                    buffer.overflowed = true;
                    buffer.held.clear();
                } else {
                    buffer.held.push((live.position.clone(), Arc::clone(item)));
                }
            }
            continue;
        }
        let floor = members.floors.get(&client.id);
        let recovers = has_hole && members.positioned.contains(&client.id);
        if floor.is_none() && !recovers {
            // The common case: the whole batch, shared with every other such member.
            if client.uni {
                let items = bare.get_or_insert_with(|| bare_items(batch));
                for item in items.iter() {
                    if !client.send(Arc::clone(item)) {
                        break;
                    }
                    pushed += 1;
                }
            } else {
                let item = joined.get_or_insert_with(|| {
                    join_wrapped(&batch.iter().map(|l| l.push.as_str()).collect::<Vec<_>>())
                });
                client.send(Arc::clone(item));
                pushed += batch.len() as u64;
            }
            continue;
        }
        let mut floor = floor.cloned();
        let mut chosen: Vec<usize> = Vec::with_capacity(batch.len());
        for (i, live) in batch.iter().enumerate() {
            if let (Some(f), Some(p)) = (&floor, &live.position) {
                if p.epoch == f.epoch && p.offset <= f.offset {
                    continue;
                }
                floor = None;
            }
            if recovers && live.hole {
                // The client recovers from its last offset instead.
                client.control.send(Control::Lost {
                    channel: ch.name.clone(),
                    generation: ch.generation,
                });
                break;
            }
            chosen.push(i);
        }
        if floor.is_none() {
            members.floors.remove(&client.id);
        }
        if chosen.is_empty() {
            continue;
        }
        if client.uni {
            let items = bare.get_or_insert_with(|| bare_items(batch));
            for &i in &chosen {
                if !client.send(Arc::clone(&items[i])) {
                    break;
                }
                pushed += 1;
            }
        } else {
            let pushes: Vec<&str> = chosen.iter().map(|&i| batch[i].push.as_str()).collect();
            client.send(join_wrapped(&pushes));
            pushed += chosen.len() as u64;
        }
    }
    drop(guard);
    metrics
        .messages_pushed_total
        .fetch_add(pushed, Ordering::Relaxed);
}

/// `pushes`, each wrapped for a bidirectional connection, joined by `\n`.
fn join_wrapped<S: AsRef<str>>(pushes: &[S]) -> Arc<str> {
    if let [one] = pushes {
        return Arc::from(wrap_push(one.as_ref()));
    }
    let len = pushes
        .iter()
        .map(|p| p.as_ref().len() + WRAP_BYTES)
        .sum::<usize>();
    let mut out = String::with_capacity(len);
    for (i, push) in pushes.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str("{\"push\":");
        out.push_str(push.as_ref());
        out.push('}');
    }
    Arc::from(out)
}

/// Tells every member of `ch` that its Redis subscription lost messages (`event` is a
/// lag or a lost connection; anything else is ignored).
fn lost(ch: &Channel, event: &Event, metrics: &GatewayMetrics) {
    let reason = match event {
        Event::Lagged(n) => format!("the fan-out fell behind by {n} messages"),
        Event::Disconnected { error } => format!("Redis connection lost: {error}"),
        _ => return,
    };
    tracing::warn!(channel = %ch.name, %reason, "channel lost messages; telling its subscribers");
    GatewayMetrics::inc(&metrics.channel_losses_total);
    let members = lock(&ch.members);
    for client in members.clients.values() {
        client.control.send(Control::Lost {
            channel: ch.name.clone(),
            generation: ch.generation,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::publication_push;

    #[tokio::test]
    async fn the_inbox_keeps_order_and_holds_each_distinct_message_once() {
        let inbox = Inbox::default();
        let unsubscribe = |c: &str| Control::Unsubscribe {
            channel: c.to_owned(),
        };
        inbox.send(unsubscribe("a"));
        inbox.send(unsubscribe("b"));
        inbox.send(unsubscribe("a"));
        inbox.send(Control::Lost {
            channel: "a".to_owned(),
            generation: 1,
        });
        assert_eq!(lock(&inbox.items).len(), 3);
        assert_eq!(inbox.recv().await, unsubscribe("a"));
        assert_eq!(inbox.recv().await, unsubscribe("b"));
        assert!(matches!(
            inbox.recv().await,
            Control::Lost { generation: 1, .. }
        ));
        // Once taken, the same message may come again.
        inbox.send(unsubscribe("a"));
        assert_eq!(inbox.recv().await, unsubscribe("a"));
        let waiting = tokio::time::timeout(Duration::from_millis(20), inbox.recv()).await;
        assert!(waiting.is_err(), "an empty inbox gave {waiting:?}");
    }

    #[test]
    fn waiting_publications_become_one_item_of_wrapped_pushes() {
        let pushes = vec![
            publication_push("c", b"1"),
            publication_push("c", b"{\"a\":2}"),
        ];
        let joined = join_wrapped(&pushes);
        let lines: Vec<serde_json::Value> = joined
            .split('\n')
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                serde_json::json!({"push": {"channel": "c", "pub": {"data": 1}}}),
                serde_json::json!({"push": {"channel": "c", "pub": {"data": {"a": 2}}}}),
            ]
        );
        assert!(joined.len() <= pushes.iter().map(|p| p.len() + WRAP_BYTES).sum());
        assert_eq!(&*join_wrapped(&pushes[..1]), wrap_push(&pushes[0]));
    }

    fn channel() -> Channel {
        Channel {
            name: "c".to_owned(),
            redis: "c".to_owned(),
            companion: None,
            generation: 1,
            members: Mutex::new(Members {
                clients: HashMap::new(),
                pending: 0,
                buffers: HashMap::new(),
                positioned: HashSet::new(),
                floors: HashMap::new(),
            }),
            sub: tokio::sync::Mutex::new(None),
            last_failure: Mutex::new(None),
        }
    }

    fn member(ch: &Channel, uni: bool, metrics: &Arc<GatewayMetrics>) -> Arc<Client> {
        let client = Client::new(uni, 10, 10_000, Arc::clone(metrics));
        client.queue.release(None, false);
        lock(&ch.members)
            .clients
            .insert(client.id, Arc::clone(&client));
        client
    }

    fn queued(client: &Client) -> Vec<String> {
        match client.queue.try_next_for_test() {
            Some(items) => items.iter().map(|i| i.to_string()).collect(),
            None => Vec::new(),
        }
    }

    fn at(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.to_owned(),
        }
    }

    #[test]
    fn a_publication_reaches_bidirectional_members_joined_and_unidirectional_ones_apart() {
        let metrics = Arc::new(GatewayMetrics::default());
        let ch = channel();
        let bi = member(&ch, false, &metrics);
        let uni = member(&ch, true, &metrics);
        let pushes = vec![publication_push("c", b"1"), publication_push("c", b"2")];
        let batch: Vec<Live> = pushes
            .iter()
            .map(|p| Live {
                push: p.clone(),
                position: None,
                hole: false,
            })
            .collect();
        deliver(&ch, &batch, &metrics, 10);
        assert_eq!(queued(&bi), [join_wrapped(&pushes).to_string()]);
        assert_eq!(queued(&uni), pushes);
        assert_eq!(metrics.messages_pushed_total.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_joined_batch_is_held_for_recovering_members_cut_at_floors_and_stopped_at_holes() {
        let metrics = Arc::new(GatewayMetrics::default());
        let ch = channel();
        let direct = member(&ch, false, &metrics);
        let held = member(&ch, false, &metrics);
        let floored = member(&ch, true, &metrics);
        let positioned = member(&ch, false, &metrics);
        {
            let mut members = lock(&ch.members);
            members.buffers.insert(held.id, Buffer::default());
            members.floors.insert(floored.id, at(2, "e"));
            members.positioned.insert(positioned.id);
        }
        let mut last = Some(at(0, "e"));
        let batch: Vec<Live> = [1, 2, 3, 5, 6]
            .iter()
            .map(|&n| {
                let bytes = pubsub_hub::LiveEnvelope::encode(
                    &pubsub_hub::history::StreamPosition {
                        offset: n,
                        epoch: "e".to_owned(),
                    },
                    format!("{n}").as_bytes(),
                );
                live(&ch, "c", &bytes, &mut last).unwrap()
            })
            .collect();
        assert_eq!(
            batch.iter().map(|l| l.hole).collect::<Vec<_>>(),
            [false, false, false, true, false]
        );
        assert_eq!(last, Some(at(6, "e")));
        deliver(&ch, &batch, &metrics, 10);
        let pushes: Vec<&str> = batch.iter().map(|l| l.push.as_str()).collect();
        assert_eq!(queued(&direct), [join_wrapped(&pushes).to_string()]);
        assert!(queued(&held).is_empty());
        let members = lock(&ch.members);
        let kept: Vec<_> = members.buffers[&held.id]
            .held
            .iter()
            .map(|(p, _)| p.as_ref().unwrap().offset)
            .collect();
        assert_eq!(kept, [1, 2, 3, 5, 6]);
        assert_eq!(queued(&floored), pushes[2..]);
        assert!(!members.floors.contains_key(&floored.id));
        assert_eq!(
            queued(&positioned),
            [join_wrapped(&pushes[..3]).to_string()]
        );
        drop(members);
        let control = lock(&positioned.control.items).pop_front();
        assert_eq!(
            control,
            Some(Control::Lost {
                channel: "c".to_owned(),
                generation: 1
            })
        );
        assert!(lock(&direct.control.items).is_empty());
    }
}

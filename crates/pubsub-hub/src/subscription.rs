//! Named subscriptions: ring buffer, counters, status and consumers.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use futures_util::future::{BoxFuture, Shared};
use futures_util::{FutureExt, Stream};
use serde::Serialize;

use crate::config::HubConfig;
use crate::links::Link;
use crate::message::{PAYLOAD_PREVIEW_BYTES, ReceivedMessage, now_ms};
use crate::queue::EventQueue;
use crate::stats::HubCounters;

/// What a subscription asks of the hub that made it; the hub implements it, so this module
/// needs nothing from the hub's.
pub(crate) trait Owner: Send + Sync {
    /// Removes `sub` from the registry if it is the one registered under its name.
    fn forget(&self, sub: &Subscription);
    /// Keeps the release of a closed subscription until it is done, so that the hub can
    /// wait for it even when the closer went away.
    fn retire(&self, released: Released);
}

/// What a subscription listens to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TargetKind {
    /// Exact channel names (`SUBSCRIBE`).
    Channel,
    /// Glob patterns (`PSUBSCRIBE`): `*`, `?`, `[abc]`.
    Pattern,
    /// Shard channels (`SSUBSCRIBE`, Redis 7+): exact names that live on the master owning
    /// their hash slot and receive only `SPUBLISH`.
    Shard,
}

impl TargetKind {
    /// The lowercase name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Channel => "channel",
            TargetKind::Pattern => "pattern",
            TargetKind::Shard => "shard",
        }
    }
}

/// Whether a subscription is receiving right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SubscriptionStatus {
    /// Subscribed on a working connection; messages are arriving.
    Live,
    /// The connection was lost; the hub is reconnecting. Messages published meanwhile are lost
    /// (pub/sub is at-most-once).
    Reconnecting {
        /// Unix ms when the connection was lost.
        since_ms: u64,
        /// Failed reconnect attempts so far.
        attempts: u32,
        /// Why the connection was lost, or why the last attempt failed.
        last_error: String,
    },
    /// Closed by `close`, `unsubscribe` or `shutdown`. Final.
    Closed,
}

impl SubscriptionStatus {
    /// `live`, `reconnecting` or `closed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SubscriptionStatus::Live => "live",
            SubscriptionStatus::Reconnecting { .. } => "reconnecting",
            SubscriptionStatus::Closed => "closed",
        }
    }
}

/// One window in which a subscription was not subscribed on Redis, so that messages
/// published to its targets then were lost for it (pub/sub is at-most-once).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gap {
    /// Unix ms when the connection was lost (the `since_ms` its status showed).
    pub started_at_ms: u64,
    /// Unix ms when every target was subscribed again; `None` while the gap lasts.
    pub ended_at_ms: Option<u64>,
    /// Why the connection was lost, as the link saw it (no credentials).
    pub error: String,
}

/// A subscription's delivery gaps so far, recorded when its links open and close them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GapHistory {
    /// Gaps opened so far, the one in progress included.
    pub total: u64,
    /// The gap in progress, else the newest finished one; `None` before the first.
    pub last: Option<Gap>,
}

impl GapHistory {
    /// True while a gap is in progress.
    pub fn is_open(&self) -> bool {
        self.last.as_ref().is_some_and(|g| g.ended_at_ms.is_none())
    }

    /// Opens a gap at `since_ms`.
    fn open(&mut self, since_ms: u64, error: String) {
        self.total += 1;
        self.last = Some(Gap {
            started_at_ms: since_ms,
            ended_at_ms: None,
            error,
        });
    }

    /// Closes the gap in progress at `at_ms`.
    fn close(&mut self, at_ms: u64) {
        if let Some(gap) = self.last.as_mut().filter(|g| g.ended_at_ms.is_none()) {
            gap.ended_at_ms = Some(at_ms.max(gap.started_at_ms));
        }
    }
}

/// What a [`Consumer`] receives.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A message delivered by Redis.
    Message(Arc<ReceivedMessage>),
    /// This consumer fell behind by more than its queue holds (in events or in bytes); this
    /// many messages were dropped for it at this place in the stream (the oldest ones it had
    /// not read). Only messages are dropped: connection events always arrive, in order. The
    /// subscription's dropped counter went up by the same number when they were dropped.
    Lagged(u64),
    /// The Redis connection was lost. Messages published until [`Event::Reconnected`] are
    /// not delivered.
    Disconnected {
        /// Why the connection was lost.
        error: String,
    },
    /// The connection is back and every target is subscribed again.
    Reconnected,
}

/// One named subscriber: its targets, its recent messages and its counters.
///
/// Obtained from [`PubSubHub::subscribe`](crate::PubSubHub::subscribe) and friends.
pub struct Subscription {
    /// Hub-unique id; links route and detach by it.
    pub(crate) id: u64,
    name: String,
    targets: Vec<String>,
    kind: TargetKind,
    created_at_ms: u64,
    buffer_size: usize,
    /// Payload bytes the ring buffer may hold (a larger message is kept as a preview).
    buffer_max_bytes: usize,
    /// Bounds of each consumer's queue, in events and in payload bytes.
    queue_capacity: usize,
    queue_max_bytes: usize,
    /// The ring buffer and the event queue share one lock so a message is pushed to both
    /// in one step.
    state: Mutex<SubState>,
    received: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    closed: AtomicBool,
    /// The subscriber connections this subscription's targets live on; its status is theirs.
    links: OnceLock<Vec<Arc<Link>>>,
    /// Set by the first close: resolves once every link has let go of this subscription's
    /// targets. Every later close (and the hub's shutdown) waits on the same future, so a
    /// close whose caller gave up is still finished, and still awaited, by the next one.
    released: OnceLock<Released>,
    /// To remove itself from the registry on `close()`.
    hub: Weak<dyn Owner>,
    counters: Arc<HubCounters>,
}

/// Resolves once a closed subscription's links have released its targets on Redis.
pub(crate) type Released = Shared<BoxFuture<'static, ()>>;

struct SubState {
    buffer: VecDeque<Arc<ReceivedMessage>>,
    /// Payload bytes held by `buffer` (a preview counts what it keeps); also added to the
    /// hub's `buffered_bytes` gauge.
    buffer_bytes: usize,
    /// One queue per live consumer; a queue whose consumer was dropped is pruned on the
    /// next delivery.
    consumers: Vec<Arc<EventQueue>>,
    /// Set by `close`: consumers made afterwards end at once.
    closed: bool,
    /// Links that reported `Disconnected` and have not reported `Reconnected` yet.
    links_down: u32,
    /// Gaps as consumers see them: opened by the first link to go down, closed by the last
    /// to come back. Kept under the same lock as `links_down`, so it cannot disagree.
    gaps: GapHistory,
}

impl SubState {
    /// Pushes `event` to every live consumer; returns how many messages were dropped for
    /// consumers that were full.
    fn push(&mut self, event: &Event) -> u64 {
        self.consumers.retain(|q| Arc::strong_count(q) > 1);
        self.consumers.iter().map(|q| q.push(event.clone())).sum()
    }
}

impl Subscription {
    pub(crate) fn new(
        id: u64,
        name: String,
        targets: Vec<String>,
        kind: TargetKind,
        config: &HubConfig,
        hub: Weak<dyn Owner>,
        counters: Arc<HubCounters>,
    ) -> Self {
        let buffer_size = config.buffer_size;
        Subscription {
            id,
            name,
            targets,
            kind,
            created_at_ms: now_ms(),
            buffer_size,
            buffer_max_bytes: config.buffer_max_bytes,
            queue_capacity: config.queue_capacity.max(1),
            queue_max_bytes: config.queue_max_bytes.max(1),
            state: Mutex::new(SubState {
                buffer: VecDeque::with_capacity(buffer_size.min(64)),
                buffer_bytes: 0,
                consumers: Vec::new(),
                closed: false,
                links_down: 0,
                gaps: GapHistory::default(),
            }),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            links: OnceLock::new(),
            released: OnceLock::new(),
            hub,
            counters,
        }
    }

    pub(crate) fn set_links(&self, links: Vec<Arc<Link>>) {
        let _ = self.links.set(links);
    }

    pub(crate) fn links(&self) -> &[Arc<Link>] {
        self.links.get().map(Vec::as_slice).unwrap_or(&[])
    }

    /// The subscriber's name, unique within its hub.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The channels or patterns it listens to, as given (duplicates removed).
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// Channel, pattern or shard channel.
    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// True for a pattern (`PSUBSCRIBE`) subscription.
    pub fn is_pattern(&self) -> bool {
        self.kind == TargetKind::Pattern
    }

    /// Unix ms when it was created.
    pub fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }

    /// Messages received over its lifetime (never goes down).
    pub fn received_total(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Messages dropped for its consumers because they fell behind (connection events are
    /// never dropped).
    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Times it recovered after a connection loss (once per gap, however many of its
    /// connections the gap took).
    pub fn reconnects_total(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// The newest messages first, at most `limit` (default: the whole ring buffer).
    pub fn messages(&self, limit: Option<usize>) -> Vec<Arc<ReceivedMessage>> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let n = limit.unwrap_or(usize::MAX).min(st.buffer.len());
        st.buffer.iter().take(n).cloned().collect()
    }

    /// Live, reconnecting (since when, how many attempts) or closed.
    pub fn status(&self) -> SubscriptionStatus {
        if self.closed.load(Ordering::Acquire) {
            return SubscriptionStatus::Closed;
        }
        for link in self.links() {
            match link.status_for(self.id) {
                SubscriptionStatus::Live => {}
                other => return other,
            }
        }
        SubscriptionStatus::Live
    }

    /// Its delivery gaps so far: how many, and the last one's start, end and error. They are
    /// recorded when its links report them, so even a gap shorter than any polling
    /// interval is here with its times.
    pub fn gaps(&self) -> GapHistory {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .gaps
            .clone()
    }

    /// True only while it is subscribed on a working connection.
    pub fn is_alive(&self) -> bool {
        self.status() == SubscriptionStatus::Live
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A new consumer that receives every event from now on, with its own bounded queue
    /// (`HubConfig::queue_capacity`). A closed subscription yields a consumer that ends at once.
    pub fn consumer(self: &Arc<Self>) -> Consumer {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let queue = if st.closed {
            Arc::new(EventQueue::closed())
        } else {
            let queue = Arc::new(EventQueue::new(
                self.queue_capacity,
                self.queue_max_bytes,
                Arc::clone(&self.counters.queued_bytes),
            ));
            st.consumers.push(Arc::clone(&queue));
            queue
        };
        Consumer {
            queue,
            sub: Arc::clone(self),
        }
    }

    /// Runs `handler` for every event on its own task, so slow work never holds up the
    /// socket reader. The task ends when the subscription closes.
    pub fn spawn_handler<F, Fut>(self: &Arc<Self>, mut handler: F) -> tokio::task::JoinHandle<()>
    where
        F: FnMut(Event) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut consumer = self.consumer();
        tokio::spawn(async move {
            while let Some(event) = consumer.recv().await {
                handler(event).await;
            }
        })
    }

    /// Closes the subscription: its targets are unsubscribed (Redis releases them before
    /// this returns), consumers see the end of their stream, and the name becomes free.
    /// Closing twice is harmless.
    ///
    /// # Cancel safety
    /// Everything but the wait happens at the first poll: the name is freed, consumers
    /// are ended and the links are told to release the targets. A future dropped after
    /// that leaves the release to finish in the links' tasks; a later `close` (or the hub's
    /// `shutdown`) waits for the same release. A future dropped before its first poll does
    /// nothing.
    pub async fn close(&self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.forget(self);
        }
        self.close_links().await;
    }

    /// Detaches from every link and ends the event stream, without touching the registry;
    /// returns once Redis has released the targets.
    pub(crate) async fn close_links(&self) {
        self.begin_close().await;
    }

    /// Starts closing, without waiting: marks the subscription closed, asks each link to
    /// release its targets, ends the consumers' streams (what they have queued can still be
    /// read) and returns the future of the release. Later calls return the same future.
    /// Used where a future may be dropped: nothing here can be left half-done.
    pub(crate) fn begin_close(&self) -> Released {
        let mut first = false;
        let released = self
            .released
            .get_or_init(|| {
                first = true;
                self.closed.store(true, Ordering::Release);
                let replies: Vec<_> = self
                    .links()
                    .iter()
                    .map(|link| link.request_detach(self.id))
                    .collect();
                async move {
                    for reply in replies {
                        let _ = reply.await;
                    }
                }
                .boxed()
                .shared()
            })
            .clone();
        if first {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.closed = true;
            for queue in std::mem::take(&mut st.consumers) {
                queue.close();
            }
            drop(st);
            if let Some(hub) = self.hub.upgrade() {
                hub.retire(released.clone());
            }
            self.counters.touch();
        }
        released
    }

    /// Tells its links to stop without waiting (used when the hub is dropped).
    pub(crate) fn abandon(&self) {
        self.closed.store(true, Ordering::Release);
        for link in self.links() {
            link.abandon();
        }
    }

    /// Called by the link's reader for each message routed here. Never waits.
    pub(crate) fn deliver(&self, message: &Arc<ReceivedMessage>) {
        // Counted first, so a consumer that has the message also sees it counted.
        self.received.fetch_add(1, Ordering::Relaxed);
        self.counters.received_total.fetch_add(1, Ordering::Relaxed);
        // A message larger than the ring's whole byte budget is kept there as a preview (its
        // start and true size), so one huge message cannot hold more than the budget;
        // consumers still get it whole. Made before locking: finding its encoding reads the
        // whole payload.
        let kept = (self.buffer_size > 0).then(|| {
            if message.payload.as_bytes().len() > self.buffer_max_bytes {
                Arc::new(message.preview(PAYLOAD_PREVIEW_BYTES.min(self.buffer_max_bytes)))
            } else {
                Arc::clone(message)
            }
        });
        let dropped = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(kept) = kept {
                self.keep(&mut st, kept);
            }
            // The hub's version moves before a consumer can have the message, so one that
            // has it and then reads the hub (the dashboard's `/state`, cached per version)
            // never gets a reading from before it.
            self.counters.touch();
            st.push(&Event::Message(Arc::clone(message)))
        };
        self.record_dropped(dropped);
    }

    /// Puts `kept` into the ring buffer and drops the oldest messages beyond its bounds.
    fn keep(&self, st: &mut SubState, kept: Arc<ReceivedMessage>) {
        let added = kept.payload.as_bytes().len();
        let mut removed = 0;
        st.buffer_bytes += added;
        st.buffer.push_front(kept);
        while st.buffer.len() > self.buffer_size
            || (st.buffer_bytes > self.buffer_max_bytes && st.buffer.len() > 1)
        {
            if let Some(old) = st.buffer.pop_back() {
                let size = old.payload.as_bytes().len();
                st.buffer_bytes -= size;
                removed += size;
            }
        }
        let gauge = &self.counters.buffered_bytes;
        if added >= removed {
            gauge.fetch_add((added - removed) as u64, Ordering::Relaxed);
        } else {
            gauge.fetch_sub((removed - added) as u64, Ordering::Relaxed);
        }
    }

    /// Tells consumers about a connection event from one of its links; counts reconnects
    /// and records the gap ([`Subscription::gaps`]). `since_ms` is when the link lost its
    /// connection (its status's `since_ms`); it matters for `Disconnected` only.
    ///
    /// A subscription whose targets live on several links (shared mode, shard channels on
    /// several masters) hears from each of them, but its consumers see one gap: the first
    /// `Disconnected` opens it and the `Reconnected` of the last link to come back closes
    /// it, which is also when the reconnect is counted.
    pub(crate) fn notify(&self, event: Event, since_ms: u64) {
        let dropped = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let forward = match event {
                Event::Disconnected { .. } => {
                    st.links_down += 1;
                    st.links_down == 1
                }
                Event::Reconnected if st.links_down == 0 => false,
                Event::Reconnected => {
                    st.links_down -= 1;
                    st.links_down == 0
                }
                _ => true,
            };
            if !forward {
                return;
            }
            match &event {
                Event::Disconnected { error } => st.gaps.open(since_ms, error.clone()),
                Event::Reconnected => st.gaps.close(now_ms()),
                _ => {}
            }
            if matches!(event, Event::Reconnected) {
                self.reconnects.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .reconnects_total
                    .fetch_add(1, Ordering::Relaxed);
            }
            st.push(&event)
        };
        self.record_dropped(dropped);
        // The gap history changed: whoever watches the hub's version sees it (the link
        // touched it for the status already, but before this was recorded).
        self.counters.touch();
    }

    fn record_dropped(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.counters.dropped_total.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let bytes = self
            .state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .buffer_bytes;
        self.counters
            .buffered_bytes
            .fetch_sub(bytes as u64, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("targets", &self.targets)
            .field("status", &self.status())
            .field("received_total", &self.received_total())
            .finish()
    }
}

/// Reads a subscription's events in order, with an explicit [`Event::Lagged`] when it falls
/// behind. The socket reader never waits for a consumer.
///
/// ```no_run
/// # async fn f(sub: std::sync::Arc<pubsub_hub::Subscription>) {
/// use pubsub_hub::Event;
/// let mut consumer = sub.consumer();
/// while let Some(event) = consumer.recv().await {
///     match event {
///         Event::Message(m) => println!("{} {}", m.channel, m.payload),
///         Event::Lagged(n) => eprintln!("missed {n} events"),
///         Event::Disconnected { error } => eprintln!("gap started: {error}"),
///         Event::Reconnected => eprintln!("gap ended"),
///         _ => {}
///     }
/// }
/// # }
/// ```
pub struct Consumer {
    queue: Arc<EventQueue>,
    sub: Arc<Subscription>,
}

impl Consumer {
    /// The next event; `None` once the subscription is closed and every queued event read.
    ///
    /// # Cancel safety
    /// Cancel safe: an event leaves the queue only when `recv` returns it, so a dropped
    /// `recv` (a `select!` branch that lost) loses nothing.
    pub async fn recv(&mut self) -> Option<Event> {
        self.queue.pop().await
    }

    /// The next event if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.queue.try_pop().ok()
    }

    /// The subscription this consumer reads.
    pub fn subscription(&self) -> &Arc<Subscription> {
        &self.sub
    }

    /// The consumer as a `Stream` of events.
    pub fn into_stream(self) -> impl Stream<Item = Event> + Send + 'static {
        futures_util::stream::unfold(self, |mut c| async move {
            let event = c.recv().await?;
            Some((event, c))
        })
    }
}

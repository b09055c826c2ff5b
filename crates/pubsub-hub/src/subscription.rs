//! Named subscriptions: ring buffer, counters, status and consumers.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use futures_util::Stream;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::HubConfig;
use crate::hub::{HubCounters, HubInner};
use crate::link::Link;
use crate::message::{ReceivedMessage, now_ms};
use crate::queue::EventQueue;

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

/// What a [`Consumer`] receives.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A message delivered by Redis.
    Message(Arc<ReceivedMessage>),
    /// This consumer fell behind by more than its queue holds; this many events (the oldest
    /// ones it had not read) were dropped for it. The subscription's dropped counter went up
    /// by the same number when they were dropped.
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
    /// Payload bytes the ring buffer may hold (its newest message always stays).
    buffer_max_bytes: usize,
    /// Bound of each consumer's queue.
    queue_capacity: usize,
    /// The ring buffer and the event queue share one lock so a message is pushed to both
    /// in one step.
    state: Mutex<SubState>,
    received: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    closed: AtomicBool,
    /// The subscriber connections this subscription's targets live on; its status is theirs.
    links: OnceLock<Vec<Arc<Link>>>,
    /// To remove itself from the registry on `close()`.
    hub: Weak<HubInner>,
    counters: Arc<HubCounters>,
}

struct SubState {
    buffer: VecDeque<Arc<ReceivedMessage>>,
    /// Payload bytes in `buffer`.
    buffer_bytes: usize,
    /// One queue per live consumer; a queue whose consumer was dropped is pruned on the
    /// next delivery.
    consumers: Vec<Arc<EventQueue>>,
    /// Set by `close`: consumers made afterwards end at once.
    closed: bool,
    /// Links that reported `Disconnected` and have not reported `Reconnected` yet.
    links_down: u32,
}

impl SubState {
    /// Pushes `event` to every live consumer; returns how many events were dropped for
    /// consumers that were full.
    fn push(&mut self, event: &Event) -> u64 {
        self.consumers.retain(|q| Arc::strong_count(q) > 1);
        self.consumers
            .iter()
            .map(|q| u64::from(q.push(event.clone())))
            .sum()
    }
}

impl Subscription {
    pub(crate) fn new(
        id: u64,
        name: String,
        targets: Vec<String>,
        kind: TargetKind,
        config: &HubConfig,
        hub: Weak<HubInner>,
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
            state: Mutex::new(SubState {
                buffer: VecDeque::with_capacity(buffer_size.min(64)),
                buffer_bytes: 0,
                consumers: Vec::new(),
                closed: false,
                links_down: 0,
            }),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            links: OnceLock::new(),
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

    /// Events dropped for its consumers because they fell behind.
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
            let queue = Arc::new(EventQueue::new(self.queue_capacity));
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
    pub async fn close(&self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.forget(self);
        }
        self.close_links().await;
    }

    /// Detaches from every link and ends the event stream, without touching the registry.
    pub(crate) async fn close_links(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let detaches = self.links().iter().map(|link| link.detach(self.id));
        futures_util::future::join_all(detaches).await;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.closed = true;
        for queue in std::mem::take(&mut st.consumers) {
            queue.close();
        }
    }

    /// The subscription as the dashboard shows it: the contract's `name`, `targets`,
    /// `is_pattern`, `received_total`, `alive`, `messages` (newest first, at most
    /// `message_limit`), plus `kind`, `status`, `dropped_total` and `reconnects_total`.
    pub fn to_json(&self, message_limit: usize) -> Value {
        let messages: Vec<Value> = self
            .messages(Some(message_limit))
            .iter()
            .map(|m| m.to_json())
            .collect();
        let status = self.status();
        json!({
            "name": self.name,
            "targets": self.targets,
            "is_pattern": self.is_pattern(),
            "kind": self.kind,
            "received_total": self.received_total(),
            "alive": status == SubscriptionStatus::Live,
            "status": status,
            "dropped_total": self.dropped_total(),
            "reconnects_total": self.reconnects_total(),
            "messages": messages,
        })
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
        let dropped = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if self.buffer_size > 0 {
                st.buffer_bytes += message.payload.len();
                st.buffer.push_front(Arc::clone(message));
                while st.buffer.len() > self.buffer_size
                    || (st.buffer_bytes > self.buffer_max_bytes && st.buffer.len() > 1)
                {
                    if let Some(old) = st.buffer.pop_back() {
                        st.buffer_bytes -= old.payload.len();
                    }
                }
            }
            st.push(&Event::Message(Arc::clone(message)))
        };
        self.record_dropped(dropped);
    }

    /// Tells consumers about a connection event from one of its links; counts reconnects.
    ///
    /// A subscription whose targets live on several links (shared mode, shard channels on
    /// several masters) hears from each of them, but its consumers see one gap: the first
    /// `Disconnected` opens it and the `Reconnected` of the last link to come back closes
    /// it, which is also when the reconnect is counted.
    pub(crate) fn notify(&self, event: Event) {
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
            if matches!(event, Event::Reconnected) {
                self.reconnects.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .reconnects_total
                    .fetch_add(1, Ordering::Relaxed);
            }
            st.push(&event)
        };
        self.record_dropped(dropped);
    }

    fn record_dropped(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.counters.dropped_total.fetch_add(n, Ordering::Relaxed);
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

//! What the scenarios share: the variants under test, a closed-loop publisher, and the
//! receivers (a hub's consumers, one raw `redis::aio::PubSub` each, or one fred client
//! each).
//!
//! Hub and raw go through the same code here, so the only difference a row measures is the
//! hub's own work.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, EventInterface, PubsubInterface};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use pubsub_hub::{ConnectionMode, Event, HubConfig, PubSubHub};
use redis::aio::MultiplexedConnection;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::error::BenchError;

/// Connections of the shared-mode variant.
pub const SHARED_CONNECTIONS: usize = 4;

/// What is being measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// redis-rs alone: `MultiplexedConnection` to publish, one `aio::PubSub` per subscriber.
    Raw,
    /// The hub in its default mode: one Redis connection per subscription.
    Dedicated,
    /// The hub with `ConnectionMode::Shared { connections: 4 }`.
    Shared,
    /// fred, the other Rust Redis client: one client to publish (auto-pipelined), one
    /// client per subscriber, each read through its message stream.
    Fred,
}

impl Variant {
    /// The label used in the results.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Raw => "raw redis-rs",
            Variant::Dedicated => "hub (dedicated)",
            Variant::Shared => "hub (shared x4)",
            Variant::Fred => "fred",
        }
    }

    /// The hub configuration of a hub variant.
    pub fn hub_config(self) -> HubConfig {
        match self {
            Variant::Shared => HubConfig::default().with_mode(ConnectionMode::Shared {
                connections: SHARED_CONNECTIONS,
            }),
            _ => HubConfig::default(),
        }
    }

    /// `raw`, `dedicated`, `shared` (the worker's `--variant`).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Raw => "raw",
            Variant::Dedicated => "dedicated",
            Variant::Shared => "shared",
            Variant::Fred => "fred",
        }
    }

    /// True for the two hub variants.
    pub fn is_hub(self) -> bool {
        matches!(self, Variant::Dedicated | Variant::Shared)
    }

    /// Parses [`Variant::name`] (the memory worker's variants: raw and the hub's).
    pub fn from_name(name: &str) -> Option<Variant> {
        [Variant::Raw, Variant::Dedicated, Variant::Shared]
            .into_iter()
            .find(|v| v.name() == name)
    }
}

/// The order of the variants in round `round`: rotated each round so that none always
/// runs first (on a warming or drifting machine, first is not neutral).
pub fn rotation(variants: &[Variant], round: usize) -> Vec<Variant> {
    let mut v = variants.to_vec();
    if !v.is_empty() {
        let k = round % v.len();
        v.rotate_left(k);
    }
    v
}

/// Connects a hub for `variant` on `client`.
pub async fn hub(client: redis::Client, variant: Variant) -> Result<PubSubHub, BenchError> {
    PubSubHub::with_config(client, variant.hub_config())
        .await
        .map_err(|e| BenchError::new(format!("hub: {e}")))
}

/// How many messages a fred subscriber's stream holds before it reports a lag: the hub's
/// default consumer queue bound, so that both may fall behind by as much.
pub const FRED_STREAM_CAPACITY: usize = pubsub_hub::DEFAULT_QUEUE_CAPACITY;

/// A connected fred client for the server `client` points at (loopback TCP).
pub async fn fred_client(client: &redis::Client) -> Result<fred::clients::Client, BenchError> {
    let port = match client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(_, port) => *port,
        other => return Err(BenchError::new(format!("fred: not a TCP address: {other}"))),
    };
    let config = fred::prelude::Config::from_url(&format!("redis://127.0.0.1:{port}"))
        .map_err(|e| BenchError::new(format!("fred config: {e}")))?;
    let fred = fred::prelude::Builder::from_config(config)
        .with_performance_config(|p| p.broadcast_channel_capacity = FRED_STREAM_CAPACITY)
        .build()
        .map_err(|e| BenchError::new(format!("fred client: {e}")))?;
    fred.init()
        .await
        .map_err(|e| BenchError::new(format!("fred connect: {e}")))?;
    Ok(fred)
}

/// Something that can PUBLISH.
#[derive(Clone)]
pub enum Publisher {
    /// Through [`PubSubHub::publish_bytes`].
    Hub(PubSubHub),
    /// Straight on a redis-rs multiplexed connection.
    Raw(MultiplexedConnection),
    /// On a fred client.
    Fred(fred::clients::Client),
}

impl Publisher {
    /// One PUBLISH; Redis' receiver count.
    pub async fn publish(&mut self, channel: &str, payload: &[u8]) -> Result<i64, String> {
        match self {
            Publisher::Hub(hub) => hub
                .publish_bytes(channel, payload)
                .await
                .map_err(|e| e.to_string()),
            Publisher::Raw(conn) => redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(conn)
                .await
                .map_err(|e| e.to_string()),
            Publisher::Fred(fred) => fred
                .publish::<i64, _, _>(channel, payload.to_vec())
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// A closed-loop publish run: `in_flight` tasks each publish, wait for the answer, and
/// publish again, until `total` publishes or `max` time. Returns (publishes, elapsed).
pub async fn closed_loop(
    publisher: &Publisher,
    channel: &str,
    payload: &[u8],
    total: u64,
    in_flight: usize,
    max: Duration,
) -> Result<(u64, Duration), BenchError> {
    let remaining = Arc::new(AtomicI64::new(total as i64));
    let start = Instant::now();
    let deadline = start + max;
    let mut tasks = JoinSet::new();
    for _ in 0..in_flight.max(1) {
        let mut p = publisher.clone();
        let remaining = Arc::clone(&remaining);
        let channel = channel.to_owned();
        let payload = payload.to_vec();
        tasks.spawn(async move {
            let mut done = 0u64;
            while remaining.fetch_sub(1, Ordering::Relaxed) > 0 {
                if Instant::now() >= deadline {
                    break;
                }
                p.publish(&channel, &payload).await?;
                done += 1;
            }
            Ok::<u64, String>(done)
        });
    }
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        done += joined
            .map_err(|e| BenchError::new(format!("publisher task: {e}")))?
            .map_err(|e| BenchError::new(format!("PUBLISH: {e}")))?;
    }
    Ok((done, start.elapsed()))
}

/// Counts receivers that have everything, and wakes the waiter when all have.
#[derive(Debug)]
pub struct Completion {
    remaining: AtomicUsize,
    all_done: Notify,
}

impl Completion {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Completion {
            remaining: AtomicUsize::new(n),
            all_done: Notify::new(),
        })
    }

    fn arrive(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_done.notify_one();
        }
    }

    /// Waits until every receiver has arrived or `timeout` passes; true if all arrived.
    pub async fn wait(&self, timeout: Duration) -> bool {
        if self.remaining.load(Ordering::Acquire) == 0 {
            return true;
        }
        tokio::time::timeout(timeout, self.all_done.notified())
            .await
            .is_ok()
            || self.remaining.load(Ordering::Acquire) == 0
    }
}

/// What each receiver does with a payload.
#[derive(Clone, Copy, Debug)]
pub enum Recording {
    /// Count only.
    Count,
    /// Decode a [`stamp`] and record the latency in microseconds (after `warmup` messages).
    Latency {
        /// Clock origin shared with the publisher.
        base: Instant,
        /// Messages with a lower sequence number are not recorded.
        warmup: u64,
    },
}

/// What one receiver saw.
#[derive(Debug)]
pub struct ReceiverStats {
    /// Messages received.
    pub received: u64,
    /// Messages the hub reported dropped for this consumer (`Event::Lagged`).
    pub lost: u64,
    /// Latencies in microseconds, with [`Recording::Latency`].
    pub histogram: Histogram<u64>,
}

/// A new histogram for latencies in microseconds: 1 µs to 60 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

struct ReceiverState {
    expected: u64,
    recording: Recording,
    stats: ReceiverStats,
}

impl ReceiverState {
    fn new(expected: u64, recording: Recording) -> Self {
        ReceiverState {
            expected,
            recording,
            stats: ReceiverStats {
                received: 0,
                lost: 0,
                histogram: latency_histogram(),
            },
        }
    }

    /// Records one payload; true once everything expected has arrived (or was lost).
    fn on_payload(&mut self, payload: &[u8]) -> bool {
        self.stats.received += 1;
        if let Recording::Latency { base, warmup } = self.recording
            && let Some((seq, sent_ns)) = unstamp(payload)
            && seq >= warmup
        {
            let now_ns = base.elapsed().as_nanos() as u64;
            let micros = now_ns.saturating_sub(sent_ns) / 1_000;
            self.stats.histogram.saturating_record(micros.max(1));
        }
        self.is_complete()
    }

    fn on_lost(&mut self, n: u64) -> bool {
        self.stats.lost += n;
        self.is_complete()
    }

    fn is_complete(&self) -> bool {
        self.stats.received + self.stats.lost >= self.expected
    }
}

/// `seq` and the send time in nanoseconds since the shared base, padded to `len` bytes.
pub fn stamp(seq: u64, sent_ns: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(16));
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&sent_ns.to_le_bytes());
    v.resize(len.max(16), b'.');
    v
}

/// The inverse of [`stamp`].
pub fn unstamp(payload: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    let ns = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((seq, ns))
}

/// `subscribers` receivers on `channel`, each in its own task.
pub struct Receivers {
    hub: Option<PubSubHub>,
    freds: Vec<fred::clients::Client>,
    tasks: Vec<tokio::task::JoinHandle<ReceiverStats>>,
    stop: watch::Sender<bool>,
    completion: Arc<Completion>,
}

impl Receivers {
    /// Subscribes every receiver (each has been confirmed by Redis when this returns) and
    /// starts its task. Each expects `expected` messages.
    pub async fn start(
        variant: Variant,
        client: &redis::Client,
        subscribers: usize,
        channel: &str,
        expected: u64,
        recording: Recording,
    ) -> Result<Receivers, BenchError> {
        let (stop, _) = watch::channel(false);
        let completion = Completion::new(subscribers);
        let mut tasks = Vec::with_capacity(subscribers);
        let hub = match variant.is_hub() {
            false => None,
            true => Some(hub(client.clone(), variant).await?),
        };
        let mut freds = Vec::new();
        for i in 0..subscribers {
            let mut state = ReceiverState::new(expected, recording);
            let mut stop_rx = stop.subscribe();
            let completion = Arc::clone(&completion);
            let task = match &hub {
                None if variant == Variant::Fred => {
                    let fred = fred_client(client).await?;
                    let mut messages = fred.message_rx();
                    fred.subscribe(channel)
                        .await
                        .map_err(|e| BenchError::new(format!("fred SUBSCRIBE: {e}")))?;
                    freds.push(fred);
                    tokio::spawn(async move {
                        use tokio::sync::broadcast::error::RecvError;
                        loop {
                            let complete = tokio::select! {
                                biased;
                                _ = stop_rx.changed() => break,
                                m = messages.recv() => match m {
                                    Ok(m) => state.on_payload(m.value.as_bytes().unwrap_or_default()),
                                    Err(RecvError::Lagged(n)) => state.on_lost(n),
                                    Err(RecvError::Closed) => break,
                                },
                            };
                            if complete {
                                completion.arrive();
                                break;
                            }
                        }
                        state.stats
                    })
                }
                None => {
                    let mut pubsub = client
                        .get_async_pubsub()
                        .await
                        .map_err(|e| BenchError::new(format!("raw subscriber: {e}")))?;
                    pubsub
                        .subscribe(channel)
                        .await
                        .map_err(|e| BenchError::new(format!("raw SUBSCRIBE: {e}")))?;
                    let mut stream = pubsub.into_on_message();
                    tokio::spawn(async move {
                        loop {
                            tokio::select! {
                                biased;
                                _ = stop_rx.changed() => break,
                                m = stream.next() => match m {
                                    Some(m) => {
                                        if state.on_payload(m.get_payload_bytes()) {
                                            completion.arrive();
                                            break;
                                        }
                                    }
                                    None => break,
                                },
                            }
                        }
                        state.stats
                    })
                }
                Some(hub) => {
                    let sub = hub
                        .subscribe(&format!("bench-{i}"), vec![channel.to_owned()])
                        .await
                        .map_err(|e| BenchError::new(format!("hub SUBSCRIBE: {e}")))?;
                    let mut consumer = sub.consumer();
                    tokio::spawn(async move {
                        loop {
                            let complete = tokio::select! {
                                biased;
                                _ = stop_rx.changed() => break,
                                e = consumer.recv() => match e {
                                    Some(Event::Message(m)) => state.on_payload(m.payload.as_bytes()),
                                    Some(Event::Lagged(n)) => state.on_lost(n),
                                    Some(_) => false,
                                    None => break,
                                },
                            };
                            if complete {
                                completion.arrive();
                                break;
                            }
                        }
                        state.stats
                    })
                }
            };
            tasks.push(task);
        }
        Ok(Receivers {
            hub,
            freds,
            tasks,
            stop,
            completion,
        })
    }

    /// The hub of a hub variant.
    pub fn hub(&self) -> Option<&PubSubHub> {
        self.hub.as_ref()
    }

    /// Waits until every receiver has all it expects, or `timeout`; true if all have.
    pub async fn wait_complete(&self, timeout: Duration) -> bool {
        self.completion.wait(timeout).await
    }

    /// Stops every receiver, closes the hub and returns what each saw.
    pub async fn finish(self) -> Vec<ReceiverStats> {
        let _ = self.stop.send(true);
        let mut out = Vec::with_capacity(self.tasks.len());
        for t in self.tasks {
            if let Ok(stats) = t.await {
                out.push(stats);
            }
        }
        if let Some(hub) = self.hub {
            hub.shutdown().await;
        }
        for fred in self.freds {
            let _ = fred.quit().await;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let p = stamp(7, 123_456_789, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(unstamp(&p), Some((7, 123_456_789)));
        assert_eq!(unstamp(b"short"), None);
    }

    #[test]
    fn rotations() {
        let v = [Variant::Raw, Variant::Dedicated, Variant::Shared];
        assert_eq!(rotation(&v, 0), v.to_vec());
        assert_eq!(rotation(&v, 1)[0], Variant::Dedicated);
        assert_eq!(rotation(&v, 3), v.to_vec());
    }
}

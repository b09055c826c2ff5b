//! Delivery gaps: the windows in which a subscriber was not connected to Redis, so that
//! messages published then were lost for it (pub/sub is at-most-once).
//!
//! The library reports a gap as it happens (`status` is `reconnecting` with `since_ms`,
//! `reconnects_total` counts recoveries) but keeps no history, so once a subscriber is live
//! again the window is gone from its status. The [`GapTracker`] watches the hub and keeps,
//! per subscriber, how many gaps there were and when the last one began and ended; `/state`
//! shows them (`gaps_total`, `last_gap`) and a top-level `warnings` list says in words
//! which subscribers may have missed messages.
//!
//! It watches statuses, not event streams: a consumer of its own would count in
//! `dropped_total` whenever it fell behind and could miss the very events it is for.
//! A gap too short to be seen between two looks (the hub's reconnect backoff starts at
//! 100 ms, the tracker looks after every change) is still counted, from
//! `reconnects_total`, with its time marked unknown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use pubsub_hub::{PubSubHub, Subscription, SubscriptionStatus};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Least time between two looks of the tracker task when the hub changes all the time
/// (a message burst): gaps are timed to within this, and the task costs little.
const LOOK_INTERVAL: Duration = Duration::from_millis(20);

/// One window in which a subscriber was disconnected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// Unix ms when the connection was lost (`null` when the gap was too short to be seen
    /// and is known only from the reconnect counter).
    pub started_at_ms: Option<u64>,
    /// Unix ms when the subscriber was live again; `null` while the gap lasts.
    pub ended_at_ms: Option<u64>,
    /// Why the connection was lost, as the library reported it (no credentials).
    pub error: String,
}

/// What the tracker knows about one subscriber.
#[derive(Debug)]
struct Record {
    /// The subscription this record is about: a name freed and taken again gets a new one.
    sub: Weak<Subscription>,
    gaps_total: u64,
    /// The gap in progress.
    open: Option<Gap>,
    /// The newest finished gap.
    last: Option<Gap>,
    /// `reconnects_total` values accounted for by the gaps counted so far.
    reconnects_seen: u64,
}

/// Keeps the gap history of every subscriber of one hub. Cheap to share.
#[derive(Debug, Default)]
pub struct GapTracker {
    records: Mutex<HashMap<String, Record>>,
    started: OnceLock<()>,
}

impl GapTracker {
    /// An empty tracker; [`GapTracker::start`] makes it watch a hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the task that looks at `hub` after every change, until `shutdown`. Does
    /// nothing outside a Tokio runtime or when already started; [`GapTracker::observe`] still
    /// works without it (then gaps are seen only when someone asks).
    pub fn start(self: &Arc<Self>, hub: &PubSubHub, shutdown: &CancellationToken) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.started.get_or_init(|| {
            let tracker = Arc::clone(self);
            let hub = hub.clone();
            let shutdown = shutdown.clone();
            runtime.spawn(async move {
                loop {
                    let version = hub.version();
                    tracker.observe(&hub);
                    tokio::select! {
                        _ = hub.changed(version) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(LOOK_INTERVAL) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            });
        });
    }

    /// Looks at every subscription of `hub` now and updates the records.
    pub fn observe(&self, hub: &PubSubHub) {
        let subs = hub.subscriptions();
        let now = pubsub_hub_now_ms();
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.retain(|name, r| {
            subs.iter()
                .any(|s| s.name() == name && std::ptr::eq(Arc::as_ptr(s), r.sub.as_ptr()))
        });
        for sub in &subs {
            let record = records
                .entry(sub.name().to_owned())
                .or_insert_with(|| Record {
                    sub: Arc::downgrade(sub),
                    gaps_total: 0,
                    open: None,
                    last: None,
                    reconnects_seen: 0,
                });
            match sub.status() {
                SubscriptionStatus::Reconnecting {
                    since_ms,
                    last_error,
                    ..
                } if record.open.is_none() => {
                    record.gaps_total += 1;
                    record.open = Some(Gap {
                        started_at_ms: Some(since_ms),
                        ended_at_ms: None,
                        error: last_error,
                    });
                }
                SubscriptionStatus::Live => {
                    if let Some(mut gap) = record.open.take() {
                        gap.ended_at_ms = Some(now);
                        record.last = Some(gap);
                        // The library counts this recovery in `reconnects_total`, perhaps a
                        // moment after the status turned live.
                        record.reconnects_seen += 1;
                    }
                    let reconnects = sub.reconnects_total();
                    if reconnects > record.reconnects_seen {
                        // Gaps that began and ended between two looks.
                        record.gaps_total += reconnects - record.reconnects_seen;
                        record.reconnects_seen = reconnects;
                        record.last = Some(Gap {
                            started_at_ms: None,
                            ended_at_ms: Some(now),
                            error: "a short disconnection, seen only from the reconnect count"
                                .into(),
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// Forgets every gap (`POST /reset` zeroes the counters).
    pub fn clear(&self) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// `gaps_total` and `last_gap` (the gap in progress, else the newest finished one, else
    /// `null`) of the subscriber called `name`.
    pub fn of(&self, name: &str) -> (u64, Option<Gap>) {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        match records.get(name) {
            Some(r) => (r.gaps_total, r.open.clone().or_else(|| r.last.clone())),
            None => (0, None),
        }
    }

    /// One sentence per subscriber that is in a gap or has had one, sorted by name.
    pub fn warnings(&self) -> Vec<String> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&String> = records.keys().collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|name| warning(name, &records[name]))
            .collect()
    }

    /// Adds `gaps_total` and `last_gap` to a subscription's JSON.
    pub(crate) fn annotate(&self, name: &str, value: &mut Value) {
        let (total, last) = self.of(name);
        value["gaps_total"] = Value::from(total);
        value["last_gap"] = serde_json::to_value(last).unwrap_or(Value::Null);
    }
}

fn warning(name: &str, r: &Record) -> Option<String> {
    if let Some(gap) = &r.open {
        return Some(format!(
            "{name} is disconnected from Redis since {} (Unix ms): messages published to its \
             targets now are lost for it",
            gap.started_at_ms.unwrap_or_default()
        ));
    }
    let gap = r.last.as_ref()?;
    let window = match (gap.started_at_ms, gap.ended_at_ms) {
        (Some(start), Some(end)) => format!(
            "from {start} to {end} (Unix ms, {} ms)",
            end.saturating_sub(start)
        ),
        (None, Some(end)) => format!("briefly, until {end} (Unix ms)"),
        _ => "at an unknown time".into(),
    };
    Some(format!(
        "{name} was disconnected from Redis {window}; messages published to its targets in \
         that window were not received ({} gap(s) so far)",
        r.gaps_total
    ))
}

/// Unix time in milliseconds.
fn pubsub_hub_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

//! Subscriber connections: each owned by one task, which the hub and the subscriptions
//! talk to through a [`Link`] handle and its [`Command`]s.
//!
//! Two kinds of task serve the three kinds of target. A plain link ([`plain`]) holds one
//! connection for exact channels and patterns: on a cluster any node will do. A shard link
//! ([`shard`]) holds one connection per master owning one of its shard channels, since
//! Redis keeps a shard channel on the master of its hash slot. What both do the same way is
//! here, once: the handle and its status, the commands, the routing table from target to
//! local subscriptions ([`Routes`]), the gap bookkeeping that tells each subscription once
//! about a lost and a recovered connection ([`Gaps`]), how a task ends ([`Ending`]), the
//! keep-alive timer and the reconnect backoff.
//!
//! A task reference-counts Redis subscriptions through its routes: it subscribes a target
//! when it gets its first local subscriber and unsubscribes it when it loses its last. In
//! dedicated mode every subscription has links of its own, which end with it; in shared
//! mode a few links serve every subscription for the hub's lifetime. A task never waits on
//! a consumer (delivery only pushes to bounded queues), and after a lost connection it
//! resubscribes with capped, jittered backoff; it never gives up.

mod plain;
mod shard;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::Value;

use tokio::sync::{mpsc, oneshot};

use crate::config::HubConfig;
use crate::error::HubError;
use crate::locks::{lock, read};
use crate::message::{Payload, ReceivedMessage};
use crate::stats::HubCounters;
use crate::subscription::{Event, Subscription, SubscriptionStatus, TargetKind};
use crate::topology::Topology;

/// Most messages a task delivers in a row before it looks at its commands again, so a
/// flood cannot starve an attach or a detach.
const DISPATCH_BATCH: usize = 256;

static NEXT_LINK_ID: AtomicU64 = AtomicU64::new(1);

/// What every link task starts with.
#[derive(Clone)]
pub(crate) struct LinkEnv {
    /// Where to connect.
    pub(crate) topology: Arc<Topology>,
    pub(crate) config: Arc<HubConfig>,
    /// The hub's counters, touched on every message and status change.
    pub(crate) counters: Arc<HubCounters>,
}

/// Starts a link task for targets of `kind`: a shard link for shard channels, a plain link
/// for channels and patterns. A `dedicated` link ends when its last subscription detaches.
pub(crate) fn spawn(env: &LinkEnv, kind: TargetKind, dedicated: bool) -> Arc<Link> {
    match kind {
        TargetKind::Shard => shard::spawn(env.clone(), dedicated),
        TargetKind::Channel | TargetKind::Pattern => plain::spawn(env.clone(), dedicated),
    }
}

/// Handle to a link task, plain or shard.
pub(crate) struct Link {
    pub(crate) id: u64,
    commands: mpsc::UnboundedSender<Command>,
    /// The hub's counters, touched on every message and status change.
    pub(crate) counters: Arc<HubCounters>,
    state: Mutex<LinkState>,
    /// Targets currently subscribed on Redis through this link (for shared-mode reporting).
    redis_targets: AtomicU64,
    /// Redis connections the task holds open right now (`subscriber_connections`).
    open_connections: AtomicU64,
}

/// What a link reports to the subscriptions it serves.
struct LinkState {
    status: SubscriptionStatus,
    /// `None`: the status applies to every subscription on the link (one connection).
    /// `Some(ids)`: while the link is not live, only these subscriptions are affected; the
    /// others' targets sit on connections that are fine (shard links, one per master).
    affected: Option<HashSet<u64>>,
}

/// What the hub and the subscriptions ask of a link task. A task handles them in order.
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
    fn handle(
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

    fn set_redis_targets(&self, n: usize) {
        self.redis_targets.store(n as u64, Ordering::Relaxed);
    }

    /// Sets the count of open connections; a change bumps the hub's version, since
    /// [`PubSubHub::subscriber_connections`](crate::PubSubHub::subscriber_connections)
    /// shows it (a shard link opens and closes node connections without a status change).
    fn set_open_connections(&self, n: usize) {
        if self.open_connections.swap(n as u64, Ordering::Release) != n as u64 {
            self.counters.touch();
        }
    }

    fn set_status(&self, status: SubscriptionStatus) {
        lock(&self.state).status = status;
        self.counters.touch();
    }

    /// Sets the status and which subscriptions it concerns (per-subscription links only);
    /// watchers are woken only if something changed.
    fn set_status_for(&self, status: SubscriptionStatus, affected: HashSet<u64>) {
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
    ///
    /// Cancel safety: a dropped call leaves the attach to the task, which completes it;
    /// the caller undoes it with a detach, which the task handles after the attach.
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

    /// Asks the task to remove every route of subscription `sub_id`, without waiting; the
    /// receiver resolves once the targets no one else wants are unsubscribed on Redis (or
    /// at once if the task is gone). Commands are handled in order, so a detach sent after
    /// an attach undoes it even if the attach is still in flight.
    pub(crate) fn request_detach(&self, sub_id: u64) -> oneshot::Receiver<()> {
        let (reply, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Detach { sub_id, reply });
        rx
    }

    /// Asks the task to end, without waiting; the receiver resolves once its connections
    /// are closed (or at once if the task is gone).
    pub(crate) fn request_shutdown(&self) -> oneshot::Receiver<()> {
        let (reply, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Shutdown { reply });
        rx
    }

    /// Asks the task to end, without waiting.
    pub(crate) fn abandon(&self) {
        drop(self.request_shutdown());
    }
}

/// Subscribers of one target.
type Subscribers = Vec<Arc<Subscription>>;

/// The routing table of a link: target → the local subscriptions that want it, one map per
/// kind of target (Redis keeps channels, patterns and shard channels apart, and so does a
/// message: it names the pattern that matched, or the channel). A target is present only
/// while some subscription wants it.
#[derive(Default)]
pub(crate) struct Routes {
    by_kind: [HashMap<String, Subscribers>; 3],
}

impl Routes {
    fn index(kind: TargetKind) -> usize {
        match kind {
            TargetKind::Channel => 0,
            TargetKind::Pattern => 1,
            TargetKind::Shard => 2,
        }
    }

    /// Whether some subscription wants `target`.
    pub(crate) fn contains(&self, kind: TargetKind, target: &str) -> bool {
        self.by_kind[Self::index(kind)].contains_key(target)
    }

    /// The `kind` targets some subscription wants.
    pub(crate) fn targets(&self, kind: TargetKind) -> impl Iterator<Item = &str> {
        self.by_kind[Self::index(kind)].keys().map(String::as_str)
    }

    /// Routes `targets` (of `sub`'s kind) to `sub`.
    pub(crate) fn add(&mut self, sub: &Arc<Subscription>, targets: Vec<String>) {
        let map = &mut self.by_kind[Self::index(sub.kind())];
        for target in targets {
            map.entry(target).or_default().push(Arc::clone(sub));
        }
    }

    /// Drops subscription `sub_id` from every route; returns the targets no one wants any
    /// more, by kind.
    pub(crate) fn remove(&mut self, sub_id: u64) -> Vec<(TargetKind, String)> {
        let mut released = Vec::new();
        for kind in [TargetKind::Channel, TargetKind::Pattern, TargetKind::Shard] {
            self.by_kind[Self::index(kind)].retain(|target, subs| {
                subs.retain(|s| s.id != sub_id);
                if subs.is_empty() {
                    released.push((kind, target.clone()));
                }
                !subs.is_empty()
            });
        }
        released
    }

    /// The subscriptions routed from the `kind` targets in `targets`.
    pub(crate) fn subscribers_of<'a>(
        &'a self,
        kind: TargetKind,
        targets: impl IntoIterator<Item = &'a str>,
    ) -> impl Iterator<Item = &'a Arc<Subscription>> {
        let map = &self.by_kind[Self::index(kind)];
        targets.into_iter().filter_map(|t| map.get(t)).flatten()
    }

    /// Every routed subscription, once.
    pub(crate) fn subscriptions(&self) -> Vec<Arc<Subscription>> {
        let mut seen = HashSet::new();
        self.by_kind
            .iter()
            .flat_map(HashMap::values)
            .flatten()
            .filter(|s| seen.insert(s.id))
            .cloned()
            .collect()
    }

    /// Number of routed targets.
    pub(crate) fn len(&self) -> usize {
        self.by_kind.iter().map(HashMap::len).sum()
    }

    /// True when no target is routed.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_kind.iter().all(HashMap::is_empty)
    }

    /// Delivers one message to the subscribers of its pattern (if `pattern` is set) or of
    /// its `channel` of `kind`; `false` if none wants it. The payload is only made (copied
    /// off the connection's buffer) when someone does.
    pub(crate) fn deliver(
        &self,
        kind: TargetKind,
        channel: String,
        pattern: Option<String>,
        payload: impl FnOnce() -> Payload,
    ) -> bool {
        let target = pattern.as_deref().unwrap_or(&channel);
        let Some(subs) = self.by_kind[Self::index(kind)].get(target) else {
            return false;
        };
        let message = Arc::new(ReceivedMessage::new(channel, pattern, payload()));
        for sub in subs {
            sub.deliver(&message);
        }
        true
    }
}

/// The subscriptions a link has told `Disconnected` and not yet `Reconnected`, so each
/// hears about a gap once from this link however many of its targets or connections the
/// gap takes. ([`Subscription::notify`] then merges the gaps of its several links.)
#[derive(Default)]
pub(crate) struct Gaps {
    open: HashMap<u64, Arc<Subscription>>,
}

impl Gaps {
    /// Opens a gap for each of `subs` not in one yet; returns those, to be told
    /// [`Gaps::tell_disconnected`] once the link's status says `Reconnecting`.
    pub(crate) fn open<'a>(
        &mut self,
        subs: impl IntoIterator<Item = &'a Arc<Subscription>>,
    ) -> Vec<Arc<Subscription>> {
        subs.into_iter()
            .filter(|s| self.open.insert(s.id, Arc::clone(s)).is_none())
            .cloned()
            .collect()
    }

    /// Closes the gap of every subscription for which `still_down` is false; returns them,
    /// to be told [`Gaps::tell_reconnected`] once the link's status says `Live`.
    pub(crate) fn close_unless(
        &mut self,
        still_down: impl Fn(u64) -> bool,
    ) -> Vec<Arc<Subscription>> {
        let back: Vec<u64> = self
            .open
            .keys()
            .filter(|id| !still_down(**id))
            .copied()
            .collect();
        back.into_iter()
            .filter_map(|id| self.open.remove(&id))
            .collect()
    }

    /// A detached subscription is no longer this link's to tell.
    pub(crate) fn forget(&mut self, sub_id: u64) {
        self.open.remove(&sub_id);
    }

    /// Tells `subs` that their connection was lost at `since_ms` (Unix ms, what the link's
    /// status shows) because of `error`; each records the gap.
    pub(crate) fn tell_disconnected(subs: Vec<Arc<Subscription>>, error: &str, since_ms: u64) {
        for sub in subs {
            sub.notify(
                Event::Disconnected {
                    error: error.to_owned(),
                },
                since_ms,
            );
        }
    }

    /// Tells `subs` that their targets are subscribed again; each closes its gap now.
    pub(crate) fn tell_reconnected(subs: Vec<Arc<Subscription>>) {
        for sub in subs {
            sub.notify(Event::Reconnected, 0);
        }
    }
}

/// When a link task ends, and whom it tells once its connections are closed.
pub(crate) struct Ending {
    /// A dedicated link serves one subscription and ends with its last detach.
    dedicated: bool,
    /// Answered after the connections are dropped, so callers know they are gone.
    replies: Vec<oneshot::Sender<()>>,
}

impl Ending {
    pub(crate) fn new(dedicated: bool) -> Self {
        Ending {
            dedicated,
            replies: Vec::new(),
        }
    }

    /// Answers a detach: at once, or, for a dedicated link that just lost its last route,
    /// once the connections are gone. `true`: the task ends.
    pub(crate) fn detached(&mut self, reply: oneshot::Sender<()>, routes: &Routes) -> bool {
        if self.dedicated && routes.is_empty() {
            self.replies.push(reply);
            return true;
        }
        let _ = reply.send(());
        false
    }

    /// A shutdown request, answered when the task has ended.
    pub(crate) fn shutdown(&mut self, reply: oneshot::Sender<()>) {
        self.replies.push(reply);
    }

    /// The task's last step, after it dropped its connections: the link reports nothing
    /// open and `Closed`, and every waiting caller is answered.
    pub(crate) fn finish(&mut self, link: &Link) {
        link.set_open_connections(0);
        link.set_redis_targets(0);
        link.set_status(SubscriptionStatus::Closed);
        for reply in self.replies.drain(..) {
            let _ = reply.send(());
        }
    }
}

/// Routes one message push from a RESP3 connection to the local subscriptions of its
/// target: `message` and `smessage` carry (channel, payload), `pmessage` (pattern, channel,
/// payload). Runs in the connection's push sender, on redis-rs's reader task, so a message
/// takes no further task hop before it reaches the consumers' queues; the payload's buffer
/// is moved into the message, not copied. Never waits: delivery only takes short locks.
pub(crate) fn deliver_push(routes: &RwLock<Routes>, kind: TargetKind, data: Vec<Value>) {
    let mut data = data.into_iter();
    let pattern = match kind {
        TargetKind::Pattern => match data.next() {
            Some(Value::BulkString(pattern)) => Some(channel_name(pattern)),
            _ => return,
        },
        _ => None,
    };
    let (Some(Value::BulkString(channel)), Some(payload)) = (data.next(), data.next()) else {
        return;
    };
    read(routes).deliver(kind, channel_name(channel), pattern, || {
        Payload::from_bytes(match payload {
            Value::BulkString(bytes) => bytes,
            _ => Vec::new(),
        })
    });
}

/// The keep-alive timer: its first tick one interval from now, and no burst of ticks after
/// a stall (a PING per interval at most).
fn keepalive_timer(config: &HubConfig) -> tokio::time::Interval {
    let mut timer = tokio::time::interval_at(
        tokio::time::Instant::now() + config.ping_interval,
        config.ping_interval,
    );
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

/// Exponential backoff from `reconnect_min`, capped at `reconnect_max`, with the delay drawn
/// uniformly from its upper half so that many links do not reconnect in lock-step.
fn backoff_delay(config: &HubConfig, attempts: u32) -> Duration {
    let base = config
        .reconnect_min
        .saturating_mul(1u32 << attempts.min(16))
        .min(config.reconnect_max);
    let half = base / 2;
    half + half.mul_f64(fastrand::f64())
}

/// A channel name as Redis sent it, lossy where it is not UTF-8.
fn channel_name(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::{GapHistory, Owner, Released};
    use std::sync::Weak;

    /// A hub that is already gone: what a subscription made in a test reports to.
    struct NoHub;

    impl Owner for NoHub {
        fn forget(&self, _: &Subscription) {}
        fn retire(&self, _: Released) {}
    }

    fn sub(id: u64, kind: TargetKind) -> Arc<Subscription> {
        Arc::new(Subscription::new(
            id,
            format!("s{id}"),
            vec![],
            kind,
            &HubConfig::default(),
            Weak::<NoHub>::new(),
            Arc::new(HubCounters::default()),
        ))
    }

    fn text(s: &str) -> impl FnOnce() -> Payload + '_ {
        move || Payload::from_bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn routes_count_subscribers_and_release_a_target_with_its_last() {
        let (a, b) = (sub(1, TargetKind::Channel), sub(2, TargetKind::Channel));
        let mut routes = Routes::default();
        routes.add(&a, vec!["x".into(), "y".into()]);
        routes.add(&b, vec!["y".into()]);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes.subscriptions().len(), 2);
        assert!(routes.deliver(TargetKind::Channel, "y".into(), None, text("1")));
        assert_eq!((a.received_total(), b.received_total()), (1, 1));
        assert_eq!(
            routes.remove(1),
            vec![(TargetKind::Channel, "x".to_owned())]
        );
        assert!(routes.contains(TargetKind::Channel, "y"));
        assert!(!routes.deliver(TargetKind::Channel, "x".into(), None, text("2")));
        assert_eq!(
            routes.remove(2),
            vec![(TargetKind::Channel, "y".to_owned())]
        );
        assert!(routes.is_empty());
    }

    #[test]
    fn routes_keep_channels_patterns_and_shard_channels_apart() {
        let channel = sub(1, TargetKind::Channel);
        let pattern = sub(2, TargetKind::Pattern);
        let shard = sub(3, TargetKind::Shard);
        let mut routes = Routes::default();
        for s in [&channel, &pattern, &shard] {
            routes.add(s, vec!["n*".into()]);
        }
        assert_eq!(routes.len(), 3);
        // A pattern message names the pattern that matched; only pattern subscribers get it.
        assert!(routes.deliver(
            TargetKind::Pattern,
            "news".into(),
            Some("n*".into()),
            text("p")
        ));
        assert!(routes.deliver(TargetKind::Shard, "n*".into(), None, text("s")));
        let received = [&channel, &pattern, &shard].map(|s| s.received_total());
        assert_eq!(received, [0, 1, 1]);
        let got = pattern.messages(None);
        assert_eq!(got[0].channel, "news");
        assert_eq!(got[0].pattern.as_deref(), Some("n*"));
        let shard_targets: Vec<&str> = routes.targets(TargetKind::Shard).collect();
        assert_eq!(shard_targets, ["n*"]);
        let by_target: Vec<u64> = routes
            .subscribers_of(TargetKind::Pattern, ["n*", "absent"])
            .map(|s| s.id)
            .collect();
        assert_eq!(by_target, [2]);
    }

    #[test]
    fn gaps_open_once_and_close_when_told() {
        let (a, b) = (sub(1, TargetKind::Shard), sub(2, TargetKind::Shard));
        let mut gaps = Gaps::default();
        let opened: Vec<u64> = gaps.open([&a, &b]).iter().map(|s| s.id).collect();
        assert_eq!(opened.len(), 2);
        assert!(gaps.open([&a]).is_empty(), "a second loss is the same gap");
        let back: Vec<u64> = gaps
            .close_unless(|id| id == 2)
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(back, [1]);
        gaps.forget(2);
        assert!(gaps.close_unless(|_| false).is_empty());
    }

    #[test]
    fn a_subscription_records_one_gap_across_its_links() {
        let a = sub(1, TargetKind::Channel);
        assert_eq!(a.gaps(), GapHistory::default());
        // Two links lose their connections; the first loss opens the gap.
        Gaps::tell_disconnected(vec![Arc::clone(&a)], "first", 1_000);
        Gaps::tell_disconnected(vec![Arc::clone(&a)], "second", 2_000);
        let open = a.gaps();
        assert_eq!(open.total, 1);
        assert!(open.is_open());
        let gap = open.last.unwrap();
        assert_eq!((gap.started_at_ms, gap.error.as_str()), (1_000, "first"));
        // It closes when the last of them is back, and only then counts a reconnect.
        Gaps::tell_reconnected(vec![Arc::clone(&a)]);
        assert!(a.gaps().is_open());
        assert_eq!(a.reconnects_total(), 0);
        Gaps::tell_reconnected(vec![Arc::clone(&a)]);
        let closed = a.gaps();
        assert!(!closed.is_open());
        assert!(closed.last.unwrap().ended_at_ms.unwrap() >= 1_000);
        assert_eq!(a.reconnects_total(), 1);
        // A reconnect without a loss (a link's first connection) is no gap.
        Gaps::tell_reconnected(vec![Arc::clone(&a)]);
        assert_eq!(a.gaps().total, 1);
        Gaps::tell_disconnected(vec![Arc::clone(&a)], "third", 3_000);
        assert_eq!(a.gaps().total, 2);
        assert_eq!(a.gaps().last.unwrap().error, "third");
    }

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

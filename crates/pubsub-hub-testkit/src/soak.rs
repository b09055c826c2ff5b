//! The dashboard's bounded soak: mixed churn against a dashboard on loopback with its Redis
//! killed and restarted twice in the middle, then an account of every message. The caller
//! starts the private Redis and the dashboard (seeded with its defaults) in this process,
//! since the memory check reads this process' resident set; `scripts/soak` runs it for a
//! minute through the dashboard's `soak` example, its test suite for ten seconds.
//!
//! Load: one publisher (`POST /publish` to four stable channels, `count` 1..=3), one churner
//! (subscribe a short-lived subscriber, publish to it, unsubscribe), one `/state` poller
//! (every call must answer within a second), one RSS sampler. Stable subscribers: an exact
//! one per channel and one pattern `soak:*`, so every message is expected twice.
//!
//! The account, for the stable channels: `expected = published × 2` and
//! `expected = received + dropped + lost_in_gaps + lost_in_flight`, where
//! - `lost_in_gaps` is what Redis itself reported as not delivered (`expected − delivered`
//!   per publish: a subscriber was disconnected); each such publish must fall inside a
//!   restart window, and the dashboard must show one gap per subscriber per restart;
//! - `lost_in_flight` is what Redis reported delivered but never arrived: a message in
//!   Redis' output buffer when it was killed. It must be 0 outside the restarts.
//!
//! A publish request refused while Redis goes away (502/503) is *in doubt*: with `count`
//! above 1 the first messages may have gone out before the failure, and even the failing
//! one may have been executed with its reply lost in the kill. What of those arrives
//! (`arrived_in_doubt`, at most `in_doubt`) is received on top of what Redis reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use serde_json::Value;

use crate::dashboard::{
    STATE_DEADLINE, all_live, connections, state as get_state, sub, wait_connections, wait_state,
};
use crate::http::{Reply, request};
use crate::{RedisServer, WAIT};

/// How long and how hard.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// Total churn time.
    pub duration: Duration,
    /// RSS after this is the baseline.
    pub warm_up: Duration,
    /// Fail when the final RSS exceeds the baseline by more than this fraction.
    pub rss_tolerance: f64,
}

impl SoakConfig {
    /// `seconds` of churn; warm-up a sixth of it (at least 3 s); 10% RSS tolerance.
    pub fn seconds(seconds: u64) -> SoakConfig {
        SoakConfig {
            duration: Duration::from_secs(seconds),
            warm_up: Duration::from_secs((seconds / 6).max(3)),
            rss_tolerance: 0.10,
        }
    }
}

/// What happened.
#[derive(Debug, Default)]
pub struct SoakReport {
    /// Wall time of the churn, seconds.
    pub seconds: f64,
    /// `POST /publish` requests answered 200.
    pub publish_requests_ok: u64,
    /// `POST /publish` requests refused (502 or 503) while Redis was away.
    pub publish_requests_refused: u64,
    /// Messages those requests published (their `count`s).
    pub published: u64,
    /// Deliveries expected on the stable channels: `published` × 2.
    pub expected: u64,
    /// Deliveries Redis reported (the sum of the `delivered` lists).
    pub delivered: u64,
    /// Messages the stable subscribers received (`received_total`).
    pub received: u64,
    /// Messages the stable subscribers dropped (`dropped_total`).
    pub dropped: u64,
    /// Deliveries Redis reported it did not make: a subscriber was disconnected.
    pub lost_in_gaps: u64,
    /// Deliveries Redis reported made that never arrived.
    pub lost_in_flight: u64,
    /// Deliveries of refused publish requests that may have happened (count x receivers).
    pub in_doubt: u64,
    /// Of those, how many arrived: received beyond what Redis reported delivered.
    pub arrived_in_doubt: u64,
    /// Subscribe, publish, unsubscribe cycles of the churner.
    pub churn_cycles: u64,
    /// Churner subscribes refused while Redis was away.
    pub churn_refusals: u64,
    /// `/state` calls of the poller.
    pub state_calls: u64,
    /// The slowest of them, milliseconds.
    pub state_max_ms: f64,
    /// Of them, the answers saying Redis was unavailable.
    pub state_unavailable: u64,
    /// `gaps_total` of each stable subscriber at the end.
    pub gaps_per_subscriber: Vec<(String, u64)>,
    /// Median resident set just after the warm-up, KiB.
    pub rss_baseline_kib: u64,
    /// Median resident set over the last two seconds, KiB.
    pub rss_final_kib: u64,
    /// Largest resident set sampled, KiB.
    pub rss_peak_kib: u64,
    /// The dashboard's Redis connections before the churn.
    pub connections_baseline: usize,
    /// The same at the end.
    pub connections_final: usize,
}

impl SoakReport {
    /// One line per figure, for the script's output and the report.
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!("duration_s {:.1}", self.seconds),
            format!(
                "publish_requests ok {} refused_while_redis_was_down {}",
                self.publish_requests_ok, self.publish_requests_refused
            ),
            format!(
                "messages published {} expected_deliveries {} redis_delivered {} received {} dropped {} lost_in_gaps {} lost_in_flight {} in_doubt {} arrived_in_doubt {}",
                self.published,
                self.expected,
                self.delivered,
                self.received,
                self.dropped,
                self.lost_in_gaps,
                self.lost_in_flight,
                self.in_doubt,
                self.arrived_in_doubt
            ),
            format!(
                "churn cycles {} refusals {}",
                self.churn_cycles, self.churn_refusals
            ),
            format!(
                "state calls {} max_ms {:.1} answered_redis_unavailable {}",
                self.state_calls, self.state_max_ms, self.state_unavailable
            ),
            format!("gaps per subscriber {:?}", self.gaps_per_subscriber),
            format!(
                "rss_kib baseline {} final {} peak {} growth {:+.1}%",
                self.rss_baseline_kib,
                self.rss_final_kib,
                self.rss_peak_kib,
                (self.rss_final_kib as f64 / self.rss_baseline_kib.max(1) as f64 - 1.0) * 100.0
            ),
            format!(
                "redis_connections baseline {} final {}",
                self.connections_baseline, self.connections_final
            ),
        ]
    }
}

const CHANNELS: usize = 4;
const RECEIVERS_PER_MESSAGE: u64 = 2;
/// Slack around a restart window for a publish that raced the kill or the recovery.
const WINDOW_SLACK: Duration = Duration::from_millis(500);

/// Counters the tasks share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    requests_ok: AtomicU64,
    requests_refused: AtomicU64,
    /// Deliveries that refused requests may have made (count x receivers each).
    in_doubt: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    lost_in_gaps: AtomicU64,
    /// Times (since start) of publishes that Redis reported short of receivers.
    short_publishes: std::sync::Mutex<Vec<Duration>>,
    churn_cycles: AtomicU64,
    churn_refusals: AtomicU64,
    state_calls: AtomicU64,
    state_max_micros: AtomicU64,
    state_unavailable: AtomicU64,
    rss: std::sync::Mutex<Vec<(Duration, u64)>>,
}

/// Resident set size of this process, KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn post(addr: SocketAddr, path: &str, form: &str) -> Reply {
    request(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            form.len()
        ),
        form.as_bytes(),
    )
    .await
}

/// Runs the soak against the dashboard at `addr`, which uses `server` (and only it), and
/// checks it; panics with the report on any failed check.
pub async fn run(config: SoakConfig, server: &mut RedisServer, addr: SocketAddr) -> SoakReport {
    for i in 0..CHANNELS {
        let reply = post(
            addr,
            "/subscribe",
            &format!("name=soak-exact-{i}&target=soak:{i}"),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let reply = post(
        addr,
        "/subscribe",
        "name=soak-pattern&kind=pattern&target=soak:*",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let connections_baseline = connections(server);

    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let mut tasks = Vec::new();

    // Publisher.
    tasks.push(tokio::spawn({
        let shared = Arc::clone(&shared);
        async move {
            let mut n: u64 = 0;
            while !shared.stop.load(Ordering::Relaxed) {
                n += 1;
                let channel = n as usize % CHANNELS;
                let count = 1 + n % 3;
                let at = start.elapsed();
                let reply = post(
                    addr,
                    "/publish",
                    &format!("channel=soak:{channel}&message=m{n}&count={count}"),
                )
                .await;
                match reply.status {
                    200 => {
                        shared.requests_ok.fetch_add(1, Ordering::Relaxed);
                        let delivered: Vec<u64> = reply.json()["delivered"]
                            .as_array()
                            .expect("delivered")
                            .iter()
                            .map(|d| d.as_u64().unwrap())
                            .collect();
                        assert_eq!(delivered.len() as u64, count);
                        shared.published.fetch_add(count, Ordering::Relaxed);
                        let sum: u64 = delivered.iter().sum();
                        assert!(
                            delivered.iter().all(|d| *d <= RECEIVERS_PER_MESSAGE),
                            "more receivers than ours: {delivered:?}"
                        );
                        shared.delivered.fetch_add(sum, Ordering::Relaxed);
                        let short = count * RECEIVERS_PER_MESSAGE - sum;
                        if short > 0 {
                            shared.lost_in_gaps.fetch_add(short, Ordering::Relaxed);
                            shared.short_publishes.lock().unwrap().push(at);
                        }
                    }
                    502 | 503 => {
                        shared.requests_refused.fetch_add(1, Ordering::Relaxed);
                        shared
                            .in_doubt
                            .fetch_add(count * RECEIVERS_PER_MESSAGE, Ordering::Relaxed);
                    }
                    other => panic!("publish answered {other}: {}", reply.text()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }));

    // Churner.
    tasks.push(tokio::spawn({
        let shared = Arc::clone(&shared);
        async move {
            let mut n: u64 = 0;
            while !shared.stop.load(Ordering::Relaxed) {
                n += 1;
                let kind = if n.is_multiple_of(2) {
                    "channel"
                } else {
                    "pattern"
                };
                let target = format!("churn:{}", n % 8);
                let reply = post(
                    addr,
                    "/subscribe",
                    &format!("name=churn-{n}&kind={kind}&target={target}"),
                )
                .await;
                match reply.status {
                    200 => {}
                    502 | 503 => {
                        shared.churn_refusals.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    other => panic!("subscribe answered {other}: {}", reply.text()),
                }
                let reply = post(addr, "/publish", &format!("channel={target}&message=c{n}")).await;
                assert!(matches!(reply.status, 200 | 502 | 503), "{}", reply.text());
                let reply = post(addr, "/unsubscribe", &format!("name=churn-{n}")).await;
                assert_eq!(
                    reply.status,
                    200,
                    "unsubscribe never needs Redis: {}",
                    reply.text()
                );
                assert_eq!(reply.json()["removed"], true);
                shared.churn_cycles.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }));

    // /state poller.
    tasks.push(tokio::spawn({
        let shared = Arc::clone(&shared);
        async move {
            while !shared.stop.load(Ordering::Relaxed) {
                let reply = request(addr, "GET /state HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"").await;
                assert_eq!(reply.status, 200, "{}", reply.text());
                assert!(reply.took < STATE_DEADLINE, "/state took {:?}", reply.took);
                shared.state_calls.fetch_add(1, Ordering::Relaxed);
                shared
                    .state_max_micros
                    .fetch_max(reply.took.as_micros() as u64, Ordering::Relaxed);
                if reply.json()["redis"]["available"] == false {
                    shared.state_unavailable.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }));

    // RSS sampler.
    tasks.push(tokio::spawn({
        let shared = Arc::clone(&shared);
        async move {
            while !shared.stop.load(Ordering::Relaxed) {
                shared
                    .rss
                    .lock()
                    .unwrap()
                    .push((start.elapsed(), rss_kib()));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }));

    // Two restarts, at a third and at two thirds; each window lasts until every
    // subscriber is live again.
    let mut windows = Vec::new();
    for k in 1..=2u32 {
        let at = config.duration * k / 3;
        tokio::time::sleep(at.saturating_sub(start.elapsed())).await;
        let began = start.elapsed();
        server.stop();
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.start_again();
        wait_state(addr, "every subscriber is live after the restart", |s| {
            all_live(s) && s["redis"]["available"] == true
        })
        .await;
        windows.push((began, start.elapsed()));
    }
    tokio::time::sleep(config.duration.saturating_sub(start.elapsed())).await;
    shared.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        tokio::time::timeout(WAIT, task)
            .await
            .expect("every task stops")
            .expect("no task panicked");
    }
    let seconds = start.elapsed().as_secs_f64();

    // Settle: every message in flight has arrived or never will.
    let state = wait_state(addr, "all live, received stops changing", all_live).await;
    let received_now = |s: &Value| -> u64 {
        (0..CHANNELS)
            .map(|i| {
                sub(s, &format!("soak-exact-{i}"))["received_total"]
                    .as_u64()
                    .unwrap()
            })
            .sum::<u64>()
            + sub(s, "soak-pattern")["received_total"].as_u64().unwrap()
    };
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let mut last = received_now(&state);
    let settle = Instant::now();
    while last < delivered && settle.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = received_now(&get_state(addr).await);
    }
    let state = get_state(addr).await;
    wait_connections(server, connections_baseline).await;

    let stable_names: Vec<String> = (0..CHANNELS)
        .map(|i| format!("soak-exact-{i}"))
        .chain(["soak-pattern".to_owned()])
        .collect();
    let rss = shared.rss.lock().unwrap().clone();
    let median = |from: Duration, to: Duration| -> u64 {
        let mut v: Vec<u64> = rss
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, r)| *r)
            .collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let end = rss.last().map(|(t, _)| *t).unwrap_or_default();
    let published = shared.published.load(Ordering::Relaxed);
    let received = received_now(&state);
    let report = SoakReport {
        seconds,
        publish_requests_ok: shared.requests_ok.load(Ordering::Relaxed),
        publish_requests_refused: shared.requests_refused.load(Ordering::Relaxed),
        published,
        expected: published * RECEIVERS_PER_MESSAGE,
        delivered,
        received,
        dropped: stable_names
            .iter()
            .map(|n| sub(&state, n)["dropped_total"].as_u64().unwrap())
            .sum(),
        lost_in_gaps: shared.lost_in_gaps.load(Ordering::Relaxed),
        lost_in_flight: delivered.saturating_sub(received),
        in_doubt: shared.in_doubt.load(Ordering::Relaxed),
        arrived_in_doubt: received.saturating_sub(delivered),
        churn_cycles: shared.churn_cycles.load(Ordering::Relaxed),
        churn_refusals: shared.churn_refusals.load(Ordering::Relaxed),
        state_calls: shared.state_calls.load(Ordering::Relaxed),
        state_max_ms: shared.state_max_micros.load(Ordering::Relaxed) as f64 / 1000.0,
        state_unavailable: shared.state_unavailable.load(Ordering::Relaxed),
        gaps_per_subscriber: stable_names
            .iter()
            .map(|n| (n.clone(), sub(&state, n)["gaps_total"].as_u64().unwrap()))
            .collect(),
        rss_baseline_kib: median(config.warm_up, config.warm_up + Duration::from_secs(2)),
        rss_final_kib: median(
            end.saturating_sub(Duration::from_secs(2)),
            end + Duration::from_secs(1),
        ),
        rss_peak_kib: rss.iter().map(|(_, r)| *r).max().unwrap_or(0),
        connections_baseline,
        connections_final: connections(server),
    };
    let shown = report.lines().join("\n");

    // The checks.
    assert!(report.published > 0 && report.churn_cycles > 0, "{shown}");
    assert!(
        report.arrived_in_doubt <= report.in_doubt,
        "more received than delivered and in doubt\n{shown}"
    );
    assert_eq!(
        report.expected + report.arrived_in_doubt,
        report.received + report.dropped + report.lost_in_gaps + report.lost_in_flight,
        "every message is received or accounted for\n{shown}"
    );
    let in_a_window = |t: Duration| {
        windows
            .iter()
            .any(|(a, b)| t + WINDOW_SLACK >= *a && t <= *b + WINDOW_SLACK)
    };
    let shorts = shared.short_publishes.lock().unwrap().clone();
    assert!(
        shorts.iter().all(|t| in_a_window(*t)),
        "a publish reached fewer subscribers outside the restarts: {shorts:?} windows {windows:?}\n{shown}"
    );
    // At most the messages in Redis' output buffers at the two kills.
    assert!(
        report.lost_in_flight <= 2 * 2 * 3 * RECEIVERS_PER_MESSAGE,
        "too many delivered messages never arrived\n{shown}"
    );
    for (name, gaps) in &report.gaps_per_subscriber {
        assert_eq!(*gaps, 2, "{name}: one gap per restart\n{shown}");
    }
    assert_eq!(
        report.connections_final, report.connections_baseline,
        "{shown}"
    );
    let warnings = state["warnings"].as_array().unwrap();
    assert!(
        stable_names.iter().all(|n| warnings
            .iter()
            .any(|w| w.as_str().unwrap().starts_with(n.as_str()))),
        "every stable subscriber carries a lost-message warning\n{shown}"
    );
    let growth = report.rss_final_kib as f64 / report.rss_baseline_kib.max(1) as f64 - 1.0;
    assert!(
        growth <= config.rss_tolerance,
        "RSS grew {:.1}% after warm-up (limit {:.0}%)\n{shown}",
        growth * 100.0,
        config.rss_tolerance * 100.0
    );
    report
}

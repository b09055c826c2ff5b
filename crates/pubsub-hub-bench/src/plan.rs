//! How big a run is: every count has a time bound next to it.

use std::time::Duration;

/// Sizes of one run. [`Plan::new`]`(true)` is the CI-sized `--quick` run (seconds in all);
/// `false` is the full run whose numbers go into `BENCHMARKS.md` (a few minutes).
#[derive(Clone, Debug)]
pub struct Plan {
    /// `--quick`.
    pub quick: bool,
    /// Alternating hub/raw rounds per measurement; the median is reported.
    pub rounds: usize,
    /// Publishes in flight for the publish scenario.
    pub publish_in_flight: Vec<usize>,
    /// Publishes per measurement at 1 in flight, and at more.
    pub publish_count_serial: u64,
    /// Publishes per measurement with 16 or 64 in flight.
    pub publish_count_parallel: u64,
    /// Time bound of one publish measurement.
    pub publish_max: Duration,
    /// Subscriber counts of the latency scenario.
    pub subscriber_counts: Vec<usize>,
    /// Subscriber counts of the fan-out scenario (bounded by the open-files limit).
    pub fanout_counts: Vec<usize>,
    /// Deliveries (messages × subscribers) per fan-out measurement.
    pub fanout_deliveries: u64,
    /// Time bound of one fan-out measurement.
    pub fanout_max: Duration,
    /// Publish rate of the latency scenario.
    pub latency_rate: u64,
    /// Duration of one latency measurement at that rate.
    pub latency_duration: Duration,
    /// Messages at the start of each latency measurement that are not recorded.
    pub latency_warmup: u64,
    /// `redis-benchmark -n` with `-P 16`.
    pub ceiling_pipelined: u64,
    /// `redis-benchmark -n` with `-P 1`.
    pub ceiling_serial: u64,
    /// Subscriber counts of the memory scenario.
    pub memory_sizes: Vec<usize>,
    /// Time bound for one memory measurement (subscribing them all).
    pub memory_max: Duration,
    /// Subscriber counts of the dashboard scenario.
    pub dashboard_subscribers: Vec<usize>,
    /// Duration of one dashboard request loop.
    pub dashboard_duration: Duration,
    /// Keep-alive HTTP connections driving the dashboard.
    pub dashboard_connections: usize,
}

impl Plan {
    /// The full plan, or the quick one.
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                rounds: 1,
                publish_in_flight: vec![1, 16, 64],
                publish_count_serial: 2_000,
                publish_count_parallel: 20_000,
                publish_max: Duration::from_millis(400),
                subscriber_counts: vec![1, 10, 100],
                fanout_counts: vec![1, 10, 100],
                fanout_deliveries: 20_000,
                fanout_max: Duration::from_secs(3),
                latency_rate: 5_000,
                latency_duration: Duration::from_millis(400),
                latency_warmup: 200,
                ceiling_pipelined: 30_000,
                ceiling_serial: 1_000,
                memory_sizes: vec![100, 1_000],
                memory_max: Duration::from_secs(20),
                dashboard_subscribers: vec![3, 200],
                dashboard_duration: Duration::from_millis(300),
                dashboard_connections: 4,
            }
        } else {
            Plan {
                quick,
                rounds: 3,
                publish_in_flight: vec![1, 16, 64],
                publish_count_serial: 40_000,
                publish_count_parallel: 600_000,
                publish_max: Duration::from_secs(3),
                subscriber_counts: vec![1, 10, 100],
                fanout_counts: vec![1, 10, 100, 1_000, 10_000],
                fanout_deliveries: 1_000_000,
                fanout_max: Duration::from_secs(20),
                latency_rate: 5_000,
                latency_duration: Duration::from_secs(4),
                latency_warmup: 1_000,
                ceiling_pipelined: 1_000_000,
                ceiling_serial: 40_000,
                memory_sizes: vec![100, 1_000, 10_000],
                memory_max: Duration::from_secs(120),
                dashboard_subscribers: vec![3, 200],
                dashboard_duration: Duration::from_secs(3),
                dashboard_connections: 4,
            }
        }
    }

    /// Messages per fan-out measurement with `subscribers` receivers.
    pub fn fanout_messages(&self, subscribers: usize) -> u64 {
        (self.fanout_deliveries / subscribers.max(1) as u64).max(100)
    }

    /// Publishes per latency measurement.
    pub fn latency_messages(&self) -> u64 {
        (self.latency_rate as f64 * self.latency_duration.as_secs_f64()) as u64
            + self.latency_warmup
    }
}

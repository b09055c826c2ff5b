//! Sharded publish throughput: `PubSubHub::spublish_bytes` with 64 in flight over 1,000
//! shard channels, on a private 3-master Redis Cluster against the bench's single server,
//! plus plain `PUBLISH` through the same cluster for comparison.
//!
//! The cluster is three `redis-server --cluster-enabled yes` processes on free loopback
//! ports joined by `redis-cli --cluster create` (no replicas); it is killed with the
//! scenario. The channels have no subscribers, so the rows measure where each command
//! goes: SPUBLISH stays on the master owning the channel's slot, while a plain PUBLISH on
//! a cluster is relayed to every node over the cluster bus. On this 2-core machine three
//! masters share the same two cores as one, so the ratio shows routing cost, not the
//! horizontal scaling a cluster of separate machines would give.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use pubsub_hub::{HubConfig, PubSubHub};
use tokio::task::JoinSet;

use crate::error::BenchError;
use crate::progress::thousands;
use crate::report::Row;
use crate::server::BenchRedis;
use crate::{Bench, PAYLOAD_64, median};

/// Masters of the private cluster.
const MASTERS: usize = 3;
/// Distinct shard channels the publishers cycle through (spread over every master).
const CHANNELS: u64 = 1_000;
/// Publishes in flight.
const IN_FLIGHT: usize = 64;
/// How long the cluster gets to agree on its slots.
const CLUSTER_READY: Duration = Duration::from_secs(30);

/// What is measured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    SpublishOneNode,
    SpublishCluster,
    PublishCluster,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::SpublishOneNode => "SPUBLISH, 1 node",
            Case::SpublishCluster => "SPUBLISH, 3 masters",
            Case::PublishCluster => "PUBLISH, 3 masters",
        }
    }
}

/// Runs the scenario.
pub async fn run(bench: &mut Bench) -> Result<(), BenchError> {
    let cluster = BenchCluster::start(&bench.redis_server).await?;
    bench.progress.step(&format!(
        "{MASTERS}-master cluster on ports {}",
        cluster
            .nodes
            .iter()
            .map(|n| n.port().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let single = PubSubHub::with_config(bench.redis.client(), HubConfig::default())
        .await
        .map_err(|e| BenchError::new(format!("hub: {e}")))?;
    let clustered = PubSubHub::cluster(cluster.urls(), HubConfig::default())
        .await
        .map_err(|e| BenchError::new(format!("cluster hub: {e}")))?;
    let cases = [
        Case::SpublishOneNode,
        Case::SpublishCluster,
        Case::PublishCluster,
    ];
    let hub_of = |case: Case| match case {
        Case::SpublishOneNode => &single,
        _ => &clustered,
    };
    // Warm-up: connections to every master, slot map, allocator.
    for case in cases {
        publish_loop(hub_of(case), case, 2_000, bench.plan.publish_max).await?;
    }
    let plan = bench.plan.clone();
    let mut rates: Vec<(Case, Vec<f64>)> = cases.iter().map(|c| (*c, Vec::new())).collect();
    for round in 0..plan.rounds {
        let mut order = cases.to_vec();
        order.rotate_left(round % cases.len());
        for case in order {
            let (done, elapsed) = publish_loop(
                hub_of(case),
                case,
                plan.publish_count_parallel,
                plan.publish_max,
            )
            .await?;
            let rate = done as f64 / elapsed.as_secs_f64();
            bench.progress.step(&format!(
                "{} (round {}): {} msg/s ({done} in {:.2}s)",
                case.label(),
                round + 1,
                thousands(rate),
                elapsed.as_secs_f64()
            ));
            rates
                .iter_mut()
                .find(|(c, _)| *c == case)
                .expect("listed")
                .1
                .push(rate);
        }
    }
    let rate_of = |c: Case| median(&rates.iter().find(|(x, _)| *x == c).expect("listed").1);
    let base = rate_of(Case::SpublishOneNode);
    let row_case = format!("{IN_FLIGHT} in flight, {CHANNELS} channels");
    bench.report.push(Row::plain(
        "shard",
        &row_case,
        Case::SpublishOneNode.label(),
        "msg/s",
        base,
    ));
    for case in [Case::SpublishCluster, Case::PublishCluster] {
        bench.report.push(
            Row::plain("shard", &row_case, case.label(), "msg/s", rate_of(case))
                .against(Case::SpublishOneNode.label(), base),
        );
    }
    single.shutdown().await;
    clustered.shutdown().await;
    Ok(())
}

/// `total` publishes (or `max` time) from [`IN_FLIGHT`] tasks, cycling over [`CHANNELS`]
/// channels. Returns (publishes, elapsed).
async fn publish_loop(
    hub: &PubSubHub,
    case: Case,
    total: u64,
    max: Duration,
) -> Result<(u64, Duration), BenchError> {
    let next = Arc::new(AtomicI64::new(0));
    let start = Instant::now();
    let deadline = start + max;
    let mut tasks = JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let hub = hub.clone();
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            let mut done = 0u64;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as u64;
                if n >= total || Instant::now() >= deadline {
                    return Ok::<u64, pubsub_hub::HubError>(done);
                }
                let channel = format!("bench:shard:{}", n % CHANNELS);
                match case {
                    Case::PublishCluster => hub.publish_bytes(&channel, PAYLOAD_64).await?,
                    _ => hub.spublish_bytes(&channel, PAYLOAD_64).await?,
                };
                done += 1;
            }
        });
    }
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        done += joined
            .map_err(|e| BenchError::new(format!("publisher task: {e}")))?
            .map_err(|e| BenchError::new(format!("{}: {e}", case.label())))?;
    }
    Ok((done, start.elapsed()))
}

/// A private Redis Cluster of [`MASTERS`] masters, killed on drop.
struct BenchCluster {
    nodes: Vec<BenchRedis>,
}

impl BenchCluster {
    /// Starts the nodes, joins them with `redis-cli --cluster create` and waits until every
    /// node reports `cluster_state:ok`.
    async fn start(redis_server: &str) -> Result<BenchCluster, BenchError> {
        let nodes = (0..MASTERS)
            .map(|_| {
                BenchRedis::start_with(
                    redis_server,
                    1_000,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                    ],
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = tokio::process::Command::new(redis_cli(redis_server))
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(CLUSTER_READY, out)
            .await
            .map_err(|_| BenchError::new("redis-cli --cluster create did not finish"))?
            .map_err(|e| BenchError::new(format!("cannot run redis-cli: {e}")))?;
        if !out.status.success() {
            return Err(BenchError::new(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .chain(String::from_utf8_lossy(&out.stderr).lines())
                    .filter(|l| l.contains("ERR") || l.contains("rror"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            )));
        }
        let cluster = BenchCluster { nodes };
        cluster.wait_ok().await?;
        Ok(cluster)
    }

    async fn wait_ok(&self) -> Result<(), BenchError> {
        let deadline = Instant::now() + CLUSTER_READY;
        for node in &self.nodes {
            let mut conn = node.connection().await?;
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| BenchError::new(format!("CLUSTER INFO: {e}")))?;
                if info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(BenchError::new(format!(
                        "the cluster was not ready within {CLUSTER_READY:?}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(BenchRedis::url).collect()
    }
}

/// `redis-cli` next to the `redis-server` in use, or on the PATH.
fn redis_cli(redis_server: &str) -> String {
    let path = std::path::Path::new(redis_server);
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("redis-cli").display().to_string(),
        _ => "redis-cli".to_owned(),
    }
}

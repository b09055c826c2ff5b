//! The machine's ceiling: `redis-benchmark` sending PUBLISH to the private server on one
//! connection, pipelined 16 deep and not pipelined. Redis' own C client shows how fast
//! Redis and the loopback go here; the hub's publish rows are compared with it.
//!
//! Each is run [`RUNS`] times and the best run is reported: a ceiling is what the machine
//! can do, and on a shared machine the slower runs measure the neighbours.

use std::time::Duration;

use crate::error::BenchError;
use crate::progress::thousands;
use crate::report::Row;
use crate::{BENCH_CHANNEL, Bench};

/// Runs of each `redis-benchmark` command; the best is reported.
pub const RUNS: usize = 3;

/// Runs `redis-benchmark -c 1 -P 16` and `-c 1 -P 1`, and relates the publish scenario's
/// hub rows to them when that scenario ran.
pub async fn run(bench: &mut Bench) -> Result<(), BenchError> {
    let plan = bench.plan.clone();
    let payload = String::from_utf8_lossy(crate::PAYLOAD_64).into_owned();
    for (pipeline, n, hub_case) in [
        (16u32, plan.ceiling_pipelined, "64 in flight"),
        (1, plan.ceiling_serial, "1 in flight"),
    ] {
        let mut runs = Vec::with_capacity(RUNS);
        for run in 0..RUNS {
            let rps = redis_benchmark(bench, pipeline, n, &payload).await?;
            bench.progress.step(&format!(
                "redis-benchmark -c 1 -P {pipeline} -n {n} (run {}): {} PUBLISH/s",
                run + 1,
                thousands(rps)
            ));
            runs.push(rps);
        }
        let rps = runs.iter().copied().fold(0.0, f64::max);
        let case = format!("-c 1 -P {pipeline}");
        let all = runs.iter().map(|r| thousands(*r)).collect::<Vec<_>>();
        bench.report.push(
            Row::plain("ceiling", &case, "redis-benchmark", "msg/s", rps)
                .note(format!("best of {RUNS}: {}", all.join(" / "))),
        );
        if let Some(hub) = bench.report.value("publish", hub_case, "hub") {
            bench.report.push(
                Row::plain("ceiling", &case, &format!("hub, {hub_case}"), "msg/s", hub)
                    .against("redis-benchmark", rps),
            );
        }
    }
    Ok(())
}

async fn redis_benchmark(
    bench: &Bench,
    pipeline: u32,
    n: u64,
    payload: &str,
) -> Result<f64, BenchError> {
    let binary = &bench.redis_benchmark;
    let run = tokio::process::Command::new(binary)
        .args(["-h", "127.0.0.1", "-p", &bench.redis.port().to_string()])
        .args(["-c", "1", "-P", &pipeline.to_string(), "-n", &n.to_string()])
        .arg("--csv")
        .args(["PUBLISH", BENCH_CHANNEL, payload])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .map_err(|_| BenchError::new(format!("{binary} did not finish within 60 s")))?
        .map_err(|e| {
            BenchError::new(format!(
                "cannot run {binary}: {e} (install redis-tools or pass --redis-benchmark PATH)"
            ))
        })?;
    if !out.status.success() {
        return Err(BenchError::new(format!(
            "{binary} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_csv_rps(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| BenchError::new(format!("cannot read {binary}'s CSV output")))
}

/// The `rps` column of redis-benchmark's `--csv` output (the first data row).
pub fn parse_csv_rps(csv: &str) -> Option<f64> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = split_csv(lines.next()?);
    let col = header.iter().position(|h| h == "rps")?;
    let row = split_csv(lines.next()?);
    row.get(col)?.parse().ok()
}

/// Splits one CSV line of double-quoted fields (redis-benchmark's format).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_redis_benchmark_csv() {
        let csv =
            "\"test\",\"rps\",\"avg_latency_ms\"\n\"PUBLISH ch x,y\",\"692041.50\",\"0.021\"\n";
        assert_eq!(parse_csv_rps(csv), Some(692041.5));
        assert_eq!(parse_csv_rps(""), None);
    }
}

//! The `pubsub-hub-bench` binary as a process: a quick run of every scenario on its own
//! private redis-server, bounded in time.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pubsub_hub_testkit::{
    assert_exit_code as assert_exit, run_to_exit, stderr_text as stderr, stdout_text as stdout,
};
use serde_json::Value;

/// Runs the bench to completion within `timeout` (killing and failing the test otherwise),
/// with no stdin and none of the environment that would point it elsewhere.
fn run(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .env_remove("REDIS_URL")
        .env_remove("RUST_LOG");
    run_to_exit(cmd, timeout)
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pubsub-hub-bench"))
}

#[test]
fn an_unknown_scenario_is_a_usage_error() {
    let mut bench = bin();
    bench.args(["--scenario", "nosuch"]);
    let o = run(bench, Duration::from_secs(10));
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("nosuch"), "{}", stderr(&o));
}

#[test]
fn bench_quick_reports_every_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("latency.svg");
    let mut bench = bin();
    bench.args(["--quick", "--json", "--svg"]).arg(&svg);
    // The deadline only guards against a hang: how fast the quick run is depends on how
    // busy the machine is, and speed is measured by the bench itself, not asserted here.
    let start = Instant::now();
    let o = run(bench, Duration::from_secs(300));
    assert_exit(&o, 0);
    eprintln!("quick run took {:?}", start.elapsed());
    let doc: Value = serde_json::from_str(&stdout(&o)).expect("JSON report");
    let rows = doc["rows"].as_array().expect("rows");
    let has = |scenario: &str, case: &str, variant: &str| {
        rows.iter().any(|r| {
            r["scenario"] == scenario
                && r["case"].as_str().unwrap().starts_with(case)
                && r["variant"].as_str().unwrap().starts_with(variant)
        })
    };
    for n in ["1 ", "16 ", "64 "] {
        assert!(has("publish", n, "hub"), "publish {n}");
        assert!(has("publish", n, "raw"), "publish {n} raw");
        assert!(has("publish", n, "fred"), "publish {n} fred");
    }
    for n in ["1 ", "10 ", "100 "] {
        for v in ["raw", "hub (dedicated)", "hub (shared", "fred"] {
            assert!(has("fanout", n, v), "fanout {n} {v}");
            assert!(has("latency", n, v), "latency {n} {v}");
        }
    }
    assert!(has("ceiling", "-c 1 -P 16", "redis-benchmark"));
    assert!(has("ceiling", "-c 1 -P 1", "redis-benchmark"));
    for v in ["raw", "hub (dedicated)", "hub (shared"] {
        assert!(has("memory", "100 ", v), "memory 100 {v}");
        assert!(has("memory", "1000 ", v), "memory 1000 {v}");
    }
    for n in ["3 ", "200 "] {
        assert!(has("dashboard", n, "POST /publish"));
        assert!(has("dashboard", n, "GET /state"));
        assert!(has("dashboard", n, "GET /state without gzip"));
    }
    for v in ["gateway", "socket.io"] {
        assert!(has("gateway", "100 clients", v), "gateway {v}");
    }
    assert!(has("history", "16 in flight", "publish with history"));
    assert!(has("history", "recover 10,000", "gateway subscribe reply"));
    let ratios = rows.iter().filter(|r| r["ratio"].is_number()).count();
    assert!(ratios > 20, "rows carry ratios against a baseline");
    assert_eq!(doc["latency_curves"].as_array().unwrap().len(), 12);
    let chart = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(chart.starts_with("<svg") && chart.contains("<polyline"));
    assert!(stderr(&o).contains("== dashboard"), "progress on stderr");
}

#[test]
fn the_history_scenario_measures_publish_recovery_and_memory() {
    let mut bench = bin();
    bench.args(["--quick", "--json", "--scenario", "history"]);
    let o = run(bench, Duration::from_secs(300));
    assert_exit(&o, 0);
    let doc: Value = serde_json::from_str(&stdout(&o)).expect("JSON report");
    let rows = doc["rows"].as_array().expect("rows");
    assert!(rows.iter().all(|r| r["scenario"] == "history"), "{rows:?}");
    let row = |case: &str, variant: &str| {
        rows.iter()
            .find(|r| r["case"] == case && r["variant"] == variant)
            .unwrap_or_else(|| panic!("no row {case} / {variant} in {rows:?}"))
    };
    let publish = row("16 in flight", "publish with history");
    assert_eq!(publish["baseline_label"], "without history");
    assert!(publish["value"].as_f64().unwrap() > 0.0, "{publish}");
    assert!(publish["ratio"].as_f64().unwrap() > 0.0, "{publish}");
    // The scenario itself fails unless every one of the 10,000 came back in order, so a
    // row here means a complete recovery was timed.
    for variant in ["gateway subscribe reply", "library history read"] {
        let recover = row("recover 10,000 missed", variant);
        assert!(recover["value"].as_f64().unwrap() > 0.0, "{recover}");
    }
    // 10,000 entries of 64 bytes cannot take less than 64 bytes each.
    let memory = row("memory", "per 1,000 publications kept");
    assert!(memory["value"].as_f64().unwrap() >= 64_000.0, "{memory}");
}

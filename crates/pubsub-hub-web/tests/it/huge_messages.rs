//! One huge message at a time must not blow the dashboard's memory: three 7 MB JSON
//! messages published by `redis-cli` to a channel the dashboard watches, then `GET /state`.
//! The ring buffer keeps previews (the dashboard's budget is 256 KiB per subscriber),
//! `/state` decodes only what it shows, and no consumer queue holds them.
//!
//! The measure is a process's resident set (`VmRSS` of `/proc/self/status`). The
//! measurement runs in a child process: the suite's binary re-run with only this test
//! selected and an environment variable, so nothing else runs in the measured process and
//! its allocator can be set up as a deployment would.
//!
//! Why two runs: with glibc's default tuning, freeing a block of several MiB raises the
//! allocator's mmap threshold to that size, so the next such blocks (redis-rs's copy of a
//! message while it parses it, and the hub's copy) come from the heap, and up to twice the
//! threshold of freed heap may stay in the process per arena for reuse. RSS then measures
//! the allocator's cache, not what the dashboard holds, and varies from run to run
//! (between about 8 and 36 MiB of growth here, with the same 12 KiB of payload held). So the RSS
//! bound is asserted with a fixed threshold (`MALLOC_MMAP_THRESHOLD_=131072`, which an
//! operator can set the same way); the run with the default tuning asserts what the hub
//! holds and prints its RSS for the record.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{Live, WAIT, sub};
use pubsub_hub::Payload;

/// Size of each published message.
const PAYLOAD_BYTES: usize = 7 * 1024 * 1024;

/// Resident set size of this process, in bytes, from `/proc/self/status`.
fn rss_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc is mounted");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A JSON document of about `bytes` bytes made of many small objects, the shape whose
/// parsed form costs several times its text.
fn big_json(bytes: usize, seed: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 128);
    out.extend_from_slice(b"{\"items\":[");
    let mut i = 0;
    while out.len() < bytes {
        if i > 0 {
            out.push(b',');
        }
        write!(
            out,
            r#"{{"id":{i},"seed":{seed},"name":"item-{i:08}","tags":["a","b"],"ok":true}}"#
        )
        .unwrap();
        i += 1;
    }
    out.extend_from_slice(b"]}");
    out
}

/// `redis-cli -x PUBLISH channel` with `payload` on stdin; returns the receiver count.
fn redis_cli_publish(live: &Live, channel: &str, payload: &[u8]) -> i64 {
    let mut child = Command::new("redis-cli")
        .args(["-u", &live.server.url(), "-x", "PUBLISH", channel])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli runs");
    child.stdin.take().unwrap().write_all(payload).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .trim_start_matches("(integer) ")
        .parse()
        .unwrap_or_else(|_| panic!("redis-cli said {text:?}"))
}

/// Lets freed memory settle (the allocator returns large blocks at once; give the
/// runtime's tasks a moment to drop what they hold), then samples `VmRSS`.
async fn settled_rss() -> u64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    rss_bytes("VmRSS:")
}

/// Tells the child process which allocator tuning it runs with.
const RUN_VAR: &str = "PUBSUB_HUB_WEB_HUGE_MESSAGES_RUN";

/// The one test: runs the measurement in two child processes, or is that child.
#[test]
fn three_huge_messages_grow_rss_by_at_most_two_payloads_and_it_comes_back() {
    match std::env::var(RUN_VAR).ok().as_deref() {
        Some("fixed") => measure(true),
        Some(_) => measure(false),
        None => {
            run_child("fixed", &[("MALLOC_MMAP_THRESHOLD_", "131072")]);
            run_child("default", &[]);
        }
    }
}

/// Re-runs this test in a child process with `env`, failing if it fails or hangs.
fn run_child(run: &str, env: &[(&str, &str)]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = runtime.block_on(async {
        // The test's name as the harness knows it: its module path without the crate's.
        let name = format!(
            "{}::three_huge_messages_grow_rss_by_at_most_two_payloads_and_it_comes_back",
            module_path!().split_once("::").map_or("", |(_, m)| m)
        );
        let child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([name.as_str(), "--exact", "--nocapture"])
            .env(RUN_VAR, run)
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(Duration::from_secs(120), child)
            .await
            .expect("the measurement finishes")
            .expect("the test binary runs again")
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- {run} allocator tuning ---\n{stderr}");
    assert!(out.status.success(), "the {run} run failed:\n{stderr}");
}

/// The measurement; `strict`: the RSS bound is asserted too.
fn measure(strict: bool) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(measure_async(strict));
}

async fn measure_async(strict: bool) {
    let live = Live::start().await;
    // Warm up: the first /state, the first publish and delivery allocate what every later
    // one reuses (runtime, buffers, caches).
    live.state().await;
    assert_eq!(redis_cli_publish(&live, "orders:new", br#"{"warm":1}"#), 1);
    live.wait_state("the warm-up message arrived", |s| {
        sub(s, "orders-listener")["received_total"] == 1
    })
    .await;
    live.state().await;
    // The messages are built before the baseline, so they are not counted as growth; the
    // test process holds them, not the dashboard.
    let payloads: Vec<Vec<u8>> = (0..3).map(|seed| big_json(PAYLOAD_BYTES, seed)).collect();
    let before = settled_rss().await;

    for payload in &payloads {
        assert_eq!(redis_cli_publish(&live, "orders:new", payload), 1);
    }
    let state = tokio::time::timeout(
        WAIT,
        live.wait_state("the three messages arrived", |s| {
            // Counted a moment before they enter the ring buffer: wait for both.
            let listener = sub(s, "orders-listener");
            listener["received_total"] == 4
                && listener["messages"]
                    .as_array()
                    .is_some_and(|m| m.len() == 4)
        }),
    )
    .await
    .expect("delivered in time");
    let after_publish = settled_rss().await;

    // What /state shows: the newest first, each a preview with its true size.
    let reply = live.get("/state").await;
    assert_eq!(reply.status, 200);
    let body_bytes = reply.body.len();
    let state_now = reply.json();
    let after_state = settled_rss().await;
    let held = live.hub.memory();

    // The previews leave the ring buffer as ordinary messages push them out.
    for n in 0..60 {
        let body = format!(r#"{{"n":{n}}}"#);
        assert_eq!(redis_cli_publish(&live, "orders:new", body.as_bytes()), 1);
    }
    live.wait_state("the previews were evicted", |s| {
        sub(s, "orders-listener")["received_total"] == 64
    })
    .await;
    live.state().await;
    let after_eviction = settled_rss().await;
    let views = Payload::cached_view_bytes();

    let growth = |now: u64| now.saturating_sub(before);
    eprintln!(
        "RSS: before {:.1} MiB; after 3 x {:.1} MiB published {:.1} MiB (+{:.1}); after \
         GET /state {:.1} MiB (+{:.1}); after eviction {:.1} MiB (+{:.1}); peak (VmHWM) \
         {:.1} MiB; held {held:?}; cached JSON views {views} bytes; /state {body_bytes} bytes",
        mib(before),
        mib(PAYLOAD_BYTES as u64),
        mib(after_publish),
        mib(growth(after_publish)),
        mib(after_state),
        mib(growth(after_state)),
        mib(after_eviction),
        mib(growth(after_eviction)),
        mib(rss_bytes("VmHWM:")),
    );

    for shown in [&state, &state_now] {
        let messages = sub(shown, "orders-listener")["messages"]
            .as_array()
            .unwrap();
        assert_eq!(messages.len(), 4, "three previews and the warm-up message");
        for (m, payload) in messages.iter().zip(payloads.iter().rev()) {
            assert_eq!(m["size"], payload.len(), "{m}");
            assert_eq!(m["truncated"], true);
            assert_eq!(m["encoding"], "json");
            let text = m["payload"].as_str().expect("a preview is shown as text");
            assert!(text.len() <= 2048);
            assert!(payload.starts_with(text.as_bytes()));
        }
    }
    assert!(body_bytes < 64 * 1024, "/state is {body_bytes} bytes");
    assert!(
        held.buffered_bytes <= 3 * pubsub_hub::PAYLOAD_PREVIEW_BYTES as u64 + 64,
        "{held:?}"
    );
    assert_eq!(held.queued_bytes, 0, "{held:?}");
    assert!(views < 1024 * 1024, "{views} bytes of cached JSON views");
    let bound = 2 * PAYLOAD_BYTES as u64;
    if strict {
        assert!(
            growth(after_state) <= bound,
            "RSS grew by {:.1} MiB after GET /state (bound: {:.1} MiB)",
            mib(growth(after_state)),
            mib(bound)
        );
        assert!(
            growth(after_eviction) <= bound,
            "RSS grew by {:.1} MiB once the messages were evicted",
            mib(growth(after_eviction))
        );
    }
    drop(payloads);
    live.stop().await;
}

//! Runs the guide's example program (`examples/guide.rs`, unchanged but for the removed
//! `mod pubsub_hub;`) against a private redis-server. The program insists on
//! localhost:6379, so the server and the program run together in a fresh network namespace
//! where that port is ours (this needs root and `unshare`, as on our dev and CI machines).

use std::path::PathBuf;
use std::process::Command;

fn example_binary() -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>/examples/guide
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = profile_dir.join("examples").join("guide");
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds examples; run the tests with it",
        path.display()
    );
    path
}

#[test]
fn guide_example_runs_against_private_redis() {
    let example = example_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let script = format!(
        r#"set -e
ip link set lo up
redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no --dir {dir} --logfile {dir}/redis.log --daemonize yes
for i in $(seq 1 200); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.02; done
set +e
timeout 30 {example}
code=$?
echo "NUMSUB $(redis-cli -p 6379 pubsub numsub orders:new | tail -1) NUMPAT $(redis-cli -p 6379 pubsub numpat)"
redis-cli -p 6379 shutdown nosave >/dev/null 2>&1
exit $code
"#,
        dir = dir.path().display(),
        example = example.display()
    );
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .output()
        .expect("unshare runs (the test needs root)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "example failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}\nredis log:\n{log}",
        out.status
    );
    assert!(
        stdout.contains("Redis delivered to 1 subscriber(s)"),
        "stdout:\n{stdout}"
    );
    assert!(
        stdout.contains("all-notifications 0 messages"),
        "stdout:\n{stdout}"
    );
    assert!(stdout.contains("orders-listener "), "stdout:\n{stdout}");
    // After unsubscribe + shutdown nothing of the example is subscribed any more.
    assert!(stdout.contains("NUMSUB 0 NUMPAT 0"), "stdout:\n{stdout}");
}

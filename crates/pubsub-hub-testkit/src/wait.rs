//! Polling helpers with mandatory timeouts.

use std::future::Future;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Interval between two polls of a condition.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `f` until it returns `true`; `Err(elapsed)` once `timeout` has
/// passed. `f` is always called at least once, and once more after the
/// deadline, so a condition that became true while we slept is not missed.
pub(crate) fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Result<(), Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Ok(());
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(elapsed);
        }
        std::thread::sleep(POLL_INTERVAL.min(timeout - elapsed));
    }
}

/// Polls `f` every ~10 ms until it returns `true`.
///
/// # Panics
///
/// Panics with a message naming `what` and the elapsed time if `f` has not
/// returned `true` within `timeout`.
///
/// ```no_run
/// use std::time::Duration;
/// use pubsub_hub_testkit::wait_until;
///
/// let flag = std::sync::atomic::AtomicBool::new(true);
/// wait_until(Duration::from_secs(5), "flag is set", || {
///     flag.load(std::sync::atomic::Ordering::SeqCst)
/// });
/// ```
pub fn wait_until(timeout: Duration, what: &str, f: impl FnMut() -> bool) {
    if let Err(elapsed) = poll_until(timeout, f) {
        panic!("timed out after {elapsed:?} (timeout {timeout:?}) waiting until {what}");
    }
}

/// Async version of [`wait_until`] for tokio tests: awaits `f()` every ~10 ms
/// (sleeping with `tokio::time::sleep` in between) until it yields `true`.
///
/// The timeout is measured with wall-clock time ([`Instant`]), so it also
/// holds when tokio's clock is paused.
///
/// # Panics
///
/// Panics with a message naming `what` and the elapsed time if `f` has not
/// yielded `true` within `timeout`.
pub async fn wait_until_async<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        // A single poll that never completes must not hang the test either.
        let remaining = timeout.saturating_sub(start.elapsed());
        if let Ok(true) = tokio::time::timeout(remaining.max(POLL_INTERVAL), f()).await {
            return;
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            panic!("timed out after {elapsed:?} (timeout {timeout:?}) waiting until {what}");
        }
        tokio::time::sleep(POLL_INTERVAL.min(timeout - elapsed)).await;
    }
}

/// Waits for `child` to exit within `timeout` and returns its output (pipe stdout and stderr
/// to see them); otherwise kills it and panics with what it printed.
pub fn child_output(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "the process did not exit within {timeout:?}; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Runs `cmd` with stdout and stderr piped and returns its output once it exits, within
/// `timeout` (see [`child_output`]).
pub fn run_to_exit(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    child_output(child, timeout)
}

/// What a process wrote on stdout, as text (invalid UTF-8 replaced).
pub fn stdout_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What a process wrote on stderr, as text (invalid UTF-8 replaced).
pub fn stderr_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Fails unless the process exited with `code`, showing what it printed.
pub fn assert_exit_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status; stdout: {}; stderr: {}",
        stdout_text(output),
        stderr_text(output)
    );
}

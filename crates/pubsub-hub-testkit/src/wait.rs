//! Polling helpers with mandatory timeouts.

use std::future::Future;
use std::process::{Child, Output};
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

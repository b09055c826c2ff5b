//! Node.js scenarios run from Rust tests: the real clients (the `centrifuge` SDK, Chromium
//! through `playwright-core`) are JavaScript, and the tests that drive them start `node` on a
//! script and answer what it asks of the Rust side.
//!
//! - [`npm_ci`] installs a test package's dependencies from its lock file when they are
//!   missing or older than it, one install at a time per process: `npm ci` deletes
//!   `node_modules` before writing it again, which would pull the modules from under a
//!   scenario another test thread is running.
//! - [`run_node`] runs `node SCRIPT ARGS...`, prints and keeps every line it writes, and
//!   answers each `control: <request>` line with the callback's one-line answer on its stdin.
//! - [`chromium_path`] and [`artifact_dir`]: Debian's Chromium (or `CHROMIUM_PATH`) and
//!   `target/artifacts/` for screenshots; [`browser_turn`] runs one browser scenario at a
//!   time per process.
//!
//! Every wait is bounded: the install by [`INSTALL_TIMEOUT`], a scenario by its caller's limit.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// What to do when node, npm or Chromium is missing.
pub const SETUP_HINT: &str = "run scripts/setup: it installs node, npm and chromium \
     (Debian packages) and runs npm ci in the test packages";

/// Bound on one `npm ci` (a handful of packages from the registry).
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Chromium for browser scenarios: `CHROMIUM_PATH`, else Debian's `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Waits for this process's browser slot and holds it until the guard drops. A test that
/// runs a Chromium scenario holds it for the whole run: two Chromiums starting together
/// next to the rest of a parallel test run on a two-core machine made a start take most
/// of a scenario's time limit. Waiting here is not counted in that limit.
pub async fn browser_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    BROWSER.lock().await
}

/// Where scenarios save screenshots: `artifacts/` in `CARGO_TARGET_DIR`, else in the
/// workspace's `target/`.
pub fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("artifacts")
}

/// Installs `dir`'s npm dependencies from its `package-lock.json` unless an install at
/// least as new as the lock file is there (npm writes `node_modules/.package-lock.json`
/// last, so a finished install is newer); fails the test, with [`SETUP_HINT`], when node
/// or npm is missing or the install fails or outlasts [`INSTALL_TIMEOUT`]. One install at a
/// time in this process; a caller that waited finds the install done and returns.
pub async fn npm_ci(dir: &Path) {
    static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _only_one = INSTALL.lock().await;

    let mut node = Command::new("node");
    node.arg("--version").kill_on_drop(true);
    let version = tokio::time::timeout(Duration::from_secs(30), node.output())
        .await
        .expect("node --version within 30 s")
        .unwrap_or_else(|e| panic!("cannot run node ({e}); {SETUP_HINT}"));
    assert!(version.status.success(), "node does not run: {SETUP_HINT}");

    let modified = |p: &Path| -> Option<SystemTime> { std::fs::metadata(p).ok()?.modified().ok() };
    let installed = modified(&dir.join("node_modules/.package-lock.json"));
    let lock = modified(&dir.join("package-lock.json"));
    if matches!((installed, lock), (Some(i), Some(l)) if i >= l) {
        return;
    }
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .kill_on_drop(true);
    let output = tokio::time::timeout(INSTALL_TIMEOUT, npm.output())
        .await
        .unwrap_or_else(|_| panic!("npm ci in {}: over {INSTALL_TIMEOUT:?}", dir.display()))
        .unwrap_or_else(|e| panic!("cannot run npm ({e}); {SETUP_HINT}"));
    assert!(
        output.status.success(),
        "npm ci in {} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// How a [`run_node`] scenario ended.
#[derive(Debug)]
pub struct NodeRun {
    /// Its exit status; `None` when it was still running at the limit (it was killed).
    pub status: Option<ExitStatus>,
    /// Every line it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr (up to its kill when it was killed).
    pub stderr: String,
}

impl NodeRun {
    /// True when it exited with status 0 and printed a line equal to `marker`.
    pub fn passed(&self, marker: &str) -> bool {
        self.status.is_some_and(|s| s.success()) && self.stdout.lines().any(|l| l == marker)
    }

    /// The exit (or the time-out) with both outputs, for a failure message.
    pub fn describe(&self) -> String {
        let ended = match self.status {
            Some(s) => format!("exit: {s}"),
            None => "still running at its time limit (killed)".to_owned(),
        };
        format!(
            "{ended}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Runs `node` with `args` in `dir` (with `CHROMIUM_PATH` set to [`chromium_path`]) for at
/// most `limit`. Each line it prints is printed here too and kept; a line
/// `control: <request>` is answered by writing `control(request)` and a newline to its
/// stdin. Fails the test only when `node` cannot be started; a failed or timed-out scenario
/// is reported in the [`NodeRun`].
pub async fn run_node<A: AsRef<OsStr>>(
    dir: &Path,
    args: &[A],
    limit: Duration,
    mut control: impl AsyncFnMut(&str) -> String,
) -> NodeRun {
    let mut node = Command::new("node");
    node.args(args)
        .env("CHROMIUM_PATH", chromium_path())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = node
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); {SETUP_HINT}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr_text = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let mut stdout = String::new();
    let scenario = async {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{line}");
            stdout.push_str(&line);
            stdout.push('\n');
            if let Some(request) = line.strip_prefix("control: ") {
                let mut answer = control(request).await;
                answer.push('\n');
                // A scenario that exits without reading its answer is judged by its status.
                let _ = stdin.write_all(answer.as_bytes()).await;
            }
        }
        child.wait().await.ok()
    };
    let status = tokio::time::timeout(limit, scenario).await.ok().flatten();
    if status.is_none() {
        // Killing closes its stderr, so what it wrote before the limit can still be read.
        let _ = child.start_kill();
    }
    let stderr = match tokio::time::timeout(Duration::from_secs(5), stderr_text).await {
        Ok(text) => text.unwrap_or_default(),
        Err(_) => "(stderr still open 5 s after the end: a child process of the scenario \
                   holds it)"
            .to_owned(),
    };
    NodeRun {
        status,
        stdout,
        stderr,
    }
}

//! Shared by every module: the binary with a clean environment, a running process whose
//! output lines arrive on channels, and the one bound on waits.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pubsub_hub_testkit::{ADMIN_CLIENT_NAME, RedisServer};

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(15);

/// The binary with a clean environment: no Redis settings, `PUBSUB_HUB_*` settings or log
/// filter from the caller, and no stdin.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pubsub-hub"));
    for var in [
        "REDIS_URL",
        "REDIS_HOST",
        "REDIS_PORT",
        "RUST_LOG",
        "NO_COLOR",
    ] {
        c.env_remove(var);
    }
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("PUBSUB_HUB_") {
            c.env_remove(var);
        }
    }
    c.stdin(Stdio::null());
    c
}

/// Connections in `server`'s CLIENT LIST that are not the test kit's own.
pub fn ours(server: &RedisServer) -> usize {
    server
        .client_list()
        .iter()
        .filter(|c| c.name != ADMIN_CLIENT_NAME)
        .count()
}

/// A running process whose stdout and stderr lines arrive on channels; killed on drop.
pub struct Running {
    pub child: Child,
    pub out: mpsc::Receiver<String>,
    pub err: mpsc::Receiver<String>,
}

impl Running {
    /// Starts `cmd` with its stdout and stderr piped.
    pub fn spawn(mut cmd: Command) -> Running {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the process starts");
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        Running { child, out, err }
    }

    /// The next stdout line; `what` names it in the failure.
    pub fn next_line(&self, what: &str) -> String {
        self.out
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no stdout line ({what}) within {WAIT:?}"))
    }

    /// Waits for a stderr line containing `needle`.
    pub fn stderr_containing(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.err.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no stderr line containing {needle:?} within {WAIT:?}; saw {seen:?}");
    }

    /// Sends signal `sig` (`TERM`, `INT`) with `kill`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for exit within `timeout`; returns the exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        self.wait_timed(timeout).0
    }

    /// Waits for exit within `timeout`; the exit code and how long it took.
    pub fn wait_timed(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("the process did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Open file descriptors of the process: what each one is (`socket:[...]`, a path).
    pub fn fds(&self) -> Vec<String> {
        let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("the process' fd directory")
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|t| t.display().to_string())
            .collect();
        fds.sort();
        fds
    }

    /// [`Running::fds`] once two looks 50 ms apart agree: a connection that just answered
    /// may still be closing.
    pub fn settled_fds(&self) -> Vec<String> {
        let started = Instant::now();
        let mut before = self.fds();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.fds();
            if now == before || started.elapsed() > WAIT {
                return now;
            }
            before = now;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of `r`, read on a thread of their own.
pub fn lines(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// One HTTP/1.1 request on a fresh blocking connection (`Connection: close`, the given
/// header lines, `body` with its length); the status code and the body (lossy UTF-8),
/// within [`WAIT`].
pub fn http_exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_response(port, method, path, headers, body);
    (status, body)
}

/// As [`http_exchange`], with the response head (status line and headers) too: the
/// status, the head and the body.
pub fn http_response(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("a response within the timeout");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_owned(), b.to_owned()))
        .unwrap_or((response.clone(), String::new()));
    (status, head, body)
}

//! The bench's private `redis-server`.
//!
//! A launcher of its own rather than the test kit: the kit is a `publish = false` test
//! dependency, and the bench needs settings a test server does not (`maxclients` sized for
//! 10,000 subscribers, no pub/sub output-buffer limit).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::error::CliError;

/// How long `redis-server` gets to answer PING after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process on `127.0.0.1:<free port>`, killed on drop.
pub struct BenchRedis {
    child: Child,
    port: u16,
    version: String,
    /// Holds the log file; removed on drop.
    dir: tempfile::TempDir,
}

impl BenchRedis {
    /// Starts `binary` on a free loopback port and waits until it answers PING. Retries on a
    /// new port if another process takes the chosen one first.
    pub fn start(binary: &str, maxclients: u64) -> Result<BenchRedis, CliError> {
        BenchRedis::start_with(binary, maxclients, &[])
    }

    /// [`BenchRedis::start`] with more `redis-server` arguments (`--cluster-enabled yes`).
    pub fn start_with(
        binary: &str,
        maxclients: u64,
        extra: &[&str],
    ) -> Result<BenchRedis, CliError> {
        let version = server_version(binary)?;
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let dir = tempfile::Builder::new()
                .prefix("pubsub-hub-bench-")
                .tempdir()
                .map_err(|e| {
                    CliError::failure(format!("cannot create a temporary directory: {e}"))
                })?;
            let log = dir.path().join("redis.log");
            let maxclients = maxclients.to_string();
            let port_arg = port.to_string();
            let child = std::process::Command::new(binary)
                .args(["--port", &port_arg, "--bind", "127.0.0.1", "--save", ""])
                .args(["--appendonly", "no", "--daemonize", "no"])
                .args(["--maxclients", &maxclients])
                // A slow receiver is what we measure: never disconnect it.
                .args(["--client-output-buffer-limit", "pubsub", "0", "0", "0"])
                .args(extra)
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| CliError::failure(format!("cannot start {binary}: {e}")))?;
            let mut server = BenchRedis {
                child,
                port,
                version: version.clone(),
                dir,
            };
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = e,
            }
        }
        Err(CliError::failure(format!(
            "the private redis-server did not start: {last_error}"
        )))
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited with {status}: {}", self.log_tail()));
            }
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("no answer to PING within {START_TIMEOUT:?}"))
    }

    /// The last lines of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(3).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis-server --version`'s `v=` field.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A redis-rs client.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a loopback URL parses")
    }

    /// A fresh multiplexed connection for admin commands and raw publishing, with the
    /// hub's default response time-out (2 s) rather than redis-rs' 500 ms, so that both
    /// sides of a comparison give up at the same point.
    pub async fn connection(&self) -> Result<MultiplexedConnection, CliError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(pubsub_hub::DEFAULT_COMMAND_TIMEOUT));
        self.client()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| {
                CliError::failure(format!("cannot connect to the private redis-server: {e}"))
            })
    }
}

impl Drop for BenchRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `maxclients` for the private server: room for 10,000 subscribers plus the bench's own
/// connections, within the file-descriptor limit redis-server inherits.
pub fn wanted_maxclients() -> u64 {
    let limit = open_files_limit().unwrap_or(1024);
    limit.saturating_sub(64).clamp(128, 12_000)
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn server_version(binary: &str) -> Result<String, CliError> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| {
            CliError::failure(format!(
                "cannot run {binary}: {e} (install redis-server or pass --redis-server PATH)"
            ))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or("unknown")
        .to_owned())
}

/// A port that was free a moment ago: bound on 127.0.0.1:0, then released.
fn free_port() -> Result<u16, CliError> {
    for _ in 0..20 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| CliError::failure(format!("cannot bind a loopback port: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| CliError::failure(format!("cannot read a bound port: {e}")))?
            .port();
        // Never the machine's own Redis port, whatever the kernel hands out.
        if port != 6379 && port != 6380 {
            return Ok(port);
        }
    }
    Err(CliError::failure("no free loopback port"))
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// An integer field of `INFO <section>`.
pub async fn info_int(
    conn: &mut MultiplexedConnection,
    section: &str,
    field: &str,
) -> Result<i64, CliError> {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .map_err(|e| CliError::failure(format!("INFO {section}: {e}")))?;
    info.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
        .ok_or_else(|| CliError::failure(format!("INFO {section} has no {field}")))
}

/// `PUBSUB NUMSUB channel`.
pub async fn numsub(conn: &mut MultiplexedConnection, channel: &str) -> Result<i64, CliError> {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await
        .map_err(|e| CliError::failure(format!("PUBSUB NUMSUB: {e}")))?;
    Ok(n)
}

/// Polls `PUBSUB NUMSUB channel` every 5 ms until it is `n`; fails after `timeout`.
pub async fn wait_numsub(
    conn: &mut MultiplexedConnection,
    channel: &str,
    n: i64,
    timeout: Duration,
) -> Result<(), CliError> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = numsub(conn, channel).await?;
        if now == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CliError::failure(format!(
                "PUBSUB NUMSUB {channel} stayed at {now}, expected {n}, for {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `INFO clients` until `connected_clients` is at most `n`; fails after `timeout`.
pub async fn wait_clients_at_most(
    conn: &mut MultiplexedConnection,
    n: i64,
    timeout: Duration,
) -> Result<(), CliError> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = info_int(conn, "clients", "connected_clients").await?;
        if now <= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CliError::failure(format!(
                "Redis still has {now} clients (expected at most {n}) after {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

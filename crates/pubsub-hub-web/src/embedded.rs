//! A private, throwaway `redis-server` for when nothing answers at the configured address.
//!
//! It listens on a free loopback port, keeps its files in a temporary directory, persists
//! nothing (`--save "" --appendonly no`), and is killed when the [`EmbeddedRedis`] is
//! dropped, so the dashboard leaves nothing behind.

use std::fmt;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a freshly started server gets to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Ports tried before giving up (another process may take a free port before we bind it).
const ATTEMPTS: usize = 3;

/// Why the embedded server could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// `redis-server` is not on the PATH.
    NotInstalled,
    /// It is installed but did not start or did not answer.
    Failed(String),
}

impl fmt::Display for EmbeddedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmbeddedError::NotInstalled => f.write_str("redis-server is not on PATH"),
            EmbeddedError::Failed(why) => write!(f, "the private redis-server failed: {why}"),
        }
    }
}

impl std::error::Error for EmbeddedError {}

/// A running private `redis-server`; dropping it kills the process and removes its files.
pub struct EmbeddedRedis {
    /// The process; killed and reaped on drop.
    child: Child,
    port: u16,
    /// Its working directory and log; removed on drop, after the process is gone.
    dir: tempfile::TempDir,
}

impl EmbeddedRedis {
    /// Starts `redis-server` on a free port of 127.0.0.1 and waits until it answers PING.
    /// Blocks for at most a few seconds; call it from `spawn_blocking` in async code.
    pub fn start() -> Result<Self, EmbeddedError> {
        let mut last_error = String::new();
        for _ in 0..ATTEMPTS {
            match Self::try_start() {
                Ok(server) => return Ok(server),
                Err(EmbeddedError::Failed(why)) => last_error = why,
                Err(other) => return Err(other),
            }
        }
        Err(EmbeddedError::Failed(last_error))
    }

    fn try_start() -> Result<Self, EmbeddedError> {
        let dir = tempfile::Builder::new()
            .prefix("pubsub-hub-redis-")
            .tempdir()
            .map_err(|e| EmbeddedError::Failed(format!("cannot create a temp dir: {e}")))?;
        let port = free_port().map_err(|e| EmbeddedError::Failed(format!("no free port: {e}")))?;
        let log = dir.path().join("redis.log");
        let spawned = Command::new("redis-server")
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(EmbeddedError::NotInstalled);
            }
            Err(e) => {
                return Err(EmbeddedError::Failed(format!(
                    "cannot run redis-server: {e}"
                )));
            }
        };
        let mut server = EmbeddedRedis { child, port, dir };
        server.wait_ready()?;
        Ok(server)
    }

    /// Polls until PING answers, the process exits, or [`READY_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(EmbeddedError::Failed(format!(
                    "redis-server exited ({status}): {}",
                    log_tail(&self.dir.path().join("redis.log"))
                )));
            }
            if ping(self.addr()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(EmbeddedError::Failed(format!(
                    "redis-server did not answer PING within {READY_TIMEOUT:?}: {}",
                    log_tail(&self.dir.path().join("redis.log"))
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The process id, for tests that check it is gone after drop.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for EmbeddedRedis {
    fn drop(&mut self) {
        // Nothing is persisted, so there is nothing to flush: a plain kill is enough.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl fmt::Debug for EmbeddedRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedRedis")
            .field("port", &self.port)
            .field("pid", &self.child.id())
            .finish()
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// True when `addr` answers `PING` with `+PONG`.
fn ping(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}

/// The last lines of the server log, on one line, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    if lines.is_empty() {
        "no log output".into()
    } else {
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

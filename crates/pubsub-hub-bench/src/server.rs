//! The bench's private `redis-server`, started through `pubsub_hub_launcher` with the
//! settings a test server does not need: `maxclients` sized for 10,000 subscribers and no
//! pub/sub output-buffer limit.

use std::time::{Duration, Instant};

use pubsub_hub_launcher::PrivateRedis;
use redis::aio::MultiplexedConnection;

use crate::error::BenchError;

/// A `redis-server` child process on `127.0.0.1:<free port>`, killed on drop.
pub struct BenchRedis {
    server: PrivateRedis,
    port: u16,
    version: String,
}

impl BenchRedis {
    /// Starts `binary` on a free loopback port and waits until it answers PING. Retries on a
    /// new port if another process takes the chosen one first.
    pub fn start(binary: &str, maxclients: u64) -> Result<BenchRedis, BenchError> {
        BenchRedis::start_with(binary, maxclients, &[])
    }

    /// [`BenchRedis::start`] with more `redis-server` arguments (`--cluster-enabled yes`).
    pub fn start_with(
        binary: &str,
        maxclients: u64,
        extra: &[&str],
    ) -> Result<BenchRedis, BenchError> {
        let version = pubsub_hub_launcher::server_version(binary).map_err(|e| {
            BenchError::new(format!(
                "{e} (install redis-server or pass --redis-server PATH)"
            ))
        })?;
        let maxclients = maxclients.to_string();
        let mut args = vec!["--maxclients", maxclients.as_str()];
        // A slow receiver is what we measure: never disconnect it.
        args.extend(["--client-output-buffer-limit", "pubsub", "0", "0", "0"]);
        args.extend(extra);
        let server = PrivateRedis::start_tcp(binary, &args)
            .map_err(|e| BenchError::new(format!("the private redis-server did not start: {e}")))?;
        let port = server.port().expect("a TCP server has a port");
        Ok(BenchRedis {
            server,
            port,
            version,
        })
    }

    /// The last lines of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        self.server.log_tail()
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
        self.server.url()
    }

    /// A redis-rs client.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a loopback URL parses")
    }

    /// A fresh multiplexed connection for admin commands and raw publishing, with the
    /// hub's default response time-out (2 s) rather than redis-rs' 500 ms, so that both
    /// sides of a comparison give up at the same point.
    pub async fn connection(&self) -> Result<MultiplexedConnection, BenchError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(pubsub_hub::DEFAULT_COMMAND_TIMEOUT));
        self.client()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| {
                BenchError::new(format!("cannot connect to the private redis-server: {e}"))
            })
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

/// An integer field of `INFO <section>`.
pub async fn info_int(
    conn: &mut MultiplexedConnection,
    section: &str,
    field: &str,
) -> Result<i64, BenchError> {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .map_err(|e| BenchError::new(format!("INFO {section}: {e}")))?;
    info.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
        .ok_or_else(|| BenchError::new(format!("INFO {section} has no {field}")))
}

/// `PUBSUB NUMSUB channel`.
pub async fn numsub(conn: &mut MultiplexedConnection, channel: &str) -> Result<i64, BenchError> {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await
        .map_err(|e| BenchError::new(format!("PUBSUB NUMSUB: {e}")))?;
    Ok(n)
}

/// Polls `PUBSUB NUMSUB channel` every 5 ms until it is `n`; fails after `timeout`.
pub async fn wait_numsub(
    conn: &mut MultiplexedConnection,
    channel: &str,
    n: i64,
    timeout: Duration,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = numsub(conn, channel).await?;
        if now == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::new(format!(
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
) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = info_int(conn, "clients", "connected_clients").await?;
        if now <= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::new(format!(
                "Redis still has {now} clients (expected at most {n}) after {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

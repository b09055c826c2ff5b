//! Which Redis a long-running front end (the dashboard, the gateway) uses: the configured
//! one, or a private one when the user configured none.
//!
//! The rule, in [`reach_redis`]:
//! 1. Something answers at the address: use it.
//! 2. Nothing answers and the caller allows a private server (only when the user gave no
//!    Redis address at all, so the address is a default guess): start a [`PrivateRedis`] on
//!    a unix socket in a 0700 directory and use it.
//! 3. Nothing answers otherwise: use the address anyway and say so ([`Reached::answered`]
//!    is false). An address the user chose is never silently replaced; the front end
//!    starts, reports itself not ready, and connects when Redis appears, as after any
//!    outage.

use std::time::Duration;

use redis::ConnectionAddr;

use crate::address::display_addr;
use crate::private::PrivateRedis;
use crate::process::LaunchError;

/// How long [`answers`] waits for a connection to be accepted.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The Redis to use, chosen by [`reach_redis`].
#[derive(Debug)]
pub struct Reached {
    /// The client to build the hub from.
    pub client: redis::Client,
    /// The private server, when one was started; keep it alive as long as the client is in
    /// use, and drop it after (that stops the process and removes its files).
    pub private: Option<PrivateRedis>,
    /// False when nothing answered at the configured address and no private server was
    /// allowed: the caller starts anyway and connects later.
    pub answered: bool,
    /// The configured address as shown to people (`host:port`, never credentials).
    pub configured: String,
}

impl Reached {
    /// The address in use, as shown to people: the configured one, or the private server's
    /// socket (`unix:PATH`).
    pub fn addr(&self) -> String {
        display_addr(self.client.get_connection_info().addr())
    }

    /// The start-up line about the private server, when there is one: why it runs and how
    /// to reach it with `redis-cli`.
    pub fn private_note(&self) -> Option<String> {
        let private = self.private.as_ref()?;
        let how = match (private.socket_path(), private.port()) {
            (Some(path), _) => format!(
                "on the unix socket {} (only this user can reach it: redis-cli -s {})",
                path.display(),
                path.display()
            ),
            (None, Some(port)) => format!("on 127.0.0.1:{port} (redis-cli -p {port})"),
            (None, None) => String::new(),
        };
        Some(format!(
            "No Redis address is configured and none answered at {}, so a private throwaway \
             redis-server was started {how}; it saves nothing and stops with this server",
            self.configured
        ))
    }

    /// The warning when nothing answered at a configured address.
    pub fn not_answering_warning(&self) -> Option<String> {
        (!self.answered).then(|| {
            format!(
                "Redis at {} does not answer: starting anyway, and connecting when it does",
                self.configured
            )
        })
    }
}

/// Chooses the Redis to use for `client`'s address by the rule of this module's
/// documentation. `private_fallback` must be true only when the user configured no Redis
/// address at all (no URL, host or port by flag, environment or file) and did not switch the
/// private server off.
///
/// Fails only when a private server was needed and could not be started
/// ([`LaunchError::is_not_installed`] when `redis-server` is missing).
///
/// # Cancel safety
///
/// Dropping the future before it completes leaves nothing behind: a private server whose
/// start was under way is killed and its directory removed as soon as the start finishes.
pub async fn reach_redis(
    client: redis::Client,
    private_fallback: bool,
) -> Result<Reached, LaunchError> {
    let configured = display_addr(client.get_connection_info().addr());
    if answers(client.get_connection_info().addr()).await {
        return Ok(Reached {
            client,
            private: None,
            answered: true,
            configured,
        });
    }
    if !private_fallback {
        return Ok(Reached {
            client,
            private: None,
            answered: false,
            configured,
        });
    }
    let private = tokio::task::spawn_blocking(|| PrivateRedis::start_unix(crate::DEFAULT_BINARY))
        .await
        .map_err(|e| LaunchError::Io {
            doing: "start redis-server".into(),
            source: std::io::Error::other(e.to_string()),
        })??;
    let client = redis::Client::open(private.url()).map_err(|e| LaunchError::Io {
        doing: "open the private server's URL".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(Reached {
        client,
        private: Some(private),
        answered: true,
        configured,
    })
}

/// True when something accepts a connection at `addr` within [`PROBE_TIMEOUT`] (it need
/// not be Redis: the hub's own connection reports what answers).
///
/// # Cancel safety
///
/// Dropping the future closes any connection it opened.
pub async fn answers(addr: &ConnectionAddr) -> bool {
    let connect = async {
        match addr {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .is_ok()
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => tokio::net::UnixStream::connect(path).await.is_ok(),
            // Kinds of address this probe cannot make: let the hub try and report.
            _ => true,
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, connect)
        .await
        .unwrap_or(false)
}

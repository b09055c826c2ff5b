//! A private, throwaway `redis-server` in a temporary directory of its own.

use std::fmt;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;

use crate::process::{Launch, LaunchError, Listen, RedisProcess};

/// Fresh ports [`PrivateRedis::start_tcp`] tries when another process takes the chosen one
/// between choosing and binding it.
const TCP_ATTEMPTS: usize = 5;

/// Ports a private server never gets: the default Redis ports, which may belong to a Redis
/// that is not ours.
const FORBIDDEN_PORTS: &[u16] = &[6379, 6380, 16379, 16380, 26379];

/// The socket's file name inside the private directory.
const SOCKET_FILE: &str = "redis.sock";

/// A running private `redis-server` and its temporary directory. Dropping it kills the
/// process, then removes the directory (log, socket).
pub struct PrivateRedis {
    /// Declared first so that it is dropped (killed) before its directory goes.
    process: RedisProcess,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    /// Starts `binary` listening only on a unix socket in a fresh directory of mode 0700, so
    /// that no other local user can reach it (to read, publish or `CONFIG SET`), and no
    /// port can be taken between choosing it and binding it. Blocks until it answers (a
    /// few seconds at most): call it from `spawn_blocking` in async code.
    pub fn start_unix(binary: impl AsRef<Path>) -> Result<PrivateRedis, LaunchError> {
        let dir = private_dir()?;
        let socket = dir.path().join(SOCKET_FILE);
        let process = Launch::new(Listen::Unix(socket), dir.path())
            .binary(binary.as_ref())
            .start()?;
        Ok(PrivateRedis { process, dir })
    }

    /// Starts `binary` on a free port of 127.0.0.1 with more `args` (such as `--maxclients`),
    /// retrying on a fresh port when the chosen one is taken first. For clients that need
    /// TCP (a cluster's nodes, `redis-benchmark`). Blocks until it answers.
    pub fn start_tcp(binary: impl AsRef<Path>, args: &[&str]) -> Result<PrivateRedis, LaunchError> {
        let mut last = None;
        for _ in 0..TCP_ATTEMPTS {
            let dir = private_dir()?;
            let port = free_loopback_port().map_err(|source| LaunchError::Io {
                doing: "find a free loopback port".into(),
                source,
            })?;
            match Launch::new(Listen::loopback(port), dir.path())
                .binary(binary.as_ref())
                .args(args.iter().copied())
                .start()
            {
                Ok(process) => return Ok(PrivateRedis { process, dir }),
                Err(e) if e.is_address_in_use() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Where it listens.
    pub fn listen(&self) -> &Listen {
        self.process.listen()
    }

    /// The redis-rs URL: `redis+unix:///DIR/redis.sock` or `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        self.listen().url()
    }

    /// The unix socket, for a server started by [`PrivateRedis::start_unix`].
    pub fn socket_path(&self) -> Option<&Path> {
        match self.listen() {
            Listen::Unix(path) => Some(path),
            Listen::Tcp { .. } => None,
        }
    }

    /// The port, for a server started by [`PrivateRedis::start_tcp`].
    pub fn port(&self) -> Option<u16> {
        match self.listen() {
            Listen::Tcp { port, .. } => Some(*port),
            Listen::Unix(_) => None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Its directory (mode 0700): working directory, log and socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        self.process.output_since_start()
    }
}

impl fmt::Debug for PrivateRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateRedis")
            .field("listen", self.listen())
            .field("pid", &self.pid())
            .finish()
    }
}

/// A fresh temporary directory that only this user can enter.
fn private_dir() -> Result<tempfile::TempDir, LaunchError> {
    let dir = tempfile::Builder::new()
        .prefix("pubsub-hub-redis-")
        .tempdir()
        .map_err(|source| LaunchError::Io {
            doing: "create a temporary directory".into(),
            source,
        })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).map_err(
            |source| LaunchError::Io {
                doing: format!("make {} private", dir.path().display()),
                source,
            },
        )?;
    }
    Ok(dir)
}

/// A port of 127.0.0.1 that was free a moment ago (bound, then released), never one of the
/// default Redis ports.
pub fn free_loopback_port() -> std::io::Result<u16> {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if !FORBIDDEN_PORTS.contains(&port) {
            return Ok(port);
        }
    }
}

/// `redis-server --version`'s `v=` field (`7.0.15`), or `unknown`.
pub fn server_version(binary: impl AsRef<Path>) -> Result<String, LaunchError> {
    let binary = binary.as_ref();
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LaunchError::NotInstalled {
                binary: binary.to_owned(),
            },
            _ => LaunchError::Io {
                doing: format!("run {}", binary.display()),
                source: e,
            },
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or("unknown")
        .to_owned())
}

//! One `redis-server` child process: started with the settings every private server shares,
//! checked until it answers as itself, killed and reaped on drop.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The server's log file, in its directory.
pub const LOG_FILE: &str = "redis.log";
/// Where the server's own stdout and stderr go (errors before the log is open), in its
/// directory.
pub const OUTPUT_FILE: &str = "redis.stdout";
/// How long [`Launch::start`] waits for the server to answer, unless told otherwise.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines kept in a [`LaunchError`].
const LOG_TAIL_LINES: usize = 40;
/// Pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// Where a server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A TCP port on one address (`--bind HOST --port PORT`).
    Tcp {
        /// The address to bind, e.g. `127.0.0.1`.
        host: String,
        /// The port.
        port: u16,
    },
    /// Only a unix socket (`--port 0 --unixsocket PATH --unixsocketperm 700`): no TCP port at
    /// all, so no other process can take its address first, and only the owner can connect.
    Unix(PathBuf),
}

impl Listen {
    /// A TCP port on `127.0.0.1`.
    pub fn loopback(port: u16) -> Listen {
        Listen::Tcp {
            host: "127.0.0.1".into(),
            port,
        }
    }

    /// The `redis-server` arguments for this address.
    fn args(&self) -> Vec<OsString> {
        match self {
            Listen::Tcp { host, port } => vec![
                "--port".into(),
                port.to_string().into(),
                "--bind".into(),
                host.into(),
            ],
            Listen::Unix(path) => vec![
                "--port".into(),
                "0".into(),
                "--unixsocket".into(),
                path.into(),
                "--unixsocketperm".into(),
                "700".into(),
            ],
        }
    }

    /// The redis-rs URL of the address, without credentials: `redis://HOST:PORT/` or
    /// `redis+unix:///PATH`.
    pub fn url(&self) -> String {
        match self {
            Listen::Tcp { host, port } => crate::address::host_port_url(host, *port),
            Listen::Unix(path) => format!("redis+unix://{}", path.display()),
        }
    }
}

impl fmt::Display for Listen {
    /// `HOST:PORT`, or `unix:PATH`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp { host, port } => {
                write!(f, "{}:{port}", crate::address::bracket_ipv6(host))
            }
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Why a `redis-server` could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum LaunchError {
    /// The binary does not exist (not installed, not on `PATH`).
    NotInstalled {
        /// The binary as given.
        binary: PathBuf,
    },
    /// The address was taken: the server could not bind it, or another process answers
    /// there. Trying another port (or again later) can help.
    AddressInUse {
        /// The address.
        listen: String,
        /// What showed it.
        detail: String,
    },
    /// The server exited during startup.
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its log and output from this start.
        log: String,
    },
    /// The server did not answer in time; it has been killed.
    NotReady {
        /// How long it was given.
        after: Duration,
        /// The last probe's failure.
        last_error: String,
        /// The last lines of its log and output from this start.
        log: String,
    },
    /// A file or process operation failed.
    Io {
        /// What was being done.
        doing: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl LaunchError {
    /// True when the address was taken: another port (or a later retry) may work.
    pub fn is_address_in_use(&self) -> bool {
        matches!(self, LaunchError::AddressInUse { .. })
    }

    /// True when the `redis-server` binary is missing.
    pub fn is_not_installed(&self) -> bool {
        matches!(self, LaunchError::NotInstalled { .. })
    }

    /// The server's log and output from this start, when there are any (several lines).
    pub fn log(&self) -> &str {
        match self {
            LaunchError::Exited { log, .. } | LaunchError::NotReady { log, .. } => log,
            LaunchError::AddressInUse { detail, .. } => detail,
            _ => "",
        }
    }

    fn io(doing: impl Into<String>, source: std::io::Error) -> LaunchError {
        LaunchError::Io {
            doing: doing.into(),
            source,
        }
    }
}

/// The last `n` lines of `log` on one line, for a one-line message.
fn one_line_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    if tail.is_empty() {
        "no log output".into()
    } else {
        tail.join(" | ")
    }
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LaunchError::NotInstalled { binary } => {
                write!(f, "{} is not installed (not on PATH)", binary.display())
            }
            LaunchError::AddressInUse { listen, detail } => {
                write!(f, "{listen} is taken: {}", one_line_tail(detail, 1).trim())
            }
            LaunchError::Exited { status, log } => write!(
                f,
                "redis-server exited during startup ({status}): {}",
                one_line_tail(log, 3)
            ),
            LaunchError::NotReady {
                after,
                last_error,
                log,
            } => write!(
                f,
                "redis-server did not answer within {after:?} ({last_error}): {}",
                one_line_tail(log, 3)
            ),
            LaunchError::Io { doing, source } => write!(f, "cannot {doing}: {source}"),
        }
    }
}

impl std::error::Error for LaunchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LaunchError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// How to start one `redis-server`: the address, the directory for its files, more
/// arguments. [`Launch::start`] adds what every private server shares: `--dir`, `--logfile`,
/// `--save "" --appendonly no` (it persists nothing) and `--daemonize no` (it stays our
/// child, so dropping it stops it).
#[derive(Clone, Debug)]
pub struct Launch {
    binary: PathBuf,
    listen: Listen,
    dir: PathBuf,
    args: Vec<OsString>,
    password: Option<String>,
    ready_timeout: Duration,
}

impl Launch {
    /// `redis-server` from `PATH`, listening on `listen`, keeping its files in `dir` (which
    /// must exist).
    pub fn new(listen: Listen, dir: impl Into<PathBuf>) -> Launch {
        Launch {
            binary: PathBuf::from(crate::DEFAULT_BINARY),
            listen,
            dir: dir.into(),
            args: Vec::new(),
            password: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }

    /// Another `redis-server` binary.
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Launch {
        self.binary = binary.into();
        self
    }

    /// More arguments, after the launcher's own (later ones win in `redis-server`).
    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The password the readiness probe authenticates with (for `--requirepass`).
    pub fn password(mut self, password: Option<String>) -> Launch {
        self.password = password;
        self
    }

    /// How long [`Launch::start`] waits for an answer ([`DEFAULT_READY_TIMEOUT`]).
    pub fn ready_timeout(mut self, timeout: Duration) -> Launch {
        self.ready_timeout = timeout;
        self
    }

    /// The address.
    pub fn listen(&self) -> &Listen {
        &self.listen
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log file (appended to by every start in the same directory).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// Starts the server and blocks until it answers `PING`, and `INFO server` reports the
    /// child's own pid (so that another process on the same address is never mistaken for
    /// it), for at most the ready time-out. On any failure the child is killed.
    pub fn start(&self) -> Result<RedisProcess, LaunchError> {
        let log_path = self.log_path();
        let out_path = self.dir.join(OUTPUT_FILE);
        let offsets = (file_len(&log_path), file_len(&out_path));
        let output = File::options()
            .create(true)
            .append(true)
            .open(&out_path)
            .map_err(|e| LaunchError::io(format!("create {}", out_path.display()), e))?;
        let output2 = output
            .try_clone()
            .map_err(|e| LaunchError::io("clone a file handle", e))?;
        let spawned = Command::new(&self.binary)
            .args(self.listen.args())
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log_path)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(output2)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LaunchError::NotInstalled {
                    binary: self.binary.clone(),
                });
            }
            Err(e) => {
                return Err(LaunchError::io(format!("run {}", self.binary.display()), e));
            }
        };
        let mut process = RedisProcess {
            child,
            exited: None,
            listen: self.listen.clone(),
            log_path,
            out_path,
            offsets,
        };
        self.wait_ready(&mut process)?;
        Ok(process)
    }

    fn wait_ready(&self, process: &mut RedisProcess) -> Result<(), LaunchError> {
        let deadline = Instant::now() + self.ready_timeout;
        let pid = process.pid();
        let mut last_error;
        loop {
            if let Some(status) = process.try_wait() {
                let log = process.output_since_start();
                let taken = log.contains("Address already in use")
                    || log.contains("Failed listening on port");
                return Err(if taken {
                    LaunchError::AddressInUse {
                        listen: self.listen.to_string(),
                        detail: log,
                    }
                } else {
                    LaunchError::Exited { status, log }
                });
            }
            match probe(&self.listen, self.password.as_deref()) {
                Ok(answering) if answering == pid => return Ok(()),
                Ok(other) => {
                    process.kill();
                    return Err(LaunchError::AddressInUse {
                        listen: self.listen.to_string(),
                        detail: format!("another process (pid {other}) answers there"),
                    });
                }
                Err(e) => last_error = e,
            }
            if Instant::now() >= deadline {
                process.kill();
                return Err(LaunchError::NotReady {
                    after: self.ready_timeout,
                    last_error,
                    log: process.output_since_start(),
                });
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }
}

/// A running `redis-server` child; killed (SIGKILL: it persists nothing, so there is
/// nothing to flush) and reaped on drop.
pub struct RedisProcess {
    child: Child,
    exited: Option<ExitStatus>,
    listen: Listen,
    log_path: PathBuf,
    out_path: PathBuf,
    /// Lengths of the log and output files before this start, so errors quote this run only.
    offsets: (u64, u64),
}

impl RedisProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where it listens.
    pub fn listen(&self) -> &Listen {
        &self.listen
    }

    /// Its exit status, once it has exited (on its own, or killed).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exited = Some(status);
        }
        self.exited
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Kills and reaps it (once); returns its exit status.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        self.exited
    }

    /// The log and output this start wrote, at most the last 40 lines.
    pub fn output_since_start(&self) -> String {
        let mut text = read_from(&self.log_path, self.offsets.0);
        let out = read_from(&self.out_path, self.offsets.1);
        if !out.trim().is_empty() {
            text.push_str("--- stdout/stderr ---\n");
            text.push_str(&out);
        }
        last_lines(&text, LOG_TAIL_LINES)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl fmt::Debug for RedisProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisProcess")
            .field("pid", &self.child.id())
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// The last `lines` lines of `text`, newline-terminated.
pub fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut out = Vec::new();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_end(&mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Connects to `listen`, authenticates if asked, sends `PING` and `INFO server`; the pid
/// of the process that answers.
fn probe(listen: &Listen, password: Option<&str>) -> Result<u32, String> {
    let timeout = Duration::from_millis(500);
    match listen {
        Listen::Tcp { host, port } => {
            let addr: SocketAddr = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| e.to_string())?
                .next()
                .ok_or("the host has no address")?;
            let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            ask_pid(stream, password)
        }
        #[cfg(unix)]
        Listen::Unix(path) => {
            let stream =
                std::os::unix::net::UnixStream::connect(path).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            ask_pid(stream, password)
        }
        #[cfg(not(unix))]
        Listen::Unix(_) => Err("unix sockets need a unix system".into()),
    }
}

fn ask_pid<S: Read + Write>(mut stream: S, password: Option<&str>) -> Result<u32, String> {
    if let Some(password) = password {
        write_command(&mut stream, &["AUTH", password])?;
    }
    write_command(&mut stream, &["PING"])?;
    write_command(&mut stream, &["INFO", "server"])?;
    let mut reader = BufReader::new(stream);
    if password.is_some() {
        read_reply(&mut reader)?;
    }
    let pong = read_reply(&mut reader)?;
    if pong != "PONG" {
        return Err(format!("PING answered {pong:?}"));
    }
    let info = read_reply(&mut reader)?;
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix("process_id:"))
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(|| "INFO server has no process_id".into())
}

fn write_command(stream: &mut impl Write, args: &[&str]) -> Result<(), String> {
    let mut packed = format!("*{}\r\n", args.len());
    for a in args {
        packed.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream
        .write_all(packed.as_bytes())
        .map_err(|e| e.to_string())
}

/// One simple-string or bulk-string reply; an error reply is an `Err`.
fn read_reply(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end();
    match line.split_at_checked(1) {
        Some(("+", text)) => Ok(text.to_owned()),
        Some(("-", text)) => Err(text.to_owned()),
        Some(("$", len)) => {
            let len: usize = len.parse().map_err(|_| format!("bad reply {line:?}"))?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).map_err(|e| e.to_string())?;
            body.truncate(len);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read() {
        let mut input = BufReader::new(&b"+PONG\r\n$5\r\nab\r\nc\r\n-ERR no\r\n"[..]);
        assert_eq!(read_reply(&mut input).unwrap(), "PONG");
        assert_eq!(read_reply(&mut input).unwrap(), "ab\r\nc");
        assert_eq!(read_reply(&mut input).unwrap_err(), "ERR no");
    }

    #[test]
    fn addresses_have_urls_and_names() {
        assert_eq!(Listen::loopback(7000).url(), "redis://127.0.0.1:7000/");
        assert_eq!(Listen::loopback(7000).to_string(), "127.0.0.1:7000");
        let unix = Listen::Unix("/tmp/x/redis.sock".into());
        assert_eq!(unix.url(), "redis+unix:///tmp/x/redis.sock");
        assert_eq!(unix.to_string(), "unix:/tmp/x/redis.sock");
        assert!(
            redis::Client::open(unix.url()).is_ok(),
            "redis-rs reads the URL"
        );
    }

    #[test]
    fn errors_are_one_line() {
        let e = LaunchError::NotReady {
            after: Duration::from_secs(1),
            last_error: "refused".into(),
            log: "a\nb\n\nc\nd\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "redis-server did not answer within 1s (refused): b | c | d"
        );
    }
}

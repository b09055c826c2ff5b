//! A private `redis-server` process on a free loopback port.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pubsub_hub_launcher::process::{LOG_FILE, OUTPUT_FILE, last_lines};
use pubsub_hub_launcher::{Launch, LaunchError, Listen, RedisProcess};
use redis::Value;

use crate::ports::{self, PortReservation};
use crate::wait::poll_until;

/// The loopback address every server of the kit listens on.
pub(crate) const HOST: &str = "127.0.0.1";

/// How long `start`/`restart` wait for a server to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop` waits for the port to refuse connections.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Read/write timeout of every connection the kit opens or hands out.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh ports tried by `start` when the chosen port was taken.
const START_ATTEMPTS: usize = 5;
/// Attempts to rebind the same port in `start_again`.
const RESTART_ATTEMPTS: usize = 5;
/// Lines of server log quoted in panic messages.
const LOG_TAIL_LINES: usize = 40;

/// One entry of `CLIENT LIST`, as returned by [`RedisServer::client_list`].
///
/// Fields absent from the line are empty strings or `0` (for example `ssub`
/// on servers older than 7.0.3). Any other field can be read from the raw
/// line with [`ClientInfo::field`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientInfo {
    /// Client id (`id=`).
    pub id: u64,
    /// Peer address `ip:port` (`addr=`).
    pub addr: String,
    /// Connection name set with `CLIENT SETNAME` (`name=`), empty if none.
    pub name: String,
    /// Client flags (`flags=`), e.g. `N` for a normal client, `P` for pub/sub.
    pub flags: String,
    /// Number of channel subscriptions (`sub=`).
    pub sub: i64,
    /// Number of pattern subscriptions (`psub=`).
    pub psub: i64,
    /// Number of shard-channel subscriptions (`ssub=`), 0 if absent.
    pub ssub: i64,
    /// Last command run by the client (`cmd=`), e.g. `subscribe` or `client|list`.
    pub cmd: String,
    /// The whole line as sent by the server.
    pub raw: String,
}

impl ClientInfo {
    /// Parses one `CLIENT LIST` line (`key=value` pairs separated by spaces).
    pub fn parse(line: &str) -> ClientInfo {
        let line = line.trim();
        let mut info = ClientInfo {
            raw: line.to_string(),
            ..ClientInfo::default()
        };
        for (key, value) in line.split(' ').filter_map(|kv| kv.split_once('=')) {
            match key {
                "id" => info.id = value.parse().unwrap_or(0),
                "addr" => info.addr = value.to_string(),
                "name" => info.name = value.to_string(),
                "flags" => info.flags = value.to_string(),
                "sub" => info.sub = value.parse().unwrap_or(0),
                "psub" => info.psub = value.parse().unwrap_or(0),
                "ssub" => info.ssub = value.parse().unwrap_or(0),
                "cmd" => info.cmd = value.to_string(),
                _ => {}
            }
        }
        info
    }

    /// Any field of the raw line by name (e.g. `"omem"`, `"qbuf"`, `"age"`).
    pub fn field(&self, key: &str) -> Option<&str> {
        self.raw
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// True if the client is in pub/sub mode (flag `P`) or has any
    /// subscription.
    pub fn is_pubsub(&self) -> bool {
        self.flags.contains('P') || self.sub > 0 || self.psub > 0 || self.ssub > 0
    }
}

/// Why one attempt to launch redis-server failed.
enum LaunchFailure {
    /// The port was taken by someone else: try another port (or later).
    PortTaken(String),
    /// Anything else: give up.
    Fatal(String),
}

impl From<LaunchError> for LaunchFailure {
    fn from(e: LaunchError) -> Self {
        if e.is_not_installed() {
            panic!(
                "redis-server not found on PATH: install it with `apt-get install redis-server`"
            );
        }
        let text = format!("{e}\n--- log ---\n{}", e.log());
        if e.is_address_in_use() {
            LaunchFailure::PortTaken(text)
        } else {
            LaunchFailure::Fatal(format!("pubsub-hub-testkit: {text}"))
        }
    }
}

/// A private `redis-server` child process listening on a free 127.0.0.1
/// port, with its own temporary directory (working dir, log file).
///
/// The server runs with `--save "" --appendonly no`, so a restart starts
/// empty. It is killed (SIGKILL) and reaped when the value is dropped, also
/// while a test panics; the temporary directory is removed. As a safety net
/// for a test process that dies without unwinding, a tiny `sh` watchdog
/// kills the server within about a second of the test process's death.
///
/// All admin methods (`cmd`, `publish`, `numsub`, ...) use one cached
/// connection named `pubsub-hub-testkit-admin` (see [`ADMIN_CLIENT_NAME`]),
/// which shows up in [`client_list`](Self::client_list). They panic on errors,
/// quoting the server log; [`try_cmd`](Self::try_cmd) returns the error
/// instead.
pub struct RedisServer {
    reservation: PortReservation,
    extra_args: Vec<String>,
    password: Option<String>,
    dir: tempfile::TempDir,
    /// The running process (the shared launcher's), `None` while stopped.
    process: Option<RedisProcess>,
    watchdog: Option<Child>,
    last_exit: Option<ExitStatus>,
    admin: Mutex<Option<redis::Connection>>,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port())
            .field("pid", &self.pid())
            .field("extra_args", &self.extra_args)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// The `CLIENT SETNAME` of the kit's own admin connection, so tests can
/// filter it out of [`RedisServer::client_list`].
pub const ADMIN_CLIENT_NAME: &str = "pubsub-hub-testkit-admin";

/// Path of an executable found on `PATH`, if any.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn redis_server_binary() -> PathBuf {
    find_on_path("redis-server").unwrap_or_else(|| {
        panic!("redis-server not found on PATH: install it with `apt-get install redis-server`")
    })
}

/// Percent-encodes a URL userinfo component.
fn encode_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Value following `name` in a redis-server argument list (last one wins, as
/// in redis-server).
fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.windows(2)
        .rev()
        .find(|w| w[0].eq_ignore_ascii_case(name))
        .map(|w| w[1].clone())
}

/// Parses `key:value` lines of `INFO` / `CLUSTER INFO` output.
pub(crate) fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
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

fn kill_and_reap(child: &mut Child) -> Option<ExitStatus> {
    let _ = child.kill();
    child.wait().ok()
}

impl RedisServer {
    /// Starts a private redis-server on a free 127.0.0.1 port.
    ///
    /// The server runs in a fresh temporary directory (`--dir`), with
    /// `--save "" --appendonly no --daemonize no`, its log in
    /// `redis.log` in that directory. Returns once it answers PING (and
    /// `INFO` reports the child's own pid, so an unrelated process on the
    /// port is never mistaken for it).
    ///
    /// # Panics
    ///
    /// If `redis-server` is not on `PATH`, or the server does not come up
    /// within ~10 s (the message includes the log). If the port was taken
    /// between choosing and binding it, a new port is tried (5 attempts).
    pub fn start() -> RedisServer {
        Self::start_with_args(&[])
    }

    /// Like [`start`](Self::start), with extra redis-server arguments appended
    /// after the kit's own (later arguments win), e.g.
    /// `&["--requirepass", "secret"]` or
    /// `&["--client-output-buffer-limit", "pubsub 1kb 1kb 0"]`.
    ///
    /// Do not pass `--port`, `--bind`, `--dir`, `--logfile` or
    /// `--daemonize`: the kit relies on its own values.
    ///
    /// A `--requirepass` value is remembered: the kit's admin connection, [`url`](Self::url),
    /// [`client`](Self::client) and [`connection`](Self::connection) all
    /// authenticate with it. With `--cluster-enabled yes` the cluster bus
    /// port (`port + 10000`) is reserved as well.
    pub fn start_with_args(args: &[&str]) -> RedisServer {
        let extra_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let cluster_bus = arg_value(&extra_args, "--cluster-enabled")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
        let password = arg_value(&extra_args, "--requirepass").filter(|p| !p.is_empty());
        let binary = redis_server_binary();

        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("pubsub-hub-testkit-")
                .tempdir()
                .expect("pubsub-hub-testkit: cannot create a temporary directory");
            let mut server = RedisServer {
                reservation: ports::reserve(cluster_bus),
                extra_args: extra_args.clone(),
                password: password.clone(),
                dir,
                process: None,
                watchdog: None,
                last_exit: None,
                admin: Mutex::new(None),
            };
            match server.launch(&binary) {
                Ok(()) => return server,
                Err(LaunchFailure::PortTaken(msg)) => last_error = msg,
                Err(LaunchFailure::Fatal(msg)) => panic!("{msg}"),
            }
        }
        panic!(
            "pubsub-hub-testkit: redis-server could not bind a free port in {START_ATTEMPTS} attempts; last error:\n{last_error}"
        );
    }

    /// The TCP port the server listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.reservation.port()
    }

    /// The host the server listens on: always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// `host:port` as a socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// Connection URL: `redis://127.0.0.1:PORT/`, or
    /// `redis://:PASSWORD@127.0.0.1:PORT/` (password percent-encoded) when the
    /// server was started with `--requirepass`.
    pub fn url(&self) -> String {
        let auth = match &self.password {
            Some(p) => format!(":{}@", encode_userinfo(p)),
            None => String::new(),
        };
        format!("redis://{auth}{HOST}:{}/", self.port())
    }

    /// The password the kit authenticates with (from `--requirepass`).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The server's temporary directory (its `--dir`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    /// The arguments given to [`start_with_args`](Self::start_with_args).
    pub fn extra_args(&self) -> &[String] {
        &self.extra_args
    }

    /// Process id of the running server, if any.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(RedisProcess::pid)
    }

    /// A [`redis::Client`] for [`url`](Self::url).
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("pubsub-hub-testkit: invalid server URL")
    }

    /// A new blocking connection (authenticated if needed), with 10 s read
    /// and write timeouts so a test cannot hang on it forever (change them
    /// with `set_read_timeout`).
    ///
    /// # Panics
    ///
    /// If the server cannot be reached.
    pub fn connection(&self) -> redis::Connection {
        match self.open_connection() {
            Ok(con) => con,
            Err(e) => self.fail(&format!("cannot connect to {}: {e}", self.url())),
        }
    }

    fn open_connection(&self) -> redis::RedisResult<redis::Connection> {
        let con = self.client().get_connection_with_timeout(IO_TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(con)
    }

    /// Kills the server (SIGKILL), reaps it, and waits until its port refuses
    /// connections. Does nothing if it is not running.
    ///
    /// # Panics
    ///
    /// If the port still accepts connections after ~10 s.
    pub fn stop(&mut self) {
        self.drop_admin();
        if let Some(mut watchdog) = self.watchdog.take() {
            kill_and_reap(&mut watchdog);
        }
        let Some(mut process) = self.process.take() else {
            return;
        };
        self.last_exit = process.kill();
        let addr = self.addr();
        let refused = poll_until(STOP_TIMEOUT, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err()
        });
        if refused.is_err() {
            self.fail(&format!(
                "port {} still accepts connections {STOP_TIMEOUT:?} after the server was killed",
                self.port()
            ));
        }
    }

    /// Stops the server if it is running, then starts it again on the same
    /// port, with the same arguments and directory, and waits for PING.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts a stopped server again on the same port, with the same
    /// arguments and directory (so a cluster node keeps its `nodes.conf`),
    /// and waits for PING. The data set is empty (nothing is persisted).
    ///
    /// # Panics
    ///
    /// If the server is already running (use [`restart`](Self::restart)), or
    /// it does not come up (the port is retried a few times if something else
    /// holds it).
    pub fn start_again(&mut self) {
        if self.is_running() {
            self.fail("start_again() called while the server is running; use restart()");
        }
        let binary = redis_server_binary();
        let mut last_error = String::new();
        for attempt in 0..RESTART_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
            match self.launch(&binary) {
                Ok(()) => return,
                Err(LaunchFailure::PortTaken(msg)) => last_error = msg,
                Err(LaunchFailure::Fatal(msg)) => panic!("{msg}"),
            }
        }
        panic!(
            "pubsub-hub-testkit: cannot restart redis-server on port {}: port taken; last error:\n{last_error}",
            self.port()
        );
    }

    /// True if the server process is alive (it may have been stopped, or have
    /// exited on its own, e.g. after `SHUTDOWN`).
    pub fn is_running(&mut self) -> bool {
        let Some(process) = self.process.as_mut() else {
            return false;
        };
        match process.try_wait() {
            None => true,
            Some(status) => {
                self.last_exit = Some(status);
                self.process = None;
                if let Some(mut w) = self.watchdog.take() {
                    kill_and_reap(&mut w);
                }
                false
            }
        }
    }

    /// True if the kit has a server process that it has not stopped (does
    /// not notice a process that exited on its own; see
    /// [`is_running`](Self::is_running)).
    pub(crate) fn is_started(&self) -> bool {
        self.process.is_some()
    }

    /// The whole server log (all runs, since restarts append to it).
    pub fn log(&self) -> String {
        let mut log = read_from(&self.log_path(), 0);
        let output = read_from(&self.dir.path().join(OUTPUT_FILE), 0);
        if !output.trim().is_empty() {
            log.push_str("--- redis-server stdout/stderr ---\n");
            log.push_str(&output);
        }
        log
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        last_lines(&self.log(), lines)
    }

    /// Panics with `msg` followed by the tail of the log.
    #[track_caller]
    pub(crate) fn fail(&self, msg: &str) -> ! {
        panic!(
            "pubsub-hub-testkit: redis-server on port {}: {msg}\n--- last {LOG_TAIL_LINES} lines of {} ---\n{}",
            self.port(),
            self.log_path().display(),
            self.log_tail(LOG_TAIL_LINES)
        )
    }

    fn drop_admin(&self) {
        *self.admin_lock() = None;
    }

    fn admin_lock(&self) -> MutexGuard<'_, Option<redis::Connection>> {
        self.admin.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the cached admin connection, reconnecting (once) if the
    /// connection was dropped.
    fn with_admin<T>(
        &self,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let mut guard = self.admin_lock();
        for attempt in 0..2 {
            if guard.is_none() {
                let mut con = self.open_connection()?;
                redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(ADMIN_CLIENT_NAME)
                    .query::<()>(&mut con)?;
                *guard = Some(con);
            }
            let con = guard.as_mut().expect("admin connection just set");
            match f(con) {
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    // Never reuse a connection after an I/O error; retry once
                    // if it had simply been closed (killed client, restarted
                    // server), but not after a timeout.
                    *guard = None;
                    if attempt > 0 || e.is_timeout() {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
        unreachable!("second attempt always returns")
    }

    /// Runs any command on the admin connection and returns the reply, or
    /// the error (server error replies included).
    pub fn try_cmd(&self, args: &[&str]) -> redis::RedisResult<Value> {
        let mut cmd = redis::Cmd::new();
        for a in args {
            cmd.arg(*a);
        }
        self.with_admin(|con| cmd.query::<Value>(con))
    }

    /// Runs any command on the admin connection (e.g. `CONFIG SET` on this
    /// private instance) and returns the reply.
    ///
    /// # Panics
    ///
    /// On any error, including an error reply (use
    /// [`try_cmd`](Self::try_cmd) to inspect errors).
    pub fn cmd(&self, args: &[&str]) -> Value {
        self.try_cmd(args)
            .unwrap_or_else(|e| self.fail(&format!("command {args:?} failed: {e}")))
    }

    /// Runs a command and converts the reply.
    pub(crate) fn try_query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        self.with_admin(|con| cmd.query::<T>(con))
    }

    /// Runs a command and converts the reply, panicking on error.
    pub(crate) fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        self.try_query(cmd)
            .unwrap_or_else(|e| self.fail(&format!("command {:?} failed: {e}", cmd_text(cmd))))
    }

    /// `INFO [section]` as text.
    pub fn info(&self, section: &str) -> String {
        let mut cmd = redis::cmd("INFO");
        if !section.is_empty() {
            cmd.arg(section);
        }
        self.query(&cmd)
    }

    /// `CLIENT LIST`, parsed.
    pub fn client_list(&self) -> Vec<ClientInfo> {
        let text: String = self.query(redis::cmd("CLIENT").arg("LIST"));
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(ClientInfo::parse)
            .collect()
    }

    /// `PUBSUB NUMSUB channel`: number of subscribers of one channel.
    pub fn numsub(&self, channel: &str) -> i64 {
        let (_, n): (Vec<u8>, i64) = self.query(redis::cmd("PUBSUB").arg("NUMSUB").arg(channel));
        n
    }

    /// `PUBSUB NUMPAT`: number of pattern subscriptions (over all clients).
    pub fn numpat(&self) -> i64 {
        self.query(redis::cmd("PUBSUB").arg("NUMPAT"))
    }

    /// `PUBLISH channel payload` from the admin connection; returns the
    /// number of clients that received the message.
    pub fn publish(&self, channel: &str, payload: &[u8]) -> i64 {
        self.query(redis::cmd("PUBLISH").arg(channel).arg(payload))
    }

    /// `CLIENT KILL TYPE pubsub`; returns the number of clients killed.
    pub fn kill_pubsub_clients(&self) -> i64 {
        self.query(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"))
    }

    /// Like [`wait_until`](crate::wait_until), but the panic message includes
    /// the tail of this server's log.
    pub fn wait_until(&self, timeout: Duration, what: &str, f: impl FnMut() -> bool) {
        if let Err(elapsed) = poll_until(timeout, f) {
            self.fail(&format!(
                "timed out after {elapsed:?} (timeout {timeout:?}) waiting until {what}"
            ));
        }
    }

    /// Waits until `PUBSUB NUMSUB channel` equals `n`.
    pub fn wait_numsub(&self, channel: &str, n: i64, timeout: Duration) {
        let mut last = 0;
        if let Err(elapsed) = poll_until(timeout, || {
            last = self.numsub(channel);
            last == n
        }) {
            self.fail(&format!(
                "timed out after {elapsed:?} waiting until NUMSUB {channel:?} == {n} (last value {last})"
            ));
        }
    }

    /// Waits until `PUBSUB NUMPAT` equals `n`.
    pub fn wait_numpat(&self, n: i64, timeout: Duration) {
        let mut last = 0;
        if let Err(elapsed) = poll_until(timeout, || {
            last = self.numpat();
            last == n
        }) {
            self.fail(&format!(
                "timed out after {elapsed:?} waiting until NUMPAT == {n} (last value {last})"
            ));
        }
    }

    /// Starts redis-server on our port through the shared launcher (which waits until
    /// this very process answers PING and `INFO`), then arms the watchdog.
    fn launch(&mut self, binary: &Path) -> Result<(), LaunchFailure> {
        let process = Launch::new(Listen::loopback(self.port()), self.dir.path())
            .binary(binary)
            .args(["--enable-debug-command", "local"])
            .args(&self.extra_args)
            .password(self.password.clone())
            .ready_timeout(START_TIMEOUT)
            .start()?;
        self.watchdog = spawn_watchdog(process.pid());
        self.process = Some(process);
        self.last_exit = None;
        Ok(())
    }

    /// Kills the child without waiting for the port to close.
    fn stop_quietly(&mut self) {
        self.drop_admin();
        if let Some(mut w) = self.watchdog.take() {
            kill_and_reap(&mut w);
        }
        if let Some(mut process) = self.process.take() {
            self.last_exit = process.kill();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop_quietly();
        // `dir` (TempDir) and the port reservation are released after this.
    }
}

/// Starts a `sh` loop that SIGKILLs `pid` once the test process is gone
/// (e.g. killed, or `panic = "abort"`), so no redis-server outlives it.
/// Killed and reaped together with the server in the normal case.
fn spawn_watchdog(pid: u32) -> Option<Child> {
    let me = std::process::id();
    let script =
        format!("while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -9 {pid} 2>/dev/null");
    Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// Human-readable form of a command, for error messages.
fn cmd_text(cmd: &redis::Cmd) -> String {
    let packed = cmd.get_packed_command();
    // RESP array: *N\r\n$len\r\narg\r\n... -> keep the arguments only.
    let text = String::from_utf8_lossy(&packed);
    text.split("\r\n")
        .filter(|p| !p.starts_with('*') && !p.starts_with('$') && !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_list_line() {
        let line = "id=7 addr=127.0.0.1:5000 laddr=127.0.0.1:6000 fd=8 name=x age=0 idle=0 flags=P db=0 sub=2 psub=1 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=1800 events=r cmd=subscribe user=default redir=-1 resp=2\n";
        let c = ClientInfo::parse(line);
        assert_eq!(c.id, 7);
        assert_eq!(c.addr, "127.0.0.1:5000");
        assert_eq!(c.name, "x");
        assert_eq!(c.flags, "P");
        assert_eq!((c.sub, c.psub, c.ssub), (2, 1, 0));
        assert_eq!(c.cmd, "subscribe");
        assert_eq!(c.field("omem"), Some("0"));
        assert_eq!(c.field("nope"), None);
        assert!(c.is_pubsub());
        assert!(!c.raw.ends_with('\n'));
    }

    #[test]
    fn encodes_passwords() {
        assert_eq!(encode_userinfo("a b@c:d%"), "a%20b%40c%3Ad%25");
        assert_eq!(encode_userinfo("secret-1"), "secret-1");
    }

    #[test]
    fn last_arg_wins() {
        let args: Vec<String> = ["--requirepass", "a", "--x", "y", "--requirepass", "b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(arg_value(&args, "--requirepass").as_deref(), Some("b"));
        assert_eq!(arg_value(&args, "--nope"), None);
    }
}

//! Running the dashboard: connect (or start a private Redis), seed, serve, shut down.
//!
//! [`serve`] is the core: the caller owns the listener and the shutdown future, so a test
//! passes `127.0.0.1:0` and any future. [`run_dashboard`] is what the binary calls: it adds
//! the choice of Redis (`pubsub_hub_launcher::reach_redis`: the configured one, or a private
//! one only when none was configured), the seeding and the start-up lines.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use pubsub_hub::{ConnectionMode, HubConfig, HubError, PubSubHub, TargetKind};
use pubsub_hub_launcher::{
    ClientError, LaunchError, PrivateRedis, answers, bracket_ipv6, display_addr, host_port_url,
    open_client, reach_redis, redact_url,
};
use redis::ConnectionAddr;
use tokio::net::TcpListener;

use crate::access::{AccessControl, validate_token};
use crate::app::AppState;
use crate::client::TrustedProxies;
use crate::limits::{LimitError, Limits};

/// The three subscribers every fresh dashboard (and every reset) starts with:
/// name, kind, target.
pub const DEFAULT_SUBSCRIPTIONS: [(&str, TargetKind, &str); 3] = [
    ("orders-listener", TargetKind::Channel, "orders:new"),
    ("billing-listener", TargetKind::Channel, "billing:invoice"),
    ("all-notifications", TargetKind::Pattern, "notifications:*"),
];

/// Bound on every Redis command of the dashboard's hub: lower than the library's default so
/// that `/state` answers within about a second when Redis is down.
pub const DASHBOARD_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// Most subscribers the dashboard holds by default ([`Limits::max_subscriptions`]); keeps
/// one `/state` answer's size bounded.
pub const DASHBOARD_MAX_SUBSCRIPTIONS: usize = crate::limits::DEFAULT_MAX_SUBSCRIPTIONS;

pub use crate::http::SHUTDOWN_GRACE;

/// How often the dashboard looks for a Redis that did not answer at start, to create the
/// default subscribers once it does.
const SEED_RETRY: Duration = Duration::from_millis(500);
/// How long the dashboard waits after Redis answered but creating the defaults failed.
const SEED_RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Where to listen and which Redis to use. The defaults are the guide's.
///
/// Its `Debug` output masks the token and the URL's password, so logging the options is safe.
#[derive(Clone)]
pub struct DashboardOptions {
    /// HTTP bind host (`127.0.0.1`).
    pub host: String,
    /// HTTP bind port (`8103`; `0` picks a free one, and the start-up line shows it).
    pub port: u16,
    /// Redis host (`localhost`).
    pub redis_host: String,
    /// Redis port (`6379`).
    pub redis_port: u16,
    /// A full `redis://` URL; when set it overrides `redis_host` and `redis_port`. Its
    /// password is never printed.
    pub redis_url: Option<String>,
    /// Start a private `redis-server` (on a unix socket in a 0700 temporary directory, which
    /// only this user can reach) when nothing answers at the address (default `true`, for
    /// the default address). Set it to `false` whenever the user chose a Redis address: a
    /// chosen address is never replaced, and when nothing answers there the dashboard
    /// starts anyway, reports itself not ready (`/readyz` 503) and connects when Redis
    /// appears. The binary clears it when any Redis setting is given.
    pub embedded_fallback: bool,
    /// PEM file of the certificate authority that signed the Redis server's certificate,
    /// for a `rediss://` URL whose server is not signed by a public CA. Without it,
    /// `rediss://` trusts the usual public roots.
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// The access token. When set, every route but `/healthz` and `/readyz` requires it
    /// (`Authorization: Bearer <token>`, or the cookie that `/?token=<token>` sets). Never
    /// printed. Required to listen on an address other than loopback, unless
    /// [`DashboardOptions::insecure_no_auth`] is set.
    pub token: Option<String>,
    /// Serve on a non-loopback address without a token, so that anyone who can reach it can
    /// publish, subscribe and read every message. Off by default; [`Dashboard::start`]
    /// prints a warning when it is used.
    pub insecure_no_auth: bool,
    /// Mark the session cookie `Secure` on every login: the dashboard is reached over HTTPS
    /// (a TLS-terminating proxy), so the browser must never send the cookie over plain HTTP.
    /// Without it the cookie is `Secure` only when a trusted proxy says the page was
    /// reached over HTTPS (`X-Forwarded-Proto: https`).
    pub cookie_secure: bool,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` and
    /// `X-Forwarded-Proto` are believed, for the wrong-token limit per client and the
    /// cookie's `Secure` (see [`crate::client`]). Empty by default: no header is believed.
    pub trusted_proxies: Vec<String>,
    /// Input limits (the [`Limits`] defaults). `max_subscriptions` is also the hub's cap.
    pub limits: Limits,
    /// How subscribers map onto Redis connections: [`ConnectionMode::Dedicated`] (the
    /// default, as in the guide: one connection per subscriber, so `PUBSUB NUMSUB` counts
    /// names) or [`ConnectionMode::Shared`] (a fixed set of connections for any number of
    /// subscribers; NUMSUB then counts connections). `/state` says which, under `mode`.
    pub mode: ConnectionMode,
    /// Redis Cluster seed nodes (`redis://host:port/` URLs). When not empty the hub is a
    /// cluster hub over them ([`PubSubHub::cluster`]): `redis_host`, `redis_port` and the
    /// embedded fallback do not apply, `redis_url` and `redis_ca_file` must not be set, and
    /// the start-up line says cluster mode. Passwords in them are never printed.
    pub cluster_nodes: Vec<String>,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        DashboardOptions {
            host: "127.0.0.1".into(),
            port: 8103,
            redis_host: "localhost".into(),
            redis_port: 6379,
            redis_url: None,
            embedded_fallback: true,
            redis_ca_file: None,
            token: None,
            insecure_no_auth: false,
            cookie_secure: false,
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            mode: ConnectionMode::Dedicated,
            cluster_nodes: Vec::new(),
        }
    }
}

impl fmt::Debug for DashboardOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DashboardOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("redis_host", &self.redis_host)
            .field("redis_port", &self.redis_port)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("embedded_fallback", &self.embedded_fallback)
            .field("redis_ca_file", &self.redis_ca_file)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("insecure_no_auth", &self.insecure_no_auth)
            .field("cookie_secure", &self.cookie_secure)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("limits", &self.limits)
            .field("mode", &self.mode)
            .field(
                "cluster_nodes",
                &self
                    .cluster_nodes
                    .iter()
                    .map(|n| redact_url(n))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why the dashboard could not start or run. Displays as one line that says what is wrong
/// in terms of [`DashboardOptions`], never of a command line: a front end (the binary)
/// matches on the variant and adds its own hints (its flags, variables and file keys).
#[derive(Debug)]
#[non_exhaustive]
pub enum DashboardError {
    /// The Redis URL (or a cluster node's) does not parse, or the CA file cannot be used.
    RedisAddress(ClientError),
    /// Nothing answers at the Redis address, and no private server could be used.
    RedisUnreachable {
        /// `host:port` as configured.
        addr: String,
        /// Why the private server could not start (see
        /// [`LaunchError::is_not_installed`]); `None` for a cluster, which has no private
        /// stand-in.
        fallback: Option<LaunchError>,
        /// True when `addr` lists the seed nodes of a cluster, none of which answered.
        cluster: bool,
    },
    /// Something answers at the address but the hub cannot use it (not Redis, auth, ...).
    Redis {
        /// `host:port`.
        addr: String,
        /// The library's error.
        source: HubError,
    },
    /// A limit cannot serve ([`Limits::validate`]).
    InvalidLimit(LimitError),
    /// Another option is unusable: an empty token, a cluster with a URL...
    InvalidOption {
        /// The [`DashboardOptions`] field.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Asked to listen beyond loopback with neither a token nor the explicit opt-out.
    NoTokenForPublicAddress {
        /// The address it would listen on.
        addr: String,
    },
    /// The HTTP address cannot be bound.
    Bind {
        /// `host:port` as asked.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The default subscriptions could not be created.
    Seed(HubError),
    /// The HTTP server failed while running.
    Serve(std::io::Error),
}

impl fmt::Display for DashboardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DashboardError::RedisAddress(e) => write!(f, "{e}"),
            DashboardError::RedisUnreachable {
                addr,
                cluster: true,
                ..
            } => write!(
                f,
                "cannot reach any of the Redis Cluster nodes {addr}: start the cluster or give \
                 the addresses of nodes that run"
            ),
            DashboardError::RedisUnreachable { addr, fallback, .. } => match fallback {
                None => write!(f, "cannot reach Redis at {addr}: start Redis there"),
                Some(e) if e.is_not_installed() => write!(
                    f,
                    "cannot reach Redis at {addr} and redis-server is not on PATH to start a \
                     private one: install it (apt-get install redis-server) or start Redis there"
                ),
                Some(e) => write!(
                    f,
                    "cannot reach Redis at {addr}, and the private redis-server did not start: {e}"
                ),
            },
            DashboardError::Redis { addr, source } => {
                write!(f, "Redis at {addr} answered, but cannot be used: {source}")
            }
            DashboardError::InvalidLimit(e) => write!(f, "{e}"),
            DashboardError::InvalidOption { option, reason } => write!(f, "{option}: {reason}"),
            DashboardError::NoTokenForPublicAddress { addr } => write!(
                f,
                "refusing to listen on {addr} without an access token: anyone who can reach it \
                 could read and publish messages"
            ),
            DashboardError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            DashboardError::Seed(e) => {
                write!(f, "cannot create the default subscriptions: {e}")
            }
            DashboardError::Serve(e) => write!(f, "the HTTP server failed: {e}"),
        }
    }
}

impl std::error::Error for DashboardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DashboardError::Redis { source, .. } | DashboardError::Seed(source) => Some(source),
            DashboardError::Bind { source, .. } | DashboardError::Serve(source) => Some(source),
            DashboardError::RedisUnreachable {
                fallback: Some(e), ..
            } => Some(e),
            DashboardError::RedisAddress(e) => Some(e),
            DashboardError::InvalidLimit(e) => Some(e),
            _ => None,
        }
    }
}

/// Payload bytes each subscriber's ring buffer keeps in the dashboard (the newest message
/// always stays). The page shows 15 messages cut to 2 KiB each, so 256 KiB is plenty, and
/// it bounds memory to `max_subscriptions` x 256 KiB whatever other clients publish.
pub const DASHBOARD_BUFFER_MAX_BYTES: usize = 256 * 1024;

/// The hub configuration the dashboard uses: the library's defaults with
/// [`DASHBOARD_COMMAND_TIMEOUT`], [`DASHBOARD_MAX_SUBSCRIPTIONS`] and
/// [`DASHBOARD_BUFFER_MAX_BYTES`].
pub fn dashboard_hub_config() -> HubConfig {
    HubConfig::default()
        .with_command_timeout(DASHBOARD_COMMAND_TIMEOUT)
        .with_connect_timeout(DASHBOARD_COMMAND_TIMEOUT)
        .with_max_subscriptions(DASHBOARD_MAX_SUBSCRIPTIONS)
        .with_buffer_max_bytes(DASHBOARD_BUFFER_MAX_BYTES)
}

/// Creates those of the [`DEFAULT_SUBSCRIPTIONS`] that do not exist yet. Stops at the first
/// failure, so calling it again after one finishes the job.
///
/// # Cancel safety
/// Dropping it keeps the defaults created so far (each one whole, as the library's
/// `subscribe_kind` promises); a later call creates the rest. `/reset` runs it in a task
/// that is never dropped.
pub async fn seed_defaults(hub: &PubSubHub) -> Result<(), HubError> {
    for (name, kind, target) in DEFAULT_SUBSCRIPTIONS {
        if hub.get_subscription(name).is_some() {
            continue;
        }
        hub.subscribe_kind(name, kind, vec![target.to_owned()])
            .await?;
    }
    Ok(())
}

/// Waits until something answers at `addr` (looking every [`SEED_RETRY`]), then seeds the
/// defaults; after a failed attempt (Redis up but refusing, say) it tries again after
/// [`SEED_RETRY_AFTER_FAILURE`], so a lasting refusal logs a warning every few seconds,
/// not twice a second.
async fn seed_when_up(hub: PubSubHub, addr: ConnectionAddr) {
    loop {
        let pause = if !answers(&addr).await {
            SEED_RETRY
        } else {
            match seed_defaults(&hub).await {
                Ok(()) => {
                    tracing::info!("Redis answers: the default subscriptions are created");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "creating the default subscriptions failed");
                    SEED_RETRY_AFTER_FAILURE
                }
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// A spawned task that is aborted when this handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A dashboard that is connected, seeded and bound, but not yet serving.
///
/// [`run_dashboard`] is `start`, print [`Dashboard::startup_lines`], `run`. Tests use the
/// steps to learn the bound address and the Redis in use.
pub struct Dashboard {
    listener: TcpListener,
    hub: PubSubHub,
    /// Kept alive while serving; dropping it (after the hub is shut down) kills the process.
    embedded: Option<PrivateRedis>,
    startup_lines: Vec<String>,
    /// Lines for stderr: the configured Redis did not answer at start.
    startup_warnings: Vec<String>,
    /// The configured Redis did not answer at start: the default subscribers are created
    /// once it does (at this address).
    seed_later: Option<ConnectionAddr>,
    limits: Limits,
    access: AccessControl,
}

impl Dashboard {
    /// Checks the access options, binds the HTTP address, connects to Redis (starting a
    /// private one when nothing answers and [`DashboardOptions::embedded_fallback`] is on)
    /// and seeds the default subscribers.
    ///
    /// When nothing answers at the address and the fallback is off, it starts anyway with a
    /// hub that connects when Redis appears ([`PubSubHub::with_config_lazy`]); the reason
    /// is in [`Dashboard::startup_warnings`], and [`Dashboard::run`] seeds the defaults once
    /// Redis answers.
    ///
    /// Refuses ([`DashboardError::NoTokenForPublicAddress`]) to listen on an address that
    /// is not loopback without [`DashboardOptions::token`], unless
    /// [`DashboardOptions::insecure_no_auth`] is set.
    ///
    /// # Cancel safety
    /// Dropping it drops what it has built so far: the listener closes, and a hub already
    /// connected is dropped, which stops its connections (a private Redis stops with it).
    pub async fn start(opts: DashboardOptions) -> Result<Self, DashboardError> {
        if let Some(token) = &opts.token {
            validate_token(token).map_err(|reason| DashboardError::InvalidOption {
                option: "token",
                reason,
            })?;
        }
        opts.limits
            .validate()
            .map_err(DashboardError::InvalidLimit)?;
        let trusted_proxies = TrustedProxies::parse(&opts.trusted_proxies).map_err(|reason| {
            DashboardError::InvalidOption {
                option: "trusted_proxies",
                reason,
            }
        })?;
        let cluster = !opts.cluster_nodes.is_empty();
        if cluster && (opts.redis_url.is_some() || opts.redis_ca_file.is_some()) {
            return Err(DashboardError::InvalidOption {
                option: "cluster_nodes",
                reason: "with cluster nodes, redis_url and redis_ca_file must not be set: put \
                         the credentials in the node URLs"
                    .into(),
            });
        }
        // A single server's client, parsed before binding so that a bad URL fails first.
        let single = if cluster {
            None
        } else {
            let url = match &opts.redis_url {
                Some(url) => url.clone(),
                None => host_port_url(&opts.redis_host, opts.redis_port),
            };
            Some(
                open_client(&url, opts.redis_ca_file.as_deref())
                    .map_err(DashboardError::RedisAddress)?,
            )
        };
        let seeds = cluster_seeds(&opts.cluster_nodes)?;

        let bind = format!("{}:{}", bracket_ipv6(&opts.host), opts.port);
        let listener = TcpListener::bind((opts.host.as_str(), opts.port))
            .await
            .map_err(|source| DashboardError::Bind {
                addr: bind.clone(),
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| DashboardError::Bind {
                addr: bind.clone(),
                source,
            })?;
        let loopback = local.ip().is_loopback();
        let mut notes = Vec::new();
        if !loopback && opts.token.is_none() {
            if !opts.insecure_no_auth {
                return Err(DashboardError::NoTokenForPublicAddress { addr: bind });
            }
            let bound = format!("{}:{}", bracket_ipv6(&opts.host), local.port());
            notes.push(format!(
                "WARNING: listening on {bound} without an access token (--insecure-no-auth): \
                 anyone who can reach this address can read and publish messages"
            ));
        }
        let access = match &opts.token {
            Some(token) => AccessControl::with_token(token.clone()),
            None => AccessControl::open().with_loopback_hosts_only(loopback),
        }
        .with_cookie_secure(opts.cookie_secure)
        .with_trusted_proxies(trusted_proxies);

        let config = dashboard_hub_config()
            .with_max_subscriptions(opts.limits.max_subscriptions)
            .with_mode(opts.mode);
        let mut warnings = Vec::new();
        let mut seed_later = None;
        let (hub, embedded, using) = match single {
            None => {
                let hub = connect_cluster(&opts.cluster_nodes, &seeds, config).await?;
                let using = format!(
                    "Using Redis Cluster at {} (cluster mode: plain channels on any node, shard \
                     channels on the master that owns their slot)",
                    seeds.display
                );
                (hub, None, using)
            }
            Some(client) => {
                let single = connect_single(client, opts.embedded_fallback, config).await?;
                notes.extend(single.note);
                if let Some(warning) = single.warning {
                    warnings.push(warning);
                    seed_later = Some(single.hub.client().get_connection_info().addr().clone());
                }
                (
                    single.hub,
                    single.private,
                    format!("Using Redis at {}", single.addr),
                )
            }
        };
        if seed_later.is_none()
            && let Err(e) = seed_defaults(&hub).await
        {
            hub.shutdown().await;
            return Err(DashboardError::Seed(e));
        }

        notes.push(format!(
            "Redis pub/sub demo server listening on http://{}:{}",
            bracket_ipv6(&opts.host),
            local.port()
        ));
        notes.push(using);
        notes.push(match seed_later {
            None => format!(
                "Seeded {} default subscription(s)",
                DEFAULT_SUBSCRIPTIONS.len()
            ),
            Some(_) => format!(
                "The {} default subscription(s) will be created when Redis answers",
                DEFAULT_SUBSCRIPTIONS.len()
            ),
        });
        if opts.token.is_some() {
            notes.push(
                "An access token is required: send `Authorization: Bearer <token>`, or open \
                 /?token=<token> once in the browser"
                    .into(),
            );
        }
        Ok(Dashboard {
            listener,
            hub,
            embedded,
            startup_lines: notes,
            startup_warnings: warnings,
            seed_later,
            limits: opts.limits,
            access,
        })
    }

    /// The lines to print on stderr at start-up: that the configured Redis did not answer,
    /// so the dashboard serves without it (`/readyz` answers 503) until it does.
    pub fn startup_warnings(&self) -> &[String] {
        &self.startup_warnings
    }

    /// The lines to print at start-up: the embedded-server note if there is one, then the
    /// guide's three lines.
    pub fn startup_lines(&self) -> &[String] {
        &self.startup_lines
    }

    /// The bound HTTP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The hub in use.
    pub fn hub(&self) -> &PubSubHub {
        &self.hub
    }

    /// The private Redis, when the fallback was used.
    pub fn embedded_redis(&self) -> Option<&PrivateRedis> {
        self.embedded.as_ref()
    }

    /// Serves until `shutdown` resolves, then closes every subscription and connection of
    /// the hub, then stops the private Redis if there is one. When Redis did not answer at
    /// start, the default subscribers are created as soon as it does, meanwhile.
    ///
    /// # Cancel safety
    /// Resolve `shutdown` rather than drop it: dropping it stops serving at once (open
    /// connections are closed with their tasks) and drops the hub without the orderly
    /// close.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DashboardError> {
        let Dashboard {
            listener,
            hub,
            embedded,
            limits,
            access,
            seed_later,
            ..
        } = self;
        // Aborted when serving ends, so it never outlives the dashboard.
        let seeding =
            seed_later.map(|addr| AbortOnDrop(tokio::spawn(seed_when_up(hub.clone(), addr))));
        let state = AppState::new(hub.clone())
            .with_limits(limits)
            .with_access(access);
        let served = serve_with_state(listener, state, shutdown).await;
        drop(seeding);
        hub.shutdown().await;
        drop(embedded);
        served.map_err(DashboardError::Serve)
    }
}

impl fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dashboard")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("embedded", &self.embedded)
            .finish()
    }
}

/// Connects (or starts the embedded fallback), seeds the three defaults, prints the start-up
/// lines, serves until `shutdown` resolves, then closes every subscription
/// (`hub.shutdown()`) before returning.
///
/// # Cancel safety
/// As [`Dashboard::start`], then [`Dashboard::run`].
pub async fn run_dashboard(
    opts: DashboardOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DashboardError> {
    let dashboard = Dashboard::start(opts).await?;
    for line in dashboard.startup_warnings() {
        eprintln!("{line}");
    }
    for line in dashboard.startup_lines() {
        println!("{line}");
    }
    dashboard.run(shutdown).await
}

/// Serves the dashboard for `hub` on `listener` until `shutdown` resolves.
///
/// The hub stays the caller's: it is not shut down here.
///
/// # Cancel safety
/// As [`serve_with_state`].
pub async fn serve(
    listener: TcpListener,
    hub: PubSubHub,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_state(listener, AppState::new(hub), shutdown).await
}

/// [`serve`] with a prepared [`AppState`] (custom settings and limits). Cancels
/// `state.shutdown` when `shutdown` resolves, which ends every `/events` stream; then waits
/// up to [`SHUTDOWN_GRACE`] for requests in flight.
///
/// Applies the connection bounds of `state.limits` (see [`crate::http`]): request head and
/// body timeouts, and at most `max_connections` connections at once.
///
/// # Cancel safety
/// Resolve `shutdown` rather than drop it. Dropping it stops accepting and aborts every
/// connection's task (their sockets close); changes already handed to tasks of their own
/// still finish.
pub async fn serve_with_state(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::http::serve_bounded(listener, state, shutdown).await
}

/// Resolves when the process gets Ctrl-C (SIGINT) or SIGTERM; the one shutdown signal of
/// the dashboard and of every `pubsub-hub` subcommand.
///
/// The handlers are installed when this is *called*, not when the future is first polled:
/// a signal that arrives after a server or command has announced itself (the dashboard's
/// start-up lines, `subscribe`'s confirmation) but before its loop first awaits must still
/// stop it cleanly rather than kill it with the default action. Call it before announcing,
/// within a Tokio runtime. A handler that cannot be installed never resolves, rather than
/// stopping at once.
///
/// # Cancel safety
/// Cancel-safe: the returned future only waits; dropping it loses no signal that another
/// call's future would have seen.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => {}
                _ = wait(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The seed nodes of a cluster, checked: their addresses as `host:port` (never
/// credentials), one by one and joined for the start-up line.
struct ClusterSeeds {
    addrs: Vec<ConnectionAddr>,
    display: String,
}

fn cluster_seeds(nodes: &[String]) -> Result<ClusterSeeds, DashboardError> {
    let mut addrs = Vec::with_capacity(nodes.len());
    for node in nodes {
        let client = open_client(node, None).map_err(DashboardError::RedisAddress)?;
        addrs.push(client.get_connection_info().addr().clone());
    }
    let display = addrs
        .iter()
        .map(display_addr)
        .collect::<Vec<_>>()
        .join(", ");
    Ok(ClusterSeeds { addrs, display })
}

/// The cluster hub over `nodes`. No private fallback here: a cluster is not something to
/// improvise, so when no seed node answers the error says so.
async fn connect_cluster(
    nodes: &[String],
    seeds: &ClusterSeeds,
    config: HubConfig,
) -> Result<PubSubHub, DashboardError> {
    let probes = futures_util::future::join_all(seeds.addrs.iter().map(answers)).await;
    if !probes.into_iter().any(|up| up) {
        return Err(DashboardError::RedisUnreachable {
            addr: seeds.display.clone(),
            fallback: None,
            cluster: true,
        });
    }
    PubSubHub::cluster(nodes.to_vec(), config)
        .await
        .map_err(|source| DashboardError::Redis {
            addr: seeds.display.clone(),
            source,
        })
}

/// The hub on one server, by `pubsub_hub_launcher::reach_redis`'s rule, and what to say
/// about it.
struct Single {
    hub: PubSubHub,
    private: Option<PrivateRedis>,
    /// `host:port` or `unix:PATH` in use.
    addr: String,
    /// The start-up line about the private server, when one was started.
    note: Option<String>,
    /// The stderr line when nothing answered and the dashboard starts without Redis.
    warning: Option<String>,
}

/// Chooses the Redis (`reach_redis`: the address if it answers, a private server only when
/// `fallback` allows one, else the address anyway) and builds the hub on it: connected when
/// something answered, connecting later otherwise.
async fn connect_single(
    client: redis::Client,
    fallback: bool,
    config: HubConfig,
) -> Result<Single, DashboardError> {
    let configured = display_addr(client.get_connection_info().addr());
    let reached =
        reach_redis(client, fallback)
            .await
            .map_err(|e| DashboardError::RedisUnreachable {
                addr: configured,
                fallback: Some(e),
                cluster: false,
            })?;
    let addr = reached.addr();
    let note = reached.private_note();
    let warning = reached.not_answering_warning().map(|w| {
        format!("{w} (/readyz answers 503 until then; the default subscribers are created then)")
    });
    let hub = if reached.answered {
        PubSubHub::with_config(reached.client, config).await
    } else {
        PubSubHub::with_config_lazy(reached.client, config)
    }
    .map_err(|source| DashboardError::Redis {
        addr: addr.clone(),
        source,
    })?;
    Ok(Single {
        hub,
        private: reached.private,
        addr,
        note,
        warning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_passwords_in_cluster_nodes_too() {
        let opts = DashboardOptions {
            redis_url: Some("redis://u:url-secret@h:1/".into()),
            token: Some("token-secret".into()),
            cluster_nodes: vec![
                "redis://:node-secret@10.0.0.1:7000/".into(),
                "redis://10.0.0.2:7001/".into(),
            ],
            mode: ConnectionMode::Shared { connections: 4 },
            ..DashboardOptions::default()
        };
        let text = format!("{opts:?}");
        for secret in ["url-secret", "token-secret", "node-secret"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("redis://:***@10.0.0.1:7000/"), "{text}");
        assert!(text.contains("redis://10.0.0.2:7001/"), "{text}");
        assert!(text.contains("Shared { connections: 4 }"), "{text}");
    }

    #[test]
    fn errors_are_one_line() {
        let e = DashboardError::RedisUnreachable {
            addr: "localhost:6379".into(),
            fallback: Some(LaunchError::NotInstalled {
                binary: "redis-server".into(),
            }),
            cluster: false,
        };
        let text = e.to_string();
        assert_eq!(
            text,
            "cannot reach Redis at localhost:6379 and redis-server is not on PATH to start a \
             private one: install it (apt-get install redis-server) or start Redis there"
        );
        assert!(
            !text.contains('\n') && !text.contains("--"),
            "no flags: {text}"
        );
    }
}

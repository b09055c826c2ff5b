//! Running the dashboard: connect (or start a private Redis), seed, serve, shut down.
//!
//! [`serve`] is the core: the caller owns the listener and the shutdown future, so a test
//! passes `127.0.0.1:0` and any future. [`run_dashboard`] is what the binary calls: it adds
//! the Redis connection with the embedded fallback, the seeding and the start-up lines.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use pubsub_hub::{ConnectionMode, HubConfig, HubError, PubSubHub, TargetKind};
use redis::ConnectionAddr;
use tokio::net::TcpListener;

use crate::access::{AccessControl, validate_token};
use crate::app::AppState;
use crate::embedded::{EmbeddedError, EmbeddedRedis};
use crate::limits::Limits;

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

/// How long the start-up check waits for a TCP answer from the configured Redis.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// Start a private `redis-server` when nothing answers at the configured address
    /// (default `true`).
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
            .field("redis_url", &self.redis_url.as_deref().map(mask_password))
            .field("embedded_fallback", &self.embedded_fallback)
            .field("redis_ca_file", &self.redis_ca_file)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("insecure_no_auth", &self.insecure_no_auth)
            .field("limits", &self.limits)
            .field("mode", &self.mode)
            .field(
                "cluster_nodes",
                &self
                    .cluster_nodes
                    .iter()
                    .map(|n| mask_password(n))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why the dashboard could not start or run. Displays as one line that says what to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum DashboardError {
    /// The Redis URL does not parse (shown with its password masked).
    InvalidRedisUrl {
        /// The URL, password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing answers at the Redis address, and no private server could be used.
    RedisUnreachable {
        /// `host:port` as configured.
        addr: String,
        /// Why there is no private server: `NotInstalled`, or `None` when the fallback
        /// is switched off (always `None` for a cluster).
        fallback: Option<EmbeddedError>,
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
    /// The options are unusable (an empty token, a CA file that cannot be read...).
    InvalidOptions(String),
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
            DashboardError::InvalidRedisUrl { url, reason } => {
                write!(f, "invalid Redis URL {url}: {reason}")
            }
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
                None => write!(
                    f,
                    "cannot reach Redis at {addr}: start Redis there or pass --redis-host/--redis-port"
                ),
                Some(EmbeddedError::NotInstalled) => write!(
                    f,
                    "cannot reach Redis at {addr} and redis-server is not on PATH: install it \
                     (apt-get install redis-server) or pass --redis-host/--redis-port"
                ),
                Some(e) => write!(
                    f,
                    "cannot reach Redis at {addr}, and {e}; pass --redis-host/--redis-port to use another Redis"
                ),
            },
            DashboardError::Redis { addr, source } => {
                write!(f, "Redis at {addr} answered, but cannot be used: {source}")
            }
            DashboardError::InvalidOptions(why) => write!(f, "{why}"),
            DashboardError::NoTokenForPublicAddress { addr } => write!(
                f,
                "refusing to listen on {addr} without an access token: anyone who can reach it \
                 could read and publish messages; set a token (--token or PUBSUB_HUB_TOKEN), \
                 listen on 127.0.0.1, or pass --insecure-no-auth to do it anyway"
            ),
            DashboardError::Bind { addr, source } => {
                write!(
                    f,
                    "cannot listen on {addr}: {source} (pass --host/--port to choose another)"
                )
            }
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

/// Creates the [`DEFAULT_SUBSCRIPTIONS`]. Stops at the first failure.
pub async fn seed_defaults(hub: &PubSubHub) -> Result<(), HubError> {
    for (name, kind, target) in DEFAULT_SUBSCRIPTIONS {
        hub.subscribe_kind(name, kind, vec![target.to_owned()])
            .await?;
    }
    Ok(())
}

/// A dashboard that is connected, seeded and bound, but not yet serving.
///
/// [`run_dashboard`] is `start`, print [`Dashboard::startup_lines`], `run`. Tests use the
/// steps to learn the bound address and the Redis in use.
pub struct Dashboard {
    listener: TcpListener,
    hub: PubSubHub,
    /// Kept alive while serving; dropping it (after the hub is shut down) kills the process.
    embedded: Option<EmbeddedRedis>,
    startup_lines: Vec<String>,
    limits: Limits,
    access: AccessControl,
}

impl Dashboard {
    /// Checks the access options, binds the HTTP address, connects to Redis (starting a
    /// private one when nothing answers and [`DashboardOptions::embedded_fallback`] is on)
    /// and seeds the default subscribers.
    ///
    /// Refuses ([`DashboardError::NoTokenForPublicAddress`]) to listen on an address that
    /// is not loopback without [`DashboardOptions::token`], unless
    /// [`DashboardOptions::insecure_no_auth`] is set.
    pub async fn start(opts: DashboardOptions) -> Result<Self, DashboardError> {
        if let Some(token) = &opts.token {
            validate_token(token).map_err(DashboardError::InvalidOptions)?;
        }
        opts.limits
            .validate()
            .map_err(DashboardError::InvalidOptions)?;
        let cluster = !opts.cluster_nodes.is_empty();
        if cluster && (opts.redis_url.is_some() || opts.redis_ca_file.is_some()) {
            return Err(DashboardError::InvalidOptions(
                "cluster nodes are given, so a Redis URL or CA file cannot be: put the \
                 credentials in the node URLs"
                    .into(),
            ));
        }
        // A single server's client, parsed before binding so that a bad URL fails first.
        let single = if cluster {
            None
        } else {
            let url = match &opts.redis_url {
                Some(url) => url.clone(),
                None => format!(
                    "redis://{}:{}/",
                    bracket_ipv6(&opts.redis_host),
                    opts.redis_port
                ),
            };
            Some(open_client(&url, opts.redis_ca_file.as_deref())?)
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
        };

        let config = dashboard_hub_config()
            .with_max_subscriptions(opts.limits.max_subscriptions)
            .with_mode(opts.mode);
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
                let (hub, embedded, redis_addr) =
                    connect_single(client, opts.embedded_fallback, config, &mut notes).await?;
                (hub, embedded, format!("Using Redis at {redis_addr}"))
            }
        };
        if let Err(e) = seed_defaults(&hub).await {
            hub.shutdown().await;
            return Err(DashboardError::Seed(e));
        }

        notes.push(format!(
            "Redis pub/sub demo server listening on http://{}:{}",
            bracket_ipv6(&opts.host),
            local.port()
        ));
        notes.push(using);
        notes.push(format!(
            "Seeded {} default subscription(s)",
            DEFAULT_SUBSCRIPTIONS.len()
        ));
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
            limits: opts.limits,
            access,
        })
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
    pub fn embedded_redis(&self) -> Option<&EmbeddedRedis> {
        self.embedded.as_ref()
    }

    /// Serves until `shutdown` resolves, then closes every subscription and connection of
    /// the hub, then stops the private Redis if there is one.
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
            ..
        } = self;
        let state = AppState::new(hub.clone())
            .with_limits(limits)
            .with_access(access);
        let served = serve_with_state(listener, state, shutdown).await;
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
pub async fn run_dashboard(
    opts: DashboardOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DashboardError> {
    let dashboard = Dashboard::start(opts).await?;
    for line in dashboard.startup_lines() {
        println!("{line}");
    }
    dashboard.run(shutdown).await
}

/// Serves the dashboard for `hub` on `listener` until `shutdown` resolves.
///
/// The hub stays the caller's: it is not shut down here.
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
pub async fn serve_with_state(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::http::serve_bounded(listener, state, shutdown).await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No handler could be installed: never resolve rather than stop at once.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
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
        let client =
            redis::Client::open(node.as_str()).map_err(|e| DashboardError::InvalidRedisUrl {
                url: mask_password(node),
                reason: e.to_string(),
            })?;
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

/// The hub on one server, starting the private fallback when nothing answers at the
/// configured address and `fallback` allows it (and adding its note to `notes`).
async fn connect_single(
    client: redis::Client,
    fallback: bool,
    config: HubConfig,
    notes: &mut Vec<String>,
) -> Result<(PubSubHub, Option<EmbeddedRedis>, String), DashboardError> {
    let configured = display_addr(client.get_connection_info().addr());
    let (client, embedded, redis_addr) = if answers(client.get_connection_info().addr()).await {
        (client, None, configured.clone())
    } else if !fallback {
        return Err(DashboardError::RedisUnreachable {
            addr: configured,
            fallback: None,
            cluster: false,
        });
    } else {
        let server = tokio::task::spawn_blocking(EmbeddedRedis::start)
            .await
            .unwrap_or_else(|e| Err(EmbeddedError::Failed(e.to_string())))
            .map_err(|e| DashboardError::RedisUnreachable {
                addr: configured.clone(),
                fallback: Some(e),
                cluster: false,
            })?;
        notes.push(format!(
            "No Redis answered at {configured}, so a private throwaway redis-server was \
             started on 127.0.0.1:{} (it saves nothing and stops with this server)",
            server.port()
        ));
        let client =
            redis::Client::open(server.url()).map_err(|e| DashboardError::InvalidRedisUrl {
                url: server.url(),
                reason: e.to_string(),
            })?;
        let addr = format!("127.0.0.1:{}", server.port());
        (client, Some(server), addr)
    };

    let hub = PubSubHub::with_config(client, config)
        .await
        .map_err(|source| DashboardError::Redis {
            addr: redis_addr.clone(),
            source,
        })?;
    Ok((hub, embedded, redis_addr))
}

/// The Redis client for `url`, trusting the CA in `ca_file` for `rediss://` when given.
/// Errors show the URL with its password masked.
fn open_client(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<redis::Client, DashboardError> {
    let invalid = |reason: String| DashboardError::InvalidRedisUrl {
        url: mask_password(url),
        reason,
    };
    match ca_file {
        None => redis::Client::open(url).map_err(|e| invalid(e.to_string())),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                DashboardError::InvalidOptions(format!(
                    "cannot read the Redis CA file {}: {e}",
                    path.display()
                ))
            })?;
            if !url.starts_with("rediss://") {
                return Err(invalid(
                    "a CA file is given, so the URL must use rediss:// (TLS)".into(),
                ));
            }
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(|e| invalid(e.to_string()))
        }
    }
}

/// True when something accepts a connection at `addr` within [`PROBE_TIMEOUT`].
async fn answers(addr: &ConnectionAddr) -> bool {
    let connect = async {
        match addr {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .is_ok()
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => tokio::net::UnixStream::connect(path).await.is_ok(),
            // Unknown kinds of address: let the hub try and report.
            _ => true,
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, connect)
        .await
        .unwrap_or(false)
}

/// `host:port` (IPv6 in brackets), or the socket path; never credentials.
fn display_addr(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{}:{port}", bracket_ipv6(host))
        }
        ConnectionAddr::Unix(path) => format!("unix:{}", path.display()),
        other => format!("{other:?}"),
    }
}

fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The URL with any password replaced by `***`.
fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let masked = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        // `redis://secret@host` puts the password where the user would be.
        None if !userinfo.is_empty() => "***".to_owned(),
        None => String::new(),
    };
    format!("{}{masked}{}", &url[..scheme_end + 3], &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(mask_password("redis://:s3cret@host"), "redis://:***@host");
        assert_eq!(mask_password("redis://s3cret@host/"), "redis://***@host/");
        assert_eq!(mask_password("redis://host:6379/"), "redis://host:6379/");
        assert_eq!(mask_password("not a url"), "not a url");
    }

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
    fn addresses_display_without_credentials() {
        let client = redis::Client::open("redis://u:pw@example.invalid:6380/").unwrap();
        assert_eq!(
            display_addr(client.get_connection_info().addr()),
            "example.invalid:6380"
        );
        assert_eq!(bracket_ipv6("::1"), "[::1]");
        assert_eq!(bracket_ipv6("localhost"), "localhost");
    }

    #[test]
    fn errors_are_one_line() {
        let e = DashboardError::RedisUnreachable {
            addr: "localhost:6379".into(),
            fallback: Some(EmbeddedError::NotInstalled),
            cluster: false,
        };
        let text = e.to_string();
        assert_eq!(
            text,
            "cannot reach Redis at localhost:6379 and redis-server is not on PATH: install it \
             (apt-get install redis-server) or pass --redis-host/--redis-port"
        );
        assert!(!text.contains('\n'));
    }
}

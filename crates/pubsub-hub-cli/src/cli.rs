//! The command line, as clap derive types. Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::error::EXIT_CODES_HELP;

/// Redis pub/sub from the terminal: serve the dashboard, publish, subscribe, inspect.
///
/// With no subcommand, serves the dashboard (as `pubsub-hub serve`).
///
/// Every setting is taken from, highest first: a flag, its environment variable, the
/// configuration file (--config), the built-in default. `pubsub-hub serve --print-config`
/// shows the result.
#[derive(Parser, Debug)]
#[command(
    name = "pubsub-hub",
    version,
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// TOML configuration file (env PUBSUB_HUB_CONFIG). Unknown keys are refused.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format on stderr: text, or json (one object per line) [env
    /// PUBSUB_HUB_LOG_FORMAT; file log.format; default text]. RUST_LOG sets the filter.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Where Redis is (global: valid before or after the subcommand).
    #[command(flatten)]
    pub redis: RedisArgs,

    /// Dashboard options when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,

    /// What to do; the dashboard when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How log lines are written to stderr.
#[derive(ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A flag value that must not be printed: a token, or a URL that may hold a password. Its
/// `Debug` is `"***"`, so `{:?}` of the parsed command line shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// How the dashboard's subscribers use Redis connections.
#[derive(ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    /// One Redis connection per subscriber, as in the guide; NUMSUB counts subscribers.
    Dedicated,
    /// Every subscriber shares a fixed set of connections; NUMSUB counts connections.
    Shared,
}

/// The Redis server to talk to. Unset flags fall through to the environment, the
/// configuration file and the defaults (see [`crate::settings`]).
///
/// The URL and host/port compete by layer: the one from the higher layer wins, and within
/// one layer the URL wins.
#[derive(Args, Debug, Clone, Default)]
pub struct RedisArgs {
    /// Redis URL, e.g. redis://:password@host:6379/0 or rediss://... for TLS [env
    /// REDIS_URL; file redis.url]. Beats --redis-host/--redis-port from the same layer.
    #[arg(long, global = true, help_heading = "Redis", value_name = "URL")]
    pub redis_url: Option<Secret>,

    /// Redis host [env REDIS_HOST; file redis.host; default localhost].
    #[arg(long, global = true, help_heading = "Redis", value_name = "HOST")]
    pub redis_host: Option<String>,

    /// Redis port [env REDIS_PORT; file redis.port; default 6379].
    #[arg(long, global = true, help_heading = "Redis", value_name = "PORT")]
    pub redis_port: Option<u16>,

    /// PEM file of the certificate authority that signed the Redis server's certificate,
    /// for a rediss:// URL [env PUBSUB_HUB_REDIS_CA_FILE; file redis.ca_file].
    #[arg(long, global = true, help_heading = "Redis", value_name = "PATH")]
    pub redis_ca_file: Option<PathBuf>,
}

/// The layer a setting was taken from, highest precedence first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// The configuration file.
    File,
    /// The built-in default (or not set at all).
    #[default]
    Default,
}

impl Source {
    /// `flag`, `env`, `file` or `default`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::File => "file",
            Source::Default => "default",
        }
    }
}

/// How to serve the dashboard. Each flag has an environment variable and a file key; see
/// `--print-config`.
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Address the dashboard binds to [env PUBSUB_HUB_HOST; file server.host; default
    /// 127.0.0.1]. Anything but loopback needs --token (or --insecure-no-auth).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,

    /// Port the dashboard binds to, 0 picks a free port [env PUBSUB_HUB_PORT; file
    /// server.port; default 8103].
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Access token: every route but /healthz and /readyz then requires `Authorization:
    /// Bearer TOKEN` (or the cookie /?token=TOKEN sets) [env PUBSUB_HUB_TOKEN; file
    /// server.token]. Prefer the environment: flags are visible to other local users.
    #[arg(long, value_name = "TOKEN", help_heading = "Access")]
    pub token: Option<Secret>,

    /// Listen on a non-loopback address WITHOUT a token, so anyone who can reach it can
    /// read and publish every message [env PUBSUB_HUB_INSECURE_NO_AUTH; file
    /// server.insecure_no_auth].
    #[arg(long, help_heading = "Access")]
    pub insecure_no_auth: bool,

    /// Always mark the session cookie Secure: the dashboard is reached over HTTPS (a
    /// TLS-terminating proxy) [env PUBSUB_HUB_COOKIE_SECURE; file server.cookie_secure].
    /// Without it the cookie is Secure when a --trusted-proxy sends X-Forwarded-Proto: https.
    #[arg(long, help_heading = "Access")]
    pub cookie_secure: bool,

    /// A reverse proxy whose X-Forwarded-For (the client address for the wrong-token limit)
    /// and X-Forwarded-Proto are believed: an address or CIDR range, repeatable [env
    /// PUBSUB_HUB_TRUSTED_PROXIES, comma separated; file server.trusted_proxies].
    #[arg(long = "trusted-proxy", value_name = "ADDR", help_heading = "Access")]
    pub trusted_proxies: Vec<String>,

    /// Never start a private redis-server. Without this, one is started (on a unix socket
    /// only this user can reach) when no Redis address is configured and nothing answers at
    /// localhost:6379; a configured address is never replaced: when nothing answers there,
    /// serve starts anyway, /readyz answers 503, and it connects when Redis appears [env
    /// PUBSUB_HUB_EMBEDDED_FALLBACK=false; file redis.embedded_fallback = false].
    #[arg(long)]
    pub no_embedded: bool,

    /// Largest request body in bytes [env PUBSUB_HUB_MAX_BODY_BYTES; file
    /// limits.max_body_bytes; default 1048576].
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    pub max_body_bytes: Option<usize>,

    /// Largest published message in bytes [env PUBSUB_HUB_MAX_MESSAGE_BYTES; file
    /// limits.max_message_bytes; default 65536].
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    pub max_message_bytes: Option<usize>,

    /// Most subscribers [env PUBSUB_HUB_MAX_SUBSCRIPTIONS; file limits.max_subscriptions;
    /// default 256]. The other limits are file keys and variables only.
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub max_subscriptions: Option<usize>,

    /// Subscriber connections: dedicated (one per subscriber, the guide's) or shared (a
    /// fixed set for all) [env PUBSUB_HUB_MODE; file dashboard.mode; default dedicated].
    #[arg(long, value_enum, value_name = "MODE", help_heading = "Scale")]
    pub mode: Option<ModeName>,

    /// Connections of shared mode [env PUBSUB_HUB_SHARED_CONNECTIONS; file
    /// dashboard.shared_connections; default 4].
    #[arg(long, value_name = "N", help_heading = "Scale")]
    pub shared_connections: Option<usize>,

    /// A Redis Cluster seed node, redis://host:port/ (repeatable): the dashboard then runs
    /// on the cluster, and --redis-* do not apply [env PUBSUB_HUB_CLUSTER_NODES, comma
    /// separated; file dashboard.cluster_nodes].
    #[arg(long = "cluster-node", value_name = "URL", help_heading = "Scale")]
    pub cluster_nodes: Vec<String>,

    /// Print the effective configuration (as TOML, with each value's source and secrets
    /// masked) and exit without connecting to Redis.
    #[arg(long)]
    pub print_config: bool,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the dashboard (the default): the guide's HTTP API and a live page.
    Serve(ServeArgs),
    /// Publish a message; prints how many subscribers Redis delivered it to, one line per
    /// publish.
    Publish(PublishArgs),
    /// Subscribe to channels (or patterns, or shard channels) and print each message, until
    /// Ctrl-C, SIGTERM or --count. Lag and reconnect events go to stderr.
    Subscribe(SubscribeArgs),
    /// Show what Redis has subscribed: PUBSUB CHANNELS, NUMSUB, NUMPAT and the shard
    /// variants.
    Inspect(InspectArgs),
    /// Run the WebSocket/SSE gateway: browsers and services subscribe to Redis channels
    /// with the Centrifugo client protocol (its SDKs work unchanged).
    Gateway(GatewayArgs),
}

/// `pubsub-hub gateway`.
#[derive(Args, Debug, Clone, Default)]
#[command(after_help = "\
Endpoints: /connection/websocket (Centrifugo protocol v2, JSON), /connection/uni_sse
(EventSource, connect request in ?cf_connect=), /api/<method> (with --api-key), /healthz,
/readyz, /metrics. Namespaces and channel rules live in the file's [gateway] and
[gateway.namespaces.NAME] tables.

Examples:
  pubsub-hub gateway                                  # loopback, anonymous clients allowed
  pubsub-hub gateway --host 0.0.0.0 --hmac-secret S3CRET --api-key K3Y
  redis-cli publish news '{\"text\": \"hello\"}'         # reaches every subscriber of news")]
pub struct GatewayArgs {
    /// Address the gateway binds to [env PUBSUB_HUB_GATEWAY_HOST; file gateway.host; default
    /// 127.0.0.1]. Anything but loopback needs --hmac-secret or --allow-anonymous.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,

    /// Port the gateway binds to, 0 picks a free port [env PUBSUB_HUB_GATEWAY_PORT; file
    /// gateway.port; default 8000].
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// The server API key (X-API-Key or `Authorization: apikey KEY`); without it the API
    /// is off [env PUBSUB_HUB_API_KEY; file gateway.api_key].
    #[arg(long, value_name = "KEY", help_heading = "Access")]
    pub api_key: Option<Secret>,

    /// The HS256 key of connection and subscription tokens (JWT) [env
    /// PUBSUB_HUB_HMAC_SECRET; file gateway.hmac_secret].
    #[arg(long, value_name = "SECRET", help_heading = "Access")]
    pub hmac_secret: Option<Secret>,

    /// Let clients connect without a token [env PUBSUB_HUB_ALLOW_ANONYMOUS; file
    /// gateway.allow_anonymous; default false]. Without --hmac-secret, loopback binds allow
    /// them anyway.
    #[arg(long, help_heading = "Access")]
    pub allow_anonymous: bool,

    // This text is `--help` output, where a plain URL reads best (rustdoc would want <...>).
    #[allow(rustdoc::bare_urls)]
    /// A browser origin allowed to connect besides the gateway's own, e.g.
    /// <https://app.example>, or * for any (repeatable) [env PUBSUB_HUB_ALLOWED_ORIGINS,
    /// comma separated; file gateway.allowed_origins].
    #[arg(
        long = "allowed-origin",
        value_name = "ORIGIN",
        help_heading = "Access"
    )]
    pub allowed_origins: Vec<String>,

    /// A Redis Cluster seed node, redis://host:port/ (repeatable): channels are then shard
    /// channels (SSUBSCRIBE/SPUBLISH) [env PUBSUB_HUB_CLUSTER_NODES, comma separated; file
    /// gateway.cluster_nodes].
    #[arg(long = "cluster-node", value_name = "URL", help_heading = "Scale")]
    pub cluster_nodes: Vec<String>,

    /// Never start a private redis-server. Without this, one is started (on a unix socket
    /// only this user can reach) when no Redis address is configured and nothing answers at
    /// localhost:6379; a configured address is never replaced but waited for [env
    /// PUBSUB_HUB_EMBEDDED_FALLBACK=false; file redis.embedded_fallback].
    #[arg(long)]
    pub no_embedded: bool,

    /// Print the effective configuration (with where each value came from) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// `pubsub-hub publish`.
#[derive(Args, Debug)]
#[command(after_help = "\
Message encoding:
  By default the message is JSON: text that parses as JSON is sent as compact JSON
  ('{\"a\": 1}' is sent as {\"a\":1}, 42 as 42); any other text is sent as a JSON string
  (hello is sent as \"hello\"). One trailing newline is dropped from text read from
  stdin or a file. Use --raw to send the bytes exactly as given, newline included.

Examples:
  pubsub-hub publish orders:new '{\"order_id\": 42}'
  echo '{\"order_id\": 42}' | pubsub-hub publish orders:new -
  pubsub-hub publish --raw --file image.png blobs:new")]
pub struct PublishArgs {
    /// Channel to publish to.
    pub channel: String,

    /// The message; `-` (or nothing, when stdin is not a terminal) reads stdin.
    #[arg(conflicts_with = "file")]
    pub message: Option<String>,

    /// Read the message from a file.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// Publish the message this many times.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,

    /// Send the bytes exactly as given instead of as JSON.
    #[arg(long)]
    pub raw: bool,

    /// Publish to a shard channel (SPUBLISH, Redis 7+): only `subscribe --shard`
    /// subscribers receive it.
    #[arg(long)]
    pub shard: bool,
}

/// `pubsub-hub subscribe`.
#[derive(Args, Debug)]
#[command(after_help = "\
Output:
  text  one line per message: CHANNEL PAYLOAD, or CHANNEL (via PATTERN) PAYLOAD for a
        pattern delivery. UTF-8 payloads are printed as text with control characters
        escaped (\\n, \\t, \\u{1b}); other payloads as base64:... .
  json  one JSON object per line: channel, pattern, payload (parsed JSON, text, or
        base64), encoding (json|text|base64), received_at_ms.")]
pub struct SubscribeArgs {
    /// Channels to subscribe to (glob patterns with --pattern).
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,

    /// Treat the targets as glob patterns (PSUBSCRIBE): `*`, `?`, `[abc]`.
    #[arg(long, conflicts_with = "shard")]
    pub pattern: bool,

    /// Treat the targets as shard channels (SSUBSCRIBE, Redis 7+).
    #[arg(long)]
    pub shard: bool,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,

    /// Exit 0 after printing this many messages.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// How `subscribe` prints messages.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// `CHANNEL PAYLOAD` lines.
    Text,
    /// JSON lines.
    Json,
}

/// `pubsub-hub inspect`.
#[derive(Args, Debug)]
#[command(after_help = "\
Shard channels (Redis 7+: PUBSUB SHARDCHANNELS / SHARDNUMSUB) are listed in a second
table when there are any.")]
pub struct InspectArgs {
    /// Glob for PUBSUB CHANNELS (and SHARDCHANNELS).
    #[arg(long, default_value = "*", value_name = "GLOB")]
    pub pattern: String,

    /// Channels to count with PUBSUB NUMSUB and SHARDNUMSUB (default: every channel
    /// PUBSUB CHANNELS and SHARDCHANNELS list).
    #[arg(value_name = "CHANNEL")]
    pub channels: Vec<String>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Cli {
    /// Parses the process arguments. `--help` and `--version` print and exit 0; a usage
    /// error prints one line (see [`usage_error_line`]) and exits 2.
    pub fn parse_args() -> Cli {
        Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|e| {
            let args: Vec<String> = std::env::args().skip(1).collect();
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
                _ => {
                    eprintln!("pubsub-hub: {}", usage_error_line(&e, &args));
                    std::process::exit(i32::from(crate::ExitStatus::Usage.code()));
                }
            }
        })
    }

    /// Like [`Cli::parse_args`] over explicit arguments, returning clap's error.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        Cli::from_matches(&matches)
    }

    fn from_matches(matches: &ArgMatches) -> Result<Cli, clap::Error> {
        let cli = Cli::from_arg_matches(matches)?;
        // The dashboard's options before a subcommand would be silently ignored: refuse them
        // (clap's `args_conflicts_with_subcommands` would refuse the global Redis ones too).
        if let Some((name, _)) = matches.subcommand() {
            let serve_args = ServeArgs::augment_args(clap::Command::new("serve"));
            let given = serve_args.get_arguments().find(|a| {
                matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine)
            });
            if let Some(arg) = given {
                let flag = format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str()));
                let hint = if name == "serve" {
                    format!("put {flag} after `serve`")
                } else {
                    format!("{flag} is an option of `serve`, not of `{name}`")
                };
                return Err(Cli::command().error(clap::error::ErrorKind::ArgumentConflict, hint));
            }
        }
        Ok(cli)
    }

    /// The `gateway` options, for `pubsub-hub gateway`.
    pub fn gateway_args(&self) -> Option<&GatewayArgs> {
        match &self.command {
            Some(Command::Gateway(args)) => Some(args),
            _ => None,
        }
    }

    /// The `serve` options in force: the subcommand's, or the top level's without one.
    pub fn serve_args(&self) -> Option<&ServeArgs> {
        match &self.command {
            None => Some(&self.serve),
            Some(Command::Serve(args)) => Some(args),
            Some(_) => None,
        }
    }
}

/// A clap usage error as one line: its first paragraph without clap's `error: ` prefix, and
/// where to look next, e.g. `unexpected argument '--x' found; try 'pubsub-hub publish
/// --help'`. `args` (the command line, without the program name) names the subcommand when
/// clap's message has no usage line.
pub fn usage_error_line(e: &clap::Error, args: &[String]) -> String {
    let rendered = e.render().to_string();
    let paragraph: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let joined = paragraph.join(" ");
    let message = joined.strip_prefix("error: ").unwrap_or(&joined);
    let message = if message.is_empty() {
        "invalid arguments"
    } else {
        message
    };
    // clap's usage line names the (sub)command: `Usage: pubsub-hub publish [OPTIONS] ...`.
    let from_usage: Vec<&str> = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(|u| {
            u.split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect()
        })
        .unwrap_or_default();
    let command = if from_usage.is_empty() {
        let subcommands: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        match args.iter().find(|a| subcommands.contains(a)) {
            Some(sub) => format!("pubsub-hub {sub}"),
            None => "pubsub-hub".to_owned(),
        }
    } else {
        from_usage.join(" ")
    };
    format!("{message}; try '{command} --help'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_systemd_unit_runs_a_valid_command_line() {
        let unit = include_str!("../../../contrib/systemd/pubsub-hub.service");
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("an ExecStart line");
        let args: Vec<&str> = exec.split_whitespace().collect();
        assert!(args[0].ends_with("/pubsub-hub"), "{exec}");
        let cli = Cli::try_parse_args(args).expect("the unit's command line parses");
        assert!(matches!(cli.command, Some(Command::Serve(_))));
        let config = cli.config.expect("the unit names a config file");
        assert!(
            unit.contains("EnvironmentFile="),
            "the token comes from an EnvironmentFile"
        );
        assert_eq!(config, PathBuf::from("/etc/pubsub-hub/pubsub-hub.toml"));
    }
}

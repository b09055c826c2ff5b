//! Resolving where Redis is, from flags, environment and defaults, and showing it without
//! secrets.
//!
//! One precedence order, highest first:
//! 1. `--redis-url` on the command line;
//! 2. `--redis-host` / `--redis-port` on the command line (the other one from the
//!    environment or its default);
//! 3. `REDIS_URL` in the environment;
//! 4. `REDIS_HOST` / `REDIS_PORT` in the environment;
//! 5. the defaults `localhost` / `6379`.
//!
//! A flag always beats the environment, even across the URL / host-and-port split, so a
//! `REDIS_URL` exported in a shell never silently overrides an explicit `--redis-port`.
//! Each resolved value remembers its [`Source`], which is what a `--print-config` needs.

use redis::IntoConnectionInfo;

use crate::cli::{RedisArgs, Source};
use crate::error::CliError;

/// The Redis server a command talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisTarget {
    /// The URL handed to redis-rs (may contain a password: never print it).
    url: String,
    /// `host:port` as chosen by host/port settings, or `None` when a URL was chosen.
    host_port: Option<(String, u16)>,
    /// Which layer won.
    source: Source,
}

impl RedisTarget {
    /// Applies the precedence order to parsed arguments. A malformed URL is a usage error.
    pub fn resolve(args: &RedisArgs) -> Result<RedisTarget, CliError> {
        let s = args.sources;
        let host_port_flag = s.host == Source::Flag || s.port == Source::Flag;
        let use_url = match &args.redis_url {
            Some(_) if s.url == Source::Flag => true,
            Some(_) if host_port_flag => false,
            Some(_) => true,
            None => false,
        };
        let target = if use_url {
            let url = args.redis_url.clone().unwrap_or_default();
            RedisTarget {
                url,
                host_port: None,
                source: s.url,
            }
        } else {
            RedisTarget {
                url: host_port_url(&args.redis_host, args.redis_port),
                host_port: Some((args.redis_host.clone(), args.redis_port)),
                source: s.host.min(s.port),
            }
        };
        target.validate()?;
        Ok(target)
    }

    /// A target from a plain URL (tests, the bench's private server).
    pub fn from_url(url: impl Into<String>) -> Result<RedisTarget, CliError> {
        let target = RedisTarget {
            url: url.into(),
            host_port: None,
            source: Source::Flag,
        };
        target.validate()?;
        Ok(target)
    }

    fn validate(&self) -> Result<(), CliError> {
        let what = if self.host_port.is_some() {
            "--redis-host/--redis-port"
        } else {
            "--redis-url"
        };
        if self.host_port.is_none()
            && !(self.url.starts_with("redis://")
                || self.url.starts_with("rediss://")
                || self.url.starts_with("unix://")
                || self.url.starts_with("redis+unix://"))
        {
            return Err(CliError::usage(format!(
                "invalid {what} {}: it must start with redis://, rediss:// or unix://",
                self.display()
            )));
        }
        self.url.as_str().into_connection_info().map_err(|e| {
            CliError::usage(format!(
                "invalid {what} {}: {}",
                self.display(),
                e.detail().unwrap_or("cannot be parsed")
            ))
        })?;
        Ok(())
    }

    /// The URL for redis-rs. Contains the password if there is one.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A redis-rs client for this target.
    pub fn client(&self) -> Result<redis::Client, CliError> {
        redis::Client::open(self.url.as_str())
            .map_err(|e| CliError::usage(format!("invalid Redis address {}: {e}", self.display())))
    }

    /// Host and port when they were chosen by host/port settings.
    pub fn host_port(&self) -> Option<(&str, u16)> {
        self.host_port.as_ref().map(|(h, p)| (h.as_str(), *p))
    }

    /// The layer the address came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Safe to print: `host:port` for host/port targets, the URL with any password
    /// replaced by `***` otherwise.
    pub fn display(&self) -> String {
        match &self.host_port {
            Some((h, p)) => format!("{h}:{p}"),
            None => redact_url(&self.url),
        }
    }
}

fn host_port_url(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("redis://[{host}]:{port}/")
    } else {
        format!("redis://{host}:{port}/")
    }
}

/// Replaces the password of a URL's user-info (`scheme://user:password@host`) with `***`.
/// Works on malformed URLs too, since it is used to report them.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // No scheme: we cannot tell where a password would be, so show only its length.
        return if url.contains('@') {
            format!("<{} characters, hidden>", url.chars().count())
        } else {
            url.to_owned()
        };
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let redacted_userinfo = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        // `redis://password@host` is read by some clients as a password alone.
        None if userinfo.is_empty() => String::new(),
        None => "***".to_owned(),
    };
    format!(
        "{}{}@{}",
        &url[..rest_start],
        redacted_userinfo,
        &rest[at + 1..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::RedisSources;

    fn args(url: Option<&str>, host: &str, port: u16, sources: RedisSources) -> RedisArgs {
        RedisArgs {
            redis_url: url.map(str::to_owned),
            redis_host: host.into(),
            redis_port: port,
            sources,
        }
    }

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(redact_url("redis://:s3cret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(
            redact_url("redis://user:s3cret@h:1"),
            "redis://user:***@h:1"
        );
        assert_eq!(redact_url("redis://s3cret@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_url("rediss://u:p@w@h/"), "rediss://u:***@h/");
        assert!(!redact_url("u:pass@host").contains("pass"));
    }

    #[test]
    fn flags_beat_env_across_url_and_host() {
        let env_url_flag_port = args(
            Some("redis://envhost:1/"),
            "localhost",
            7000,
            RedisSources {
                url: Source::Env,
                host: Source::Default,
                port: Source::Flag,
            },
        );
        let t = RedisTarget::resolve(&env_url_flag_port).unwrap();
        assert_eq!(t.host_port(), Some(("localhost", 7000)));

        let env_url_env_port = args(
            Some("redis://envhost:1/"),
            "localhost",
            7000,
            RedisSources {
                url: Source::Env,
                host: Source::Default,
                port: Source::Env,
            },
        );
        let t = RedisTarget::resolve(&env_url_env_port).unwrap();
        assert_eq!(t.url(), "redis://envhost:1/");

        let flag_url = args(
            Some("redis://flaghost:2/"),
            "h",
            1,
            RedisSources {
                url: Source::Flag,
                host: Source::Flag,
                port: Source::Flag,
            },
        );
        assert_eq!(
            RedisTarget::resolve(&flag_url).unwrap().url(),
            "redis://flaghost:2/"
        );
    }

    #[test]
    fn malformed_urls_are_usage_errors_without_secrets() {
        let bad = args(
            Some("http://:hunter2@h/"),
            "h",
            1,
            RedisSources {
                url: Source::Flag,
                ..Default::default()
            },
        );
        let e = RedisTarget::resolve(&bad).unwrap_err();
        assert_eq!(e.status(), crate::error::ExitStatus::Usage);
        assert!(!e.message().contains("hunter2"), "{}", e.message());
    }
}

//! A Redis address: building the redis-rs client from a URL (with an optional CA file for
//! TLS), and showing an address or URL without its secrets.

use std::fmt;
use std::path::{Path, PathBuf};

use redis::ConnectionAddr;

/// URL schemes redis-rs connects with.
const SCHEMES: [&str; 4] = ["redis://", "rediss://", "unix://", "redis+unix://"];

/// Why a client could not be built. Displays as one line, with any password redacted.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL does not parse, or has a scheme redis-rs cannot use.
    InvalidUrl {
        /// The URL, redacted ([`redact_url`]).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA file cannot be read.
    CaFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A CA file is given but the URL is not `rediss://` (TLS), so it would not be used.
    CaWithoutTls {
        /// The URL, redacted.
        url: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidUrl { url, reason } => {
                write!(f, "invalid Redis URL {url}: {reason}")
            }
            ClientError::CaFile { path, source } => {
                write!(
                    f,
                    "cannot read the Redis CA file {}: {source}",
                    path.display()
                )
            }
            ClientError::CaWithoutTls { url } => write!(
                f,
                "a Redis CA file is given, so the Redis URL must use rediss:// (TLS), not {url}"
            ),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::CaFile { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Checks that `url` has a scheme redis-rs connects with and parses, without reading any
/// file; the reason is redis-rs's.
pub fn check_url(url: &str) -> Result<(), ClientError> {
    let invalid = |reason: String| ClientError::InvalidUrl {
        url: redact_url(url),
        reason,
    };
    if !SCHEMES.iter().any(|s| url.starts_with(s)) {
        return Err(invalid(
            "it must start with redis://, rediss:// or unix://".into(),
        ));
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(drop)
        .map_err(|e| invalid(e.detail().map_or_else(|| e.to_string(), str::to_owned)))
}

/// The redis-rs client for `url`, trusting the certificate authority in `ca_file` (PEM) for
/// a `rediss://` server whose certificate no public authority signed. Without a CA file,
/// `rediss://` trusts the usual public roots. Connects to nothing.
pub fn open_client(url: &str, ca_file: Option<&Path>) -> Result<redis::Client, ClientError> {
    check_url(url)?;
    let invalid = |e: redis::RedisError| ClientError::InvalidUrl {
        url: redact_url(url),
        reason: e.detail().map_or_else(|| e.to_string(), str::to_owned),
    };
    let Some(path) = ca_file else {
        return redis::Client::open(url).map_err(invalid);
    };
    let pem = std::fs::read(path).map_err(|source| ClientError::CaFile {
        path: path.to_owned(),
        source,
    })?;
    if !url.starts_with("rediss://") {
        return Err(ClientError::CaWithoutTls {
            url: redact_url(url),
        });
    }
    #[cfg(feature = "tls")]
    return redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    )
    .map_err(invalid);
    #[cfg(not(feature = "tls"))]
    {
        drop(pem);
        Err(ClientError::InvalidUrl {
            url: redact_url(url),
            reason: "this build has no TLS support (the launcher's `tls` feature)".to_owned(),
        })
    }
}

/// `redis://HOST:PORT/`, with an IPv6 host in brackets.
pub fn host_port_url(host: &str, port: u16) -> String {
    format!("redis://{}:{port}/", bracket_ipv6(host))
}

/// An IPv6 address in brackets (`[::1]`); anything else as it is.
pub fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// `host:port` (IPv6 in brackets), or `unix:PATH`; never credentials.
pub fn display_addr(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{}:{port}", bracket_ipv6(host))
        }
        ConnectionAddr::Unix(path) => format!("unix:{}", path.display()),
        other => format!("{other:?}"),
    }
}

/// Replaces the password of a URL's user-info (`scheme://user:password@host`) with `***`.
/// Works on malformed URLs too, since it is used to report them; text without a scheme but
/// with an `@` is shown only as its length.
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
    let redacted = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        // `redis://password@host` is read by some clients as a password alone.
        None if userinfo.is_empty() => String::new(),
        None => "***".to_owned(),
    };
    format!("{}{redacted}@{}", &url[..rest_start], &rest[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(redact_url("redis://:s3cret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(
            redact_url("redis://user:s3cret@h:1"),
            "redis://user:***@h:1"
        );
        assert_eq!(redact_url("redis://s3cret@h"), "redis://***@h");
        assert_eq!(redact_url("redis://s3cret@host/"), "redis://***@host/");
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_url("rediss://u:p@w@h/"), "rediss://u:***@h/");
        assert_eq!(redact_url("redis://h/?x=a@b"), "redis://h/?x=a@b");
        assert_eq!(redact_url("not a url"), "not a url");
        assert!(!redact_url("u:pass@host").contains("pass"));
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
        assert_eq!(host_port_url("::1", 7), "redis://[::1]:7/");
    }

    #[test]
    fn bad_urls_and_ca_files_are_refused_without_secrets() {
        let e = open_client("http://:hunter2@h/", None).unwrap_err();
        assert!(matches!(e, ClientError::InvalidUrl { .. }), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = open_client("redis://h/", Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(matches!(e, ClientError::CaFile { .. }), "{e}");
        let ca = tempfile::NamedTempFile::new().unwrap();
        let e = open_client("redis://:pw@h/", Some(ca.path())).unwrap_err();
        assert!(matches!(e, ClientError::CaWithoutTls { .. }), "{e}");
        assert!(!e.to_string().contains("pw@"), "{e}");
        assert!(open_client("redis://h:1/", None).is_ok());
        assert!(open_client("redis+unix:///tmp/r.sock", None).is_ok());
    }
}

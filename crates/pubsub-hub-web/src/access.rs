//! Access control: the access token, its guessing limit, cross-site refusal and the loopback
//! host check.
//!
//! One middleware, [`guard`], in front of every route:
//! 1. **Host** (only without a token, when the dashboard listens on loopback): a `Host`
//!    header that is not a loopback name is refused with 403 (the health checks excepted). A page on another site that
//!    re-points its own name at 127.0.0.1 (DNS rebinding) is then still another host.
//! 2. **Token** (when one is configured): every route but the health checks needs
//!    `Authorization: Bearer <token>` or the session cookie. Visiting `/?token=<token>` once
//!    sets the cookie (`HttpOnly`, `SameSite=Strict`, and `Secure` when the page was reached
//!    over HTTPS) on a redirect to `/`, so the token leaves the address bar and the history,
//!    and the page, its `fetch` calls and its `EventSource` (which cannot send headers) keep
//!    working. Tokens are at least [`MIN_TOKEN_CHARS`] characters and compared in constant
//!    time.
//! 3. **Guessing** (with a token): wrong tokens are limited per client address
//!    ([`crate::throttle`]); past the limit every request of that address that needs the
//!    token gets `429 {"error": ...}` with `Retry-After`, until its budget refills.
//! 4. **Cross-site** (always): a POST whose `Sec-Fetch-Site` is `cross-site` or `same-site`
//!    (another port of the same host is the same *site*), or whose `Origin` does not match
//!    its `Host`, is refused with 403. Requests without either header (curl, scripts) pass.
//!
//! The client address and HTTPS come from [`crate::client`]: the connection's peer, or what
//! a configured trusted reverse proxy forwards.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::client::{self, TrustedProxies};
use crate::error::ApiError;
use crate::throttle::{FailureLimit, FailureLimiter, retry_after_secs};

/// Name of the session cookie set by `/?token=...`.
pub const TOKEN_COOKIE: &str = "pubsub_hub_token";

/// Routes that never need the token: a load balancer's health checks.
pub const PUBLIC_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Fewest characters an access token may have (16): with the guessing limit of
/// [`crate::throttle`], even a token of 16 hex digits (64 bits) cannot be found by trying.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Who may use the dashboard.
#[derive(Clone, Default)]
pub struct AccessControl {
    /// When set, every route but [`PUBLIC_PATHS`] requires it.
    token: Option<String>,
    /// Refuse requests whose `Host` is not a loopback name; set by
    /// [`crate::Dashboard::start`] when it listens on loopback without a token.
    pub loopback_hosts_only: bool,
    /// Mark the session cookie `Secure` always: the dashboard is reached over HTTPS (a
    /// TLS-terminating proxy) even when no trusted proxy says so per request.
    pub cookie_secure: bool,
    /// Proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed ([`crate::client`]).
    pub trusted_proxies: TrustedProxies,
    /// Wrong tokens per client address; shared by clones, so one dashboard has one table.
    limiter: Arc<FailureLimiter>,
}

impl std::fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token itself is never printed.
        f.debug_struct("AccessControl")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("loopback_hosts_only", &self.loopback_hosts_only)
            .field("cookie_secure", &self.cookie_secure)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("failure_limit", &self.limiter.limit())
            .finish()
    }
}

impl AccessControl {
    /// No token, any host: what the tests and embedders behind their own proxy use.
    pub fn open() -> Self {
        Self::default()
    }

    /// Requires `token` on every route but the health checks. The token is taken as it is;
    /// [`validate_token`] is the rule [`crate::Dashboard::start`] and the CLI apply first.
    pub fn with_token(token: impl Into<String>) -> Self {
        AccessControl {
            token: Some(token.into()),
            ..Self::default()
        }
    }

    /// Sets whether requests must name a loopback host.
    pub fn with_loopback_hosts_only(mut self, on: bool) -> Self {
        self.loopback_hosts_only = on;
        self
    }

    /// Sets whether the session cookie is always `Secure`.
    pub fn with_cookie_secure(mut self, on: bool) -> Self {
        self.cookie_secure = on;
        self
    }

    /// Sets the proxies whose forwarding headers are believed.
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Sets how many wrong tokens a client address may send (a fresh table).
    pub fn with_failure_limit(mut self, limit: FailureLimit) -> Self {
        self.limiter = Arc::new(FailureLimiter::new(limit));
        self
    }

    /// True when a token is required.
    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// The wrong-token limiter (its table size is observable through it).
    pub fn limiter(&self) -> &FailureLimiter {
        &self.limiter
    }
}

/// Checks a token for use: at least [`MIN_TOKEN_CHARS`] characters, and only visible ASCII
/// (it travels in a header and a cookie). The error names the problem, never the token.
/// The dashboard ([`crate::Dashboard::start`]) and the CLI's configuration check both apply
/// this one rule.
pub fn validate_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the access token is empty".into());
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
    {
        return Err("the access token must be printable ASCII without spaces, ';' or ','".into());
    }
    if token.len() < MIN_TOKEN_CHARS {
        return Err(format!(
            "the access token is {} characters; at least {MIN_TOKEN_CHARS} are required \
             (`openssl rand -hex 16` makes a good one)",
            token.len()
        ));
    }
    Ok(())
}

/// The middleware; see the module documentation for the order of the checks.
///
/// # Cancel safety
/// Cancel-safe: its only state is the wrong-token table, updated synchronously before the
/// route runs; dropping it drops the route's future (see each route).
pub async fn guard(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let access = &app.access;
    let headers = request.headers();
    let public = PUBLIC_PATHS.contains(&request.uri().path());
    if access.loopback_hosts_only && !public && !host_is_loopback(headers) {
        return ApiError::Forbidden(
            "this dashboard answers only to localhost names; use http://127.0.0.1:<port>/ or \
             configure an access token"
                .into(),
        )
        .into_response();
    }
    if request.method() == Method::POST
        && let Err(e) = same_origin(headers)
    {
        return e.into_response();
    }
    let Some(token) = &access.token else {
        return next.run(request).await;
    };
    if public {
        return next.run(request).await;
    }
    let peer = client::peer(&request);
    let client_ip = client::client_ip(peer, headers, &access.trusted_proxies);
    let now = Instant::now();
    if let Err(wait) = access.limiter.check(client_ip, now) {
        tracing::warn!(client = %client_ip, "refusing a request: too many wrong access tokens");
        return ApiError::TooManyRequests {
            message: "too many wrong access tokens from this address; wait and try again".into(),
            retry_after_secs: retry_after_secs(wait),
        }
        .into_response();
    }
    let wrong = || {
        access.limiter.fail(client_ip, now);
        ApiError::Unauthorized("the access token is wrong".into()).into_response()
    };
    let path = request.uri().path();
    // A `/?token=` wins over an old cookie, so a changed token can be entered again.
    if path == "/"
        && request.method() == Method::GET
        && let Some(given) = query_token(request.uri().query().unwrap_or_default())
    {
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            let secure = access.cookie_secure
                || client::forwarded_https(peer, headers, &access.trusted_proxies);
            return login(token, secure);
        }
        return wrong();
    }
    if let Some(given) = bearer(headers).or_else(|| cookie(headers, TOKEN_COOKIE)) {
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return next.run(request).await;
        }
        return wrong();
    }
    ApiError::Unauthorized(
        "an access token is required: send `Authorization: Bearer <token>`, or open \
         /?token=<token> once in the browser"
            .into(),
    )
    .into_response()
}

/// The answer to a right `/?token=`: set the cookie and go to `/`, so the token leaves the
/// address bar and the history. `secure` adds `Secure` (the page was reached over HTTPS),
/// so the browser never sends the cookie over plain HTTP.
fn login(token: &str, secure: bool) -> Response {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The value of cookie `name`, from any `Cookie` header.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// `token` from a query string (percent-decoded).
fn query_token(query: &str) -> Option<String> {
    crate::form::decode_form(query.as_bytes())
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// Refuses a request the browser marks as coming from another site or origin.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && matches!(site, "cross-site" | "same-site")
    {
        return Err(ApiError::Forbidden(format!(
            "cross-site requests are refused (Sec-Fetch-Site: {site})"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'));
        if origin_host.is_none_or(|o| !o.eq_ignore_ascii_case(host)) {
            return Err(ApiError::Forbidden(
                "cross-origin requests are refused (Origin does not match Host)".into(),
            ));
        }
    }
    Ok(())
}

/// True when there is no `Host` (HTTP/1.0, in-process tests) or it names a loopback
/// address: `localhost`, `*.localhost`, `127.x.y.z` or `[::1]`, with any port.
fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn credentials_are_found() {
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer abc")])).as_deref(),
            Some("abc")
        );
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(
            cookie(
                &headers(&[("cookie", "a=1; pubsub_hub_token=t0k; b=2")]),
                TOKEN_COOKIE
            )
            .as_deref(),
            Some("t0k")
        );
        assert_eq!(query_token("x=1&token=a%2Bb").as_deref(), Some("a+b"));
    }

    #[test]
    fn cross_site_rules() {
        assert!(same_origin(&headers(&[])).is_ok());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(same_origin(&headers(&[("sec-fetch-site", "none")])).is_ok());
        assert!(same_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-site")])).is_err());
        let ok = headers(&[
            ("origin", "http://127.0.0.1:8103"),
            ("host", "127.0.0.1:8103"),
        ]);
        assert!(same_origin(&ok).is_ok());
        for origin in ["http://evil.example", "null", "http://127.0.0.1:9999"] {
            let h = headers(&[("origin", origin), ("host", "127.0.0.1:8103")]);
            assert!(same_origin(&h).is_err(), "{origin}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "localhost:8103",
            "127.0.0.1:1",
            "127.9.9.9",
            "[::1]:8103",
            "app.localhost:80",
        ] {
            assert!(host_is_loopback(&headers(&[("host", host)])), "{host}");
        }
        for host in ["evil.example", "evil.example:8103", "10.0.0.1", "[::2]:1"] {
            assert!(!host_is_loopback(&headers(&[("host", host)])), "{host}");
        }
        assert!(host_is_loopback(&headers(&[])));
    }

    #[test]
    fn tokens_are_validated() {
        assert!(validate_token("").is_err());
        assert!(validate_token("has space but long enough").is_err());
        assert!(validate_token("a;b-long-enough-token").is_err());
        assert!(validate_token("s3cret-T0ken_~-16").is_ok());
        let short = validate_token("s3cret-T0ken_~1").unwrap_err();
        assert!(
            short.contains("15 characters") && short.contains("at least 16"),
            "{short}"
        );
        assert!(!short.contains("s3cret"), "{short}");
    }
}

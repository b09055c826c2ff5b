//! Who is asking: the client's address and whether it reached the dashboard over HTTPS.
//!
//! The HTTP server ([`crate::http`]) puts each connection's peer address into the request
//! as [`axum::extract::ConnectInfo`]. Behind a reverse proxy that peer is the proxy, so
//! for a peer in [`TrustedProxies`] (and only then: anyone else could write these headers)
//! two headers are believed:
//! - `X-Forwarded-For`: the client is its rightmost address that is not itself a trusted
//!   proxy (each proxy appends the address it saw, so entries further left were written by
//!   the client and prove nothing);
//! - `X-Forwarded-Proto`: `https` in its first entry means the page was reached over HTTPS,
//!   so the session cookie is marked `Secure`.
//!
//! A request without a peer address (the router called in-process, as the `oneshot` tests
//! do) counts as coming from `0.0.0.0`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};

/// Reverse proxies whose forwarding headers are believed: addresses or CIDR ranges
/// (`10.0.0.7`, `10.0.0.0/8`, `::1`, `fd00::/8`). Empty by default: no header is believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// Each range as its network address and prefix length.
    ranges: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// No trusted proxy.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses addresses and CIDR ranges. The error names the entry that does not parse.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = entry.as_ref().trim();
            let bad = || {
                format!(
                    "trusted proxy {entry:?} is not an IP address or a CIDR range \
                     (e.g. 10.0.0.7, 10.0.0.0/8, ::1, fd00::/8)"
                )
            };
            let (addr, prefix) = match entry.split_once('/') {
                Some((addr, prefix)) => {
                    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
                    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
                    (addr, prefix)
                }
                None => {
                    let addr: IpAddr = entry.parse().map_err(|_| bad())?;
                    (addr, full_prefix(addr))
                }
            };
            if prefix > full_prefix(addr) {
                return Err(bad());
            }
            ranges.push((mask(addr, prefix), prefix));
        }
        Ok(TrustedProxies { ranges })
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// True when `ip` is in one of the ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.ranges.iter().any(|&(net, prefix)| {
            std::mem::discriminant(&net) == std::mem::discriminant(&ip) && mask(ip, prefix) == net
        })
    }
}

/// The peer address of the connection a request came on, if the server recorded one.
pub fn peer<B>(request: &Request<B>) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| canonical(addr.ip()))
}

/// The client's address: the peer, or for a trusted proxy the address it forwarded
/// (see the module documentation). `0.0.0.0` when there is no peer.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let Some(peer) = peer else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    if !trusted.contains(peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| parse_forwarded_addr(s.trim()))
        .collect::<Option<Vec<_>>>()
        // A malformed list is not believed at all.
        .unwrap_or_default();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(*ip))
        .unwrap_or(peer)
}

/// True when the request reached a trusted proxy over HTTPS (`X-Forwarded-Proto: https`
/// from a peer in `trusted`).
pub fn forwarded_https(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> bool {
    if !peer.is_some_and(|p| trusted.contains(p)) {
        return false;
    }
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// An address of `X-Forwarded-For`: `1.2.3.4`, `::1`, or with a port (`1.2.3.4:5`,
/// `[::1]:5`).
fn parse_forwarded_addr(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(canonical)
}

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, what a dual-stack socket reports) as
/// the IPv4 address it is.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn full_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `ip` with every bit after the first `prefix` cleared.
pub(crate) fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u32::MAX << (32 - u32::from(prefix.min(32))))
            };
            IpAddr::V4(kept.into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u128::MAX << (128 - u32::from(prefix.min(128))))
            };
            IpAddr::V6(kept.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn ranges_parse_and_match() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1"]).unwrap();
        assert!(t.contains(ip("10.200.3.4")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(t.contains(ip("fd12::1")));
        assert!(t.contains(ip("::1")));
        assert!(!t.contains(ip("fe80::1")));
        assert!(t.contains(ip("::ffff:10.1.1.1")), "mapped IPv4 is IPv4");
        assert!(
            TrustedProxies::parse(&["0.0.0.0/0"])
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
        for bad in ["10.0.0.0/33", "proxy.local", "10.0.0.1/x", "", "::1/129"] {
            let e = TrustedProxies::parse(&[bad]).unwrap_err();
            assert!(e.contains("trusted proxy"), "{e}");
        }
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_peers() {
        let trusted = TrustedProxies::parse(&["10.0.0.1"]).unwrap();
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        // From the proxy: the rightmost forwarded address, and HTTPS.
        assert_eq!(client_ip(Some(ip("10.0.0.1")), &h, &trusted), ip("1.2.3.4"));
        assert!(forwarded_https(Some(ip("10.0.0.1")), &h, &trusted));
        // From anyone else: the headers are the client's own words.
        assert_eq!(client_ip(Some(ip("5.5.5.5")), &h, &trusted), ip("5.5.5.5"));
        assert!(!forwarded_https(Some(ip("5.5.5.5")), &h, &trusted));
        assert!(!forwarded_https(None, &h, &trusted));
        // Chained trusted proxies are skipped; a malformed list is not believed.
        let chain = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        let h2 = headers(&[("x-forwarded-for", "1.2.3.4, 10.0.0.9")]);
        assert_eq!(client_ip(Some(ip("10.0.0.1")), &h2, &chain), ip("1.2.3.4"));
        let h3 = headers(&[("x-forwarded-for", "1.2.3.4, garbage")]);
        assert_eq!(client_ip(Some(ip("10.0.0.1")), &h3, &chain), ip("10.0.0.1"));
        let h4 = headers(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &h4, &chain),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(None, &h, &trusted),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
        let plain = headers(&[("x-forwarded-proto", "http")]);
        assert!(!forwarded_https(Some(ip("10.0.0.1")), &plain, &trusted));
    }
}

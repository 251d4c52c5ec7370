//! Checks made on every request before any work: the `Host` and `Origin` a browser sent
//! (DNS rebinding and cross-site requests), the client's address behind trusted proxies, and
//! the per-key rate limit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

use super::error::ApiError;
use crate::ConfigError;

/// The hosts the server answers for.
///
/// A DNS-rebinding page reaches the server under the attacker's own host name, so names are
/// allowed only when listed: the loopback names and `serve.allowed_hosts` (`*.example.com`
/// allows subdomains, `*` anything). IP literals cannot be rebound; the loopback addresses and
/// the bound address are allowed, and every address when the server listens on all of them.
#[derive(Debug, Clone)]
pub(crate) struct HostPolicy {
    any: bool,
    names: Vec<String>,
    suffixes: Vec<String>,
    bound: IpAddr,
}

impl HostPolicy {
    /// The policy of a server bound to `bound`, with the operator's extra `allowed` hosts.
    pub(crate) fn new(bound: IpAddr, allowed: &[String]) -> Self {
        let mut policy = Self {
            any: false,
            names: vec!["localhost".to_owned()],
            suffixes: vec![".localhost".to_owned()],
            bound,
        };
        for entry in allowed {
            let entry = normalise(entry);
            if entry == "*" {
                policy.any = true;
            } else if let Some(suffix) = entry.strip_prefix('*') {
                policy.suffixes.push(suffix.to_owned());
            } else {
                policy.names.push(entry);
            }
        }
        policy
    }

    /// Whether `host` (a `Host` value or the host of an origin, port allowed) is served.
    pub(crate) fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let host = normalise(strip_port(host));
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return ip.is_loopback() || ip == self.bound || self.bound.is_unspecified();
        }
        self.names.contains(&host) || self.suffixes.iter().any(|s| host.ends_with(s))
    }

    /// Checks the request's `Host` and, when a browser sent one, its `Origin`.
    ///
    /// # Errors
    /// 421 for a host the server does not answer for, 403 for an origin of another site.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !self.allows(host) {
            return Err(ApiError::host_not_allowed(host));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let allowed = origin
                .to_str()
                .ok()
                .and_then(|o| o.split_once("://"))
                .is_some_and(|(scheme, rest)| {
                    matches!(scheme, "http" | "https")
                        && !rest.contains('/')
                        && !rest.contains('@')
                        && self.allows(rest)
                });
            if !allowed {
                return Err(ApiError::origin_not_allowed());
            }
        }
        Ok(())
    }
}

fn normalise(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `host` without its `:port` (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        return &host[..=end];
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Addresses whose `X-Forwarded-For` is believed (the load balancers in front of the server).
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses addresses and CIDR blocks (`10.0.0.0/8`, `::1`).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the entry that is neither.
    pub(crate) fn parse(entries: &[String]) -> Result<Self, ConfigError> {
        let nets = entries
            .iter()
            .map(|entry| {
                let bad = || {
                    ConfigError(format!(
                        "trusted proxy `{entry}` is not an IP address or CIDR block"
                    ))
                };
                let (ip, bits) = match entry.trim().split_once('/') {
                    Some((ip, bits)) => (ip, Some(bits)),
                    None => (entry.trim(), None),
                };
                let ip: IpAddr = ip.parse().map_err(|_| bad())?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits = match bits {
                    Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(bad)?,
                    None => max,
                };
                Ok((ip, bits))
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self { nets })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|&(net, bits)| in_net(ip, net, bits))
    }

    /// The client's address: the peer's, or, when the peer is a trusted proxy, the last
    /// address in `X-Forwarded-For` that is not itself a trusted proxy.
    pub(crate) fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.ip();
        if !self.trusts(client) {
            return client;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// Requests per minute per key (or per client address for requests without one), as the
/// generic cell rate algorithm: each request moves the key's "theoretical arrival time" a
/// minute / limit ahead, and a request is refused while that time is more than a minute
/// ahead of now. A minute's worth may come at once; after that, one per interval.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// A minute divided by the limit; `None` when there is no limit.
    interval: Option<Duration>,
    /// Per key, the theoretical arrival time of its next request.
    buckets: Mutex<HashMap<String, Instant>>,
}

/// Keys tracked before the idle ones are dropped.
const MAX_BUCKETS: usize = 10_000;

const MINUTE: Duration = Duration::from_secs(60);

impl RateLimiter {
    /// A limiter of `per_minute` requests; 0 turns it off.
    pub(crate) fn new(per_minute: u32) -> Self {
        Self {
            interval: (per_minute > 0).then(|| MINUTE / per_minute),
            buckets: Mutex::default(),
        }
    }

    /// Counts one request of `key`.
    ///
    /// # Errors
    /// 429 with the seconds until the next request is allowed.
    pub(crate) fn check(&self, key: &str) -> Result<(), ApiError> {
        self.take(key, Instant::now()).map_err(|wait| {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::rate_limited(seconds.max(1))
        })
    }

    fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Some(interval) = self.interval else {
            return Ok(());
        };
        let burst = MINUTE.saturating_sub(interval);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            // A key whose arrival time has passed has its whole allowance back: forget it.
            buckets.retain(|_, tat| *tat > now);
        }
        let tat = buckets.entry(key.to_owned()).or_insert(now);
        let ahead = tat.saturating_duration_since(now);
        if ahead > burst {
            return Err(ahead - burst);
        }
        *tat = now.max(*tat) + interval;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn rebinding_names_and_foreign_origins_are_refused() {
        let loopback = HostPolicy::new(IpAddr::from([127, 0, 0, 1]), &["api.example.com".into()]);
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST.",
            "[::1]:80",
            "app.localhost",
            "api.example.com",
        ] {
            assert!(loopback.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "10.0.0.1",
            "example.com",
            "",
            "localhost.evil",
        ] {
            assert!(!loopback.allows(host), "{host}");
        }
        assert!(loopback.check(&headers(&[("host", "localhost:1")])).is_ok());
        let error = loopback
            .check(&headers(&[("host", "evil.example")]))
            .unwrap_err();
        assert_eq!(error.status, 421);
        for origin in [
            "https://evil.example",
            "null",
            "http://localhost@evil.example",
        ] {
            let mut h = headers(&[("host", "127.0.0.1:1")]);
            h.insert("origin", HeaderValue::from_static(origin));
            assert_eq!(loopback.check(&h).unwrap_err().status, 403, "{origin}");
        }
        let same = headers(&[("host", "127.0.0.1:1"), ("origin", "http://127.0.0.1:1")]);
        assert!(loopback.check(&same).is_ok());

        let everywhere = HostPolicy::new(IpAddr::from([0, 0, 0, 0]), &["*.corp.example".into()]);
        assert!(everywhere.allows("10.1.2.3:8080"));
        assert!(everywhere.allows("chat.corp.example"));
        assert!(!everywhere.allows("evil.example"));
        assert!(HostPolicy::new(IpAddr::from([0, 0, 0, 0]), &["*".into()]).allows("x"));
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        let forwarded = headers(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.7")]);
        let proxy = SocketAddr::from(([10, 0, 0, 9], 1));
        assert_eq!(
            proxies.client(proxy, &forwarded),
            IpAddr::from([2, 2, 2, 2])
        );
        let stranger = SocketAddr::from(([192, 0, 2, 1], 1));
        assert_eq!(proxies.client(stranger, &forwarded), stranger.ip());
        assert_eq!(proxies.client(proxy, &HeaderMap::new()), proxy.ip());
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.local".into()]).is_err());
    }

    #[test]
    fn the_rate_limit_allows_a_minute_of_requests_then_refills() {
        let limiter = RateLimiter::new(2);
        let start = Instant::now();
        assert!(limiter.take("k", start).is_ok());
        assert!(limiter.take("k", start).is_ok());
        let wait = limiter.take("k", start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(30));
        assert!(limiter.take("other", start).is_ok(), "buckets are per key");
        assert!(limiter.take("k", start + Duration::from_secs(30)).is_ok());
        assert!(RateLimiter::new(0).take("k", start).is_ok());
    }
}

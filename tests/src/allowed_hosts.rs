//! `allowed_outbound_hosts`: parsing and matching with Spin 4's rules.
//!
//! The rules follow spinframework/spin `crates/outbound-networking-config` (`allowed_hosts.rs`):
//! each entry is `scheme://host[:port]`; `*` may stand for the scheme, the host, a leading
//! subdomain (`*.example.com`) or the port; a port may be a range `a..b`; an entry without a port
//! takes the scheme's well-known port (http 80, https 443, postgres 5432, ...); hosts match
//! literally (`localhost` is not `127.0.0.1`), or as CIDR blocks (`*://10.0.0.0/8:80`).

use anyhow::{Context as _, Result, bail, ensure};
use std::fmt;
use std::net::IpAddr;

/// The default port Spin assumes for a scheme written without one.
pub fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// A host name or address, normalised for comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Domain(String),
    Ip(IpAddr),
}

impl Host {
    fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        ensure!(!text.is_empty(), "empty host");
        let unbracketed = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        ensure!(
            !text.contains(['[', ']', ' ', '/', '@', '?', '#']),
            "invalid host {text:?}"
        );
        Ok(Self::Domain(text.to_ascii_lowercase()))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SchemeRule {
    Any,
    Exact(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostRule {
    Any,
    /// `*.example.com`, kept as `.example.com`.
    AnySubdomain(String),
    /// `self`: requests back into the same app; not supported by this host.
    ToSelf,
    Literal(Host),
    Cidr(IpAddr, u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PortRule {
    Any,
    Port(u16),
    Range(u16, u16),
}

/// One parsed `allowed_outbound_hosts` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost {
    original: String,
    scheme: SchemeRule,
    host: HostRule,
    port: PortRule,
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl AllowedHost {
    /// Parses one entry, rejecting what Spin rejects (no scheme, paths, inner wildcards...).
    pub fn parse(entry: &str) -> Result<Self> {
        let original = entry.to_string();
        let url = entry.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            bail!(
                "{url:?} is not an allowed outbound host: hosts must be in the form <scheme>://<host>[:<port>]"
            );
        };
        let (host, port_and_path) = rest.rsplit_once(':').unwrap_or((rest, ""));
        let port = match port_and_path.split_once('/') {
            Some((port, path)) => {
                ensure!(path.is_empty(), "{url:?} has a path but is not allowed to");
                port
            }
            None => port_and_path,
        };
        let port = parse_port(port, scheme).with_context(|| format!("invalid port in {url:?}"))?;
        let scheme = parse_scheme(scheme).with_context(|| format!("invalid scheme in {url:?}"))?;
        let host = parse_host(host).with_context(|| format!("invalid host in {url:?}"))?;
        Ok(Self {
            original,
            scheme,
            host,
            port,
        })
    }

    fn allows(&self, url: &OutboundUrl) -> bool {
        let scheme_ok = match &self.scheme {
            SchemeRule::Any => true,
            SchemeRule::Exact(s) => *s == url.scheme,
        };
        let host_ok = match (&self.host, Host::parse(&url.host)) {
            (_, Err(_)) => false,
            (HostRule::Any, _) => true,
            (HostRule::AnySubdomain(suffix), Ok(Host::Domain(d))) => d.ends_with(suffix.as_str()),
            (HostRule::Literal(lit), Ok(host)) => *lit == host,
            (HostRule::Cidr(net, bits), Ok(Host::Ip(ip))) => cidr_contains(*net, *bits, ip),
            (HostRule::AnySubdomain(_) | HostRule::Cidr(..) | HostRule::ToSelf, _) => false,
        };
        let port_ok = match &self.port {
            PortRule::Any => true,
            rule => match url.port.or_else(|| well_known_port(&url.scheme)) {
                None => false,
                Some(p) => match rule {
                    PortRule::Port(want) => *want == p,
                    PortRule::Range(lo, hi) => (*lo..*hi).contains(&p),
                    PortRule::Any => true,
                },
            },
        };
        scheme_ok && host_ok && port_ok
    }
}

fn parse_scheme(scheme: &str) -> Result<SchemeRule> {
    if scheme == "*" {
        return Ok(SchemeRule::Any);
    }
    ensure!(!scheme.starts_with('{'), "scheme lists are not supported");
    ensure!(
        !scheme.is_empty() && scheme.chars().all(char::is_alphabetic),
        "only alphabetic characters are allowed"
    );
    Ok(SchemeRule::Exact(scheme.to_string()))
}

fn parse_port(port: &str, scheme: &str) -> Result<PortRule> {
    if port.is_empty() {
        return well_known_port(scheme).map(PortRule::Port).with_context(|| {
            format!("no port was provided and the scheme {scheme:?} does not have a known default port number")
        });
    }
    if port == "*" {
        return Ok(PortRule::Any);
    }
    ensure!(!port.starts_with('{'), "port lists are not yet supported");
    if let Some((lo, hi)) = port.split_once("..") {
        let lo = lo
            .parse()
            .with_context(|| format!("port range {port:?} contains non-number"))?;
        let hi = hi
            .parse()
            .with_context(|| format!("port range {port:?} contains non-number"))?;
        return Ok(PortRule::Range(lo, hi));
    }
    Ok(PortRule::Port(port.parse().with_context(|| {
        format!("port {port:?} is not a number")
    })?))
}

fn parse_host(host: &str) -> Result<HostRule> {
    let host = host.trim();
    if host == "*" {
        return Ok(HostRule::Any);
    }
    if host == "self" || host == "self.alt" {
        return Ok(HostRule::ToSelf);
    }
    ensure!(!host.starts_with('{'), "host lists are not yet supported");
    if let Some(cidr) = parse_cidr(host) {
        return Ok(cidr);
    }
    let host = host.trim_end_matches('/');
    ensure!(!host.contains('/'), "must not include a path");
    if let Some(domain) = host.strip_prefix("*.") {
        ensure!(
            !domain.contains('*'),
            "wildcards are allowed only as prefixes"
        );
        return Ok(HostRule::AnySubdomain(format!(
            ".{}",
            domain.to_ascii_lowercase()
        )));
    }
    ensure!(
        !host.contains('*'),
        "wildcards are allowed only as subdomains"
    );
    Ok(HostRule::Literal(Host::parse(host)?))
}

/// `addr/bits`, with host bits dropped as Spin's `from_str_truncate` does.
fn parse_cidr(text: &str) -> Option<HostRule> {
    let (addr, bits) = text.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (bits <= max).then(|| HostRule::Cidr(truncate(addr, bits), bits))
}

fn truncate(addr: IpAddr, bits: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

fn cidr_contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    net.is_ipv4() == ip.is_ipv4() && truncate(ip, bits) == net
}

/// The scheme, host and port of an outbound request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundUrl {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl OutboundUrl {
    /// Parses `url`; when it has no scheme, `default_scheme://` is put in front (Spin does the
    /// same for Postgres addresses such as `127.0.0.1:5432`).
    pub fn parse(url: &str, default_scheme: &str) -> Result<Self> {
        let with_scheme;
        let url = if url.contains("://") {
            url
        } else {
            with_scheme = format!("{default_scheme}://{url}");
            &with_scheme
        };
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("invalid url {url:?}"))?;
        let scheme = uri
            .scheme_str()
            .with_context(|| format!("{url:?} has no scheme"))?
            .to_ascii_lowercase();
        let authority = uri
            .authority()
            .with_context(|| format!("{url:?} does not have a host component"))?;
        Ok(Self {
            scheme,
            host: authority.host().to_string(),
            port: authority.port_u16(),
        })
    }

    /// The `scheme://host:port` form used in refusal messages.
    pub fn describe(&self) -> String {
        match self.port {
            Some(p) => format!("{}://{}:{p}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }
}

/// A component's resolved `allowed_outbound_hosts`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

impl AllowedHosts {
    /// Parses already-resolved entries (templates filled in).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self> {
        if entries.len() == 1 && entries[0].as_ref() == "insecure:allow-all" {
            bail!("'insecure:allow-all' is not allowed - use '*://*:*' instead");
        }
        Ok(Self {
            entries: entries
                .iter()
                .map(|e| AllowedHost::parse(e.as_ref()))
                .collect::<Result<_>>()?,
        })
    }

    /// True when some entry admits `url`.
    pub fn allows(&self, url: &OutboundUrl) -> bool {
        self.entries.iter().any(|e| e.allows(url))
    }

    /// Checks a URL string the way Spin's `check_url` does: unparsable means refused.
    pub fn allows_url(&self, url: &str, default_scheme: &str) -> bool {
        OutboundUrl::parse(url, default_scheme).is_ok_and(|u| self.allows(&u))
    }

    /// The entries as written.
    pub fn entries(&self) -> impl Iterator<Item = &AllowedHost> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries).unwrap()
    }

    #[test]
    fn entries_without_a_port_take_the_schemes_well_known_port() {
        let hosts = allowed(&["http://example.com", "https://example.com/"]);
        assert!(hosts.allows_url("http://example.com/a/b", "http"));
        assert!(hosts.allows_url("http://example.com:80/", "http"));
        assert!(hosts.allows_url("https://example.com", "https"));
        assert!(!hosts.allows_url("http://example.com:8080/", "http"));
        assert!(!hosts.allows_url("https://example.com:8443/", "https"));
    }

    #[test]
    fn hosts_match_literally() {
        let hosts = allowed(&["http://127.0.0.1:3500"]);
        assert!(hosts.allows_url("http://127.0.0.1:3500/v1.0/publish", "http"));
        assert!(!hosts.allows_url("http://localhost:3500/v1.0/publish", "http"));
        assert!(!hosts.allows_url("https://127.0.0.1:3500/", "https"));
        assert!(!hosts.allows_url("http://127.0.0.1:3501/", "http"));
    }

    #[test]
    fn wildcards_cover_scheme_host_subdomain_and_port() {
        let hosts = allowed(&["*://api.example.com:443", "http://*.svc.local:*"]);
        assert!(hosts.allows_url("https://api.example.com/", "https"));
        assert!(hosts.allows_url("http://api.example.com:443/", "http"));
        assert!(hosts.allows_url("http://dapr.svc.local:3500/", "http"));
        assert!(!hosts.allows_url("http://svc.local:3500/", "http"));
        let all = allowed(&["*://*:*"]);
        assert!(all.allows_url("postgres://10.0.0.1:6543", "postgres"));
    }

    #[test]
    fn port_ranges_exclude_their_upper_end() {
        let hosts = allowed(&["http://example.com:4444..5555"]);
        assert!(hosts.allows_url("http://example.com:4444/", "http"));
        assert!(hosts.allows_url("http://example.com:5554/", "http"));
        assert!(!hosts.allows_url("http://example.com:5555/", "http"));
    }

    #[test]
    fn cidr_blocks_match_addresses_only() {
        let hosts = allowed(&["*://10.1.0.0/16:5432"]);
        assert!(hosts.allows_url("postgres://10.1.2.3:5432", "postgres"));
        assert!(!hosts.allows_url("postgres://10.2.0.1:5432", "postgres"));
        assert!(!hosts.allows_url("postgres://db.local:5432", "postgres"));
    }

    #[test]
    fn postgres_addresses_without_a_scheme_are_checked_as_postgres() {
        let hosts = allowed(&["postgres://127.0.0.1:55432", "postgres://db"]);
        assert!(hosts.allows_url("127.0.0.1:55432", "postgres"));
        assert!(hosts.allows_url("db", "postgres"));
        assert!(hosts.allows_url("db:5432", "postgres"));
        assert!(!hosts.allows_url("127.0.0.1:5432", "postgres"));
    }

    #[test]
    fn malformed_entries_are_rejected() {
        for bad in [
            "example.com",
            "example.com:80",
            "http://example.com/a",
            "http://a.*.com",
            "http://ex*ample.com",
            "*://127.0.0.0/24",
            "http://[::1]",
            "unknown://example.com",
            "h1tp://example.com:80",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(AllowedHosts::parse(&["insecure:allow-all"]).is_err());
        assert!(AllowedHost::parse("http://[::1]:8001").is_ok());
    }

    #[test]
    fn self_entries_never_match_absolute_urls() {
        let hosts = allowed(&["http://self"]);
        assert!(!hosts.allows_url("http://self/", "http"));
    }
}

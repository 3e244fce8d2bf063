//! Webhooks: where deliveries may go (the destination policy), how they are
//! signed, and the delivery worker ([`delivery`]). See docs/webhooks.md.

pub mod delivery;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Longest webhook URL, in bytes.
pub const URL_MAX: usize = bursar_core::service::webhooks::URL_MAX;
/// Shortest and longest signing secret a client may choose.
pub const SECRET_MIN: usize = 24;
pub const SECRET_MAX: usize = 128;
/// Longest a DNS lookup of a destination may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The associated data a webhook's sealed secret is bound to: its id (and a
/// label, so a webhook blob never opens as another kind of blob).
pub fn secret_aad(id: u64) -> Vec<u8> {
    let mut aad = b"bursar-webhook-secret:".to_vec();
    aad.extend_from_slice(&id.to_le_bytes());
    aad
}

/// `Bursar-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mac = bursar_crypto::signing::hmac_sha256_hex(secret, &[timestamp.to_string().as_bytes(), b".", body]);
    format!("t={timestamp},v1={mac}")
}

/// A fresh signing secret: `whsec_` and 32 random bytes in hex.
pub fn generate_secret() -> Result<String, NoRandomness> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(NoRandomness)?;
    Ok(format!("whsec_{}", hex::encode(bytes)))
}

/// The operating system gave no random bytes for a secret.
#[derive(Debug, thiserror::Error)]
#[error("no randomness: {0}")]
pub struct NoRandomness(pub getrandom::Error);

/// A `--webhook-allow` list that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllowError {
    #[error("at most {max} --webhook-allow entries")]
    TooMany { max: usize },
    #[error("--webhook-allow {entry}: not an IP network")]
    NotNetwork { entry: String },
    #[error("--webhook-allow {entry}: bad prefix")]
    BadPrefix { entry: String },
    #[error("--webhook-allow {entry}: not a host, IP or CIDR")]
    Unrecognised { entry: String },
}

/// Why a destination is refused or unreachable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestinationError {
    /// Not an absolute http(s) URL with a host, or has user info.
    Invalid(String),
    /// Resolves to an address that is not allowed.
    Forbidden(String),
    /// The name does not resolve.
    Unresolved(String),
}

impl std::error::Error for DestinationError {}

impl std::fmt::Display for DestinationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DestinationError::Invalid(s) | DestinationError::Forbidden(s) | DestinationError::Unresolved(s) => {
                f.write_str(s)
            }
        }
    }
}

/// A parsed destination.
#[derive(Clone, Debug)]
pub struct Target {
    pub https: bool,
    /// The host as written (a name, or an IP literal without brackets).
    pub host: String,
    pub port: u16,
    /// What goes on the request line.
    pub path_and_query: String,
    /// The `Host` header.
    pub authority: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, DestinationError> {
        let invalid = |why: &str| DestinationError::Invalid(why.to_string());
        if url.len() > URL_MAX {
            return Err(invalid("the URL is longer than 2048 bytes"));
        }
        let parsed = url::Url::parse(url).map_err(|e| DestinationError::Invalid(format!("not a URL: {e}")))?;
        let https = match parsed.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(invalid("only http and https URLs are allowed")),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid("the URL must not carry user info"));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(invalid("the URL has no host")),
        };
        let port = parsed.port_or_known_default().ok_or_else(|| invalid("the URL has no port"))?;
        let mut path_and_query = parsed.path().to_string();
        if let Some(q) = parsed.query() {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        let authority = match parsed.port() {
            Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_string(),
        };
        Ok(Target { https, host, port, path_and_query, authority })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum AllowRule {
    Host(String),
    Net(IpAddr, u8),
}

/// Which destinations are allowed: every globally routable address, plus
/// the hosts and networks of `--webhook-allow`.
#[derive(Clone, Debug, Default)]
pub struct DestinationPolicy {
    allow: Vec<AllowRule>,
}

/// Most `--webhook-allow` entries.
pub const ALLOW_MAX: usize = 256;

impl DestinationPolicy {
    /// Parses `--webhook-allow` entries: a host name, an IP, or a CIDR.
    pub fn parse(entries: &[String]) -> Result<DestinationPolicy, AllowError> {
        if entries.len() > ALLOW_MAX {
            return Err(AllowError::TooMany { max: ALLOW_MAX });
        }
        let mut allow = Vec::new();
        for e in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let rule = if let Some((ip, bits)) = e.split_once('/') {
                let ip: IpAddr = ip.parse().map_err(|_| AllowError::NotNetwork { entry: e.to_string() })?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits: u8 = bits
                    .parse()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| AllowError::BadPrefix { entry: e.to_string() })?;
                AllowRule::Net(ip, bits)
            } else if let Ok(ip) = e.trim_matches(['[', ']']).parse::<IpAddr>() {
                AllowRule::Net(ip, if ip.is_ipv4() { 32 } else { 128 })
            } else if e.len() <= 253 && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
                AllowRule::Host(e.to_ascii_lowercase())
            } else {
                return Err(AllowError::Unrecognised { entry: e.to_string() });
            };
            allow.push(rule);
        }
        Ok(DestinationPolicy { allow })
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allow.iter().any(|r| matches!(r, AllowRule::Host(h) if *h == host))
    }

    /// Whether connecting to `ip` is allowed (the host name was not).
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        is_global(ip) || self.allow.iter().any(|r| matches!(r, AllowRule::Net(net, bits) if in_net(ip, *net, *bits)))
    }

    /// Resolves the target and checks every address it resolves to; the
    /// first one is where to connect. Called at create time and again on
    /// every delivery attempt, connecting to the address checked, so a name
    /// that later resolves elsewhere (DNS rebinding) is caught.
    pub async fn resolve(&self, target: &Target) -> Result<SocketAddr, DestinationError> {
        let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, target.port)],
            Err(_) => {
                let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
                match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                    Ok(Ok(addrs)) => addrs.take(32).collect(),
                    Ok(Err(e)) => return Err(DestinationError::Unresolved(format!("{}: {e}", target.host))),
                    Err(_) => return Err(DestinationError::Unresolved(format!("{}: lookup timed out", target.host))),
                }
            }
        };
        let first =
            *addrs.first().ok_or_else(|| DestinationError::Unresolved(format!("{}: no address", target.host)))?;
        if self.host_allowed(&target.host) {
            return Ok(first);
        }
        if let Some(bad) = addrs.iter().find(|a| !self.ip_allowed(a.ip())) {
            return Err(DestinationError::Forbidden(format!(
                "{} resolves to {}, which is not a public address (allow it with --webhook-allow)",
                target.host,
                bad.ip()
            )));
        }
        Ok(first)
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a.to_ipv4_mapped().is_some_and(|v4| in_net(IpAddr::V4(v4), net, bits)),
        _ => false,
    }
}

/// Globally routable unicast: not private, loopback, link-local,
/// unspecified, multicast, broadcast, shared, documentation, benchmarking
/// or reserved (IANA special-purpose registries).
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let n = u32::from(ip);
    let blocked: [(u32, u8); 15] = [
        (0x0000_0000, 8),  // this network, unspecified
        (0x0A00_0000, 8),  // private
        (0x6440_0000, 10), // shared address space (CGNAT)
        (0x7F00_0000, 8),  // loopback
        (0xA9FE_0000, 16), // link-local
        (0xAC10_0000, 12), // private
        (0xC000_0000, 24), // IETF protocol assignments
        (0xC000_0200, 24), // documentation
        (0xC058_6300, 24), // 6to4 relay anycast
        (0xC0A8_0000, 16), // private
        (0xC612_0000, 15), // benchmarking
        (0xC633_6400, 24), // documentation
        (0xCB00_7100, 24), // documentation
        (0xE000_0000, 4),  // multicast
        (0xF000_0000, 4),  // reserved, broadcast
    ];
    !blocked.iter().any(|(net, bits)| n & (u32::MAX << (32 - bits)) == *net)
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_global_v4(v4);
    }
    let n = u128::from(ip);
    let within = |net: u128, bits: u32| n & (u128::MAX << (128 - bits)) == net;
    // NAT64 and 6to4 embed an IPv4 address: judge that one.
    if within(0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
        return is_global_v4(Ipv4Addr::from(n as u32));
    }
    if within(0x2002_0000_0000_0000_0000_0000_0000_0000, 16) {
        return is_global_v4(Ipv4Addr::from((n >> 80) as u32));
    }
    // Only 2000::/3 is global unicast; inside it, documentation and the
    // IETF protocol block (Teredo, ORCHID, …) are not destinations.
    within(0x2000_0000_0000_0000_0000_0000_0000_0000, 3)
        && !within(0x2001_0db8_0000_0000_0000_0000_0000_0000, 32)
        && !within(0x2001_0000_0000_0000_0000_0000_0000_0000, 23)
        && !within(0x3fff_0000_0000_0000_0000_0000_0000_0000, 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_global_addresses_unless_allowed() {
        for ip in [
            "10.0.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "100.64.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "2001:db8::1",
        ] {
            assert!(!is_global(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"] {
            assert!(is_global(ip.parse().unwrap()), "{ip}");
        }
        let p = DestinationPolicy::parse(&["127.0.0.0/8".into(), "hooks.internal".into(), "::1".into()]).unwrap();
        assert!(p.ip_allowed("127.0.0.9".parse().unwrap()));
        assert!(p.ip_allowed("::1".parse().unwrap()));
        assert!(!p.ip_allowed("10.0.0.1".parse().unwrap()));
        assert!(p.host_allowed("HOOKS.internal"));
        assert!(DestinationPolicy::parse(&["10.0.0.0/33".into()]).is_err());
    }

    #[tokio::test]
    async fn literal_addresses_are_checked() {
        let p = DestinationPolicy::default();
        let t = Target::parse("http://10.0.0.1/hook").unwrap();
        assert!(matches!(p.resolve(&t).await, Err(DestinationError::Forbidden(_))));
        let t = Target::parse("http://[::1]:8080/hook?x=1").unwrap();
        assert_eq!((t.port, t.path_and_query.as_str(), t.authority.as_str()), (8080, "/hook?x=1", "[::1]:8080"));
        assert!(matches!(p.resolve(&t).await, Err(DestinationError::Forbidden(_))));
        assert!(Target::parse("ftp://example.com/").is_err());
        assert!(Target::parse("https://user:pw@example.com/").is_err());
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_body() {
        // `printf '1.x' | openssl dgst -sha256 -hmac Jefe`
        let s = signature(b"Jefe", 1, b"x");
        assert_eq!(s, "t=1,v1=2f7ccbd0f043456ad29514b2d24a8aa345ec6673a5db1b44e91c8ac99d1841e3");
    }
}

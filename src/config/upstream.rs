//! Upstream pools: the servers traffic is balanced over, how, and how their health is judged.
//!
//! The same type serves `http { upstream }` and `stream { upstream }`; the few fields that only
//! make sense for one of them are rejected by validation in the other.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::origin::Origin;
use super::units::Duration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// How a server is chosen, in nginx's own words: `round_robin`, `least_conn`, `ip_hash`,
    /// `hash $request_uri [consistent]`, `random [two [least_conn]]`.
    #[serde(default, skip_serializing_if = "Balance::is_default")]
    pub balance: Balance,
    #[serde(rename = "server", default)]
    pub servers: Vec<UpstreamServer>,
    /// Idle connections to keep per worker (nginx `keepalive`); none means no pooling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// How long a server removed by a reload or a deregistration keeps its in-flight requests
    /// (ELB connection draining, 1-3600 s); then they are cut. None: they run to their end, as
    /// nginx's old workers finish theirs after a reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamServer {
    /// `host:port`, `host` (port 80), `[v6]:port` or `unix:/path`. A host name is resolved when
    /// the config is loaded and, as in nginx, every address it has becomes a server.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(
        default = "defaults::weight",
        skip_serializing_if = "defaults::is_weight"
    )]
    pub weight: u32,
    #[serde(
        default = "defaults::max_fails",
        skip_serializing_if = "defaults::is_max_fails"
    )]
    pub max_fails: u32,
    #[serde(
        default = "defaults::fail_timeout",
        skip_serializing_if = "defaults::is_fail_timeout"
    )]
    pub fail_timeout: Duration,
    /// Zero means no limit.
    #[serde(default, skip_serializing_if = "defaults::is_zero")]
    pub max_conns: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backup: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub down: bool,
}

impl UpstreamServer {
    /// A server with nginx's defaults: weight 1, max_fails 1, fail_timeout 10s.
    pub fn new(address: impl Into<String>) -> Self {
        UpstreamServer {
            address: address.into(),
            origin: None,
            weight: defaults::weight(),
            max_fails: defaults::max_fails(),
            fail_timeout: defaults::fail_timeout(),
            max_conns: 0,
            backup: false,
            down: false,
        }
    }
}

mod defaults {
    use super::Duration;
    pub fn weight() -> u32 {
        1
    }
    pub fn is_weight(w: &u32) -> bool {
        *w == 1
    }
    pub fn max_fails() -> u32 {
        1
    }
    pub fn is_max_fails(n: &u32) -> bool {
        *n == 1
    }
    pub fn fail_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn is_fail_timeout(d: &Duration) -> bool {
        *d == fail_timeout()
    }
    pub fn is_zero(n: &u32) -> bool {
        *n == 0
    }
}

/// The balancing method. Written in TOML exactly as the nginx directive's arguments.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Balance {
    /// Smooth weighted round robin, nginx's default.
    #[default]
    RoundRobin,
    LeastConn,
    IpHash,
    /// `hash <key> [consistent]`; the key is a template such as `$request_uri`.
    Hash {
        key: String,
        consistent: bool,
    },
    /// `random`, `random two`, `random two least_conn`.
    Random {
        two: bool,
    },
}

impl Balance {
    pub fn is_default(&self) -> bool {
        *self == Balance::RoundRobin
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Balance::RoundRobin => f.write_str("round_robin"),
            Balance::LeastConn => f.write_str("least_conn"),
            Balance::IpHash => f.write_str("ip_hash"),
            Balance::Hash { key, consistent } => {
                write!(f, "hash {key}")?;
                if *consistent {
                    f.write_str(" consistent")?;
                }
                Ok(())
            }
            Balance::Random { two: false } => f.write_str("random"),
            // nginx's `random two` always compares with least_conn; it has no other method.
            Balance::Random { two: true } => f.write_str("random two least_conn"),
        }
    }
}

impl FromStr for Balance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            ["round_robin"] => Ok(Balance::RoundRobin),
            ["least_conn"] => Ok(Balance::LeastConn),
            ["ip_hash"] => Ok(Balance::IpHash),
            ["hash", key] => Ok(Balance::Hash {
                key: key.to_string(),
                consistent: false,
            }),
            ["hash", key, "consistent"] => Ok(Balance::Hash {
                key: key.to_string(),
                consistent: true,
            }),
            ["random"] => Ok(Balance::Random { two: false }),
            ["random", "two"] | ["random", "two", "least_conn"] => {
                Ok(Balance::Random { two: true })
            }
            _ => Err(format!(
                "balance \"{s}\" is not one of round_robin, least_conn, ip_hash, \
                 \"hash <key> [consistent]\", \"random [two [least_conn]]\""
            )),
        }
    }
}

impl Serialize for Balance {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Balance {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An active health check with ELB's semantics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `HTTP:8080/status`, `HTTPS:443/`, `TCP:5000`, `SSL:443`.
    pub target: HealthTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(default = "health_defaults::interval")]
    pub interval: Duration,
    #[serde(default = "health_defaults::timeout")]
    pub timeout: Duration,
    #[serde(default = "health_defaults::healthy_threshold")]
    pub healthy_threshold: u32,
    #[serde(default = "health_defaults::unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// HTTP statuses that count as healthy, ALB-style: `["200"]`, `["200-299", "302"]`.
    /// ELB's own rule, 200 only, is the default.
    #[serde(default = "health_defaults::matcher")]
    pub success_codes: Vec<StatusRange>,
}

mod health_defaults {
    use super::{Duration, StatusRange};
    // ELB's defaults for a new load balancer.
    pub fn interval() -> Duration {
        Duration::from_secs(30)
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn healthy_threshold() -> u32 {
        10
    }
    pub fn unhealthy_threshold() -> u32 {
        2
    }
    pub fn matcher() -> Vec<StatusRange> {
        vec![StatusRange(200, 200)]
    }
}

impl HealthCheck {
    pub fn new(target: HealthTarget) -> Self {
        HealthCheck {
            target,
            origin: None,
            interval: health_defaults::interval(),
            timeout: health_defaults::timeout(),
            healthy_threshold: health_defaults::healthy_threshold(),
            unhealthy_threshold: health_defaults::unhealthy_threshold(),
            success_codes: health_defaults::matcher(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthProtocol {
    Http,
    Https,
    Tcp,
    Ssl,
}

/// What a health check probes: a protocol, a port on each server's host, and for HTTP(S) a path
/// (with its query string, if any).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HealthTarget {
    pub protocol: HealthProtocol,
    pub port: u16,
    pub path: Option<String>,
}

impl fmt::Display for HealthTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            HealthProtocol::Http => "HTTP",
            HealthProtocol::Https => "HTTPS",
            HealthProtocol::Tcp => "TCP",
            HealthProtocol::Ssl => "SSL",
        };
        write!(f, "{proto}:{}", self.port)?;
        if let Some(path) = &self.path {
            f.write_str(path)?;
        }
        Ok(())
    }
}

impl FromStr for HealthTarget {
    type Err = String;
    /// ELB's target syntax. The protocol is case-insensitive (scripts write `http:80/`); HTTP
    /// and HTTPS need a path starting with `/`, TCP and SSL must not have one.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("health check target \"{s}\": {why}");
        let (proto, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected PROTOCOL:PORT[/path]"))?;
        let protocol = match proto.to_ascii_uppercase().as_str() {
            "HTTP" => HealthProtocol::Http,
            "HTTPS" => HealthProtocol::Https,
            "TCP" => HealthProtocol::Tcp,
            "SSL" => HealthProtocol::Ssl,
            _ => return Err(bad("the protocol must be HTTP, HTTPS, TCP or SSL")),
        };
        let (port, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_string())),
            None => (rest, None),
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?;
        match (protocol, &path) {
            (HealthProtocol::Http | HealthProtocol::Https, None) => Err(bad(
                "an HTTP or HTTPS target needs a path, such as /index.html",
            )),
            (HealthProtocol::Tcp | HealthProtocol::Ssl, Some(_)) => {
                Err(bad("a TCP or SSL target takes no path"))
            }
            _ => Ok(HealthTarget {
                protocol,
                port,
                path,
            }),
        }
    }
}

impl Serialize for HealthTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HealthTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An inclusive range of HTTP statuses, written `"200"` or `"200-299"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusRange(pub u16, pub u16);

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        self.0 <= status && status <= self.1
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == self.1 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{}-{}", self.0, self.1)
        }
    }
}

impl FromStr for StatusRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let status = |t: &str| {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| format!("\"{s}\" is not an HTTP status or range such as 200-299"))
        };
        let range = match s.split_once('-') {
            Some((a, b)) => StatusRange(status(a)?, status(b)?),
            None => {
                let c = status(s)?;
                StatusRange(c, c)
            }
        };
        if range.0 > range.1 {
            return Err(format!("status range \"{s}\" runs backwards"));
        }
        Ok(range)
    }
}

impl Serialize for StatusRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Code(u16),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Code(c) => c.to_string().parse(),
            Raw::Text(t) => t.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// Session stickiness. The cookie the balancer issues names its server in a form that only an
/// appliance with the same secret can produce, so a fleet routes it the same way and a client
/// cannot point it at an address of its choosing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sticky {
    /// The balancer issues its own cookie (ELB's LBCookieStickinessPolicy, nginx's
    /// `sticky cookie`). Without `expires` it is a session cookie.
    LbCookie {
        #[serde(default = "sticky_defaults::cookie")]
        cookie: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires: Option<Duration>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Origin>,
    },
    /// Follow the application's own session cookie (ELB's AppCookieStickinessPolicy): once the
    /// application sets `cookie`, requests carrying it go back to the server that set it.
    AppCookie {
        cookie: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Origin>,
    },
}

mod sticky_defaults {
    pub fn cookie() -> String {
        // The name ELB uses for the cookie it generates.
        "AWSELB".to_string()
    }
}

/// A PROXY protocol version sent to upstream servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    V1,
    V2,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_reads_nginx_arguments() {
        for s in [
            "round_robin",
            "least_conn",
            "ip_hash",
            "hash $request_uri",
            "hash $remote_addr consistent",
            "random",
            "random two least_conn",
        ] {
            assert_eq!(s.parse::<Balance>().unwrap().to_string(), s);
        }
        assert_eq!(
            "random two".parse::<Balance>().unwrap(),
            Balance::Random { two: true }
        );
        assert!("hash".parse::<Balance>().is_err());
        assert!("fastest".parse::<Balance>().is_err());
    }

    #[test]
    fn health_targets_follow_elb() {
        let t: HealthTarget = "http:8080/status?x=1".parse().unwrap();
        assert_eq!(t.to_string(), "HTTP:8080/status?x=1");
        assert_eq!("TCP:22".parse::<HealthTarget>().unwrap().path, None);
        assert!("HTTP:8080".parse::<HealthTarget>().is_err());
        assert!("TCP:22/x".parse::<HealthTarget>().is_err());
        assert!("UDP:53".parse::<HealthTarget>().is_err());
        assert!("HTTP:0/".parse::<HealthTarget>().is_err());
    }

    #[test]
    fn status_ranges() {
        assert!("200-299".parse::<StatusRange>().unwrap().contains(204));
        assert!("299-200".parse::<StatusRange>().is_err());
        assert!("99".parse::<StatusRange>().is_err());
    }
}

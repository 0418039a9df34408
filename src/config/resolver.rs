//! nginx's `resolver` and `resolver_timeout` at one level: the DNS servers that turn a host name
//! in a `proxy_pass` with variables into addresses while the appliance serves (names in
//! `upstream` blocks and plain `proxy_pass` are resolved once, at start, as nginx does).
//! `servers`, `valid` and `ipv6` are one directive and are inherited together; `timeout` on
//! its own.
//!
//! ```toml
//! [http.resolver]
//! servers = ["10.0.0.2", "[fd00::2]:5353"]   # port 53 unless given
//! valid = "30s"                               # else each answer's TTL
//! ipv6 = false                                # A records only (nginx's default: A and AAAA)
//! timeout = "5s"                              # nginx's default: 30s
//! ```

use serde::{Deserialize, Serialize};

use super::units::Duration;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolver {
    /// `resolver`'s addresses, `ip` or `ip:port` (`[ip]:port` for IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<String>>,
    /// `valid=`: how long an answer is kept, whatever its TTL says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<Duration>,
    /// `ipv6=off` asks for A records only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<bool>,
    /// `resolver_timeout` (nginx's default: 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

impl Resolver {
    pub fn is_empty(&self) -> bool {
        *self == Resolver::default()
    }

    /// The inner level's `resolver` line whole if it has one, else the outer's; the timeout on
    /// its own.
    pub fn merged(&self, outer: &Resolver) -> Resolver {
        let line = if self.servers.is_some() { self } else { outer };
        Resolver {
            servers: line.servers.clone(),
            valid: line.valid,
            ipv6: line.ipv6,
            timeout: self.timeout.or(outer.timeout),
        }
    }
}

/// A `resolver` address split as nginx reads it (ngx_parse_url, port 53 by default): the host
/// (an IP address, or a name looked up once, when the config is loaded) and the port.
pub fn split_server(text: &str) -> Result<(&str, u16), String> {
    let invalid = || format!("invalid port in resolver \"{text}\"");
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("invalid host in resolver \"{text}\""))?;
            match after.strip_prefix(':') {
                Some(port) => (ip, Some(port)),
                None if after.is_empty() => (ip, None),
                None => return Err(invalid()),
            }
        }
        None => match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    if host.is_empty() {
        return Err(format!("no host in resolver \"{text}\""));
    }
    let port = match port {
        None => 53,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(invalid()),
        },
    };
    Ok((host, port))
}

/// What nginx says of a `resolver` address it cannot read.
pub fn check_server(text: &str) -> Result<(), String> {
    split_server(text).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_port_53_unless_given() {
        assert_eq!(split_server("10.0.0.2"), Ok(("10.0.0.2", 53)));
        assert_eq!(split_server("127.0.0.1:5353"), Ok(("127.0.0.1", 5353)));
        assert_eq!(split_server("[::1]"), Ok(("::1", 53)));
        assert_eq!(split_server("[::1]:54"), Ok(("::1", 54)));
        assert_eq!(split_server("dns.example"), Ok(("dns.example", 53)));
        assert!(split_server("10.0.0.2:x").is_err());
        assert!(split_server("10.0.0.2:0").is_err());
        assert!(split_server("[::1").is_err());
        assert!(split_server(":53").is_err());
    }

    #[test]
    fn a_resolver_line_is_inherited_whole() {
        let outer = Resolver {
            servers: Some(vec!["10.0.0.2".into()]),
            valid: Some(Duration(std::time::Duration::from_secs(30))),
            timeout: Some(Duration(std::time::Duration::from_secs(5))),
            ..Resolver::default()
        };
        let inner = Resolver {
            servers: Some(vec!["10.0.0.3".into()]),
            ..Resolver::default()
        };
        let merged = inner.merged(&outer);
        assert_eq!(merged.servers, Some(vec!["10.0.0.3".into()]));
        assert_eq!(merged.valid, None);
        assert_eq!(
            merged.timeout,
            Some(Duration(std::time::Duration::from_secs(5)))
        );
        assert_eq!(Resolver::default().merged(&outer), outer);
    }
}

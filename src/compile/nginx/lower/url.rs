//! ngx_parse_url's view of an address, with its error words: the `listen` and upstream `server`
//! arguments and the host part of `proxy_pass`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// An address as nginx splits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Url {
    Unix(String),
    Inet {
        /// The host as written (empty for a port-only `listen`); `[v6]` without brackets.
        host: String,
        port: u16,
        /// No port was written, the default applies.
        no_port: bool,
    },
}

/// Splits an address. `listen` allows a bare port (`80`) and `*`; `default_port` applies when
/// none is written. Errors are nginx's words (`invalid port`, `invalid host`, `no host`, ...).
pub fn parse(text: &str, listen: bool, default_port: u16) -> Result<Url, &'static str> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("no path in the unix domain socket");
        }
        if path.len() > 107 {
            return Err("too long path in the unix domain socket");
        }
        return Ok(Url::Unix(path.to_string()));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let close = rest.find(']').ok_or("invalid host")?;
        let host = &rest[..close];
        host.parse::<Ipv6Addr>()
            .map_err(|_| "invalid IPv6 address")?;
        let after = &rest[close + 1..];
        let (port, no_port) = match after.strip_prefix(':') {
            Some(p) => (port_number(p)?, false),
            None if after.is_empty() => (default_port, true),
            None => return Err("invalid host"),
        };
        return Ok(Url::Inet {
            host: host.to_string(),
            port,
            no_port,
        });
    }
    if text.contains('/') || text.contains('?') {
        return Err("invalid host");
    }
    let (host, port, no_port) = match text.find(':') {
        Some(i) => (&text[..i], port_number(&text[i + 1..])?, false),
        None => {
            if listen && !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                return Ok(Url::Inet {
                    host: String::new(),
                    port: port_number(text)?,
                    no_port: false,
                });
            }
            (text, default_port, true)
        }
    };
    if host.is_empty() {
        return Err("no host");
    }
    Ok(Url::Inet {
        host: host.to_string(),
        port,
        no_port,
    })
}

fn port_number(text: &str) -> Result<u16, &'static str> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid port");
    }
    match text.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err("invalid port"),
    }
}

/// The socket addresses of a `listen`: a port alone or `*` is the IPv4 wildcard, a literal is
/// itself, a name is every address it resolves to (as nginx binds them all).
pub fn listen_addrs(url: &Url) -> Result<Vec<SocketAddr>, &'static str> {
    match url {
        Url::Unix(_) => Ok(Vec::new()),
        Url::Inet { host, port, .. } => {
            if host.is_empty() || host == "*" {
                return Ok(vec![SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    *port,
                )]);
            }
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok(vec![SocketAddr::new(ip, *port)]);
            }
            let mut addrs: Vec<SocketAddr> = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|_| "host not found")?
                .collect();
            addrs.dedup();
            if addrs.is_empty() {
                return Err("host not found");
            }
            Ok(addrs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_ngx_parse_url() {
        assert_eq!(
            parse("80", true, 80),
            Ok(Url::Inet {
                host: String::new(),
                port: 80,
                no_port: false
            })
        );
        assert_eq!(
            parse("127.0.0.1", true, 80),
            Ok(Url::Inet {
                host: "127.0.0.1".into(),
                port: 80,
                no_port: true
            })
        );
        assert_eq!(
            parse("[::1]:8080", true, 80),
            Ok(Url::Inet {
                host: "::1".into(),
                port: 8080,
                no_port: false
            })
        );
        assert_eq!(
            parse("80", false, 80).map(|_| ()),
            Ok(()),
            "a server named 80"
        );
        assert_eq!(parse("x:0", false, 80), Err("invalid port"));
        assert_eq!(parse("x:65536", false, 80), Err("invalid port"));
        assert_eq!(parse(":80", false, 80), Err("no host"));
        assert_eq!(parse("x/y", false, 80), Err("invalid host"));
        assert_eq!(parse("[zz]", false, 80), Err("invalid IPv6 address"));
        assert_eq!(
            parse("unix:", false, 80),
            Err("no path in the unix domain socket")
        );
        assert_eq!(
            parse("unix:/run/a.sock", false, 80),
            Ok(Url::Unix("/run/a.sock".into()))
        );
    }

    #[test]
    fn listen_addresses() {
        let any = |s: &str| listen_addrs(&parse(s, true, 80).unwrap()).unwrap();
        assert_eq!(any("8080"), vec!["0.0.0.0:8080".parse().unwrap()]);
        assert_eq!(any("*:81"), vec!["0.0.0.0:81".parse().unwrap()]);
        assert_eq!(any("[::]:80"), vec!["[::]:80".parse().unwrap()]);
    }
}

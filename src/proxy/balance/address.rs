//! Where a peer is, and how the servers of an upstream become peers.
//!
//! nginx resolves an upstream's host names once, when it reads the config, and every address a
//! name has becomes a peer of its own (in `getaddrinfo` order) that remembers the server string
//! as written. Resolution is done here, outside the request path, with the same system resolver.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use crate::config::validate::server_address;
use crate::config::Upstream;

/// A peer's address: an IP socket address or a unix socket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for PeerAddr {
    /// As nginx names a peer in `$upstream_addr` and its logs: `10.0.0.1:80`, `[::1]:80`,
    /// `unix:/run/app.sock`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Inet(a) => write!(f, "{a}"),
            PeerAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The addresses one `server` line of an upstream stands for.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ResolvedServer {
    pub addrs: Vec<PeerAddr>,
}

impl ResolvedServer {
    pub fn new(addrs: Vec<PeerAddr>) -> Self {
        ResolvedServer { addrs }
    }

    /// The upstream's servers, one entry per `server` line in order, resolving host names with
    /// the system resolver (blocking: call it when loading a config, never on a request).
    pub fn resolve(upstream: &Upstream) -> Result<Vec<ResolvedServer>, String> {
        upstream
            .servers
            .iter()
            .map(|s| resolve_one(&s.address, true))
            .collect()
    }

    /// Like [`ResolvedServer::resolve`] for upstreams whose servers are all IP literals or unix
    /// sockets; a host name is an error instead of a lookup.
    pub fn literal(upstream: &Upstream) -> Result<Vec<ResolvedServer>, String> {
        upstream
            .servers
            .iter()
            .map(|s| resolve_one(&s.address, false))
            .collect()
    }
}

fn resolve_one(address: &str, lookup: bool) -> Result<ResolvedServer, String> {
    if let Some(path) = address.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!("no path in the unix socket address \"{address}\""));
        }
        return Ok(ResolvedServer::new(vec![PeerAddr::Unix(PathBuf::from(
            path,
        ))]));
    }
    let (host, port) = server_address(address, 80)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ResolvedServer::new(vec![PeerAddr::Inet(SocketAddr::new(
            ip, port,
        ))]));
    }
    if !lookup {
        return Err(format!("\"{address}\" names a host; resolve it first"));
    }
    let addrs: Vec<PeerAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("host not found in upstream \"{address}\": {e}"))?
        .map(PeerAddr::Inet)
        .collect();
    if addrs.is_empty() {
        return Err(format!("host not found in upstream \"{address}\""));
    }
    Ok(ResolvedServer::new(addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_need_no_resolver() {
        let r = resolve_one("127.0.0.1:8080", false).unwrap();
        assert_eq!(
            r.addrs,
            vec![PeerAddr::Inet("127.0.0.1:8080".parse().unwrap())]
        );
        let r = resolve_one("[::1]", false).unwrap();
        assert_eq!(r.addrs[0].to_string(), "[::1]:80");
        let r = resolve_one("unix:/run/a.sock", false).unwrap();
        assert_eq!(r.addrs[0].to_string(), "unix:/run/a.sock");
        assert!(resolve_one("app.internal:80", false).is_err());
        assert!(resolve_one("127.0.0.1:0", false).is_err());
    }

    #[test]
    fn localhost_resolves_to_at_least_one_peer() {
        let r = resolve_one("localhost:81", true).unwrap();
        assert!(!r.addrs.is_empty());
        assert!(r
            .addrs
            .iter()
            .all(|a| matches!(a, PeerAddr::Inet(s) if s.port() == 81)));
    }
}

//! The PROXY protocol (HAProxy's spec, v1 text and v2 binary): read on `listen ...
//! proxy_protocol` from a front load balancer such as an NLB, and written to stream backends
//! (nginx `proxy_protocol on`, ELB's ProxyProtocolPolicyType).
//!
//! Parsing and building are the `ppp` crate's; this module reads exactly one header off a
//! connection and puts back what came after it. The addresses travel with the connection's
//! [`ConnectionTag`](super::connection_tag::ConnectionTag).
//!
//! As in nginx, a header changes `$remote_addr` only through realip (`set_real_ip_from` with
//! `real_ip_header proxy_protocol`); `$proxy_protocol_addr` and `$proxy_protocol_port` carry
//! the client the header names.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::ProxyProtocol;

/// nginx's limit on a header (NGX_PROXY_PROTOCOL_MAX_HEADER is 107 for v1; v2 headers with TLVs
/// are bounded by its 4096-byte buffer).
const MAX_HEADER: usize = 4096;

/// What a PROXY header said. Both addresses are `None` for `PROXY UNKNOWN`, a v2 `LOCAL`
/// command (health checks of the front balancer) or a Unix-socket v2 header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyInfo {
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
}

/// Why no header was read. Its text is for the log; the caller closes the connection, as nginx
/// does with a "broken header".
#[derive(Debug)]
pub enum HeaderError {
    /// Nothing complete arrived in time: nginx's "client timed out".
    TimedOut,
    /// Reading failed.
    Io(String),
    /// What arrived is not a header (or the client closed halfway): nginx's "broken header".
    Broken(String),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::TimedOut => f.write_str("no PROXY protocol header in time"),
            HeaderError::Io(m) | HeaderError::Broken(m) => f.write_str(m),
        }
    }
}

/// Reads one header off `stream`, waiting at most `timeout` for it: the header, and the bytes
/// read after it, which the caller puts back.
pub async fn read_header_from<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(ProxyInfo, Vec<u8>), HeaderError> {
    match tokio::time::timeout(timeout, read(stream)).await {
        Ok(result) => result,
        Err(_) => Err(HeaderError::TimedOut),
    }
}

async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(ProxyInfo, Vec<u8>), HeaderError> {
    use HeaderError::{Broken, Io};
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let want = (MAX_HEADER - buf.len()).min(chunk.len());
        let n = stream
            .read(&mut chunk[..want])
            .await
            .map_err(|e| Io(format!("reading the PROXY protocol header: {e}")))?;
        if n == 0 {
            return Err(Broken(
                "the connection closed before a complete PROXY protocol header".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let parsed = HeaderResult::parse(&buf);
        if parsed.is_incomplete() {
            if buf.len() >= MAX_HEADER {
                return Err(Broken("the PROXY protocol header is too long".into()));
            }
            continue;
        }
        let (info, used) = match parsed {
            HeaderResult::V1(Ok(h)) => (from_v1(&h.addresses), h.header.len()),
            HeaderResult::V2(Ok(h)) => (from_v2(&h), h.len()),
            HeaderResult::V1(Err(e)) => {
                return Err(Broken(format!("broken PROXY protocol header: {e}")))
            }
            HeaderResult::V2(Err(e)) => {
                return Err(Broken(format!("broken PROXY protocol header: {e}")))
            }
        };
        return Ok((info, buf.split_off(used)));
    }
}

fn from_v1(addresses: &v1::Addresses) -> ProxyInfo {
    match addresses {
        v1::Addresses::Tcp4(a) => ProxyInfo {
            source: Some(SocketAddr::from((a.source_address, a.source_port))),
            destination: Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        },
        v1::Addresses::Tcp6(a) => ProxyInfo {
            source: Some(SocketAddr::from((a.source_address, a.source_port))),
            destination: Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        },
        v1::Addresses::Unknown => ProxyInfo::default(),
    }
}

fn from_v2(header: &v2::Header<'_>) -> ProxyInfo {
    if header.command == v2::Command::Local {
        return ProxyInfo::default();
    }
    match &header.addresses {
        v2::Addresses::IPv4(a) => ProxyInfo {
            source: Some(SocketAddr::from((a.source_address, a.source_port))),
            destination: Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        },
        v2::Addresses::IPv6(a) => ProxyInfo {
            source: Some(SocketAddr::from((a.source_address, a.source_port))),
            destination: Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        },
        v2::Addresses::Unix(_) | v2::Addresses::Unspecified => ProxyInfo::default(),
    }
}

/// The header to send a backend for a connection from `source` to `destination` (v1 writes
/// `UNKNOWN` when the two are not both IPv4 or both IPv6, as the spec says).
pub fn header(
    version: ProxyProtocol,
    source: Option<SocketAddr>,
    destination: Option<SocketAddr>,
) -> Vec<u8> {
    match version {
        ProxyProtocol::V1 => {
            let addresses = match (source, destination) {
                (Some(s), Some(d)) => v1::Addresses::from((s, d)),
                _ => v1::Addresses::Unknown,
            };
            addresses.to_string().into_bytes()
        }
        ProxyProtocol::V2 => {
            let (command, addresses) = match (source, destination) {
                (Some(s), Some(d)) if s.is_ipv4() == d.is_ipv4() => {
                    (v2::Command::Proxy, v2::Addresses::from((s, d)))
                }
                _ => (v2::Command::Local, v2::Addresses::Unspecified),
            };
            v2::Builder::with_addresses(v2::Version::Two | command, v2::Protocol::Stream, addresses)
                .build()
                .unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (SocketAddr, SocketAddr) {
        (
            "192.0.2.7:40000".parse().unwrap(),
            "10.0.0.1:443".parse().unwrap(),
        )
    }

    #[test]
    fn v1_headers_are_nginx_shaped() {
        let (s, d) = addrs();
        let h = header(ProxyProtocol::V1, Some(s), Some(d));
        assert_eq!(h, b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 443\r\n");
        let h = header(ProxyProtocol::V1, None, Some(d));
        assert_eq!(h, b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_headers_round_trip() {
        let (s, d) = addrs();
        let h = header(ProxyProtocol::V2, Some(s), Some(d));
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
        match HeaderResult::parse(&h) {
            HeaderResult::V2(Ok(parsed)) => {
                assert_eq!(parsed.len(), h.len());
                assert_eq!(
                    from_v2(&parsed),
                    ProxyInfo {
                        source: Some(s),
                        destination: Some(d)
                    }
                );
            }
            other => panic!("not a v2 header: {other:?}"),
        }
    }
}

//! One check of one address, with Pingora's own connectors: its `HttpHealthCheck` for HTTP and
//! HTTPS (a fresh connection, the request, the status through a validator, the body drained),
//! and its transport connector for TCP (connect) and SSL (connect and handshake).
//!
//! ELB checks do not verify the server's certificate, and neither do these.

use std::time::Duration;

use pingora::connectors::TransportConnector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::health_check::{HealthCheck as _, HttpHealthCheck};
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use super::ProbeKey;
use crate::config::HealthProtocol;
use crate::proxy::balance::PeerAddr;

/// ELB's health checker names itself so; access logs and WAF rules written for ELB keep
/// recognizing the checks.
const USER_AGENT: &str = "ELB-HealthChecker/1.0";

pub(super) struct Prober {
    kind: Kind,
    timeout: Duration,
}

enum Kind {
    Http {
        check: Box<HttpHealthCheck>,
        backend: Backend,
    },
    Connect {
        connector: TransportConnector,
        peer: Box<HttpPeer>,
    },
}

impl Prober {
    pub(super) fn new(key: &ProbeKey) -> Result<Prober, String> {
        let timeout = key.timeout;
        let tls = matches!(
            key.target.protocol,
            HealthProtocol::Https | HealthProtocol::Ssl
        );
        let sni = if tls && !is_ip(&key.host) {
            host_without_port(&key.host).to_string()
        } else {
            String::new()
        };
        let kind = match key.target.protocol {
            HealthProtocol::Http | HealthProtocol::Https => {
                let mut check = HttpHealthCheck::new(&key.host, tls);
                let path = key.target.path.as_deref().unwrap_or("/");
                let mut req = RequestHeader::build("GET", path.as_bytes(), None)
                    .map_err(|e| format!("health check path \"{path}\": {e}"))?;
                req.insert_header("Host", &key.host)
                    .and_then(|_| req.insert_header("User-Agent", USER_AGENT))
                    .map_err(|e| format!("health check Host \"{}\": {e}", key.host))?;
                check.req = req;
                let peer = &mut check.peer_template;
                peer.sni = sni;
                peer.options.verify_cert = false;
                peer.options.verify_hostname = false;
                peer.options.connection_timeout = Some(timeout);
                peer.options.read_timeout = Some(timeout);
                peer.options.write_timeout = Some(timeout);
                let codes = key.success_codes.clone();
                check.validator = Some(Box::new(move |resp: &ResponseHeader| {
                    let status = resp.status.as_u16();
                    if codes.iter().any(|r| r.contains(status)) {
                        Ok(())
                    } else {
                        Error::e_explain(
                            ErrorType::CustomCode("health check status", status),
                            "not in success_codes",
                        )
                    }
                }));
                Kind::Http {
                    check: Box::new(check),
                    backend: Backend {
                        addr: pingora_addr(&key.addr)?,
                        weight: 1,
                        ext: Default::default(),
                    },
                }
            }
            HealthProtocol::Tcp | HealthProtocol::Ssl => {
                let mut peer = match &key.addr {
                    PeerAddr::Inet(addr) => HttpPeer::new(*addr, tls, sni),
                    PeerAddr::Unix(path) => HttpPeer::new_uds(&path.to_string_lossy(), tls, sni)
                        .map_err(|e| format!("unix socket {}: {e}", path.display()))?,
                };
                peer.options.verify_cert = false;
                peer.options.verify_hostname = false;
                peer.options.connection_timeout = Some(timeout);
                Kind::Connect {
                    connector: TransportConnector::new(None),
                    peer: Box::new(peer),
                }
            }
        };
        Ok(Prober { kind, timeout })
    }

    /// Runs the check; the error says why it failed.
    pub(super) async fn check(&self) -> Result<(), String> {
        let run = async {
            match &self.kind {
                Kind::Http { check, backend } => check.check(backend).await,
                Kind::Connect { connector, peer } => {
                    connector.new_stream(peer.as_ref()).await.map(drop)
                }
            }
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(reason(&e)),
            Err(_) => Err(format!("timed out after {:?}", self.timeout)),
        }
    }
}

/// A short reason for the admin API and the log.
fn reason(e: &Error) -> String {
    match e.etype() {
        ErrorType::CustomCode(_, status) => format!("HTTP {status}"),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            format!("{} (timeout)", e.etype().as_str())
        }
        _ => match e.root_cause().to_string() {
            cause if cause.is_empty() => e.etype().as_str().to_string(),
            cause if cause == e.etype().as_str() => cause,
            cause => format!("{}: {cause}", e.etype().as_str()),
        },
    }
}

fn pingora_addr(addr: &PeerAddr) -> Result<PingoraAddr, String> {
    match addr {
        PeerAddr::Inet(a) => Ok(PingoraAddr::Inet(*a)),
        PeerAddr::Unix(path) => std::os::unix::net::SocketAddr::from_pathname(path)
            .map(PingoraAddr::Unix)
            .map_err(|e| format!("unix socket {}: {e}", path.display())),
    }
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host;
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn is_ip(host: &str) -> bool {
    host.starts_with('[') || host_without_port(host).parse::<std::net::IpAddr>().is_ok()
}

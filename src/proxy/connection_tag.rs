//! What a client connection carries to every request on it: its number (nginx's
//! `$connection`, and the `*5` its error log lines start with), how many requests it has had
//! (`$connection_requests`), what its PROXY header said, and how many bytes Pingora has
//! written to it (a chunked response's `$body_bytes_sent`).
//!
//! Numbers come from one process-wide count, as nginx's `ngx_connection_counter` (shared by
//! its workers): every accepted connection and every connection opened to a backend takes the
//! next one, from 1, so a client's connections are numbered as nginx numbers them.
//!
//! Pingora's proxy digest exists for CONNECT tunnels; its `user_data` is the one per-connection
//! slot that survives from the accepted socket through TLS to every HTTP request on it, so the
//! tag rides there for connections Pingora serves. The response header the digest requires is
//! a placeholder. The fast path keeps its own count and hands it over with the connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pingora::http::ResponseHeader;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::GetProxyDigest;

use super::proxy_protocol::ProxyInfo;

/// The next connection number: for a connection just accepted, or just opened to a backend.
pub fn next_number() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug)]
pub struct ConnectionTag {
    pub number: u64,
    pub proxy: Option<ProxyInfo>,
    /// Requests begun on the connection so far.
    requests: AtomicU64,
    /// Bytes written to the client since Pingora took the connection, as counted by
    /// [`Replay`](super::replay::Replay).
    written: AtomicU64,
}

impl ConnectionTag {
    /// A connection that has had `requests` requests already (served before Pingora took it).
    pub fn new(number: u64, proxy: Option<ProxyInfo>, requests: u64) -> ConnectionTag {
        ConnectionTag {
            number,
            proxy,
            requests: AtomicU64::new(requests),
            written: AtomicU64::new(0),
        }
    }

    /// Counts a request begun: its number on the connection, from 1.
    pub fn next_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The connection goes on to Pingora after `requests` requests served elsewhere.
    pub fn served_before(&self, requests: u64) {
        self.requests.store(requests, Ordering::Relaxed);
    }

    /// Counts `n` bytes written to the client.
    pub fn count_written(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes written to the client since Pingora took the connection.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// Keeps `tag` with the connection, where [`of`] finds it again.
pub fn attach(stream: &mut L4Stream, tag: ConnectionTag) {
    if let Some(digest) = digest(tag) {
        stream.set_proxy_digest(digest);
    }
}

/// The digest [`attach`] keeps for `tag`.
pub fn digest(tag: ConnectionTag) -> Option<ProxyDigest> {
    match ResponseHeader::build(200, None) {
        Ok(placeholder) => Some(ProxyDigest::new(Box::new(placeholder), Some(Box::new(tag)))),
        Err(e) => {
            tracing::error!("cannot keep the connection's number and PROXY addresses: {e}");
            None
        }
    }
}

/// The tag [`attach`] kept, if any.
pub fn of(digest: Option<&Arc<ProxyDigest>>) -> Option<&ConnectionTag> {
    digest?.user_data.as_ref()?.downcast_ref::<ConnectionTag>()
}

/// A client stream that tells its connection's number and PROXY header without a digest
/// being made for the asking.
pub trait Tagged {
    fn number_and_proxy(&self) -> (u64, Option<ProxyInfo>);
}

/// A Unix-socket connection: the tag it got when accepted.
impl Tagged for L4Stream {
    fn number_and_proxy(&self) -> (u64, Option<ProxyInfo>) {
        of_digest(self)
    }
}

/// A TLS connection: the tag its socket got when accepted.
impl Tagged for pingora::protocols::tls::SslStream<L4Stream> {
    fn number_and_proxy(&self) -> (u64, Option<ProxyInfo>) {
        of_digest(self)
    }
}

fn of_digest(stream: &impl GetProxyDigest) -> (u64, Option<ProxyInfo>) {
    let digest = stream.get_proxy_digest();
    of(digest.as_ref()).map_or((0, None), |t| (t.number, t.proxy))
}

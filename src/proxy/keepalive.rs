//! nginx's upstream `keepalive` cache for the fast path ([`http::serve_fast`]): idle
//! connections to an upstream's servers, at most `keepalive N` of them, the least recently used
//! closed first when a new one would not fit, each dropped once it has been idle for
//! `keepalive_timeout` or has carried `keepalive_requests` requests
//! (ngx_http_upstream_keepalive_module).
//!
//! Requests that Pingora serves use Pingora's own connection pool; the two never share a
//! connection.
//!
//! [`http::serve_fast`]: super::http::serve_fast

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::balance::PeerId;

/// One upstream's idle connections, most recently used last.
pub struct KeepaliveCache {
    capacity: usize,
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    peer: PeerId,
    stream: TcpStream,
    since: Instant,
    requests: u32,
}

/// A connection taken from the cache, or made for this request.
pub struct Upstream {
    pub stream: TcpStream,
    /// Requests it carried before this one.
    pub requests: u32,
    pub reused: bool,
}

impl KeepaliveCache {
    /// A cache of `keepalive` connections; `None` keeps none.
    pub fn new(keepalive: Option<u32>) -> KeepaliveCache {
        KeepaliveCache {
            capacity: keepalive.unwrap_or(0) as usize,
            idle: Mutex::new(VecDeque::new()),
        }
    }

    /// The most recently used idle connection to `peer` that is still open and has been idle
    /// for less than `timeout`. Connections found expired or closed on the way are dropped.
    pub fn take(&self, peer: PeerId, timeout: Duration) -> Option<Upstream> {
        if self.capacity == 0 {
            return None;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().ok()?;
        idle.retain(|c| now.duration_since(c.since) < timeout);
        while let Some(position) = idle.iter().rposition(|c| c.peer == peer) {
            let Some(candidate) = idle.remove(position) else {
                break;
            };
            if still_open(&candidate.stream) {
                return Some(Upstream {
                    stream: candidate.stream,
                    requests: candidate.requests,
                    reused: true,
                });
            }
        }
        None
    }

    /// Keeps a connection that has just carried a request, unless it has carried
    /// `max_requests`; the least recently used one makes room when the cache is full.
    pub fn put(&self, peer: PeerId, upstream: Upstream, max_requests: u32) {
        let requests = upstream.requests + 1;
        if self.capacity == 0 || requests >= max_requests {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        if idle.len() >= self.capacity {
            idle.pop_front();
        }
        idle.push_back(Idle {
            peer,
            stream: upstream.stream,
            since: Instant::now(),
            requests,
        });
    }
}

/// Whether an idle connection is still usable: nothing to read (a server that closed it, or
/// sent something unasked, makes it readable). Asks the runtime's readiness first, so the
/// common case costs no system call.
fn still_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut byte = [0u8; 1];
            matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

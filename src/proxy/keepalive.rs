//! nginx's upstream `keepalive` cache for the fast path ([`http::serve_fast`]): idle
//! connections to an upstream's servers, at most `keepalive N` of them, the least recently used
//! closed first when a new one would not fit, each dropped once it has been idle for
//! `keepalive_timeout` or has carried `keepalive_requests` requests
//! (ngx_http_upstream_keepalive_module).
//!
//! As in nginx, where each worker process has its own cache of `keepalive N`, each worker
//! thread has its own: a connection is reused on the thread whose runtime registered it, so
//! its readiness is reported by that thread's own event loop (with one runtime per thread, a
//! connection taken to another thread would wait for the first thread to poll for it). It also
//! means no lock is shared between threads.
//!
//! Requests that Pingora serves use Pingora's own connection pool; the two never share a
//! connection.
//!
//! [`http::serve_fast`]: super::http::serve_fast

use std::cell::RefCell;
use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use thread_local::ThreadLocal;
use tokio::net::TcpStream;

use super::balance::PeerId;

/// One upstream's idle connections, per worker thread, most recently used last.
pub struct KeepaliveCache {
    capacity: usize,
    idle: ThreadLocal<RefCell<VecDeque<Idle>>>,
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
            idle: ThreadLocal::new(),
        }
    }

    /// The most recently used idle connection to `peer` that is still open and has been idle
    /// for less than `timeout` at `now`. Connections found expired or closed on the way are
    /// dropped.
    pub fn take(&self, peer: PeerId, timeout: Duration, now: Instant) -> Option<Upstream> {
        if self.capacity == 0 {
            return None;
        }
        let mut idle = self.idle.get()?.borrow_mut();
        // Oldest first: the expired ones are at the front.
        while idle
            .front()
            .is_some_and(|c| now.duration_since(c.since) >= timeout)
        {
            idle.pop_front();
        }
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
    pub fn put(&self, peer: PeerId, upstream: Upstream, max_requests: u32, now: Instant) {
        let requests = upstream.requests + 1;
        if self.capacity == 0 || requests >= max_requests {
            return;
        }
        let mut idle = self.idle.get_or_default().borrow_mut();
        if idle.len() >= self.capacity {
            idle.pop_front();
        }
        idle.push_back(Idle {
            peer,
            stream: upstream.stream,
            since: now,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair on loopback: the cache's end, and the server's.
    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    fn fresh(stream: TcpStream) -> Upstream {
        Upstream {
            stream,
            requests: 0,
            reused: false,
        }
    }

    #[tokio::test]
    async fn takes_the_most_recent_connection_of_the_peer_asked_for() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cache = KeepaliveCache::new(Some(4));
        let (a1, _s1) = pair(&listener).await;
        let (b1, _s2) = pair(&listener).await;
        let (a2, _s3) = pair(&listener).await;
        let a2_port = a2.local_addr().unwrap().port();
        cache.put(PeerId(0), fresh(a1), 100, Instant::now());
        cache.put(PeerId(1), fresh(b1), 100, Instant::now());
        cache.put(PeerId(0), fresh(a2), 100, Instant::now());
        let taken = cache
            .take(PeerId(0), Duration::from_secs(60), Instant::now())
            .unwrap();
        assert!(taken.reused);
        assert_eq!(taken.requests, 1);
        assert_eq!(taken.stream.local_addr().unwrap().port(), a2_port);
        assert!(cache
            .take(PeerId(2), Duration::from_secs(60), Instant::now())
            .is_none());
    }

    #[tokio::test]
    async fn the_least_recently_used_makes_room() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cache = KeepaliveCache::new(Some(1));
        let (old, _s1) = pair(&listener).await;
        let (new, _s2) = pair(&listener).await;
        let new_port = new.local_addr().unwrap().port();
        cache.put(PeerId(0), fresh(old), 100, Instant::now());
        cache.put(PeerId(0), fresh(new), 100, Instant::now());
        let taken = cache
            .take(PeerId(0), Duration::from_secs(60), Instant::now())
            .unwrap();
        assert_eq!(taken.stream.local_addr().unwrap().port(), new_port);
        assert!(cache
            .take(PeerId(0), Duration::from_secs(60), Instant::now())
            .is_none());
    }

    #[tokio::test]
    async fn worn_out_expired_and_closed_connections_are_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cache = KeepaliveCache::new(Some(8));
        // keepalive_requests 2: a connection that has carried 2 requests is closed.
        let (worn, _s1) = pair(&listener).await;
        cache.put(
            PeerId(0),
            Upstream {
                stream: worn,
                requests: 1,
                reused: true,
            },
            2,
            Instant::now(),
        );
        assert!(cache
            .take(PeerId(0), Duration::from_secs(60), Instant::now())
            .is_none());
        // Idle longer than keepalive_timeout.
        let (idle, _s2) = pair(&listener).await;
        cache.put(PeerId(0), fresh(idle), 100, Instant::now());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(cache
            .take(PeerId(0), Duration::from_millis(10), Instant::now())
            .is_none());
        // Closed by the server while idle.
        let (closed, server) = pair(&listener).await;
        cache.put(PeerId(0), fresh(closed), 100, Instant::now());
        drop(server);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(cache
            .take(PeerId(0), Duration::from_secs(60), Instant::now())
            .is_none());
        // Without `keepalive`, nothing is kept.
        let none = KeepaliveCache::new(None);
        let (c, _s3) = pair(&listener).await;
        none.put(PeerId(0), fresh(c), 100, Instant::now());
        assert!(none
            .take(PeerId(0), Duration::from_secs(60), Instant::now())
            .is_none());
    }
}

//! Connection draining across a reload.
//!
//! A reload swaps the [`Runtime`]; requests in flight keep the old one. [`hand_over`] runs at
//! the swap:
//!
//! - pools of the new runtime take over the balancer state (failures, weights, health) of the
//!   servers that stay, by pool name;
//! - a server that the new config no longer has in its pool (removed from the config, or an ELB
//!   deregistration compiled into it) is retired in the old pool, so the old runtime's requests
//!   and their retries never pick it again, while the requests already on it go on. Unless it
//!   would leave the old pool with no server at all (every server replaced): requests that began
//!   just before the swap have only the old pool, and nginx's old workers would still send them
//!   to the old servers, so they are not retired then;
//! - with a `drain_timeout` (the new config's, else the old one's), the upstream connections
//!   still open to such a server when it expires are shut down, which ends those requests (a
//!   502 when no response had started, a cut response otherwise). Without one they simply
//!   finish, as nginx's old workers finish theirs after a reload.
//!
//! To cut a connection the pool keeps, per request, the descriptor of its upstream connection
//! (from `connected_to_upstream`) and the connection's local address. The descriptor is shut down
//! only while it still has that local address and the server's address, so a number the kernel
//! has meanwhile given to another connection is left alone.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::SockRef;
use thread_local::ThreadLocal;

use super::balance::{PeerAddr, PeerId};
use super::runtime::{Runtime, UpstreamPool};
use crate::sync::lock;

/// A pool's requests with an upstream connection open, for draining.
///
/// Every proxied request registers and releases itself, so the table is kept per worker
/// thread: a request stays on its thread, and each thread takes only its own lock, where one
/// table made both worker threads take the same lock twice per request. The rare readers (a
/// reload counting what is in flight, a drain timeout cutting) walk every thread's part.
#[derive(Debug, Default)]
pub struct Inflight {
    shards: ThreadLocal<Mutex<Requests>>,
    /// Peers whose drain timeout has expired: a request connecting to one now is cut at once.
    expired: Mutex<HashSet<PeerId>>,
    /// Whether `expired` has any peer: read by every registration, so that it takes no lock
    /// but its own shard's until a drain timeout has expired.
    any_expired: AtomicBool,
}

/// By request token: an insert and a removal per proxied request, so a fast hash; the tokens
/// are the process's own counter, never a client's.
type Requests = foldhash::HashMap<u64, Conn>;

#[derive(Debug)]
struct Conn {
    peer: PeerId,
    addr: PeerAddr,
    fd: RawFd,
    local: Option<SocketAddr>,
    cut: bool,
}

impl Inflight {
    /// Request `request` is connected to `peer` through `fd` (again, after a retry).
    /// `remember_local` records the connection's local address too (a syscall per request),
    /// which makes a later cut check both ends of the descriptor; pools with a drain timeout
    /// ask for it, the others can only be cut when a reload gives them one, and then the
    /// server's address alone identifies the connection.
    pub fn register(
        &self,
        request: u64,
        peer: PeerId,
        addr: &PeerAddr,
        fd: RawFd,
        remember_local: bool,
    ) {
        let conn = Conn {
            peer,
            addr: addr.clone(),
            fd,
            local: if remember_local { local_addr(fd) } else { None },
            cut: false,
        };
        let shard = self.shards.get_or_default();
        lock(shard).insert(request, conn);
        // Registered before the flag is read, and `cut` sets the flag before it walks the
        // shards: a registration either is seen by that walk or sees the flag here.
        if self.any_expired.load(Ordering::SeqCst) && lock(&self.expired).contains(&peer) {
            if let Some(conn) = lock(shard).get_mut(&request) {
                conn.cut = shut_down(conn);
            }
        }
    }

    /// The request is over. Returns whether its connection was cut by a drain timeout.
    pub fn release(&self, request: u64) -> bool {
        if let Some(conn) = self
            .shards
            .get()
            .and_then(|shard| lock(shard).remove(&request))
        {
            return conn.cut;
        }
        // Released by another thread than the one it registered on.
        self.shards
            .iter()
            .find_map(|shard| lock(shard).remove(&request))
            .is_some_and(|c| c.cut)
    }

    /// Whether the request's connection was cut by a drain timeout.
    pub fn was_cut(&self, request: u64) -> bool {
        self.shards
            .iter()
            .any(|shard| lock(shard).get(&request).is_some_and(|c| c.cut))
    }

    /// Requests connected to `peer` now.
    pub fn count(&self, peer: PeerId) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).values().filter(|c| c.peer == peer).count())
            .sum()
    }

    /// The drain timeout of `peer` expired: shuts its connections down, and those opened from
    /// now on. Returns how many were cut.
    pub fn cut(&self, peer: PeerId) -> usize {
        lock(&self.expired).insert(peer);
        self.any_expired.store(true, Ordering::SeqCst);
        self.shards
            .iter()
            .map(|shard| {
                lock(shard)
                    .values_mut()
                    .filter(|c| c.peer == peer && !c.cut)
                    .map(|c| {
                        c.cut = shut_down(c);
                        usize::from(c.cut)
                    })
                    .sum::<usize>()
            })
            .sum()
    }
}

/// Hands the running state over from `old` to `new` at a reload (see the module docs).
pub fn hand_over(old: &Runtime, new: &Runtime) {
    for (name, pool) in &new.pools {
        if let Some(prev) = old.pools.get(name) {
            pool.balancer.carry_state_from(&prev.balancer);
        }
    }
    let mut seen = HashSet::new();
    for (name, prev) in &old.pools {
        if !seen.insert(Arc::as_ptr(prev)) {
            continue;
        }
        let next = new.pools.get(name);
        let timeout = next.and_then(|p| p.drain_timeout).or(prev.drain_timeout);
        let peers = prev.balancer.peers();
        let removed: Vec<bool> = peers
            .iter()
            .map(|info| {
                !next.is_some_and(|n| {
                    n.balancer
                        .peers()
                        .iter()
                        .any(|p| p.server == info.server && p.addr == info.addr)
                })
            })
            .collect();
        let some_stay = peers
            .iter()
            .zip(&removed)
            .any(|(info, removed)| !removed && !info.down);
        for (i, info) in peers.iter().enumerate() {
            if !removed[i] {
                continue;
            }
            let peer = PeerId(i as u32);
            if some_stay {
                prev.balancer.retire(peer);
            }
            let in_flight = prev.inflight.count(peer);
            match timeout {
                Some(timeout) => {
                    tracing::info!(
                        upstream = %prev.name,
                        "server {} ({}) removed: draining {in_flight} requests for up to {timeout:?}",
                        info.server,
                        info.addr
                    );
                    cut_after(prev.clone(), peer, timeout);
                }
                None => tracing::info!(
                    upstream = %prev.name,
                    "server {} ({}) removed: {in_flight} requests in flight finish there",
                    info.server,
                    info.addr
                ),
            }
        }
    }
}

/// Cuts `peer`'s connections in `pool` once `timeout` has passed.
fn cut_after(pool: Arc<UpstreamPool>, peer: PeerId, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let cut = move || {
        let n = pool.inflight.cut(peer);
        if let Some(info) = pool.balancer.peer(peer) {
            tracing::warn!(
                upstream = %pool.name,
                "drain timeout of server {} ({}) expired: {n} requests cut",
                info.server,
                info.addr
            );
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                tokio::time::sleep_until(deadline.into()).await;
                cut();
            });
        }
        Err(_) => {
            std::thread::spawn(move || {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                cut();
            });
        }
    }
}

fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: `fd` is the open upstream connection `connected_to_upstream` was just given.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    SockRef::from(&fd).local_addr().ok()?.as_socket()
}

/// Shuts the connection down if its descriptor still belongs to it.
fn shut_down(conn: &Conn) -> bool {
    // SAFETY: the descriptor is only passed to syscalls. If the connection was closed meanwhile
    // they fail (EBADF); if the number was given to another socket, its addresses differ from
    // the ones recorded and nothing is done to it.
    let fd = unsafe { BorrowedFd::borrow_raw(conn.fd) };
    let sock = SockRef::from(&fd);
    let same_peer = match (&conn.addr, sock.peer_addr()) {
        (PeerAddr::Inet(addr), Ok(peer)) => peer.as_socket() == Some(*addr),
        (PeerAddr::Unix(path), Ok(peer)) => peer.as_pathname() == Some(path.as_path()),
        (_, Err(_)) => false,
    };
    let same_local =
        conn.local.is_none() || sock.local_addr().ok().and_then(|a| a.as_socket()) == conn.local;
    same_peer && same_local && sock.shutdown(std::net::Shutdown::Both).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Appliance;
    use crate::proxy::balance::{Outcome, SelectKey};
    use std::io::Read;

    fn runtime(servers: &[&str], drain: &str) -> Runtime {
        let list: Vec<String> = servers
            .iter()
            .map(|s| format!("{{ address = \"{s}\" }}"))
            .collect();
        let text = format!(
            "[[http.upstream]]\nname = \"app\"\n{drain}\nserver = [{}]\n",
            list.join(", ")
        );
        Runtime::build(&Appliance::from_toml(&text, "t.toml").unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_reload_retires_removed_servers_in_the_old_pool_and_carries_the_rest() {
        let old = runtime(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"], "");
        let new = runtime(&["10.0.0.3:80", "10.0.0.1:80"], "drain_timeout = \"1s\"");
        let (old_pool, new_pool) = (&old.pools["app"], &new.pools["app"]);
        let now = Instant::now();
        // 10.0.0.3 failed before the reload.
        let mut a = old_pool.balancer.begin();
        for _ in 0..3 {
            let p = old_pool
                .balancer
                .select(&mut a, &SelectKey::default(), now)
                .unwrap();
            let outcome = if p == PeerId(2) {
                Outcome::Failed
            } else {
                Outcome::Success
            };
            old_pool.balancer.finish(&mut a, outcome, now);
            a = old_pool.balancer.begin();
        }
        hand_over(&old, &new);
        assert_eq!(
            new_pool.balancer.snapshot(now)[0].fails,
            1,
            "10.0.0.3 keeps its failure"
        );
        // The old pool's requests (and retries) never get 10.0.0.2 again.
        for _ in 0..6 {
            let mut a = old_pool.balancer.begin();
            let p = old_pool
                .balancer
                .select(&mut a, &SelectKey::default(), now)
                .unwrap();
            assert_ne!(p, PeerId(1));
            old_pool.balancer.finish(&mut a, Outcome::Success, now);
        }
        // Its drain timeout (the new config's) is running: connecting after it cuts at once.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(lock(&old_pool.inflight.expired).contains(&PeerId(1)));
        assert!(!lock(&old_pool.inflight.expired).contains(&PeerId(0)));
    }
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn a_cut_shuts_the_peers_connections_down_and_later_ones_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(addr).unwrap();
        let b = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        let inflight = Inflight::default();
        let (p0, p1) = (PeerId(0), PeerId(1));
        inflight.register(1, p0, &PeerAddr::Inet(addr), a.as_raw_fd(), true);
        inflight.register(
            2,
            p1,
            &PeerAddr::Inet(other.local_addr().unwrap()),
            b.as_raw_fd(),
            true,
        );
        assert_eq!(inflight.count(p0), 1);
        assert_eq!(inflight.cut(p0), 1);
        assert!(inflight.was_cut(1) && !inflight.was_cut(2));
        // The cut connection reads end-of-stream at once; the other is untouched.
        let mut buf = [0u8; 1];
        assert_eq!((&a).read(&mut buf).unwrap(), 0);
        b.set_nonblocking(true).unwrap();
        assert!((&b).read(&mut buf).is_err(), "would block: still open");
        // A descriptor that no longer matches the recorded addresses is left alone.
        let c = TcpStream::connect(addr).unwrap();
        let d = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        inflight.register(3, p1, &PeerAddr::Inet(addr), d.as_raw_fd(), false);
        assert_eq!(
            inflight.cut(p1),
            1,
            "request 2 only: 3's peer address differs"
        );
        d.set_nonblocking(true).unwrap();
        assert!((&d).read(&mut buf).is_err(), "would block: still open");
        // Connecting to a peer whose timeout expired is cut at once.
        inflight.register(4, p0, &PeerAddr::Inet(addr), c.as_raw_fd(), false);
        assert!(inflight.release(4));
        assert_eq!((&c).read(&mut buf).unwrap(), 0);
        assert!(!inflight.release(4), "released once");
    }

    #[test]
    fn each_thread_keeps_its_requests_and_every_reader_sees_them_all() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let a = TcpStream::connect(addr).unwrap();
        let b = TcpStream::connect(addr).unwrap();
        let inflight = Inflight::default();
        let peer = PeerId(0);
        inflight.register(1, peer, &PeerAddr::Inet(addr), a.as_raw_fd(), false);
        std::thread::scope(|s| {
            s.spawn(|| inflight.register(2, peer, &PeerAddr::Inet(addr), b.as_raw_fd(), false));
        });
        assert_eq!(inflight.count(peer), 2);
        // Released on another thread than its own, as a request that moved would be.
        std::thread::scope(|s| {
            s.spawn(|| assert!(!inflight.release(1)));
        });
        assert_eq!(inflight.count(peer), 1);
        assert_eq!(
            inflight.cut(peer),
            1,
            "the other thread's request is cut too"
        );
        assert!(inflight.release(2));
        assert_eq!(inflight.count(peer), 0);
    }
}

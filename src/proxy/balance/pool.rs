//! The pool: an upstream's peers, their shared state, and the calls the data plane makes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::address::{PeerAddr, ResolvedServer};
use super::attempt::{Attempt, Tried};
use super::clock::{self, Secs};
use super::hash::{self, Point};
use super::state::{Ctx, PeerList, PeerState, State};
use super::{ip_hash, least_conn, random, round_robin};
use super::{NoLivePeers, Outcome, PeerId, SelectKey};
use crate::config::{Balance, Upstream};

/// One upstream's peers and their balancing state. Share it between threads behind an `Arc`.
#[derive(Debug)]
pub struct Pool {
    /// Tells this pool's attempts from another's (a pool built by a reload).
    id: u64,
    name: String,
    method: Method,
    peers: Vec<PeerInfo>,
    primary: PeerList,
    backup: Option<PeerList>,
    /// Bits an attempt's tried set needs: the longer of the two lists.
    tried_bits: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
enum Method {
    RoundRobin,
    LeastConn,
    IpHash,
    Hash,
    Consistent(Vec<Point>),
    Random { two: bool, ranges: Vec<u64> },
}

/// What the pool knows about a peer from the config. It never changes while the pool lives.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerInfo {
    pub addr: PeerAddr,
    /// The `server` address as written in the config: the peer's identity for consistent
    /// hashing, shared by all addresses a host name resolved to.
    pub server: String,
    /// Which `server` line of the upstream it came from.
    pub server_index: usize,
    pub weight: u32,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    /// 0: no limit.
    pub max_conns: u32,
    pub backup: bool,
    pub down: bool,
    pub(super) fail_timeout_secs: Secs,
    /// Index of `server` among the pool's distinct server strings.
    pub(super) server_key: u32,
}

/// A peer's state for the admin API.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStatus {
    pub id: PeerId,
    pub addr: PeerAddr,
    pub server: String,
    pub backup: bool,
    pub down: bool,
    /// The active health check's verdict (true when there is no check).
    pub healthy: bool,
    pub weight: u32,
    /// The weight after failures, recovering by one each time the peer is considered.
    pub effective_weight: i64,
    /// Requests holding the peer now.
    pub conns: u64,
    /// Failures since the last success that followed a `fail_timeout`.
    pub fails: u64,
    pub max_fails: u32,
    /// Failed `max_fails` times and still within `fail_timeout`: skipped for now.
    pub unavailable: bool,
}

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

impl Pool {
    /// Builds the pool of `upstream`. `servers` holds the addresses of each `server` line, in
    /// the same order (see [`ResolvedServer::resolve`]); each address becomes a peer. Primary
    /// peers come first in config order, then the backup ones, as nginx lays them out.
    ///
    /// nginx rejects `weight=0` and an upstream without servers when it reads the config; here a
    /// weight of 0 counts as 1 and an empty pool answers [`NoLivePeers`].
    pub fn new(upstream: &Upstream, servers: Vec<ResolvedServer>) -> Pool {
        let mut peers = Vec::new();
        let mut keys: HashMap<&str, u32> = HashMap::new();
        let mut lists = [None, None];
        for (slot, backup) in [false, true].into_iter().enumerate() {
            let start = peers.len();
            let (mut total_weight, mut tries) = (0u64, 0u32);
            for (index, server) in upstream.servers.iter().enumerate() {
                if server.backup != backup {
                    continue;
                }
                let next_key = keys.len() as u32;
                let server_key = *keys.entry(server.address.as_str()).or_insert(next_key);
                let weight = server.weight.max(1);
                for addr in servers.get(index).map_or(&[][..], |r| &r.addrs[..]) {
                    total_weight += u64::from(weight);
                    tries += u32::from(!server.down);
                    peers.push(PeerInfo {
                        addr: addr.clone(),
                        server: server.address.clone(),
                        server_index: index,
                        weight,
                        max_fails: server.max_fails,
                        fail_timeout: server.fail_timeout.get(),
                        max_conns: server.max_conns,
                        backup,
                        down: server.down,
                        fail_timeout_secs: Secs::try_from(server.fail_timeout.get().as_secs())
                            .unwrap_or(Secs::MAX / 4),
                        server_key,
                    });
                }
            }
            lists[slot] = Some(PeerList {
                start,
                len: peers.len() - start,
                total_weight,
                tries,
                single: false,
            });
        }
        let mut primary = lists[0].unwrap_or(EMPTY);
        let backup = lists[1].filter(|b| b.len > 0);
        primary.single = primary.len == 1 && backup.is_none();

        let method = match &upstream.balance {
            Balance::RoundRobin => Method::RoundRobin,
            Balance::LeastConn => Method::LeastConn,
            Balance::IpHash => Method::IpHash,
            Balance::Hash {
                consistent: false, ..
            } => Method::Hash,
            Balance::Hash {
                consistent: true, ..
            } => Method::Consistent(hash::ring(
                peers[..primary.len]
                    .iter()
                    .map(|p| (p.server.as_str(), p.server_key, p.weight)),
            )),
            Balance::Random { two } => Method::Random {
                two: *two,
                ranges: peers[..primary.len]
                    .iter()
                    .scan(0u64, |sum, p| {
                        let start = *sum;
                        *sum += u64::from(p.weight);
                        Some(start)
                    })
                    .collect(),
            },
        };

        let state = State {
            peers: peers.iter().map(|p| PeerState::new(p.weight)).collect(),
            rng: fastrand::Rng::new(),
        };
        Pool {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            name: upstream.name.clone(),
            method,
            tried_bits: primary.len.max(backup.map_or(0, |b| b.len)),
            peers,
            primary,
            backup,
            state: Mutex::new(state),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every peer: primary ones in config order, then backup ones. A [`PeerId`] indexes this.
    pub fn peers(&self) -> &[PeerInfo] {
        &self.peers
    }

    /// None for an id from another pool.
    pub fn peer(&self, id: PeerId) -> Option<&PeerInfo> {
        self.peers.get(id.index())
    }

    /// Every peer with its id (for the health checker and the admin API).
    pub fn iter(&self) -> impl Iterator<Item = (PeerId, &PeerInfo)> {
        self.peers
            .iter()
            .enumerate()
            .map(|(i, p)| (PeerId(i as u32), p))
    }

    /// Starts a request's walk through the pool.
    pub fn begin(&self) -> Attempt {
        Attempt {
            pool_id: self.id,
            on_backup: false,
            tried: Tried::for_peers(self.tried_bits),
            held: None,
            tries: self.primary.tries + self.backup.map_or(0, |b| b.tries),
            hash: if matches!(self.method, Method::IpHash) {
                89
            } else {
                0
            },
            rehash: 0,
            hash_tries: 0,
            point_found: false,
        }
    }

    /// Chooses the peer for the request's next try and counts it as holding a connection.
    ///
    /// Call [`Pool::finish`] for the previous peer first, as nginx does; a peer still held is
    /// released here as a [`Outcome::Success`]. An attempt begun by another pool starts afresh.
    pub fn select(
        &self,
        a: &mut Attempt,
        key: &SelectKey,
        now: Instant,
    ) -> Result<PeerId, NoLivePeers> {
        if a.pool_id != self.id {
            *a = self.begin();
        }
        if a.held.is_some() {
            self.finish(a, Outcome::Success, now);
        }
        let now = clock::secs(now);
        let mut st = self.lock();
        let mut c = Ctx {
            info: &self.peers,
            primary: self.primary,
            backup: self.backup,
            st: &mut st,
            a,
            now,
        };
        let found = match &self.method {
            Method::RoundRobin => round_robin::get(&mut c),
            Method::LeastConn => least_conn::get(&mut c),
            Method::IpHash => {
                let mut buf = [0u8; 16];
                let bytes = ip_hash::client_bytes(key.client, &mut buf);
                ip_hash::get(&mut c, bytes)
            }
            Method::Hash => hash::get(&mut c, key.hash_key),
            Method::Consistent(points) => hash::get_consistent(&mut c, points, key.hash_key),
            Method::Random { two, ranges } => random::get(&mut c, ranges, *two),
        };
        let g = found.ok_or(NoLivePeers)?;
        st.peers[g].conns += 1;
        drop(st);
        a.held = Some(g as u32);
        Ok(PeerId(g as u32))
    }

    /// Gives back the peer the request holds, saying how its use ended (nginx's `free`):
    /// a failure counts towards `max_fails` and lowers the effective weight by
    /// `weight / max_fails`; a success after the peer's chance clears its failures. Either way
    /// the peer's connection count drops and the request has one try fewer.
    ///
    /// Returns true when the failure left the peer disabled for `fail_timeout` (nginx warns
    /// "upstream server temporarily disabled"). Nothing happens without a held peer.
    pub fn finish(&self, a: &mut Attempt, outcome: Outcome, now: Instant) -> bool {
        if a.pool_id != self.id {
            return false;
        }
        let Some(g) = a.held.take().map(|g| g as usize) else {
            return false;
        };
        let single = match (a.on_backup, self.backup) {
            (true, Some(b)) => b.single,
            _ => self.primary.single,
        };
        let Some(info) = self.peers.get(g) else {
            return false;
        };
        let mut st = self.lock();
        let Some(s) = st.peers.get_mut(g) else {
            return false;
        };
        s.conns = s.conns.saturating_sub(1);
        if single {
            // nginx neither counts a lone server's failures nor retries it.
            a.tries = 0;
            return false;
        }
        let mut disabled = false;
        match outcome {
            Outcome::Failed => {
                let now = clock::secs(now);
                s.fails += 1;
                s.accessed = now;
                s.checked = now;
                // max_fails=0 counts the failure but neither weakens nor disables the peer.
                if let Some(penalty) = info.weight.checked_div(info.max_fails) {
                    s.effective_weight -= i64::from(penalty);
                    disabled = s.fails >= u64::from(info.max_fails);
                }
                s.effective_weight = s.effective_weight.max(0);
            }
            Outcome::Success => {
                if s.accessed < s.checked {
                    s.fails = 0;
                }
            }
        }
        a.tries = a.tries.saturating_sub(1);
        disabled
    }

    /// The active health checker's verdict: an unhealthy peer is out of rotation like a `down`
    /// one and keeps its place on the hash rings.
    pub fn set_active_health(&self, peer: PeerId, healthy: bool) {
        if let Some(s) = self.lock().peers.get_mut(peer.index()) {
            s.healthy = healthy;
        }
    }

    /// Chooses `peer` for the request's next try if it may be used now, as if the balancer had
    /// picked it: it must be on the list the request is on (primary, or backup once the request
    /// turned there), not tried by this request, not `down`, healthy, not failed within its
    /// `fail_timeout` and below `max_conns`. The session-affinity entry point: a sticky cookie
    /// names a peer, and when it may not be used the caller falls back to [`Pool::select`].
    ///
    /// On success the peer is marked tried and held exactly as [`Pool::select`] does (release it
    /// with [`Pool::finish`]); otherwise nothing changes and None is returned.
    pub fn select_peer(&self, a: &mut Attempt, peer: PeerId, now: Instant) -> Option<PeerId> {
        if a.pool_id != self.id {
            *a = self.begin();
        }
        if a.tries == 0 {
            return None;
        }
        if a.held.is_some() {
            self.finish(a, Outcome::Success, now);
        }
        let now = clock::secs(now);
        let mut st = self.lock();
        let mut c = Ctx {
            info: &self.peers,
            primary: self.primary,
            backup: self.backup,
            st: &mut st,
            a,
            now,
        };
        let list = c.list();
        let g = peer.index();
        if g < list.start || g >= list.start + list.len {
            return None;
        }
        let i = g - list.start;
        if c.tried(i) || c.unusable(g) {
            return None;
        }
        c.a.tried.insert(i);
        c.note_chance(g);
        c.st.peers[g].conns += 1;
        drop(st);
        a.held = Some(g as u32);
        Some(peer)
    }

    /// Takes a peer out of this pool for good: a reload removed its server, and the requests
    /// still running on this (old) pool, and their retries, must not be sent to it any more.
    pub fn retire(&self, peer: PeerId) {
        if let Some(s) = self.lock().peers.get_mut(peer.index()) {
            s.retired = true;
        }
    }

    /// Every peer's state, for the admin API.
    pub fn snapshot(&self, now: Instant) -> Vec<PeerStatus> {
        let now = clock::secs(now);
        let st = self.lock();
        self.peers
            .iter()
            .zip(&st.peers)
            .enumerate()
            .map(|(i, (info, s))| PeerStatus {
                id: PeerId(i as u32),
                addr: info.addr.clone(),
                server: info.server.clone(),
                backup: info.backup,
                down: info.down,
                healthy: s.healthy,
                weight: info.weight,
                effective_weight: s.effective_weight,
                conns: s.conns,
                fails: s.fails,
                max_fails: info.max_fails,
                unavailable: info.max_fails != 0
                    && s.fails >= u64::from(info.max_fails)
                    && now - s.checked <= info.fail_timeout_secs,
            })
            .collect()
    }

    /// After a reload: servers that stay (same server string, address and backup role) keep
    /// their failures, effective weight and active health verdict, so a server that was failing
    /// is not handed fresh traffic because the config changed. Round robin positions and
    /// connection counts start afresh: requests in flight finish on the old pool.
    ///
    /// Takes `&self` so that a pool already shared (behind the `Arc` of a freshly built runtime)
    /// can take it over; the new pool is locked before the old one, and only here.
    pub fn carry_state_from(&self, old: &Pool) {
        if std::ptr::eq(self, old) {
            return;
        }
        let mut state = self.lock();
        let old_state = old.lock();
        let mut taken = vec![false; old.peers.len()];
        for (info, s) in self.peers.iter().zip(state.peers.iter_mut()) {
            let found = old.peers.iter().enumerate().position(|(j, o)| {
                !taken[j]
                    && o.backup == info.backup
                    && o.server == info.server
                    && o.addr == info.addr
            });
            let (Some(j), Some(o)) = (found, found.and_then(|j| old_state.peers.get(j))) else {
                continue;
            };
            taken[j] = true;
            s.fails = o.fails;
            s.accessed = o.accessed;
            s.checked = o.checked;
            s.healthy = o.healthy;
            s.effective_weight = o.effective_weight.min(i64::from(info.weight));
        }
    }

    /// Makes `random` reproducible (tests, benchmarks).
    pub fn reseed(&self, seed: u64) {
        self.lock().rng = fastrand::Rng::with_seed(seed);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; should it ever, the counters are still sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

const EMPTY: PeerList = PeerList {
    start: 0,
    len: 0,
    total_weight: 0,
    tries: 0,
    single: false,
};

//! Upstream peer selection, rule for rule as nginx 1.22 does it.
//!
//! This is a pure library: no Pingora types, no I/O on the request path. The data plane asks a
//! [`Pool`] for a peer in `upstream_peer`, reports how the attempt ended in `fail_to_connect`,
//! `error_while_proxy` and `logging`, and the pool keeps the per-server state nginx keeps.
//!
//! # The nginx sources it follows
//!
//! | here                | nginx 1.22 (`src/http/`, and the identical `src/stream/` logic)       |
//! |---------------------|------------------------------------------------------------------------|
//! | [`round_robin`]     | `ngx_http_upstream_round_robin.c`: smooth weighted round robin, passive health, backup |
//! | [`least_conn`]      | `modules/ngx_http_upstream_least_conn_module.c`                        |
//! | [`ip_hash`]         | `modules/ngx_http_upstream_ip_hash_module.c`                           |
//! | [`hash`]            | `modules/ngx_http_upstream_hash_module.c`, plain and `consistent`      |
//! | [`random`]          | `modules/ngx_http_upstream_random_module.c`, `random [two]`            |
//!
//! # Using it
//!
//! ```
//! use std::time::Instant;
//! use appliance::config::{Upstream, UpstreamServer};
//! use appliance::proxy::balance::{Outcome, Pool, ResolvedServer, SelectKey};
//!
//! let upstream: Upstream = toml::from_str(r#"
//!     name = "app"
//!     server = [{ address = "10.0.0.1:80", weight = 2 }, { address = "10.0.0.2:80" }]
//! "#).unwrap();
//! let resolved = ResolvedServer::literal(&upstream).unwrap();
//! let pool = Pool::new(&upstream, resolved);
//!
//! let mut attempt = pool.begin();                    // once per request
//! let key = SelectKey::default();                    // client address, hash key
//! let peer = pool.select(&mut attempt, &key, Instant::now()).unwrap();
//! // ... connect to pool.peer(peer).unwrap().addr; on a connect error:
//! pool.finish(&mut attempt, Outcome::Failed, Instant::now());
//! if attempt.tries_left() > 0 {
//!     let _next = pool.select(&mut attempt, &key, Instant::now());
//! }
//! pool.finish(&mut attempt, Outcome::Success, Instant::now());
//! ```
//!
//! The caller owns `proxy_next_upstream`: which errors are retried, `_tries` (apply it with
//! [`Attempt::limit_tries`]) and `_timeout`. The pool owns what nginx's balancers own: which peer,
//! the per-request tried set, the try counter nginx's balancers decrement, and "no live
//! upstreams" ([`NoLivePeers`]), after which nginx answers 502 without trying anything.
//!
//! # Sharing
//!
//! A pool's state sits behind one mutex, held only for the few comparisons a selection takes.
//! Every Pingora worker thread sees the same counters, which is what nginx does with a shared
//! `zone` in the upstream (or with a single worker process). Without a zone each nginx worker
//! balances on its own; the appliance always behaves as if the zone were there.
//!
//! # Time
//!
//! nginx measures `fail_timeout` in whole seconds of its cached clock (`ngx_time()`), so does the
//! pool: an instant is turned into whole seconds on a grid shared by every pool of the process,
//! and `fail_timeout` is truncated to seconds. A peer that failed in second `t` is skipped while
//! `now - t <= fail_timeout`, as in nginx.

mod address;
mod attempt;
mod clock;
pub mod hash;
pub mod ip_hash;
pub mod least_conn;
mod pool;
pub mod random;
pub mod round_robin;
mod state;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;

pub use address::{PeerAddr, ResolvedServer};
pub use attempt::Attempt;
pub use pool::{PeerInfo, PeerStatus, Pool};

/// A peer of one [`Pool`]: its index in [`Pool::peers`] (primary servers first, in config
/// order, then the backup servers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub(crate) u32);

impl PeerId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What a request brings to the choice. nginx evaluates both once per request; pass the same
/// key to every [`Pool::select`] of one [`Attempt`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SelectKey<'a> {
    /// The client's address as the listening socket reports it (`ip_hash`). None stands for a
    /// non-IP client (a unix socket), which nginx hashes as three zero bytes. nginx listens on
    /// IPv6 with `ipv6only=on`, so an IPv4 client always reaches it as IPv4: a dual-stack
    /// listener should pass `to_canonical()` of an IPv4-mapped address.
    pub client: Option<IpAddr>,
    /// The evaluated `hash` key (`hash $request_uri` and the like). Empty makes nginx fall back
    /// to round robin.
    pub hash_key: &'a [u8],
}

impl<'a> SelectKey<'a> {
    pub fn new(client: Option<IpAddr>, hash_key: &'a [u8]) -> Self {
        SelectKey { client, hash_key }
    }
}

/// How the use of a selected peer ended, in nginx's terms (`ngx_http_upstream_next` and
/// `ngx_http_upstream_finalize_request` pass one of these to the balancer's `free`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// State 0 or `NGX_PEER_NEXT`: anything that is not a failure of the server. This includes a
    /// response passed to the next server because of `http_403`/`http_404` and a request the
    /// client abandoned: nginx frees the peer the same way in all of them, and a peer whose
    /// `fail_timeout` had passed is declared live again.
    Success,
    /// `NGX_PEER_FAILED`: the failures `proxy_next_upstream` names (error, timeout,
    /// invalid_header, http_500/502/503/504/429). They count towards `max_fails`.
    Failed,
}

/// Nothing in the pool may be used now: every server is down, failed within its
/// `fail_timeout`, at `max_conns`, or already tried by this request, and so are the backups.
/// nginx logs "no live upstreams" and answers 502 without a further try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoLivePeers;

impl fmt::Display for NoLivePeers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no live upstreams")
    }
}

impl std::error::Error for NoLivePeers {}

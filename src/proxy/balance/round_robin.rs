//! Smooth weighted round robin with backup servers (`ngx_http_upstream_get_round_robin_peer`
//! and `ngx_http_upstream_get_peer`). Every other balancer falls back to it.
//!
//! Each usable peer adds its effective weight to its current weight; the largest current weight
//! wins (the earlier peer on a tie) and gives back the sum of the effective weights added. With
//! weights 5, 1, 1 that yields a a b a c a a, and every run of `total_weight` selections
//! visits each peer exactly `weight` times.
//!
//! When no primary peer is usable the request turns to the backup list, with a fresh tried set,
//! and stays on it. When that fails too there is nothing left: nginx 1.22 does not reset the
//! failed peers (older versions did), it answers "no live upstreams" until a `fail_timeout`
//! passes and a peer gets its next chance.

use super::state::{Ctx, PeerList};

/// A peer index in the pool, or None for "no live upstreams".
pub(super) fn get(c: &mut Ctx) -> Option<usize> {
    let list = c.list();
    let found = if list.single {
        single(c, list)
    } else {
        get_peer(c, list)
    };
    if found.is_some() {
        return found;
    }
    if c.switch_to_backup() {
        return get(c);
    }
    None
}

/// A one-server upstream: nginx checks only `down` and `max_conns`. It never marks the server
/// failed, so there is no failure to wait out, and no tried set either.
fn single(c: &mut Ctx, list: PeerList) -> Option<usize> {
    let g = list.start;
    if list.len == 0 || c.out_of_rotation(g) || c.at_max_conns(g) {
        return None;
    }
    Some(g)
}

/// `ngx_http_upstream_get_peer`: the weighted pick among the usable, untried peers.
fn get_peer(c: &mut Ctx, list: PeerList) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    let mut total = 0i64;
    for i in 0..list.len {
        let g = list.start + i;
        if c.tried(i) || c.unusable(g) {
            continue;
        }
        total += c.weigh(g);
        let wins = match best {
            None => true,
            Some((b, _)) => c.st.peers[g].current_weight > c.st.peers[b].current_weight,
        };
        if wins {
            best = Some((g, i));
        }
    }
    let (g, i) = best?;
    c.a.tried.insert(i);
    c.st.peers[g].current_weight -= total;
    c.note_chance(g);
    Some(g)
}

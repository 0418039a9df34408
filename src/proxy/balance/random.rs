//! `random` and `random two [least_conn]` (`ngx_http_upstream_random_module.c`).
//!
//! A pick is `random() % total_weight` (31 random bits, as glibc's `random()` gives nginx)
//! located in the ranges the weights cover in config order; `down` peers keep their ranges. A
//! pick that is tried, down, failed or full is a miss and the balancer picks again.
//!
//! `random two` makes two distinct usable picks and takes the one with fewer connections for
//! its weight (`a.conns * b.weight > b.conns * a.weight` keeps the first), the second one on a
//! tie. Every pick, the first good one included, counts towards the 20 after which both fall back
//! to round robin; so does a single server.

use super::round_robin;
use super::state::Ctx;

const ROUNDS: u32 = 20;

/// `ngx_http_upstream_peek_random_peer`: `ranges[i]` is the sum of the weights before peer `i`.
fn peek(c: &mut Ctx, ranges: &[u64], total: u64) -> usize {
    let x = u64::from(c.st.rng.u32(..) >> 1) % total;
    // The last range that starts at or below x.
    ranges
        .partition_point(|&start| start <= x)
        .saturating_sub(1)
}

pub(super) fn get(c: &mut Ctx, ranges: &[u64], two: bool) -> Option<usize> {
    let list = c.list();
    // Ranges cover the primary list, which the request has not left unless it already fell
    // back to round robin (see `hash::get_consistent`).
    if c.a.hash_tries > ROUNDS
        || list.single
        || c.a.on_backup
        || list.total_weight == 0
        || ranges.len() != list.len
    {
        return round_robin::get(c);
    }
    let pick = if two {
        pick_two(c, ranges, list.start, list.total_weight)
    } else {
        pick_one(c, ranges, list.start, list.total_weight)
    };
    match pick {
        Pick::Peer(g, p) => {
            c.note_chance(g);
            c.a.tried.insert(p);
            Some(g)
        }
        Pick::GiveUp => round_robin::get(c),
    }
}

enum Pick {
    /// A peer's index in the pool and in the list.
    Peer(usize, usize),
    /// Twenty misses: round robin decides.
    GiveUp,
}

fn pick_one(c: &mut Ctx, ranges: &[u64], start: usize, total: u64) -> Pick {
    loop {
        let i = peek(c, ranges, total);
        let g = start + i;
        if !c.tried(i) && !c.unusable(g) {
            return Pick::Peer(g, i);
        }
        c.a.hash_tries += 1;
        if c.a.hash_tries > ROUNDS {
            return Pick::GiveUp;
        }
    }
}

fn pick_two(c: &mut Ctx, ranges: &[u64], start: usize, total: u64) -> Pick {
    let mut prev: Option<usize> = None;
    loop {
        let i = peek(c, ranges, total);
        let g = start + i;
        let good = Some(i) != prev && !c.tried(i) && !c.unusable(g);
        if good {
            if let Some(p) = prev {
                let first = start + p;
                let (conns, weight) = (c.st.peers[g].conns, u64::from(c.info[g].weight));
                let (p_conns, p_weight) =
                    (c.st.peers[first].conns, u64::from(c.info[first].weight));
                if conns * p_weight > p_conns * weight {
                    return Pick::Peer(first, p);
                }
                return Pick::Peer(g, i);
            }
            prev = Some(i);
        }
        c.a.hash_tries += 1;
        if c.a.hash_tries > ROUNDS {
            return Pick::GiveUp;
        }
    }
}

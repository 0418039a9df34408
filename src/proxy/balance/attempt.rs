//! One request's walk through a pool: nginx's per-request peer data (`rrp`, `iphp`, `hp`, `rp`).

/// The per-request side of balancing. Get one from [`Pool::begin`](super::Pool::begin) for each
/// request (or stream session), keep it for the request's retries, and give every selected peer
/// back with [`Pool::finish`](super::Pool::finish).
#[derive(Clone, Debug)]
pub struct Attempt {
    /// Which pool made it; an attempt handed to another pool (after a reload) starts afresh.
    pub(super) pool_id: u64,
    /// nginx's `rrp->peers == peers->next`: once a request turns to the backup servers it stays
    /// with them for its remaining tries.
    pub(super) on_backup: bool,
    /// Indexes, within the current list, of the peers this request was given.
    pub(super) tried: Tried,
    /// The peer this request holds (nginx's `rrp->current` while a connection is open).
    pub(super) held: Option<u32>,
    /// nginx's `pc->tries`: how many selections the request may still make.
    pub(super) tries: u32,
    /// Hash state that carries over from one try to the next: the ip_hash value (starts at 89),
    /// the sum of plain `hash`, or the point index of `hash consistent`.
    pub(super) hash: u32,
    /// Plain `hash`: how many times the key was hashed (the decimal prefix of the next rehash).
    pub(super) rehash: u32,
    /// The hash and random balancers' own try counter: past 20 they fall back to round robin.
    pub(super) hash_tries: u32,
    /// `hash consistent` finds the key's point once, on the first selection.
    pub(super) point_found: bool,
}

impl Attempt {
    /// Selections the request may still make before nginx gives up (`u->peer.tries`). It starts
    /// at the number of servers not marked `down` (primary plus backup), drops by one with every
    /// [`Pool::finish`](super::Pool::finish), and falls to zero at once for a single-server
    /// upstream, which nginx never retries.
    pub fn tries_left(&self) -> u32 {
        self.tries
    }

    /// `proxy_next_upstream_tries`: 0 means no limit.
    pub fn limit_tries(&mut self, limit: u32) {
        if limit != 0 && self.tries > limit {
            self.tries = limit;
        }
    }

    /// One more try, as nginx grants when a cached keepalive connection failed with an error
    /// (the server may just have closed an idle connection).
    pub fn grant_try(&mut self) {
        self.tries = self.tries.saturating_add(1);
    }

    /// Whether the request has turned to the backup servers.
    pub fn on_backup(&self) -> bool {
        self.on_backup
    }

    /// The peer the request holds now, if any.
    pub fn held(&self) -> Option<super::PeerId> {
        self.held.map(super::PeerId)
    }
}

/// The tried bitmap. Up to 64 peers per list it lives inline, as nginx keeps it in one word, so a
/// request allocates nothing; larger pools spill to the heap once per request.
#[derive(Clone, Debug)]
pub(super) enum Tried {
    Word(u64),
    Words(Box<[u64]>),
}

impl Tried {
    pub(super) fn for_peers(n: usize) -> Tried {
        if n <= 64 {
            Tried::Word(0)
        } else {
            Tried::Words(vec![0; n.div_ceil(64)].into_boxed_slice())
        }
    }

    pub(super) fn contains(&self, i: usize) -> bool {
        match self {
            Tried::Word(w) => i < 64 && w & (1 << i) != 0,
            Tried::Words(ws) => ws.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0),
        }
    }

    pub(super) fn insert(&mut self, i: usize) {
        match self {
            Tried::Word(w) if i < 64 => *w |= 1 << i,
            Tried::Word(_) => {}
            Tried::Words(ws) => {
                if let Some(w) = ws.get_mut(i / 64) {
                    *w |= 1 << (i % 64);
                }
            }
        }
    }

    pub(super) fn clear(&mut self) {
        match self {
            Tried::Word(w) => *w = 0,
            Tried::Words(ws) => ws.iter_mut().for_each(|w| *w = 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tried;

    #[test]
    fn bits_inline_and_spilled() {
        for n in [1, 64, 65, 200] {
            let mut t = Tried::for_peers(n);
            assert_eq!(matches!(t, Tried::Word(_)), n <= 64);
            for i in (0..n).step_by(3) {
                t.insert(i);
            }
            for i in 0..n {
                assert_eq!(t.contains(i), i % 3 == 0, "n={n} i={i}");
            }
            t.clear();
            assert!((0..n).all(|i| !t.contains(i)));
        }
    }
}

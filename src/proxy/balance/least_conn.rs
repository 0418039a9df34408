//! `least_conn` (`ngx_http_upstream_get_least_conn_peer`).
//!
//! The usable, untried peer with the fewest connections for its weight wins, compared without
//! division: `a.conns * b.weight < b.conns * a.weight`. The first such peer in config order is
//! the provisional winner; if another ties with it ("many"), smooth weighted round robin decides
//! among the tied peers from the first one on, and only they move their current weights. With
//! one request at a time every peer ties at zero connections, so the sequence is the round robin
//! one.
//!
//! A single-server upstream is round robin's; when nothing is usable the request turns to the
//! backup servers and is balanced there by least connections as well.

use super::round_robin;
use super::state::Ctx;

pub(super) fn get(c: &mut Ctx) -> Option<usize> {
    let list = c.list();
    if list.single {
        return round_robin::get(c);
    }

    let ratio = |c: &Ctx, g: usize| (c.st.peers[g].conns, u64::from(c.info[g].weight));
    let mut best: Option<(usize, usize)> = None;
    let mut many = false;
    for i in 0..list.len {
        let g = list.start + i;
        if c.tried(i) || c.unusable(g) {
            continue;
        }
        let (conns, weight) = ratio(c, g);
        match best {
            Some((b, _)) => {
                let (b_conns, b_weight) = ratio(c, b);
                if conns * b_weight < b_conns * weight {
                    best = Some((g, i));
                    many = false;
                } else if conns * b_weight == b_conns * weight {
                    many = true;
                }
            }
            None => {
                best = Some((g, i));
                many = false;
            }
        }
    }

    let Some((mut g, mut p)) = best else {
        if c.switch_to_backup() {
            return get(c);
        }
        return None;
    };

    let mut total = 0i64;
    if many {
        let first = p;
        for i in first..list.len {
            let peer = list.start + i;
            if c.tried(i) || c.unusable(peer) {
                continue;
            }
            let (conns, weight) = ratio(c, peer);
            let (b_conns, b_weight) = ratio(c, g);
            if conns * b_weight != b_conns * weight {
                continue;
            }
            total += c.weigh(peer);
            if c.st.peers[peer].current_weight > c.st.peers[g].current_weight {
                g = peer;
                p = i;
            }
        }
    }

    c.st.peers[g].current_weight -= total;
    c.note_chance(g);
    c.a.tried.insert(p);
    Some(g)
}

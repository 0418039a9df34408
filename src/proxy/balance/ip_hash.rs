//! `ip_hash` (`ngx_http_upstream_get_ip_hash_peer`).
//!
//! The bytes hashed are the first three octets of an IPv4 client (so a /24 sticks together) or
//! all sixteen of an IPv6 one; a client without an IP address hashes as three zero bytes.
//! Starting from 89, `hash = (hash * 113 + byte) % 6271` for each byte; `hash % total_weight`
//! then walks the weights in config order, `down` peers keeping their slots. A peer that is
//! tried, down, failed or full makes nginx hash the same bytes again from the current value.
//! The value carries over to the request's next try; after 20 misses, or for a single server,
//! it is round robin.

use std::net::IpAddr;

use super::round_robin;
use super::state::Ctx;

const ROUNDS: u32 = 20;

/// The bytes nginx feeds the hash for a client address.
pub(super) fn client_bytes(client: Option<IpAddr>, buf: &mut [u8; 16]) -> &[u8] {
    match client {
        Some(IpAddr::V4(v4)) => {
            buf[..4].copy_from_slice(&v4.octets());
            &buf[..3]
        }
        Some(IpAddr::V6(v6)) => {
            *buf = v6.octets();
            &buf[..]
        }
        None => {
            buf[..3].fill(0);
            &buf[..3]
        }
    }
}

/// One round of nginx's ip_hash over `bytes` from `hash`.
pub fn step(mut hash: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        hash = ((u64::from(hash) * 113 + u64::from(b)) % 6271) as u32;
    }
    hash
}

/// The index in a list of weights that `value % total` lands on (`total` is their sum).
pub(super) fn walk(weights: impl Iterator<Item = u32>, total: u64, value: u64) -> usize {
    let mut w = value % total;
    let mut p = 0;
    for weight in weights {
        let weight = u64::from(weight);
        if w < weight {
            break;
        }
        w -= weight;
        p += 1;
    }
    p
}

pub(super) fn get(c: &mut Ctx, bytes: &[u8]) -> Option<usize> {
    let list = c.list();
    if c.a.hash_tries > ROUNDS || list.single || list.total_weight == 0 {
        return round_robin::get(c);
    }
    let mut hash = c.a.hash;
    let (g, p) = loop {
        hash = step(hash, bytes);
        let weights = c.info[list.start..list.start + list.len]
            .iter()
            .map(|i| i.weight);
        let p = walk(weights, list.total_weight, u64::from(hash)).min(list.len - 1);
        let g = list.start + p;
        if !c.tried(p) && !c.unusable(g) {
            break (g, p);
        }
        c.a.hash_tries += 1;
        if c.a.hash_tries > ROUNDS {
            return round_robin::get(c);
        }
    };
    c.note_chance(g);
    c.a.tried.insert(p);
    c.a.hash = hash;
    Some(g)
}

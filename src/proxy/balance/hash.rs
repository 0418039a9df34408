//! `hash <key>` and `hash <key> consistent` (`ngx_http_upstream_hash_module.c`).
//!
//! Plain hash, compatible with Cache::Memcached: the request's running value starts at 0 and
//! grows by `(crc32(key) >> 16) & 0x7fff`; the sum modulo the total weight walks the weights in
//! config order, `down` peers keeping their slots. When that peer is tried, down, failed or full
//! the key is hashed again with the number of hashes so far written in decimal in front of it
//! (`"1" key`, `"2" key`, ...) and that too is added to the sum. Both the sum and the count carry
//! over to the request's next try.
//!
//! Consistent hash, compatible with Cache::Memcached::Fast (ketama-like): each server contributes
//! `160 * weight` points, point j being `crc32(host "\0" port le32(point j-1))` (point -1 is 0),
//! from the server string as written in the config (`host` and `port` split at the last colon
//! before trailing digits; `unix:` servers hash their path with an empty port). Points are sorted
//! and duplicates dropped. A key starts at the first point not below `crc32(key)` (wrapping to
//! the first point); if no usable, untried peer has that point's server string, the next point
//! is taken. Peers that share a server string (a name with several addresses) share its points
//! and are weighed against each other by smooth weighted round robin.
//!
//! Both fall back to round robin after 20 misses, for a single server, or for an empty key.

use crc32fast::Hasher;

use super::ip_hash::walk;
use super::round_robin;
use super::state::Ctx;

const ROUNDS: u32 = 20;

/// A point on the consistent-hash ring: a hash value and the server string it belongs to (as an
/// index into the pool's distinct server strings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Point {
    pub hash: u32,
    pub server: u32,
}

/// The `160 * weight` ring points nginx computes for one server string, in the order it computes
/// them (before sorting).
pub fn server_points(server: &str, weight: u32) -> Vec<u32> {
    let (host, port) = split_server(server.as_bytes());
    let mut base = Hasher::new();
    base.update(host);
    base.update(&[0]);
    base.update(port);
    let mut prev = 0u32;
    (0..u64::from(weight) * 160)
        .map(|_| {
            let mut h = base.clone();
            h.update(&prev.to_le_bytes());
            prev = h.finalize();
            prev
        })
        .collect()
}

/// nginx's split of a server string into the host and port it hashes.
fn split_server(s: &[u8]) -> (&[u8], &[u8]) {
    if s.len() >= 5 && s[..5].eq_ignore_ascii_case(b"unix:") {
        return (&s[5..], &[]);
    }
    for j in 0..s.len() {
        let c = s[s.len() - j - 1];
        if c == b':' {
            return (&s[..s.len() - j - 1], &s[s.len() - j..]);
        }
        if !c.is_ascii_digit() {
            break;
        }
    }
    (s, &[])
}

/// The ring of a pool's primary peers: `(server string index, weight)` in config order.
pub(super) fn ring<'a>(servers: impl Iterator<Item = (&'a str, u32, u32)>) -> Vec<Point> {
    let mut points: Vec<Point> = servers
        .flat_map(|(text, key, weight)| {
            server_points(text, weight)
                .into_iter()
                .map(move |hash| Point { hash, server: key })
        })
        .collect();
    // glibc's qsort is a merge sort, so nginx's order among equal hashes is config order; the
    // first of them survives.
    points.sort_by_key(|p| p.hash);
    points.dedup_by_key(|p| p.hash);
    points
}

/// The index of the first point whose hash is not below `hash` (possibly one past the end).
pub(super) fn find_point(points: &[Point], hash: u32) -> usize {
    points.partition_point(|p| p.hash < hash)
}

pub(super) fn get(c: &mut Ctx, key: &[u8]) -> Option<usize> {
    let list = c.list();
    if c.a.hash_tries > ROUNDS || list.single || key.is_empty() || list.total_weight == 0 {
        return round_robin::get(c);
    }
    let (g, p) = loop {
        let mut h = Hasher::new();
        if c.a.rehash > 0 {
            let mut buf = [0u8; 10];
            h.update(decimal(c.a.rehash, &mut buf));
        }
        h.update(key);
        c.a.hash = c.a.hash.wrapping_add((h.finalize() >> 16) & 0x7fff);
        c.a.rehash = c.a.rehash.wrapping_add(1);

        let weights = c.info[list.start..list.start + list.len]
            .iter()
            .map(|i| i.weight);
        let p = walk(weights, list.total_weight, u64::from(c.a.hash)).min(list.len - 1);
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
    Some(g)
}

pub(super) fn get_consistent(c: &mut Ctx, points: &[Point], key: &[u8]) -> Option<usize> {
    if !c.a.point_found {
        c.a.hash = u32::try_from(find_point(points, crc32fast::hash(key))).unwrap_or(u32::MAX);
        c.a.point_found = true;
    }
    let list = c.list();
    // The ring is the primary servers'. A request only reaches the backup list through the
    // round robin fallback, after which nginx stays on round robin; so does this.
    if c.a.hash_tries > ROUNDS
        || list.single
        || key.is_empty()
        || points.is_empty()
        || c.a.on_backup
    {
        return round_robin::get(c);
    }
    let (g, p) = loop {
        let server = points[c.a.hash as usize % points.len()].server;
        let mut best: Option<(usize, usize)> = None;
        let mut total = 0i64;
        for i in 0..list.len {
            let g = list.start + i;
            if c.tried(i) || c.unusable(g) || c.info[g].server_key != server {
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
        if let Some((g, p)) = best {
            c.st.peers[g].current_weight -= total;
            break (g, p);
        }
        c.a.hash = c.a.hash.wrapping_add(1);
        c.a.hash_tries += 1;
        if c.a.hash_tries > ROUNDS {
            return round_robin::get(c);
        }
    };
    c.note_chance(g);
    c.a.tried.insert(p);
    Some(g)
}

/// `n` in decimal, as `ngx_sprintf("%ui")` writes it, without allocating.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_matches_format() {
        for n in [0, 1, 9, 10, 20, 21, 4_294_967_295] {
            let mut buf = [0; 10];
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn server_strings_split_like_nginx() {
        let split = |s: &str| {
            let (h, p) = split_server(s.as_bytes());
            (
                String::from_utf8(h.to_vec()).unwrap(),
                String::from_utf8(p.to_vec()).unwrap(),
            )
        };
        assert_eq!(split("10.0.0.1:8080"), ("10.0.0.1".into(), "8080".into()));
        assert_eq!(split("backend"), ("backend".into(), "".into()));
        assert_eq!(split("[::1]:81"), ("[::1]".into(), "81".into()));
        // No port: nginx does not split IPv6 literals inside brackets.
        assert_eq!(split("[::1]"), ("[::1]".into(), "".into()));
        assert_eq!(split("UNIX:/run/a:1"), ("/run/a:1".into(), "".into()));
        // All digits and no colon: the whole string is the host.
        assert_eq!(split("8080"), ("8080".into(), "".into()));
    }

    #[test]
    fn points_chain_through_the_previous_hash() {
        // Written out from nginx's formula with an independent CRC-32 implementation.
        let pts = server_points("127.0.0.1:8080", 1);
        assert_eq!(pts.len(), 160);
        let mut data = b"127.0.0.1\x008080".to_vec();
        data.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(pts[0], reference_crc32(&data));
        let mut data = b"127.0.0.1\x008080".to_vec();
        data.extend_from_slice(&pts[0].to_le_bytes());
        assert_eq!(pts[1], reference_crc32(&data));
        assert_eq!(server_points("a", 3).len(), 480);
    }

    /// Bitwise CRC-32 (IEEE 802.3, reflected, as `ngx_crc32_long`): a check on the table-driven
    /// crate.
    fn reference_crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn crc_check_value() {
        // The standard check value of CRC-32/ISO-HDLC, which ngx_crc32 computes.
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
        assert_eq!(reference_crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn ring_is_sorted_deduplicated_and_found_with_wrap() {
        let ring = ring([("a:1", 0, 1), ("a:1", 0, 1), ("b:2", 1, 2)].into_iter());
        assert_eq!(ring.len(), 480, "the duplicate server's points collapse");
        assert!(ring.windows(2).all(|w| w[0].hash < w[1].hash));
        assert_eq!(find_point(&ring, 0), 0);
        assert_eq!(find_point(&ring, ring[5].hash), 5);
        assert_eq!(find_point(&ring, ring[5].hash + 1), 6);
        let last = ring[ring.len() - 1].hash;
        assert!(last < u32::MAX);
        assert_eq!(
            find_point(&ring, last + 1),
            ring.len(),
            "past the last point: wraps"
        );
    }
}

//! Sequences pinned from nginx's C code (worked by hand or with an independent implementation of
//! the formula), and properties every balancer must keep.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::config::{Upstream, UpstreamServer};

/// An upstream from nginx-like server lines: `"10.0.0.1:80 weight=5 max_fails=2 backup"`.
pub(super) fn upstream(balance: &str, servers: &[&str]) -> Upstream {
    let mut up: Upstream =
        toml::from_str(&format!("name = \"u\"\nbalance = \"{balance}\"")).unwrap();
    for line in servers {
        let mut words = line.split_whitespace();
        let mut s = UpstreamServer::new(words.next().unwrap());
        for w in words {
            let (k, v) = w.split_once('=').unwrap_or((w, ""));
            match k {
                "weight" => s.weight = v.parse().unwrap(),
                "max_fails" => s.max_fails = v.parse().unwrap(),
                "fail_timeout" => {
                    s.fail_timeout = crate::config::Duration::from_secs(v.parse().unwrap())
                }
                "max_conns" => s.max_conns = v.parse().unwrap(),
                "backup" => s.backup = true,
                "down" => s.down = true,
                _ => panic!("unknown server parameter {w}"),
            }
        }
        up.servers.push(s);
    }
    up
}

pub(super) fn pool(balance: &str, servers: &[&str]) -> Pool {
    let up = upstream(balance, servers);
    let resolved = ResolvedServer::literal(&up).unwrap();
    Pool::new(&up, resolved)
}

/// Peers named a, b, c... in pool order.
fn name(id: PeerId) -> char {
    (b'a' + id.index() as u8) as char
}

/// `n` requests one after another, each served at once by its first peer.
fn run(pool: &Pool, key: &SelectKey, n: usize, now: Instant) -> String {
    (0..n)
        .map(|_| {
            let mut a = pool.begin();
            let p = pool.select(&mut a, key, now).unwrap();
            pool.finish(&mut a, Outcome::Success, now);
            name(p)
        })
        .collect()
}

/// One request whose peers in `failing` fail; the peers it went through, '-' for no live
/// upstreams.
fn request(pool: &Pool, key: &SelectKey, failing: &str, now: Instant) -> String {
    let mut a = pool.begin();
    let mut path = String::new();
    loop {
        match pool.select(&mut a, key, now) {
            Err(NoLivePeers) => {
                path.push('-');
                return path;
            }
            Ok(p) => {
                path.push(name(p));
                if failing.contains(name(p)) {
                    pool.finish(&mut a, Outcome::Failed, now);
                    if a.tries_left() == 0 {
                        return path;
                    }
                } else {
                    pool.finish(&mut a, Outcome::Success, now);
                    return path;
                }
            }
        }
    }
}

fn no_key() -> SelectKey<'static> {
    SelectKey::default()
}

fn client(ip: &str) -> SelectKey<'static> {
    SelectKey::new(Some(ip.parse::<IpAddr>().unwrap()), b"")
}

const A: &str = "10.0.0.1:80";
const B: &str = "10.0.0.2:80";
const C: &str = "10.0.0.3:80";

#[test]
fn smooth_weighted_round_robin_5_1_1() {
    let p = pool("round_robin", &[&format!("{A} weight=5"), B, C]);
    assert_eq!(run(&p, &no_key(), 14, Instant::now()), "aabacaaaabacaa");
}

#[test]
fn round_robin_equal_weights_and_ties_to_the_earlier_peer() {
    let p = pool("round_robin", &[A, B, C]);
    assert_eq!(run(&p, &no_key(), 7, Instant::now()), "abcabca");
    // 2,1: a=2 b=1 -> a (a=-1); a=1 b=2 -> b (b=-1); a=3 b=0 -> a.
    let p = pool("round_robin", &[&format!("{A} weight=2"), B]);
    assert_eq!(run(&p, &no_key(), 6, Instant::now()), "abaaba");
}

// The passive-health sequences below were also run through a small independent simulation of
// ngx_http_upstream_round_robin.c (written in Python straight from the C) to pin them.

#[test]
fn a_failed_peer_is_retried_elsewhere_then_skipped_until_fail_timeout() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let p = pool("round_robin", &[A, &format!("{B} fail_timeout=10"), C]);
    assert_eq!(request(&p, &no_key(), "", at(0)), "a");
    assert_eq!(request(&p, &no_key(), "b", at(0)), "bc");
    // b is out for 10 whole seconds after the failure: a and c share the traffic.
    assert_eq!(run(&p, &no_key(), 4, at(10)), "caca");
    // Second 11: b is considered again and, its effective weight recovering, wins its chance on
    // the third request.
    assert_eq!(run(&p, &no_key(), 3, at(11)), "cac");
    let mut chance = p.begin();
    assert_eq!(name(p.select(&mut chance, &no_key(), at(11)).unwrap()), 'b');
    // While the chance is in flight the others go around b: `checked` is now 11.
    assert_eq!(run(&p, &no_key(), 1, at(11)), "a");
    let status = &p.snapshot(at(11))[1];
    assert_eq!((status.fails, status.unavailable), (1, true));
    // The chance succeeds: b's failures are forgotten.
    p.finish(&mut chance, Outcome::Success, at(11));
    assert_eq!(p.snapshot(at(11))[1].fails, 0);
}

#[test]
fn success_after_the_chance_clears_failures_and_failure_disables_again() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let p = pool(
        "round_robin",
        &[&format!("{A} max_fails=2 fail_timeout=5"), B],
    );
    // a fails whenever chosen. One failure of two allowed: a is still chosen once more.
    let seq: Vec<String> = (0..4).map(|_| request(&p, &no_key(), "a", at(0))).collect();
    assert_eq!(seq, ["ab", "b", "ab", "b"]);
    assert!(p.snapshot(at(0))[0].unavailable);
    assert_eq!(
        run(&p, &no_key(), 3, at(5)),
        "bbb",
        "5 s after second 0 is not past 5 s"
    );
    // Second 6: the chance; it fails, and fails = 3 >= 2 disables a again at once.
    let seq: Vec<String> = (0..3).map(|_| request(&p, &no_key(), "a", at(6))).collect();
    assert_eq!(seq, ["b", "ab", "b"]);
    assert_eq!(p.snapshot(at(6))[0].fails, 3);
    assert_eq!(run(&p, &no_key(), 3, at(11)), "bbb");
    // Second 12: the chance succeeds, failures are forgotten, a is back in rotation.
    assert_eq!(run(&p, &no_key(), 4, at(12)), "baba");
    assert_eq!(p.snapshot(at(12))[0].fails, 0);
    assert!(!p.snapshot(at(12))[0].unavailable);
}

#[test]
fn success_without_a_chance_keeps_failures() {
    // A failure that does not reach max_fails; a success before fail_timeout passes does not
    // clear it (accessed == checked), so the next failure disables the peer.
    let t0 = Instant::now();
    let p = pool("round_robin", &[&format!("{A} max_fails=2"), B]);
    assert_eq!(request(&p, &no_key(), "a", t0), "ab");
    assert_eq!(run(&p, &no_key(), 2, t0), "ba");
    assert_eq!(p.snapshot(t0)[0].fails, 1);
}

#[test]
fn failures_lower_the_effective_weight_which_recovers_by_one_per_look() {
    let t0 = Instant::now();
    let p = pool(
        "round_robin",
        &[
            &format!("{A} weight=4 max_fails=2"),
            &format!("{B} weight=4"),
        ],
    );
    assert_eq!(request(&p, &no_key(), "a", t0), "ab");
    // 4 - 4/2 = 2, then +1 when it is considered in the next selection.
    assert_eq!(p.snapshot(t0)[0].effective_weight, 2);
    run(&p, &no_key(), 1, t0);
    assert_eq!(p.snapshot(t0)[0].effective_weight, 3);
    run(&p, &no_key(), 1, t0);
    assert_eq!(p.snapshot(t0)[0].effective_weight, 4);
    run(&p, &no_key(), 1, t0);
    assert_eq!(p.snapshot(t0)[0].effective_weight, 4, "never above weight");
}

#[test]
fn max_fails_zero_never_disables() {
    let t0 = Instant::now();
    let p = pool("round_robin", &[&format!("{A} max_fails=0"), B]);
    for _ in 0..5 {
        assert_eq!(request(&p, &no_key(), "a", t0).chars().next(), Some('a'));
        request(&p, &no_key(), "", t0);
    }
    let s = &p.snapshot(t0)[0];
    assert_eq!((s.fails, s.unavailable, s.effective_weight), (5, false, 1));
}

#[test]
fn a_single_server_is_never_failed_nor_retried() {
    let t0 = Instant::now();
    let p = pool("round_robin", &[A]);
    let mut a = p.begin();
    assert_eq!(a.tries_left(), 1);
    p.select(&mut a, &no_key(), t0).unwrap();
    p.finish(&mut a, Outcome::Failed, t0);
    assert_eq!(a.tries_left(), 0);
    assert_eq!(p.snapshot(t0)[0].fails, 0);
    for _ in 0..3 {
        assert_eq!(request(&p, &no_key(), "a", t0), "a");
    }
    // A hash balancer over one server is round robin over one server.
    let p = pool("hash $arg_k", &[A]);
    assert_eq!(request(&p, &SelectKey::new(None, b"k"), "a", t0), "a");
    assert_eq!(p.snapshot(t0)[0].fails, 0);
}

#[test]
fn a_single_server_down_or_full_has_no_live_upstream() {
    let t0 = Instant::now();
    let p = pool("round_robin", &[&format!("{A} down")]);
    assert_eq!(request(&p, &no_key(), "", t0), "-");
    let p = pool("least_conn", &[&format!("{A} max_conns=1")]);
    let mut hold = p.begin();
    p.select(&mut hold, &no_key(), t0).unwrap();
    assert_eq!(request(&p, &no_key(), "", t0), "-");
    p.finish(&mut hold, Outcome::Success, t0);
    assert_eq!(request(&p, &no_key(), "", t0), "a");
}

#[test]
fn backup_servers_only_when_no_primary_is_usable() {
    let t0 = Instant::now();
    let p = pool(
        "round_robin",
        &[A, B, &format!("{C} backup"), "10.0.0.4:80 backup"],
    );
    assert_eq!(run(&p, &no_key(), 4, t0), "abab");
    // Both primaries fail in one request: it turns to the backups (c, then d).
    assert_eq!(request(&p, &no_key(), "ab", t0), "abc");
    assert_eq!(
        run(&p, &no_key(), 3, t0),
        "dcd",
        "backups have their own rotation"
    );
    // Two primaries + two backups, none down: four tries.
    assert_eq!(p.begin().tries_left(), 4);
    // The backups fail too: tries are left, but nothing is live.
    assert_eq!(request(&p, &no_key(), "cd", t0), "cd-");
    assert_eq!(request(&p, &no_key(), "", t0), "-");
    // The primaries' timeout passes: primaries again. Both failed with effective weight 0 and
    // b's current weight is ahead; b wins its chance and, having succeeded, stays in.
    assert_eq!(run(&p, &no_key(), 2, t0 + Duration::from_secs(11)), "bb");
}

#[test]
fn a_request_on_the_backups_stays_there() {
    let t0 = Instant::now();
    let p = pool(
        "round_robin",
        &[
            &format!("{A} max_conns=1"),
            &format!("{B} backup"),
            &format!("{C} backup"),
        ],
    );
    let mut hold = p.begin();
    assert_eq!(name(p.select(&mut hold, &no_key(), t0).unwrap()), 'a');
    let mut a = p.begin();
    assert_eq!(name(p.select(&mut a, &no_key(), t0).unwrap()), 'b');
    assert!(a.on_backup());
    // a frees up, but this request's next try is still a backup.
    p.finish(&mut hold, Outcome::Success, t0);
    p.finish(&mut a, Outcome::Failed, t0);
    assert_eq!(name(p.select(&mut a, &no_key(), t0).unwrap()), 'c');
    p.finish(&mut a, Outcome::Success, t0);
}

#[test]
fn when_everything_failed_nothing_is_reset() {
    let t0 = Instant::now();
    let p = pool("round_robin", &[A, B]);
    assert_eq!(request(&p, &no_key(), "ab", t0), "ab");
    for s in 0..=10 {
        assert_eq!(request(&p, &no_key(), "", t0 + Duration::from_secs(s)), "-");
    }
    assert!(p.snapshot(t0).iter().all(|s| s.fails == 1 && s.unavailable));
    assert_eq!(
        request(&p, &no_key(), "", t0 + Duration::from_secs(11)),
        "b"
    );
}

#[test]
fn max_conns_counts_requests_holding_the_peer() {
    let t0 = Instant::now();
    let p = pool("round_robin", &[&format!("{A} max_conns=2"), B]);
    let mut held = Vec::new();
    let mut seq = String::new();
    for _ in 0..5 {
        let mut a = p.begin();
        seq.push(name(p.select(&mut a, &no_key(), t0).unwrap()));
        held.push(a);
    }
    assert_eq!(seq, "ababb");
    assert_eq!(p.snapshot(t0)[0].conns, 2);
    for mut a in held {
        p.finish(&mut a, Outcome::Success, t0);
    }
    assert!(p.snapshot(t0).iter().all(|s| s.conns == 0));
}

#[test]
fn down_and_unhealthy_peers_are_out_of_rotation() {
    let t0 = Instant::now();
    let p = pool("round_robin", &[A, &format!("{B} down"), C]);
    assert_eq!(run(&p, &no_key(), 4, t0), "acac");
    assert_eq!(
        p.begin().tries_left(),
        2,
        "down servers do not count as tries"
    );
    p.set_active_health(PeerId(2), false);
    assert_eq!(run(&p, &no_key(), 2, t0), "aa");
    p.set_active_health(PeerId(2), true);
    assert_eq!(run(&p, &no_key(), 2, t0), "ac");
}

#[test]
fn least_conn_prefers_fewer_connections_per_weight() {
    let t0 = Instant::now();
    let p = pool("least_conn", &[&format!("{A} weight=3"), B]);
    // Sequential requests: all tie at zero, round robin over weights 3,1.
    assert_eq!(run(&p, &no_key(), 8, t0), "aabaaaba");
    // a holds one connection: 1*1 < 0*3 is false, 0*3 < 1*1 is true: b.
    let mut hold = p.begin();
    let first = p.select(&mut hold, &no_key(), t0).unwrap();
    let mut second = p.begin();
    let other = p.select(&mut second, &no_key(), t0).unwrap();
    assert_ne!(first, other);
    // Both hold one: a (weight 3) has fewer per weight: 1*1 < 1*3.
    let mut third = p.begin();
    assert_eq!(name(p.select(&mut third, &no_key(), t0).unwrap()), 'a');
    for mut x in [hold, second, third] {
        p.finish(&mut x, Outcome::Success, t0);
    }
}

#[test]
fn least_conn_ties_go_round_robin_among_the_tied_only() {
    let t0 = Instant::now();
    let p = pool("least_conn", &[A, B, C]);
    // a busy: b and c tie; round robin between them only (a's current weight stays put).
    let mut hold = p.begin();
    assert_eq!(name(p.select(&mut hold, &no_key(), t0).unwrap()), 'a');
    assert_eq!(run(&p, &no_key(), 4, t0), "bcbc");
    p.finish(&mut hold, Outcome::Success, t0);
    // Now all tie again. Current weights a=-2 (it won the first three-way round), b=0, c=0:
    // b (1 beats -1), then c, then a, then b.
    assert_eq!(run(&p, &no_key(), 4, t0), "bcab");
}

#[test]
fn least_conn_turns_to_backups() {
    let t0 = Instant::now();
    let p = pool(
        "least_conn",
        &[A, &format!("{B} backup"), &format!("{C} backup")],
    );
    assert_eq!(request(&p, &no_key(), "a", t0), "ab");
    // The backups balance by least connections too.
    let mut hold = p.begin();
    assert_eq!(name(p.select(&mut hold, &no_key(), t0).unwrap()), 'c');
    assert_eq!(request(&p, &no_key(), "", t0), "b");
    p.finish(&mut hold, Outcome::Success, t0);
}

#[test]
fn ip_hash_values_from_the_formula() {
    let t0 = Instant::now();
    assert_eq!(ip_hash::step(89, &[192, 168, 1]), 154);
    assert_eq!(ip_hash::step(154, &[192, 168, 1]), 5654);
    let p = pool("ip_hash", &[A, B, C]);
    // 154 % 3 = 1: b, for every client of 192.168.1.0/24.
    assert_eq!(run(&p, &client("192.168.1.1"), 3, t0), "bbb");
    assert_eq!(run(&p, &client("192.168.1.200"), 1, t0), "b");
    // IPv6 hashes all 16 bytes: ::1 -> 5945, % 3 = 2.
    assert_eq!(run(&p, &client("::1"), 1, t0), "c");
    // No IP (unix socket client): three zero bytes.
    let h = ip_hash::step(89, &[0, 0, 0]);
    assert_eq!(run(&p, &no_key(), 1, t0), name(PeerId(h % 3)).to_string());
    // b fails: rehash from 154 -> 5654 % 3 = 2: c.
    assert_eq!(request(&p, &client("192.168.1.1"), "b", t0), "bc");
}

#[test]
fn ip_hash_walks_weights_and_down_peers_keep_their_slots() {
    let t0 = Instant::now();
    // 10.1.2 -> 2680; 2680 % 6 = 4: past a's 3, inside b's 2.
    assert_eq!(ip_hash::step(89, &[10, 1, 2]), 2680);
    let p = pool(
        "ip_hash",
        &[&format!("{A} weight=3"), &format!("{B} weight=2"), C],
    );
    assert_eq!(run(&p, &client("10.1.2.3"), 1, t0), "b");
    // b down: its slot stays, the same bytes are hashed again from 2680.
    let p = pool(
        "ip_hash",
        &[&format!("{A} weight=3"), &format!("{B} weight=2 down"), C],
    );
    // 4363 % 6 = 1: a.
    assert_eq!(ip_hash::step(2680, &[10, 1, 2]), 4363);
    assert_eq!(run(&p, &client("10.1.2.3"), 1, t0), "a");
}

#[test]
fn plain_hash_values_and_rehash() {
    let t0 = Instant::now();
    // zlib.crc32(b"abc") >> 16 & 0x7fff = 13604; 13604 % 3 = 2: c.
    assert_eq!((crc32fast::hash(b"abc") >> 16) & 0x7fff, 13604);
    let p = pool("hash $arg_k", &[A, B, C]);
    let key = SelectKey::new(None, b"abc");
    assert_eq!(run(&p, &key, 3, t0), "ccc");
    // c fails: 13604 + crc32("1abc") part = 22746, % 3 = 0: a.
    assert_eq!(request(&p, &key, "c", t0), "ca");
    // a too: + crc32("2abc") part = 35293, % 3 = 1: b.
    let q = pool("hash $arg_k", &[A, B, C]);
    assert_eq!(request(&q, &key, "ca", t0), "cab");
    // An empty key is round robin.
    let q = pool("hash $arg_k", &[A, B, C]);
    assert_eq!(run(&q, &SelectKey::new(None, b""), 4, t0), "abca");
}

#[test]
fn consistent_hash_follows_the_ring() {
    let t0 = Instant::now();
    // First point of "10.0.0.1:80": crc32("10.0.0.1\0" "80" le32(0)), computed with zlib.
    assert_eq!(hash::server_points(A, 1)[0], 2_729_270_614);
    assert_eq!(hash::server_points(A, 1)[1], 199_143_595);
    // Owners and the next other server along the ring, computed with zlib over the same
    // 480 points.
    for (key, owner, next) in [
        ("a", 'b', 'a'),
        ("b", 'c', 'a'),
        ("c", 'a', 'c'),
        ("d", 'b', 'c'),
        ("e", 'c', 'a'),
        ("/index.html", 'a', 'c'),
        ("user42", 'c', 'a'),
    ] {
        let p = pool("hash $arg_k consistent", &[A, B, C]);
        let k = SelectKey::new(None, key.as_bytes());
        assert_eq!(run(&p, &k, 1, t0), owner.to_string(), "key {key}");
        let path = request(&p, &k, &owner.to_string(), t0);
        assert_eq!(
            path,
            format!("{owner}{next}"),
            "key {key} when its owner fails"
        );
        // The owner is failed now: the next server serves the key at once.
        assert_eq!(run(&p, &k, 1, t0), next.to_string(), "key {key}");
    }
}

#[test]
fn consistent_hash_peers_of_one_server_string_share_its_points() {
    let t0 = Instant::now();
    let up = upstream("hash $arg_k consistent", &["app:80", "other:80"]);
    let addr = |s: &str| PeerAddr::Inet(s.parse().unwrap());
    let resolved = vec![
        ResolvedServer::new(vec![addr("10.0.0.1:80"), addr("10.0.0.2:80")]),
        ResolvedServer::new(vec![addr("10.0.0.3:80")]),
    ];
    let p = Pool::new(&up, resolved);
    assert_eq!(p.peers().len(), 3);
    assert_eq!(p.peers()[1].server, "app:80");
    // Find a key owned by "app:80": its two addresses alternate by round robin.
    let key = (0..100)
        .map(|i| format!("k{i}"))
        .find(|k| run(&p, &SelectKey::new(None, k.as_bytes()), 1, t0) != "c")
        .unwrap();
    let seq = run(&p, &SelectKey::new(None, key.as_bytes()), 4, t0);
    assert!(seq == "abab" || seq == "baba", "{seq}");
}

#[test]
fn hash_balancers_fall_back_to_round_robin_after_20_misses() {
    let t0 = Instant::now();
    // Only d is usable among 40 equal peers: the hash lands on d rarely; within 20 misses or
    // through the fallback, d is found every time.
    let mut servers: Vec<String> = (1..=40).map(|i| format!("10.0.1.{i}:80 down")).collect();
    servers[3] = "10.0.1.4:80".into();
    let refs: Vec<&str> = servers.iter().map(|s| s.as_str()).collect();
    for balance in [
        "ip_hash",
        "hash $k",
        "hash $k consistent",
        "random",
        "random two",
    ] {
        let p = pool(balance, &refs);
        for i in 0..30u8 {
            let ip = format!("10.{i}.{i}.1");
            let key = format!("key{i}");
            let k = SelectKey::new(Some(ip.parse().unwrap()), key.as_bytes());
            assert_eq!(run(&p, &k, 1, t0), "d", "{balance}");
        }
    }
}

#[test]
fn random_follows_the_weights() {
    let t0 = Instant::now();
    let p = pool(
        "random",
        &[&format!("{A} weight=3"), B, &format!("{C} down")],
    );
    p.reseed(7);
    let seq = run(&p, &no_key(), 4000, t0);
    let a = seq.matches('a').count();
    assert_eq!(seq.matches('c').count(), 0);
    // Expect 3000 of 4000; six standard deviations is about 165.
    assert!((2835..=3165).contains(&a), "a chosen {a} times of 4000");
}

#[test]
fn random_two_takes_the_less_loaded_and_the_second_on_a_tie() {
    let t0 = Instant::now();
    // Weights 3 and 1, no load: always a tie, and the second pick wins. The first pick is a
    // three times in four, so b (then second) wins three times in four.
    let p = pool("random two least_conn", &[&format!("{A} weight=3"), B]);
    p.reseed(11);
    let seq = run(&p, &no_key(), 4000, t0);
    let b = seq.matches('b').count();
    assert!((2835..=3165).contains(&b), "b chosen {b} times of 4000");
    // a holds a connection: 1*1 > 0*3, so b, whichever order the two picks came in.
    let mut hold = p.begin();
    while p.select(&mut hold, &no_key(), t0).unwrap() != PeerId(0) {
        p.finish(&mut hold, Outcome::Success, t0);
        hold = p.begin();
    }
    assert_eq!(run(&p, &no_key(), 50, t0), "b".repeat(50));
    p.finish(&mut hold, Outcome::Success, t0);
}

#[test]
fn tries_follow_nginx_and_proxy_next_upstream_tries_limits_them() {
    let t0 = Instant::now();
    let p = pool(
        "round_robin",
        &[A, B, C, &format!("{C} down"), &format!("{A} backup")],
    );
    let mut a = p.begin();
    assert_eq!(a.tries_left(), 4);
    a.limit_tries(2);
    assert_eq!(a.tries_left(), 2);
    a.limit_tries(0);
    assert_eq!(a.tries_left(), 2, "0 is no limit");
    p.select(&mut a, &no_key(), t0).unwrap();
    p.finish(&mut a, Outcome::Failed, t0);
    assert_eq!(a.tries_left(), 1);
    a.grant_try();
    assert_eq!(a.tries_left(), 2);
}

#[test]
fn a_reload_keeps_the_failures_of_servers_that_stay() {
    let t0 = Instant::now();
    let old = pool("round_robin", &[A, B, C]);
    assert_eq!(request(&old, &no_key(), "a", t0), "ab");
    old.set_active_health(PeerId(2), false);
    let new = pool("round_robin", &["10.0.0.9:80", A, &format!("{C} weight=2")]);
    new.carry_state_from(&old);
    let s = new.snapshot(t0);
    assert_eq!((s[0].fails, s[1].fails, s[1].unavailable), (0, 1, true));
    assert!(!s[2].healthy);
    assert_eq!(run(&new, &no_key(), 2, t0), "aa");
}

#[test]
fn an_attempt_from_another_pool_starts_afresh() {
    let t0 = Instant::now();
    let one = pool("round_robin", &[A, B]);
    let two = pool("round_robin", &[C]);
    let mut a = one.begin();
    one.select(&mut a, &no_key(), t0).unwrap();
    // Finishing on the wrong pool does nothing; selecting there restarts the attempt.
    assert!(!two.finish(&mut a, Outcome::Failed, t0));
    assert_eq!(two.select(&mut a, &no_key(), t0), Ok(PeerId(0)));
    assert_eq!(
        one.snapshot(t0)[0].conns,
        1,
        "the first pool's peer was left held"
    );
    assert_eq!(one.snapshot(t0)[0].fails, 0);
}

#[test]
fn more_than_64_peers_each_tried_once() {
    let t0 = Instant::now();
    let servers: Vec<String> = (0..100)
        .map(|i| format!("10.0.{}.{}:80", i / 200, i % 200 + 1))
        .collect();
    let refs: Vec<&str> = servers.iter().map(|s| s.as_str()).collect();
    let p = pool("round_robin", &refs);
    let mut a = p.begin();
    let mut seen = std::collections::HashSet::new();
    while a.tries_left() > 0 {
        let id = p.select(&mut a, &no_key(), t0).unwrap();
        assert!(seen.insert(id), "{id:?} twice");
        p.finish(&mut a, Outcome::Failed, t0);
    }
    assert_eq!(seen.len(), 100);
    assert_eq!(p.select(&mut a, &no_key(), t0), Err(NoLivePeers));
}

#[test]
fn an_empty_pool_has_no_live_peers() {
    let t0 = Instant::now();
    for balance in [
        "round_robin",
        "least_conn",
        "ip_hash",
        "hash $k",
        "hash $k consistent",
        "random",
        "random two",
    ] {
        let p = pool(balance, &[]);
        let mut a = p.begin();
        assert_eq!(
            p.select(&mut a, &SelectKey::new(None, b"x"), t0),
            Err(NoLivePeers)
        );
    }
}

#[test]
fn pools_are_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Pool>();
    let p = pool("round_robin", &[A, B]);
    let ids: Vec<PeerId> = p.iter().map(|(id, _)| id).collect();
    assert_eq!(ids, [PeerId(0), PeerId(1)]);
}

#[test]
fn threads_sharing_a_pool_keep_counts_exact() {
    let p = std::sync::Arc::new(pool(
        "least_conn",
        &[&format!("{A} max_conns=3"), &format!("{B} weight=2"), C],
    ));
    let now = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let p = std::sync::Arc::clone(&p);
            std::thread::spawn(move || {
                // Requests per peer, and "no live upstreams" (the failures disable peers for
                // good, the clock standing still) in the last slot.
                let mut served = [0u32; 4];
                for i in 0..5_000 {
                    let mut a = p.begin();
                    let Ok(id) = p.select(&mut a, &SelectKey::default(), now) else {
                        served[3] += 1;
                        continue;
                    };
                    served[id.index()] += 1;
                    let failed = (i + t) % 97 == 0;
                    let outcome = if failed {
                        Outcome::Failed
                    } else {
                        Outcome::Success
                    };
                    p.finish(&mut a, outcome, now);
                }
                served
            })
        })
        .collect();
    let total: u32 = threads
        .into_iter()
        .map(|t| t.join().unwrap().iter().sum::<u32>())
        .sum();
    assert_eq!(total, 20_000);
    assert!(p.snapshot(now).iter().all(|s| s.conns == 0));
}

#[test]
fn select_peer_takes_the_named_peer_only_when_the_balancer_could() {
    let t0 = Instant::now();
    let p = pool(
        "round_robin",
        &[
            A,
            &format!("{B} max_conns=1"),
            &format!("{C} down"),
            "10.0.0.4:80",
            &format!("{A} backup"),
        ],
    );
    // Usable: held like a selection, counted in conns, and marked tried.
    let mut a = p.begin();
    assert_eq!(p.select_peer(&mut a, PeerId(1), t0), Some(PeerId(1)));
    assert_eq!(a.held(), Some(PeerId(1)));
    assert_eq!(p.snapshot(t0)[1].conns, 1);
    // At max_conns for another request; down; unhealthy; a backup while on the primary list.
    let mut other = p.begin();
    assert_eq!(p.select_peer(&mut other, PeerId(1), t0), None);
    assert_eq!(p.select_peer(&mut other, PeerId(2), t0), None);
    p.set_active_health(PeerId(3), false);
    assert_eq!(p.select_peer(&mut other, PeerId(3), t0), None);
    assert_eq!(p.select_peer(&mut other, PeerId(4), t0), None);
    assert_eq!(other.held(), None, "a refusal changes nothing");
    // The request's own retry never goes back to a peer it tried.
    p.finish(&mut a, Outcome::Failed, t0);
    assert_eq!(p.select_peer(&mut a, PeerId(1), t0), None);
    assert_eq!(name(p.select(&mut a, &no_key(), t0).unwrap()), 'a');
    p.finish(&mut a, Outcome::Success, t0);
    // Failed within fail_timeout (max_fails=1): refused until the timeout passes.
    let mut c = p.begin();
    assert_eq!(p.select_peer(&mut c, PeerId(1), t0), None);
    let later = t0 + Duration::from_secs(11);
    assert_eq!(p.select_peer(&mut c, PeerId(1), later), Some(PeerId(1)));
    p.finish(&mut c, Outcome::Success, later);
    // Retired by a reload: never again.
    p.retire(PeerId(0));
    let mut d = p.begin();
    assert_eq!(p.select_peer(&mut d, PeerId(0), later), None);
    assert_eq!(run(&p, &no_key(), 3, later), "bbb");
}

//! Properties every balancer keeps, over random pools and random sequences of requests,
//! failures, health verdicts and clock steps.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::tests::pool;
use super::*;

const METHODS: [&str; 7] = [
    "round_robin",
    "least_conn",
    "ip_hash",
    "hash $k",
    "hash $k consistent",
    "random",
    "random two least_conn",
];

#[derive(Clone, Debug)]
struct ServerSpec {
    weight: u32,
    max_fails: u32,
    fail_timeout: u64,
    max_conns: u32,
    down: bool,
    backup: bool,
}

fn server_spec(backup_allowed: bool) -> impl Strategy<Value = ServerSpec> {
    (
        1u32..=5,
        0u32..=3,
        0u64..=4,
        prop_oneof![3 => Just(0u32), 1 => 1u32..=2],
        prop::bool::weighted(0.15),
        prop::bool::weighted(if backup_allowed { 0.3 } else { 0.0 }),
    )
        .prop_map(
            |(weight, max_fails, fail_timeout, max_conns, down, backup)| ServerSpec {
                weight,
                max_fails,
                fail_timeout,
                max_conns,
                down,
                backup,
            },
        )
}

fn build(method: usize, servers: &[ServerSpec]) -> Pool {
    let lines: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut l = format!(
                "10.0.0.{}:80 weight={} max_fails={} fail_timeout={} max_conns={}",
                i + 1,
                s.weight,
                s.max_fails,
                s.fail_timeout,
                s.max_conns
            );
            if s.down {
                l.push_str(" down");
            }
            if s.backup {
                l.push_str(" backup");
            }
            l
        })
        .collect();
    let refs: Vec<&str> = lines.iter().map(|s| s.as_str()).collect();
    pool(METHODS[method], &refs)
}

#[derive(Clone, Debug)]
enum Op {
    /// Select for attempt slot `slot` (finishing its held peer first, as nginx does).
    Select {
        slot: usize,
        client: u8,
        key: u8,
    },
    Finish {
        slot: usize,
        failed: bool,
    },
    /// A new request in the slot (its held peer, if any, finishes first).
    Restart {
        slot: usize,
        failed: bool,
    },
    Health {
        peer: usize,
        healthy: bool,
    },
    Advance {
        secs: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..4, any::<u8>(), 0u8..4).prop_map(|(slot, client, key)| Op::Select { slot, client, key }),
        3 => (0usize..4, any::<bool>()).prop_map(|(slot, failed)| Op::Finish { slot, failed }),
        2 => (0usize..4, any::<bool>()).prop_map(|(slot, failed)| Op::Restart { slot, failed }),
        1 => (0usize..10, any::<bool>()).prop_map(|(peer, healthy)| Op::Health { peer, healthy }),
        1 => (0u64..4).prop_map(|secs| Op::Advance { secs }),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, Vec<ServerSpec>, Vec<Op>)> {
    (0usize..METHODS.len()).prop_flat_map(|m| {
        let backup_allowed = m < 2;
        (
            Just(m),
            prop::collection::vec(server_spec(backup_allowed), 0..9),
            prop::collection::vec(op(), 1..120),
        )
    })
}

/// The peers a selection may return, as nginx's rules define them, or None for
/// "no live upstreams".
fn allowed(pool: &Pool, a: &Attempt, tried: &HashSet<PeerId>, now: Instant) -> Option<Vec<PeerId>> {
    let status = pool.snapshot(now);
    let primary: Vec<&PeerStatus> = status.iter().filter(|s| !s.backup).collect();
    let backup: Vec<&PeerStatus> = status.iter().filter(|s| s.backup).collect();
    let at_max = |s: &PeerStatus| {
        let max = pool.peer(s.id).map_or(0, |i| i.max_conns);
        max != 0 && s.conns >= u64::from(max)
    };
    let single = primary.len() == 1 && backup.is_empty();
    if single {
        let s = primary[0];
        return (!s.down && s.healthy && !at_max(s)).then(|| vec![s.id]);
    }
    let usable = |list: &[&PeerStatus]| -> Vec<PeerId> {
        list.iter()
            .filter(|s| {
                !s.down && s.healthy && !s.unavailable && !at_max(s) && !tried.contains(&s.id)
            })
            .map(|s| s.id)
            .collect()
    };
    if !a.on_backup() {
        let p = usable(&primary);
        if !p.is_empty() {
            return Some(p);
        }
    }
    let b = usable(&backup);
    (!b.is_empty()).then_some(b)
}

struct Slot {
    attempt: Attempt,
    tried: HashSet<PeerId>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// Never a down, unhealthy, failed, full or tried peer while a usable one exists; backups only
    /// when no primary is usable; "no live upstreams" only when nothing is; connection counts
    /// always equal the requests holding each peer; and no panic on the way.
    #[test]
    fn selections_obey_nginx_rules((method, servers, ops) in scenario()) {
        let pool = build(method, &servers);
        pool.reseed(1);
        let t0 = Instant::now();
        let mut now = t0;
        let mut slots: Vec<Slot> = (0..4)
            .map(|_| Slot { attempt: pool.begin(), tried: HashSet::new() })
            .collect();
        for op in ops {
            match op {
                Op::Select { slot, client, key } => {
                    let s = &mut slots[slot];
                    pool.finish(&mut s.attempt, Outcome::Success, now);
                    let expected = allowed(&pool, &s.attempt, &s.tried, now);
                    let ip = IpAddr::V4(Ipv4Addr::new(10, client, client / 3, 1));
                    let keybuf = [b'k', key];
                    let k = SelectKey::new(Some(ip), &keybuf[..usize::from(key > 0) + 1]);
                    let got = pool.select(&mut s.attempt, &k, now);
                    match (&expected, got) {
                        (None, Err(NoLivePeers)) => {}
                        (Some(ok), Ok(id)) => {
                            prop_assert!(ok.contains(&id), "{} chose {:?}, allowed {:?}", METHODS[method], id, ok);
                            s.tried.insert(id);
                        }
                        (e, g) => prop_assert!(false, "{} expected {:?}, got {:?}", METHODS[method], e, g),
                    }
                }
                Op::Finish { slot, failed } => {
                    let outcome = if failed { Outcome::Failed } else { Outcome::Success };
                    pool.finish(&mut slots[slot].attempt, outcome, now);
                }
                Op::Restart { slot, failed } => {
                    let outcome = if failed { Outcome::Failed } else { Outcome::Success };
                    pool.finish(&mut slots[slot].attempt, outcome, now);
                    slots[slot] = Slot { attempt: pool.begin(), tried: HashSet::new() };
                }
                Op::Health { peer, healthy } => pool.set_active_health(PeerId(peer as u32), healthy),
                Op::Advance { secs } => now += Duration::from_secs(secs),
            }
            for st in pool.snapshot(now) {
                let holders = slots.iter().filter(|s| s.attempt.held() == Some(st.id)).count();
                prop_assert_eq!(st.conns, holders as u64);
                prop_assert!(st.effective_weight >= 0 && st.effective_weight <= i64::from(st.weight));
            }
        }
    }

    /// Smooth weighted round robin (and least_conn with one request at a time, where every peer
    /// ties) visits each peer exactly `weight` times in any `total_weight` selections from the
    /// start.
    #[test]
    fn round_robin_distribution_is_exactly_the_weights(
        weights in prop::collection::vec(1u32..=7, 1..9),
        least_conn in any::<bool>(),
        rounds in 1usize..4,
    ) {
        let lines: Vec<String> = weights.iter().enumerate()
            .map(|(i, w)| format!("10.0.0.{}:80 weight={w}", i + 1)).collect();
        let refs: Vec<&str> = lines.iter().map(|s| s.as_str()).collect();
        let pool = pool(if least_conn { "least_conn" } else { "round_robin" }, &refs);
        let total: u32 = weights.iter().sum();
        let now = Instant::now();
        for _ in 0..rounds {
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..total {
                let mut a = pool.begin();
                let id = pool.select(&mut a, &SelectKey::default(), now).unwrap();
                counts[id.index()] += 1;
                pool.finish(&mut a, Outcome::Success, now);
            }
            prop_assert_eq!(&counts, &weights);
        }
    }
}

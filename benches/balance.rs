//! How much a balancing decision costs: one request's `begin` + `select` + `finish`, per method,
//! for pools of 3 and 50 peers, single-threaded and with two threads sharing the pool.
//! Also counts heap allocations per request, which must be zero for pools up to 64 peers.
//!
//! `cargo bench --bench balance` (prints a table; there is no pass/fail).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use appliance::config::{Upstream, UpstreamServer};
use appliance::proxy::balance::{Outcome, Pool, ResolvedServer, SelectKey};

/// Counts allocations so the table can show the hot path makes none.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REQUESTS: u64 = 1_000_000;

fn pool(balance: &str, peers: usize) -> Pool {
    let mut up: Upstream =
        toml::from_str(&format!("name = \"bench\"\nbalance = \"{balance}\"")).expect("model");
    for i in 0..peers {
        let mut s = UpstreamServer::new(format!("10.0.{}.{}:8080", i / 250, i % 250 + 1));
        s.weight = 1 + (i % 3) as u32;
        up.servers.push(s);
    }
    let resolved = ResolvedServer::literal(&up).expect("literal addresses");
    Pool::new(&up, resolved)
}

/// Clients and keys that vary from request to request, prepared before timing.
struct Inputs {
    clients: Vec<IpAddr>,
    keys: Vec<String>,
}

impl Inputs {
    fn new() -> Self {
        Inputs {
            clients: (0..1024u32)
                .map(|i| IpAddr::V4(Ipv4Addr::new(10, (i >> 8) as u8, i as u8, 7)))
                .collect(),
            keys: (0..1024).map(|i| format!("/item/{i}?page=2")).collect(),
        }
    }

    fn key(&self, i: u64) -> SelectKey<'_> {
        let j = (i % 1024) as usize;
        SelectKey::new(Some(self.clients[j]), self.keys[j].as_bytes())
    }
}

fn requests(pool: &Pool, inputs: &Inputs, n: u64) {
    let now = Instant::now();
    for i in 0..n {
        let mut a = pool.begin();
        let key = inputs.key(i);
        if let Ok(peer) = pool.select(&mut a, &key, now) {
            black_box(peer);
            pool.finish(&mut a, Outcome::Success, now);
        }
    }
}

fn main() {
    let inputs = Arc::new(Inputs::new());
    println!(
        "{:<30} {:>6} {:>16} {:>18} {:>14}",
        "method", "peers", "ns/req 1 thread", "ns/req, 2 threads", "allocs/request"
    );
    for balance in [
        "round_robin",
        "least_conn",
        "ip_hash",
        "hash $request_uri",
        "hash $request_uri consistent",
        "random two least_conn",
    ] {
        for peers in [3, 50] {
            let pool = Arc::new(pool(balance, peers));
            requests(&pool, &inputs, REQUESTS / 10);

            // Best of three: the machine is shared, and the minimum is the least disturbed run.
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            let one = (0..3)
                .map(|_| {
                    let start = Instant::now();
                    requests(&pool, &inputs, REQUESTS);
                    start.elapsed().as_nanos() as f64 / REQUESTS as f64
                })
                .fold(f64::INFINITY, f64::min);
            let allocs =
                (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / (3 * REQUESTS) as f64;

            // Two threads on one pool, each making REQUESTS requests: wall time per request of
            // one thread (the pool serves two requests in that time).
            let start = Instant::now();
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (pool, inputs) = (Arc::clone(&pool), Arc::clone(&inputs));
                    std::thread::spawn(move || requests(&pool, &inputs, REQUESTS))
                })
                .collect();
            for t in threads {
                t.join().expect("bench thread");
            }
            let two = start.elapsed().as_nanos() as f64 / REQUESTS as f64;

            println!("{balance:<30} {peers:>6} {one:>16.1} {two:>18.1} {allocs:>14.3}");
        }
    }
}

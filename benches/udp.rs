//! The two ends of `scripts/bench-udp`: UDP echo backends, and a closed-loop load of
//! datagrams against a proxy (each client sends a datagram, waits for the answer, sends the
//! next), as DNS clients put on a resolver's balancer.
//!
//! ```sh
//! cargo bench --bench udp -- backends PORT...
//! cargo bench --bench udp -- load PORT CLIENTS SECONDS
//! ```
//!
//! `load` prints one line: `answered=N lost=N per_second=N p50_us=N p99_us=N`. A datagram not
//! answered within 200 ms counts as lost, and its client sends the next.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("backends") => backends(&args[1..]),
        Some("load") => load(&args[1..]),
        // Run with no mode, or with the test harness's flags (`cargo test --all-targets`
        // runs every bench once): nothing to do.
        None => {}
        Some(flag) if flag.starts_with('-') => {}
        Some(_) => eprintln!("usage: udp backends PORT... | udp load PORT CLIENTS SECONDS"),
    }
}

/// Answers every datagram on each of `ports` with itself, until killed.
fn backends(ports: &[String]) {
    let threads: Vec<_> = ports
        .iter()
        .map(|port| {
            let socket = UdpSocket::bind(("127.0.0.1", port.parse::<u16>().expect("a port")))
                .expect("bind a backend");
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                loop {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// `clients` closed loops against 127.0.0.1:`port` for `seconds`.
fn load(args: &[String]) {
    let [port, clients, seconds] = [0, 1, 2].map(|i| {
        args.get(i)
            .and_then(|a| a.parse::<u64>().ok())
            .expect("load PORT CLIENTS SECONDS")
    });
    let until = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a client");
                socket.connect(("127.0.0.1", port as u16)).expect("connect");
                socket
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                let query = format!("query from client {i:04}: a DNS-sized datagram of 64 bytes.");
                let mut buf = [0u8; 2048];
                let (mut times, mut lost) = (Vec::new(), 0u64);
                while Instant::now() < until {
                    let sent = Instant::now();
                    if socket.send(query.as_bytes()).is_err() {
                        lost += 1;
                        continue;
                    }
                    match socket.recv(&mut buf) {
                        Ok(_) => times.push(sent.elapsed().as_micros() as u32),
                        Err(_) => lost += 1,
                    }
                }
                (times, lost)
            })
        })
        .collect();
    let mut times = Vec::new();
    let mut lost = 0;
    for t in threads {
        let (mut t, l) = t.join().expect("a client");
        times.append(&mut t);
        lost += l;
    }
    times.sort_unstable();
    let at = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "answered={} lost={lost} per_second={} p50_us={} p99_us={}",
        times.len(),
        times.len() as u64 / seconds.max(1),
        at(0.50),
        at(0.99)
    );
}

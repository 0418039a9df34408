//! UDP load balancing against nginx 1.22: the same `stream {}` config (`listen ... udp`) run by
//! nginx and by the appliance in front of the same UDP backends, the same datagrams sent, and
//! compared: which backend answered each datagram (round robin across sessions, one session
//! staying on its backend, `proxy_requests` starting a new one, a refused backend counted as
//! failed and passed over), what came back (`return`, a client `deny` refuses, a backend that
//! never answers), and the access log lines the sessions wrote.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::proxies::{Kind, NginxOptions, Proxy};
use support::{free_port, TempDir};

/// UDP backends: backend `i` answers each datagram with `b<i> <datagram>`, twice for one that
/// starts with `twice`, and not at all for one that starts with `silent`.
struct Backends {
    ports: Vec<u16>,
    stop: Arc<AtomicBool>,
}

impl Backends {
    fn start(count: usize) -> Backends {
        let stop = Arc::new(AtomicBool::new(false));
        let ports = (0..count)
            .map(|i| {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a backend");
                socket
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .expect("timeout");
                let port = socket.local_addr().expect("addr").port();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        let Ok((n, from)) = socket.recv_from(&mut buf) else {
                            continue;
                        };
                        let datagram = &buf[..n];
                        let answers = match datagram {
                            d if d.starts_with(b"silent") => 0,
                            d if d.starts_with(b"twice") => 2,
                            _ => 1,
                        };
                        let mut answer = format!("b{i} ").into_bytes();
                        answer.extend_from_slice(datagram);
                        for _ in 0..answers {
                            let _ = socket.send_to(&answer, from);
                        }
                    }
                });
                port
            })
            .collect();
        Backends { ports, stop }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A UDP client: one source port, so one session at a time on the proxy.
struct Client(UdpSocket);

impl Client {
    fn new(proxy_port: u16) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a client");
        socket
            .connect(("127.0.0.1", proxy_port))
            .expect("connect a client");
        Client(socket)
    }

    /// Sends `datagram` and returns the answers that come within `wait` of the last one.
    fn ask(&self, datagram: &str, wait: Duration) -> Vec<String> {
        self.0.send(datagram.as_bytes()).expect("send");
        self.0.set_read_timeout(Some(wait)).expect("timeout");
        let mut answers = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = self.0.recv(&mut buf) {
            answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        answers
    }
}

/// What one run saw: the answers to each datagram, in order, and the errors and warnings it
/// logged; then the access log's lines.
fn run(kind: Kind, backends: &Backends) -> (Vec<String>, Vec<String>) {
    let dir = TempDir::new("stream-udp");
    let log = dir.path.join("access.log");
    let names = [
        "rr", "sticky", "requests", "refused", "denied", "return", "silent",
    ];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let port = |name: &str| ports[names.iter().position(|n| *n == name).expect("a server")];
    let ready = free_port();
    let [b0, b1, b2] = [backends.ports[0], backends.ports[1], backends.ports[2]];
    let refused = free_port();
    let config = format!(
        r#"events {{}}
stream {{
    log_format fields '$server_port $status $protocol $bytes_sent $bytes_received "$upstream_addr" '
                      '"$upstream_bytes_sent" "$upstream_bytes_received"';
    access_log {log} fields;
    upstream three {{ server 127.0.0.1:{b0} weight=2; server 127.0.0.1:{b1}; server 127.0.0.1:{b2}; }}
    upstream two {{ server 127.0.0.1:{b0}; server 127.0.0.1:{b1}; }}
    upstream refusing {{ server 127.0.0.1:{refused}; server 127.0.0.1:{b2}; }}
    server {{ listen 127.0.0.1:{ready}; return "ready"; }}
    server {{ listen 127.0.0.1:{} udp; proxy_pass three; proxy_responses 1; }}
    server {{ listen 127.0.0.1:{} udp; proxy_pass two; proxy_timeout 300ms; }}
    server {{
        listen 127.0.0.1:{} udp;
        proxy_pass two;
        proxy_requests 2;
        proxy_responses 1;
        proxy_timeout 300ms;
    }}
    server {{ listen 127.0.0.1:{} udp; proxy_pass refusing; proxy_responses 1; }}
    server {{ listen 127.0.0.1:{} udp; deny 127.0.0.1; proxy_pass two; }}
    server {{ listen 127.0.0.1:{} udp; return "hello $remote_addr"; }}
    server {{
        listen 127.0.0.1:{} udp;
        proxy_pass 127.0.0.1:{b2};
        proxy_responses 1;
        proxy_timeout 300ms;
    }}
}}
"#,
        port("rr"),
        port("sticky"),
        port("requests"),
        port("refused"),
        port("denied"),
        port("return"),
        port("silent"),
        log = log.display(),
    );
    let options = NginxOptions {
        stream_module: true,
        ready_without_connecting: true,
        ..NginxOptions::default()
    };
    let proxy = Proxy::start(
        kind,
        &config,
        &[SocketAddr::from(([127, 0, 0, 1], ready))],
        options,
    );
    let quick = Duration::from_millis(300);
    let mut seen = Vec::new();
    let mut note = |what: &str, answers: Vec<String>| {
        seen.push(format!("{what}: {}", answers.join(" | ")));
    };
    // Round robin across sessions, weights 2 1 1: each client is a session of its own, over
    // when its answer comes.
    for i in 0..8 {
        note("rr", Client::new(port("rr")).ask(&format!("q{i}"), quick));
    }
    // One session stays with its backend, and takes every answer.
    let sticky = Client::new(port("sticky"));
    for datagram in ["one", "two", "twice"] {
        note("sticky", sticky.ask(datagram, Duration::from_millis(100)));
    }
    note(
        "sticky, another client",
        Client::new(port("sticky")).ask("x", quick),
    );
    // After two datagrams, the next starts a new session, on the next backend.
    let requests = Client::new(port("requests"));
    for i in 0..5 {
        note("requests", requests.ask(&format!("r{i}"), quick));
    }
    // The refused backend answers nothing, and is passed over for fail_timeout after.
    for i in 0..4 {
        note(
            "refused",
            Client::new(port("refused")).ask(&format!("f{i}"), quick),
        );
    }
    note("denied", Client::new(port("denied")).ask("d", quick));
    note("return", Client::new(port("return")).ask("hi", quick));
    note(
        "silent",
        Client::new(port("silent")).ask("silent please", quick),
    );
    // Every session ends within 300 ms of silence: give the last ones time to be logged.
    std::thread::sleep(Duration::from_millis(800));
    // The error log's errors and warnings, from the session number on.
    let errors: Vec<String> = proxy
        .log_tail(400)
        .lines()
        .filter(|l| l.contains("[error]") || l.contains("[warn]"))
        .filter_map(|l| {
            let level = if l.contains("[warn]") {
                "warn"
            } else {
                "error"
            };
            Some(format!("{level} {}", &l[l.find(": *")? + 2..]))
        })
        .collect();
    drop(proxy);
    let mut lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            // Ports differ between the runs: the server's is named instead.
            let (server, rest) = line.split_once(' ').unwrap_or((line, ""));
            let name = ports
                .iter()
                .position(|p| p.to_string() == server)
                .map_or(server, |i| names[i]);
            format!("{name} {rest}")
        })
        .collect();
    // Sessions end at different times; each server's lines are compared as a set.
    lines.sort();
    let names_of = |s: String| {
        let servers = ports.iter().zip(names).map(|(p, n)| (*p, n));
        let others = [(b0, "b0"), (b1, "b1"), (b2, "b2"), (refused, "refused")];
        servers.chain(others).fold(s, |s, (port, name)| {
            s.replace(&format!(":{port}"), &format!(":{name}"))
        })
    };
    seen.extend(errors.into_iter().map(names_of));
    let seen = seen
        .into_iter()
        .map(|s| {
            [(b0, "b0"), (b1, "b1"), (b2, "b2"), (refused, "refused")]
                .iter()
                .fold(s, |s, (port, name)| s.replace(&port.to_string(), name))
        })
        .collect();
    let lines = lines
        .into_iter()
        .map(|s| {
            [(b0, "B0"), (b1, "B1"), (b2, "B2"), (refused, "REFUSED")]
                .iter()
                .fold(s, |s, (port, name)| s.replace(&port.to_string(), name))
        })
        .collect();
    (seen, lines)
}

#[test]
fn udp_sessions_balance_and_end_as_nginx_does() {
    support::nginx::require_nginx();
    let backends = Backends::start(3);
    let (nginx_seen, nginx_log) = run(Kind::Nginx, &backends);
    let (ours_seen, ours_log) = run(Kind::Appliance, &backends);
    assert_eq!(
        ours_seen, nginx_seen,
        "answers differ\n  nginx: {nginx_seen:#?}\n  ours: {ours_seen:#?}"
    );
    assert_eq!(
        ours_log, nginx_log,
        "access logs differ\n  nginx: {nginx_log:#?}\n  ours: {ours_log:#?}"
    );
    // The test saw something worth comparing.
    assert!(
        nginx_seen.iter().any(|s| s.starts_with("rr: b0 q0")),
        "{nginx_seen:#?}"
    );
    let logged = |what: &str| nginx_seen.iter().any(|s| s.contains(what));
    assert!(
        logged("recv() failed (111: Connection refused)"),
        "{nginx_seen:#?}"
    );
    assert!(
        logged("upstream server temporarily disabled"),
        "{nginx_seen:#?}"
    );
    assert!(logged("upstream timed out"), "{nginx_seen:#?}");
}

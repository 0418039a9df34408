//! The balancers against the real thing: a Debian nginx 1.22 (one worker, so one set of
//! counters) balances over small recording backends, and for every request the backend nginx
//! chose must be the one `Pool::select` chooses for the same inputs, including retries past a
//! backend that refuses connections, "no live upstreams", and a `fail_timeout` running out.
//!
//! Each scenario is an upstream of the config model. The test writes it out as an nginx
//! `upstream` block, and builds a `Pool` from the same value; the model side then replays
//! nginx's retry loop (`ngx_http_upstream_next` with the default `proxy_next_upstream error
//! timeout`): a refusing backend is a failure, and the request moves on while tries are left.

mod support;

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use appliance::config::{Upstream, UpstreamServer};
use appliance::proxy::balance::{Attempt, Outcome, PeerAddr, Pool, ResolvedServer, SelectKey};
use support::{wait_for_port, ChildGuard};

// ---------------------------------------------------------------------------------------------
// Recording backends: each answers with its own index. A request whose URI carries `hold=1` is
// kept waiting until the test releases it (to load least_conn with open connections).

#[derive(Default)]
struct Holds {
    waiting: usize,
    released: u64,
}

struct Backends {
    addrs: Vec<SocketAddr>,
    holds: Arc<(Mutex<Holds>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl Backends {
    fn start(n: usize) -> Backends {
        let holds = Arc::new((Mutex::new(Holds::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut addrs = Vec::new();
        for index in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a backend");
            addrs.push(listener.local_addr().expect("backend address"));
            let (holds, stop) = (Arc::clone(&holds), Arc::clone(&stop));
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let holds = Arc::clone(&holds);
                    thread::spawn(move || serve(conn, index, &holds));
                }
            });
        }
        Backends { addrs, holds, stop }
    }

    /// Waits until `n` held requests have arrived (5 s at most).
    fn wait_held(&self, n: usize) {
        let (lock, cv) = &*self.holds;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut h = lock.lock().unwrap();
        while h.waiting < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "only {} of {n} held requests arrived",
                h.waiting
            );
            h = cv.wait_timeout(h, left).unwrap().0;
        }
    }

    fn release(&self) {
        let (lock, cv) = &*self.holds;
        let mut h = lock.lock().unwrap();
        h.released += 1;
        cv.notify_all();
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.release();
        for a in &self.addrs {
            let _ = TcpStream::connect_timeout(a, Duration::from_millis(200));
        }
    }
}

fn serve(mut conn: TcpStream, index: usize, holds: &(Mutex<Holds>, Condvar)) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    if String::from_utf8_lossy(line).contains("hold=1") {
        let (lock, cv) = holds;
        let mut h = lock.lock().unwrap();
        let generation = h.released;
        h.waiting += 1;
        cv.notify_all();
        while h.released == generation {
            h = cv.wait(h).unwrap();
        }
        h.waiting -= 1;
    }
    let body = index.to_string();
    let _ = write!(
        conn,
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A loopback port nothing listens on: connections to it are refused.
fn refusing_addr() -> SocketAddr {
    // Bound but not listening, for the rest of the test: connections to it are refused, and
    // no listener chosen later (nginx's, through free_port) can land on the port, which a
    // port bound and let go could (a run saw a "dead" server answer 404: its port had been
    // taken again by a listener).
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    socket.bind(&any.into()).expect("bind");
    let addr = socket.local_addr().expect("address");
    let addr = addr.as_socket().expect("an inet address");
    std::mem::forget(socket);
    addr
}

// ---------------------------------------------------------------------------------------------
// Scenarios: an upstream, and where its servers are.

struct Scenario {
    name: &'static str,
    upstream: Upstream,
    pool: Pool,
    /// Server address -> backend index (refusing servers are absent).
    backend_of: HashMap<SocketAddr, usize>,
    /// How many times the pool answered "no live upstreams".
    no_live: Cell<usize>,
    /// Tries that went to a refusing server, and how many of them disabled it.
    refused: Cell<usize>,
    disabled: Cell<usize>,
}

/// `servers` are nginx-style lines over backend indexes or `dead`:
/// `"0 weight=5"`, `"dead backup"`, `"2 down"`.
fn scenario(name: &'static str, balance: &str, servers: &[&str], backends: &Backends) -> Scenario {
    let mut upstream: Upstream =
        toml::from_str(&format!("name = \"{name}\"\nbalance = \"{balance}\"")).unwrap();
    let mut backend_of = HashMap::new();
    for line in servers {
        let mut words = line.split_whitespace();
        let target = words.next().unwrap();
        let addr = if target == "dead" {
            refusing_addr()
        } else {
            let i: usize = target.parse().unwrap();
            backend_of.insert(backends.addrs[i], i);
            backends.addrs[i]
        };
        let mut s = UpstreamServer::new(addr.to_string());
        for w in words {
            let (k, v) = w.split_once('=').unwrap_or((w, ""));
            match k {
                "weight" => s.weight = v.parse().unwrap(),
                "max_fails" => s.max_fails = v.parse().unwrap(),
                "fail_timeout" => s.fail_timeout = v.parse().unwrap(),
                "max_conns" => s.max_conns = v.parse().unwrap(),
                "backup" => s.backup = true,
                "down" => s.down = true,
                _ => panic!("unknown parameter {w}"),
            }
        }
        upstream.servers.push(s);
    }
    let pool = Pool::new(&upstream, ResolvedServer::literal(&upstream).unwrap());
    Scenario {
        name,
        upstream,
        pool,
        backend_of,
        no_live: Cell::new(0),
        refused: Cell::new(0),
        disabled: Cell::new(0),
    }
}

/// The upstream as nginx.conf text.
fn nginx_upstream(u: &Upstream) -> String {
    let mut out = format!("    upstream {} {{\n", u.name);
    let method = u.balance.to_string();
    if method != "round_robin" {
        let _ = writeln!(out, "        {method};");
    }
    for s in &u.servers {
        let _ = write!(
            out,
            "        server {} weight={} max_fails={} fail_timeout={}",
            s.address, s.weight, s.max_fails, s.fail_timeout
        );
        if s.max_conns != 0 {
            let _ = write!(out, " max_conns={}", s.max_conns);
        }
        if s.backup {
            out.push_str(" backup");
        }
        if s.down {
            out.push_str(" down");
        }
        out.push_str(";\n");
    }
    out.push_str("    }\n");
    out
}

impl Scenario {
    /// What the model answers for one request: a backend index, or 502.
    fn model(&self, key: &SelectKey) -> String {
        let mut a = self.pool.begin();
        let now = Instant::now();
        loop {
            if self.pool.select(&mut a, key, now).is_err() {
                self.no_live.set(self.no_live.get() + 1);
                return "502".into();
            }
            match self.backend(peer_addr(&self.pool, &a)) {
                Some(i) => {
                    self.pool.finish(&mut a, Outcome::Success, now);
                    return i.to_string();
                }
                None => {
                    self.refused.set(self.refused.get() + 1);
                    if self.pool.finish(&mut a, Outcome::Failed, now) {
                        self.disabled.set(self.disabled.get() + 1);
                    }
                    if a.tries_left() == 0 {
                        return "502".into();
                    }
                }
            }
        }
    }

    /// Starts a request the model keeps open (a held backend); returns the attempt and backend.
    fn model_hold(&self, key: &SelectKey) -> (Attempt, String) {
        let mut a = self.pool.begin();
        let _ = self.pool.select(&mut a, key, Instant::now());
        let b = self
            .backend(peer_addr(&self.pool, &a))
            .map_or("none".into(), |i| i.to_string());
        (a, b)
    }

    fn backend(&self, addr: Option<SocketAddr>) -> Option<usize> {
        addr.and_then(|a| self.backend_of.get(&a).copied())
    }
}

fn peer_addr(pool: &Pool, a: &Attempt) -> Option<SocketAddr> {
    match &pool.peer(a.held()?)?.addr {
        PeerAddr::Inet(s) => Some(*s),
        PeerAddr::Unix(_) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// nginx

struct Nginx {
    _child: ChildGuard,
    dir: PathBuf,
    port: u16,
    v6: bool,
}

impl Nginx {
    /// `tag` keeps the directories of tests running in parallel apart.
    fn start(tag: &str, scenarios: &[&Scenario], v6: bool) -> Nginx {
        let dir = std::env::temp_dir().join(format!(
            "appliance-balance-vs-nginx-{}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = support::free_port();
        let d = dir.display();
        let mut conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\nhttp {{\n\
             \x20   access_log off;\n    client_body_temp_path {d}/body;\n\
             \x20   proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
             \x20   proxy_connect_timeout 2s;\n    proxy_read_timeout 20s;\n"
        );
        for s in scenarios {
            conf.push_str(&nginx_upstream(&s.upstream));
        }
        let _ = writeln!(conf, "    server {{\n        listen 127.0.0.1:{port};");
        if v6 {
            let _ = writeln!(conf, "        listen [::1]:{port};");
        }
        for s in scenarios {
            let _ = writeln!(
                conf,
                "        location /{0} {{ proxy_pass http://{0}; }}",
                s.upstream.name
            );
        }
        conf.push_str("    }\n}\n");
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, &conf).unwrap();

        let bin = nginx_bin();
        let check = Command::new(&bin)
            .arg("-t")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .output()
            .expect("run nginx -t");
        assert!(
            check.status.success(),
            "nginx -t rejected the scenario config:\n{}\n{conf}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = ChildGuard::spawn(
            "nginx",
            Command::new(&bin)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        );
        Nginx {
            _child: child,
            dir,
            port,
            v6,
        }
    }

    /// One request from `client` (a loopback source address): the backend index in the body,
    /// or the status when it is not 200.
    fn get(&self, client: IpAddr, uri: &str) -> String {
        let server: IpAddr = if client.is_ipv6() {
            "::1".parse().unwrap()
        } else {
            Ipv4Addr::LOCALHOST.into()
        };
        let mut conn = connect_from(client, SocketAddr::new(server, self.port));
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(conn, "GET {uri} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
        let mut response = Vec::new();
        conn.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response);
        let status = text.split(' ').nth(1).unwrap_or("?").to_string();
        match text.split_once("\r\n\r\n") {
            Some((_, body)) if status == "200" => body.to_string(),
            _ => status,
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_bin() -> PathBuf {
    let sbin = Path::new("/usr/sbin/nginx");
    if sbin.exists() {
        sbin.to_path_buf()
    } else {
        PathBuf::from("nginx")
    }
}

/// A TCP connection whose source address is `client`: every 127.0.0.0/8 address is local.
fn connect_from(client: IpAddr, server: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = match client {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .unwrap();
        socket.bind(SocketAddr::new(client, 0)).unwrap();
        socket.connect(server).await.unwrap()
    });
    let std = stream.into_std().unwrap();
    std.set_nonblocking(false).unwrap();
    std
}

fn ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Runs `requests` (client, hash key) through nginx and the model; returns both sequences.
fn compare(nginx: &Nginx, s: &Scenario, requests: &[(IpAddr, Option<&str>)]) {
    let mut got = Vec::new();
    let mut want = Vec::new();
    for (client, k) in requests {
        let uri = match k {
            Some(k) => format!("/{}?k={k}", s.name),
            None => format!("/{}", s.name),
        };
        got.push(nginx.get(*client, &uri));
        want.push(s.model(&SelectKey::new(Some(*client), k.unwrap_or("").as_bytes())));
    }
    assert_eq!(
        got, want,
        "scenario {}: nginx (left) and the pool (right) differ",
        s.name
    );
    println!(
        "{}: {} requests agree: {}",
        s.name,
        got.len(),
        got.join(" ")
    );
}

fn same_client(n: usize) -> Vec<(IpAddr, Option<&'static str>)> {
    vec![(LOCAL, None); n]
}

fn clients(n: u8) -> Vec<IpAddr> {
    // Vary the first three octets: ip_hash ignores the fourth.
    (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, i / 7 + 1, i.wrapping_mul(37), 1)))
        .collect()
}

const KEYS: [&str; 24] = [
    "a",
    "b",
    "c",
    "d",
    "e",
    "f",
    "user1",
    "user2",
    "user3",
    "user42",
    "cart",
    "home",
    "%2Fimg%2F1.png",
    "x1",
    "x2",
    "x3",
    "x4",
    "x5",
    "zebra",
    "quux",
    "0",
    "1",
    "2",
    "99",
];

#[test]
fn every_deterministic_balancer_chooses_what_nginx_chooses() {
    let backends = Backends::start(6);
    let b = &backends;
    let v6 = ipv6_loopback();

    let rr = scenario(
        "rr",
        "round_robin",
        &["0 weight=5", "1", "2", "3 weight=2"],
        b,
    );
    let rr_dead = scenario(
        "rr_dead",
        "round_robin",
        &["0", "dead", "2 weight=2", "3"],
        b,
    );
    let rr_backup = scenario(
        "rr_backup",
        "round_robin",
        &[
            "dead",
            "dead weight=2",
            "4 backup",
            "5 backup weight=3",
            "1 backup down",
        ],
        b,
    );
    let rr_all_dead = scenario("rr_all_dead", "round_robin", &["dead", "dead"], b);
    let rr_down = scenario("rr_down", "round_robin", &["0 down", "1 weight=2", "2"], b);
    let ip = scenario(
        "ip",
        "ip_hash",
        &["0", "1 weight=2", "2 down", "3", "4 weight=3"],
        b,
    );
    let ip_dead = scenario("ip_dead", "ip_hash", &["0", "dead", "2", "dead", "4"], b);
    let hash = scenario(
        "hash",
        "hash $arg_k",
        &["0", "1 weight=3", "2", "3 down", "4"],
        b,
    );
    let hash_dead = scenario(
        "hash_dead",
        "hash $arg_k",
        &["dead", "1", "dead weight=2", "3"],
        b,
    );
    let chash = scenario(
        "chash",
        "hash $arg_k consistent",
        &["0", "1 weight=2", "2", "3", "4 down", "5"],
        b,
    );
    let chash_dead = scenario(
        "chash_dead",
        "hash $arg_k consistent",
        &["0", "dead", "2", "dead weight=3", "4"],
        b,
    );
    let lc = scenario("lc", "least_conn", &["0 weight=3", "1", "2 weight=2"], b);
    let lc_dead = scenario("lc_dead", "least_conn", &["0", "dead", "2", "3"], b);
    let all = [
        &rr,
        &rr_dead,
        &rr_backup,
        &rr_all_dead,
        &rr_down,
        &ip,
        &ip_dead,
        &hash,
        &hash_dead,
        &chash,
        &chash_dead,
        &lc,
        &lc_dead,
    ];
    let nginx = Nginx::start("algorithms", &all, v6);

    compare(&nginx, &rr, &same_client(27));
    compare(&nginx, &rr_dead, &same_client(15));
    compare(&nginx, &rr_backup, &same_client(12));
    compare(&nginx, &rr_all_dead, &same_client(4));
    compare(&nginx, &rr_down, &same_client(9));

    let mut ip_requests: Vec<(IpAddr, Option<&str>)> =
        clients(40).into_iter().map(|c| (c, None)).collect();
    if nginx.v6 {
        ip_requests.push(("::1".parse().unwrap(), None));
    }
    // Repeat the clients: a client's server stays its server.
    let again = ip_requests.clone();
    ip_requests.extend(again);
    compare(&nginx, &ip, &ip_requests);
    compare(&nginx, &ip_dead, &ip_requests);

    let mut keyed: Vec<(IpAddr, Option<&str>)> = KEYS.iter().map(|k| (LOCAL, Some(*k))).collect();
    keyed.extend(KEYS.iter().map(|k| (LOCAL, Some(*k))));
    // No key: round robin.
    keyed.extend([
        (LOCAL, None),
        (LOCAL, None),
        (LOCAL, None),
        (LOCAL, Some("a")),
    ]);
    compare(&nginx, &hash, &keyed);
    compare(&nginx, &hash_dead, &keyed);
    compare(&nginx, &chash, &keyed);
    compare(&nginx, &chash_dead, &keyed);

    compare(&nginx, &lc, &same_client(12));
    compare(&nginx, &lc_dead, &same_client(12));

    same_log_events(&nginx, &all);
    assert!(
        rr_all_dead.no_live.get() > 0,
        "the scenarios must exercise no live upstreams"
    );
}

/// The tries that never show in a response: nginx logged a refused connection for every try
/// the pool sent to a refusing server, "upstream server temporarily disabled" for every failure
/// that disabled one, and "no live upstreams" whenever the pool had nothing.
fn same_log_events(nginx: &Nginx, scenarios: &[&Scenario]) {
    let log = nginx.error_log();
    let sum = |f: fn(&Scenario) -> usize| scenarios.iter().map(|s| f(s)).sum::<usize>();
    let counts = (
        log.matches("(111: Connection refused) while connecting to upstream")
            .count(),
        log.matches("upstream server temporarily disabled").count(),
        log.matches("no live upstreams").count(),
    );
    let model = (
        sum(|s| s.refused.get()),
        sum(|s| s.disabled.get()),
        sum(|s| s.no_live.get()),
    );
    assert_eq!(
        counts, model,
        "(refused, disabled, no live) in nginx's error log (left) and the pool (right):\n{log}"
    );
    println!("log events agree: (refused, disabled, no live upstreams) = {counts:?}");
}

#[test]
fn least_conn_with_open_connections_matches_nginx() {
    let backends = Backends::start(3);
    // The heavy server sits in the middle: once it holds a connection, the idle servers on
    // either side tie, and only they take part in the round robin that breaks the tie.
    let lc = scenario(
        "lc_open",
        "least_conn",
        &["0", "1 weight=3", "2"],
        &backends,
    );
    let nginx = Nginx::start("least-conn", &[&lc], false);
    let nginx = Arc::new(nginx);

    let mut held = Vec::new();
    let mut open = Vec::new();
    for step in 0..3 {
        // One more request held open at its backend, then a few quick ones around it.
        let n = Arc::clone(&nginx);
        open.push(thread::spawn(move || n.get(LOCAL, "/lc_open?hold=1")));
        backends.wait_held(step + 1);
        held.push(lc.model_hold(&SelectKey::default()));
        compare(&nginx, &lc, &same_client(6));
    }
    backends.release();
    let got: Vec<String> = open.into_iter().map(|t| t.join().unwrap()).collect();
    let want: Vec<String> = held.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(
        got, want,
        "backends of the held requests: nginx (left), pool (right)"
    );
    for (mut a, _) in held {
        lc.pool.finish(&mut a, Outcome::Success, Instant::now());
    }
    compare(&nginx, &lc, &same_client(6));
}

#[test]
fn fail_timeout_recovery_matches_nginx() {
    let backends = Backends::start(3);
    // The refusing server is out for fail_timeout=1s: whole seconds, so it gets its next chance
    // in the second after next. 2.5 s later both clocks are past it, 0.3 s later neither is.
    let rr = scenario(
        "rr_timeout",
        "round_robin",
        &[
            "0",
            "dead fail_timeout=1s",
            "2 weight=2",
            "dead max_fails=2 fail_timeout=1s",
        ],
        &backends,
    );
    let nginx = Nginx::start("fail-timeout", &[&rr], false);
    compare(&nginx, &rr, &same_client(8));
    thread::sleep(Duration::from_millis(300));
    compare(&nginx, &rr, &same_client(4));
    thread::sleep(Duration::from_millis(2500));
    compare(&nginx, &rr, &same_client(8));
    thread::sleep(Duration::from_millis(2500));
    compare(&nginx, &rr, &same_client(8));
    same_log_events(&nginx, &[&rr]);
}

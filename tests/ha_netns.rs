//! The HA pair in network namespaces made by the test: a bridge, a client, two load balancers
//! (lb1, lb2) and two backends (be1, be2), joined by veth pairs on 10.200.0.0/24 (and
//! fd00:200::/64), plus a direct heartbeat link between lb1 and lb2 (10.201.0.0/30).
//!
//! The backends are nginx; each load balancer is `appliance run` with an appliance.toml that
//! proxies to them and has an `[ha]` section in local mode: the data plane and the HA monitor in
//! one process, as the product runs. Its HA state is read from the admin API's `/status`.
//! Everything lives in the namespaces, which are deleted when the test ends, even on panic.
//! Needs root and `ip netns`; fails (not skips) without them.
//!
//! `bench_failover` (ignored; run by scripts/bench-failover) repeats the kill many times and
//! reports min / median / max.

mod support;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{appliance_bin, ChildGuard};

const VIP4: &str = "10.200.0.100";
const VIP6: &str = "fd00:200::100";

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn nginx_bin() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("nginx (Debian's package) is needed for the backends and the data plane")
}

/// Namespaces named uniquely for this run; deleted (with every process inside) on drop.
struct Namespaces {
    prefix: String,
    made: Vec<String>,
}

impl Namespaces {
    fn new(tag: &str) -> Namespaces {
        static RUN: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "ha{}{}{}",
            tag,
            std::process::id(),
            RUN.fetch_add(1, Ordering::SeqCst)
        );
        Namespaces {
            prefix,
            made: Vec::new(),
        }
    }

    fn name(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn add(&mut self, host: &str) -> String {
        let name = self.name(host);
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "this test needs network namespaces (root, Linux, iproute2): `ip netns add {name}` \
                 failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("this test needs iproute2's `ip` to make network namespaces: {e}"),
        }
        self.made.push(name.clone());
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.made {
            // Whatever the test started inside (ChildGuards usually got there first).
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    V4,
    V6,
}

/// The test world. Field order matters: processes are dropped (killed) before the namespaces.
struct World {
    lbs: [Option<Lb>; 2],
    _backends: Vec<ChildGuard>,
    dir: PathBuf,
    family: Family,
    ns: Namespaces,
}

struct Lb {
    /// `appliance run`: the data plane and the HA monitor.
    agent: ChildGuard,
}

const LB: [&str; 2] = ["lb1", "lb2"];

/// The admin API inside each load balancer's namespace.
const ADMIN_PORT: u16 = 9901;

impl World {
    fn vip(&self) -> IpAddr {
        match self.family {
            Family::V4 => VIP4.parse().expect("literal"),
            Family::V6 => VIP6.parse().expect("literal"),
        }
    }

    fn build(tag: &str, family: Family) -> World {
        let mut ns = Namespaces::new(tag);
        let dir = std::env::temp_dir().join(&ns.prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let br = ns.add("br");
        run("ip", &["-n", &br, "link", "add", "br0", "type", "bridge"]);
        run("ip", &["-n", &br, "link", "set", "br0", "up"]);
        let hosts = [
            ("client", 10),
            ("lb1", 1),
            ("lb2", 2),
            ("be1", 21),
            ("be2", 22),
        ];
        for (host, octet) in hosts {
            let name = ns.add(host);
            let port = format!("v{host}");
            run(
                "ip",
                &[
                    "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &name,
                ],
            );
            run(
                "ip",
                &["-n", &br, "link", "set", &port, "master", "br0", "up"],
            );
            run("ip", &["-n", &name, "link", "set", "lo", "up"]);
            let v4 = format!("10.200.0.{octet}/24");
            run("ip", &["-n", &name, "addr", "add", &v4, "dev", "eth0"]);
            let v6 = format!("fd00:200::{octet}/64");
            run(
                "ip",
                &["-n", &name, "addr", "add", &v6, "dev", "eth0", "nodad"],
            );
            run("ip", &["-n", &name, "link", "set", "eth0", "up"]);
        }
        // The heartbeat path: a direct link between the two load balancers.
        let (l1, l2) = (ns.name("lb1"), ns.name("lb2"));
        run(
            "ip",
            &[
                "-n", &l1, "link", "add", "hb", "type", "veth", "peer", "name", "hb", "netns", &l2,
            ],
        );
        run(
            "ip",
            &["-n", &l1, "addr", "add", "10.201.0.1/30", "dev", "hb"],
        );
        run(
            "ip",
            &["-n", &l2, "addr", "add", "10.201.0.2/30", "dev", "hb"],
        );
        run("ip", &["-n", &l1, "link", "set", "hb", "up"]);
        run("ip", &["-n", &l2, "link", "set", "hb", "up"]);

        let mut world = World {
            lbs: [None, None],
            _backends: Vec::new(),
            dir,
            family,
            ns,
        };
        for be in ["be1", "be2"] {
            let body = format!("location / {{ return 200 \"{be}\\n\"; }}");
            let guard = world.nginx(be, &body);
            world._backends.push(guard);
        }
        world
    }

    fn nginx(&self, host: &str, locations: &str) -> ChildGuard {
        let d = self.dir.join(host);
        std::fs::create_dir_all(&d).expect("a host dir");
        let d = d.display();
        let conf = format!(
            "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 512; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
             fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             upstream be {{ server 10.200.0.21:80; server 10.200.0.22:80; }}\n\
             server {{ listen 80; listen [::]:80; {locations} }} }}\n"
        );
        let path = self.dir.join(host).join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let error_log = self.dir.join(host).join("error.log");
        let guard = ChildGuard::spawn(
            &format!("nginx in {host}"),
            Command::new("ip")
                .args(["netns", "exec", &self.ns.name(host)])
                .arg(nginx_bin())
                .arg("-e")
                .arg(&error_log)
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        self.wait_listening(host);
        guard
    }

    /// Waits until port 80 accepts connections inside the host's namespace.
    fn wait_listening(&self, host: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns.name(host),
                    "ss",
                    "-Hltn",
                    "sport = :80",
                ])
                .output();
            if out.is_ok_and(|o| !o.stdout.is_empty()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "nginx in {host} did not start: see {}",
            self.dir.join(host).display()
        );
    }

    /// Starts `appliance run` on lb1 (index 0, priority 200) or lb2 (priority 100).
    fn start_lb(&mut self, lb: usize, preempt: bool) {
        let host = LB[lb];
        let d = self.dir.join(host);
        std::fs::create_dir_all(&d).expect("a host dir");
        let (me, peer) = if lb == 0 { (1, 2) } else { (2, 1) };
        let config = format!(
            "[ha]\nmode = \"local\"\nnode_id = \"{host}\"\npriority = {}\npreempt = {preempt}\n\
             peer = \"10.201.0.{peer}:7000\"\nbind = \"10.201.0.{me}:7000\"\nvip = \"{}\"\n\
             interface = \"eth0\"\nsecret = \"a secret the pair shares\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{ADMIN_PORT}\"\n\n\
             [[http.upstream]]\nname = \"be\"\n\
             [[http.upstream.server]]\naddress = \"10.200.0.21:80\"\n\
             [[http.upstream.server]]\naddress = \"10.200.0.22:80\"\n\n\
             [[http.server]]\nlisten = [{{ address = \"0.0.0.0:80\" }}, {{ address = \"[::]:80\" }}]\n\
             add_header = [{{ name = \"X-LB\", value = \"{host}\", always = true }}]\n\
             [[http.server.location]]\npath = \"/\"\n\
             [http.server.location.proxy]\npass = \"http://be\"\n",
            if lb == 0 { 200 } else { 100 },
            self.vip()
        );
        let path = d.join("appliance.toml");
        std::fs::write(&path, config).expect("write appliance.toml");
        let log = File::create(d.join("agent.log")).expect("appliance log");
        let agent = ChildGuard::spawn(
            &format!("appliance run in {host}"),
            Command::new("ip")
                .args(["netns", "exec", &self.ns.name(host)])
                .arg(appliance_bin())
                .arg("run")
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(log),
        );
        self.wait_listening(host);
        self.lbs[lb] = Some(Lb { agent });
    }

    /// kill -9 of the load balancer.
    fn kill_lb(&mut self, lb: usize) {
        if let Some(mut l) = self.lbs[lb].take() {
            let _ = l.agent.child.kill();
            let _ = l.agent.child.wait();
        }
    }

    /// The HA section of the load balancer's `/status` (empty while it does not answer).
    fn status(&self, lb: usize) -> serde_json::Value {
        if self.lbs[lb].is_none() {
            return serde_json::Value::Null;
        }
        serde_json::from_slice::<serde_json::Value>(&self.admin_get(lb, "/status"))
            .ok()
            .map(|v| v["providers"]["ha"].clone())
            .unwrap_or_default()
    }

    /// GET `path` from the load balancer's admin API, inside its namespace.
    fn admin_get(&self, lb: usize, path: &str) -> Vec<u8> {
        Command::new("ip")
            .args(["netns", "exec", &self.ns.name(LB[lb])])
            .args(["curl", "-s", "--max-time", "1"])
            .arg(format!("http://127.0.0.1:{ADMIN_PORT}{path}"))
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
    }

    /// The load balancer's `/metrics` text.
    fn metrics(&self, lb: usize) -> String {
        String::from_utf8_lossy(&self.admin_get(lb, "/metrics")).into_owned()
    }

    fn state(&self, lb: usize) -> String {
        self.status(lb)["state"].as_str().unwrap_or("").to_string()
    }

    /// Waits until the load balancer reports `state`; false after `timeout`.
    fn wait_state(&self, lb: usize, state: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.state(lb) == state {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Which load balancers have the VIP on their interface, as their kernels say.
    fn holders(&self) -> [bool; 2] {
        let vip = self.vip().to_string();
        [0, 1].map(|lb| {
            run(
                "ip",
                &[
                    "-n",
                    &self.ns.name(LB[lb]),
                    "-br",
                    "addr",
                    "show",
                    "dev",
                    "eth0",
                ],
            )
            .split_whitespace()
            .any(|a| a.split('/').next() == Some(vip.as_str()))
        })
    }

    /// The hardware addresses that answer ARP for the VIP, asked from the client.
    fn arp_answers(&self) -> BTreeSet<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns.name("client")])
            .args(["arping", "-I", "eth0", "-c", "2", "-w", "1", VIP4])
            .output()
            .expect("arping (iputils-arping) is needed for the ARP checks");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("reply from"))
            .filter_map(|l| {
                let start = l.find('[')?;
                let end = l.find(']')?;
                Some(l[start + 1..end].to_ascii_lowercase())
            })
            .collect()
    }

    fn agent_log(&self, lb: usize) -> String {
        std::fs::read_to_string(self.dir.join(LB[lb]).join("agent.log")).unwrap_or_default()
    }

    fn cut_heartbeat_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        run(
            "ip",
            &["-n", &self.ns.name("lb1"), "link", "set", "hb", state],
        );
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (lb, name) in LB.iter().enumerate() {
                eprintln!("--- {name} agent log ---\n{}", self.agent_log(lb));
            }
        }
        for lb in 0..2 {
            self.kill_lb(lb);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One request from the client: which load balancer answered, or none.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    served_by: Option<String>,
}

fn request(target: SocketAddr) -> Option<String> {
    // A LAN answers a SYN in well under a millisecond: a short limit measures the pair, not the
    // client's patience. (A real client retransmits its SYN after 1 s.)
    let mut s = TcpStream::connect_timeout(&target, Duration::from_millis(100)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n").ok()?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).ok()?;
    let text = String::from_utf8_lossy(&reply);
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    text.lines()
        .find_map(|l| l.strip_prefix("X-LB: "))
        .map(|lb| lb.trim().to_string())
}

/// A bounded request loop run from inside the client namespace.
struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

impl Load {
    fn start(world: &World, limit: Duration) -> Load {
        let netns = File::open(format!("/run/netns/{}", world.ns.name("client")))
            .expect("the client namespace");
        let target = SocketAddr::new(world.vip(), 80);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a descriptor of a namespace file.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "setns into the client namespace: {}",
                std::io::Error::last_os_error()
            );
            let deadline = Instant::now() + limit;
            let mut samples = Vec::new();
            while !flag.load(Ordering::SeqCst)
                && Instant::now() < deadline
                && samples.len() < 200_000
            {
                let served_by = request(target);
                samples.push(Sample {
                    at: Instant::now(),
                    served_by,
                });
                std::thread::sleep(Duration::from_millis(5));
            }
            samples
        });
        Load { stop, thread }
    }

    fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the load thread")
    }
}

/// Failover seen by the client: last success through `from` before `killed_at`, first success
/// through `to` after it, and the failed requests between.
#[derive(Debug)]
struct Failover {
    time: Duration,
    failed: usize,
}

fn failover(samples: &[Sample], killed_at: Instant, from: &str, to: &str) -> Option<Failover> {
    let last_old = samples
        .iter()
        .filter(|s| s.at <= killed_at && s.served_by.as_deref() == Some(from))
        .map(|s| s.at)
        .max()?;
    let first_new = samples
        .iter()
        .filter(|s| s.at > killed_at && s.served_by.as_deref() == Some(to))
        .map(|s| s.at)
        .min()?;
    let failed = samples
        .iter()
        .filter(|s| s.at > last_old && s.at < first_new && s.served_by.is_none())
        .count();
    Some(Failover {
        time: first_new - last_old,
        failed,
    })
}

fn served_by(samples: &[Sample], since: Instant) -> Vec<Option<String>> {
    let mut seen: Vec<Option<String>> = samples
        .iter()
        .filter(|s| s.at >= since)
        .map(|s| s.served_by.clone())
        .collect();
    seen.dedup();
    seen
}

const SETTLE: Duration = Duration::from_secs(15);

/// Starts both, lb1 (higher priority) master, lb2 backup, the client served through lb1.
fn pair(tag: &str, family: Family, preempt: bool) -> World {
    let mut w = World::build(tag, family);
    w.start_lb(0, preempt);
    assert!(w.wait_state(0, "master", SETTLE), "lb1 becomes master");
    w.start_lb(1, preempt);
    assert!(w.wait_state(1, "backup", SETTLE), "lb2 becomes backup");
    assert_eq!(w.holders(), [true, false]);
    w
}

/// Kills lb1 under load and returns the failover the client saw.
fn kill_master_under_load(w: &mut World) -> (Failover, Vec<Sample>) {
    let load = Load::start(w, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = Instant::now();
    w.kill_lb(0);
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline && !w.holders()[1] {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(800));
    let samples = load.stop();
    let f = failover(&samples, killed_at, "lb1", "lb2").unwrap_or_else(|| {
        panic!(
            "no failover from lb1 to lb2 seen by the client: {:?}",
            served_by(&samples, killed_at)
        )
    });
    (f, samples)
}

#[test]
fn failover_under_load_then_the_old_master_takes_back_with_preempt() {
    let mut w = pair("p", Family::V4, true);
    let (f, samples) = kill_master_under_load(&mut w);
    println!(
        "failover lb1 -> lb2: {:.0} ms (last success via lb1 to first via lb2), {} failed requests of {}",
        f.time.as_secs_f64() * 1000.0,
        f.failed,
        samples.len()
    );
    assert!(w.wait_state(1, "master", SETTLE));
    assert_eq!(w.holders(), [false, true]);
    let metrics = w.metrics(1);
    assert!(
        metrics.contains("appliance_ha_transitions_total{from=\"backup\",to=\"master\"} 1"),
        "lb2's /metrics counts its take-over:\n{metrics}"
    );
    let answers = w.arp_answers();
    assert_eq!(
        answers.len(),
        1,
        "one node answers ARP for the VIP: {answers:?}"
    );

    // The old master returns and, with preempt, takes the VIP back.
    let load = Load::start(&w, Duration::from_secs(30));
    let back_at = Instant::now();
    w.start_lb(0, true);
    assert!(w.wait_state(0, "master", SETTLE), "lb1 preempts");
    assert!(w.wait_state(1, "backup", SETTLE), "lb2 steps down");
    std::thread::sleep(Duration::from_millis(800));
    let samples = load.stop();
    let failed = samples
        .iter()
        .filter(|s| s.at > back_at && s.served_by.is_none())
        .count();
    println!(
        "take-back lb2 -> lb1: {failed} failed requests of {}; served by {:?}",
        samples.len(),
        served_by(&samples, back_at)
    );
    assert_eq!(w.holders(), [true, false]);
    assert_eq!(
        samples.last().and_then(|s| s.served_by.clone()).as_deref(),
        Some("lb1")
    );
    let log = w.agent_log(0);
    assert!(log.contains("backup -> master: preempting"), "{log}");
}

#[test]
fn a_graceful_stop_hands_over_without_waiting_for_silence() {
    let w = pair("g", Family::V4, true);
    let load = Load::start(&w, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let stopped_at = Instant::now();
    let pid = w.lbs[0].as_ref().expect("lb1 runs").agent.pid().to_string();
    // QUIT, nginx's graceful stop (and the unit's KillSignal): TERM is a fast stop.
    run("kill", &["-QUIT", &pid]);
    assert!(w.wait_state(1, "master", SETTLE), "lb2 takes over");
    std::thread::sleep(Duration::from_millis(800));
    let samples = load.stop();
    let f = failover(&samples, stopped_at, "lb1", "lb2").expect("a hand-over seen by the client");
    println!(
        "graceful hand-over lb1 -> lb2: {:.0} ms, {} failed requests of {}",
        f.time.as_secs_f64() * 1000.0,
        f.failed,
        samples.len()
    );
    assert_eq!(w.holders(), [false, true]);
    let log = w.agent_log(1);
    assert!(
        log.contains("backup -> master: the peer reports that it cannot serve"),
        "{log}"
    );
}

#[test]
fn without_preempt_the_returning_node_stays_backup() {
    let mut w = pair("n", Family::V4, false);
    let (f, _) = kill_master_under_load(&mut w);
    println!(
        "failover lb1 -> lb2 (no preempt): {:.0} ms, {} failed requests",
        f.time.as_secs_f64() * 1000.0,
        f.failed
    );
    assert!(w.wait_state(1, "master", SETTLE));
    w.start_lb(0, false);
    assert!(w.wait_state(0, "backup", SETTLE), "lb1 returns as backup");
    // Well past the hold-down (2 s): still backup, lb2 keeps the VIP and serves.
    let load = Load::start(&w, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(5));
    let samples = load.stop();
    assert_eq!(w.state(0), "backup");
    assert_eq!(w.state(1), "master");
    assert_eq!(w.holders(), [false, true]);
    let seen = served_by(&samples, samples[0].at);
    assert_eq!(seen, [Some("lb2".to_string())], "only lb2 served");
}

#[test]
fn a_cut_heartbeat_link_never_puts_the_vip_on_both() {
    let mut w = pair("c", Family::V4, true);
    w.cut_heartbeat_link(false);
    // The peers stop hearing each other. Watch for longer than the failure window, the
    // hold-down and an ownership check together.
    let until = Instant::now() + Duration::from_secs(8);
    let (ownership_checks, arp_checks) = std::thread::scope(|scope| {
        // ARP from the client, in parallel (each arping listens for a second).
        let arp = scope.spawn(|| {
            let mut checks = 0;
            while Instant::now() < until {
                let answers = w.arp_answers();
                assert!(
                    answers.len() <= 1,
                    "two nodes answer ARP for the VIP: {answers:?}"
                );
                checks += 1;
            }
            checks
        });
        let mut checks = 0;
        while Instant::now() < until {
            let holders = w.holders();
            assert!(
                !(holders[0] && holders[1]),
                "both hold the VIP: {holders:?}"
            );
            assert_eq!(holders, [true, false], "the master keeps it");
            checks += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        (checks, arp.join().expect("the ARP checks"))
    });
    let lb2 = w.status(1);
    println!(
        "lb2 while cut off: state {} because {}",
        lb2["state"], lb2["decision"]
    );
    assert_eq!(lb2["peer"]["alive"], false, "{lb2}");
    assert_eq!(lb2["state"], "backup", "{lb2}");
    println!(
        "{ownership_checks} ownership and {arp_checks} ARP checks during the cut: never two holders"
    );

    // Still cut off, the master dies: its lease on the VIP runs out and lb2 takes over, since
    // nobody answers for the address any more.
    let killed = Instant::now();
    w.kill_lb(0);
    assert!(
        w.wait_state(1, "master", SETTLE),
        "lb2 takes over from a dead, unheard master"
    );
    println!(
        "with the link cut, lb2 took over {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(w.holders(), [false, true]);
    w.cut_heartbeat_link(true);
}

#[test]
fn an_ipv6_vip_moves_with_neighbour_advertisements() {
    let mut w = pair("6", Family::V6, true);
    let (f, samples) = kill_master_under_load(&mut w);
    println!(
        "IPv6 failover lb1 -> lb2: {:.0} ms, {} failed requests of {}",
        f.time.as_secs_f64() * 1000.0,
        f.failed,
        samples.len()
    );
    assert_eq!(w.holders(), [false, true]);
    assert_eq!(
        samples.last().and_then(|s| s.served_by.clone()).as_deref(),
        Some("lb2")
    );
}

/// Repeated kills with default settings: min / median / max failover. Run by
/// scripts/bench-failover (HA_BENCH_KILLS, default 10).
#[test]
#[ignore = "a benchmark: scripts/bench-failover"]
fn bench_failover() {
    let kills: usize = std::env::var("HA_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut w = pair("b", Family::V4, true);
    let mut times = Vec::new();
    for i in 0..kills {
        let (f, _) = kill_master_under_load(&mut w);
        println!(
            "kill {}: failover {:.0} ms, {} failed requests",
            i + 1,
            f.time.as_secs_f64() * 1000.0,
            f.failed
        );
        times.push(f.time);
        w.start_lb(0, true);
        assert!(w.wait_state(0, "master", SETTLE), "lb1 takes back");
        assert!(w.wait_state(1, "backup", SETTLE), "lb2 steps down");
        // lb2 just stepped down: its hold-down (2 s) must pass before it may take over again,
        // or the next measurement would include it.
        std::thread::sleep(Duration::from_millis(2500));
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = if times.len() % 2 == 1 {
        ms(times[times.len() / 2])
    } else {
        (ms(times[times.len() / 2 - 1]) + ms(times[times.len() / 2])) / 2.0
    };
    println!(
        "failover over {} kills: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        times.len(),
        ms(times[0]),
        median,
        ms(times[times.len() - 1])
    );
}

//! Active health checks through the appliance binary: a backend that starts failing its
//! `/status` check leaves rotation after the unhealthy threshold, returns after the healthy
//! threshold, and no client request reaches it while it is out.

#[path = "edge/mod.rs"]
mod edge;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge::{backends, server_passing_to, servers, Appliance, Event};

const UNHEALTHY: usize = 2;
const HEALTHY: usize = 3;

/// Replays a backend's log with ELB's rule. A client request is *certainly* routed with a
/// verdict once the check after the one that flipped it has been answered: the probe sends its
/// next check only after it has applied the previous result. Returns the client requests seen
/// while certainly out, while in but failing below the threshold, and while certainly back.
fn replay(events: &[Event]) -> (usize, usize, usize) {
    let (mut healthy, mut certain) = (true, true);
    let (mut fails, mut passes, mut flipped_at_last_check) = (0, 0, false);
    let (mut while_out, mut failing_but_in, mut after_return) = (0, 0, 0);
    let mut was_out = false;
    for e in events {
        match e {
            Event::Check { ok, .. } => {
                if flipped_at_last_check {
                    certain = healthy;
                }
                flipped_at_last_check = false;
                if *ok {
                    passes += 1;
                    fails = 0;
                    if !healthy && passes >= HEALTHY {
                        healthy = true;
                        flipped_at_last_check = true;
                    }
                } else {
                    fails += 1;
                    passes = 0;
                    if healthy && fails >= UNHEALTHY {
                        healthy = false;
                        was_out = true;
                        flipped_at_last_check = true;
                    }
                }
            }
            Event::Client { .. } => {
                if !certain && !flipped_at_last_check {
                    while_out += 1;
                } else if !certain {
                    // Between the flip and the next check: either way is right.
                } else if healthy && fails > 0 {
                    failing_but_in += 1;
                } else if healthy && was_out && !flipped_at_last_check {
                    after_return += 1;
                }
            }
        }
    }
    (while_out, failing_but_in, after_return)
}

#[test]
fn a_failing_backend_leaves_rotation_and_returns_without_client_requests_meanwhile() {
    let (port, backends) = backends(&["a", "b", "c"]);
    let config = format!(
        r#"
[[http.upstream]]
name = "app"
{}
health_check = {{ target = "HTTP:{port}/status", interval = "300ms", timeout = "200ms", unhealthy_threshold = {UNHEALTHY}, healthy_threshold = {HEALTHY} }}
{}"#,
        servers(&backends),
        server_passing_to("app")
    );
    let appliance = Appliance::start("health", &config);
    let b = &backends[1];

    // A client sending requests one after another for the whole test (bounded in count).
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, addr) = (stop.clone(), appliance.addr);
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::SeqCst) && statuses.len() < 200_000 {
                let status = edge::get(addr, "/", None).map_or(0, |r| r.status);
                statuses.push(status);
                std::thread::sleep(Duration::from_millis(2));
            }
            statuses
        })
    };

    let t0 = Instant::now();
    let limit = Duration::from_secs(30);
    b.wait_checks(0, 2, limit);
    let before = b.client_hits();
    b.status.store(503, Ordering::SeqCst);
    let failing_from = b.checks().0;
    // Out after UNHEALTHY failures; stay failing for two checks more.
    b.wait_checks(failing_from, UNHEALTHY + 2, limit);
    b.status.store(200, Ordering::SeqCst);
    let passing_from = b.checks().0;
    // Back after HEALTHY passes; leave time for a few checks with traffic.
    b.wait_checks(passing_from, HEALTHY + 3, limit);
    stop.store(true, Ordering::SeqCst);
    let statuses = client.join().unwrap();
    let elapsed = t0.elapsed();

    let (while_out, failing_but_in, after_return) = replay(&b.events());
    let hits: Vec<usize> = backends.iter().map(|b| b.client_hits()).collect();
    let errors = statuses.iter().filter(|s| **s != 200).count();
    println!(
        "{} requests in {elapsed:?}: per backend {hits:?}, non-200 {errors}; b: {before} before \
         failing, {failing_but_in} while failing below the threshold, {while_out} while out, \
         {after_return} after returning",
        statuses.len()
    );
    assert_eq!(
        while_out, 0,
        "client requests reached b while it was out of rotation"
    );
    assert!(
        failing_but_in > 0,
        "b must stay in rotation until {UNHEALTHY} consecutive failures"
    );
    assert!(after_return > 0, "b must take traffic again once back");
    assert!(before > 0 && hits[0] > 0 && hits[2] > 0);
    assert_eq!(errors, 0, "health transitions must not fail requests");

    // The checks are ELB's: the target port on each server's host, the path, a Host header.
    let check = b
        .events()
        .into_iter()
        .find(|e| matches!(e, Event::Check { .. }))
        .unwrap();
    let Event::Check { host, agent, .. } = check else {
        unreachable!()
    };
    assert_eq!(host, b.addr.to_string());
    assert_eq!(agent, "ELB-HealthChecker/1.0");
    let log = appliance.log_text();
    assert!(
        log.contains("out of rotation") && log.contains("back in rotation"),
        "the transitions are logged:\n{log}"
    );
}

#[test]
fn replay_counts_what_it_should() {
    // The analysis itself must be able to see a violation.
    let check = |ok| Event::Check {
        ok,
        host: String::new(),
        agent: String::new(),
    };
    let client = || Event::Client {
        path: "/".to_string(),
    };
    let events = [
        check(true),
        client(),
        check(false),
        client(),
        check(false),
        client(), // between the flip and the next check: not counted
        check(false),
        client(), // certainly out
        check(true),
        check(true),
        check(true),
        client(), // just flipped back: not counted
        check(true),
        client(),
    ];
    assert_eq!(replay(&events), (1, 1, 1));
}

/// A self-signed certificate and key made with openssl, as the seed makes its own.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=backend.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    (cert, key)
}

#[test]
fn https_and_ssl_checks_handshake_without_verifying_the_certificate() {
    let (_, backends) = backends(&["a", "b"]);
    let (a, b) = (&backends[0], &backends[1]);
    // The check port has a TLS server on a's host only (openssl s_server -www answers GET /
    // with 200); on b's host nothing listens there.
    let check_port = {
        let probe = std::net::TcpListener::bind((a.addr.ip(), 0)).unwrap();
        probe.local_addr().unwrap().port()
    };
    let dir = std::env::temp_dir().join(format!("edge-health-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed(&dir);
    let _tls = support::ChildGuard::spawn(
        "openssl s_server",
        std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("{}:{check_port}", a.addr.ip()))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    support::wait_for_port(
        std::net::SocketAddr::new(a.addr.ip(), check_port),
        Duration::from_secs(10),
    );
    let pool = |name: &str, target: &str| {
        format!(
            r#"
[[http.upstream]]
name = "{name}"
{}
health_check = {{ target = "{target}", interval = "300ms", timeout = "250ms", unhealthy_threshold = 2, healthy_threshold = 2 }}
"#,
            servers(&backends)
        )
    };
    let config = format!(
        r#"{}{}
[[http.server]]
listen = [{{ address = "@LISTEN@" }}]
[[http.server.location]]
path = "/https/"
proxy = {{ pass = "http://https" }}
[[http.server.location]]
path = "/ssl/"
proxy = {{ pass = "http://ssl" }}
"#,
        pool("https", &format!("HTTPS:{check_port}/")),
        pool("ssl", &format!("SSL:{check_port}"))
    );
    let appliance = Appliance::start("health-tls", &config);
    // b goes out of both pools; wait (bounded) until the log says so.
    let out_line = |proto: &str| format!("health check {proto} {}:{check_port}", b.addr.ip());
    let deadline = Instant::now() + Duration::from_secs(20);
    let left = |proto: &str| {
        appliance
            .log_text()
            .lines()
            .any(|l| l.contains(&out_line(proto)) && l.contains("out of rotation"))
    };
    while !(left("HTTPS") && left("SSL")) {
        assert!(
            Instant::now() < deadline,
            "b never left rotation:\n{}",
            appliance.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let b_hits = b.client_hits();
    // Over several more intervals a's checks keep passing: every request is answered by a.
    let until = Instant::now() + Duration::from_millis(1500);
    let mut n = 0;
    while Instant::now() < until {
        for prefix in ["/https/", "/ssl/"] {
            let r = appliance.get(prefix, None);
            assert_eq!((r.status, r.body.as_str()), (200, "a"), "{prefix}");
            n += 1;
        }
    }
    println!("{n} requests, all to a; b out of both pools");
    assert_eq!(b.client_hits(), b_hits);
    let log = appliance.log_text();
    assert!(
        !log.contains(&format!("health check HTTPS {}:", a.addr.ip()))
            && !log.contains(&format!("health check SSL {}:", a.addr.ip())),
        "a's TLS checks never failed:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! Zero-downtime reload, shown on real processes: ten reloads under wrk load that move traffic
//! between two backends lose no request (and Debian's nginx doing the same is printed beside
//! it); a broken config changes nothing and is logged with its location; a reload that moves
//! the listeners keeps the old port answering throughout and opens the new one.
//!
//! Configs are appliance.toml for now; the nginx.conf variants join when the nginx parser
//! lands (`config_pair` is where they go).

mod ops_common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ops_common::*;

const RELOADS: usize = 10;

/// An appliance.toml proxying `listen` to one backend port.
fn toml(pid: &Path, error_log: &Path, listens: &[u16], backend: u16, admin: Option<u16>) -> String {
    let mut t = format!(
        "[global]\npid = \"{}\"\nerror_log = {{ path = \"{}\", level = \"info\" }}\n",
        pid.display(),
        error_log.display()
    );
    if let Some(a) = admin {
        t.push_str(&format!("[admin]\nlisten = \"127.0.0.1:{a}\"\n"));
    }
    t.push_str(&format!(
        "[[http.upstream]]\nname = \"pool\"\nkeepalive = 32\nserver = [{{ address = \"127.0.0.1:{backend}\" }}]\n\
         [[http.server]]\nlisten = [{}]\n[[http.server.location]]\npath = \"/\"\n\
         proxy = {{ pass = \"http://pool\", http_version = \"1.1\", set_header = {{ Connection = \"\" }} }}\n",
        listens
            .iter()
            .map(|p| format!("{{ address = \"127.0.0.1:{p}\" }}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    t
}

/// Debian's nginx as the load balancer, for the side-by-side numbers.
fn nginx_lb_conf(pid: &Path, err: &Path, listen: u16, backend: u16) -> String {
    format!(
        "pid {};\nerror_log {} error;\nworker_processes 2;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  upstream pool {{ server 127.0.0.1:{backend}; keepalive 32; }}\n\
         server {{ listen 127.0.0.1:{listen}; location / {{ proxy_pass http://pool; \
         proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n}}\n",
        pid.display(),
        err.display()
    )
}

fn body_at(port: u16) -> Option<String> {
    get(local(port), "/", &[])
        .ok()
        .map(|(_, b)| b.trim().to_string())
}

/// Runs wrk for the duration of `RELOADS` reloads, one a second: `reload(i)` switches the
/// config and signals; afterwards each reload's effect is checked by `expect(i)`.
fn reloads_under_load(
    port: u16,
    mut reload: impl FnMut(usize),
) -> (Wrk, String, Vec<(String, String)>) {
    let load = wrk(&format!("http://127.0.0.1:{port}/"), RELOADS as u32 + 2, 16);
    std::thread::sleep(Duration::from_millis(700));
    let mut seen = Vec::new();
    for i in 0..RELOADS {
        reload(i);
        let want = if i % 2 == 0 { "B" } else { "A" };
        // The switch is visible to a new request soon after the signal.
        wait_until(Duration::from_secs(5), || {
            body_at(port).as_deref() == Some(want)
        });
        seen.push((want.to_string(), body_at(port).unwrap_or_default()));
        std::thread::sleep(Duration::from_millis(800));
    }
    let (numbers, text) = load.join().expect("wrk thread");
    (numbers, text, seen)
}

#[test]
fn ten_reloads_under_load_lose_no_request_beside_nginx() {
    let dir = Scratch::new("reload-load");
    let (a, b) = (free_port(), free_port());
    let (bconf, bpid) = backend_conf(&dir, "backends", &[(a, "A"), (b, "B")]);
    let _backends = nginx(&bconf, bpid);
    assert!(wait_until(Duration::from_secs(5), || body_at(a).is_some()
        && body_at(b).is_some()));

    // The appliance.
    let port = free_port();
    let admin = free_port();
    let pid = dir.path("app.pid");
    let err = dir.path("error.log");
    let conf_a = toml(&pid, &err, &[port], a, Some(admin));
    let conf_b = toml(&pid, &err, &[port], b, Some(admin));
    let conf = dir.write("app.toml", &conf_a);
    let app = appliance(
        &["run", "-c", &conf.to_string_lossy()],
        Some(pid.clone()),
        &dir.path("app.stderr"),
    );
    assert!(wait_until(Duration::from_secs(10), || body_at(port)
        .as_deref()
        == Some("A")));
    let app_pid = app.pid().expect("the appliance's pid");
    let (ours, ours_text, ours_seen) = reloads_under_load(port, |i| {
        std::fs::write(&conf, if i % 2 == 0 { &conf_b } else { &conf_a }).unwrap();
        assert!(kill(app_pid, libc::SIGHUP));
    });
    let metrics = get(local(admin), "/metrics", &[])
        .map(|(_, b)| b)
        .unwrap_or_default();

    // Debian's nginx, the same way.
    let nport = free_port();
    let npid = dir.path("nginx-lb.pid");
    let nerr = dir.path("nginx-lb.err");
    let nconf_a = nginx_lb_conf(&npid, &nerr, nport, a);
    let nconf_b = nginx_lb_conf(&npid, &nerr, nport, b);
    let nconf = dir.write("nginx-lb.conf", &nconf_a);
    let _lb = nginx(&nconf, npid.clone());
    assert!(wait_until(Duration::from_secs(10), || body_at(nport)
        .as_deref()
        == Some("A")));
    let (theirs, theirs_text, _) = reloads_under_load(nport, |i| {
        std::fs::write(&nconf, if i % 2 == 0 { &nconf_b } else { &nconf_a }).unwrap();
        let ok = std::process::Command::new("nginx")
            .arg("-c")
            .arg(&nconf)
            .args(["-s", "reload"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "nginx -s reload");
    });

    println!("{RELOADS} reloads during wrk -t2 -c16 -d{}s:", RELOADS + 2);
    println!(
        "  appliance (SIGHUP):      {:>8} requests, {} non-2xx, socket errors connect {} read {} write {} timeout {}",
        ours.requests, ours.non_2xx, ours.connect_errors, ours.read_errors, ours.write_errors, ours.timeouts
    );
    println!(
        "  nginx 1.22 (-s reload):  {:>8} requests, {} non-2xx, socket errors connect {} read {} write {} timeout {}",
        theirs.requests, theirs.non_2xx, theirs.connect_errors, theirs.read_errors, theirs.write_errors, theirs.timeouts
    );
    assert!(ours.requests > 0, "wrk sent nothing:\n{ours_text}");
    assert!(
        theirs.requests > 0,
        "wrk against nginx sent nothing:\n{theirs_text}"
    );
    assert_eq!(
        ours.errors(),
        0,
        "the appliance lost requests:\n{ours_text}"
    );
    for (want, got) in &ours_seen {
        assert_eq!(
            want, got,
            "a reload did not move the traffic: {ours_seen:?}"
        );
    }
    assert!(
        metrics.contains(&format!(
            "appliance_reloads_total{{result=\"ok\"}} {RELOADS}"
        )),
        "{metrics}"
    );
    assert_eq!(
        app.pid(),
        Some(app_pid),
        "a same-listener reload keeps the process"
    );
}

#[test]
fn a_broken_config_changes_nothing_and_is_logged_with_its_line() {
    let dir = Scratch::new("reload-broken");
    let mut backend_a = Backend::start_anywhere("A");
    let backend_b = Backend::start_anywhere("B");
    let port = free_port();
    let pid = dir.path("app.pid");
    let err = dir.path("error.log");
    let good = toml(&pid, &err, &[port], backend_a.port, None);
    let conf = dir.write("app.toml", &good);
    let app = appliance(
        &["run", "-c", &conf.to_string_lossy()],
        Some(pid.clone()),
        &dir.path("stderr"),
    );
    assert!(wait_until(Duration::from_secs(10), || body_at(port)
        .as_deref()
        == Some("A")));
    let app_pid = app.pid().unwrap();

    // A syntax error on line 3 of a config that would move traffic to B.
    let moved = toml(&pid, &err, &[port], backend_b.port, None);
    let mut lines: Vec<&str> = moved.lines().collect();
    lines.insert(2, "this is not toml");
    let broken = lines.join("\n") + "\n";
    let broken_line = 3;
    std::fs::write(&conf, &broken).unwrap();
    assert!(kill(app_pid, libc::SIGHUP));
    let wanted = format!("{}:{broken_line}", conf.display());
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&err)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("[emerg]") && l.contains(&wanted))),
        "no [emerg] line naming {wanted} in:\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    for _ in 0..20 {
        assert_eq!(
            body_at(port).as_deref(),
            Some("A"),
            "traffic moved after a failed reload"
        );
    }

    // A config that parses but names a pool that does not exist.
    let unknown =
        toml(&pid, &err, &[port], backend_b.port, None).replace("http://pool", "http://nopool");
    std::fs::write(&conf, &unknown).unwrap();
    assert!(kill(app_pid, libc::SIGHUP));
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&err)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("[emerg]") && l.contains(&conf.display().to_string()))
            .count()
            >= 2
    }));
    assert_eq!(body_at(port).as_deref(), Some("A"));
    assert_eq!(app.pid(), Some(app_pid));
    println!(
        "error log after two failed reloads:\n{}",
        std::fs::read_to_string(&err)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("[emerg]"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    backend_a.stop();
}

#[test]
fn a_reload_that_moves_listeners_keeps_the_old_port_answering() {
    let dir = Scratch::new("reload-listen");
    let backend = Backend::start_anywhere("A");
    let (p1, p2) = (free_port(), free_port());
    let admin = free_port();
    let pid = dir.path("app.pid");
    let err = dir.path("error.log");
    let conf = dir.write(
        "app.toml",
        &toml(&pid, &err, &[p1], backend.port, Some(admin)),
    );
    let app = appliance(
        &["run", "-c", &conf.to_string_lossy()],
        Some(pid.clone()),
        &dir.path("stderr"),
    );
    assert!(wait_until(Duration::from_secs(10), || body_at(p1)
        .as_deref()
        == Some("A")));
    let first = app.pid().unwrap();

    // A client that opens a new connection for every request to the old port, throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let poller = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                match get(local(p1), "/", &[]) {
                    Ok((200, b)) if b.trim() == "A" => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.push(format!("{other:?}"));
                    }
                }
            }
            errors
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    // Add a listener: a new process takes the old socket and binds the new one.
    std::fs::write(
        &conf,
        toml(&pid, &err, &[p1, p2], backend.port, Some(admin)),
    )
    .unwrap();
    assert!(kill(first, libc::SIGHUP));
    assert!(
        wait_until(Duration::from_secs(15), || body_at(p2).as_deref()
            == Some("A")),
        "the new port does not answer; error log:\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    assert!(
        wait_until(Duration::from_secs(15), || !alive(first)),
        "the old process did not stop"
    );
    let second = read_pid(&pid).expect("the new process wrote the pid file");
    assert_ne!(second, first);
    std::thread::sleep(Duration::from_millis(300));

    // And take it away again: the old port keeps answering, the removed one closes.
    std::fs::write(&conf, toml(&pid, &err, &[p1], backend.port, Some(admin))).unwrap();
    assert!(kill(second, libc::SIGHUP));
    assert!(wait_until(Duration::from_secs(15), || !alive(second)));
    assert!(
        wait_until(Duration::from_secs(5), || body_at(p2).is_none()),
        "the removed port still answers"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let errors = poller.join().unwrap();
    println!(
        "old port during two listener-changing reloads: {} answered, {} failed",
        ok.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst)
    );
    assert!(ok.load(Ordering::SeqCst) > 0);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "the old port failed: {errors:?}"
    );
    let metrics = get(local(admin), "/metrics", &[])
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert!(
        metrics.contains("appliance_http_requests_total"),
        "{metrics}"
    );
    drop(app);
}

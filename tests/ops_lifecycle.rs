//! The process's life as systemd and operators see it: sd_notify's READY/RELOADING/MAINPID/
//! STOPPING on a socket of the test's, nginx's USR2 binary upgrade (the old process serves on
//! until QUIT, its pid file as `.oldbin`), and a failed upgrade that leaves the old process as
//! it was. Access logs in several formats, `access_log off`, and several logs per location.

mod ops_common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ops_common::*;

fn toml(dir: &Scratch, listens: &[u16], backend: u16) -> String {
    format!(
        "[global]\npid = \"{}\"\nerror_log = {{ path = \"{}\", level = \"info\" }}\n\
         [[http.upstream]]\nname = \"pool\"\nserver = [{{ address = \"127.0.0.1:{backend}\" }}]\n\
         [[http.server]]\nlisten = [{}]\n[[http.server.location]]\npath = \"/\"\nproxy = {{ pass = \"http://pool\" }}\n",
        dir.path("app.pid").display(),
        dir.path("error.log").display(),
        listens
            .iter()
            .map(|p| format!("{{ address = \"127.0.0.1:{p}\" }}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn answers(port: u16) -> bool {
    get(local(port), "/", &[]).map(|r| r.0) == Ok(200)
}

/// Collects what the appliance tells systemd.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    fn bind(path: &Path) -> Notifications {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Notifications {
            socket,
            seen: Vec::new(),
        }
    }

    /// Waits for a message containing every one of `parts`; returns it.
    fn wait_for(&mut self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self
                .seen
                .iter()
                .find(|m| parts.iter().all(|p| m.lines().any(|l| l == *p)))
            {
                return m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no notification with {parts:?}; got {:?}",
                self.seen
            );
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }
}

#[test]
fn systemd_hears_ready_reloading_mainpid_and_stopping() {
    let dir = Scratch::new("notify");
    let backend = Backend::start_anywhere("A");
    let (p1, p2) = (free_port(), free_port());
    let mut notes = Notifications::bind(&dir.path("notify.sock"));
    let conf = dir.write("app.toml", &toml(&dir, &[p1], backend.port));
    let err = std::fs::File::create(dir.path("stderr")).unwrap();
    let mut cmd = Command::new(appliance_bin());
    cmd.args(["run", "-c", &conf.to_string_lossy()])
        .env("NOTIFY_SOCKET", dir.path("notify.sock"))
        .stdin(Stdio::null())
        .stderr(err);
    let app = Proc::spawn(&mut cmd, Some(dir.path("app.pid")));
    let first = app.child.as_ref().unwrap().id();
    notes.wait_for(&["READY=1", &format!("MAINPID={first}")]);
    assert!(answers(p1));

    // A reload in place: RELOADING=1, then READY=1 again.
    notes.seen.clear();
    assert!(kill(first as i32, libc::SIGHUP));
    notes.wait_for(&["RELOADING=1"]);
    notes.wait_for(&["READY=1"]);

    // A reload that changes the listeners: the new process announces itself as the main one,
    // and the old one does not say STOPPING (systemd would take the unit down).
    notes.seen.clear();
    std::fs::write(&conf, toml(&dir, &[p1, p2], backend.port)).unwrap();
    assert!(kill(first as i32, libc::SIGHUP));
    assert!(wait_until(Duration::from_secs(15), || answers(p2)));
    let second = read_pid(&dir.path("app.pid")).unwrap();
    assert_ne!(second, first as i32);
    notes.wait_for(&["READY=1", &format!("MAINPID={second}")]);
    assert!(wait_until(Duration::from_secs(15), || !alive(first as i32)));
    std::thread::sleep(Duration::from_millis(200));
    let _ = notes.socket.recv(&mut [0u8; 4096]).map(|_| ());
    assert!(
        !notes.seen.iter().any(|m| m.contains("STOPPING=1")),
        "the handing-over process said STOPPING: {:?}",
        notes.seen
    );

    // QUIT: STOPPING=1.
    assert!(kill(second, libc::SIGQUIT));
    notes.wait_for(&["STOPPING=1"]);
    assert!(wait_until(Duration::from_secs(10), || !alive(second)));
    println!("notifications: {:?}", notes.seen);
}

#[test]
fn usr2_upgrades_the_binary_and_the_old_process_serves_until_quit() {
    let dir = Scratch::new("usr2");
    let backend = Backend::start_anywhere("A");
    let port = free_port();
    let pid = dir.path("app.pid");
    let oldbin = PathBuf::from(format!("{}.oldbin", pid.display()));
    let conf = dir.write("app.toml", &toml(&dir, &[port], backend.port));
    let app = appliance(
        &["run", "-c", &conf.to_string_lossy()],
        Some(pid.clone()),
        &dir.path("stderr"),
    );
    assert!(wait_until(Duration::from_secs(10), || answers(port)));
    let old = app.pid().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let poller = {
        let (stop, failed, served) = (stop.clone(), failed.clone(), served.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                if answers(port) {
                    served.fetch_add(1, Ordering::SeqCst);
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };

    assert!(kill(old, libc::SIGUSR2));
    assert!(wait_until(Duration::from_secs(15), || read_pid(&oldbin)
        == Some(old)
        && read_pid(&pid).is_some_and(|p| p != old)));
    let new = read_pid(&pid).unwrap();
    assert!(
        alive(old) && alive(new),
        "both serve until the old one gets QUIT"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(kill(old, libc::SIGQUIT));
    assert!(wait_until(Duration::from_secs(10), || !alive(old)));
    assert!(
        wait_until(Duration::from_secs(2), || !oldbin.exists()),
        "the old process left .oldbin"
    );
    assert_eq!(read_pid(&pid), Some(new));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    poller.join().unwrap();
    println!(
        "USR2 + QUIT: {} requests answered, {} failed",
        served.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst)
    );
    assert!(served.load(Ordering::SeqCst) > 0);
    assert_eq!(failed.load(Ordering::SeqCst), 0);

    // A new binary that cannot start (the config broke meanwhile): the old process stays the
    // main one, with its pid file back in place.
    std::fs::write(&conf, "this is not toml\n").unwrap();
    assert!(kill(new, libc::SIGUSR2));
    let log = dir.path("error.log");
    assert!(wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("changing the binary failed"))
    }));
    assert_eq!(read_pid(&pid), Some(new));
    assert!(!oldbin.exists());
    assert!(answers(port));
    drop(app);
}

#[test]
fn access_logs_in_formats_off_and_several_per_location() {
    let dir = Scratch::new("logs");
    let backend = Backend::start_anywhere("A");
    let port = free_port();
    let (combined, json, custom) = (
        dir.path("combined.log"),
        dir.path("json.log"),
        dir.path("custom.log"),
    );
    let conf = dir.write(
        "app.toml",
        &format!(
            "[global]\npid = \"{}\"\n[http]\naccess_log = [{{ path = \"{}\" }}]\n\
             [[http.log_format]]\nname = \"main\"\ntemplate = '$status|$request_method|$uri|$upstream_addr|$http_x_note'\n\
             [[http.upstream]]\nname = \"pool\"\nserver = [{{ address = \"127.0.0.1:{}\" }}]\n\
             [[http.server]]\nlisten = [{{ address = \"127.0.0.1:{port}\" }}]\n\
             [[http.server.location]]\npath = \"/\"\nproxy = {{ pass = \"http://pool\" }}\n\
             access_log = [{{ path = \"{}\", format = \"json\" }}, {{ path = \"{}\", format = \"main\" }}]\n\
             [[http.server.location]]\npath = \"/quiet\"\nproxy = {{ pass = \"http://pool\" }}\naccess_log = []\n\
             [[http.server.location]]\npath = \"/inherit\"\nproxy = {{ pass = \"http://pool\" }}\n\
             [[http.server.location]]\npath = \"/cond\"\nproxy = {{ pass = \"http://pool\" }}\n\
             access_log = [{{ path = \"{}\", format = \"main\", if = \"$arg_log\" }}]\n",
            dir.path("app.pid").display(),
            combined.display(),
            backend.port,
            json.display(),
            custom.display(),
            custom.display()
        ),
    );
    let _app = appliance(
        &["run", "-c", &conf.to_string_lossy()],
        Some(dir.path("app.pid")),
        &dir.path("stderr"),
    );
    assert!(wait_until(Duration::from_secs(10), || answers(port)));
    get(local(port), "/a?x=1", &[("X-Note", "say \"hi\"")]).unwrap();
    get(local(port), "/quiet", &[]).unwrap();
    // if=: written when the value is neither empty nor 0.
    for query in ["/cond?log=0", "/cond", "/cond?log=yes"] {
        get(local(port), query, &[]).unwrap();
    }
    get(local(port), "/inherit", &[("User-Agent", "tester/1")]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&combined).is_ok_and(|t| t.contains("/inherit"))
    }));
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&custom).is_ok_and(|t| t.lines().count() >= 3)
    }));

    let json_text = std::fs::read_to_string(&json).unwrap();
    let custom_text = std::fs::read_to_string(&custom).unwrap();
    let combined_text = std::fs::read_to_string(&combined).unwrap();
    // The location's two logs get its requests (the first line is the readiness probe's).
    let last: serde_json::Value = serde_json::from_str(json_text.lines().last().unwrap()).unwrap();
    assert_eq!(last["request"], "GET /a?x=1 HTTP/1.1");
    assert_eq!(last["status"], 200);
    assert_eq!(last["upstream_addr"], format!("127.0.0.1:{}", backend.port));
    let custom_lines: Vec<&str> = custom_text.lines().collect();
    let upstream = format!("127.0.0.1:{}", backend.port);
    assert_eq!(
        custom_lines[custom_lines.len() - 2..],
        [
            format!("200|GET|/a|{upstream}|say \\x22hi\\x22"),
            format!("200|GET|/cond|{upstream}|-"),
        ],
        "{custom_text}"
    );
    // access_log off logs nothing anywhere; a location without its own logs inherits http's.
    for text in [&json_text, &custom_text, &combined_text] {
        assert!(!text.contains("/quiet"), "{text}");
    }
    let re = regex::Regex::new(
        r#"^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /inherit HTTP/1\.1" 200 2 "-" "tester/1"$"#,
    )
    .unwrap();
    assert!(
        combined_text.lines().any(|l| re.is_match(l)),
        "{combined_text}"
    );
    assert!(!combined_text.contains("/a?x=1"));
}

/// A TCP echo server on loopback, serving each connection on a thread of its own.
fn echo_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = std::io::Read::read(&mut conn, &mut buf) {
                    if n == 0 || std::io::Write::write_all(&mut conn, &buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// One line there and back on an open stream session.
fn echoes(session: &mut std::net::TcpStream, line: &[u8]) -> bool {
    use std::io::{Read, Write};
    let mut back = vec![0u8; line.len()];
    session.write_all(line).is_ok() && session.read_exact(&mut back).is_ok() && back == line
}

/// nginx (Debian's) or the appliance, proxying TCP on `port` to `echo` with `main` in the main
/// context; with the pid it writes.
fn stream_proxy(dir: &Scratch, name: &str, main: &str, port: u16, echo: u16) -> Proc {
    let pid = dir.path(&format!("{name}.pid"));
    // Debian builds nginx's stream module as a dynamic one; the appliance accepts the line.
    let conf = dir.write(
        &format!("{name}.conf"),
        &format!(
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\npid {};\n\
             error_log {} info;\n{main}\nevents {{}}\n\
             stream {{ server {{ listen 127.0.0.1:{port}; proxy_pass 127.0.0.1:{echo}; }} }}\n",
            pid.display(),
            dir.path(&format!("{name}.err")).display()
        ),
    );
    let proc = match name {
        "nginx" => nginx(&conf, pid),
        _ => appliance(
            &["run", "-c", &conf.to_string_lossy()],
            Some(pid),
            &dir.path(&format!("{name}.stderr")),
        ),
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(local(port)).is_ok() && proc.pid().is_some()
        }),
        "{name} does not listen"
    );
    proc
}

/// A session through the proxy on `port`, checked to work.
fn open_session(name: &str, port: u16) -> std::net::TcpStream {
    let mut session = std::net::TcpStream::connect(local(port)).unwrap();
    session
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        echoes(&mut session, b"before\n"),
        "{name}: the session works"
    );
    session
}

#[test]
fn a_graceful_stop_lets_stream_sessions_finish_as_nginx_does() {
    let dir = Scratch::new("stream-quit");
    let echo = echo_server();
    for name in ["nginx", "appliance"] {
        let port = free_port();
        let proc = stream_proxy(&dir, name, "", port, echo);
        let mut session = open_session(name, port);
        let pid = proc.pid().unwrap();
        assert!(kill(pid, libc::SIGQUIT));
        // The session outlives the stop's start, and keeps the process up while it lasts.
        std::thread::sleep(Duration::from_millis(500));
        assert!(echoes(&mut session, b"after QUIT\n"), "{name}: cut by QUIT");
        // Nothing listens any more: a new client is refused at once, not left waiting in the
        // backlog of a process that will not accept it.
        let late = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.kind());
        assert_eq!(
            late.err(),
            Some(std::io::ErrorKind::ConnectionRefused),
            "{name} still listens after QUIT"
        );
        assert!(alive(pid), "{name} exited with a session open");
        drop(session);
        assert!(
            wait_until(Duration::from_secs(10), || !alive(pid)),
            "{name} is still up after its last session ended"
        );
    }
}

#[test]
fn worker_shutdown_timeout_ends_what_is_left_as_nginx_does() {
    let dir = Scratch::new("stream-shutdown-timeout");
    let echo = echo_server();
    for name in ["nginx", "appliance"] {
        let port = free_port();
        let proc = stream_proxy(&dir, name, "worker_shutdown_timeout 1s;", port, echo);
        let mut session = open_session(name, port);
        let pid = proc.pid().unwrap();
        assert!(kill(pid, libc::SIGQUIT));
        // The session is left open, and the process exits once the timeout has passed,
        // closing it.
        assert!(
            wait_until(Duration::from_secs(15), || !alive(pid)),
            "{name} is still up with worker_shutdown_timeout 1s"
        );
        assert!(!echoes(&mut session, b"after the timeout\n"), "{name}");
    }
}

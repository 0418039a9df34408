//! What the edge tests (health, sticky, drain) share: recording backends, a raw HTTP client,
//! and the appliance run from an appliance.toml. Each test file includes it with
//! `#[path = "edge/mod.rs"] mod edge;` after `mod support;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{appliance_bin, free_port, wait_for_port, ChildGuard};

/// What a backend saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A health check answered: whether it passed, its Host and User-Agent.
    Check {
        ok: bool,
        host: String,
        agent: String,
    },
    /// A request that was not a health check.
    Client { path: String },
}

/// A backend on its own loopback address: `/status` answers `status` (a health check),
/// `/slow?ms=N` answers after N ms, `/login` sets `JSESSIONID`, anything else answers at once.
/// Every answer's body is the backend's name; it also says so in `X-Backend`.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    events: Arc<Mutex<Vec<Event>>>,
    stop: Arc<AtomicBool>,
    sessions: Arc<AtomicU64>,
}

impl Backend {
    pub fn start(name: &str, listener: TcpListener) -> Backend {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        listener
            .set_nonblocking(true)
            .expect("a listener can be non-blocking");
        let backend = Backend {
            name: name.to_string(),
            addr,
            status: Arc::new(AtomicU16::new(200)),
            events: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            sessions: Arc::new(AtomicU64::new(0)),
        };
        let shared = backend.shared();
        std::thread::spawn(move || {
            // Polls so that `stop` can close the listener: connections are refused from then on.
            while !shared.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let shared = shared.clone();
                        std::thread::spawn(move || shared.serve(conn));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        backend
    }

    fn shared(&self) -> Shared {
        Shared {
            name: self.name.clone(),
            status: self.status.clone(),
            events: self.events.clone(),
            stop: self.stop.clone(),
            sessions: self.sessions.clone(),
        }
    }

    /// Closes the listener: the backend is gone.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Let the accept loop see it and drop the listener.
        std::thread::sleep(Duration::from_millis(20));
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Client requests (not health checks) so far.
    pub fn client_hits(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Event::Client { .. }))
            .count()
    }

    /// Health checks answered so far, and how many of them passed.
    pub fn checks(&self) -> (usize, usize) {
        let events = self.events();
        let all = events
            .iter()
            .filter(|e| matches!(e, Event::Check { .. }))
            .count();
        let ok = events
            .iter()
            .filter(|e| matches!(e, Event::Check { ok: true, .. }))
            .count();
        (all, ok)
    }

    /// Waits until the backend has answered `n` more health checks than `since`.
    pub fn wait_checks(&self, since: usize, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.checks().0 < since + n {
            assert!(
                Instant::now() < deadline,
                "{}: {n} health checks did not arrive in {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[derive(Clone)]
struct Shared {
    name: String,
    status: Arc<AtomicU16>,
    events: Arc<Mutex<Vec<Event>>>,
    stop: Arc<AtomicBool>,
    sessions: Arc<AtomicU64>,
}

impl Shared {
    fn serve(&self, conn: TcpStream) {
        let _ = conn.set_nonblocking(false);
        let Ok(read_half) = conn.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(read_half);
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) | Err(_) => return,
                Ok(_) if h == "\r\n" || h == "\n" => break,
                Ok(_) => {
                    if let Some((k, v)) = h.split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut status = 200;
        let mut extra = String::new();
        if path == "/status" {
            status = self.status.load(Ordering::SeqCst);
            self.events.lock().unwrap().push(Event::Check {
                ok: status == 200,
                host: header("host"),
                agent: header("user-agent"),
            });
        } else {
            self.events
                .lock()
                .unwrap()
                .push(Event::Client { path: path.clone() });
            if let Some(ms) = path.strip_prefix("/slow?ms=") {
                std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            }
            if path == "/login" {
                let n = self.sessions.fetch_add(1, Ordering::SeqCst);
                extra = format!("Set-Cookie: JSESSIONID={}-{n}; Path=/\r\n", self.name);
            }
        }
        let body = &self.name;
        let reply = format!(
            "HTTP/1.1 {status} X\r\nX-Backend: {body}\r\n{extra}Content-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let mut conn = conn;
        let _ = conn.write_all(reply.as_bytes());
    }
}

/// `n` listeners on one port, on 127.A.B.1 ... 127.A.B.n for a random A.B: ELB checks one
/// target port on every instance's host, so the backends of a checked pool need their own
/// addresses.
pub fn hosts(n: usize) -> (u16, Vec<TcpListener>) {
    for _ in 0..100 {
        let (a, b) = (fastrand_u8(), fastrand_u8());
        let Ok(first) = TcpListener::bind(format!("127.{a}.{b}.1:0")) else {
            continue;
        };
        let port = first.local_addr().unwrap().port();
        let mut all = vec![first];
        for i in 2..=n {
            match TcpListener::bind(format!("127.{a}.{b}.{i}:{port}")) {
                Ok(l) => all.push(l),
                Err(_) => break,
            }
        }
        if all.len() == n {
            return (port, all);
        }
    }
    panic!("no loopback port free on {n} addresses");
}

fn fastrand_u8() -> u8 {
    // No RNG dependency in the tests: the clock's nanoseconds and the process id suffice to
    // keep parallel tests apart.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = nanos.wrapping_mul(2_654_435_761) ^ std::process::id().wrapping_mul(40_503);
    (mixed % 250) as u8 + 2
}

/// A backend on each of `names`, all on one port.
pub fn backends(names: &[&str]) -> (u16, Vec<Backend>) {
    let (port, listeners) = hosts(names.len());
    let backends = names
        .iter()
        .zip(listeners)
        .map(|(n, l)| Backend::start(n, l))
        .collect();
    (port, backends)
}

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `name=value` of the response's `Set-Cookie` for `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.split(';').next().unwrap_or("").trim().to_string())
            .find(|c| c.starts_with(&format!("{name}=")))
    }

    /// The whole `Set-Cookie` header for `name`.
    pub fn set_cookie_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .find(|v| v.starts_with(&format!("{name}=")))
    }
}

/// A GET over a fresh connection, with an optional `Cookie` header.
pub fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> std::io::Result<Response> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: edge.test\r\n{cookie}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("no header end: {text:?}"),
        )
    })?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_string(),
    })
}

/// An appliance process serving an appliance.toml from its own directory.
pub struct Appliance {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    guard: ChildGuard,
}

impl Appliance {
    /// Starts `appliance run -c appliance.toml` with `config`, in which `@LISTEN@` is replaced
    /// by a free loopback address, and waits for it to listen.
    pub fn start(test: &str, config: &str) -> Appliance {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let dir =
            std::env::temp_dir().join(format!("appliance-{test}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("appliance.toml");
        std::fs::write(&path, config.replace("@LISTEN@", &addr.to_string())).unwrap();
        let log = dir.join("appliance.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let guard = ChildGuard::spawn(
            "appliance",
            Command::new(appliance_bin())
                .arg("run")
                .arg("-c")
                .arg(&path)
                .env("APPLIANCE_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file),
        );
        let appliance = Appliance {
            addr,
            dir,
            config: path,
            log,
            guard,
        };
        wait_for_port(addr, Duration::from_secs(20));
        appliance
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes a new config (same `@LISTEN@`) and sends SIGHUP; waits until the log says the
    /// new configuration is in use.
    pub fn reload(&self, config: &str) {
        let before = self
            .log_text()
            .matches("reconfigured: new requests use the new configuration")
            .count();
        std::fs::write(
            &self.config,
            config.replace("@LISTEN@", &self.addr.to_string()),
        )
        .unwrap();
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.guard.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -HUP failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self
            .log_text()
            .matches("reconfigured: new requests use the new configuration")
            .count()
            == before
        {
            assert!(
                Instant::now() < deadline,
                "the reload did not happen; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str, cookie: Option<&str>) -> Response {
        get(self.addr, path, cookie)
            .unwrap_or_else(|e| panic!("GET {path}: {e}; log:\n{}", self.log_text()))
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `[[http.server]]` listening on `@LISTEN@` and passing everything to `pool`.
pub fn server_passing_to(pool: &str) -> String {
    format!(
        r#"
[[http.server]]
listen = [{{ address = "@LISTEN@" }}]
[[http.server.location]]
path = "/"
proxy = {{ pass = "http://{pool}" }}
"#
    )
}

/// `server = [...]` for the backends, in order.
pub fn servers(backends: &[Backend]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{}\" }}", b.addr))
        .collect();
    format!("server = [{}]", list.join(", "))
}

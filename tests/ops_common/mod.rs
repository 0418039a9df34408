//! Helpers the ops_* tests share: scratch directories, the appliance and Debian's nginx as
//! processes that stop with the test, tiny backends that can be killed and brought back, an
//! HTTP/1.1 client on raw sockets, and wrk.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A fresh directory for one test, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("ops-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("writing a scratch file");
        p
    }

    /// A symlink named `nginx` to the appliance: the binary runs nginx's command line.
    pub fn nginx_symlink(&self) -> PathBuf {
        let link = self.path("nginx");
        if !link.exists() {
            std::os::unix::fs::symlink(appliance_bin(), &link).expect("symlink");
        }
        link
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn appliance_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_appliance"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Sends a signal to a pid.
pub fn kill(pid: i32, signal: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Whether a process runs (a zombie, exited but not reaped, does not).
pub fn alive(pid: i32) -> bool {
    if !kill(pid, 0) {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Waits until `f` is true, polling; false after `limit`.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// A process (and whatever pid file it names) stopped when the test ends: the child and the
/// pid in the pid file get SIGTERM, then SIGKILL if they linger.
pub struct Proc {
    pub child: Option<Child>,
    pub pid_file: Option<PathBuf>,
}

impl Proc {
    pub fn spawn(command: &mut Command, pid_file: Option<PathBuf>) -> Proc {
        let child = command.spawn().expect("starting a process");
        Proc {
            child: Some(child),
            pid_file,
        }
    }

    pub fn pid(&self) -> Option<i32> {
        self.pid_file
            .as_deref()
            .and_then(read_pid)
            .or_else(|| self.child.as_ref().map(|c| c.id() as i32))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let mut pids = Vec::new();
        if let Some(p) = self.pid_file.as_deref().and_then(read_pid) {
            pids.push(p);
        }
        if let Some(p) = self
            .pid_file
            .as_ref()
            .map(|p| PathBuf::from(format!("{}.oldbin", p.display())))
            .as_deref()
            .and_then(read_pid)
        {
            pids.push(p);
        }
        if let Some(c) = &self.child {
            pids.push(c.id() as i32);
        }
        for p in &pids {
            kill(*p, libc::SIGTERM);
        }
        if let Some(c) = &mut self.child {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in pids {
            if wait_until(Duration::from_secs(5), || !alive(p)) {
                continue;
            }
            kill(p, libc::SIGKILL);
        }
    }
}

/// Runs the appliance with `args` in the foreground (no daemon), stderr to `log`.
pub fn appliance(args: &[&str], pid_file: Option<PathBuf>, log: &Path) -> Proc {
    let err = std::fs::File::create(log).expect("a log file");
    let mut cmd = Command::new(appliance_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    Proc::spawn(&mut cmd, pid_file)
}

/// Debian's nginx on a config of the test's, in the foreground (`daemon off`).
pub fn nginx(conf: &Path, pid_file: PathBuf) -> Proc {
    let mut cmd = Command::new("nginx");
    cmd.arg("-c")
        .arg(conf)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Proc::spawn(&mut cmd, Some(pid_file))
}

/// An nginx.conf for Debian's nginx serving `body` on each port (the backends of a test).
pub fn backend_conf(dir: &Scratch, name: &str, ports: &[(u16, &str)]) -> (PathBuf, PathBuf) {
    let pid = dir.path(&format!("{name}.pid"));
    let mut servers = String::new();
    for (port, body) in ports {
        servers.push_str(&format!(
            "  server {{ listen 127.0.0.1:{port}; keepalive_requests 100000; return 200 \"{body}\\n\"; }}\n"
        ));
    }
    let conf = dir.write(
        &format!("{name}.conf"),
        &format!(
            "pid {};\nerror_log {} error;\nworker_processes 1;\nevents {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n{servers}}}\n",
            pid.display(),
            dir.path(&format!("{name}.err")).display()
        ),
    );
    (conf, pid)
}

/// One HTTP/1.1 request on a new connection: the status and body.
pub fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(format!("no header end in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// What wrk said.
#[derive(Debug, Default, Clone, Copy)]
pub struct Wrk {
    pub requests: u64,
    pub non_2xx: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
}

impl Wrk {
    pub fn errors(&self) -> u64 {
        self.non_2xx + self.connect_errors + self.read_errors + self.write_errors + self.timeouts
    }
}

/// Starts wrk against `url` for `seconds` (bounded); join to get its numbers.
pub fn wrk(url: &str, seconds: u32, connections: u32) -> JoinHandle<(Wrk, String)> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let out: Output = Command::new("wrk")
            .args([
                "-t2",
                &format!("-c{connections}"),
                &format!("-d{seconds}s"),
                "--timeout",
                "5s",
                &url,
            ])
            .output()
            .expect("wrk is installed (scripts/test-all installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (parse_wrk(&text), text)
    })
}

pub fn parse_wrk(text: &str) -> Wrk {
    let mut w = Wrk::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line
            .strip_suffix(" requests in")
            .or_else(|| line.split_once(" requests in ").map(|(n, _)| n))
        {
            w.requests = rest.trim().parse().unwrap_or(0);
        }
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = n.trim().parse().unwrap_or(0);
        }
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                let mut words = part.split_whitespace();
                let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n = n.parse().unwrap_or(0);
                match kind {
                    "connect" => w.connect_errors = n,
                    "read" => w.read_errors = n,
                    "write" => w.write_errors = n,
                    "timeout" => w.timeouts = n,
                    _ => {}
                }
            }
        }
    }
    w
}

/// A backend that can be stopped and started again on the same port: it answers every
/// request with its name.
pub struct Backend {
    pub port: u16,
    name: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start(name: &str, port: u16) -> Backend {
        let listener = TcpListener::bind(local(port)).expect("the backend's port");
        Backend::serving(name, listener)
    }

    /// On a port the kernel picks as it binds: no other socket can take the port between
    /// choosing it and listening on it, as one can after [`free_port`].
    pub fn start_anywhere(name: &str) -> Backend {
        let listener = TcpListener::bind(local(0)).expect("a port for the backend");
        Backend::serving(name, listener)
    }

    fn serving(name: &str, listener: TcpListener) -> Backend {
        let mut b = Backend {
            port: listener.local_addr().expect("the backend's address").port(),
            name: name.to_string(),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        b.serve(listener);
        b
    }

    /// Starts again on the same port after [`Backend::stop`].
    pub fn resume(&mut self) {
        if self.thread.is_some() {
            return;
        }
        let listener = TcpListener::bind(local(self.port)).expect("the backend's port");
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        self.stop = Arc::new(AtomicBool::new(false));
        let stop = self.stop.clone();
        let body = format!("{}\n", self.name);
        self.thread = Some(std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let body = body.clone();
                std::thread::spawn(move || {
                    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
                    let mut buf = [0u8; 4096];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = conn.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                });
            }
        }));
    }

    /// Stops accepting and closes the port.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(local(self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Replaces `YYYY/MM/DD HH:MM:SS [level] PID#TID: ` with `[level] ` so lines of two programs
/// (and two runs) compare.
pub fn normalize_log_lines(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] \d+#\d+: ").unwrap();
    text.lines()
        .map(|l| re.replace(l, "[$1] ").into_owned())
        .collect()
}

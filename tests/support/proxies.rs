//! Runs a proxy under test from an nginx.conf: Debian's nginx 1.22 (the reference) or
//! `appliance run -c`. Each gets a private temporary directory for its config, pid file and log,
//! is ready when every listen port accepts, and is stopped (its whole process group) on drop.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

const READY_LIMIT: Duration = Duration::from_secs(20);
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// Which program serves the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Appliance,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Appliance => "appliance",
        }
    }
}

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "appliance-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let path = std::env::temp_dir().join(unique);
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// How nginx itself is run (the appliance ignores these), and how readiness is seen.
#[derive(Clone, Copy, Debug, Default)]
pub struct NginxOptions {
    /// `master_process on`: a master and its workers, as in production. Off: one process.
    pub master_process: bool,
    /// Load Debian's dynamic stream module (the appliance has stream built in).
    pub stream_module: bool,
    /// Ready when the ports listen, seen in /proc/net/tcp, rather than when they accept: a
    /// test connection would count as a client (an `ssl_preread` server would route it).
    pub ready_without_connecting: bool,
}

/// A running proxy.
pub struct Proxy {
    pub kind: Kind,
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Proxy {
    /// Writes `config` (a complete nginx.conf) to a fresh directory, starts the proxy on it and
    /// waits until every address in `listen` accepts connections. Panics with the proxy's log if
    /// it exits or is not ready in time.
    pub fn start(kind: Kind, config: &str, listen: &[SocketAddr], options: NginxOptions) -> Proxy {
        let dir = TempDir::new(kind.name());
        let conf = dir.path.join("nginx.conf");
        fs::write(&conf, config).unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
        let (mut command, log) = match kind {
            Kind::Nginx => nginx_command(&dir.path, &conf, options),
            Kind::Appliance => appliance_command(&dir.path, &conf),
        };
        // Its own process group, so that stopping it also stops any workers it forked.
        command.process_group(0).stdin(Stdio::null());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", kind.name()));
        let mut proxy = Proxy {
            kind,
            child,
            log,
            _dir: dir,
        };
        proxy.wait_until_ready(listen, config, options.ready_without_connecting);
        proxy
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the proxy's log (nginx's error log, the appliance's stderr).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn wait_until_ready(&mut self, listen: &[SocketAddr], config: &str, passively: bool) {
        let deadline = Instant::now() + READY_LIMIT;
        let mut pending: Vec<SocketAddr> = listen.to_vec();
        while !pending.is_empty() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before listening on {pending:?}; its log:\n{}\n\
                     its config:\n{config}",
                    self.kind.name(),
                    self.log_tail(40)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} is not listening on {pending:?} after {READY_LIMIT:?}; its log:\n{}\n\
                     its config:\n{config}",
                    self.kind.name(),
                    self.log_tail(40)
                );
            }
            pending.retain(|addr| match passively {
                true => !listening(addr.port()),
                false => TcpStream::connect_timeout(addr, Duration::from_millis(100)).is_err(),
            });
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        stop_group(&mut self.child);
    }
}

/// Stops a child started in its own process group: SIGTERM to the group, then SIGKILL if it is
/// still there after a while. Always reaps the child.
pub fn stop_group(child: &mut Child) {
    let group = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_LIMIT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Workers of a stopped master, or a child that ignored SIGTERM.
    // SAFETY: as above.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = child.wait();
}

fn nginx_command(dir: &Path, conf: &Path, options: NginxOptions) -> (Command, PathBuf) {
    let log = dir.join("error.log");
    let stream = match options.stream_module {
        true => format!(
            "load_module {}/ngx_stream_module.so; ",
            super::nginx::MODULES_DIR
        ),
        false => String::new(),
    };
    let globals = format!(
        "{stream}daemon off; master_process {}; pid {}; error_log {} info;",
        if options.master_process { "on" } else { "off" },
        dir.join("nginx.pid").display(),
        log.display()
    );
    let mut command = Command::new(nginx_bin());
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(&log)
        .arg("-g")
        .arg(globals)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    (command, log)
}

fn appliance_command(dir: &Path, conf: &Path) -> (Command, PathBuf) {
    let log = dir.join("appliance.log");
    let out =
        fs::File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("cannot share {}: {e}", log.display()));
    let mut command = Command::new(super::appliance_bin());
    command
        .arg("run")
        .arg("-c")
        .arg(conf)
        .stdout(out)
        .stderr(err);
    (command, log)
}

/// Debian's nginx: `$NGINX` if set, else /usr/sbin/nginx.
pub fn nginx_bin() -> PathBuf {
    std::env::var_os("NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

/// Whether a socket listens on `port` (any address), without connecting to it.
fn listening(port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3 && fields[1].ends_with(&wanted) && fields[3] == "0A"
            })
        })
    })
}

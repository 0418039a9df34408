//! Shared by the integration tests: where the corpus is, free ports, processes that die with
//! the test, waiting for a listener. Each test file includes it with `mod support;`.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The shared corpus of real-world inputs: `$APPLIANCE_CORPUS`, else `../shared/corpus` beside
/// the repository, else `/work/shared/corpus`. Panics with a clear message when there is none, so
/// a missing corpus fails the suite instead of skipping it.
pub fn corpus_dir() -> PathBuf {
    let candidates = [
        std::env::var_os("APPLIANCE_CORPUS").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")),
        Some(PathBuf::from("/work/shared/corpus")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("README.md").is_file())
        .unwrap_or_else(|| {
            panic!(
                "the test corpus was not found: set APPLIANCE_CORPUS or put it at ../shared/corpus"
            )
        })
}

/// A port that was free a moment ago on 127.0.0.1, never handed out twice by this process, and
/// below the kernel's ephemeral range. A port from binding `:0` is in that range, and any
/// outgoing connection (a proxy's to its backend, a test's client) may take it between this
/// check and the listener that wants it: tests failed at random with "Address already in use".
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_from <= LOW + 1_000 {
        return any_port();
    }
    let span = ephemeral_from - LOW;
    // Test processes started side by side begin at different places.
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    any_port()
}

fn any_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 must work on a test machine")
}

/// The appliance binary cargo built for these tests.
pub fn appliance_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_appliance"))
}

/// A child process killed (and reaped) when the guard is dropped, even if the test panics.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, command: &mut Command) -> ChildGuard {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts connections on `addr`, or panics after `timeout`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing is listening on {addr} after {timeout:?}");
}

pub mod large_config;
pub mod nginx;

/// A directory of its own under the system's temporary directory, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path =
            std::env::temp_dir().join(format!("appliance-{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Every file under `dir`, at any depth (unsorted); unreadable directories are skipped.
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

/// Copies a directory tree (files made writable, so the copy can be cleaned up).
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create a directory");
    for entry in std::fs::read_dir(from).expect("read a directory").flatten() {
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).expect("copy a file");
            let mut perms = std::fs::metadata(&target).expect("metadata").permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms).expect("make writable");
        }
    }
}

// The differential harness (issue 3): recording backends, a raw HTTP client, proxy processes
// (nginx or the appliance), and scenarios comparing the two.
pub mod backends;
pub mod chi_square;
pub mod client;
pub mod dns;
pub mod proxies;
pub mod scenario;
pub mod transcript;

/// Runs the openssl CLI; panics with its error output if it fails.
pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a key, a CSR and a self-signed certificate for `name` with the openssl CLI, the way the
/// seed documents do (`genrsa`, `req -new`, `x509 -req -signkey`), with `name` also as a DNS
/// subjectAltName so hostname checks can pass. `kind` is "rsa" or "ec". Returns (cert, key).
pub fn make_cert(dir: &TempDir, name: &str, kind: &str) -> (PathBuf, PathBuf) {
    let key = dir.path.join(format!("{name}-{kind}.key"));
    let csr = dir.path.join(format!("{name}-{kind}.csr"));
    let crt = dir.path.join(format!("{name}-{kind}.crt"));
    let ext = dir.path.join(format!("{name}-{kind}.ext"));
    std::fs::write(&ext, format!("subjectAltName=DNS:{name}\n")).expect("ext file");
    let run = openssl;
    let key_s = key.to_str().expect("utf-8 path");
    match kind {
        "ec" => run(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            key_s,
        ]),
        _ => run(&["genrsa", "-out", key_s, "2048"]),
    }
    let subject = format!("/CN={name}");
    run(&[
        "req",
        "-new",
        "-key",
        key_s,
        "-out",
        csr.to_str().expect("utf-8"),
        "-subj",
        &subject,
    ]);
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        csr.to_str().expect("utf-8"),
        "-signkey",
        key_s,
        "-extfile",
        ext.to_str().expect("utf-8"),
        "-out",
        crt.to_str().expect("utf-8"),
    ]);
    (crt, key)
}

/// Starts `appliance run -c <config>` with its log in `<config>.log`, and waits for `ports`.
pub fn start_appliance(config: &std::path::Path, ports: &[u16]) -> ChildGuard {
    let log = std::fs::File::create(config.with_extension("log")).expect("log file");
    let guard = ChildGuard::spawn(
        "appliance",
        Command::new(appliance_bin())
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log),
    );
    for port in ports {
        wait_for_listen(*port, Duration::from_secs(20));
    }
    guard
}

/// Waits until a socket listens on `port` (any local address), or panics after `timeout`.
/// Unlike [`wait_for_port`] it never connects, so a proxy under test sees no probe connection
/// (a stream proxy would pass one on to a backend). Reads Linux's /proc/net/tcp{,6}.
pub fn wait_for_listen(port: u16, timeout: Duration) {
    let wanted = format!(":{port:04X} ");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let listening = ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
            std::fs::read_to_string(table).is_ok_and(|text| {
                text.lines().skip(1).any(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 3
                        && format!("{} ", fields[1]).ends_with(&wanted)
                        && fields[3] == "0A"
                })
            })
        });
        if listening {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on port {port} after {timeout:?}");
}

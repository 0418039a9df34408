//! Handing the listening sockets to a new process, as nginx's binary upgrade does.
//!
//! The old process starts the binary again with its own command line (the file at the same
//! path: after a package upgrade that is the new version), sends it the listening sockets over
//! a Unix socket with Pingora's fd transfer, and waits until the new process says its
//! listeners are up. Both processes accept on the shared sockets meanwhile, so no connection
//! finds a closed port. What happens to the old process then is the caller's choice: after
//! SIGUSR2 it keeps serving until QUIT (nginx), after a reload that changed the listeners it
//! stops gracefully at once.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pingora::server::{Fds, ListenFds};

/// Names the Unix socket the sockets arrive on, in the new process's environment.
pub const SOCK_ENV: &str = "APPLIANCE_UPGRADE_SOCK";
/// Names the Unix socket the new process announces itself on once it serves.
pub const READY_ENV: &str = "APPLIANCE_UPGRADE_READY";

/// How long a new process may take from start to serving.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How this process was started, to start it again.
#[derive(Clone, Debug)]
pub struct Invocation {
    exe: PathBuf,
    arg0: OsString,
    args: Vec<OsString>,
}

static INVOCATION: OnceLock<Invocation> = OnceLock::new();

/// Remembers the command line and the binary's path. Call first thing in `main`: the path is
/// resolved now, while it still names the running binary's file.
pub fn remember_invocation() {
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("appliance"));
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(&arg0));
    let _ = INVOCATION.set(Invocation {
        exe,
        arg0,
        args: args.collect(),
    });
}

/// True when this process was started to take over from another.
pub fn is_successor() -> bool {
    std::env::var_os(SOCK_ENV).is_some()
}

/// The sockets the previous process handed over, by fd-table name; empty when this process was
/// not started as a successor. `sock` overrides the environment (`run --upgrade-sock`).
pub fn inherited_sockets(
    sock: Option<&std::path::Path>,
) -> Result<HashMap<String, OwnedFd>, String> {
    let path = match sock {
        Some(p) => p.to_string_lossy().into_owned(),
        None => match std::env::var(SOCK_ENV) {
            Ok(p) => p,
            Err(_) => return Ok(HashMap::new()),
        },
    };
    let mut fds = Fds::new();
    fds.get_from_sock(path.as_str())
        .map_err(|e| format!("receiving the listening sockets on {path} failed: {e}"))?;
    let (keys, raw) = fds.serialize();
    Ok(super::sockets::own(keys, raw))
}

/// Tells the process that started this one that it serves now.
pub fn announce_ready() {
    let Some(path) = std::env::var_os(READY_ENV) else {
        return;
    };
    let sent = UnixStream::connect(&path)
        .and_then(|mut s| s.write_all(format!("ready {}\n", std::process::id()).as_bytes()));
    if let Err(e) = sent {
        tracing::error!(
            "cannot tell the previous process that this one serves ({}): {e}",
            PathBuf::from(path).display()
        );
    }
}

/// A new process that serves on the handed-over sockets.
pub struct Successor {
    pub pid: u32,
    pub child: Child,
}

/// Starts the binary again and hands it `table`'s sockets; returns once it serves. Blocks (the
/// transfer and the wait): call it off the async runtime.
pub fn start_successor(table: &ListenFds) -> Result<Successor, String> {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let invocation = INVOCATION
        .get()
        .ok_or("the command line was not recorded: cannot start a new process")?;
    let tag = format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir();
    let sock = dir.join(format!("appliance-upgrade-{tag}.sock"));
    let ready_path = dir.join(format!("appliance-ready-{tag}.sock"));
    let _ = std::fs::remove_file(&ready_path);
    let ready = UnixListener::bind(&ready_path)
        .map_err(|e| format!("bind() to unix:{} failed: {e}", ready_path.display()))?;
    let cleanup = || {
        let _ = std::fs::remove_file(&ready_path);
    };
    if let Err(e) = ready.set_nonblocking(true) {
        cleanup();
        return Err(format!("cannot wait for the new process: {e}"));
    }
    let mut child = match Command::new(&invocation.exe)
        .arg0(&invocation.arg0)
        .args(&invocation.args)
        .env(SOCK_ENV, &sock)
        .env(READY_ENV, &ready_path)
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            cleanup();
            return Err(format!(
                "cannot start {}: {e}",
                invocation.exe.to_string_lossy()
            ));
        }
    };
    let pid = child.id();
    let result = hand_over(table, &sock).and_then(|()| wait_ready(&ready, &mut child));
    cleanup();
    match result {
        Ok(()) => Ok(Successor { pid, child }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Sends every socket of the table (its raw descriptors stay with this process's listeners).
fn hand_over(table: &ListenFds, sock: &std::path::Path) -> Result<(), String> {
    let (keys, raw) = table.lock().serialize();
    if keys.is_empty() {
        return Err("there are no listening sockets to hand over".into());
    }
    let mut copy = Fds::new();
    copy.deserialize(keys, raw);
    let path = sock.to_string_lossy().into_owned();
    copy.send_to_sock(path.as_str())
        .map(|_| ())
        .map_err(|e| format!("sending the listening sockets to the new process failed: {e}"))
}

fn wait_ready(ready: &UnixListener, child: &mut Child) -> Result<(), String> {
    let started = Instant::now();
    loop {
        match ready.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                let _ = BufReader::new(stream).read_line(&mut line);
                if line.starts_with("ready ") {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("waiting for the new process failed: {e}")),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the new process exited ({status}) before serving"));
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(format!(
                "the new process did not serve within {}s",
                READY_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

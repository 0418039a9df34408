//! `daemon on`, as nginx does it and as `Type=forking` units expect: fork, let the parent wait
//! until the child serves, then exit 0 (1 if the child failed, after printing why). By then
//! the child has written the pid file, so systemd finds the main pid where `PIDFile=` says.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

/// The daemon's end of the pipe its parent waits on.
pub struct ParentWaiting {
    pipe: File,
}

impl ParentWaiting {
    /// The listeners are up: the parent exits 0.
    pub fn ready(mut self) {
        let _ = self.pipe.write_all(b"ok\n");
    }

    /// Starting failed: the parent prints `message` and exits 1.
    pub fn failed(mut self, message: &str) {
        let _ = self.pipe.write_all(message.as_bytes());
        let _ = self.pipe.write_all(b"\n");
    }
}

/// Forks. Returns in the child (the daemon) only; the parent exits when the child reports.
///
/// Call it while the process has a single thread: only the forking thread survives a fork.
pub fn daemonize() -> Result<ParentWaiting, String> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe() failed ({})", last_error()));
    }
    // SAFETY: both descriptors were just created and are owned here only.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the process is single-threaded here (the caller's contract), so the child is a
    // complete copy and may go on running Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork() failed ({})", last_error())),
        0 => {
            drop(read_end);
            // SAFETY: setsid has no memory-safety preconditions.
            if unsafe { libc::setsid() } == -1 {
                return Err(format!("setsid() failed ({})", last_error()));
            }
            detach_stdio();
            Ok(ParentWaiting {
                pipe: File::from(write_end),
            })
        }
        child => {
            drop(write_end);
            let mut report = String::new();
            let _ = File::from(read_end).read_to_string(&mut report);
            if report.starts_with("ok") {
                std::process::exit(0);
            }
            let report = report.trim_end();
            if report.is_empty() {
                eprintln!("the daemon (pid {child}) exited before it served");
            } else {
                eprintln!("{report}");
            }
            std::process::exit(1);
        }
    }
}

/// Standard input and output go to /dev/null, as nginx's ngx_daemon does; standard error stays
/// (the journal under systemd) until an error log takes over.
fn detach_stdio() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    use std::os::fd::AsRawFd;
    for target in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        unsafe {
            libc::dup2(null.as_raw_fd(), target);
        }
    }
}

fn last_error() -> String {
    crate::compile::describe_io_error(&std::io::Error::last_os_error())
}

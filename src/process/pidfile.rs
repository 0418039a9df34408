//! The pid file, as nginx keeps it: the master's pid and a newline, written at start, renamed to
//! `<path>.oldbin` while a new binary takes over (SIGUSR2), removed at exit.

use std::io;
use std::path::{Path, PathBuf};

use crate::compile::describe_io_error;

#[derive(Clone, Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        PidFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<path>.oldbin`, where nginx moves the old master's pid during a binary upgrade.
    pub fn oldbin(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".oldbin");
        PathBuf::from(name)
    }

    /// Writes this process's pid. The message is nginx's when the file cannot be written.
    pub fn write_own(&self) -> Result<(), String> {
        let text = format!("{}\n", std::process::id());
        std::fs::write(&self.path, text).map_err(|e| {
            format!(
                "open() \"{}\" failed ({})",
                self.path.display(),
                describe_io_error(&e)
            )
        })
    }

    /// Removes the file if it still names this process: after an upgrade the successor has
    /// written its own pid there, and that file is not ours to remove.
    pub fn remove_if_own(&self) {
        for path in [self.path.clone(), self.oldbin()] {
            if read_pid(&path).ok() == Some(std::process::id() as i32) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Moves the file aside as `<path>.oldbin` (nginx on SIGUSR2).
    pub fn move_to_oldbin(&self) -> io::Result<()> {
        std::fs::rename(&self.path, self.oldbin())
    }

    /// Puts `<path>.oldbin` back when the new binary did not take over.
    pub fn restore_from_oldbin(&self) {
        let oldbin = self.oldbin();
        if read_pid(&oldbin).ok() == Some(std::process::id() as i32) {
            let _ = std::fs::rename(oldbin, &self.path);
        }
    }
}

/// Why `nginx -s` could not read a pid, in nginx's words (ngx_signal_process).
#[derive(Debug, PartialEq, Eq)]
pub enum PidError {
    /// `open() "/run/nginx.pid" failed (2: No such file or directory)`
    Open(String),
    /// `invalid PID number "" in "/run/nginx.pid"`
    Invalid(String),
}

impl std::fmt::Display for PidError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PidError::Open(m) | PidError::Invalid(m) => f.write_str(m),
        }
    }
}

/// Reads a pid file as nginx does: trailing CR and LF are dropped, the rest must be a positive
/// decimal number.
pub fn read_pid(path: &Path) -> Result<i32, PidError> {
    let bytes = std::fs::read(path).map_err(|e| {
        PidError::Open(format!(
            "open() \"{}\" failed ({})",
            path.display(),
            describe_io_error(&e)
        ))
    })?;
    // nginx reads at most NGX_INT64_LEN + 2 bytes.
    let bytes = &bytes[..bytes.len().min(22)];
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    let text = &bytes[..end];
    let valid = !text.is_empty() && text.iter().all(u8::is_ascii_digit);
    let pid = if valid {
        std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<i32>().ok())
    } else {
        None
    };
    pid.ok_or_else(|| {
        PidError::Invalid(format!(
            "invalid PID number \"{}\" in \"{}\"",
            String::from_utf8_lossy(text),
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_nginx() {
        let dir = std::env::temp_dir().join(format!("appliance-pid-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.pid");
        std::fs::write(&p, "123\n").unwrap();
        assert_eq!(read_pid(&p), Ok(123));
        std::fs::write(&p, "").unwrap();
        assert_eq!(
            read_pid(&p),
            Err(PidError::Invalid(format!(
                "invalid PID number \"\" in \"{}\"",
                p.display()
            )))
        );
        std::fs::write(&p, "12a\r\n").unwrap();
        assert!(matches!(read_pid(&p), Err(PidError::Invalid(m)) if m.contains("\"12a\"")));
        let missing = dir.join("none.pid");
        assert_eq!(
            read_pid(&missing),
            Err(PidError::Open(format!(
                "open() \"{}\" failed (2: No such file or directory)",
                missing.display()
            )))
        );
        let own = PidFile::new(&p);
        own.write_own().unwrap();
        own.move_to_oldbin().unwrap();
        assert!(!p.exists());
        own.restore_from_oldbin();
        assert_eq!(read_pid(&p), Ok(std::process::id() as i32));
        own.remove_if_own();
        assert!(!p.exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! Debian's real nginx as the reference: `nginx -t` on a config, in a sandbox that keeps it
//! off the machine's own files.
//!
//! `nginx -t` is not read-only: it creates the pid file, opens every log file, creates and
//! chowns its temporary directories (to the config's `user`), binds the listening sockets, and
//! looks up the config's user and group. Each run therefore gets its own mount and network
//! namespaces (`unshare`, as root): empty tmpfs over /var/log/nginx, /var/lib/nginx and /run,
//! a /etc/passwd and /etc/group that also hold the users and groups the config names, and a
//! network of its own to bind in. The stream and mail modules, which Debian ships as dynamic
//! modules and the appliance counts as built in, are loaded with `-g`. Relative paths resolve
//! against a fresh prefix directory with `logs/` and a `modules` link to Debian's modules.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The dynamic modules every run loads (see src/compile/nginx/directives.rs).
pub const PRELOADED: &[&str] = &["ngx_stream_module.so", "ngx_mail_module.so"];
pub const MODULES_DIR: &str = "/usr/lib/nginx/modules";

/// What `nginx -t` said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    /// The `[emerg]` (or `[crit]`) message, without nginx's timestamp and the location.
    pub message: Option<String>,
    /// The location nginx appended (`in <file>:<line>`), when it did.
    pub file: Option<String>,
    pub line: Option<u32>,
    pub stderr: String,
}

/// Fails the test early, with the reason, when nginx cannot be run the way these tests need.
pub fn require_nginx() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    assert!(
        root,
        "these tests run nginx -t in mount and network namespaces: run them as root (scripts/test-all)"
    );
    for module in PRELOADED {
        let path = Path::new(MODULES_DIR).join(module);
        assert!(
            path.exists(),
            "{} is missing: install libnginx-mod-stream and libnginx-mod-mail (scripts/test-all)",
            path.display()
        );
    }
    assert!(
        Path::new("/usr/sbin/nginx").exists(),
        "Debian's nginx is not installed (scripts/test-all installs it)"
    );
}

/// A fresh prefix directory for one run: `logs/` and `modules` -> Debian's modules.
pub fn prefix_dir(parent: &Path, name: &str) -> PathBuf {
    let prefix = parent.join(name);
    std::fs::create_dir_all(prefix.join("logs")).expect("create the prefix");
    let modules = prefix.join("modules");
    if !modules.exists() {
        std::os::unix::fs::symlink(MODULES_DIR, &modules).expect("link the modules");
    }
    prefix
}

/// Runs `nginx -t -p <prefix>/ -c <conf>` in the sandbox. `users` and `groups` are added to the
/// sandbox's /etc/passwd and /etc/group (when they are not there already).
pub fn nginx_t(conf: &Path, prefix: &Path, users: &[String], groups: &[String]) -> Verdict {
    nginx_t_with(conf, prefix, users, groups, "")
}

/// [`nginx_t`] with more `-g` directives after the sandbox's own `load_module` lines.
pub fn nginx_t_with(
    conf: &Path,
    prefix: &Path,
    users: &[String],
    groups: &[String],
    global: &str,
) -> Verdict {
    let work = prefix.join(".sandbox");
    std::fs::create_dir_all(&work).expect("create the sandbox dir");
    let passwd = with_entries("/etc/passwd", users, |n, i| {
        format!(
            "{n}:x:{}:{}::/nonexistent:/usr/sbin/nologin",
            60000 + i,
            60000 + i
        )
    });
    let group = with_entries("/etc/group", groups, |n, i| format!("{n}:x:{}:", 61000 + i));
    std::fs::write(work.join("passwd"), passwd).expect("write passwd");
    std::fs::write(work.join("group"), group).expect("write group");
    let mut load: String = PRELOADED
        .iter()
        .map(|m| format!("load_module {MODULES_DIR}/{m};"))
        .collect();
    load.push_str(global);
    let script = r#"set -e
for d in /var/log/nginx /var/lib/nginx /run; do mount -t tmpfs tmpfs "$d"; done
mount --bind "$1/passwd" /etc/passwd
mount --bind "$1/group" /etc/group
exec /usr/sbin/nginx -t -p "$2" -c "$3" -g "$4"
"#;
    let mut prefix_arg = prefix.as_os_str().to_owned();
    prefix_arg.push("/");
    let output = Command::new("unshare")
        .args(["--mount", "--net", "--fork", "--", "sh", "-c", script, "sh"])
        .arg(&work)
        .arg(&prefix_arg)
        .arg(conf)
        .arg(&load)
        .output()
        .expect("run unshare (util-linux)");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let mut verdict = Verdict {
        ok: output.status.success(),
        message: None,
        file: None,
        line: None,
        stderr: stderr.clone(),
    };
    // The last message at an error level; it runs to the next log line or to nginx's final
    // "configuration file ... test failed" (a message can span lines: names may hold LFs).
    let levels = ["[emerg] ", "[crit] ", "[alert] "];
    if let Some(at) = levels
        .iter()
        .filter_map(|l| stderr.rfind(l).map(|i| i + l.len()))
        .max()
    {
        let mut text = &stderr[at..];
        if let Some(end) = text.find("\nnginx: configuration file") {
            text = &text[..end];
        }
        let text = text.strip_suffix('\n').unwrap_or(text);
        // Strip "<pid>#<tid>: " of the timestamped form.
        let text = match text.split_once(": ") {
            Some((head, rest))
                if head.contains('#') && head.chars().all(|c| c.is_ascii_digit() || c == '#') =>
            {
                rest
            }
            _ => text,
        };
        let (message, file, line) = split_location(text);
        verdict.message = Some(message);
        verdict.file = file;
        verdict.line = line;
    }
    verdict
}

/// `message in /path/file:12` into its parts.
pub fn split_location(text: &str) -> (String, Option<String>, Option<u32>) {
    if let Some((message, location)) = text.rsplit_once(" in ") {
        if let Some((file, line)) = location.rsplit_once(':') {
            if let Ok(line) = line.parse() {
                return (message.to_string(), Some(file.to_string()), Some(line));
            }
        }
    }
    (text.to_string(), None, None)
}

fn with_entries(path: &str, names: &[String], entry: impl Fn(&str, usize) -> String) -> String {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    let existing: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(':').next().map(str::to_string))
        .collect();
    for (i, name) in names.iter().enumerate() {
        if !existing.contains(name) {
            text.push_str(&entry(name, i));
            text.push('\n');
        }
    }
    text
}

/// The users and groups `user` directives name in these files (a rough scan: enough to give
/// the sandbox every name a config might look up).
pub fn users_and_groups(files: &[PathBuf]) -> (Vec<String>, Vec<String>) {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    for file in files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines() {
            let words: Vec<&str> = line
                .split(|c: char| c.is_whitespace() || c == ';')
                .filter(|w| !w.is_empty())
                .collect();
            if words.first() == Some(&"user") && words.len() >= 2 && !words[1].starts_with('#') {
                users.push(words[1].to_string());
                let group = words
                    .get(2)
                    .filter(|g| !g.starts_with('#'))
                    .unwrap_or(&words[1]);
                groups.push(group.to_string());
            }
        }
    }
    users.sort();
    users.dedup();
    groups.sort();
    groups.dedup();
    (users, groups)
}

//! The directive table against Debian's nginx: for every directive, nginx and
//! `directives::resolve` agree on where it may not stand and on an argument count it refuses,
//! message for message.
//!
//! Each directive is tried twice: in a context its entry does not allow (when there is one),
//! and in the first context it allows with a number of arguments it refuses (when there is
//! one; ANY takes every count). scripts/nginx-directives.py generated the table from nginx's
//! source; this checks the result against the binary.

mod support;

use appliance::compile::nginx::directives::{self, Terminator, DIRECTIVE_CONTEXTS};
use appliance::compile::nginx::tree::Context;
use support::nginx;
use support::TempDir;

/// A config that puts `statement` in `context`.
fn place(context: Context, statement: &str) -> String {
    let wrap = |open: &str, close: &str| format!("events {{}}\n{open}\n{statement}\n{close}\n");
    match context {
        Context::Main => format!("{statement}\nevents {{}}\n"),
        Context::Events => format!("events {{\n{statement}\n}}\n"),
        Context::Http => wrap("http {", "}"),
        Context::Server => wrap("http { server {", "} }"),
        Context::Location => wrap("http { server { location / {", "} } }"),
        Context::Upstream => wrap("http { upstream u {", "} }"),
        Context::IfInServer => wrap("http { server { if ($a) {", "} } }"),
        Context::IfInLocation => wrap("http { server { location / { if ($a) {", "} } } }"),
        Context::LimitExcept => wrap("http { server { location / { limit_except GET {", "} } } }"),
        Context::Stream => wrap("stream {", "}"),
        Context::StreamServer => wrap("stream { server {", "} }"),
        Context::StreamUpstream => wrap("stream { upstream u {", "} }"),
        Context::Mail => wrap("mail {", "}"),
        Context::MailServer => wrap("mail { server {", "} }"),
        _ => unreachable!("not a directive context"),
    }
}

fn statement(name: &str, args: usize, block: bool) -> String {
    let mut s = name.to_string();
    for _ in 0..args {
        s.push_str(" x");
    }
    s.push_str(if block { " { }" } else { ";" });
    s
}

struct Probe {
    name: &'static str,
    context: Context,
    text: String,
    /// Our message for the statement, from the table.
    ours: String,
}

fn probes() -> Vec<Probe> {
    let mut probes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for d in directives::all() {
        if !seen.insert(d.name) {
            continue;
        }
        let entries = directives::find_all(d.name);
        let allowed = |c: Context| entries.iter().any(|e| e.allowed_in(c));
        // Not allowed here.
        if let Some(&context) = DIRECTIVE_CONTEXTS.iter().find(|&&c| !allowed(c)) {
            let args = (0..8).find(|&n| d.takes_args(n)).unwrap_or(1);
            let text = place(context, &statement(d.name, args, d.is_block()));
            let ours = resolve(d.name, context, args, d.is_block());
            probes.push(Probe {
                name: d.name,
                context,
                text,
                ours,
            });
        }
        // A refused argument count where it is allowed.
        if let Some(&context) = DIRECTIVE_CONTEXTS.iter().find(|&&c| allowed(c)) {
            let entry = directives::find_in(d.name, context).expect("allowed");
            if let Some(args) = (0..10).find(|&n| !entry.takes_args(n)) {
                let text = place(context, &statement(d.name, args, entry.is_block()));
                let ours = resolve(d.name, context, args, entry.is_block());
                probes.push(Probe {
                    name: d.name,
                    context,
                    text,
                    ours,
                });
            }
        }
    }
    probes
}

fn resolve(name: &str, context: Context, args: usize, block: bool) -> String {
    let terminator = if block {
        Terminator::Brace
    } else {
        Terminator::Semicolon
    };
    match directives::resolve(name, context, args, terminator) {
        Ok(_) => "accepted".into(),
        Err(m) => m,
    }
}

#[test]
fn table_matches_nginx() {
    nginx::require_nginx();
    let probes = probes();
    assert!(probes.len() > 1000, "{} probes", probes.len());
    let tmp = TempDir::new("nginx-directives");
    let failures = std::sync::Mutex::new(Vec::new());
    let workers = 2;
    std::thread::scope(|scope| {
        for w in 0..workers {
            let (probes, tmp, failures) = (&probes, &tmp, &failures);
            scope.spawn(move || {
                for (i, p) in probes.iter().enumerate().skip(w).step_by(workers) {
                    let dir = tmp.path.join(format!("probe-{i}"));
                    std::fs::create_dir_all(&dir).expect("probe dir");
                    let conf = dir.join("nginx.conf");
                    std::fs::write(&conf, &p.text).expect("write probe");
                    let prefix = nginx::prefix_dir(&dir, "prefix");
                    let verdict = nginx::nginx_t(&conf, &prefix, &[], &[]);
                    let theirs = verdict.message.unwrap_or_else(|| "accepted".into());
                    if theirs != p.ours {
                        failures.lock().expect("lock").push(format!(
                            "{} in {}: nginx: {theirs}; table: {}",
                            p.name,
                            p.context.describe(),
                            p.ours
                        ));
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                }
            });
        }
    });
    let failures = failures.into_inner().expect("lock");
    println!("{} probes, {} differences", probes.len(), failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

//! Every config under the corpus's nginx/ against Debian's `nginx -t`: we accept exactly what
//! nginx accepts, and where both reject, we name the same file and line (and the same message,
//! unless a difference is listed below with its reason).
//!
//! Every file is tried as a main config, fragments meant to be included too: nginx rejects
//! most of those (a `location` at the top level, no `events`), and we must reject them the
//! same way. Each suite is copied to a temporary directory first, with large-config's .bz2
//! decompressed beside it, once as it is and once with its NGINX Plus lines commented out
//! (nginx-oss.conf), so that all 35,178 lines are compared. Files nginx needs that the corpus lacks are prepared by the sandbox
//! (tests/support/nginx.rs): log directories, Debian's modules, the users `user` names.
//!
//! Where the two disagree for a reason we know, the file is listed in KNOWN with the reason,
//! and the test checks that the difference is still exactly that: a listed file that starts to
//! agree fails the test too, so the list shrinks as the lowering grows.

mod support;

use std::path::{Path, PathBuf};

use appliance::compile::{nginx as front, Options};
use support::nginx::{self, Verdict};
use support::{copy_tree, corpus_dir, files_under, large_config, TempDir};

/// What we say about a file: accepted, or rejected with (message, file, line).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ours {
    Accepted,
    Rejected(String, Option<String>, Option<u32>),
}

/// A file where we knowingly differ from nginx, and how.
struct Known {
    file: &'static str,
    /// nginx's message (without location); the test checks nginx still says it.
    nginx: &'static str,
    /// What we say instead: "accepted", or the message with its place (`msg in file:line`).
    ours: &'static str,
    why: &'static str,
}

/// Checks nginx makes in module handlers or after parsing that the parse step leaves to the
/// lowering (src/compile/nginx/lower.rs), which does not make them yet.
const KNOWN: &[Known] = &[
    Known {
        file: "crossplane/empty-value-map/nginx.conf",
        nginx: "unknown \"arg\" variable",
        ours: "unknown \"arg\" variable in crossplane/empty-value-map/nginx.conf:4",
        why: "nginx finds an unknown variable after reading the file and names no line; the \
              appliance names the line that uses it",
    },
    Known {
        file: "go-crossplane/empty-value-map/nginx.conf",
        nginx: "unknown \"arg\" variable",
        ours: "unknown \"arg\" variable in go-crossplane/empty-value-map/nginx.conf:4",
        why: "nginx finds an unknown variable after reading the file and names no line; the \
              appliance names the line that uses it",
    },
    Known {
        file: "go-crossplane/if-expr/nginx.conf",
        nginx: "unknown \"slow\" variable",
        ours: "unknown \"slow\" variable in go-crossplane/if-expr/nginx.conf:9",
        why: "nginx finds an unknown variable after reading the file and names no line; the \
              appliance names the line that uses it",
    },
    Known {
        file: "go-crossplane/if-expr/spaced-parens.conf",
        nginx: "unknown \"slow\" variable",
        ours: "unknown \"slow\" variable in go-crossplane/if-expr/spaced-parens.conf:9",
        why: "nginx finds an unknown variable after reading the file and names no line; the \
              appliance names the line that uses it",
    },
    // nginx fails to dlopen() a module Debian does not ship; the appliance loads no modules,
    // so `load_module` is accepted (and reported by the lowering) and the first directive of
    // the missing module is unknown.
    Known {
        file: "go-crossplane/braces/extra-brace.conf",
        nginx: DLOPEN_F5,
        ours: "unexpected \"}\" in go-crossplane/braces/extra-brace.conf:11",
        why: "loads F5's ngx_http_f5_metrics_module.so; its own error comes first for us",
    },
    Known {
        file: "go-crossplane/braces/missing-brace.conf",
        nginx: DLOPEN_F5,
        ours: "unknown directive \"f5_metrics\" in go-crossplane/braces/missing-brace.conf:17",
        why: "loads F5's ngx_http_f5_metrics_module.so",
    },
    Known {
        file: "go-crossplane/large-config/nginx.conf",
        nginx: DLOPEN_F5,
        ours: "unknown directive \"f5_metrics\" in go-crossplane/large-config/nginx.conf:11",
        why: "loads F5's ngx_http_f5_metrics_module.so",
    },
    Known {
        file: "go-crossplane/large-config/nginx.conf.kld",
        nginx: DLOPEN_F5,
        ours: "unknown directive \"f5_metrics\" in go-crossplane/large-config/nginx.conf.kld:10",
        why: "loads F5's ngx_http_f5_metrics_module.so",
    },
    Known {
        file: "go-crossplane/nap-waf-v4/nginx.conf",
        nginx: DLOPEN_APP_PROTECT,
        ours: "unknown directive \"app_protect_enable\" in go-crossplane/nap-waf-v4/nginx.conf:18",
        why: "loads NGINX App Protect's ngx_http_app_protect_module.so",
    },
    Known {
        file: "go-crossplane/nap-waf-v5/nginx.conf",
        nginx: DLOPEN_APP_PROTECT,
        ours: "unknown directive \"app_protect_enforcer_address\" in go-crossplane/nap-waf-v5/nginx.conf:18",
        why: "loads NGINX App Protect's ngx_http_app_protect_module.so",
    },
];

/// nginx's dlopen() failures, with the prefix directory taken out.
const DLOPEN_F5: &str = "dlopen() \"modules/ngx_http_f5_metrics_module.so\" failed (modules/ngx_http_f5_metrics_module.so: cannot open shared object file: No such file or directory)";
const DLOPEN_APP_PROTECT: &str = "dlopen() \"modules/ngx_http_app_protect_module.so\" failed (modules/ngx_http_app_protect_module.so: cannot open shared object file: No such file or directory)";

#[test]
fn corpus_matches_nginx() {
    nginx::require_nginx();
    let tmp = TempDir::new("nginx-corpus");
    let root = tmp.path.join("corpus");
    copy_tree(&corpus_dir().join("nginx"), &root);
    decompress_large_config(&root);
    let files = configs(&root);
    assert!(files.len() > 100, "the corpus has {} configs", files.len());
    let (users, groups) = nginx::users_and_groups(&files);

    let mut failures = Vec::new();
    let mut known_seen = Vec::new();
    let mut agreed = 0;
    for (i, file) in files.iter().enumerate() {
        let rel = file
            .strip_prefix(&root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = nginx::prefix_dir(&tmp.path, &format!("prefix-{i}"));
        let theirs = nginx::nginx_t(file, &prefix, &users, &groups);
        let ours = compile(file, &prefix);
        let shown = |o: &Ours| match o {
            Ours::Accepted => "accepted".to_string(),
            Ours::Rejected(m, f, l) => format!(
                "{} in {}:{}",
                strip(m, &root),
                f.as_deref().map(|f| strip(f, &root)).unwrap_or_default(),
                l.map(|l| l.to_string()).unwrap_or_default()
            ),
        };
        let nginx_shown = match (&theirs.ok, &theirs.message) {
            (true, _) => "accepted".to_string(),
            (false, Some(m)) => format!(
                "{} in {}:{}",
                strip(&strip_prefix_dir(m, &tmp.path), &root),
                theirs
                    .file
                    .as_deref()
                    .map(|f| strip(f, &root))
                    .unwrap_or_default(),
                theirs.line.map(|l| l.to_string()).unwrap_or_default()
            ),
            (false, None) => format!("failed without a message: {}", theirs.stderr),
        };
        if let Some(known) = KNOWN.iter().find(|k| k.file == rel) {
            known_seen.push(known.file);
            let nginx_message = theirs
                .message
                .as_deref()
                .map(|m| strip_prefix_dir(m, &tmp.path));
            let nginx_as_listed = !theirs.ok && nginx_message.as_deref() == Some(known.nginx);
            let ours_as_listed = shown(&ours) == known.ours;
            println!(
                "known  {rel}: nginx: {nginx_shown}; ours: {}; why: {}",
                shown(&ours),
                known.why
            );
            if !nginx_as_listed || !ours_as_listed {
                failures.push(format!(
                    "{rel} is listed as a known difference, but now nginx: {nginx_shown}; ours: {}",
                    shown(&ours)
                ));
            }
            continue;
        }
        match agree(&theirs, &ours) {
            Ok(()) => {
                agreed += 1;
                println!("same   {rel}: {nginx_shown}");
            }
            Err(how) => {
                println!("DIFF   {rel}: nginx: {nginx_shown}; ours: {}", shown(&ours));
                failures.push(format!(
                    "{rel}: {how}\n    nginx: {nginx_shown}\n    ours:  {}",
                    shown(&ours)
                ));
            }
        }
    }
    for known in KNOWN {
        if !known_seen.contains(&known.file) {
            failures.push(format!("{} is listed but not in the corpus", known.file));
        }
    }
    println!(
        "{} configs: {agreed} agree with nginx, {} known differences (listed above with why)",
        files.len(),
        known_seen.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Whether our result is nginx's: both accept, or both reject at the same file and line with
/// the same message.
fn agree(theirs: &Verdict, ours: &Ours) -> Result<(), String> {
    match (theirs.ok, ours) {
        (true, Ours::Accepted) => Ok(()),
        (true, Ours::Rejected(..)) => Err("nginx accepts, we reject".into()),
        (false, Ours::Accepted) => Err("nginx rejects, we accept".into()),
        (false, Ours::Rejected(message, file, line)) => {
            if theirs.file != *file || theirs.line != *line {
                return Err("rejected at a different place".into());
            }
            if theirs.message.as_deref() != Some(message.as_str()) {
                return Err("rejected with a different message".into());
            }
            Ok(())
        }
    }
}

fn compile(file: &Path, prefix: &Path) -> Ours {
    let options = Options {
        prefix: Some(prefix.to_path_buf()),
        ..Options::default()
    };
    match front::compile(file, &options) {
        Ok(_) => Ours::Accepted,
        Err(failed) => {
            let d = failed.diagnostic;
            Ours::Rejected(
                d.message.clone(),
                d.origin.as_ref().map(|o| o.file.to_string()),
                d.origin.as_ref().map(|o| o.line),
            )
        }
    }
}

/// A message with the per-run prefix directory (`<tmp>/prefix-N/`) taken out.
fn strip_prefix_dir(text: &str, tmp: &Path) -> String {
    let tmp = format!("{}/prefix-", tmp.to_string_lossy());
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(&tmp) {
        out.push_str(&rest[..i]);
        rest = &rest[i + tmp.len()..];
        rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        rest = rest.strip_prefix('/').unwrap_or(rest);
    }
    out.push_str(rest);
    out
}

fn strip(text: &str, root: &Path) -> String {
    let mut root = root.to_string_lossy().into_owned();
    root.push('/');
    text.replace(&root, "")
}

/// Every file under the corpus copy, except licenses, crossplane's JSON expectations and the
/// compressed original of large-config.
fn configs(root: &Path) -> Vec<PathBuf> {
    let mut out = files_under(root);
    out.retain(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        !(name.starts_with("LICENSE") || name.ends_with(".json") || name.ends_with(".bz2"))
    });
    out.sort();
    out
}

/// large-config as it is (nginx.conf), and with its NGINX Plus lines commented out
/// (nginx-oss.conf, see tests/support/large_config.rs), which nginx 1.22 reads to the end.
fn decompress_large_config(root: &Path) {
    let dir = root.join("go-crossplane/large-config");
    let text = large_config::decompress(&corpus_dir());
    let (oss, changed) = large_config::oss(&text);
    assert_eq!(changed, 7514, "large-config's NGINX Plus lines");
    std::fs::write(dir.join("nginx.conf"), text).expect("write large-config");
    std::fs::write(dir.join("nginx-oss.conf"), oss).expect("write large-config");
}

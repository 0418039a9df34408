//! Access controls the appliance does not enforce are never left out silently: a config with
//! OCSP checks of client certificates is refused by every
//! command that would serve it, with a line naming the directive, while `migrate` still
//! compiles it and marks it in the report; what else a served config loses is logged when the
//! appliance starts.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{appliance_bin, free_port, wait_for_port, ChildGuard, TempDir};

fn config(dir: &TempDir, port: u16, location: &str) -> std::path::PathBuf {
    let path = dir.path.join("nginx.conf");
    let text = format!(
        "events {{}}\nhttp {{\n    server {{\n        listen 127.0.0.1:{port};\n        \
         location / {{\n            {location}\n            return 200 \"open\\n\";\n        \
         }}\n    }}\n}}\n"
    );
    std::fs::write(&path, text).expect("config");
    path
}

fn appliance(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(appliance_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running the appliance");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ocsp_checks_are_refused_not_served_open() {
    let dir = TempDir::new("access-guards");
    let port = free_port();
    let conf = dir.path.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "events {{}}\nhttp {{\n    server {{\n        listen 127.0.0.1:{port};\n        \
             ssl_ocsp on;\n        location / {{\n            return 200 \"open\\n\";\n        \
             }}\n    }}\n}}\n"
        ),
    )
    .expect("config");
    let conf = conf.to_str().expect("path");
    let refusal = "\"ssl_ocsp\" is not supported by the appliance, and leaving it out would let \
                   through clients nginx refuses (client certificates are not checked with OCSP: \
                   revoked ones get through)";
    for args in [
        vec!["run", "-c", conf],
        vec!["check", "-c", conf],
        vec!["nginx", "-t", "-c", conf],
    ] {
        let (code, _, stderr) = appliance(&args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stderr.contains(refusal), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("{conf}:5")), "{args:?}: {stderr}");
    }
    // Nothing was served meanwhile.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    // migrate compiles it and says why it will not run.
    let (code, toml, report) = appliance(&["migrate", conf]);
    assert_eq!(code, 0, "{report}");
    assert!(toml.contains("[[http.server]]"), "{toml}");
    assert!(
        report.contains(
            "ssl_ocsp: client certificates are not checked with OCSP: revoked ones get through  \
             [opens access: the appliance will not serve this config]"
        ),
        "{report}"
    );

    // Referer checks, secure links and `auth_request` are enforced now (the differential
    // tests `valid_referers`, `secure_link` and `auth_request`): they pass.
    for location in [
        "valid_referers none server_names;\n            if ($invalid_referer) { return 403; }",
        "secure_link $arg_md5,$arg_expires;\n            secure_link_md5 \"$uri s\";",
        "auth_request /auth;",
    ] {
        let conf = config(&dir, port, location);
        let (code, _, stderr) = appliance(&["check", "-c", conf.to_str().expect("path")]);
        assert_eq!(code, 0, "{location}: {stderr}");
    }
}

#[test]
fn a_start_logs_what_the_config_loses() {
    let dir = TempDir::new("access-guards-warn");
    let port = free_port();
    let conf = config(&dir, port, "proxy_cache_valid 200 10m;");
    let mut child = ChildGuard::spawn(
        "appliance",
        Command::new(appliance_bin())
            .args(["run", "-c", conf.to_str().expect("path")])
            .stderr(Stdio::piped()),
    );
    wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(20));
    let stderr = child.child.stderr.take().expect("stderr");
    let first = BufReader::new(stderr)
        .lines()
        .next()
        .expect("a line")
        .expect("text");
    assert!(
        first.contains(&format!(
            "[warn] {}#{}: \"proxy_cache_valid\" is not supported by the appliance (responses \
             are not cached) in {}:6",
            child.pid(),
            child.pid(),
            conf.display()
        )),
        "{first}"
    );
}

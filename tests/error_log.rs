//! Connection numbers, access log lines and error log lines, next to nginx's: the same config
//! and the same clients, once with nginx 1.22 and once with the appliance.
//!
//! - `$connection` and `$connection_requests` in the access log: nginx numbers every accepted
//!   connection and every connection it opens to a backend from one count, and a client's
//!   requests on its connection from 1.
//! - The response's headers in access log lines (`$sent_http_*`, `$upstream_http_*`, a `map`
//!   on them in `if=`), which the appliance's fast path keeps only for logs that read them.
//! - Error lines: `*N message, client: ..., server: ..., request: "...", upstream: "...",
//!   host: "..."`, the parts operators' tools read. fail2ban's stock nginx filters (Debian's
//!   fail2ban package) must find the same clients in the appliance's log as in nginx's.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::backends::{Backends, Plan};
use support::proxies::{Kind, NginxOptions, Proxy};

/// Sends `requests` (target, extra header lines) on one connection, one after the other,
/// waiting for each answer; returns the statuses.
fn on_one_connection(listen: SocketAddr, requests: &[(&str, &str)]) -> Vec<u16> {
    answers_on_one_connection(listen, requests)
        .into_iter()
        .map(|(status, _)| status)
        .collect()
}

/// As [`on_one_connection`]; returns each answer's status and how many bytes came after its
/// head (a chunked body's framing included: what nginx's `$body_bytes_sent` counts).
fn answers_on_one_connection(listen: SocketAddr, requests: &[(&str, &str)]) -> Vec<(u16, usize)> {
    let mut stream = TcpStream::connect(listen).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answers = Vec::new();
    for (target, extra) in requests {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: example.test\r\nReferer: http://from.test/\r\n{extra}\r\n"
        );
        stream.write_all(request.as_bytes()).expect("send");
        answers.push(read_response(&mut stream));
    }
    answers
}

/// Reads one response (with a Content-Length, chunked, or without a body) off `stream`: its
/// status and the bytes after its head.
fn read_response(stream: &mut TcpStream) -> (u16, usize) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => panic!("connection ended inside a response head: {head:?}"),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("body");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // The harness's chunks hold no `0\r\n\r\n` of their own.
        while !body.ends_with(b"0\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => body.push(byte[0]),
                _ => panic!("connection ended inside a chunked body"),
            }
        }
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.len())
}

/// The lines of a request's or session's errors (`*N ...`), without time, process and thread.
fn connection_lines(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            // 2026/12/07 10:00:00 [error] 123#123: *5 message...
            let (_, rest) = line.split_once(" [")?;
            let (level, rest) = rest.split_once("] ")?;
            let (_, message) = rest.split_once(": ")?;
            message
                .starts_with('*')
                .then(|| format!("[{level}] {message}"))
        })
        .collect()
}

struct Run {
    access: String,
    errors: Vec<String>,
    error_log: std::path::PathBuf,
    dir: support::TempDir,
}

/// Runs `config` (with `{listen}`, `{dir}`, `{b0}`, `{refused}` filled in) under `kind` and
/// lets `clients` talk to it (given the address and the directory); returns its access log and its connection error lines.
fn run(kind: Kind, config: &str, clients: impl Fn(SocketAddr, &Path)) -> Run {
    let mut backends = Backends::start(1);
    backends.reset(&[Plan::ok()]);
    let listen: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .expect("address");
    let refused = format!("127.0.0.1:{}", support::free_port());
    let short = short_backend();
    let dir = support::TempDir::new("error-log");
    std::fs::write(
        dir.path.join("htpasswd"),
        "alice:{PLAIN}secret\nbob:{PLAIN}hunter2\n",
    )
    .expect("htpasswd");
    std::fs::create_dir_all(dir.path.join("www/static")).expect("document root");
    let config = config
        .replace("{listen}", &listen.to_string())
        .replace("{dir}", &dir.path.display().to_string())
        .replace("{b0}", &backends.addr(0).to_string())
        .replace("{refused}", &refused)
        .replace("{short}", &short.to_string());
    let options = NginxOptions {
        ready_without_connecting: true,
        ..NginxOptions::default()
    };
    let proxy = Proxy::start(kind, &config, &[listen], options);
    clients(listen, &dir.path);
    // Lines are written when a request ends, the access log's within a batch.
    std::thread::sleep(Duration::from_millis(300));
    drop(proxy);
    let error_log = dir.path.join("error.log");
    Run {
        access: std::fs::read_to_string(dir.path.join("access.log")).unwrap_or_default(),
        // What differs from run to run is written back as the placeholder.
        errors: connection_lines(&error_log)
            .into_iter()
            .map(|l| {
                l.replace(&dir.path.display().to_string(), "{dir}")
                    .replace(&refused, "{refused}")
                    .replace(&short.to_string(), "{short}")
            })
            .collect(),
        error_log,
        dir,
    }
}

/// A backend that promises 100 bytes, sends 7 and closes.
fn short_backend() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = conn.read(&mut request);
            let answer = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial";
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    addr
}

/// Sends one request on a connection of its own and reads until the proxy closes it.
fn read_to_close(listen: SocketAddr, target: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(listen).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!("GET {target} HTTP/1.1\r\nHost: example.test\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    all
}

const AUTH: &str = "Authorization: Basic YWxpY2U6c2VjcmV0\r\n";
const WRONG_PASSWORD: &str = "Authorization: Basic YWxpY2U6d3Jvbmc=\r\n";
const NO_SUCH_USER: &str = "Authorization: Basic bWFsbG9yeTp4\r\n";

#[test]
fn connection_numbers_as_nginx_numbers_them() {
    support::nginx::require_nginx();
    // The keep-alive pool's connection is reused by later clients; `/fresh/` has none, so each
    // of its requests opens one; `/auth/` goes through Pingora's session in the appliance.
    let config = "worker_processes 1;
        error_log {dir}/error.log error;
        events {}
        http {
            log_format numbers '$connection $connection_requests $request_uri $status';
            access_log {dir}/access.log numbers;
            upstream pooled { server {b0}; keepalive 4; }
            upstream fresh { server {b0}; }
            upstream dead { server {refused}; }
            server {
                listen {listen};
                location / {
                    proxy_pass http://pooled;
                    proxy_http_version 1.1;
                    proxy_set_header Connection \"\";
                }
                location /fresh/ { proxy_pass http://fresh; }
                location /dead/ { proxy_pass http://dead; }
                location /auth/ {
                    auth_basic on;
                    auth_basic_user_file {dir}/htpasswd;
                    proxy_pass http://fresh;
                }
            }
        }";
    let clients = |listen: SocketAddr, _: &Path| {
        on_one_connection(listen, &[("/a1", ""), ("/a2", ""), ("/a3", "")]);
        on_one_connection(listen, &[("/b1", "")]);
        on_one_connection(listen, &[("/fresh/c1", ""), ("/fresh/c2", "")]);
        on_one_connection(listen, &[("/dead/d1", ""), ("/d2", "")]);
        on_one_connection(
            listen,
            &[("/auth/e1", AUTH), ("/auth/e2", AUTH), ("/e3", "")],
        );
    };
    let nginx = run(Kind::Nginx, config, clients);
    let appliance = run(Kind::Appliance, config, clients);
    assert!(
        nginx.access.lines().count() == 11,
        "nginx logged every request: {}",
        nginx.access
    );
    assert_eq!(
        appliance.access, nginx.access,
        "the appliance's `$connection $connection_requests` (left) against nginx's (right)"
    );
}

#[test]
fn response_headers_in_access_lines_as_nginx() {
    support::nginx::require_nginx();
    // `/` logs what was sent (add_header's, the charset filter's, the framing headers nginx
    // computes) and what the server sent; `json.log` takes only lines whose `if=` reads the
    // response through a map; `/plain/` logs with a format that reads no response header.
    // `/private/` goes through Pingora's session in the appliance (auth_basic). `bytes.log`'s
    // `$body_bytes_sent` must be what each client got after the head: a chunked body's
    // framing depends on how the server's chunks arrive, so it is checked against the wire
    // rather than against nginx's number, on the fast path (`/d`) and through Pingora's
    // session (`/private/i`).
    let config = "worker_processes 1;
        error_log {dir}/error.log error;
        events {}
        http {
            log_format sent '$request_uri $status '
                            '\"$sent_http_content_type\" \"$sent_http_x_added\" '
                            '\"$sent_http_cache_control\" \"$sent_http_x_backend\" '
                            '\"$upstream_http_x_backend\" \"$upstream_http_x_extra\" '
                            '\"$sent_http_transfer_encoding\"';
            log_format brief '$request_uri $status $body_bytes_sent';
            log_format bytes '$body_bytes_sent';
            map $sent_http_content_type $is_json { ~json 1; default 0; }
            upstream pooled { server {b0}; keepalive 4; }
            server {
                listen {listen};
                proxy_http_version 1.1;
                proxy_set_header Connection \"\";
                access_log {dir}/access.log sent;
                access_log {dir}/json.log brief if=$is_json;
                access_log {dir}/bytes.log bytes;
                location / {
                    proxy_pass http://pooled;
                    add_header X-Added yes;
                }
                location /charset/ {
                    proxy_pass http://pooled;
                    charset utf-8;
                }
                location /hidden/ {
                    proxy_pass http://pooled;
                    proxy_hide_header X-Backend;
                }
                location /private/ {
                    auth_basic on;
                    auth_basic_user_file {dir}/htpasswd;
                    proxy_pass http://pooled;
                    proxy_hide_header X-Backend;
                    add_header X-Added private;
                }
                location /plain/ {
                    proxy_pass http://pooled;
                    access_log {dir}/access.log brief;
                    access_log {dir}/bytes.log bytes;
                }
            }
        }";
    let wire = std::sync::Mutex::new(Vec::new());
    let chunked_private = format!("{AUTH}X-Harness-Chunked: 1\r\n");
    let clients = |listen: SocketAddr, _: &Path| {
        let answers = answers_on_one_connection(
            listen,
            &[
                ("/a", ""),
                ("/b", "X-Harness-Type: application/json\r\n"),
                (
                    "/c",
                    "X-Harness-Headers: X-Extra: 1|Cache-Control: no-cache\r\n",
                ),
                ("/d", "X-Harness-Chunked: 1\r\n"),
                ("/charset/e", ""),
                ("/hidden/f", "X-Harness-Type: text/json\r\n"),
                ("/private/h", AUTH),
                ("/private/i", chunked_private.as_str()),
                ("/plain/g", "X-Harness-Type: application/json\r\n"),
            ],
        );
        let lines: Vec<String> = answers.iter().map(|(_, n)| n.to_string()).collect();
        wire.lock().unwrap().push(lines.join("\n") + "\n");
    };
    let nginx = run(Kind::Nginx, config, clients);
    let appliance = run(Kind::Appliance, config, clients);
    let bytes = |r: &Run| std::fs::read_to_string(r.dir.path.join("bytes.log")).unwrap_or_default();
    let wire = wire.into_inner().unwrap();
    assert_eq!(
        bytes(&nginx),
        wire[0],
        "nginx's $body_bytes_sent (left), the wire's (right)"
    );
    assert_eq!(
        bytes(&appliance),
        wire[1],
        "the appliance's $body_bytes_sent (left), the wire's (right)"
    );
    assert_eq!(
        nginx.access.lines().count(),
        9,
        "nginx logged every request: {}",
        nginx.access
    );
    assert_eq!(
        appliance.access, nginx.access,
        "the appliance's lines (left) against nginx's (right)"
    );
    let json = |r: &Run| std::fs::read_to_string(r.dir.path.join("json.log")).unwrap_or_default();
    // `/plain/`'s own `access_log` replaces the server's two.
    assert_eq!(
        json(&nginx).lines().count(),
        2,
        "nginx logged the JSON answers: {}",
        json(&nginx)
    );
    assert_eq!(
        json(&appliance),
        json(&nginx),
        "json.log: the appliance's (left) against nginx's"
    );
}

#[test]
fn access_lines_reach_the_file_as_nginx_writes_them() {
    support::nginx::require_nginx();
    // Without `buffer=`, nginx writes each line once its response is sent: by the time the
    // next request on the connection is answered, the line of the one before is in the file.
    // `/buffered/` gathers its lines (nginx until its buffer fills, a flush timer or its exit;
    // the appliance for 10 ms): all of them are in the file once the proxy has stopped.
    let config = "worker_processes 1;
        error_log {dir}/error.log error;
        events {}
        http {
            log_format brief '$request_uri $status';
            server {
                listen {listen};
                access_log {dir}/access.log brief;
                location / { proxy_pass http://{b0}; }
                location /buffered/ {
                    access_log {dir}/buffered.log brief buffer=64k flush=1h;
                    proxy_pass http://{b0};
                }
            }
        }";
    let clients = |listen: SocketAddr, dir: &Path| {
        let lines = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .unwrap_or_default()
                .lines()
                .count()
        };
        let mut stream = TcpStream::connect(listen).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        for i in 0..4 {
            let request = format!("GET /{i} HTTP/1.1\r\nHost: example.test\r\n\r\n");
            stream.write_all(request.as_bytes()).expect("send");
            assert_eq!(read_response(&mut stream).0, 200);
            assert!(
                lines("access.log") >= i,
                "answered request {} with {} earlier lines in the file",
                i + 1,
                lines("access.log")
            );
        }
        for i in 0..3 {
            let request = format!("GET /buffered/{i} HTTP/1.1\r\nHost: example.test\r\n\r\n");
            stream.write_all(request.as_bytes()).expect("send");
            assert_eq!(read_response(&mut stream).0, 200);
        }
    };
    for kind in [Kind::Nginx, Kind::Appliance] {
        let served = run(kind, config, clients);
        let buffered = std::fs::read_to_string(served.dir.path.join("buffered.log"))
            .expect("the buffered log");
        assert_eq!(
            served.access, "/0 200\n/1 200\n/2 200\n/3 200\n",
            "{kind:?}"
        );
        assert_eq!(
            buffered, "/buffered/0 200\n/buffered/1 200\n/buffered/2 200\n",
            "{kind:?}"
        );
    }
}

#[test]
fn error_lines_as_nginx_writes_them() {
    support::nginx::require_nginx();
    let config = "worker_processes 1;
        error_log {dir}/error.log error;
        events {}
        http {
            access_log off;
            limit_req_zone $binary_remote_addr zone=slow:1m rate=1r/m;
            upstream dead { server {refused}; }
            server {
                listen {listen};
                server_name example.test alias.test;
                location / { proxy_pass http://{b0}; }
                location /dead/ { proxy_pass http://dead/inside/; }
                location /gone/ { proxy_pass http://{refused}; }
                location /private/ {
                    auth_basic \"Private\";
                    auth_basic_user_file {dir}/htpasswd;
                    proxy_pass http://{b0};
                }
                location /guarded/ {
                    auth_request /auth;
                    proxy_pass http://{b0};
                }
                location = /auth { proxy_pass http://{refused}; }
                location /loop { rewrite ^ /loop last; }
                location /short/ { proxy_pass http://{short}; }
                location /private-gone/ {
                    auth_basic \"Private\";
                    auth_basic_user_file {dir}/htpasswd;
                    proxy_pass http://{refused};
                }
                location /limited/ {
                    limit_req zone=slow;
                    proxy_pass http://{b0};
                }
                location /closed/ {
                    deny 127.0.0.0/8;
                    proxy_pass http://{b0};
                }
                location /static/ { root {dir}/www; }
                location ~ \\.php$ { root {dir}/www; }
                location = /favicon.ico { root {dir}/www; log_not_found off; }
            }
        }";
    let clients = |listen: SocketAddr, _: &Path| {
        let statuses = on_one_connection(
            listen,
            &[
                ("/dead/x?a=1", ""),
                ("/dead/again", ""),
                ("/private/p", WRONG_PASSWORD),
                ("/private/p", NO_SUCH_USER),
                ("/private/p", AUTH),
                ("/limited/1", ""),
                ("/limited/2", ""),
            ],
        );
        assert_eq!(statuses, [502, 502, 401, 401, 200, 200, 503]);
        on_one_connection(listen, &[("/gone/y", "")]);
        // Through Pingora's session in the appliance (a location with auth_basic).
        on_one_connection(listen, &[("/private-gone/w", AUTH)]);
        // A subrequest that fails: its line names it, then the request's.
        assert_eq!(on_one_connection(listen, &[("/guarded/v", "")]), [500]);
        assert_eq!(on_one_connection(listen, &[("/loop", "")]), [500]);
        // A body cut short: the client gets the 7 bytes, then the close.
        let cut = read_to_close(listen, "/short/x");
        assert!(
            cut.ends_with(b"partial"),
            "{}",
            String::from_utf8_lossy(&cut)
        );
        on_one_connection(listen, &[("/closed/z", "")]);
        let files = on_one_connection(
            listen,
            &[
                ("/static/missing.css", ""),
                ("/favicon.ico", ""),
                ("/wp-login.php", ""),
                ("/static/", ""),
            ],
        );
        assert_eq!(files, [404, 404, 404, 403]);
    };
    let nginx = run(Kind::Nginx, config, clients);
    let appliance = run(Kind::Appliance, config, clients);
    assert!(
        nginx.errors.len() >= 6,
        "nginx wrote the connections' errors: {:?}",
        nginx.errors
    );
    // Two files not found and a directory without an index file are logged; the favicon's
    // location has `log_not_found off`.
    let file_errors = nginx.errors.iter().filter(|l| {
        l.contains("(2: No such file or directory)") || l.contains("directory index of")
    });
    assert_eq!(file_errors.count(), 3, "nginx's lines: {:?}", nginx.errors);
    assert_eq!(
        appliance.errors, nginx.errors,
        "the appliance's error lines (left) against nginx's (right)"
    );
    // fail2ban's stock filters find the same lines in both logs.
    for filter in ["nginx-http-auth", "nginx-limit-req", "nginx-botsearch"] {
        let by_nginx = fail2ban_matches(&nginx.error_log, filter);
        let by_appliance = fail2ban_matches(&appliance.error_log, filter);
        assert!(by_nginx > 0, "{filter} finds nginx's lines");
        assert_eq!(
            by_appliance, by_nginx,
            "{filter}: lines matched in the appliance's log (left) and nginx's (right)"
        );
    }
}

/// How many lines of `log` fail2ban's stock filter `filter` matches (`fail2ban-regex`, from
/// Debian's fail2ban package, which scripts/test-all installs).
fn fail2ban_matches(log: &Path, filter: &str) -> usize {
    let filter_file = format!("/etc/fail2ban/filter.d/{filter}.conf");
    let output = Command::new("fail2ban-regex")
        .arg(log)
        .arg(&filter_file)
        .output()
        .expect("fail2ban-regex runs (scripts/test-all installs fail2ban)");
    let text = String::from_utf8_lossy(&output.stdout);
    // "Lines: 9 lines, 0 ignored, 2 matched, 7 missed"
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("Lines: ")?;
            let matched = rest.split(", ").find(|p| p.ends_with(" matched"))?;
            matched.trim_end_matches(" matched").parse().ok()
        })
        .unwrap_or_else(|| panic!("fail2ban-regex said: {text}"))
}

//! Client certificates (`ssl_verify_client`), next to nginx: the same config, the same
//! certificates and the same curl clients, once with nginx 1.22 and once with the appliance.
//! The statuses, the bodies (nginx's 400 pages, and the `$ssl_client_*` variables a `return`
//! echoes) and the info-level lines of the refusals must be the same.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::proxies::{Kind, NginxOptions, Proxy};
use support::{openssl, TempDir};

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A CA, a client certificate it signed (a subject with characters RFC 2253 escapes, a
/// serial of our choosing), and a self-signed client certificate no CA vouches for.
struct Certificates {
    ca: PathBuf,
    client: (PathBuf, PathBuf),
    stranger: (PathBuf, PathBuf),
    server: (PathBuf, PathBuf),
}

fn certificates(dir: &TempDir) -> Certificates {
    let at = |name: &str| dir.path.join(name);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        p(&at("ca.key")),
        "-out",
        p(&at("ca.crt")),
        "-subj",
        "/O=Example Test CA/CN=Example Root",
    ]);
    openssl(&["genrsa", "-out", p(&at("client.key")), "2048"]);
    openssl(&[
        "req",
        "-new",
        "-key",
        p(&at("client.key")),
        "-out",
        p(&at("client.csr")),
        "-subj",
        "/C=US/O=Example, Inc./OU=Ops\\+Dev;East/CN=alice",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        p(&at("client.csr")),
        "-CA",
        p(&at("ca.crt")),
        "-CAkey",
        p(&at("ca.key")),
        "-set_serial",
        "0x1A2B3C",
        "-out",
        p(&at("client.crt")),
    ]);
    let stranger = support::make_cert(dir, "mallory", "rsa");
    let server = support::make_cert(dir, "localhost", "rsa");
    Certificates {
        ca: at("ca.crt"),
        client: (at("client.crt"), at("client.key")),
        stranger,
        server,
    }
}

/// curl to `https://127.0.0.1:port/`, with a client certificate or none: status and body.
fn curl(port: u16, cert: Option<&(PathBuf, PathBuf)>) -> (String, String) {
    let mut command = Command::new("curl");
    command.args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"]);
    if let Some((crt, key)) = cert {
        command.args(["--cert", p(crt), "--key", p(key)]);
    }
    let out = command
        .arg(format!("https://127.0.0.1:{port}/who"))
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_string(), body.to_string())
}

const ECHO: &str = "\"$ssl_client_verify|$ssl_client_s_dn|$ssl_client_i_dn|\
                    $ssl_client_serial|$ssl_client_fingerprint\\n\"";

#[test]
fn verified_refused_and_optional_clients_as_nginx() {
    support::nginx::require_nginx();
    let dir = TempDir::new("client-certs");
    let certs = certificates(&dir);
    let mut seen = Vec::new();
    for kind in [Kind::Nginx, Kind::Appliance] {
        let ports = [support::free_port(), support::free_port()];
        let logs = TempDir::new("client-certs-logs");
        let config = format!(
            "worker_processes 1;
             error_log {errors} info;
             events {{}}
             http {{
                 access_log off;
                 ssl_certificate {crt};
                 ssl_certificate_key {key};
                 ssl_client_certificate {ca};
                 server {{
                     listen 127.0.0.1:{required} ssl;
                     ssl_verify_client on;
                     location / {{ return 200 {ECHO}; }}
                 }}
                 server {{
                     listen 127.0.0.1:{optional} ssl;
                     ssl_verify_client optional_no_ca;
                     location / {{ return 200 \"$ssl_client_verify $ssl_client_escaped_cert\\n\"; }}
                 }}
             }}",
            errors = p(&logs.path.join("error.log")),
            crt = p(&certs.server.0),
            key = p(&certs.server.1),
            ca = p(&certs.ca),
            required = ports[0],
            optional = ports[1],
        );
        let listen: Vec<SocketAddr> = ports
            .iter()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
            .collect();
        let proxy = Proxy::start(kind, &config, &listen, NginxOptions::default());
        let mut answers = Vec::new();
        for port in ports {
            for cert in [Some(&certs.client), None, Some(&certs.stranger)] {
                let (status, body) = curl(port, cert);
                // The pages name their server; that is the one difference meant.
                answers.push((status, body.replace("nginx/1.22.1", "appliance")));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        drop(proxy);
        let log = std::fs::read_to_string(logs.path.join("error.log")).unwrap_or_default();
        // The refusals' lines, without time, process and connection number.
        let refusals: Vec<String> = log
            .lines()
            .filter(|l| l.contains("SSL certificate"))
            .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest.to_string()))
            .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_string()))
            .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_string()))
            .map(|l| {
                l.replace(&ports[0].to_string(), "{required}")
                    .replace(&ports[1].to_string(), "{optional}")
            })
            .collect();
        seen.push((kind.name(), answers, refusals));
    }
    let (_, nginx_answers, nginx_refusals) = &seen[0];
    let statuses: Vec<&str> = nginx_answers.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        statuses,
        ["200", "400", "400", "200", "200", "200"],
        "nginx's statuses: {nginx_answers:?}"
    );
    assert!(
        nginx_answers[0]
            .1
            .starts_with("SUCCESS|CN=alice,OU=Ops\\+Dev\\;East,O=Example\\, Inc.,C=US|"),
        "nginx's variables: {}",
        nginx_answers[0].1
    );
    assert_eq!(nginx_refusals.len(), 2, "nginx's lines: {nginx_refusals:?}");
    let (_, answers, refusals) = &seen[1];
    for (i, (mine, theirs)) in answers.iter().zip(nginx_answers).enumerate() {
        assert_eq!(
            mine, theirs,
            "answer {i}: the appliance's (left) against nginx's (right)"
        );
    }
    assert_eq!(
        refusals, nginx_refusals,
        "the refusals' log lines: the appliance's (left) against nginx's (right)"
    );
}

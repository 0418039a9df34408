//! What an HTTPS port (or a `stream {}` TLS port) refuses, next to nginx: client certificates
//! (`ssl_verify_client`) and plain HTTP sent to it. The same config, the same certificates and the same curl clients,
//! once with nginx 1.22 and once with the appliance. The statuses, the bodies (nginx's 400
//! pages, and the `$ssl_client_*` variables a `return` echoes), what `error_page 495`, `496`
//! and `497` make of the refusals, and the info-level lines of the refusals must be the same.

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
    let ca = (at("ca.crt"), at("ca.key"));
    let client = issue(
        dir,
        &ca,
        "client",
        "/C=US/O=Example, Inc./OU=Ops\\+Dev;East/CN=alice",
        "0x1A2B3C",
    );
    let stranger = support::make_cert(dir, "mallory", "rsa");
    let server = support::make_cert(dir, "localhost", "rsa");
    Certificates {
        ca: ca.0,
        client,
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

/// What one proxy did: what the clients saw, and its error log lines with the ports written
/// back as `{0}` and `{1}`.
struct Seen<T> {
    answers: T,
    log: Vec<String>,
}

/// Runs `config(error_log, ports)` under nginx, then under the appliance, on two fresh ports
/// each, and lets `clients(ports)` talk to it.
fn under_both<T>(
    config: impl Fn(&str, [u16; 2]) -> String,
    clients: impl Fn([u16; 2]) -> T,
) -> [Seen<T>; 2] {
    support::nginx::require_nginx();
    [Kind::Nginx, Kind::Appliance].map(|kind| {
        let ports = [support::free_port(), support::free_port()];
        let logs = TempDir::new("https-refusals");
        let error_log = logs.path.join("error.log");
        let listen: Vec<SocketAddr> = ports
            .iter()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
            .collect();
        let config = config(p(&error_log), ports);
        let options = NginxOptions {
            stream_module: true,
            ..NginxOptions::default()
        };
        let proxy = Proxy::start(kind, &config, &listen, options);
        let answers = clients(ports);
        std::thread::sleep(Duration::from_millis(200));
        drop(proxy);
        let log = std::fs::read_to_string(&error_log).unwrap_or_default();
        let log = log
            .lines()
            .map(|l| {
                l.replace(&ports[0].to_string(), "{0}")
                    .replace(&ports[1].to_string(), "{1}")
            })
            .collect();
        Seen { answers, log }
    })
}

/// The config up to the servers, inside `http {}`: the error log at info level, the server
/// certificate.
fn prelude(errors: &str, (crt, key): &(PathBuf, PathBuf)) -> String {
    format!(
        "worker_processes 1;
         error_log {errors} info;
         events {{}}
         http {{
             access_log off;
             ssl_certificate {};
             ssl_certificate_key {};",
        p(crt),
        p(key)
    )
}

/// The config up to the servers, inside `stream {}`: the error log at info level, the server
/// certificate, the client CA.
fn stream_prelude(errors: &str, certs: &Certificates) -> String {
    format!(
        "worker_processes 1;
         error_log {errors} info;
         events {{}}
         stream {{
             ssl_certificate {};
             ssl_certificate_key {};
             ssl_client_certificate {};",
        p(&certs.server.0),
        p(&certs.server.1),
        p(&certs.ca)
    )
}

/// A line's message, without time, level, process and connection number.
fn message(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("] ")?;
    let (_, rest) = rest.split_once(' ')?;
    Some(rest.split_once(' ')?.1)
}

/// What `ask` got on each port, from the CA-signed client, from one without a certificate,
/// and from the self-signed one, in that order.
fn each_client<T>(
    ports: [u16; 2],
    certs: &Certificates,
    ask: impl Fn(u16, Option<&(PathBuf, PathBuf)>) -> T,
) -> Vec<T> {
    let clients = [Some(&certs.client), None, Some(&certs.stranger)];
    ports
        .iter()
        .flat_map(|port| clients.map(|cert| ask(*port, cert)))
        .collect()
}

/// The lines of the client certificate refusals, their messages only.
fn refusals<T>(seen: &Seen<T>) -> Vec<String> {
    let lines = seen.log.iter().filter(|l| l.contains("SSL certificate"));
    lines
        .filter_map(|l| message(l))
        .map(str::to_string)
        .collect()
}

/// nginx's curl answers had these statuses, and the answer at `verified.0` echoed variables
/// starting with `verified.1`: the test's expectations hold for nginx itself.
fn nginx_answered(nginx: &Seen<Vec<(String, String)>>, statuses: &[&str], verified: (usize, &str)) {
    let seen: Vec<&str> = nginx.answers.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(seen, statuses, "nginx's answers: {:?}", nginx.answers);
    let (index, variables) = verified;
    assert!(
        nginx.answers[index].1.starts_with(variables),
        "nginx's variables: {}",
        nginx.answers[index].1
    );
}

/// The appliance's answers must be nginx's, one by one.
fn same_answers<T: PartialEq + std::fmt::Debug>(appliance: &Seen<Vec<T>>, nginx: &Seen<Vec<T>>) {
    assert_eq!(
        appliance.answers.len(),
        nginx.answers.len(),
        "as many answers"
    );
    for (i, (mine, theirs)) in appliance.answers.iter().zip(&nginx.answers).enumerate() {
        assert_eq!(
            mine, theirs,
            "answer {i}: the appliance's (left) against nginx's (right)"
        );
    }
}

/// The appliance's refusal lines must be nginx's.
fn same_refusals<T>(appliance: &Seen<T>, nginx: &Seen<T>) {
    assert_eq!(
        refusals(appliance),
        refusals(nginx),
        "the refusals' log lines: the appliance's (left) against nginx's (right)"
    );
}

/// The appliance answered and logged as nginx, which logged a revoked certificate.
fn revocation_refused_as_nginx<T: PartialEq + std::fmt::Debug>(
    appliance: &Seen<Vec<T>>,
    nginx: &Seen<Vec<T>>,
) {
    same_answers(appliance, nginx);
    same_refusals(appliance, nginx);
    assert!(
        refusals(nginx)
            .iter()
            .any(|l| l.contains("certificate revoked")),
        "nginx's lines: {:?}",
        nginx.log
    );
}

/// The pages name their server; that is the one difference meant.
fn as_the_appliance(body: String) -> String {
    body.replace("nginx/1.22.1", "appliance")
}

#[test]
fn verified_refused_and_optional_clients_as_nginx() {
    let dir = TempDir::new("client-certs");
    let certs = certificates(&dir);
    let config = |errors: &str, ports: [u16; 2]| {
        format!(
            "{prelude}
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
            prelude = prelude(errors, &certs.server),
            ca = p(&certs.ca),
            required = ports[0],
            optional = ports[1],
        )
    };
    let clients = |ports: [u16; 2]| {
        each_client(ports, &certs, |port, cert| {
            let (status, body) = curl(port, cert);
            (status, as_the_appliance(body))
        })
    };
    let [nginx, appliance] = under_both(config, clients);
    nginx_answered(
        &nginx,
        &["200", "400", "400", "200", "200", "200"],
        (
            0,
            "SUCCESS|CN=alice,OU=Ops\\+Dev\\;East,O=Example\\, Inc.,C=US|",
        ),
    );
    assert_eq!(refusals(&nginx).len(), 2, "nginx's lines: {:?}", nginx.log);
    same_answers(&appliance, &nginx);
    same_refusals(&appliance, &nginx);
}

#[test]
fn error_pages_for_certificate_refusals_as_nginx() {
    let dir = TempDir::new("client-cert-pages");
    let certs = certificates(&dir);
    // The first server sends both refusals to a page of its own (the status kept), the
    // second redirects them elsewhere, as sites that ask for a certificate only for part of
    // their pages do.
    let config = |errors: &str, ports: [u16; 2]| {
        format!(
            "{prelude}
                 ssl_client_certificate {ca};
                 server {{
                     listen 127.0.0.1:{paged} ssl;
                     ssl_verify_client on;
                     error_page 495 496 /refused;
                     location / {{ return 200 {ECHO}; }}
                     location = /refused {{ return 200 \"refused: $ssl_client_verify\\n\"; }}
                 }}
                 server {{
                     listen 127.0.0.1:{redirected} ssl;
                     ssl_verify_client on;
                     error_page 495 https://login.example/bad-certificate;
                     error_page 496 =302 https://login.example/$request_uri;
                     location / {{ return 200 {ECHO}; }}
                 }}
             }}",
            prelude = prelude(errors, &certs.server),
            ca = p(&certs.ca),
            paged = ports[0],
            redirected = ports[1],
        )
    };
    let clients = |ports: [u16; 2]| {
        each_client(ports, &certs, |port, cert| {
            let mut command = Command::new("curl");
            command.args(["-sk", "--max-time", "10", "-D", "-", "-o", "-"]);
            if let Some((crt, key)) = cert {
                command.args(["--cert", p(crt), "--key", p(key)]);
            }
            let out = command
                .arg(format!("https://127.0.0.1:{port}/who"))
                .output()
                .expect("curl is installed");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            // The status line, the Location, and the body.
            let status = text.lines().next().unwrap_or("").trim_end().to_string();
            let location = text
                .lines()
                .find_map(|l| l.strip_prefix("Location: "))
                .unwrap_or("")
                .trim_end()
                .to_string();
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            (status, location, as_the_appliance(body.to_string()))
        })
    };
    let [nginx, appliance] = under_both(config, clients);
    // A page that keeps the refusal's status goes out as 400, as nginx's own pages do.
    let statuses: Vec<&str> = nginx.answers.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(
        statuses[..3],
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 400 Bad Request",
            "HTTP/1.1 400 Bad Request"
        ],
        "nginx's answers: {:?}",
        nginx.answers
    );
    same_answers(&appliance, &nginx);
}

/// A key and a certificate for `subject`, signed by `ca` (certificate, key) with `serial`, as
/// `name.crt` and `name.key` in `dir`.
fn issue(
    dir: &TempDir,
    (ca_crt, ca_key): &(PathBuf, PathBuf),
    name: &str,
    subject: &str,
    serial: &str,
) -> (PathBuf, PathBuf) {
    let at = |ext: &str| dir.path.join(format!("{name}.{ext}"));
    openssl(&["genrsa", "-out", p(&at("key")), "2048"]);
    openssl(&[
        "req",
        "-new",
        "-key",
        p(&at("key")),
        "-out",
        p(&at("csr")),
        "-subj",
        subject,
    ]);
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        p(&at("csr")),
        "-CA",
        p(ca_crt),
        "-CAkey",
        p(ca_key),
        "-set_serial",
        serial,
        "-out",
        p(&at("crt")),
    ]);
    (at("crt"), at("key"))
}

/// A second client certificate from the test CA (serial 0x2B, CN bob), and a revocation list
/// of that CA naming alice's (serial 0x1A2B3C), made with `openssl ca -gencrl`.
fn bob_and_a_revocation_list(dir: &TempDir, certs: &Certificates) -> ((PathBuf, PathBuf), PathBuf) {
    let at = |name: &str| dir.path.join(name);
    let ca_key = certs.ca.with_extension("key");
    let bob = issue(
        dir,
        &(certs.ca.clone(), ca_key.clone()),
        "bob",
        "/O=Example, Inc./CN=bob",
        "0x2B",
    );
    // `openssl ca`'s database: alice's certificate, revoked.
    std::fs::write(
        at("index.txt"),
        "R\t301231000000Z\t261201000000Z\t1A2B3C\tunknown\t/CN=alice\n",
    )
    .expect("index");
    std::fs::write(at("crlnumber"), "01\n").expect("crlnumber");
    std::fs::write(
        at("ca.cnf"),
        format!(
            "[ca]\ndefault_ca = test\n[test]\ndatabase = {}\ncrlnumber = {}\n\
             default_md = sha256\ndefault_crl_days = 2\n",
            p(&at("index.txt")),
            p(&at("crlnumber"))
        ),
    )
    .expect("ca.cnf");
    openssl(&[
        "ca",
        "-gencrl",
        "-config",
        p(&at("ca.cnf")),
        "-keyfile",
        p(&ca_key),
        "-cert",
        p(&certs.ca),
        "-out",
        p(&at("crl.pem")),
    ]);
    (bob, at("crl.pem"))
}

#[test]
fn revoked_clients_refused_as_nginx() {
    let dir = TempDir::new("client-crl");
    let certs = certificates(&dir);
    let (bob, crl) = bob_and_a_revocation_list(&dir, &certs);
    // The first server checks the revocation list, the second does not.
    let config = |errors: &str, ports: [u16; 2]| {
        format!(
            "{prelude}
                 ssl_client_certificate {ca};
                 server {{
                     listen 127.0.0.1:{checked} ssl;
                     ssl_verify_client optional;
                     ssl_crl {crl};
                     location / {{ return 200 {ECHO}; }}
                 }}
                 server {{
                     listen 127.0.0.1:{unchecked} ssl;
                     ssl_verify_client optional;
                     location / {{ return 200 {ECHO}; }}
                 }}
             }}",
            prelude = prelude(errors, &certs.server),
            ca = p(&certs.ca),
            crl = p(&crl),
            checked = ports[0],
            unchecked = ports[1],
        )
    };
    let clients = |ports: [u16; 2]| {
        let clients = [Some(&certs.client), Some(&bob), None];
        ports
            .iter()
            .flat_map(|port| clients.map(|cert| curl(*port, cert)))
            .map(|(status, body)| (status, as_the_appliance(body)))
            .collect::<Vec<_>>()
    };
    let [nginx, appliance] = under_both(config, clients);
    nginx_answered(
        &nginx,
        &["400", "200", "200", "200", "200", "200"],
        (1, "SUCCESS|CN=bob,O=Example\\, Inc.|"),
    );
    revocation_refused_as_nginx(&appliance, &nginx);
}

/// curl with a plain HTTP request to an HTTPS port: status, `Location` and body.
fn curl_plain(port: u16, target: &str) -> (String, String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-D", "-", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{target}"))
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rest, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .unwrap_or("")
        .to_string();
    (status.to_string(), location, body.to_string())
}

#[test]
fn plain_http_on_an_https_port_as_nginx() {
    let dir = TempDir::new("plain-on-https");
    let server = support::make_cert(&dir, "localhost", "rsa");
    let config = |errors: &str, ports: [u16; 2]| {
        format!(
            "{prelude}
                 server {{
                     listen 127.0.0.1:{bare} ssl;
                     location / {{ return 200 \"ok\\n\"; }}
                 }}
                 server {{
                     listen 127.0.0.1:{redirected} ssl;
                     error_page 497 https://$host:$server_port$request_uri;
                     location / {{ return 200 \"ok\\n\"; }}
                 }}
             }}",
            prelude = prelude(errors, &server),
            bare = ports[0],
            redirected = ports[1],
        )
    };
    let clients = |ports: [u16; 2]| {
        let mut answers: Vec<(String, String, String)> =
            [(ports[0], "/a?b=1"), (ports[1], "/c?d=2")]
                .into_iter()
                .map(|(port, target)| {
                    let (status, location, body) = curl_plain(port, target);
                    let location = location.replace(&ports[1].to_string(), "{1}");
                    (status, location, as_the_appliance(body))
                })
                .collect();
        // An HTTPS request still works.
        let (status, body) = curl(ports[0], None);
        answers.push((status, String::new(), body));
        answers
    };
    let [nginx, appliance] = under_both(config, clients);
    let plain_lines = |seen: &Seen<_>| seen.log.iter().filter(|l| l.contains("plain HTTP")).count();
    assert_eq!(nginx.answers[0].0, "400", "nginx: {:?}", nginx.answers);
    assert!(nginx.answers[0]
        .2
        .contains("The plain HTTP request was sent to HTTPS port"));
    assert_eq!(
        nginx.answers[1].1, "https://127.0.0.1:{1}/c?d=2",
        "nginx: {:?}",
        nginx.answers
    );
    assert_eq!(
        nginx.answers[2],
        ("200".into(), String::new(), "ok\n".into())
    );
    assert_eq!(
        appliance.answers, nginx.answers,
        "the appliance's answers (left) against nginx's (right)"
    );
    assert_eq!(
        plain_lines(&appliance),
        plain_lines(&nginx),
        "lines about plain HTTP: the appliance's, nginx's"
    );
}

/// A backend that echoes one line back and closes.
fn echo_once_backend() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                let mut reader = std::io::BufReader::new(&conn);
                let mut line = String::new();
                if reader.read_line(&mut line).is_ok() {
                    let _ = (&conn).write_all(format!("echo {line}").as_bytes());
                }
            });
        }
    });
    port
}

/// `openssl s_client` to a stream TLS port with a certificate or none, a line sent: what came
/// back.
fn s_client_line(port: u16, cert: Option<&(PathBuf, PathBuf)>) -> String {
    use std::io::Write;
    let mut command = Command::new("timeout");
    command.args(["10", "openssl", "s_client", "-quiet", "-connect"]);
    command.arg(format!("127.0.0.1:{port}"));
    if let Some((crt, key)) = cert {
        command.args(["-cert", p(crt), "-key", p(key)]);
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl is installed");
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(b"ping\n");
    let out = child.wait_with_output().expect("s_client ends");
    drop(stdin);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn stream_clients_verified_and_refused_as_nginx() {
    let dir = TempDir::new("stream-client-certs");
    let certs = certificates(&dir);
    let echo = echo_once_backend();
    let config = |errors: &str, ports: [u16; 2]| {
        format!(
            "{prelude}
                 server {{
                     listen 127.0.0.1:{required} ssl;
                     ssl_verify_client on;
                     proxy_pass 127.0.0.1:{echo};
                 }}
                 server {{
                     listen 127.0.0.1:{optional} ssl;
                     ssl_verify_client optional;
                     proxy_pass 127.0.0.1:{echo};
                 }}
             }}",
            prelude = stream_prelude(errors, &certs),
            required = ports[0],
            optional = ports[1],
        )
    };
    let clients = |ports: [u16; 2]| each_client(ports, &certs, s_client_line);
    let [nginx, appliance] = under_both(config, clients);
    let echoed: Vec<bool> = nginx
        .answers
        .iter()
        .map(|a| a.contains("echo ping"))
        .collect();
    assert_eq!(
        echoed,
        [true, false, false, true, true, false],
        "nginx: {:?}",
        nginx.answers
    );
    assert_eq!(
        appliance.answers, nginx.answers,
        "what came back: the appliance's (left) against nginx's (right)"
    );
    assert_eq!(refusals(&nginx).len(), 3, "nginx's lines: {:?}", nginx.log);
    same_refusals(&appliance, &nginx);
}

#[test]
fn stream_revoked_clients_refused_as_nginx() {
    let dir = TempDir::new("stream-client-crl");
    let certs = certificates(&dir);
    let (bob, crl) = bob_and_a_revocation_list(&dir, &certs);
    let echo = echo_once_backend();
    // Both servers require a certificate; the first checks the revocation list.
    let config = |errors: &str, ports: [u16; 2]| {
        format!(
            "{prelude}
                 ssl_verify_client on;
                 server {{
                     listen 127.0.0.1:{checked} ssl;
                     ssl_crl {crl};
                     proxy_pass 127.0.0.1:{echo};
                 }}
                 server {{
                     listen 127.0.0.1:{unchecked} ssl;
                     proxy_pass 127.0.0.1:{echo};
                 }}
             }}",
            prelude = stream_prelude(errors, &certs),
            crl = p(&crl),
            checked = ports[0],
            unchecked = ports[1],
        )
    };
    let clients = |ports: [u16; 2]| {
        let clients = [Some(&certs.client), Some(&bob)];
        ports
            .iter()
            .flat_map(|port| clients.map(|cert| s_client_line(*port, cert)))
            .collect::<Vec<_>>()
    };
    let [nginx, appliance] = under_both(config, clients);
    let echoed: Vec<bool> = nginx
        .answers
        .iter()
        .map(|a| a.contains("echo ping"))
        .collect();
    assert_eq!(
        echoed,
        [false, true, true, true],
        "nginx: {:?}",
        nginx.answers
    );
    revocation_refused_as_nginx(&appliance, &nginx);
}

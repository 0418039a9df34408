//! TLS at the edge, with real clients: curl and `openssl s_client` against `appliance run`,
//! certificates made in the test with the openssl CLI.
//!
//! SNI picks the certificate; TLS 1.0/1.1 are refused by default and 1.2/1.3 accepted;
//! `ssl_protocols` narrows that; HTTP/2 over ALPN and h2c; the `$ssl_*`, `$scheme` and
//! X-Forwarded-* values a backend receives; PROXY headers before HTTP and before TLS; bad
//! certificate files are config errors naming the file; re-encryption to an HTTPS backend
//! with verification on and off.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, make_cert, start_appliance, ChildGuard, TempDir};

/// A backend that answers every request with the request head it received, then closes.
fn echo_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let response = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", head.len());
                let _ = conn.write_all(response.as_bytes());
                let _ = conn.write_all(&head);
            });
        }
    });
    port
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `openssl s_client` output for a handshake (stdin closed at once).
fn s_client(port: u16, extra: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The protocol a handshake agreed, or None when it failed.
fn negotiated(output: &str) -> Option<String> {
    let cipher = output.lines().find(|l| l.contains(", Cipher is "))?;
    if cipher.contains("(NONE)") {
        return None;
    }
    // The session's protocol; TLS 1.3 output has no session block, and there the "New," line
    // (which names the cipher's own version for older protocols) is exact.
    match output
        .lines()
        .find(|l| l.trim_start().starts_with("Protocol  :"))
    {
        Some(protocol) => Some(protocol.split(':').nth(1)?.trim().to_string()),
        None => Some(cipher.split(',').nth(1)?.trim().to_string()),
    }
}

fn subject(output: &str) -> String {
    output
        .lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or("")
        .to_string()
}

fn write(dir: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn sni_chooses_the_certificate_and_protocols_default_to_tls12_and_up() {
    let dir = TempDir::new("edge-tls-sni");
    let (a_crt, a_key) = make_cert(&dir, "a.test", "rsa");
    let (a_ec_crt, a_ec_key) = make_cert(&dir, "a.test", "ec");
    let (b_crt, b_key) = make_cert(&dir, "b.test", "rsa");
    let (old_crt, old_key) = make_cert(&dir, "old.test", "rsa");
    let port = free_port();
    let only13 = free_port();
    let legacy = free_port();
    let config = write(
        &dir,
        "sni.toml",
        &format!(
            r#"
[[http.server]]
listen = [{{ address = "127.0.0.1:{port}", ssl = true }}]
server_name = ["a.test"]
tls = {{ certificates = [{{ certificate = "{}", key = "{}" }}, {{ certificate = "{}", key = "{}" }}] }}
return = {{ status = 200, body = "a" }}

[[http.server]]
listen = [{{ address = "127.0.0.1:{port}", ssl = true }}]
server_name = ["b.test"]
tls = {{ certificates = [{{ certificate = "{}", key = "{}" }}] }}
return = {{ status = 200, body = "b" }}

[[http.server]]
listen = [{{ address = "127.0.0.1:{only13}", ssl = true }}]
tls = {{ certificates = [{{ certificate = "{}", key = "{}" }}], protocols = ["TLSv1.3"] }}
return = {{ status = 200, body = "13" }}

[[http.server]]
listen = [{{ address = "127.0.0.1:{legacy}", ssl = true }}]
tls = {{ certificates = [{{ certificate = "{}", key = "{}" }}], protocols = ["TLSv1.1", "TLSv1.2"], ciphers = "DEFAULT:@SECLEVEL=0" }}
return = {{ status = 200, body = "legacy" }}
"#,
            p(&a_crt),
            p(&a_key),
            p(&a_ec_crt),
            p(&a_ec_key),
            p(&b_crt),
            p(&b_key),
            p(&a_crt),
            p(&a_key),
            p(&old_crt),
            p(&old_key),
        ),
    );
    let _app = start_appliance(&config, &[port, only13, legacy]);

    // SNI chooses among the servers of the address; no SNI gets the default (first) server.
    let b = s_client(port, &["-servername", "b.test"]);
    assert!(subject(&b).contains("b.test"), "{b}");
    let a = s_client(port, &["-servername", "a.test"]);
    assert!(subject(&a).contains("a.test"), "{a}");
    let none = s_client(port, &["-noservername"]);
    assert!(subject(&none).contains("a.test"), "{none}");
    let unknown = s_client(port, &["-servername", "c.test"]);
    assert!(subject(&unknown).contains("a.test"), "{unknown}");

    // Two pairs on one server: an ECDSA-only client gets the ECDSA certificate.
    let ec = s_client(
        port,
        &[
            "-servername",
            "a.test",
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        ],
    );
    assert!(ec.contains("ECDHE-ECDSA-AES128-GCM-SHA256"), "{ec}");
    let rsa = s_client(
        port,
        &[
            "-servername",
            "a.test",
            "-tls1_2",
            "-cipher",
            "ECDHE-RSA-AES128-GCM-SHA256",
        ],
    );
    assert!(rsa.contains("ECDHE-RSA-AES128-GCM-SHA256"), "{rsa}");

    // TLS 1.2 and 1.3 by default; 1.0 and 1.1 refused by the server (the client is told to
    // allow them, and the legacy listener shows it can speak 1.1 when configured to).
    let weak = ["-cipher", "DEFAULT:@SECLEVEL=0"];
    assert_eq!(
        negotiated(&s_client(port, &["-tls1_2"])).as_deref(),
        Some("TLSv1.2")
    );
    assert_eq!(
        negotiated(&s_client(port, &["-tls1_3"])).as_deref(),
        Some("TLSv1.3")
    );
    for old in ["-tls1", "-tls1_1"] {
        let out = s_client(port, &[old, weak[0], weak[1]]);
        assert_eq!(negotiated(&out), None, "{old} was accepted: {out}");
    }
    assert_eq!(
        negotiated(&s_client(legacy, &["-tls1_1", weak[0], weak[1]])).as_deref(),
        Some("TLSv1.1")
    );

    // ssl_protocols TLSv1.3 alone refuses 1.2.
    assert_eq!(negotiated(&s_client(only13, &["-tls1_2"])), None);
    assert_eq!(
        negotiated(&s_client(only13, &["-tls1_3"])).as_deref(),
        Some("TLSv1.3")
    );

    // curl sees the same choice and the right server answers.
    let resolve = format!("b.test:{port}:127.0.0.1");
    let (ok, body) = curl(&[
        "-k",
        "--resolve",
        &resolve,
        &format!("https://b.test:{port}/"),
    ]);
    assert!(ok);
    assert_eq!(body, "b");
}

#[test]
fn backends_see_forwarded_headers_and_tls_variables() {
    let dir = TempDir::new("edge-tls-vars");
    let (crt, key) = make_cert(&dir, "app.test", "rsa");
    let backend = echo_backend();
    let tls_port = free_port();
    let h2c_port = free_port();
    let pp_port = free_port();
    let set_header = r#"set_header = { "X-Forwarded-For" = "$proxy_add_x_forwarded_for", "X-Forwarded-Proto" = "$scheme", "X-Forwarded-Port" = "$server_port", "X-TLS" = "$ssl_protocol/$ssl_cipher/$ssl_server_name", "X-PP" = "$proxy_protocol_addr:$proxy_protocol_port", "X-Remote" = "$remote_addr", "X-Https" = "$https" }"#;
    let config = write(
        &dir,
        "vars.toml",
        &format!(
            r#"
[[http.upstream]]
name = "app"
server = [{{ address = "127.0.0.1:{backend}" }}]

[[http.server]]
listen = [{{ address = "127.0.0.1:{tls_port}", ssl = true, http2 = true }}, {{ address = "127.0.0.1:{h2c_port}", http2 = true }}, {{ address = "127.0.0.1:{pp_port}", ssl = true, proxy_protocol = true }}]
server_name = ["app.test"]
tls = {{ certificates = [{{ certificate = "{}", key = "{}" }}] }}
[[http.server.location]]
path = "/"
proxy = {{ pass = "http://app", {set_header} }}
"#,
            p(&crt),
            p(&key),
        ),
    );
    let _app = start_appliance(&config, &[tls_port, h2c_port, pp_port]);
    let resolve = format!("app.test:{tls_port}:127.0.0.1");
    let url = format!("https://app.test:{tls_port}/");

    let (ok, head) = curl(&[
        "-k",
        "--http1.1",
        "--resolve",
        &resolve,
        "-H",
        "X-Forwarded-For: 198.51.100.1",
        &url,
    ]);
    assert!(ok, "{head}");
    println!("{head}");
    assert!(
        head.contains("X-Forwarded-For: 198.51.100.1, 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(head.contains("X-Forwarded-Proto: https\r\n"), "{head}");
    assert!(
        head.contains(&format!("X-Forwarded-Port: {tls_port}\r\n")),
        "{head}"
    );
    assert!(
        head.contains("X-TLS: TLSv1.3/TLS_AES_256_GCM_SHA384/app.test\r\n"),
        "{head}"
    );
    assert!(head.contains("X-Https: on\r\n"), "{head}");
    // No PROXY header on this listener: the variable is empty, as in nginx.
    assert!(head.contains("X-PP: :\r\n"), "{head}");

    // HTTP/2 by ALPN.
    let (ok, version) = curl(&[
        "-k",
        "--http2",
        "--resolve",
        &resolve,
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &url,
    ]);
    assert!(ok);
    assert_eq!(version, "2");

    // h2c by prior knowledge on the cleartext http2 listener, HTTP/1.1 on the same socket too.
    let h2c = format!("http://127.0.0.1:{h2c_port}/");
    let (ok, version) = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &h2c,
    ]);
    assert!(ok);
    assert_eq!(version, "2");
    let (ok, head) = curl(&["--http1.1", &h2c]);
    assert!(ok);
    assert!(head.contains("X-Forwarded-Proto: http\r\n"), "{head}");
    assert!(head.contains("X-TLS: //\r\n"), "{head}");

    // A PROXY v1 header before TLS (curl sends one): $remote_addr stays the connecting address
    // and $proxy_protocol_addr names the client from the header.
    let pp_resolve = format!("app.test:{pp_port}:127.0.0.1");
    let (ok, head) = curl(&[
        "-k",
        "--haproxy-protocol",
        "--resolve",
        &pp_resolve,
        &format!("https://app.test:{pp_port}/"),
    ]);
    assert!(ok, "{head}");
    assert!(head.contains("X-PP: 127.0.0.1:"), "{head}");
    assert!(head.contains("X-Forwarded-Proto: https\r\n"), "{head}");
    assert!(head.contains("X-Remote: 127.0.0.1\r\n"), "{head}");
}

#[test]
fn proxy_protocol_v1_and_v2_on_a_cleartext_listener() {
    let dir = TempDir::new("edge-tls-pp");
    let port = free_port();
    let config = write(
        &dir,
        "pp.toml",
        &format!(
            r#"
[[http.server]]
listen = [{{ address = "127.0.0.1:{port}", proxy_protocol = true }}]
return = {{ status = 200, body = "remote=$remote_addr pp=$proxy_protocol_addr:$proxy_protocol_port to=$proxy_protocol_server_addr:$proxy_protocol_server_port" }}
"#
        ),
    );
    let _app = start_appliance(&config, &[port]);
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let exchange = |header: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(header).expect("write");
        s.write_all(request).expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let v1 = exchange(b"PROXY TCP4 192.0.2.9 10.0.0.1 5555 80\r\n");
    assert!(
        v1.ends_with("remote=127.0.0.1 pp=192.0.2.9:5555 to=10.0.0.1:80"),
        "{v1}"
    );
    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (
            "[2001:db8::7]:6000"
                .parse::<std::net::SocketAddr>()
                .unwrap(),
            "[2001:db8::1]:443".parse::<std::net::SocketAddr>().unwrap(),
        ),
    )
    .build()
    .expect("a v2 header");
    let out = exchange(&v2);
    assert!(
        out.ends_with("pp=2001:db8::7:6000 to=2001:db8::1:443"),
        "{out}"
    );
    // Without a header the connection is closed, as nginx does with a broken header.
    let none = exchange(b"");
    assert!(!none.contains("200 OK"), "{none}");
}

/// Runs `appliance run` on a config expected to fail; returns its combined output.
fn run_expecting_failure(config: &Path) -> String {
    let mut child = ChildGuard::spawn(
        "appliance",
        Command::new(support::appliance_bin())
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.child.try_wait().expect("wait") {
            assert!(!status.success(), "the config was accepted");
            break;
        }
        assert!(Instant::now() < deadline, "appliance run kept running");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    if let Some(mut e) = child.child.stderr.take() {
        let _ = e.read_to_string(&mut out);
    }
    if let Some(mut o) = child.child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    out
}

#[test]
fn bad_certificates_are_config_errors_naming_the_file() {
    let dir = TempDir::new("edge-tls-bad");
    let (a_crt, _a_key) = make_cert(&dir, "a.test", "rsa");
    let (_b_crt, b_key) = make_cert(&dir, "b.test", "rsa");
    let garbage = write(&dir, "garbage.pem", "not a certificate\n");
    let missing = dir.path.join("missing.key");
    let port = free_port();
    let cases = [
        (p(&a_crt), p(&b_key), "do not match", p(&b_key)),
        (
            p(&a_crt),
            p(&missing),
            "cannot load certificate key",
            p(&missing),
        ),
        (
            p(&garbage),
            p(&b_key),
            "cannot load certificate",
            p(&garbage),
        ),
    ];
    for (i, (cert, key, what, named)) in cases.iter().enumerate() {
        let config = write(
            &dir,
            &format!("bad{i}.toml"),
            &format!(
                "[[http.server]]\nlisten = [{{ address = \"127.0.0.1:{port}\", ssl = true }}]\n\
                 tls = {{ certificates = [{{ certificate = \"{cert}\", key = \"{key}\" }}] }}\n\
                 return = {{ status = 200 }}\n"
            ),
        );
        let out = run_expecting_failure(&config);
        println!("{out}");
        assert!(out.contains("[emerg]"), "{out}");
        assert!(out.contains(what), "{out}");
        assert!(out.contains(named.as_str()), "{out}");
        assert!(!out.contains("panicked"), "{out}");
        // The line of the certificate setting in the file.
        assert!(out.contains(&format!("bad{i}.toml:3")), "{out}");
    }
}

#[test]
fn reencryption_to_an_https_backend_with_and_without_verification() {
    let dir = TempDir::new("edge-tls-reencrypt");
    let (backend_crt, backend_key) = make_cert(&dir, "backend.test", "rsa");
    let (other_crt, _other_key) = make_cert(&dir, "other.test", "rsa");
    let backend = free_port();
    let _server = ChildGuard::spawn(
        "openssl s_server",
        Command::new("openssl")
            .args(["s_server", "-www", "-quiet", "-accept"])
            .arg(backend.to_string())
            .arg("-cert")
            .arg(&backend_crt)
            .arg("-key")
            .arg(&backend_key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    support::wait_for_port(
        std::net::SocketAddr::from(([127, 0, 0, 1], backend)),
        Duration::from_secs(10),
    );
    let port = free_port();
    let pass = format!("https://127.0.0.1:{backend}");
    let location = |path: &str, extra: &str| {
        format!(
            "[[http.server.location]]\npath = \"{path}\"\nproxy = {{ pass = \"{pass}/\"{extra} }}\n"
        )
    };
    let config = write(
        &dir,
        "reencrypt.toml",
        &format!(
            "[[http.server]]\nlisten = [{{ address = \"127.0.0.1:{port}\" }}]\n{}{}{}{}",
            location("/off/", ""),
            location(
                "/on/",
                &format!(
                    ", ssl_verify = true, ssl_trusted_certificate = \"{}\", ssl_name = \"backend.test\"",
                    p(&backend_crt)
                )
            ),
            location(
                "/wrong-name/",
                &format!(
                    ", ssl_verify = true, ssl_trusted_certificate = \"{}\", ssl_name = \"other.test\"",
                    p(&backend_crt)
                )
            ),
            location(
                "/untrusted/",
                &format!(
                    ", ssl_verify = true, ssl_trusted_certificate = \"{}\", ssl_name = \"backend.test\"",
                    p(&other_crt)
                )
            ),
        ),
    );
    let _app = start_appliance(&config, &[port]);
    let status = |path: &str| {
        let (_, code) = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{port}{path}"),
        ]);
        code
    };
    assert_eq!(status("/off/"), "200");
    assert_eq!(status("/on/"), "200");
    assert_eq!(status("/wrong-name/"), "502");
    assert_eq!(status("/untrusted/"), "502");
    // The page s_server sends proves the request went through TLS to it.
    let (_, page) = curl(&[&format!("http://127.0.0.1:{port}/on/")]);
    assert!(page.contains("s_server"), "{page}");
}

#[test]
fn an_nginx_conf_runs_as_is_with_ssl_http2_stream_and_proxy_protocol() {
    let dir = TempDir::new("edge-tls-nginx");
    let (a_crt, a_key) = make_cert(&dir, "a.test", "rsa");
    let (b_crt, b_key) = make_cert(&dir, "b.test", "rsa");
    let backend = echo_backend();
    let echo = TcpListener::bind("127.0.0.1:0").expect("bind");
    let echo_port = echo.local_addr().expect("addr").port();
    // A TCP backend that reports the PROXY line it receives, then echoes.
    std::thread::spawn(move || {
        for conn in echo.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let (https, tcp) = (free_port(), free_port());
    let config = write(
        &dir,
        "nginx.conf",
        &format!(
            "events {{}}\n\
             http {{\n\
             \x20 upstream app {{ server 127.0.0.1:{backend}; }}\n\
             \x20 server {{\n\
             \x20   listen 127.0.0.1:{https} ssl http2;\n\
             \x20   server_name a.test;\n\
             \x20   ssl_certificate {};\n\
             \x20   ssl_certificate_key {};\n\
             \x20   location / {{\n\
             \x20     proxy_pass http://app;\n\
             \x20     proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             \x20     proxy_set_header X-Forwarded-Proto $scheme;\n\
             \x20     proxy_set_header X-Forwarded-Port $server_port;\n\
             \x20   }}\n\
             \x20 }}\n\
             \x20 server {{\n\
             \x20   listen 127.0.0.1:{https} ssl;\n\
             \x20   server_name b.test;\n\
             \x20   ssl_certificate {};\n\
             \x20   ssl_certificate_key {};\n\
             \x20   return 200 \"b $ssl_server_name\";\n\
             \x20 }}\n\
             }}\n\
             stream {{\n\
             \x20 server {{\n\
             \x20   listen 127.0.0.1:{tcp} ssl;\n\
             \x20   ssl_certificate {};\n\
             \x20   ssl_certificate_key {};\n\
             \x20   proxy_protocol on;\n\
             \x20   proxy_pass 127.0.0.1:{echo_port};\n\
             \x20 }}\n\
             }}\n",
            p(&a_crt),
            p(&a_key),
            p(&b_crt),
            p(&b_key),
            p(&a_crt),
            p(&a_key),
        ),
    );
    let _app = start_appliance(&config, &[https, tcp]);

    let resolve_a = format!("a.test:{https}:127.0.0.1");
    let (ok, out) = curl(&[
        "-k",
        "--http2",
        "--resolve",
        &resolve_a,
        "-w",
        "\nversion=%{http_version}",
        &format!("https://a.test:{https}/"),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("X-Forwarded-Proto: https\r\n"), "{out}");
    assert!(
        out.contains(&format!("X-Forwarded-Port: {https}\r\n")),
        "{out}"
    );
    assert!(out.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{out}");
    assert!(out.ends_with("version=2"), "{out}");
    let resolve_b = format!("b.test:{https}:127.0.0.1");
    let (ok, out) = curl(&[
        "-k",
        "--resolve",
        &resolve_b,
        &format!("https://b.test:{https}/"),
    ]);
    assert!(ok);
    assert_eq!(out, "b b.test");

    // The stream server terminates TLS and sends the backend a PROXY v1 line, then the bytes.
    let mut b = pingora::tls::ssl::SslConnector::builder(pingora::tls::ssl::SslMethod::tls())
        .expect("connector");
    b.set_verify(pingora::tls::ssl::SslVerifyMode::NONE);
    let tcp_stream = TcpStream::connect(("127.0.0.1", tcp)).expect("connect");
    tcp_stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let client_port = tcp_stream.local_addr().expect("addr").port();
    let mut s = b
        .build()
        .configure()
        .expect("configure")
        .verify_hostname(false)
        .connect("localhost", tcp_stream)
        .expect("TLS handshake");
    s.write_all(b"ping\n").expect("write");
    let expected = format!("PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {tcp}\r\nping\n");
    let mut got = vec![0u8; expected.len()];
    s.read_exact(&mut got).expect("the echo");
    assert_eq!(String::from_utf8_lossy(&got), expected);

    // The same config with a key that is not the certificate's: nginx -t's kind of error,
    // naming the files and the line of ssl_certificate.
    let bad = std::fs::read_to_string(&config)
        .expect("read config")
        .replacen(&p(&a_key), &p(&b_key), 1);
    let bad_config = write(&dir, "bad.conf", &bad);
    let out = run_expecting_failure(&bad_config);
    assert!(out.contains("do not match"), "{out}");
    assert!(out.contains(&p(&b_key)), "{out}");
    assert!(out.contains("bad.conf:7"), "{out}");
}

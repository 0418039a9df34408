//! TCP load balancing with real sockets: TCP echo backends behind `stream` servers of
//! `appliance run`, with next-upstream past a refused backend, TLS terminated on an SSL
//! listener, TLS passed through untouched, TLS to the backend, and PROXY protocol v1/v2 sent to
//! backends (parsed here) and accepted from clients, and TLS routed by the name the client asks
//! for (`ssl_preread`) to a backend a DNS server names.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use pingora::tls::ssl::{SslAcceptor, SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use support::proxies::{Kind, NginxOptions, Proxy};
use support::{dns::DnsServer, free_port, make_cert, start_appliance, TempDir};

/// What a backend does with a connection before echoing.
#[derive(Clone, Copy)]
enum Backend {
    Plain,
    /// Reads one PROXY header and reports it, then echoes.
    Proxy,
}

struct Echo {
    port: u16,
    connections: Arc<AtomicUsize>,
    headers: mpsc::Receiver<Vec<u8>>,
}

/// A TCP echo backend; with `tls`, it terminates TLS (after the PROXY header, if any).
fn echo(kind: Backend, tls: Option<(&Path, &Path)>) -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let (tx, headers) = mpsc::channel();
    let acceptor = tls.map(|(crt, key)| {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
        b.set_certificate_chain_file(crt).expect("cert");
        b.set_private_key_file(key, SslFiletype::PEM).expect("key");
        Arc::new(b.build())
    });
    let count = connections.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            let acceptor = acceptor.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                if let Backend::Proxy = kind {
                    let header = read_proxy_header(&mut conn);
                    let _ = tx.send(header);
                }
                match acceptor {
                    Some(a) => {
                        if let Ok(mut s) = a.accept(conn) {
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = s.read(&mut buf) {
                                if n == 0 || s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    None => {
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = conn.read(&mut buf) {
                            if n == 0 || conn.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    Echo {
        port,
        connections,
        headers,
    }
}

/// Reads exactly one PROXY header (v1 up to its CRLF, v2 by its length field).
fn read_proxy_header(conn: &mut TcpStream) -> Vec<u8> {
    let mut head = vec![0u8; 16];
    if conn.read_exact(&mut head).is_err() {
        return Vec::new();
    }
    if head.starts_with(b"PROXY ") {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n") && head.len() < 108 {
            if conn.read_exact(&mut byte).is_err() {
                break;
            }
            head.push(byte[0]);
        }
    } else {
        let len = u16::from_be_bytes([head[14], head[15]]) as usize;
        let mut rest = vec![0u8; len];
        if conn.read_exact(&mut rest).is_ok() {
            head.extend_from_slice(&rest);
        }
    }
    head
}

fn exchange(port: u16, prefix: &[u8], message: &[u8]) -> (Vec<u8>, SocketAddr) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let local = s.local_addr().expect("local addr");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(prefix).expect("write");
    s.write_all(message).expect("write");
    let mut got = vec![0u8; message.len()];
    let _ = s.read_exact(&mut got);
    (got, local)
}

/// A client stream whose first write carries `prefix` in the same system call, so that both
/// arrive in one segment.
#[derive(Debug)]
struct FirstWritePrefixed {
    inner: TcpStream,
    prefix: Vec<u8>,
}

impl Read for FirstWritePrefixed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for FirstWritePrefixed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.prefix.is_empty() {
            return self.inner.write(buf);
        }
        let mut first = std::mem::take(&mut self.prefix);
        first.extend_from_slice(buf);
        self.inner.write_all(&first)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn tls_exchange(port: u16, message: &[u8]) -> (Vec<u8>, String) {
    tls_exchange_as(port, "localhost", message).expect("TLS handshake")
}

/// A TLS exchange asking for the server `name` (SNI); `None` when the handshake fails.
fn tls_exchange_as(port: u16, name: &str, message: &[u8]) -> Option<(Vec<u8>, String)> {
    let mut b = SslConnector::builder(SslMethod::tls()).expect("connector");
    b.set_verify(SslVerifyMode::NONE);
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut s = b
        .build()
        .configure()
        .expect("configure")
        .verify_hostname(false)
        .connect(name, tcp)
        .ok()?;
    let subject = s
        .ssl()
        .peer_certificate()
        .and_then(|c| {
            c.subject_name()
                .entries()
                .next()
                .and_then(|e| e.data().to_string().ok())
        })
        .unwrap_or_default();
    s.write_all(message).expect("write");
    let mut got = vec![0u8; message.len()];
    let _ = s.read_exact(&mut got);
    Some((got, subject))
}

fn write(dir: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn stream_balances_past_a_refused_backend() {
    let dir = TempDir::new("edge-stream-rr");
    let one = echo(Backend::Plain, None);
    let two = echo(Backend::Plain, None);
    let refused = free_port();
    let port = free_port();
    let config = write(
        &dir,
        "rr.toml",
        &format!(
            r#"
[[stream.upstream]]
name = "echo"
server = [{{ address = "127.0.0.1:{refused}" }}, {{ address = "127.0.0.1:{}" }}, {{ address = "127.0.0.1:{}" }}]

[[stream.server]]
listen = [{{ address = "127.0.0.1:{port}" }}]
pass = "echo"
connect_timeout = "2s"
"#,
            one.port, two.port
        ),
    );
    let _app = start_appliance(&config, &[port]);
    for i in 0..8 {
        let message = format!("message {i}\n");
        let (got, _) = exchange(port, b"", message.as_bytes());
        assert_eq!(String::from_utf8_lossy(&got), message);
    }
    let (a, b) = (
        one.connections.load(Ordering::SeqCst),
        two.connections.load(Ordering::SeqCst),
    );
    println!("connections: {a} and {b}");
    assert_eq!(a + b, 8);
    assert!(a > 0 && b > 0, "round robin uses both live backends");
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
    assert!(log.contains(&format!("127.0.0.1:{refused}")), "{log}");
}

#[test]
fn tls_is_terminated_passed_through_or_originated() {
    let dir = TempDir::new("edge-stream-tls");
    let (front_crt, front_key) = make_cert(&dir, "front.test", "rsa");
    let (back_crt, back_key) = make_cert(&dir, "back.test", "rsa");
    let plain = echo(Backend::Plain, None);
    let tls_backend = echo(Backend::Plain, Some((&back_crt, &back_key)));
    let tls_pp_backend = echo(Backend::Proxy, Some((&back_crt, &back_key)));
    let (terminate, passthrough, originate, originate_pp, pp_terminate) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let config = write(
        &dir,
        "tls.toml",
        &format!(
            r#"
[[stream.server]]
listen = [{{ address = "127.0.0.1:{terminate}", ssl = true }}]
pass = "127.0.0.1:{}"
tls = {{ certificates = [{{ certificate = "{}", key = "{}" }}] }}

[[stream.server]]
listen = [{{ address = "127.0.0.1:{passthrough}" }}]
pass = "127.0.0.1:{}"

[[stream.server]]
listen = [{{ address = "127.0.0.1:{originate}" }}]
pass = "127.0.0.1:{}"
upstream_tls = true

[[stream.server]]
listen = [{{ address = "127.0.0.1:{originate_pp}" }}]
pass = "127.0.0.1:{}"
upstream_tls = true
proxy_protocol = "v1"

[[stream.server]]
listen = [{{ address = "127.0.0.1:{pp_terminate}", ssl = true, proxy_protocol = true }}]
pass = "127.0.0.1:{}"
tls = {{ certificates = [{{ certificate = "{}", key = "{}" }}] }}
"#,
            plain.port,
            front_crt.display(),
            front_key.display(),
            tls_backend.port,
            tls_backend.port,
            tls_pp_backend.port,
            plain.port,
            front_crt.display(),
            front_key.display(),
        ),
    );
    let _app = start_appliance(
        &config,
        &[
            terminate,
            passthrough,
            originate,
            originate_pp,
            pp_terminate,
        ],
    );

    // An ELB SSL listener: TLS ends at the appliance, the backend gets plain bytes.
    let (got, subject) = tls_exchange(terminate, b"over tls\n");
    assert_eq!(got, b"over tls\n");
    assert_eq!(subject, "front.test");

    // No termination: the client's handshake reaches the backend, which it sees.
    let (got, subject) = tls_exchange(passthrough, b"passed through\n");
    assert_eq!(got, b"passed through\n");
    assert_eq!(subject, "back.test");

    // proxy_ssl: a plain client, TLS towards the backend.
    let (got, _) = exchange(originate, b"", b"to a tls backend\n");
    assert_eq!(got, b"to a tls backend\n");

    // A front balancer's PROXY header, then TLS ending at the appliance, with the ClientHello
    // in the same segment as the header: what was read past the header goes to the handshake.
    let tcp = TcpStream::connect(("127.0.0.1", pp_terminate)).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let prefixed = FirstWritePrefixed {
        inner: tcp,
        prefix: b"PROXY TCP4 192.0.2.9 10.0.0.1 5555 443\r\n".to_vec(),
    };
    let mut b = SslConnector::builder(SslMethod::tls()).expect("connector");
    b.set_verify(SslVerifyMode::NONE);
    let mut s = b
        .build()
        .connect("front.test", prefixed)
        .expect("a handshake after the PROXY header");
    s.write_all(b"header and hello together\n").expect("write");
    let mut got = vec![0u8; 26];
    s.read_exact(&mut got).expect("echo");
    assert_eq!(got, b"header and hello together\n");

    // PROXY header first, in the clear, then TLS.
    let (got, local) = exchange(originate_pp, b"", b"pp then tls\n");
    assert_eq!(got, b"pp then tls\n");
    let header = tls_pp_backend
        .headers
        .recv_timeout(Duration::from_secs(10))
        .expect("the backend got a header");
    assert_eq!(
        String::from_utf8_lossy(&header),
        format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {} {originate_pp}\r\n",
            local.port()
        )
    );
}

#[test]
fn proxy_protocol_to_backends_and_from_clients() {
    let dir = TempDir::new("edge-stream-pp");
    let v1_backend = echo(Backend::Proxy, None);
    let v2_backend = echo(Backend::Proxy, None);
    let (v1_port, v2_port, accept_port) = (free_port(), free_port(), free_port());
    let config = write(
        &dir,
        "pp.toml",
        &format!(
            r#"
[[stream.server]]
listen = [{{ address = "127.0.0.1:{v1_port}" }}]
pass = "127.0.0.1:{}"
proxy_protocol = "v1"

[[stream.server]]
listen = [{{ address = "127.0.0.1:{v2_port}" }}]
pass = "127.0.0.1:{}"
proxy_protocol = "v2"

[[stream.server]]
listen = [{{ address = "127.0.0.1:{accept_port}", proxy_protocol = true }}]
pass = "127.0.0.1:{}"
proxy_protocol = "v2"
"#,
            v1_backend.port, v2_backend.port, v2_backend.port
        ),
    );
    let _app = start_appliance(&config, &[v1_port, v2_port, accept_port]);

    let (got, local) = exchange(v1_port, b"", b"v1 payload\n");
    assert_eq!(got, b"v1 payload\n");
    let header = v1_backend
        .headers
        .recv_timeout(Duration::from_secs(10))
        .expect("a v1 header");
    match ppp::HeaderResult::parse(&header) {
        ppp::HeaderResult::V1(Ok(h)) => assert_eq!(
            h.addresses,
            ppp::v1::Addresses::from((local, SocketAddr::from(([127, 0, 0, 1], v1_port))))
        ),
        other => panic!("not a v1 header: {other:?}"),
    }

    let (got, local) = exchange(v2_port, b"", b"v2 payload\n");
    assert_eq!(got, b"v2 payload\n");
    let header = v2_backend
        .headers
        .recv_timeout(Duration::from_secs(10))
        .expect("a v2 header");
    match ppp::HeaderResult::parse(&header) {
        ppp::HeaderResult::V2(Ok(h)) => {
            assert_eq!(h.command, ppp::v2::Command::Proxy);
            assert_eq!(
                h.addresses,
                ppp::v2::Addresses::from((local, SocketAddr::from(([127, 0, 0, 1], v2_port))))
            );
        }
        other => panic!("not a v2 header: {other:?}"),
    }

    // A front balancer's header is taken off the stream: the backend gets its own header and
    // then exactly the client's bytes.
    let (got, _) = exchange(
        accept_port,
        b"PROXY TCP4 192.0.2.9 10.0.0.1 5555 443\r\n",
        b"after the header\n",
    );
    assert_eq!(got, b"after the header\n");
    let header = v2_backend
        .headers
        .recv_timeout(Duration::from_secs(10))
        .expect("a v2 header");
    assert!(matches!(
        ppp::HeaderResult::parse(&header),
        ppp::HeaderResult::V2(Ok(_))
    ));

    // A client without the header it must send is dropped before any backend is contacted.
    let before = v2_backend.connections.load(Ordering::SeqCst);
    let (got, _) = exchange(accept_port, b"", b"GET / HTTP/1.0\r\n\r\n");
    assert!(got.iter().all(|b| *b == 0), "{got:?}");
    assert_eq!(v2_backend.connections.load(Ordering::SeqCst), before);
}

/// Sends `message` from `source` (a loopback address) and reads back what comes before the
/// close: the echo, or nothing when the appliance closes the connection.
fn exchange_from(source: &str, port: u16, message: &[u8]) -> Vec<u8> {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from: SocketAddr = format!("{source}:0").parse().expect("source address");
    socket.bind(&from.into()).expect("bind the source");
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    socket.connect(&to.into()).expect("connect");
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // A closed connection may refuse the write: what counts is what comes back.
    let _ = s.write_all(message);
    let mut got = vec![0u8; message.len()];
    let n = read_up_to(&mut s, &mut got);
    got.truncate(n);
    got
}

fn read_up_to(s: &mut TcpStream, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match s.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled
}

/// `allow` and `deny` in an nginx.conf's stream block: a server without rules of its own takes
/// the stream's, one with rules ignores them, and a refused client's connection is closed
/// before any backend is dialled.
#[test]
fn stream_access_rules_close_refused_clients() {
    let dir = TempDir::new("edge-stream-access");
    let backend = echo(Backend::Plain, None);
    let (inherits, own) = (free_port(), free_port());
    let config = write(
        &dir,
        "nginx.conf",
        &format!(
            "events {{}}\n\
             stream {{\n\
                 allow 127.0.0.2;\n\
                 deny all;\n\
                 server {{ listen 127.0.0.1:{inherits}; proxy_pass 127.0.0.1:{echo}; }}\n\
                 server {{ listen 127.0.0.1:{own}; deny 127.0.0.2; proxy_pass 127.0.0.1:{echo}; }}\n\
             }}\n",
            echo = backend.port
        ),
    );
    let _app = start_appliance(&config, &[inherits, own]);
    let message = b"hello\n";
    let served = |source: &str, port: u16| exchange_from(source, port, message) == message;
    assert!(
        !served("127.0.0.1", inherits),
        "deny all from the stream block"
    );
    assert!(
        served("127.0.0.2", inherits),
        "allow 127.0.0.2 from the stream block"
    );
    assert!(
        served("127.0.0.1", own),
        "the server's own rules replace the stream's"
    );
    assert!(!served("127.0.0.2", own), "deny 127.0.0.2 in the server");
    assert_eq!(backend.connections.load(Ordering::SeqCst), 2);
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
    assert!(
        log.contains("access forbidden by rule, client: 127.0.0.1"),
        "{log}"
    );
}

/// `limit_conn` in a stream server (ngx_stream_limit_conn_module): a client with as many
/// connections open as the limit has its next one closed before any backend is dialled;
/// another client, and a server without the limit, are not affected; once a connection ends,
/// its place is free again.
#[test]
fn stream_limit_conn_closes_connections_over_the_limit() {
    let dir = TempDir::new("edge-stream-limit-conn");
    let backend = echo(Backend::Plain, None);
    let (limited, free) = (free_port(), free_port());
    let config = write(
        &dir,
        "nginx.conf",
        &format!(
            "events {{}}\n\
             stream {{\n\
                 limit_conn_zone $binary_remote_addr zone=addr:1m;\n\
                 server {{ listen 127.0.0.1:{limited}; limit_conn addr 1; proxy_pass 127.0.0.1:{echo}; }}\n\
                 server {{ listen 127.0.0.1:{free}; proxy_pass 127.0.0.1:{echo}; }}\n\
             }}\n",
            echo = backend.port
        ),
    );
    let _app = start_appliance(&config, &[limited, free]);
    let message = b"hello\n";
    let served = |source: &str, port: u16| exchange_from(source, port, message) == message;

    // One connection from 127.0.0.1 stays open (the echo backend waits for more).
    let mut first = TcpStream::connect(("127.0.0.1", limited)).expect("connect");
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    first.write_all(message).expect("write");
    let mut echoed = vec![0u8; message.len()];
    assert_eq!(read_up_to(&mut first, &mut echoed), message.len());
    assert_eq!(echoed, message);

    assert!(
        !served("127.0.0.1", limited),
        "a second connection of the client"
    );
    assert!(
        served("127.0.0.2", limited),
        "another client has its own count"
    );
    assert!(served("127.0.0.1", free), "a server without limit_conn");
    assert_eq!(backend.connections.load(Ordering::SeqCst), 3);

    // Once the first connection ends, the appliance gives its place back.
    drop(first);
    let mut again = false;
    for _ in 0..50 {
        if served("127.0.0.1", limited) {
            again = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(again, "the client's place was not given back");
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
    assert!(
        log.contains("limiting connections by zone \"addr\", client: 127.0.0.1"),
        "{log}"
    );
}

#[test]
fn tls_goes_where_its_server_name_resolves() {
    let dir = TempDir::new("edge-stream-sni");
    let (crt, key) = make_cert(&dir, "svc.test", "rsa");
    let backend = echo(Backend::Plain, Some((&crt, &key)));
    let dns = DnsServer::start();
    dns.set("svc.test", "127.0.0.1");
    let (by_name, by_map) = (free_port(), free_port());
    let config = write(
        &dir,
        "nginx.conf",
        &format!(
            "events {{}}\nstream {{\nresolver 127.0.0.1:{dns} valid=1s;\n\
             limit_conn_zone $ssl_preread_server_name zone=names:1m;\n\
             map $ssl_preread_server_name $named {{\nhostnames;\n*.alias.test 127.0.0.1:{port};\n\
             default unknown;\n}}\n\
             server {{\nlisten 127.0.0.1:{by_name};\nssl_preread on;\nlimit_conn names 10;\n\
             proxy_pass $ssl_preread_server_name:{port};\n}}\n\
             server {{\nlisten 127.0.0.1:{by_map};\nssl_preread on;\nproxy_pass $named;\n}}\n}}\n",
            dns = dns.port,
            port = backend.port,
        ),
    );
    let _app = start_appliance(&config, &[by_name, by_map]);

    // The ClientHello's name, looked up, is where the connection goes; TLS passes through to
    // the backend, which the client sees.
    let (got, subject) = tls_exchange_as(by_name, "svc.test", b"by name\n").expect("handshake");
    assert_eq!(
        (got.as_slice(), subject.as_str()),
        (&b"by name\n"[..], "svc.test")
    );
    let (got, _) = tls_exchange_as(by_map, "a.alias.test", b"by map\n").expect("handshake");
    assert_eq!(got, b"by map\n");
    assert_eq!(backend.connections.load(Ordering::SeqCst), 2);

    // A name the DNS server does not know, and a map value that is no upstream and has no
    // port: nginx closes such connections without going anywhere, and so does the appliance.
    assert!(tls_exchange_as(by_name, "nowhere.test", b"x").is_none());
    assert!(tls_exchange_as(by_map, "other.test", b"x").is_none());
    assert_eq!(backend.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn stream_return_answers_with_the_client_hello_as_nginx_does() {
    support::nginx::require_nginx();
    let hello = client_hello("ret.test", &[b"h2", b"http/1.1"]);
    let answers: Vec<Vec<Vec<u8>>> = [Kind::Nginx, Kind::Appliance]
        .into_iter()
        .map(|kind| {
            let (port, pp_port) = (free_port(), free_port());
            let config = format!(
                "events {{}}\nstream {{\nserver {{\nlisten 127.0.0.1:{port};\nssl_preread on;\n\
                 return \"$server_port $ssl_preread_protocol|$ssl_preread_server_name|\
                 $ssl_preread_alpn_protocols\\n\";\n}}\n\
                 server {{\nlisten 127.0.0.1:{pp_port} proxy_protocol;\nssl_preread on;\n\
                 return \"$proxy_protocol_addr $ssl_preread_server_name\\n\";\n}}\n}}\n"
            );
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let pp_addr: SocketAddr = ([127, 0, 0, 1], pp_port).into();
            let options = NginxOptions {
                stream_module: true,
                ..NginxOptions::default()
            };
            let _proxy = Proxy::start(kind, &config, &[addr, pp_addr], options);
            let ask_at = |addr: SocketAddr, first: &[u8]| {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                s.write_all(first).expect("write");
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer);
                // The port differs between the two; the rest must not.
                let text = String::from_utf8_lossy(&answer).into_owned();
                text.replacen(&port.to_string(), "PORT", 1).into_bytes()
            };
            // The PROXY header and the hello in one write: the hello is read past the header.
            let header = b"PROXY TCP4 192.0.2.9 10.0.0.1 5555 443\r\n".as_slice();
            vec![
                ask_at(addr, &hello),
                ask_at(addr, b"SSH-2.0-OpenSSH_9.2\r\n"),
                ask_at(pp_addr, &[header, &hello].concat()),
            ]
        })
        .collect();
    assert_eq!(
        answers[1], answers[0],
        "appliance (left) and nginx (right) differ"
    );
    assert_eq!(
        String::from_utf8_lossy(&answers[1][0]),
        "PORT TLSv1.3|ret.test|h2,http/1.1\n"
    );
    assert_eq!(String::from_utf8_lossy(&answers[1][1]), "PORT ||\n");
    assert_eq!(
        String::from_utf8_lossy(&answers[1][2]),
        "192.0.2.9 ret.test\n"
    );
}

/// The ClientHello OpenSSL sends for `name` offering `protocols`: caught by a listener that
/// reads it and hangs up.
fn client_hello(name: &str, protocols: &[&[u8]]) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let caught = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut hello = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            hello.extend_from_slice(&buf[..n]);
        }
        hello
    });
    let mut b = SslConnector::builder(SslMethod::tls()).expect("connector");
    let wire: Vec<u8> = protocols
        .iter()
        .flat_map(|p| std::iter::once(p.len() as u8).chain(p.iter().copied()))
        .collect();
    b.set_alpn_protos(&wire).expect("alpn");
    let tcp = TcpStream::connect(addr).expect("connect");
    let _ = b.build().connect(name, tcp);
    caught.join().expect("the listener")
}

/// Starts `kind` on an nginx.conf whose `stream {}` listens on `ports`, ready without a test
/// connection (which a session log would count, or an ssl_preread server route).
fn start_stream(kind: Kind, config: &str, ports: &[u16]) -> Proxy {
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| ([127, 0, 0, 1], *p).into()).collect();
    let options = NginxOptions {
        stream_module: true,
        ready_without_connecting: true,
        ..NginxOptions::default()
    };
    Proxy::start(kind, config, &addrs, options)
}

/// The stream access log as nginx writes it: one line per session, however it ended (proxied
/// after a refused backend, refused by a rule, a `return`, a broken or good PROXY header,
/// no backend reachable, no live server left, ssl_preread, `off`, `if=`), with the session's
/// own variables. nginx's quirks included: neither the PROXY header nor what `ssl_preread`
/// read counts in `$bytes_received`, but the PROXY header sent to a backend counts in
/// `$upstream_bytes_sent`.
#[test]
fn stream_access_logs_write_what_nginx_writes() {
    support::nginx::require_nginx();
    let dir = TempDir::new("edge-stream-log");
    let backend = echo(Backend::Plain, None);
    let (refused, dead_one, dead_two) = (free_port(), free_port(), free_port());
    let hello = client_hello("log.test", &[b"h2"]);
    let servers = [
        "proxied",
        "denied",
        "returned",
        "proxy_header",
        "refused",
        "dead",
        "off",
        "preread",
        "if_ok",
        "if_denied",
    ];
    let lines: Vec<Vec<String>> = [Kind::Nginx, Kind::Appliance]
        .into_iter()
        .map(|kind| {
            let ports: Vec<u16> = servers.iter().map(|_| free_port()).collect();
            let port = |name: &str| ports[servers.iter().position(|s| *s == name).unwrap()];
            let log = dir.path.join(format!("{}.log", kind.name()));
            let echo = backend.port;
            let config = format!(
                r#"events {{}}
stream {{
    log_format fields '$server_port $status $protocol $bytes_sent $bytes_received '
                      '"$upstream_addr" "$upstream_bytes_sent" "$upstream_bytes_received" '
                      '"$upstream_connect_time" "$upstream_first_byte_time" '
                      '"$upstream_session_time" $session_time $proxy_protocol_addr';
    access_log {log} FIELDS buffer=4k flush=1s;
    map $status $loggable {{ 200 0; default 1; }}
    upstream pair {{ server 127.0.0.1:{refused}; server 127.0.0.1:{echo}; }}
    upstream dead {{ server 127.0.0.1:{dead_one}; server 127.0.0.1:{dead_two}; }}
    server {{ listen 127.0.0.1:{}; proxy_pass pair; }}
    server {{ listen 127.0.0.1:{}; deny all; proxy_pass pair; }}
    server {{ listen 127.0.0.1:{}; return "hi $remote_addr\n"; }}
    server {{ listen 127.0.0.1:{} proxy_protocol; proxy_pass 127.0.0.1:{echo}; }}
    server {{ listen 127.0.0.1:{}; proxy_pass 127.0.0.1:{refused}; }}
    server {{ listen 127.0.0.1:{}; proxy_pass dead; }}
    server {{ listen 127.0.0.1:{}; access_log off; proxy_pass 127.0.0.1:{echo}; }}
    server {{ listen 127.0.0.1:{}; ssl_preread on; proxy_pass 127.0.0.1:{echo}; }}
    server {{ listen 127.0.0.1:{}; access_log {log} fields if=$loggable; return "x"; }}
    server {{ listen 127.0.0.1:{}; access_log {log} fields if=$loggable; deny all; return "x"; }}
}}
"#,
                port("proxied"),
                port("denied"),
                port("returned"),
                port("proxy_header"),
                port("refused"),
                port("dead"),
                port("off"),
                port("preread"),
                port("if_ok"),
                port("if_denied"),
                log = log.display(),
            );
            let _proxy = start_stream(kind, &config, &ports);
            // Each session ends before the next begins: the client waits for the close.
            let session = |name: &str, send: &[u8], echoed: usize| {
                let mut s = TcpStream::connect(("127.0.0.1", port(name))).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                s.write_all(send).expect("write");
                let mut got = vec![0u8; echoed];
                let _ = s.read_exact(&mut got);
                let _ = s.shutdown(std::net::Shutdown::Write);
                let _ = s.read_to_end(&mut Vec::new());
            };
            session("proxied", b"hello\n", 6); // past the refused server
            session("proxied", b"hello\n", 6); // the refused one is not tried again
            session("denied", b"", 0);
            session("returned", b"", 0);
            let header = b"PROXY TCP4 192.0.2.9 10.0.0.1 5555 443\r\n";
            session("proxy_header", &[&header[..], b"hello\n"].concat(), 6);
            session("proxy_header", b"GARBAGE\r\n", 0);
            session("refused", b"", 0);
            session("dead", b"", 0); // both servers tried and failed
            session("dead", b"", 0); // none live
            session("off", b"hello\n", 6);
            session("preread", &hello, hello.len());
            session("if_ok", b"", 0);
            session("if_denied", b"", 0);
            let expected = 11;
            let mut text = String::new();
            for _ in 0..100 {
                text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.lines().count() >= expected {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // Ports and times differ from run to run; the rest must not.
            let times = regex::Regex::new(r"\b\d+\.\d{3}\b").unwrap();
            let mut lines: Vec<String> = text
                .lines()
                .map(|line| {
                    let (port, rest) = line.split_once(' ').unwrap_or((line, ""));
                    let name = ports.iter().position(|p| p.to_string() == port);
                    let rest = times.replace_all(rest, "T");
                    format!("{} {rest}", name.map_or(port, |i| servers[i]))
                })
                .collect();
            lines.sort();
            lines
        })
        .collect();
    for (a, n) in lines[1].iter().zip(&lines[0]) {
        println!("appliance: {a}\nnginx:     {n}");
    }
    assert_eq!(
        lines[1], lines[0],
        "appliance (left) and nginx (right) differ"
    );
    let (echo, r) = (backend.port, refused);
    let h = hello.len();
    let expect = |line: &str| {
        let line = line
            .replace("ECHO", &echo.to_string())
            .replace("REFUSED", &r.to_string())
            .replace("DEAD1", &dead_one.to_string())
            .replace("DEAD2", &dead_two.to_string())
            .replace("HELLO", &h.to_string());
        assert!(
            lines[1].contains(&line),
            "no line {line:?} in {:#?}",
            lines[1]
        );
    };
    expect(
        r#"proxied 200 TCP 6 6 "127.0.0.1:REFUSED, 127.0.0.1:ECHO" "0, 6" "0, 6" "-, T" "-, T" "T, T" T -"#,
    );
    expect(r#"proxied 200 TCP 6 6 "127.0.0.1:ECHO" "6" "6" "T" "T" "T" T -"#);
    expect(r#"denied 403 TCP 0 0 "-" "-" "-" "-" "-" "-" T -"#);
    expect(r#"returned 200 TCP 13 0 "-" "-" "-" "-" "-" "-" T -"#);
    expect(r#"proxy_header 200 TCP 6 6 "127.0.0.1:ECHO" "6" "6" "T" "T" "T" T 192.0.2.9"#);
    expect(r#"proxy_header 400 TCP 0 0 "-" "-" "-" "-" "-" "-" T -"#);
    expect(r#"refused 502 TCP 0 0 "127.0.0.1:REFUSED" "0" "0" "-" "-" "T" T -"#);
    expect(
        r#"dead 502 TCP 0 0 "127.0.0.1:DEAD1, 127.0.0.1:DEAD2" "0, 0" "0, 0" "-, -" "-, -" "T, T" T -"#,
    );
    expect(r#"dead 502 TCP 0 0 "dead" "0" "0" "-" "-" "T" T -"#);
    expect(r#"preread 200 TCP HELLO 0 "127.0.0.1:ECHO" "HELLO" "HELLO" "T" "T" "T" T -"#);
    expect(r#"if_denied 403 TCP 0 0 "-" "-" "-" "-" "-" "-" T -"#);
    assert_eq!(lines[1].len(), 11, "{:#?}", lines[1]);
}

/// A backend that reads until the client's end of stream, then answers with what it read and
/// closes: only a proxy that passes a half-close on lets the answer through.
fn answer_after_eof() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut request = Vec::new();
                if conn.read_to_end(&mut request).is_ok() {
                    let _ = conn.write_all(format!("read {} bytes\n", request.len()).as_bytes());
                }
            });
        }
    });
    port
}

/// Stream realip (`set_real_ip_from`: a trusted PROXY header names the client for variables and
/// `allow`/`deny`), `proxy_half_close`, and the PROXY header and TLS handshake time limits, each
/// next to nginx doing the same.
#[test]
fn stream_realip_half_close_and_time_limits_as_nginx_does() {
    support::nginx::require_nginx();
    let answering = answer_after_eof();
    let names = [
        "realip",
        "untrusted",
        "half_close",
        "whole_close",
        "pp_timeout",
        "tls_timeout",
    ];
    let dir = TempDir::new("edge-stream-realip");
    let (crt, key) = make_cert(&dir, "front.test", "rsa");
    let results: Vec<Vec<String>> = [Kind::Nginx, Kind::Appliance]
        .into_iter()
        .map(|kind| {
            let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
            let port = |name: &str| ports[names.iter().position(|n| *n == name).unwrap()];
            let config = format!(
                r#"events {{}}
stream {{
    set_real_ip_from 127.0.0.1;
    server {{
        listen 127.0.0.1:{} proxy_protocol;
        allow 192.0.2.0/24;
        deny all;
        return "$remote_addr $remote_port $realip_remote_addr $proxy_protocol_addr\n";
    }}
    server {{
        listen 127.0.0.1:{} proxy_protocol;
        set_real_ip_from 10.0.0.0/8;
        return "$remote_addr $realip_remote_addr $proxy_protocol_addr\n";
    }}
    server {{ listen 127.0.0.1:{}; proxy_half_close on; proxy_pass 127.0.0.1:{answering}; }}
    server {{ listen 127.0.0.1:{}; proxy_pass 127.0.0.1:{answering}; }}
    server {{
        listen 127.0.0.1:{} proxy_protocol;
        proxy_protocol_timeout 1s;
        return "late\n";
    }}
    server {{
        listen 127.0.0.1:{} ssl;
        ssl_certificate {};
        ssl_certificate_key {};
        ssl_handshake_timeout 1s;
        return "late\n";
    }}
}}
"#,
                port("realip"),
                port("untrusted"),
                port("half_close"),
                port("whole_close"),
                port("pp_timeout"),
                port("tls_timeout"),
                crt.display(),
                key.display(),
            );
            let _proxy = start_stream(kind, &config, &ports);
            // What a client that sends `first`, then closes its sending side when `shut`,
            // reads back before the proxy closes.
            let ask = |name: &str, first: &[u8], shut: bool| {
                let mut s = TcpStream::connect(("127.0.0.1", port(name))).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                s.write_all(first).expect("write");
                if shut {
                    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
                }
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer);
                String::from_utf8_lossy(&answer).into_owned()
            };
            // A client that sends nothing: is it let go within the time limit? (Without one of
            // its own, 30 s and 60 s, the read would time out first, at 10 s.)
            let let_go_in_time = |name: &str| {
                let mut s = TcpStream::connect(("127.0.0.1", port(name))).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let mut answer = Vec::new();
                match s.read_to_end(&mut answer) {
                    Ok(_) => format!("closed, sent {answer:?}"),
                    Err(e) => format!("still open ({:?})", e.kind()),
                }
            };
            vec![
                ask(
                    "realip",
                    b"PROXY TCP4 192.0.2.9 10.0.0.1 5555 443\r\n",
                    false,
                ),
                ask(
                    "realip",
                    b"PROXY TCP4 198.51.100.7 10.0.0.1 5555 443\r\n",
                    false,
                ),
                ask(
                    "untrusted",
                    b"PROXY TCP4 192.0.2.9 10.0.0.1 5555 443\r\n",
                    false,
                ),
                ask("half_close", b"ping", true),
                ask("whole_close", b"ping", true),
                let_go_in_time("pp_timeout"),
                let_go_in_time("tls_timeout"),
            ]
        })
        .collect();
    assert_eq!(
        results[1], results[0],
        "appliance (left) and nginx (right) differ"
    );
    assert_eq!(
        results[1][..5],
        [
            "192.0.2.9 5555 127.0.0.1 192.0.2.9\n",
            "",
            "127.0.0.1 127.0.0.1 192.0.2.9\n",
            "read 4 bytes\n",
            "",
        ]
    );
    assert!(results[1][5].starts_with("closed"), "{:?}", results[1][5]);
    assert!(results[1][6].starts_with("closed"), "{:?}", results[1][6]);
}

/// A TLS echo backend with the certificate `crt`, which notes the name each client asked for
/// (SNI; empty without).
fn tls_echo_noting_names(crt: &Path, key: &Path) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let names = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
    b.set_certificate_chain_file(crt).expect("cert");
    b.set_private_key_file(key, SslFiletype::PEM).expect("key");
    let acceptor = Arc::new(b.build());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let noted = names.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (acceptor, noted) = (acceptor.clone(), noted.clone());
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(mut s) = acceptor.accept(conn) else {
                    return;
                };
                let name = s.ssl().servername(pingora::tls::ssl::NameType::HOST_NAME);
                noted.lock().unwrap().push(name.unwrap_or("").to_string());
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, names)
}

/// TLS to stream backends checked as nginx checks it (`proxy_ssl_verify`, `_trusted_certificate`,
/// `_name`, `_server_name`): a backend whose certificate does not chain to the trusted one or
/// does not match the name is not used; the name defaults to the upstream's; SNI is sent only
/// when asked for.
#[test]
fn stream_tls_to_backends_is_verified_as_nginx_does() {
    support::nginx::require_nginx();
    let dir = TempDir::new("edge-stream-verify");
    let (back_crt, back_key) = make_cert(&dir, "back.test", "rsa");
    let (other_crt, _) = make_cert(&dir, "other.test", "rsa");
    let (backend, names) = tls_echo_noting_names(&back_crt, &back_key);
    let servers = [
        "verified",
        "wrong_name",
        "wrong_ca",
        "unchecked",
        "by_upstream",
        "with_sni",
        "sni_address",
    ];
    let results: Vec<(Vec<String>, Vec<String>)> = [Kind::Nginx, Kind::Appliance]
        .into_iter()
        .map(|kind| {
            let ports: Vec<u16> = servers.iter().map(|_| free_port()).collect();
            let port = |name: &str| ports[servers.iter().position(|s| *s == name).unwrap()];
            let (back, other) = (back_crt.display(), other_crt.display());
            let config = format!(
                r#"events {{}}
stream {{
    upstream back.test {{ server 127.0.0.1:{backend}; }}
    proxy_ssl on;
    proxy_ssl_trusted_certificate {back};
    # nginx would resume a session an earlier server verified, and report its result.
    proxy_ssl_session_reuse off;
    server {{ listen 127.0.0.1:{}; proxy_ssl_verify on; proxy_ssl_name back.test; proxy_pass 127.0.0.1:{backend}; }}
    server {{ listen 127.0.0.1:{}; proxy_ssl_verify on; proxy_ssl_name other.test; proxy_pass 127.0.0.1:{backend}; }}
    server {{ listen 127.0.0.1:{}; proxy_ssl_verify on; proxy_ssl_trusted_certificate {other}; proxy_ssl_name back.test; proxy_pass 127.0.0.1:{backend}; }}
    server {{ listen 127.0.0.1:{}; proxy_pass 127.0.0.1:{backend}; }}
    server {{ listen 127.0.0.1:{}; proxy_ssl_verify on; proxy_pass back.test; }}
    server {{ listen 127.0.0.1:{}; proxy_ssl_server_name on; proxy_pass back.test; }}
    server {{ listen 127.0.0.1:{}; proxy_ssl_server_name on; proxy_ssl_name $server_addr:1; proxy_pass back.test; }}
}}
"#,
                port("verified"),
                port("wrong_name"),
                port("wrong_ca"),
                port("unchecked"),
                port("by_upstream"),
                port("with_sni"),
                port("sni_address"),
            );
            names.lock().unwrap().clear();
            let _proxy = start_stream(kind, &config, &ports);
            let echoed: Vec<String> = servers
                .iter()
                .map(|name| {
                    let (got, _) = exchange(port(name), b"", b"ping\n");
                    format!("{name}: {}", String::from_utf8_lossy(&got).trim_end_matches('\0'))
                })
                .collect();
            let mut seen = names.lock().unwrap().clone();
            seen.sort();
            (echoed, seen)
        })
        .collect();
    assert_eq!(
        results[1], results[0],
        "appliance (left) and nginx (right) differ"
    );
    let (echoed, seen) = &results[1];
    assert_eq!(
        echoed,
        &[
            "verified: ping\n",
            "wrong_name: ",
            "wrong_ca: ",
            "unchecked: ping\n",
            "by_upstream: ping\n",
            "with_sni: ping\n",
            "sni_address: ping\n",
        ]
    );
    // Only `with_sni` sent a name, the upstream's; `sni_address`'s name is an address once its
    // port is stripped, and an address is never sent.
    let sent: Vec<&String> = seen.iter().filter(|n| !n.is_empty()).collect();
    assert_eq!(sent, ["back.test"], "{seen:?}");
}

//! TLS pass-through routed on what the ClientHello says, against Debian's nginx 1.22: stream
//! `ssl_preread`, `map`s of `$ssl_preread_server_name`, `$ssl_preread_alpn_protocols` and
//! `$ssl_preread_protocol`, and `proxy_pass $variable`.
//!
//! Each test serves one nginx.conf (only the listen ports differ) with real nginx and then with
//! `appliance run -c`, in front of the same recording backends, and drives the same clients
//! through both. For every client connection it keeps which backends were connected to, the exact
//! bytes each received, and what the client read back. The appliance must match nginx record for
//! record, and nginx must do what each case states (so that a test cannot pass with both proxies
//! sending everything to the default, or nowhere).

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use pingora::tls::ssl::{SslAcceptor, SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use support::nginx::require_nginx;
use support::proxies::{Kind, NginxOptions, Proxy};
use support::{free_port, make_cert, TempDir};

/// Between the TCP writes of a client that sends its ClientHello piecemeal.
const PAUSE: Duration = Duration::from_millis(100);
/// The longest a client waits for a byte; nothing here should take more than a moment.
const CLIENT_WAIT: Duration = Duration::from_secs(3);
/// A backend connection with nothing to read for this long is over.
const BACKEND_SILENCE: Duration = Duration::from_secs(2);
/// A proxy that connects to a backend does so before it answers its client; this covers the
/// accept that may still be in flight when the client is done.
const GRACE: Duration = Duration::from_millis(100);

/// The name the TLS backend's certificate carries, and the SNI that routes to it.
const TLS_NAME: &str = "tls.example.test";

/// `map $ssl_preread_server_name` with `hostnames`: exact and wildcard names, in any case and
/// with a trailing dot; no SNI, an unknown name and a client that is not TLS take the default.
#[test]
fn routes_on_the_server_name() {
    let hello = |name: &str| Hello::new().server_name(name).record();
    let cases = vec![
        Case::send("exact name", Listener::Name, hello("a.example.test")).expect(To("pool_a")),
        Case::send("wildcard name", Listener::Name, hello("x.b.example.test")).expect(To("pool_b")),
        Case::send(
            "wildcard name, two labels deep",
            Listener::Name,
            hello("deep.x.b.example.test"),
        )
        .expect(To("pool_b")),
        // Map lookups ignore case, and `hostnames` drops a trailing dot.
        Case::send("upper case", Listener::Name, hello("A.EXAMPLE.TEST")).expect(To("pool_a")),
        Case::send("trailing dot", Listener::Name, hello("a.example.test.")).expect(To("pool_a")),
        Case::send(
            "mixed case and trailing dot under a wildcard",
            Listener::Name,
            hello("X.B.Example.Test."),
        )
        .expect(To("pool_b")),
        // `*.b.example.test` is only for names below b.example.test.
        Case::send(
            "the wildcard's own domain",
            Listener::Name,
            hello("b.example.test"),
        )
        .expect(To("pool_default")),
        Case::send(
            "unknown name",
            Listener::Name,
            hello("unknown.example.test"),
        )
        .expect(To("pool_default")),
        Case::send("no SNI", Listener::Name, Hello::new().record()).expect(To("pool_default")),
        Case::send(
            "not TLS at all",
            Listener::Name,
            b"GET / HTTP/1.0\r\nHost: a.example.test\r\n\r\n".to_vec(),
        )
        .expect(To("pool_default")),
    ];
    differential("sni-name", &cases);
}

/// `map $ssl_preread_alpn_protocols`: the list as nginx joins it (comma-separated, in the
/// client's order), matched exactly or by a regex.
#[test]
fn routes_on_the_alpn_list() {
    let hello = |alpn: &'static [&'static str]| {
        Hello::new()
            .server_name("a.example.test")
            .alpn(alpn)
            .record()
    };
    let cases = vec![
        Case::send(
            "h2 and http/1.1",
            Listener::Alpn,
            hello(&["h2", "http/1.1"]),
        )
        .expect(To("pool_a")),
        Case::send(
            "http/1.1 then h2",
            Listener::Alpn,
            hello(&["http/1.1", "h2"]),
        )
        .expect(To("pool_a")),
        Case::send("http/1.1 only", Listener::Alpn, hello(&["http/1.1"])).expect(To("pool_b")),
        // `\bh2\b` does not match h2c, and the exact "http/1.1" does not match a longer list.
        Case::send("h2c only", Listener::Alpn, hello(&["h2c"])).expect(To("pool_default")),
        Case::send(
            "http/1.1 among others",
            Listener::Alpn,
            hello(&["http/1.1", "spdy/3.1"]),
        )
        .expect(To("pool_default")),
        Case::send("no ALPN", Listener::Alpn, hello(&[])).expect(To("pool_default")),
    ];
    differential("sni-alpn", &cases);
}

/// `map $ssl_preread_protocol`: empty for a client that is not TLS, the legacy version without
/// supported_versions, TLSv1.3 with it.
#[test]
fn routes_on_the_protocol_version() {
    let cases = vec![
        Case::send(
            "an SSH client's banner",
            Listener::Proto,
            b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(),
        )
        .expect(To("pool_a")),
        // A handshake record of a major version other than 3 is not parsed: no protocol.
        Case::send(
            "a handshake record that is not TLS",
            Listener::Proto,
            vec![0x16, 0x02, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5],
        )
        .expect(To("pool_a")),
        Case::send(
            "TLS 1.2 hello (no supported_versions)",
            Listener::Proto,
            Hello::new()
                .server_name("a.example.test")
                .versions(&[])
                .record(),
        )
        .expect(To("pool_b")),
        Case::send(
            "TLS 1.3 hello (supported_versions)",
            Listener::Proto,
            Hello::new().server_name("a.example.test").record(),
        )
        .expect(To("pool_default")),
        // Browsers put a GREASE value first; it must not be taken for the version.
        Case::send(
            "TLS 1.3 hello with GREASE in supported_versions",
            Listener::Proto,
            Hello::new()
                .server_name("a.example.test")
                .versions(&[0x7a7a, 0x0304, 0x0303])
                .record(),
        )
        .expect(To("pool_default")),
        Case::send(
            "TLS 1.0 hello",
            Listener::Proto,
            Hello::new().legacy_version(0x0301).versions(&[]).record(),
        )
        .expect(To("pool_default")),
    ];
    differential("sni-proto", &cases);
}

/// A ClientHello split over TLS records and over TCP writes with pauses is read whole before
/// routing, and the backend gets exactly the bytes the client sent; one over the preread buffer
/// is not proxied at all.
#[test]
fn a_hello_in_pieces_is_routed_and_passed_on_intact() {
    let a = Hello::new().server_name("a.example.test").alpn(&["h2"]);
    let b = Hello::new().server_name("x.b.example.test");
    // A cut this early in the message puts the SNI extension in the second record.
    const CUT: usize = 40;
    let a_two_records = a.records(CUT);
    let b_two_records = b.records(CUT);
    let first_record = 5 + CUT;
    let cases = vec![
        Case::send(
            "two records, one write",
            Listener::Name,
            a_two_records.clone(),
        )
        .expect(To("pool_a")),
        Case::new(
            "one record over four writes",
            Listener::Name,
            chunked(&a.record(), &[1, 4, 60]),
        )
        .expect(To("pool_a")),
        Case::new(
            "two records, one write each",
            Listener::Name,
            chunked(&b_two_records, &[first_record]),
        )
        .expect(To("pool_b")),
        Case::new(
            "two records over writes that cut through both",
            Listener::Name,
            chunked(&a_two_records, &[3, 30, first_record + 2]),
        )
        .expect(To("pool_a")),
        // More than the 16k nginx prereads before it gives up on a hello.
        Case::send(
            "a hello larger than the preread buffer",
            Listener::Name,
            Hello::new()
                .server_name("a.example.test")
                .padding(17_000)
                .record(),
        )
        .expect(Closed),
    ];
    differential("sni-split", &cases);
}

/// After routing the connection is a plain pipe: what the client sends after its hello, in the
/// same write or later, reaches the backend, and the backend's answers reach the client.
#[test]
fn bytes_after_the_hello_flow_both_ways() {
    let hello = Hello::new().server_name("a.example.test").record();
    let mut with_data = hello.clone();
    with_data.extend_from_slice(b"application data in the same write\n");
    let cases = vec![
        Case::new(
            "hello, echo, then data",
            Listener::Name,
            vec![
                Step::Write(hello.clone()),
                Step::Echo,
                Step::Write(b"application data after the hello\n".to_vec()),
                Step::Echo,
                Step::Write(vec![0x17, 0x03, 0x03, 0x00, 0x03, 0xff, 0x00, 0x80]),
                Step::Echo,
            ],
        )
        .expect(To("pool_a")),
        Case::send("hello and data in one write", Listener::Name, with_data).expect(To("pool_a")),
        Case::new(
            "not TLS, several exchanges",
            Listener::Proto,
            vec![
                Step::Write(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()),
                Step::Echo,
                Step::Write(b"more after the banner\r\n".to_vec()),
                Step::Echo,
            ],
        )
        .expect(To("pool_a")),
    ];
    differential("sni-data", &cases);
}

/// `proxy_pass $addr` whose value is an address, an upstream's name, or something nginx cannot
/// connect to (the client is closed, no backend is dialled).
#[test]
fn proxy_pass_to_an_address_or_to_nothing() {
    let hello = |name: &str| Hello::new().server_name(name).record();
    let cases = vec![
        Case::send(
            "an address with a port",
            Listener::Addr,
            hello("direct.example.test"),
        )
        .expect(To("pool_b")),
        Case::send(
            "an upstream's name",
            Listener::Addr,
            hello("named.example.test"),
        )
        .expect(To("pool_a")),
        Case::send(
            "the map's default",
            Listener::Addr,
            hello("other.example.test"),
        )
        .expect(To("pool_default")),
        // No upstream of that name, no port: nginx logs `no port in upstream "nosuch"`.
        Case::send(
            "a name without a port that no upstream has",
            Listener::Addr,
            hello("nosuch.example.test"),
        )
        .expect(Closed),
        // A host name to resolve, and no `resolver`: nginx logs `no resolver defined`.
        Case::send(
            "a host name with a port and no resolver",
            Listener::Addr,
            hello("resolve.example.test"),
        )
        .expect(Closed),
    ];
    differential("sni-addr", &cases);
}

/// A real handshake through the proxy: the backend chosen by SNI terminates TLS, the client
/// sees its certificate, and data flows end to end.
#[test]
fn real_tls_passes_through_to_the_backend_its_name_chooses() {
    let cases = vec![
        Case {
            name: "openssl client with SNI".into(),
            listener: Listener::Name,
            client: Client::Tls {
                server_name: TLS_NAME,
                message: b"hello over end-to-end TLS\n",
            },
            expect: To("pool_tls"),
        },
        // The client's own spelling of the name; the map folds it as for the hand-made hellos.
        Case {
            name: "openssl client with an upper-case SNI".into(),
            listener: Listener::Name,
            client: Client::Tls {
                server_name: "TLS.EXAMPLE.TEST",
                message: b"again, by another spelling\n",
            },
            expect: To("pool_tls"),
        },
    ];
    differential("sni-tls", &cases);
}

/// nginx routes only once prereading ends with a verdict; a client that closes first (having
/// sent nothing, or too little to tell) is dropped without any backend being dialled.
#[test]
fn a_client_that_sends_nothing_or_too_little_is_not_proxied() {
    let partial = Hello::new().server_name("a.example.test").record()[..100].to_vec();
    let cases = vec![
        Case::new(
            "connect and half-close",
            Listener::Name,
            vec![Step::HalfClose],
        )
        .expect(Closed),
        Case::new("connect and close", Listener::Name, vec![]).expect(Closed),
        // Even where an empty protocol has a route: nothing was read, so nothing is routed.
        Case::new(
            "connect and half-close, protocol listener",
            Listener::Proto,
            vec![Step::HalfClose],
        )
        .expect(Closed),
        // Fewer than the 5 bytes of a record header: not yet known not to be TLS.
        Case::new(
            "three bytes that are not TLS, then half-close",
            Listener::Proto,
            vec![Step::Write(b"GET".to_vec()), Step::HalfClose],
        )
        .expect(Closed),
        Case::new(
            "part of a hello, then half-close",
            Listener::Name,
            vec![Step::Write(partial), Step::HalfClose],
        )
        .expect(Closed),
    ];
    differential("sni-empty", &cases);
}

// ---------------------------------------------------------------------------------------------
// The differential run.

/// The four servers of the config, one per way of choosing the backend.
#[derive(Clone, Copy, Debug)]
enum Listener {
    Name,
    Alpn,
    Proto,
    Addr,
}

impl Listener {
    const ALL: [Listener; 4] = [
        Listener::Name,
        Listener::Alpn,
        Listener::Proto,
        Listener::Addr,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// One client connection and what nginx does with it.
struct Case {
    name: String,
    listener: Listener,
    client: Client,
    expect: Expect,
}

impl Case {
    fn new(name: &str, listener: Listener, steps: Vec<Step>) -> Case {
        Case {
            name: name.into(),
            listener,
            client: Client::Script(steps),
            expect: Closed,
        }
    }

    /// Sends `bytes` in one write and reads their echo.
    fn send(name: &str, listener: Listener, bytes: Vec<u8>) -> Case {
        Case::new(name, listener, vec![Step::Write(bytes), Step::Echo])
    }

    fn expect(mut self, expect: Expect) -> Case {
        self.expect = expect;
        self
    }
}

enum Client {
    Script(Vec<Step>),
    /// A real TLS client (SNI `server_name`) that sends `message` and reads its echo.
    Tls {
        server_name: &'static str,
        message: &'static [u8],
    },
}

enum Step {
    Write(Vec<u8>),
    Pause,
    /// Reads until everything written so far has come back (backends echo), or the end.
    Echo,
    /// Shuts down the sending side, then reads to the end.
    HalfClose,
}

enum Expect {
    /// One connection to this backend, which gets every byte the client sent.
    To(&'static str),
    /// The connection ends without any backend being connected to.
    Closed,
}
use Expect::{Closed, To};

/// What one client connection came to.
#[derive(Clone, PartialEq, Eq)]
struct Outcome {
    visits: Vec<Visit>,
    /// What the client read (for TLS clients, the decrypted echo).
    reply: Vec<u8>,
    /// The proxy closed (or reset) the client's connection while the client was reading.
    closed: bool,
    /// The subject CN of the certificate a TLS client was shown.
    peer: Option<String>,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "backends [")?;
        for (i, v) in self.visits.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{} got {}", v.backend, show(&v.received))?;
        }
        write!(
            f,
            "], client read {}, closed: {}",
            show(&self.reply),
            self.closed
        )?;
        if let Some(peer) = &self.peer {
            write!(f, ", certificate of {peer}")?;
        }
        Ok(())
    }
}

/// Serves the cases with nginx, checks nginx does what they state, then serves them with the
/// appliance and compares.
fn differential(label: &str, cases: &[Case]) {
    require_nginx();
    let dir = TempDir::new(label);
    let mut backends = Backends::start(&dir);

    let (nginx, nginx_log) = serve(Kind::Nginx, &mut backends, cases);
    for (case, got) in cases.iter().zip(&nginx) {
        if let Err(why) = meets(case, got) {
            panic!(
                "nginx itself does not do what case \"{}\" expects ({why}); it did: {got:?}\n\
                 nginx's error log:\n{nginx_log}",
                case.name
            );
        }
    }

    let (appliance, appliance_log) = serve(Kind::Appliance, &mut backends, cases);
    let differing: Vec<String> = cases
        .iter()
        .zip(nginx.iter().zip(&appliance))
        .filter(|(_, (n, a))| n != a)
        .map(|(case, (n, a))| {
            format!(
                "case \"{}\" ({:?} listener):\n  nginx:     {n:?}\n  appliance: {a:?}",
                case.name, case.listener
            )
        })
        .collect();
    assert!(
        differing.is_empty(),
        "the appliance differs from nginx in {} of {} cases:\n{}\n\
         the appliance's log:\n{appliance_log}\nnginx's error log:\n{nginx_log}",
        differing.len(),
        cases.len(),
        differing.join("\n")
    );
}

/// Whether `got` is what `case` says nginx does.
fn meets(case: &Case, got: &Outcome) -> Result<(), String> {
    let (sent, reads, peer) = match &case.client {
        Client::Script(steps) => {
            let sent: Vec<u8> = steps
                .iter()
                .filter_map(|s| match s {
                    Step::Write(b) => Some(b.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            let reads = steps
                .iter()
                .any(|s| matches!(s, Step::Echo | Step::HalfClose));
            (sent, reads, None)
        }
        Client::Tls { message, .. } => (message.to_vec(), true, Some(TLS_NAME.to_string())),
    };
    match case.expect {
        To(backend) => {
            let wanted = vec![Visit {
                backend,
                received: sent.clone(),
            }];
            if got.visits != wanted {
                return Err(format!(
                    "one connection to {backend} with all the client sent"
                ));
            }
            if got.reply != sent || got.closed {
                return Err("the client reads the echo of all it sent".into());
            }
            if backend == "pool_tls" && got.peer != peer {
                return Err(format!("the client sees the certificate of {TLS_NAME}"));
            }
        }
        Closed => {
            if !got.visits.is_empty() || !got.reply.is_empty() || got.closed != reads {
                return Err("no backend connection, and the client's connection closed".into());
            }
        }
    }
    Ok(())
}

/// Runs every case against one proxy; returns the outcomes and the proxy's log.
fn serve(kind: Kind, backends: &mut Backends, cases: &[Case]) -> (Vec<Outcome>, String) {
    let ports: Vec<u16> = Listener::ALL.iter().map(|_| free_port()).collect();
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| ([127, 0, 0, 1], *p).into()).collect();
    let options = NginxOptions {
        stream_module: true,
        ready_without_connecting: true,
        ..NginxOptions::default()
    };
    let proxy = Proxy::start(kind, &config(&ports, backends), &addrs, options);
    let mut outcomes = Vec::new();
    for case in cases {
        let port = ports[case.listener.index()];
        let view = match &case.client {
            Client::Script(steps) => run_script(port, steps),
            Client::Tls {
                server_name,
                message,
            } => run_tls(port, server_name, message),
        };
        outcomes.push(Outcome {
            visits: backends.visits(),
            reply: view.reply,
            closed: view.closed,
            peer: view.peer,
        });
    }
    let log = proxy.log_tail(60);
    drop(proxy);
    let stray = backends.visits();
    assert!(
        stray.is_empty(),
        "{} connected to backends after its last case: {stray:?}\nits log:\n{log}",
        kind.name()
    );
    (outcomes, log)
}

/// The nginx.conf both proxies serve; only `listen` (one port per [`Listener`]) differs.
fn config(listen: &[u16], backends: &Backends) -> String {
    let port = |name: &str| backends.port(name);
    format!(
        r#"events {{}}

stream {{
    upstream pool_a       {{ server 127.0.0.1:{a}; }}
    upstream pool_b       {{ server 127.0.0.1:{b}; }}
    upstream pool_default {{ server 127.0.0.1:{d}; }}
    upstream pool_tls     {{ server 127.0.0.1:{t}; }}

    map $ssl_preread_server_name $by_name {{
        hostnames;
        a.example.test      pool_a;
        *.b.example.test    pool_b;
        {TLS_NAME}    pool_tls;
        default             pool_default;
    }}

    map $ssl_preread_alpn_protocols $by_alpn {{
        ~\bh2\b     pool_a;
        "http/1.1"  pool_b;
        default     pool_default;
    }}

    map $ssl_preread_protocol $by_proto {{
        ""         pool_a;
        "TLSv1.2"  pool_b;
        default    pool_default;
    }}

    map $ssl_preread_server_name $addr {{
        hostnames;
        direct.example.test   127.0.0.1:{b};
        named.example.test    pool_a;
        nosuch.example.test   nosuch;
        resolve.example.test  nosuch.invalid:80;
        default               pool_default;
    }}

    server {{ listen 127.0.0.1:{p1}; ssl_preread on; proxy_pass $by_name; }}
    server {{ listen 127.0.0.1:{p2}; ssl_preread on; proxy_pass $by_alpn; }}
    server {{ listen 127.0.0.1:{p3}; ssl_preread on; proxy_pass $by_proto; }}
    server {{ listen 127.0.0.1:{p4}; ssl_preread on; proxy_pass $addr; }}
}}
"#,
        a = port("pool_a"),
        b = port("pool_b"),
        d = port("pool_default"),
        t = port("pool_tls"),
        p1 = listen[Listener::Name.index()],
        p2 = listen[Listener::Alpn.index()],
        p3 = listen[Listener::Proto.index()],
        p4 = listen[Listener::Addr.index()],
    )
}

// ---------------------------------------------------------------------------------------------
// Clients.

struct ClientView {
    reply: Vec<u8>,
    closed: bool,
    peer: Option<String>,
}

fn run_script(port: u16, steps: &[Step]) -> ClientView {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
    s.set_read_timeout(Some(CLIENT_WAIT)).expect("read timeout");
    s.set_write_timeout(Some(CLIENT_WAIT))
        .expect("write timeout");
    let mut view = ClientView {
        reply: Vec::new(),
        closed: false,
        peer: None,
    };
    let mut written = 0;
    for step in steps {
        match step {
            // A proxy that has closed may refuse the write; the reads that follow say so.
            Step::Write(bytes) => {
                let _ = s.write_all(bytes);
                written += bytes.len();
            }
            Step::Pause => std::thread::sleep(PAUSE),
            Step::Echo => read_into(&mut s, &mut view, Some(written)),
            Step::HalfClose => {
                let _ = s.shutdown(Shutdown::Write);
                read_into(&mut s, &mut view, None);
            }
        }
    }
    view
}

/// Reads until `view.reply` holds `until` bytes (or, with `None`, to the end). A read that
/// times out leaves the connection open as far as the view is concerned.
fn read_into(s: &mut TcpStream, view: &mut ClientView, until: Option<usize>) {
    let mut buf = [0u8; 4096];
    while !view.closed && until.is_none_or(|n| view.reply.len() < n) {
        match s.read(&mut buf) {
            Ok(0) => view.closed = true,
            Ok(n) => view.reply.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return,
            Err(_) => view.closed = true,
        }
    }
}

fn run_tls(port: u16, server_name: &str, message: &[u8]) -> ClientView {
    let mut b = SslConnector::builder(SslMethod::tls()).expect("connector");
    b.set_verify(SslVerifyMode::NONE);
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
    tcp.set_read_timeout(Some(CLIENT_WAIT))
        .expect("read timeout");
    let connector = b.build();
    let config = connector
        .configure()
        .expect("configure")
        .verify_hostname(false);
    let mut s = match config.connect(server_name, tcp) {
        Ok(s) => s,
        // A handshake with the wrong backend fails; the comparison shows where it went.
        Err(_) => {
            return ClientView {
                reply: Vec::new(),
                closed: true,
                peer: None,
            }
        }
    };
    let peer = s.ssl().peer_certificate().and_then(|c| {
        c.subject_name()
            .entries()
            .next()
            .and_then(|e| e.data().to_string().ok())
    });
    let _ = s.write_all(message);
    let mut reply = vec![0u8; message.len()];
    let mut filled = 0;
    let mut closed = false;
    while filled < reply.len() {
        match s.read(&mut reply[filled..]) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => filled += n,
            Err(_) => break,
        }
    }
    reply.truncate(filled);
    ClientView {
        reply,
        closed,
        peer,
    }
}

/// `bytes` as writes cut at `cuts` (offsets into `bytes`), with a pause before each but the
/// first, then reading the echo.
fn chunked(bytes: &[u8], cuts: &[usize]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&bytes.len())) {
        if from > 0 {
            steps.push(Step::Pause);
        }
        steps.push(Step::Write(bytes[from..to].to_vec()));
        from = to;
    }
    steps.push(Step::Echo);
    steps
}

/// A TLS ClientHello built by hand, so each field nginx reads is under the test's control.
#[derive(Clone)]
struct Hello {
    server_name: Option<String>,
    alpn: &'static [&'static str],
    /// The supported_versions extension; empty leaves it out.
    versions: &'static [u16],
    legacy_version: u16,
    padding: usize,
}

impl Hello {
    fn new() -> Hello {
        Hello {
            server_name: None,
            alpn: &[],
            versions: &[0x0304, 0x0303],
            legacy_version: 0x0303,
            padding: 64,
        }
    }

    fn server_name(mut self, name: &str) -> Hello {
        self.server_name = Some(name.to_string());
        self
    }

    fn alpn(mut self, protocols: &'static [&'static str]) -> Hello {
        self.alpn = protocols;
        self
    }

    fn versions(mut self, versions: &'static [u16]) -> Hello {
        self.versions = versions;
        self
    }

    fn legacy_version(mut self, version: u16) -> Hello {
        self.legacy_version = version;
        self
    }

    fn padding(mut self, len: usize) -> Hello {
        self.padding = len;
        self
    }

    /// The handshake message: type 1 (client_hello), a 24-bit length, the body.
    fn handshake(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&self.legacy_version.to_be_bytes());
        // Fixed "random" and session id: both proxies must see the very same bytes.
        body.extend((0..32u8).map(|i| i.wrapping_mul(7).wrapping_add(3)));
        body.push(32);
        body.extend((0..32u8).map(|i| i.wrapping_mul(11).wrapping_add(5)));
        let suites: [u16; 6] = [0x1301, 0x1302, 0x1303, 0xc02f, 0xc030, 0x009e];
        body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
        for suite in suites {
            body.extend_from_slice(&suite.to_be_bytes());
        }
        body.extend_from_slice(&[1, 0]);

        let mut extensions = Vec::new();
        // supported_groups first: nginx has to step over an extension it does not read.
        extension(&mut extensions, 10, &[0, 4, 0x00, 0x1d, 0x00, 0x17]);
        if let Some(name) = &self.server_name {
            let mut sni = Vec::new();
            sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
            sni.push(0);
            sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
            sni.extend_from_slice(name.as_bytes());
            extension(&mut extensions, 0, &sni);
        }
        if !self.alpn.is_empty() {
            let list: Vec<u8> = self
                .alpn
                .iter()
                .flat_map(|p| std::iter::once(p.len() as u8).chain(p.bytes()))
                .collect();
            let mut alpn = (list.len() as u16).to_be_bytes().to_vec();
            alpn.extend_from_slice(&list);
            extension(&mut extensions, 16, &alpn);
        }
        if !self.versions.is_empty() {
            let mut versions = vec![(self.versions.len() * 2) as u8];
            for v in self.versions {
                versions.extend_from_slice(&v.to_be_bytes());
            }
            extension(&mut extensions, 43, &versions);
        }
        extension(&mut extensions, 21, &vec![0; self.padding]);
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(&extensions);

        let mut message = vec![1];
        message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&body);
        message
    }

    /// The handshake in one TLS record.
    fn record(&self) -> Vec<u8> {
        tls_record(&self.handshake())
    }

    /// The handshake in two TLS records, the first holding its first `cut` bytes.
    fn records(&self, cut: usize) -> Vec<u8> {
        let handshake = self.handshake();
        let mut out = tls_record(&handshake[..cut]);
        out.extend_from_slice(&tls_record(&handshake[cut..]));
        out
    }
}

fn extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// A handshake record; its version says TLS 1.0, as clients' first records do.
fn tls_record(fragment: &[u8]) -> Vec<u8> {
    let mut out = vec![0x16, 0x03, 0x01];
    out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
    out.extend_from_slice(fragment);
    out
}

// ---------------------------------------------------------------------------------------------
// Backends.

/// One backend connection: which backend, and every byte it received (for the TLS backend,
/// after decryption).
#[derive(Clone, PartialEq, Eq)]
struct Visit {
    backend: &'static str,
    received: Vec<u8>,
}

impl std::fmt::Debug for Visit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} got {}", self.backend, show(&self.received))
    }
}

/// Echo backends that record each connection: pool_a, pool_b and pool_default in the clear,
/// pool_tls terminating TLS with a certificate for [`TLS_NAME`].
struct Backends {
    ports: Vec<(&'static str, u16)>,
    accepted: Arc<AtomicUsize>,
    taken: usize,
    visits: mpsc::Receiver<Visit>,
}

impl Backends {
    fn start(dir: &TempDir) -> Backends {
        let (crt, key) = make_cert(dir, TLS_NAME, "rsa");
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
        b.set_certificate_chain_file(&crt).expect("certificate");
        b.set_private_key_file(&key, SslFiletype::PEM).expect("key");
        let acceptor = Arc::new(b.build());
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, visits) = mpsc::channel();
        let mut ports = Vec::new();
        for name in ["pool_a", "pool_b", "pool_default", "pool_tls"] {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a backend");
            ports.push((name, listener.local_addr().expect("addr").port()));
            let tls = (name == "pool_tls").then(|| acceptor.clone());
            let (accepted, tx) = (accepted.clone(), tx.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (tx, tls) = (tx.clone(), tls.clone());
                    std::thread::spawn(move || {
                        let received = serve_connection(conn, tls.as_deref());
                        let _ = tx.send(Visit {
                            backend: name,
                            received,
                        });
                    });
                }
            });
        }
        Backends {
            ports,
            accepted,
            taken: 0,
            visits,
        }
    }

    fn port(&self, name: &str) -> u16 {
        self.ports
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .expect("a backend of that name")
    }

    /// The backend connections made since the last call, each once it has ended. Cases run one
    /// at a time, so these belong to the client connection that just finished.
    fn visits(&mut self) -> Vec<Visit> {
        std::thread::sleep(GRACE);
        let deadline = Instant::now() + BACKEND_SILENCE + CLIENT_WAIT;
        let mut out = Vec::new();
        while self.taken < self.accepted.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.visits.recv_timeout(left) {
                Ok(v) => {
                    self.taken += 1;
                    out.push(v);
                }
                Err(_) => panic!("a backend connection did not end within {BACKEND_SILENCE:?}"),
            }
        }
        out
    }
}

/// Echoes and records until the proxy closes the connection or goes quiet.
fn serve_connection(conn: TcpStream, tls: Option<&SslAcceptor>) -> Vec<u8> {
    let _ = conn.set_read_timeout(Some(BACKEND_SILENCE));
    let _ = conn.set_write_timeout(Some(BACKEND_SILENCE));
    match tls {
        None => echo(conn),
        Some(acceptor) => match acceptor.accept(conn) {
            Ok(s) => echo(s),
            Err(_) => b"(TLS handshake failed)".to_vec(),
        },
    }
}

fn echo(mut s: impl Read + Write) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
        if s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    received
}

/// Bytes for a failure message: short ones whole, long ones by their ends, length and hash.
fn show(bytes: &[u8]) -> String {
    if bytes.len() <= 48 {
        return format!("{} bytes \"{}\"", bytes.len(), bytes.escape_ascii());
    }
    let hash = bytes.iter().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x01000193)
    });
    format!(
        "{} bytes \"{}\" ... \"{}\" (fnv {hash:08x})",
        bytes.len(),
        bytes[..16].escape_ascii(),
        bytes[bytes.len() - 16..].escape_ascii()
    )
}

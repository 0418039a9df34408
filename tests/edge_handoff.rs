//! One client connection, requests of both kinds: the appliance serves plain HTTP/1.x requests
//! (no body, or a short Content-Length one) on its fast path and hands the others (`Expect`,
//! a chunked body) to Pingora with the bytes already read put back, and Pingora serves the rest
//! of the connection (pipelined requests included). nginx 1.22 and the appliance run the same
//! nginx.conf in front of the same recording backend and must give the same answers, in order,
//! and send the backend the same requests, whether the client waits for each response or
//! pipelines its requests.
//!
//! With two workers, connections are spread over the worker threads' event loops
//! (`proxy::workers`): the last test runs several connections that way.
//!
//! Run: cargo test --test edge_handoff -- --nocapture

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::backends::Backends;
use support::free_port;
use support::proxies::{Kind, NginxOptions, Proxy};

const READ_LIMIT: Duration = Duration::from_secs(5);

fn config(listen: SocketAddr, backend: SocketAddr, workers: usize, root: &str) -> String {
    format!(
        "worker_processes {workers};\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
             access_log off;\n\
             upstream pool {{ server {backend}; keepalive 4; }}\n\
             server {{\n\
                 listen {listen};\n\
                 location / {{\n\
                     proxy_pass http://pool;\n\
                     proxy_http_version 1.1;\n\
                     proxy_set_header Connection \"\";\n\
                 }}\n\
                 location /files/ {{ root {root}; }}\n\
                 location /sent/ {{ alias {root}/files/; sendfile on; sendfile_max_chunk 32k; }}\n\
             }}\n\
         }}\n"
    )
}

fn get(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// Requests the fast path serves, all of them.
fn bodyless(host: &str) -> Vec<Vec<u8>> {
    ["/one", "/two?x=1", "/three", "/four"]
        .iter()
        .map(|p| get(host, p))
        .collect()
}

/// The requests, in order, on one connection: the fast path's and Pingora's interleaved.
fn mixed(host: &str) -> Vec<Vec<u8>> {
    let get = |path: &str| get(host, path);
    vec![
        get("/first"),
        format!("POST /with-body HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello")
            .into_bytes(),
        get("/after-body"),
        format!(
            "POST /chunked HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n\
             3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        .into_bytes(),
        format!("GET /zero-length HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n")
            .into_bytes(),
        format!(
            "PUT /expect HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\
             Expect: 100-continue\r\n\r\nok"
        )
        .into_bytes(),
        get("/last"),
    ]
}

/// Files among proxied requests: whole files, an index and one range (the fast path's), two
/// ranges (Pingora's, which then keeps the connection), files and proxying after it, and a POST
/// the static module refuses without reading its body.
fn with_files(host: &str) -> Vec<Vec<u8>> {
    let get = |path: &str| get(host, path);
    vec![
        get("/files/a.txt"),
        get("/first"),
        get("/files/"),
        get("/files/b.txt"),
        format!("GET /files/b.txt HTTP/1.1\r\nHost: {host}\r\nRange: bytes=2-4\r\n\r\n")
            .into_bytes(),
        format!("GET /files/b.txt HTTP/1.1\r\nHost: {host}\r\nRange: bytes=0-1,4-5\r\n\r\n")
            .into_bytes(),
        get("/files/a.txt"),
        // A body the answer (405) does not read: read and dropped, the connection goes on.
        format!("POST /files/a.txt HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello")
            .into_bytes(),
        get("/last"),
    ]
}

/// Files sent with sendfile(2) among proxied requests and files copied through a buffer: a
/// file larger than the socket's buffers (so that the sending waits for the client), a range
/// and a small file, each answer in its turn.
fn with_sendfile(host: &str) -> Vec<Vec<u8>> {
    let get = |path: &str| get(host, path);
    vec![
        get("/sent/big.txt"),
        get("/first"),
        get("/sent/a.txt"),
        get("/files/big.txt"),
        format!("GET /sent/big.txt HTTP/1.1\r\nHost: {host}\r\nRange: bytes=40000-300005\r\n\r\n")
            .into_bytes(),
        get("/sent/"),
        get("/sent/big.txt"),
        get("/last"),
    ]
}

/// Reads one response (status line, headers, Content-Length body; a 100 Continue skipped).
fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> (u16, String) {
    loop {
        let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
            fill(stream, pending);
            continue;
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {head:?}"));
        if status == 100 {
            pending.drain(..end + 4);
            continue;
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
        while pending.len() < end + 4 + length {
            fill(stream, pending);
        }
        let body = String::from_utf8_lossy(&pending[end + 4..end + 4 + length]).into_owned();
        pending.drain(..end + 4 + length);
        return (status, body);
    }
}

fn fill(stream: &mut TcpStream, pending: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    let n = stream
        .read(&mut buf)
        .unwrap_or_else(|e| panic!("reading a response: {e}; have {pending:?}"));
    assert!(
        n > 0,
        "the connection closed; have {:?}",
        String::from_utf8_lossy(pending)
    );
    pending.extend_from_slice(&buf[..n]);
}

/// What a proxy answered and what the backend received (request line and body length).
type Transcript = (Vec<(u16, String)>, Vec<(String, usize)>);

/// How the proxy runs and what the client does: worker processes (threads for the appliance),
/// connections opened one after the other, and whether each pipelines its requests.
#[derive(Clone, Copy)]
struct Setup {
    workers: usize,
    connections: usize,
    pipelined: bool,
}

impl Setup {
    fn one_connection(pipelined: bool) -> Setup {
        Setup {
            workers: 1,
            connections: 1,
            pipelined,
        }
    }
}

fn run(kind: Kind, requests: fn(&str) -> Vec<Vec<u8>>, setup: Setup) -> Transcript {
    let mut backends = Backends::start(1);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let docroot = support::TempDir::new("handoff-files");
    let files = docroot.path.join("files");
    std::fs::create_dir_all(&files).unwrap();
    for (name, text) in [
        ("index.html", "home\n"),
        ("a.txt", "a\n"),
        ("b.txt", "0123456789\n"),
    ] {
        std::fs::write(files.join(name), text).unwrap();
    }
    let big: String = (0..40_000).map(|i| format!("{:09}\n", i * 10)).collect();
    std::fs::write(files.join("big.txt"), big).unwrap();
    let root = docroot.path.display().to_string();
    let _proxy = Proxy::start(
        kind,
        &config(listen, backends.addr(0), setup.workers, &root),
        &[listen],
        NginxOptions::default(),
    );
    backends.reset(&[support::backends::Plan::ok()]);
    let requests = requests(&listen.to_string());
    let count = requests.len();
    let mut answers = Vec::new();
    for _ in 0..setup.connections {
        let mut stream = TcpStream::connect(listen).unwrap();
        stream.set_read_timeout(Some(READ_LIMIT)).unwrap();
        let mut pending = Vec::new();
        if setup.pipelined {
            // Everything in one write, except what waits for 100 Continue's turn: nginx and
            // the appliance read it in their own time either way.
            stream.write_all(&requests.concat()).unwrap();
            for _ in 0..count {
                answers.push(read_response(&mut stream, &mut pending));
            }
        } else {
            for request in &requests {
                stream.write_all(request).unwrap();
                answers.push(read_response(&mut stream, &mut pending));
            }
        }
    }
    let received = backends
        .receptions()
        .into_iter()
        .map(|r| {
            (
                String::from_utf8_lossy(&r.request_line).into_owned(),
                r.body_len,
            )
        })
        .collect();
    (answers, received)
}

/// The server's name in a page it made itself (nginx's `nginx/1.22.1`), left out.
fn unsigned(mut transcript: Transcript) -> Transcript {
    for (_, body) in &mut transcript.0 {
        if let Some(start) = body.find("<hr><center>") {
            if let Some(len) = body[start..].find("</center>") {
                body.replace_range(start..start + len, "<hr><center>");
            }
        }
    }
    transcript
}

fn compare(requests: fn(&str) -> Vec<Vec<u8>>, setup: Setup) {
    support::nginx::require_nginx();
    let nginx = unsigned(run(Kind::Nginx, requests, setup));
    let appliance = unsigned(run(Kind::Appliance, requests, setup));
    println!("nginx:     {nginx:?}\nappliance: {appliance:?}");
    assert_eq!(nginx.0.len(), requests("x").len() * setup.connections);
    assert!(
        nginx
            .0
            .iter()
            .all(|(status, _)| matches!(*status, 200 | 206 | 405)),
        "nginx answers every request: {nginx:?}"
    );
    assert_eq!(
        appliance, nginx,
        "the appliance (right) against nginx (left)"
    );
}

#[test]
fn requests_of_both_paths_share_a_connection_like_nginx() {
    compare(mixed, Setup::one_connection(false));
}

#[test]
fn pipelined_requests_of_both_paths_are_answered_in_order_like_nginx() {
    compare(mixed, Setup::one_connection(true));
}

#[test]
fn pipelined_bodyless_requests_are_answered_in_order_like_nginx() {
    compare(bodyless, Setup::one_connection(true));
}

#[test]
fn files_and_proxied_requests_share_a_connection_like_nginx() {
    compare(with_files, Setup::one_connection(false));
}

#[test]
fn pipelined_files_and_proxied_requests_are_answered_in_order_like_nginx() {
    compare(with_files, Setup::one_connection(true));
}

#[test]
fn sendfile_files_and_proxied_requests_share_a_connection_like_nginx() {
    compare(with_sendfile, Setup::one_connection(false));
}

#[test]
fn pipelined_sendfile_files_and_proxied_requests_are_answered_in_order_like_nginx() {
    compare(with_sendfile, Setup::one_connection(true));
}

/// Eight connections on two workers: each lands on either thread (at random; all eight on
/// one would be a 1 in 128 chance) and is served there, handed to Pingora midway or not.
#[test]
fn connections_moved_to_their_worker_thread_are_served_like_nginx() {
    compare(
        mixed,
        Setup {
            workers: 2,
            connections: 8,
            pipelined: false,
        },
    );
}

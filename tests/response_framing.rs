//! Response framing, nginx 1.22 against the appliance: both run the same nginx.conf in front of
//! the same scripted raw-TCP backend, receive the same raw requests, and must pass each upstream
//! response on the same way: the status line, the decoded body, how the body is delimited
//! (`Content-Length`, chunked, or up to the close), `Connection`, the headers passed or hidden
//! and their order, whether the client connection serves a second request, and how many
//! connections the backend was opened for each exchange (an upstream connection goes back to
//! the pool only when its response was delimited).
//!
//! The backend picks its answer by the request path (see [`canned`]): chunked bodies with chunk
//! extensions and trailers, an HTTP/1.0 and an HTTP/1.1 body up to the close, a
//! `Content-Length` body written in pieces, 204, 304, HEAD, and headers nginx hides. Each path
//! is asked by four clients (HTTP/1.1 keep-alive, HTTP/1.1 `Connection: close`, HTTP/1.0,
//! HTTP/1.0 `Connection: keep-alive`), through a keep-alive HTTP/1.1 upstream and through
//! nginx's default HTTP/1.0 one.
//!
//! Run: cargo test --test response_framing -- --nocapture   (prints a table of every case)
//! With `APPLIANCE_FRAMING_RAW=1` it also prints what each proxy sent, byte for byte.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::free_port;
use support::proxies::{Kind, NginxOptions, Proxy};

/// Between the pieces of a body the backend writes.
const PIECE_PAUSE: Duration = Duration::from_millis(10);
/// Longest a client waits for a whole response (the proxies' timeouts are 60 s, the backend
/// never stalls: reaching this is itself a finding).
const RESPONSE_LIMIT: Duration = Duration::from_secs(5);
/// How long a client waits for a proxy to close a connection it said it would close.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);
/// Between cases, so that a proxy has put its upstream connection back in the pool before the
/// next case's request arrives on another client connection.
const SETTLE: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// The scripted backend

/// A canned upstream response.
struct Canned {
    /// Status line and headers, up to and including the empty line.
    head: &'static str,
    /// The body as written: one write per piece, with a pause before each.
    pieces: Vec<&'static [u8]>,
    /// The body once its transfer coding is removed.
    body: &'static [u8],
}

/// The backend's answer to `path`.
fn canned(path: &str) -> Canned {
    match path {
        "/chunked" => Canned {
            head: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\
                   X-Custom: chunked\r\n\r\n",
            pieces: vec![
                b"5\r\nhello\r\n",
                b"7;ext=1\r\n, world\r\n",
                b"1;a=b;c=\"d\"\r\n!\r\n0\r\n\r\n",
            ],
            body: b"hello, world!",
        },
        "/chunked-trailer" => Canned {
            head: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\
                   Trailer: X-Checksum\r\n\r\n",
            pieces: vec![
                b"4;name=\"v\"\r\nabcd\r\n",
                b"A\r\n0123456789\r\n0\r\n",
                b"X-Checksum: 42\r\nX-More: 1\r\n\r\n",
            ],
            body: b"abcd0123456789",
        },
        "/close10" => Canned {
            head: "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n",
            pieces: vec![b"until ", b"the close"],
            body: b"until the close",
        },
        "/close11" => Canned {
            head: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
            pieces: vec![b"closed ", b"by the server"],
            body: b"closed by the server",
        },
        "/length" => Canned {
            head: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 26\r\n\r\n",
            pieces: vec![b"abcdefghij", b"klmnopqrst", b"uvwxyz"],
            body: b"abcdefghijklmnopqrstuvwxyz",
        },
        // Both framings: the chunked coding wins (RFC 9112 6.3), the length is not passed on.
        "/chunked-length" => Canned {
            head: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\
                   Transfer-Encoding: chunked\r\n\r\n",
            pieces: vec![b"6\r\nchunks\r\n", b"0\r\n\r\n"],
            body: b"chunks",
        },
        // More than the length says, in the same write: the server's connection is not reused.
        "/length-extra" => Canned {
            head: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
            pieces: vec![b"helloEXTRA"],
            body: b"hello",
        },
        "/empty204" => Canned {
            head: "HTTP/1.1 204 No Content\r\nX-Custom: no-content\r\n\r\n",
            pieces: vec![],
            body: b"",
        },
        "/notmod304" => Canned {
            head: "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nX-Custom: not-modified\r\n\r\n",
            pieces: vec![],
            body: b"",
        },
        "/head" => Canned {
            head: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
            pieces: vec![b"hello"],
            body: b"hello",
        },
        // Location and Last-Modified amid other headers: passed where they are, but for a
        // Location that proxy_redirect makes relative (through `backend`, not `plain`),
        // which nginx writes after Content-Length, made absolute.
        "/moved" => Canned {
            head: "HTTP/1.1 301 Moved Permanently\r\nX-First: 1\r\n\
                   Last-Modified: Sat, 01 Jan 2000 00:00:00 GMT\r\n\
                   Location: http://backend/moved/here\r\nRefresh: 3; url=http://backend/r\r\n\
                   Content-Type: text/plain\r\nContent-Length: 5\r\nX-Last: 2\r\n\r\n",
            pieces: vec![b"moved"],
            body: b"moved",
        },
        "/moved-away" => Canned {
            head: "HTTP/1.1 302 Found\r\nX-First: 1\r\nLocation: http://elsewhere.test/x\r\n\
                   Last-Modified: Sat, 01 Jan 2000 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n",
            pieces: vec![],
            body: b"",
        },
        "/hidden" => Canned {
            head: "HTTP/1.1 200 OK\r\nServer: scripted-backend\r\n\
                   Date: Sat, 01 Jan 2000 00:00:00 GMT\r\nContent-Type: text/plain\r\n\
                   Content-Length: 6\r\nX-Accel-Buffering: no\r\nX-Accel-Expires: 0\r\n\
                   X-Pad: avoid browser bug\r\nKeep-Alive: timeout=5, max=100\r\n\
                   X-Accel-Other: passed\r\nX-Custom: kept\r\n\r\n",
            pieces: vec![b"hidden"],
            body: b"hidden",
        },
        _ => Canned {
            head: "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\n",
            pieces: vec![b"not found"],
            body: b"not found",
        },
    }
}

const BACKEND_SERVER: &str = "scripted-backend";
const BACKEND_DATE: &str = "Sat, 01 Jan 2000 00:00:00 GMT";

/// A raw-TCP HTTP/1.x server on 127.0.0.1 answering from [`canned`]; counts the connections it
/// accepted. Stopped, with every thread joined, on drop.
struct Backend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Backend {
    fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the backend");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the backend's address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = {
            let (accepted, stop, connections) =
                (accepted.clone(), stop.clone(), connections.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            let stop = stop.clone();
                            let handle = std::thread::spawn(move || serve(stream, &stop));
                            connections.lock().unwrap().push(handle);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Backend {
            addr,
            accepted,
            stop,
            acceptor: Some(acceptor),
            connections,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let handles = std::mem::take(&mut *self.connections.lock().unwrap());
        for handle in handles {
            let _ = handle.join();
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Serves one backend connection: request heads (the proxies send no bodies here), each
/// answered from [`canned`]; the connection is kept while the response is delimited, not
/// `Connection: close`, and the request was HTTP/1.1 without `Connection: close`.
fn serve(mut stream: TcpStream, stop: &AtomicBool) {
    // Short reads, so an idle connection notices the end of the test.
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .is_err()
        || stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(at) = find(&buf, b"\r\n\r\n") {
                break at + 4;
            }
            if stop.load(Ordering::SeqCst) || buf.len() > 64 * 1024 {
                return;
            }
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let mut line = head.lines().next().unwrap_or("").split_whitespace();
        let (method, path, version) = (
            line.next().unwrap_or(""),
            line.next().unwrap_or(""),
            line.next().unwrap_or(""),
        );
        let request_close = head.lines().skip(1).any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("connection:") && l.contains("close")
        });
        let answer = canned(path);
        let head_only = method == "HEAD";
        if stream.write_all(answer.head.as_bytes()).is_err() {
            return;
        }
        if !head_only {
            for piece in &answer.pieces {
                std::thread::sleep(PIECE_PAUSE);
                if stream.write_all(piece).is_err() {
                    return;
                }
            }
        }
        let lower = answer.head.to_ascii_lowercase();
        let delimited = head_only
            || lower.contains("\r\ncontent-length:")
            || lower.contains("\r\ntransfer-encoding: chunked")
            || lower.starts_with("http/1.1 204")
            || lower.starts_with("http/1.1 304");
        let persistent = lower.starts_with("http/1.1 ") && !lower.contains("\r\nconnection: close");
        if !(delimited && persistent && version == "HTTP/1.1" && !request_close) {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client

/// How a client asks.
#[derive(Clone, Copy)]
struct Client {
    name: &'static str,
    version: &'static str,
    connection: Option<&'static str>,
}

const CLIENTS: [Client; 4] = [
    Client {
        name: "1.1",
        version: "HTTP/1.1",
        connection: None,
    },
    Client {
        name: "1.1 close",
        version: "HTTP/1.1",
        connection: Some("close"),
    },
    Client {
        name: "1.0",
        version: "HTTP/1.0",
        connection: None,
    },
    Client {
        name: "1.0 keep-alive",
        version: "HTTP/1.0",
        connection: Some("keep-alive"),
    },
];

impl Client {
    fn request(&self, method: &str, path: &str) -> Vec<u8> {
        let mut head = format!("{method} {path} {}\r\nHost: localhost\r\n", self.version);
        if let Some(connection) = self.connection {
            head.push_str(&format!("Connection: {connection}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

/// Reads responses off a client connection, keeping what it received (for reports) and what is
/// not consumed yet (a next response, or bytes that should not be there).
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    raw: Vec<u8>,
    deadline: Instant,
}

impl Reader {
    fn new(stream: TcpStream) -> Reader {
        Reader {
            stream,
            buf: Vec::new(),
            pos: 0,
            raw: Vec::new(),
            deadline: Instant::now() + RESPONSE_LIMIT,
        }
    }

    /// Reads more; `Ok(false)` at the end of the stream.
    fn fill(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 8192];
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out".into());
            }
            self.stream
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .map_err(|e| e.to_string())?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.raw.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    return Err("connection reset".into())
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// A line up to LF, without its CRLF.
    fn line(&mut self, what: &str) -> Result<Vec<u8>, String> {
        loop {
            if let Some(lf) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let mut line = self.buf[self.pos..self.pos + lf].to_vec();
                self.pos += lf + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if !self.fill().map_err(|e| format!("{e} reading {what}"))? {
                return Err(format!("closed in the middle of {what}"));
            }
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<Vec<u8>, String> {
        while self.buf.len() - self.pos < n {
            if !self.fill().map_err(|e| format!("{e} reading {what}"))? {
                return Err(format!(
                    "closed after {} of {n} bytes of {what}",
                    self.buf.len() - self.pos
                ));
            }
        }
        let data = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(data)
    }

    fn until_close(&mut self) -> Result<Vec<u8>, String> {
        while self
            .fill()
            .map_err(|e| format!("{e} reading a body up to the close"))?
        {}
        let data = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        Ok(data)
    }

    /// Forgets what has been consumed: what is left starts the next response.
    fn consumed(&mut self) {
        self.buf.drain(..self.pos);
        self.pos = 0;
    }

    /// Reads one response to a request with `method`.
    fn response(&mut self, method: &str) -> Result<Response, String> {
        let status_line = String::from_utf8_lossy(&self.line("the status line")?).into_owned();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| format!("not a status line: {status_line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line("the response head")?;
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("not a header line: {line:?}"))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = header("content-length");
        let bodyless = method == "HEAD" || status < 200 || status == 204 || status == 304;
        let mut framing = match (chunked, &length) {
            (true, Some(n)) => format!("chunked + content-length {n}"),
            (true, None) => "chunked".to_string(),
            (false, Some(n)) => format!("content-length {n}"),
            (false, None) if bodyless => "none".to_string(),
            (false, None) => "until close".to_string(),
        };
        let mut body = Vec::new();
        let mut trailers = Vec::new();
        if bodyless {
            if chunked || length.is_some() {
                framing.push_str(" (no body)");
            }
        } else if chunked {
            loop {
                let line = self.line("a chunk size")?;
                let text = String::from_utf8_lossy(&line).into_owned();
                let digits = text.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(digits, 16)
                    .map_err(|_| format!("bad chunk size line {text:?}"))?;
                if size == 0 {
                    loop {
                        let line = self.line("the trailer")?;
                        if line.is_empty() {
                            break;
                        }
                        trailers.push(String::from_utf8_lossy(&line).into_owned());
                    }
                    break;
                }
                body.extend(self.take(size, "a chunk")?);
                if !self.take(2, "a chunk's CRLF")?.eq(b"\r\n") {
                    return Err("a chunk not followed by CRLF".into());
                }
            }
        } else if let Some(n) = &length {
            let n: usize = n.parse().map_err(|_| format!("bad Content-Length {n:?}"))?;
            body = self.take(n, "a Content-Length body")?;
        } else {
            body = self.until_close()?;
        }
        self.consumed();
        Ok(Response {
            status_line,
            version,
            headers,
            framing,
            body,
            trailers,
            ended_by_close: !bodyless && !chunked && length.is_none(),
        })
    }
}

struct Response {
    status_line: String,
    version: String,
    headers: Vec<(String, String)>,
    framing: String,
    body: Vec<u8>,
    trailers: Vec<String>,
    ended_by_close: bool,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection goes on after it, by its `Connection` header (or its version).
    fn keeps_connection(&self) -> bool {
        match self.header("connection").map(str::to_ascii_lowercase) {
            Some(v) if v.contains("close") => false,
            Some(v) if v.contains("keep-alive") => true,
            _ => self.version == "HTTP/1.1",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cases and what each proxy did

/// One exchange: through which server block, which method and path, which client.
#[derive(Clone, Copy)]
struct Case {
    upstream: Upstream,
    method: &'static str,
    path: &'static str,
    client: Client,
}

#[derive(Clone, Copy, PartialEq)]
enum Upstream {
    /// `proxy_http_version 1.1`, `Connection ""`, `keepalive 8`.
    KeepAlive,
    /// nginx's defaults: HTTP/1.0, `Connection: close`, no pool.
    Default,
}

impl Case {
    fn name(&self) -> String {
        let upstream = match self.upstream {
            Upstream::KeepAlive => "ka-upstream",
            Upstream::Default => "1.0-upstream",
        };
        format!(
            "{upstream} {} {} [{}]",
            self.method, self.path, self.client.name
        )
    }
}

const PATHS: [&str; 13] = [
    "/chunked",
    "/chunked-trailer",
    "/chunked-length",
    "/close10",
    "/close11",
    "/length",
    "/length-extra",
    "/empty204",
    "/notmod304",
    "/head",
    "/hidden",
    "/moved",
    "/moved-away",
];

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for upstream in [Upstream::KeepAlive, Upstream::Default] {
        for path in PATHS {
            for client in CLIENTS {
                cases.push(Case {
                    upstream,
                    method: "GET",
                    path,
                    client,
                });
            }
        }
        for path in ["/head", "/length"] {
            for client in CLIENTS {
                cases.push(Case {
                    upstream,
                    method: "HEAD",
                    path,
                    client,
                });
            }
        }
    }
    cases
}

/// What a proxy did with one case; compared whole between nginx and the appliance.
#[derive(Clone, Debug, PartialEq)]
struct Observed {
    /// The status line as sent.
    status_line: String,
    /// `chunked`, `content-length N`, `until close`, or `none` (a response without a body).
    framing: String,
    /// The `Connection` header, lowercased.
    connection: Option<String>,
    /// Every header but Server and Date, `name: value` with the name lowercased (and the
    /// Connection value too), sorted.
    headers: Vec<String>,
    /// How many Server and Date headers, and whether any carried the backend's value.
    server_date: String,
    /// The decoded body.
    body: String,
    trailers: Vec<String>,
    /// What happened on the client connection after the response.
    after: String,
    /// Connections the backend accepted for this case.
    upstream_connections: usize,
}

struct Outcome {
    observed: Result<Observed, String>,
    /// Everything the client connection received.
    raw: Vec<u8>,
}

impl Outcome {
    fn summary(&self) -> String {
        match &self.observed {
            Ok(o) => format!(
                "{} | {} | conn={} | body={}B | after: {} | upstream conns={} | {} | {:?}",
                o.status_line,
                o.framing,
                o.connection.as_deref().unwrap_or("-"),
                o.body.len(),
                o.after,
                o.upstream_connections,
                o.server_date,
                o.headers
            ),
            Err(e) => format!("FAILED: {e}"),
        }
    }
}

fn observe(case: &Case, port: u16, backend: &Backend) -> Outcome {
    let before = backend.accepted();
    let mut raw = Vec::new();
    let observed = exchange(case, port, &mut raw).map(|mut observed| {
        observed.upstream_connections = backend.accepted() - before;
        observed
    });
    Outcome { observed, raw }
}

fn exchange(case: &Case, port: u16, raw: &mut Vec<u8>) -> Result<Observed, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&case.client.request(case.method, case.path))
        .map_err(|e| format!("write: {e}"))?;
    let mut reader = Reader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let result = reader.response(case.method);
    let response = match result {
        Ok(response) => response,
        Err(e) => {
            *raw = std::mem::take(&mut reader.raw);
            return Err(e);
        }
    };
    let after = if response.ended_by_close {
        "closed (it ended the body)".to_string()
    } else if !reader.buf.is_empty() {
        format!(
            "unexpected bytes after the response: {:?}",
            reader.buf.escape_ascii().to_string()
        )
    } else if !response.keeps_connection() {
        reader.deadline = Instant::now() + CLOSE_LIMIT;
        match reader.fill() {
            Ok(false) => "closed".to_string(),
            Ok(true) => format!(
                "unexpected bytes after the response: {:?}",
                reader.buf.escape_ascii().to_string()
            ),
            Err(e) if e == "timed out" => format!("left open for {CLOSE_LIMIT:?}"),
            Err(e) => format!("ended: {e}"),
        }
    } else {
        // The connection should serve another request.
        let second = case.client.request("GET", "/length");
        match stream.write_all(&second) {
            Err(e) => format!("second request not written: {e}"),
            Ok(()) => {
                reader.deadline = Instant::now() + RESPONSE_LIMIT;
                match reader.response("GET") {
                    Ok(r) => format!(
                        "second request: {} | {} | conn={} | body {}",
                        r.status_line,
                        r.framing,
                        r.header("connection")
                            .map(str::to_ascii_lowercase)
                            .as_deref()
                            .unwrap_or("-"),
                        if r.body == canned("/length").body {
                            "ok"
                        } else {
                            "WRONG"
                        }
                    ),
                    Err(e) => format!("second request failed: {e}"),
                }
            }
        }
    };
    *raw = std::mem::take(&mut reader.raw);

    let headers: Vec<String> = response
        .headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("server") && !n.eq_ignore_ascii_case("date"))
        .map(|(n, v)| {
            let name = n.to_ascii_lowercase();
            let value = if name == "connection" {
                v.to_ascii_lowercase()
            } else {
                // The proxy's own port differs between the runs.
                v.replace(&format!(":{port}/"), ":{port}/")
            };
            format!("{name}: {value}")
        })
        .collect();
    let count = |name: &str| {
        response
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    };
    let from_backend = response
        .headers
        .iter()
        .any(|(_, v)| v == BACKEND_SERVER || v == BACKEND_DATE);
    Ok(Observed {
        status_line: response.status_line.clone(),
        framing: response.framing.clone(),
        connection: response.header("connection").map(str::to_ascii_lowercase),
        headers,
        server_date: format!(
            "server x{} date x{}{}",
            count("server"),
            count("date"),
            if from_backend {
                ", from the backend"
            } else {
                ""
            }
        ),
        body: String::from_utf8_lossy(&response.body).into_owned(),
        trailers: response.trailers,
        after,
        upstream_connections: 0,
    })
}

// ---------------------------------------------------------------------------------------------
// The proxies

fn config(backend: SocketAddr, keepalive_port: u16, default_port: u16) -> String {
    format!(
        "worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    upstream backend {{
        server {backend};
        keepalive 8;
    }}
    upstream plain {{
        server {backend};
    }}
    server {{
        listen 127.0.0.1:{keepalive_port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
    server {{
        listen 127.0.0.1:{default_port};
        location / {{
            proxy_pass http://plain;
        }}
    }}
}}
"
    )
}

/// Runs every case through one proxy.
fn run_all(kind: Kind, backend: &Backend, cases: &[Case]) -> (Vec<Outcome>, String) {
    let (keepalive_port, default_port) = (free_port(), free_port());
    let listen = [keepalive_port, default_port].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let proxy = Proxy::start(
        kind,
        &config(backend.addr, keepalive_port, default_port),
        &listen,
        NginxOptions::default(),
    );
    let outcomes = cases
        .iter()
        .map(|case| {
            let port = match case.upstream {
                Upstream::KeepAlive => keepalive_port,
                Upstream::Default => default_port,
            };
            let outcome = observe(case, port, backend);
            std::thread::sleep(SETTLE);
            outcome
        })
        .collect();
    let log = proxy.log_tail(20);
    (outcomes, log)
}

fn show(raw: &[u8]) -> String {
    raw.escape_ascii()
        .to_string()
        .replace("\\r\\n", "\\r\\n\n        ")
}

#[test]
fn upstream_responses_are_framed_as_nginx_frames_them() {
    let backend = Backend::start();
    let cases = cases();
    let (nginx, nginx_log) = run_all(Kind::Nginx, &backend, &cases);
    let (appliance, appliance_log) = run_all(Kind::Appliance, &backend, &cases);

    let mut disagreements = Vec::new();
    let mut harness_problems = Vec::new();
    println!(
        "\n{} cases, nginx 1.22 against the appliance:\n",
        cases.len()
    );
    for ((case, n), a) in cases.iter().zip(&nginx).zip(&appliance) {
        let same = n.observed == a.observed;
        println!(
            "{:<4} {:<42} nginx:     {}",
            if same { "ok" } else { "DIFF" },
            case.name(),
            n.summary()
        );
        if same {
            println!("{:<47} appliance: same", "");
        } else {
            println!("{:<47} appliance: {}", "", a.summary());
        }
        if std::env::var_os("APPLIANCE_FRAMING_RAW").is_some() {
            println!("  nginx sent:\n        {}", show(&n.raw));
            println!("  appliance sent:\n        {}", show(&a.raw));
        }
        // The reference must deliver the backend's body, else the harness is wrong.
        let expected = if case.method == "HEAD" {
            &b""[..]
        } else {
            canned(case.path).body
        };
        match &n.observed {
            Ok(o) if o.body.as_bytes() == expected => {}
            other => harness_problems.push(format!(
                "{}: nginx did not deliver {:?}: {other:?}",
                case.name(),
                String::from_utf8_lossy(expected)
            )),
        }
        if !same {
            let mut fields = Vec::new();
            match (&n.observed, &a.observed) {
                (Ok(x), Ok(y)) => {
                    let mut field = |name: &str, x: String, y: String| {
                        if x != y {
                            fields.push(format!(
                                "    {name}:\n      nginx:     {x}\n      appliance: {y}"
                            ));
                        }
                    };
                    field("status line", x.status_line.clone(), y.status_line.clone());
                    field("framing", x.framing.clone(), y.framing.clone());
                    field(
                        "connection",
                        format!("{:?}", x.connection),
                        format!("{:?}", y.connection),
                    );
                    field(
                        "headers",
                        format!("{:?}", x.headers),
                        format!("{:?}", y.headers),
                    );
                    field("server/date", x.server_date.clone(), y.server_date.clone());
                    field("body", format!("{:?}", x.body), format!("{:?}", y.body));
                    field(
                        "trailers",
                        format!("{:?}", x.trailers),
                        format!("{:?}", y.trailers),
                    );
                    field("after the response", x.after.clone(), y.after.clone());
                    field(
                        "upstream connections",
                        x.upstream_connections.to_string(),
                        y.upstream_connections.to_string(),
                    );
                }
                (x, y) => fields.push(format!(
                    "    nginx:     {}\n    appliance: {}",
                    match x {
                        Ok(o) => format!("{o:?}"),
                        Err(e) => format!("FAILED: {e}"),
                    },
                    match y {
                        Ok(o) => format!("{o:?}"),
                        Err(e) => format!("FAILED: {e}"),
                    }
                )),
            }
            disagreements.push(format!(
                "{}:\n{}\n  nginx sent:\n        {}\n  appliance sent:\n        {}",
                case.name(),
                fields.join("\n"),
                show(&n.raw),
                show(&a.raw)
            ));
        }
    }
    let agreed = cases.len() - disagreements.len();
    println!("\n{agreed} of {} cases agree", cases.len());
    assert!(
        harness_problems.is_empty(),
        "the harness is wrong (nginx is the reference):\n{}\nnginx's log:\n{nginx_log}",
        harness_problems.join("\n")
    );
    assert!(
        disagreements.is_empty(),
        "nginx and the appliance disagree on {} of {} cases:\n\n{}\n\nappliance log tail:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n\n"),
        appliance_log
    );
}

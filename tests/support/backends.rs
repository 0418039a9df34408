//! Recording backends: small HTTP/1.x servers on 127.0.0.1 that remember every request exactly as
//! it arrived (request line and header lines byte for byte, in order) and answer the way a test
//! scripts them: a 200 naming the backend, a chosen status, a reset, silence, a held answer the
//! test releases, a slow answer, an invalid header, or no listener at all.
//!
//! One thread accepts per backend and one thread serves each connection; every blocking read
//! wakes at least every 100 ms to notice the set being reset or dropped, so nothing outlives the
//! test. Connections are kept alive as HTTP/1.x says, and counted, so that upstream connection
//! pools can be compared.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The header a test client adds to every request, so that a backend can tell which client
/// request it is serving even when requests overlap or are retried.
pub const SEQ_HEADER: &str = "X-Harness-Seq";

/// Every backend response names the backend here (and in its body).
pub const BACKEND_HEADER: &str = "X-Backend";

/// A request with this header is answered 302 with its value as `Location` and in `Refresh`
/// (`0; url=...`): what `proxy_redirect` rewrites.
pub const REDIRECT_HEADER: &str = "X-Harness-Redirect";

/// A request with this header is answered with it as its `Content-Type` (else text/plain).
pub const TYPE_HEADER: &str = "X-Harness-Type";

/// A request with this header (a number) gets a body of that many bytes: the usual text,
/// repeated.
pub const LENGTH_HEADER: &str = "X-Harness-Length";

/// Response header lines to add, separated by `|` (`Cache-Control: no-cache|ETag: "x"`).
pub const HEADERS_HEADER: &str = "X-Harness-Headers";

/// A request with this header is answered with a chunked body (in two chunks).
pub const CHUNKED_HEADER: &str = "X-Harness-Chunked";

/// A request with this header is answered with the bytes its value spells in hex (`d0b0`) as the
/// body, in place of the usual text (and repeated to `LENGTH_HEADER`'s length).
pub const BODY_HEADER: &str = "X-Harness-Body";

/// A request with this header is answered with `Content-Encoding: gzip` (or the header's value
/// after `=`, as in `1=GZIP`) and its body compressed: `1` as one gzip member, `2` as two end to
/// end, `cut` with its last 8 bytes missing, `bad` not compressed at all.
pub const GZIP_HEADER: &str = "X-Harness-Gzip";

/// Longest any held or hanging request is kept before the backend gives up on it by itself.
const MAX_HOLD: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
const MAX_HEAD: usize = 64 * 1024;

/// How a backend answers one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    /// 200, body `backend <i>`.
    Ok,
    /// This status, body `backend <i> says <status>`.
    Status(u16),
    /// Read the request, then close with a TCP reset (SO_LINGER 0).
    Reset,
    /// Read the request and never answer; the connection stays open until the peer closes it.
    Hang,
    /// Read the request and answer 200 only when the test releases this backend.
    Hold,
    /// Answer 200 after this delay.
    Slow(Duration),
    /// Answer with a header line nginx rejects (a space inside the header name).
    InvalidHeader,
}

/// A backend's script: what it does by default, and on its n-th request (counted from 1 since
/// the last reset, across all its connections).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub default: Behaviour,
    pub nth: Vec<(usize, Behaviour)>,
}

impl Plan {
    pub fn ok() -> Plan {
        Plan::always(Behaviour::Ok)
    }

    pub fn always(default: Behaviour) -> Plan {
        Plan {
            default,
            nth: Vec::new(),
        }
    }

    /// Behave this way on the n-th request (1-based).
    pub fn on(mut self, nth: usize, behaviour: Behaviour) -> Plan {
        self.nth.push((nth, behaviour));
        self
    }

    fn for_request(&self, nth: usize) -> Behaviour {
        self.nth
            .iter()
            .rev()
            .find(|(n, _)| *n == nth)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| self.default.clone())
    }
}

/// One request as a backend received it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reception {
    pub backend: usize,
    /// Which of this backend's connections (1-based, in accept order) carried it.
    pub connection: usize,
    /// Its position on that connection (1-based).
    pub on_connection: usize,
    /// The request line without CRLF, byte for byte.
    pub request_line: Vec<u8>,
    /// Each header line without CRLF, byte for byte, in the order sent.
    pub header_lines: Vec<Vec<u8>>,
    pub body_len: usize,
    /// The client request it belongs to, from [`SEQ_HEADER`].
    pub seq: Option<usize>,
    /// What the backend did with it.
    pub behaviour: Behaviour,
}

/// A set of recording backends sharing one journal, so the order across backends is known.
pub struct Backends {
    shared: Arc<Shared>,
    backends: Vec<Backend>,
}

struct Backend {
    state: Arc<BackendState>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    journal: Mutex<Vec<Reception>>,
    /// Bumped by every reset: connections from an earlier epoch stop recording and close.
    epoch: AtomicUsize,
    stopping: AtomicBool,
}

struct BackendState {
    index: usize,
    addr: SocketAddr,
    plan: Mutex<Plan>,
    requests: AtomicUsize,
    connections: AtomicUsize,
    accepting: AtomicBool,
    /// Held requests wait until this generation moves past the one they arrived in.
    released: Mutex<u64>,
    release_signal: Condvar,
}

impl Backends {
    /// Starts `count` backends, each on a free port of 127.0.0.1, all answering 200.
    pub fn start(count: usize) -> Backends {
        let shared = Arc::new(Shared {
            journal: Mutex::new(Vec::new()),
            epoch: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });
        let backends = (0..count)
            .map(|index| {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .unwrap_or_else(|e| panic!("backend {index}: cannot bind: {e}"));
                let addr = listener
                    .local_addr()
                    .unwrap_or_else(|e| panic!("backend {index}: no local address: {e}"));
                let state = Arc::new(BackendState {
                    index,
                    addr,
                    plan: Mutex::new(Plan::ok()),
                    requests: AtomicUsize::new(0),
                    connections: AtomicUsize::new(0),
                    accepting: AtomicBool::new(true),
                    released: Mutex::new(0),
                    release_signal: Condvar::new(),
                });
                let acceptor = Some(spawn_acceptor(listener, state.clone(), shared.clone()));
                Backend { state, acceptor }
            })
            .collect();
        Backends { shared, backends }
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn addr(&self, index: usize) -> SocketAddr {
        self.backends[index].state.addr
    }

    /// Forgets everything recorded, restarts request and connection numbering, releases what
    /// is held, and gives every backend a fresh plan (all accepting connections again).
    pub fn reset(&mut self, plans: &[Plan]) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        lock(&self.shared.journal).clear();
        for (index, backend) in self.backends.iter().enumerate() {
            let state = &backend.state;
            *lock(&state.plan) = plans.get(index).cloned().unwrap_or_else(Plan::ok);
            state.requests.store(0, Ordering::SeqCst);
            state.connections.store(0, Ordering::SeqCst);
            release(state);
        }
        for index in 0..self.backends.len() {
            self.set_refusing(index, false);
        }
    }

    /// Replaces a backend's plan; its request numbering goes on.
    pub fn set_plan(&self, index: usize, plan: Plan) {
        *lock(&self.backends[index].state.plan) = plan;
    }

    /// Answers every request this backend is holding.
    pub fn release(&self, index: usize) {
        release(&self.backends[index].state);
    }

    pub fn release_all(&self) {
        for backend in &self.backends {
            release(&backend.state);
        }
    }

    /// Closes (true) or reopens (false) the backend's listener: while closed, connecting to it
    /// is refused. Connections already open are not touched.
    pub fn set_refusing(&mut self, index: usize, refusing: bool) {
        let shared = self.shared.clone();
        let backend = &mut self.backends[index];
        let state = backend.state.clone();
        match (refusing, backend.acceptor.is_some()) {
            (true, true) => {
                state.accepting.store(false, Ordering::SeqCst);
                // Wake the blocking accept so the thread sees the flag and drops the listener.
                let _ = TcpStream::connect_timeout(&state.addr, Duration::from_secs(1));
                if let Some(acceptor) = backend.acceptor.take() {
                    let _ = acceptor.join();
                }
            }
            (false, false) => {
                let listener = rebind(state.addr);
                state.accepting.store(true, Ordering::SeqCst);
                backend.acceptor = Some(spawn_acceptor(listener, state, shared));
            }
            _ => {}
        }
    }

    /// Everything received since the last reset, in arrival order across all backends.
    pub fn receptions(&self) -> Vec<Reception> {
        lock(&self.shared.journal).clone()
    }

    /// Connections each backend accepted since the last reset.
    pub fn connection_counts(&self) -> Vec<usize> {
        self.backends
            .iter()
            .map(|b| b.state.connections.load(Ordering::SeqCst))
            .collect()
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for index in 0..self.backends.len() {
            self.set_refusing(index, true);
        }
        self.release_all();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not take the whole test's records with it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn release(state: &BackendState) {
    *lock(&state.released) += 1;
    state.release_signal.notify_all();
}

/// Binds the backend's own port again after it refused for a while. The port was ours a moment
/// ago, so a few retries cover a socket still closing.
fn rebind(addr: SocketAddr) -> TcpListener {
    let mut last_error = None;
    for _ in 0..50 {
        match TcpListener::bind(addr) {
            Ok(listener) => return listener,
            Err(e) => last_error = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("backend at {addr}: cannot listen again: {last_error:?}");
}

fn spawn_acceptor(
    listener: TcpListener,
    state: Arc<BackendState>,
    shared: Arc<Shared>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if !state.accepting.load(Ordering::SeqCst) || shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let connection = state.connections.fetch_add(1, Ordering::SeqCst) + 1;
            let epoch = shared.epoch.load(Ordering::SeqCst);
            let (state, shared) = (state.clone(), shared.clone());
            std::thread::spawn(move || {
                let mut conn = Connection {
                    stream,
                    buffer: Vec::new(),
                    state,
                    shared,
                    epoch,
                    number: connection,
                };
                conn.serve();
            });
        }
    })
}

/// One accepted connection and the bytes read from it but not yet consumed.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    state: Arc<BackendState>,
    shared: Arc<Shared>,
    epoch: usize,
    number: usize,
}

/// A parsed request head.
struct Head {
    request_line: Vec<u8>,
    header_lines: Vec<Vec<u8>>,
}

impl Head {
    fn header(&self, name: &str) -> Option<String> {
        self.header_lines.iter().find_map(|line| {
            let text = String::from_utf8_lossy(line);
            let (n, v) = text.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    fn method(&self) -> String {
        let line = String::from_utf8_lossy(&self.request_line);
        line.split(' ').next().unwrap_or("").to_string()
    }

    fn is_http11(&self) -> bool {
        self.request_line.ends_with(b"HTTP/1.1")
    }

    fn wants_keepalive(&self) -> bool {
        let connection = self.header("Connection").unwrap_or_default();
        let tokens: Vec<String> = connection
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        if self.is_http11() {
            !tokens.iter().any(|t| t == "close")
        } else {
            tokens.iter().any(|t| t == "keep-alive")
        }
    }
}

impl Connection {
    fn current(&self) -> bool {
        self.shared.epoch.load(Ordering::SeqCst) == self.epoch
            && !self.shared.stopping.load(Ordering::SeqCst)
    }

    fn serve(&mut self) {
        if self.stream.set_read_timeout(Some(POLL)).is_err() {
            return;
        }
        for on_connection in 1.. {
            let Some(head) = self.read_head() else { return };
            let Some(body_len) = self.read_body(&head) else {
                return;
            };
            if !self.current() {
                return;
            }
            let nth = self.state.requests.fetch_add(1, Ordering::SeqCst) + 1;
            let behaviour = lock(&self.state.plan).for_request(nth);
            let seq = head.header(SEQ_HEADER).and_then(|v| v.parse().ok());
            lock(&self.shared.journal).push(Reception {
                backend: self.state.index,
                connection: self.number,
                on_connection,
                request_line: head.request_line.clone(),
                header_lines: head.header_lines.clone(),
                body_len,
                seq,
                behaviour: behaviour.clone(),
            });
            if !self.answer(&head, behaviour) {
                return;
            }
        }
    }

    /// Acts out one behaviour; true when the connection may carry another request.
    fn answer(&mut self, head: &Head, behaviour: Behaviour) -> bool {
        match behaviour {
            Behaviour::Ok => self.respond(head, 200),
            Behaviour::Status(status) => self.respond(head, status),
            Behaviour::Slow(delay) => {
                let deadline = Instant::now() + delay.min(MAX_HOLD);
                while Instant::now() < deadline && self.current() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.respond(head, 200)
            }
            Behaviour::Hold => {
                self.wait_for_release();
                self.respond(head, 200)
            }
            Behaviour::Reset => {
                let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
                false
            }
            Behaviour::Hang => {
                self.wait_for_close(MAX_HOLD);
                false
            }
            Behaviour::InvalidHeader => {
                let _ = self
                    .stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nBad Header: here\r\n\r\n");
                false
            }
        }
    }

    fn wait_for_release(&self) {
        let deadline = Instant::now() + MAX_HOLD;
        let mut released = lock(&self.state.released);
        let arrived = *released;
        while *released == arrived && self.current() && Instant::now() < deadline {
            released = match self.state.release_signal.wait_timeout(released, POLL) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Reads and discards until the peer closes, the set moves on, or `limit` passes.
    fn wait_for_close(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut scratch = [0u8; 4096];
        while self.current() && Instant::now() < deadline {
            match self.stream.read(&mut scratch) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => return,
            }
        }
    }

    fn respond(&mut self, head: &Head, status: u16) -> bool {
        let index = self.state.index;
        let body = if status == 200 {
            format!("backend {index}\n")
        } else {
            format!("backend {index} says {status}\n")
        };
        let mut body = match head.header(BODY_HEADER) {
            Some(hex) => (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                .collect(),
            None => body.into_bytes(),
        };
        if let Some(length) = head.header(LENGTH_HEADER).and_then(|v| v.parse().ok()) {
            body = body.repeat(length / body.len().max(1) + 1);
            body.truncate(length);
        }
        let keepalive = head.wants_keepalive();
        let redirect = head.header(REDIRECT_HEADER);
        let status = if redirect.is_some() { 302 } else { status };
        let content_type = head
            .header(TYPE_HEADER)
            .unwrap_or_else(|| "text/plain".to_string());
        let chunked = head.header(CHUNKED_HEADER).is_some() && head.is_http11();
        let gzip = head.header(GZIP_HEADER);
        let body = match &gzip {
            Some(how) => gzip_body(how.split('=').next().unwrap_or_default(), &body),
            None => body,
        };
        let framing = match chunked {
            true => "Transfer-Encoding: chunked".to_string(),
            false => format!("Content-Length: {}", body.len()),
        };
        let mut response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n{framing}\r\n{BACKEND_HEADER}: {index}\r\n",
            reason(status),
        );
        if let Some(url) = redirect {
            response.push_str(&format!("Location: {url}\r\nRefresh: 0; url={url}\r\n"));
        }
        if let Some(how) = &gzip {
            let coding = how.split_once('=').map_or("gzip", |(_, coding)| coding);
            response.push_str(&format!("Content-Encoding: {coding}\r\n"));
        }
        for line in head
            .header(HEADERS_HEADER)
            .iter()
            .flat_map(|v| v.split('|'))
        {
            response.push_str(&format!("{}\r\n", line.trim()));
        }
        match (keepalive, head.is_http11()) {
            (false, _) => response.push_str("Connection: close\r\n"),
            (true, false) => response.push_str("Connection: keep-alive\r\n"),
            (true, true) => {}
        }
        response.push_str("\r\n");
        let mut response = response.into_bytes();
        if head.method() != "HEAD" {
            match chunked {
                true => {
                    let (first, second) = body.split_at(body.len() / 2);
                    for part in [first, second].into_iter().filter(|p| !p.is_empty()) {
                        response.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                        response.extend_from_slice(part);
                        response.extend_from_slice(b"\r\n");
                    }
                    response.extend_from_slice(b"0\r\n\r\n");
                }
                false => response.extend_from_slice(&body),
            }
        }
        if self.stream.write_all(&response).is_err() {
            return false;
        }
        if !keepalive {
            // Wait (bounded) for the peer to close first, so the connection ends with FINs
            // rather than a reset caused by bytes we left unread.
            let _ = self.stream.shutdown(Shutdown::Write);
            self.wait_for_close(Duration::from_secs(2));
        }
        keepalive
    }

    /// Reads more bytes into the buffer; false on end of stream, error, or the set moving on.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if !self.current() {
                return false;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buffer.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if is_timeout(&e) => continue,
                Err(_) => return false,
            }
        }
    }

    fn read_head(&mut self) -> Option<Head> {
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head: Vec<u8> = self.buffer.drain(..end + 4).collect();
                let mut lines = head[..end]
                    .split(|&b| b == b'\n')
                    .map(|line| line.strip_suffix(b"\r").unwrap_or(line).to_vec());
                let request_line = lines.next()?;
                return Some(Head {
                    request_line,
                    header_lines: lines.collect(),
                });
            }
            if self.buffer.len() > MAX_HEAD || !self.fill() {
                return None;
            }
        }
    }

    /// Reads (and discards) the body; returns its length.
    fn read_body(&mut self, head: &Head) -> Option<usize> {
        let chunked = head
            .header("Transfer-Encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            return self.read_chunked();
        }
        let length: usize = match head.header("Content-Length") {
            Some(v) => v.parse().ok()?,
            None => 0,
        };
        self.take(length)?;
        Some(length)
    }

    fn take(&mut self, length: usize) -> Option<Vec<u8>> {
        while self.buffer.len() < length {
            if !self.fill() {
                return None;
            }
        }
        Some(self.buffer.drain(..length).collect())
    }

    fn take_line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n") {
                let line: Vec<u8> = self.buffer.drain(..end + 2).collect();
                return Some(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            if self.buffer.len() > MAX_HEAD || !self.fill() {
                return None;
            }
        }
    }

    fn read_chunked(&mut self) -> Option<usize> {
        let mut total = 0;
        loop {
            let size_line = self.take_line()?;
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).ok()?;
            if size == 0 {
                // Trailer fields, then the empty line.
                while !self.take_line()?.is_empty() {}
                return Some(total);
            }
            self.take(size + 2)?;
            total += size;
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// A body as [`GZIP_HEADER`] asks for it.
fn gzip_body(how: &str, body: &[u8]) -> Vec<u8> {
    let member = |data: &[u8]| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(data).expect("compress into memory");
        encoder.finish().expect("compress into memory")
    };
    match how {
        "2" => {
            let (first, second) = body.split_at(body.len() / 2);
            [member(first), member(second)].concat()
        }
        "cut" => {
            let whole = member(body);
            whole[..whole.len() - 8].to_vec()
        }
        "bad" => body.to_vec(),
        _ => member(body),
    }
}

//! A plain HTTP/1.x test client: writes a request exactly as the test spells it (from a chosen
//! 127.0.0.x source address when asked), reads one response, and closes.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use super::backends::{BACKEND_HEADER, SEQ_HEADER};

/// Longest the client waits for a whole response. Proxy timeouts in the scenarios are far
/// shorter, so reaching this is itself a finding.
const RESPONSE_LIMIT: Duration = Duration::from_secs(15);

/// A request as the client will write it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub version: &'static str,
    /// `None`: `Host: 127.0.0.1:<port>` for HTTP/1.1, nothing for HTTP/1.0.
    pub host: Option<String>,
    pub omit_host: bool,
    /// Further header lines, in order, as `(name, value)` written `name: value`.
    pub headers: Vec<(String, String)>,
    /// Written as is; framed with a Content-Length unless the headers already frame it.
    pub body: Vec<u8>,
    /// Source address (any 127.0.0.0/8 address works on Linux's loopback).
    pub source: Option<Ipv4Addr>,
    /// Which of the scenario's listeners to send to (0 = `{listen}`, 1 = `{listen1}`, ...).
    pub listener: usize,
}

pub fn get(target: &str) -> Request {
    Request {
        method: "GET".into(),
        target: target.into(),
        version: "HTTP/1.1",
        host: None,
        omit_host: false,
        headers: Vec::new(),
        body: Vec::new(),
        source: None,
        listener: 0,
    }
}

pub fn post(target: &str, body: &str) -> Request {
    Request {
        method: "POST".into(),
        body: body.as_bytes().to_vec(),
        ..get(target)
    }
}

impl Request {
    pub fn method(mut self, method: &str) -> Request {
        self.method = method.into();
        self
    }

    pub fn host(mut self, host: &str) -> Request {
        self.host = Some(host.into());
        self
    }

    pub fn without_host(mut self) -> Request {
        self.omit_host = true;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A body sent exactly as given (frame it yourself with a header).
    pub fn raw_body(mut self, body: &str) -> Request {
        self.body = body.as_bytes().to_vec();
        self
    }

    pub fn http10(mut self) -> Request {
        self.version = "HTTP/1.0";
        self
    }

    pub fn from(mut self, source: &str) -> Request {
        let ip: Ipv4Addr = source
            .parse()
            .unwrap_or_else(|_| panic!("not an IPv4 address: {source}"));
        assert!(ip.is_loopback(), "test traffic stays on loopback: {ip}");
        self.source = Some(ip);
        self
    }

    pub fn on_listener(mut self, listener: usize) -> Request {
        self.listener = listener;
        self
    }

    /// The bytes on the wire. `seq` numbers the request for the backends' records.
    pub fn encode(&self, port: u16, seq: usize) -> Vec<u8> {
        let mut head = format!("{} {} {}\r\n", self.method, self.target, self.version);
        let default_host = (self.version == "HTTP/1.1").then(|| format!("127.0.0.1:{port}"));
        if let Some(host) = self.host.clone().or(default_host) {
            if !self.omit_host {
                head.push_str(&format!("Host: {host}\r\n"));
            }
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let framed = self.headers.iter().any(|(n, _)| {
            n.eq_ignore_ascii_case("Content-Length") || n.eq_ignore_ascii_case("Transfer-Encoding")
        });
        if !self.body.is_empty() && !framed {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str(&format!("{SEQ_HEADER}: {seq}\r\n\r\n"));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// One line naming the request, for reports.
    pub fn describe(&self) -> String {
        let mut text = format!("{} {} {}", self.method, self.target, self.version);
        if let Some(host) = &self.host {
            text.push_str(&format!(" Host: {host}"));
        }
        if let Some(source) = self.source {
            text.push_str(&format!(" from {source}"));
        }
        if self.listener > 0 {
            text.push_str(&format!(" on listener {}", self.listener));
        }
        text
    }
}

/// What came back.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Response(Response),
    /// No complete response: how the exchange ended.
    Failed(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The recording backend that produced this response, if one did.
    pub fn backend(&self) -> Option<usize> {
        self.header(BACKEND_HEADER).and_then(|v| v.parse().ok())
    }
}

impl Outcome {
    pub fn backend(&self) -> Option<usize> {
        match self {
            Outcome::Response(r) => r.backend(),
            Outcome::Failed(_) => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Response(r) => Some(r.status),
            Outcome::Failed(_) => None,
        }
    }
}

/// Sends one request to `127.0.0.1:port` on a new connection and reads the response.
pub fn send(port: u16, request: &Request, seq: usize) -> Outcome {
    match exchange(port, request, seq) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(e),
    }
}

fn exchange(port: u16, request: &Request, seq: usize) -> Result<Outcome, String> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
    if let Some(source) = request.source {
        socket
            .bind(&SockAddr::from(SocketAddrV4::new(source, 0)))
            .map_err(|e| format!("cannot bind {source}: {e}"))?;
    }
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    socket
        .connect_timeout(&SockAddr::from(target), Duration::from_secs(5))
        .map_err(|e| format!("connect: {:?}", e.kind()))?;
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&request.encode(port, seq))
        .map_err(|e| format!("write: {:?}", e.kind()))?;

    let deadline = Instant::now() + RESPONSE_LIMIT;
    let mut reader = Reader {
        stream,
        buffer: Vec::new(),
        deadline,
        eof: false,
    };
    let Some(head) = reader.head()? else {
        return Ok(Outcome::Failed(
            "connection closed before a response".into(),
        ));
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.trim().to_string()))
        .collect();
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let no_body = request.method == "HEAD" || status == 204 || status == 304 || status < 200;
    let chunked = response
        .header("Transfer-Encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = response.header("Content-Length").map(str::to_string);
    response.body = if no_body {
        Vec::new()
    } else if chunked {
        reader.chunked()?
    } else if let Some(length) = length {
        let length: usize = length.parse().map_err(|_| "bad Content-Length")?;
        reader.exactly(length)?
    } else {
        reader.until_eof()?
    };
    let gzipped = response
        .header("Content-Encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if gzipped && !no_body {
        // nginx (zlib) and the appliance (zlib-ng) compress to different bytes: what is
        // compared is what they decompress to.
        response.body = gunzip(&response.body);
    }
    Ok(Outcome::Response(response))
}

/// A gzip body decompressed, or a line saying it does not decompress.
fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match flate2::read::GzDecoder::new(body).read_to_end(&mut out) {
        Ok(_) => out,
        Err(e) => format!("<a gzip body that does not decompress: {e}>").into_bytes(),
    }
}

struct Reader {
    stream: std::net::TcpStream,
    buffer: Vec<u8>,
    deadline: Instant,
    eof: bool,
}

impl Reader {
    /// Reads more; Ok(false) at end of stream.
    fn fill(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if Instant::now() > self.deadline {
                return Err(format!("no complete response within {RESPONSE_LIMIT:?}"));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.buffer.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("read: {:?}", e.kind())),
            }
        }
    }

    fn head(&mut self) -> Result<Option<String>, String> {
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head: Vec<u8> = self.buffer.drain(..end + 4).collect();
                return Ok(Some(String::from_utf8_lossy(&head[..end]).into_owned()));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    fn exactly(&mut self, length: usize) -> Result<Vec<u8>, String> {
        while self.buffer.len() < length {
            if !self.fill()? {
                return Err("connection closed inside the body".into());
            }
        }
        Ok(self.buffer.drain(..length).collect())
    }

    fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n") {
                let line: Vec<u8> = self.buffer.drain(..end + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            if !self.fill()? {
                return Err("connection closed inside a chunk".into());
            }
        }
    }

    fn chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {line:?}"))?;
            if size == 0 {
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.exactly(size)?);
            self.exactly(2)?;
        }
    }

    fn until_eof(&mut self) -> Result<Vec<u8>, String> {
        while !self.eof {
            self.fill()?;
        }
        Ok(std::mem::take(&mut self.buffer))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

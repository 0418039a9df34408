//! Evaluating templates (`$host`, `$proxy_add_x_forwarded_for`, ...) against a request.
//!
//! Values follow nginx 1.22: `$http_*` is the first header of that name, except `Cookie`
//! (joined with `; `) and `X-Forwarded-For` (joined with `, `); `$host` is the validated Host,
//! else the server's first name.

use std::cell::RefCell;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pingora::http::ResponseHeader;

use super::balance::PeerAddr;
use super::client_cert::{self, ClientCertificate};
use super::client_request::ClientRequest;
use super::limits::LimitStatus;
use super::proxy_protocol::ProxyInfo;
use super::referers::ValidReferers;
use super::secure_link::{SecureLinkConf, SecureLinkValue};
use super::ssl_preread::Preread;
use super::tables::Tables;

use crate::config::template::{Segment, Template, Variable};

/// Debian's nginx's root when none is configured: `html` under its prefix.
pub const DEFAULT_ROOT: &str = "/usr/share/nginx/html";

/// Everything a template may refer to, gathered for one request.
#[derive(Clone, Copy)]
pub struct RequestVars<'a> {
    pub request: ClientRequest<'a>,
    /// The client as nginx sees it: realip's, else the connecting one.
    pub client: Option<(IpAddr, u16)>,
    /// The connecting client, whatever realip said.
    pub connecting: Option<(IpAddr, u16)>,
    pub local: Option<(IpAddr, u16)>,
    pub tls: bool,
    /// The validated Host, lowercase, without port.
    pub host: Option<&'a str>,
    /// The first name of the server that took the request.
    pub server_name: &'a str,
    /// `$uri` and `$args`.
    pub uri: &'a [u8],
    pub args: Option<&'a [u8]>,
    /// The regex location's captures, as byte ranges of `uri`, or of `captured` when set.
    pub captures: &'a [Option<std::ops::Range<usize>>],
    /// The text other captures than the location's index (a `proxy_redirect` regex's URL, a
    /// rewrite's or an `if`'s subject).
    pub captured: Option<&'a [u8]>,
    /// The location's `root`, for `$document_root` and `$request_filename`.
    pub root: Option<&'a Template>,
    /// The location's `alias`, which takes root's place, with the length of the location's
    /// prefix it replaces (`None`: a regex location's, the whole path).
    pub alias: Option<(&'a Template, Option<usize>)>,
    /// The values `set` gave the config's variables in this request.
    pub declared: &'a [(std::sync::Arc<str>, Vec<u8>)],
    pub proxy_host: &'a str,
    pub proxy_port: &'a str,
    /// `$request_id`: made on first use, then the same for the whole request.
    pub request_id: &'a std::sync::OnceLock<String>,
    /// Filled once the upstream has answered (logs, `add_header`).
    pub upstream: Option<&'a UpstreamVars>,
    pub response: Option<&'a ResponseHeader>,
    pub status: u16,
    pub body_bytes_sent: u64,
    pub request_time: f64,
    pub connection: u64,
    pub connection_requests: u64,
    /// What the location's `limit_req` and `limit_conn` decided.
    pub limits: LimitStatus,
    pub ssl_protocol: Option<&'a str>,
    pub ssl_cipher: Option<&'a str>,
    pub ssl_server_name: Option<&'a str>,
    /// The client's certificate, when the handshake asked for one.
    pub ssl_client: Option<&'a ClientCertificate>,
    /// The source and destination of the connection's PROXY protocol header, if it had one.
    pub proxy_protocol: Option<ProxyInfo>,
    /// The config's `map`, `geo` and `split_clients` variables.
    pub tables: &'a Tables,
    /// The `valid_referers` in force where the request is (its location's, else its
    /// server's), for `$invalid_referer`.
    pub referers: Option<&'a ValidReferers>,
    /// `secure_link` where the request is, for `$secure_link`.
    pub secure_link: Option<&'a SecureLinkConf>,
    /// `$secure_link_expires` while `$secure_link` is being worked out (its
    /// `secure_link_md5` may use it).
    pub secure_link_expires: Option<&'a [u8]>,
    /// The variables nginx works out once per request and keeps.
    pub cached: &'a CachedVars,
    /// What a stream server's `ssl_preread` read (stream connections only).
    pub preread: Option<&'a Preread>,
    /// A stream session's outcome, once it is over (its access log).
    pub session: Option<&'a SessionVars>,
}

/// Variables nginx works out once per request and keeps, through its internal redirects
/// and in its subrequests: `$invalid_referer`, `$secure_link` and `$secure_link_expires`.
#[derive(Clone, Debug, Default)]
pub struct CachedVars {
    pub invalid_referer: std::sync::OnceLock<bool>,
    pub secure_link: std::sync::OnceLock<SecureLinkValue>,
}

impl CachedVars {
    pub const fn new() -> CachedVars {
        CachedVars {
            invalid_referer: std::sync::OnceLock::new(),
            secure_link: std::sync::OnceLock::new(),
        }
    }

    /// Takes what a subrequest worked out that this request had not.
    pub fn take_from(&self, sub: &mut CachedVars) {
        if let Some(invalid) = sub.invalid_referer.take() {
            let _ = self.invalid_referer.set(invalid);
        }
        if let Some(link) = sub.secure_link.take() {
            let _ = self.secure_link.set(link);
        }
    }
}

/// One entry per try, inline for the first two: most requests make one try, and a list on the
/// heap for each of these variables was a measurable share of a request's CPU.
pub type Tries<T> = smallvec::SmallVec<[T; 2]>;

/// What nginx's `$upstream_*` variables report: one entry per server tried, joined with `, `.
/// Kept as numbers and formatted only when a log line or header asks for them.
#[derive(Clone, Debug, Default)]
pub struct UpstreamVars {
    pub addrs: Tries<PeerAddr>,
    pub statuses: Tries<u16>,
    /// Per try; `None` (printed `-`) for a try that never connected or never got a header.
    pub connect_times: Tries<Option<Duration>>,
    pub header_times: Tries<Option<Duration>>,
    pub response_times: Tries<Duration>,
    /// Body bytes each try received: `$upstream_response_length`.
    pub response_lengths: Tries<u64>,
    /// Body bytes of the try under way.
    pub try_body_bytes: u64,
    /// The tries that began in another pool than the one before (after an error page).
    pub group_starts: Tries<usize>,
    /// Boxed: most requests keep none, and the context is moved whole per request.
    pub response: Option<Box<ResponseHeader>>,
    /// When the try under way started.
    pub try_started: Option<Instant>,
}

/// What a stream session's own variables report: `$status`, `$bytes_sent`, `$bytes_received`,
/// `$session_time` and, per backend tried, `$upstream_*`.
#[derive(Clone, Debug)]
pub struct SessionVars {
    /// nginx's stream status: 200, or 400, 403, 500, 502 or 503 for a session that ended early.
    pub status: u16,
    pub started: Instant,
    /// To and from the client, after TLS: a PROXY header or what `ssl_preread` read are not
    /// counted, as nginx 1.22 does not count them.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub tries: Tries<SessionTry>,
    /// A UDP session (`$protocol`).
    pub udp: bool,
}

/// One backend tried by a stream session.
#[derive(Clone, Debug)]
pub struct SessionTry {
    pub addr: Tried,
    pub started: Instant,
    /// `None` (printed `-`): never connected, no byte back, or still open.
    pub connect_time: Option<Duration>,
    pub first_byte_time: Option<Duration>,
    pub session_time: Option<Duration>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// What a try went to, as `$upstream_addr` names it.
#[derive(Clone, Debug)]
pub enum Tried {
    Peer(PeerAddr),
    /// The upstream had no live server: nginx names the upstream.
    NoLiveServerIn(String),
}

impl SessionVars {
    pub fn new(started: Instant) -> SessionVars {
        SessionVars {
            status: 200,
            started,
            bytes_sent: 0,
            bytes_received: 0,
            tries: Tries::new(),
            udp: false,
        }
    }

    /// A try of `addr` begins at `now`; the one before it ends.
    pub fn begin_try(&mut self, addr: Tried, now: Instant) {
        self.end_try(now);
        self.tries.push(SessionTry {
            addr,
            started: now,
            connect_time: None,
            first_byte_time: None,
            session_time: None,
            bytes_sent: 0,
            bytes_received: 0,
        });
    }

    /// The try under way ends at `now`: its `$upstream_session_time`.
    pub fn end_try(&mut self, now: Instant) {
        if let Some(t) = self.tries.last_mut() {
            if t.session_time.is_none() {
                t.session_time = Some(now.saturating_duration_since(t.started));
            }
        }
    }

    pub fn current_try(&mut self) -> Option<&mut SessionTry> {
        self.tries.last_mut()
    }
}

/// The clock readings come from the caller, `now`: the fast path reads the clock once per
/// wake-up, as nginx reads it once per event-loop turn (ngx_time_update), so that a request
/// costs two readings, not ten.
impl UpstreamVars {
    /// A try starts at `now` (ending the previous one, if still open).
    pub fn begin_try(&mut self, now: Instant) {
        self.end_try(now);
        self.try_started = Some(now);
        self.try_body_bytes = 0;
    }

    /// The connection to the upstream server is up: `$upstream_connect_time`.
    pub fn connected(&mut self, now: Instant) {
        if let Some(t) = self.try_started {
            self.connect_times
                .push(Some(now.saturating_duration_since(t)));
        }
    }

    /// The response header arrived: `$upstream_header_time`.
    pub fn header_received(&mut self, now: Instant) {
        if let Some(t) = self.try_started {
            self.header_times
                .push(Some(now.saturating_duration_since(t)));
        }
    }

    /// The try under way has had its response header.
    pub fn header_in_this_try(&self) -> bool {
        self.try_started.is_some() && self.header_times.len() > self.response_times.len()
    }

    /// The try is over: `$upstream_response_time`. A try that never connected or never got
    /// a header shows `-` there, as nginx's lists do.
    pub fn end_try(&mut self, now: Instant) {
        let Some(t) = self.try_started.take() else {
            return;
        };
        let elapsed = now.saturating_duration_since(t);
        let tries = self.response_times.len() + 1;
        for list in [&mut self.connect_times, &mut self.header_times] {
            list.resize(tries.max(list.len()), None);
        }
        self.response_times.push(elapsed);
        self.response_lengths.push(self.try_body_bytes);
    }
}

/// One of the `$ssl_client_*` variables of a certificate.
fn write_client_certificate(var: &Variable, cert: &pingora::tls::x509::X509, out: &mut Vec<u8>) {
    match var {
        Variable::SslClientSDn => {
            out.extend_from_slice(client_cert::rfc2253(cert.subject_name()).as_bytes())
        }
        Variable::SslClientIDn => {
            out.extend_from_slice(client_cert::rfc2253(cert.issuer_name()).as_bytes())
        }
        Variable::SslClientSerial => out.extend_from_slice(client_cert::serial(cert).as_bytes()),
        Variable::SslClientFingerprint => {
            out.extend_from_slice(client_cert::fingerprint(cert).as_bytes())
        }
        Variable::SslClientCert => out.extend_from_slice(&client_cert::pem_for_header(cert)),
        Variable::SslClientRawCert => out.extend_from_slice(&client_cert::pem(cert)),
        Variable::SslClientEscapedCert => out.extend_from_slice(&client_cert::escaped_pem(cert)),
        _ => {}
    }
}

/// nginx's `%T.%03M`: seconds with milliseconds.
fn write_seconds(d: Duration, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(out, "{}.{:03}", d.as_secs(), d.subsec_millis());
}

/// Appends the template's value to `out`.
pub fn eval(template: &Template, vars: &RequestVars<'_>, out: &mut Vec<u8>) {
    for segment in &template.segments {
        match segment {
            Segment::Literal(text) => out.extend_from_slice(text.as_bytes()),
            Segment::Var(v) => vars.write(v, out),
        }
    }
}

/// The template's value as bytes.
pub fn eval_to_vec(template: &Template, vars: &RequestVars<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    eval(template, vars, &mut out);
    out
}

impl<'a> RequestVars<'a> {
    /// Where the upstream variables' lists change pool.
    fn group_breaks(&self) -> &'a [usize] {
        self.upstream.map_or(&[], |u| &u.group_starts[..])
    }

    /// The same variables, with `$1`..`$9` taken from `ranges` of `text` instead of the
    /// location's.
    pub fn with_captures<'b>(
        &self,
        text: &'b [u8],
        ranges: &'b [Option<std::ops::Range<usize>>],
    ) -> RequestVars<'b>
    where
        'a: 'b,
    {
        RequestVars {
            captures: ranges,
            captured: Some(text),
            ..*self
        }
    }

    /// `$secure_link` and `$secure_link_expires`, worked out on first use and kept; `None`
    /// where no secure link is configured (nothing kept). While they are worked out, the
    /// templates see no `secure_link`, so one that names `$secure_link` cannot loop.
    fn secure_link_value(&self) -> Option<&'a SecureLinkValue> {
        let conf = self.secure_link?;
        Some(self.cached.secure_link.get_or_init(|| {
            conf.evaluate(&RequestVars {
                secure_link: None,
                ..*self
            })
        }))
    }

    fn header_first(&self, name: &str) -> Option<&[u8]> {
        self.request.header(name)
    }

    fn header_joined(&self, name: &str, separator: &[u8], out: &mut Vec<u8>) {
        for (i, v) in self.request.header_values(name).enumerate() {
            if i > 0 {
                out.extend_from_slice(separator);
            }
            out.extend_from_slice(v);
        }
    }

    /// Appends one variable's value; an unknown or missing value appends nothing, as nginx's
    /// "not found" variables evaluate to the empty string.
    pub fn write(&self, var: &Variable, out: &mut Vec<u8>) {
        use std::io::Write;
        match var {
            Variable::Host => {
                out.extend_from_slice(self.host.unwrap_or(self.server_name).as_bytes())
            }
            Variable::RemoteAddr => {
                if let Some((ip, _)) = self.client {
                    write_ip(ip, out);
                }
            }
            Variable::RealipRemoteAddr => {
                if let Some((ip, _)) = self.connecting {
                    let _ = write!(out, "{ip}");
                }
            }
            Variable::RealipRemotePort => {
                if let Some((_, port)) = self.connecting {
                    let _ = write!(out, "{port}");
                }
            }
            Variable::RemotePort => {
                // No port: an address realip took from a header without one.
                if let Some((_, port)) = self.client.filter(|(_, port)| *port > 0) {
                    let _ = write!(out, "{port}");
                }
            }
            Variable::BinaryRemoteAddr => match self.client {
                Some((IpAddr::V4(a), _)) => out.extend_from_slice(&a.octets()),
                Some((IpAddr::V6(a), _)) => out.extend_from_slice(&a.octets()),
                None => {}
            },
            Variable::ProxyAddXForwardedFor => {
                let before = out.len();
                self.header_joined("x-forwarded-for", b", ", out);
                if let Some((ip, _)) = self.client {
                    if out.len() > before {
                        out.extend_from_slice(b", ");
                    }
                    let _ = write!(out, "{ip}");
                }
            }
            Variable::ProxyHost => out.extend_from_slice(self.proxy_host.as_bytes()),
            Variable::ProxyPort => out.extend_from_slice(self.proxy_port.as_bytes()),
            Variable::Scheme => out.extend_from_slice(if self.tls { b"https" } else { b"http" }),
            Variable::RequestUri => out.extend_from_slice(self.request.raw_path()),
            Variable::Uri => out.extend_from_slice(self.uri),
            Variable::Args => out.extend_from_slice(self.args.unwrap_or_default()),
            Variable::IsArgs => {
                if self.args.is_some_and(|a| !a.is_empty()) {
                    out.push(b'?');
                }
            }
            Variable::RequestMethod => out.extend_from_slice(self.request.method().as_bytes()),
            Variable::Request => {
                out.extend_from_slice(self.request.method().as_bytes());
                out.push(b' ');
                out.extend_from_slice(self.request.raw_path());
                out.push(b' ');
                out.extend_from_slice(protocol(self.request).as_bytes());
            }
            Variable::ServerProtocol => out.extend_from_slice(protocol(self.request).as_bytes()),
            Variable::ServerAddr => {
                if let Some((ip, _)) = self.local {
                    let _ = write!(out, "{ip}");
                }
            }
            Variable::ServerPort => {
                if let Some((_, port)) = self.local {
                    let _ = write!(out, "{port}");
                }
            }
            Variable::ServerName => out.extend_from_slice(self.server_name.as_bytes()),
            Variable::Hostname => out.extend_from_slice(hostname().as_bytes()),
            Variable::RequestId => out.extend_from_slice(
                self.request_id
                    .get_or_init(|| format!("{:032x}", fastrand::u128(..)))
                    .as_bytes(),
            ),
            Variable::RequestLength => {
                let len = self
                    .header_first("content-length")
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                    .unwrap_or(0);
                let _ = write!(out, "{len}");
            }
            Variable::RequestTime => {
                let _ = write!(out, "{:.3}", self.request_time);
            }
            Variable::Status => {
                // nginx's "%03ui": the logged status of a request that got none is 000.
                if self.status < 100 {
                    out.extend_from_slice(if self.status < 10 { b"00" } else { b"0" });
                }
                write_number(self.status, out);
            }
            Variable::BytesSent if self.session.is_some() => {
                write_number(self.session.map_or(0, |s| s.bytes_sent), out);
            }
            Variable::BodyBytesSent | Variable::BytesSent => {
                write_number(self.body_bytes_sent, out);
            }
            Variable::BytesReceived => {
                if let Some(s) = self.session {
                    let _ = write!(out, "{}", s.bytes_received);
                }
            }
            Variable::SessionTime => {
                if let Some(s) = self.session {
                    write_seconds(s.started.elapsed(), out);
                }
            }
            Variable::Protocol => match self.session {
                Some(s) if s.udp => out.extend_from_slice(b"UDP"),
                Some(_) => out.extend_from_slice(b"TCP"),
                None => {}
            },
            Variable::TimeLocal => write_now(Now::Local, out),
            Variable::TimeIso8601 => write_now(Now::Iso8601, out),
            Variable::Msec => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let _ = write!(out, "{}.{:03}", now.as_secs(), now.subsec_millis());
            }
            Variable::Connection => write_number(self.connection, out),
            Variable::ConnectionRequests => write_number(self.connection_requests, out),
            Variable::LimitReqStatus => {
                if let Some(status) = self.limits.requests {
                    out.extend_from_slice(status.as_str().as_bytes());
                }
            }
            Variable::LimitConnStatus => {
                if let Some(status) = self.limits.connections {
                    out.extend_from_slice(status.as_str().as_bytes());
                }
            }
            Variable::ContentType => {
                out.extend_from_slice(self.header_first("content-type").unwrap_or_default())
            }
            Variable::ContentLength => {
                out.extend_from_slice(self.header_first("content-length").unwrap_or_default())
            }
            Variable::RemoteUser => {
                if let Some(credentials) = super::auth_basic::Credentials::of(self.request) {
                    out.extend_from_slice(credentials.user());
                }
            }
            Variable::Pid => {
                let _ = write!(out, "{}", std::process::id());
            }
            Variable::NginxVersion => out.extend_from_slice(b"1.22.1"),
            Variable::UpstreamAddr if self.session.is_some() => {
                session_tries(self.session, out, |t, out| match &t.addr {
                    Tried::Peer(a) => {
                        let _ = write!(out, "{a}");
                    }
                    Tried::NoLiveServerIn(upstream) => out.extend_from_slice(upstream.as_bytes()),
                })
            }
            Variable::UpstreamConnectTime if self.session.is_some() => {
                session_tries(self.session, out, |t, out| write_time(&t.connect_time, out))
            }
            Variable::UpstreamFirstByteTime => session_tries(self.session, out, |t, out| {
                write_time(&t.first_byte_time, out)
            }),
            Variable::UpstreamSessionTime => {
                session_tries(self.session, out, |t, out| write_time(&t.session_time, out))
            }
            Variable::UpstreamBytesSent => session_tries(self.session, out, |t, out| {
                let _ = write!(out, "{}", t.bytes_sent);
            }),
            Variable::UpstreamBytesReceived => session_tries(self.session, out, |t, out| {
                let _ = write!(out, "{}", t.bytes_received);
            }),
            Variable::UpstreamAddr => join(
                self.upstream.map(|u| &u.addrs[..]),
                self.group_breaks(),
                out,
                |a, out| {
                    let _ = write!(out, "{a}");
                },
            ),
            Variable::UpstreamStatus => join(
                self.upstream.map(|u| &u.statuses[..]),
                self.group_breaks(),
                out,
                |s, out| {
                    let _ = write!(out, "{s}");
                },
            ),
            Variable::UpstreamResponseTime => join(
                self.upstream.map(|u| &u.response_times[..]),
                self.group_breaks(),
                out,
                |d, out| write_seconds(*d, out),
            ),
            Variable::UpstreamResponseLength => join(
                self.upstream.map(|u| &u.response_lengths[..]),
                self.group_breaks(),
                out,
                |n, out| {
                    let _ = write!(out, "{n}");
                },
            ),
            Variable::UpstreamConnectTime => join(
                self.upstream.map(|u| &u.connect_times[..]),
                self.group_breaks(),
                out,
                write_time,
            ),
            Variable::UpstreamHeaderTime => join(
                self.upstream.map(|u| &u.header_times[..]),
                self.group_breaks(),
                out,
                write_time,
            ),
            Variable::SslProtocol => {
                out.extend_from_slice(self.ssl_protocol.unwrap_or("").as_bytes())
            }
            Variable::SslCipher => out.extend_from_slice(self.ssl_cipher.unwrap_or("").as_bytes()),
            Variable::SslServerName => {
                out.extend_from_slice(self.ssl_server_name.unwrap_or("").as_bytes())
            }
            Variable::SslClientVerify if self.tls => {
                out.extend_from_slice(client_cert::verify_text(self.ssl_client).as_bytes())
            }
            Variable::SslClientVerify => {}
            Variable::SslClientSDn
            | Variable::SslClientIDn
            | Variable::SslClientSerial
            | Variable::SslClientFingerprint
            | Variable::SslClientCert
            | Variable::SslClientRawCert
            | Variable::SslClientEscapedCert => {
                if let Some(cert) = self.ssl_client.and_then(|c| c.cert.as_ref()) {
                    write_client_certificate(var, cert, out);
                }
            }
            Variable::SslPrereadServerName => {
                out.extend_from_slice(self.preread.map_or(&[][..], |p| &p.server_name))
            }
            Variable::SslPrereadAlpnProtocols => {
                out.extend_from_slice(self.preread.map_or(&[][..], |p| &p.alpn_protocols))
            }
            Variable::SslPrereadProtocol => {
                out.extend_from_slice(self.preread.map_or("", |p| p.protocol()).as_bytes())
            }
            Variable::InvalidReferer => {
                // `set` may give it a value of the request's own (nginx's variable is
                // changeable).
                if let Some((_, value)) = self
                    .declared
                    .iter()
                    .find(|(n, _)| &**n == "invalid_referer")
                {
                    out.extend_from_slice(value);
                } else if *self.cached.invalid_referer.get_or_init(|| {
                    self.referers
                        .is_some_and(|r| r.invalid(self.request.header("referer")))
                }) {
                    out.push(b'1');
                }
            }
            Variable::SecureLink => {
                if let Some(link) = self.secure_link_value().and_then(|v| v.link.as_deref()) {
                    out.extend_from_slice(link);
                }
            }
            Variable::SecureLinkExpires => {
                let expires = self.secure_link_expires.or_else(|| {
                    self.cached
                        .secure_link
                        .get()
                        .and_then(|v| v.expires.as_deref())
                });
                out.extend_from_slice(expires.unwrap_or_default());
            }
            Variable::Https => {
                if self.tls {
                    out.extend_from_slice(b"on");
                }
            }
            Variable::ProxyProtocolAddr => {
                if let Some(a) = self.proxy_protocol.and_then(|p| p.source) {
                    let _ = write!(out, "{}", a.ip());
                }
            }
            Variable::ProxyProtocolPort => {
                if let Some(a) = self.proxy_protocol.and_then(|p| p.source) {
                    let _ = write!(out, "{}", a.port());
                }
            }
            Variable::ProxyProtocolServerAddr => {
                if let Some(a) = self.proxy_protocol.and_then(|p| p.destination) {
                    let _ = write!(out, "{}", a.ip());
                }
            }
            Variable::ProxyProtocolServerPort => {
                if let Some(a) = self.proxy_protocol.and_then(|p| p.destination) {
                    let _ = write!(out, "{}", a.port());
                }
            }
            Variable::RequestHeader(name) => match name.as_str() {
                "cookie" => self.header_joined("cookie", b"; ", out),
                "x_forwarded_for" => self.header_joined("x-forwarded-for", b", ", out),
                _ => out.extend_from_slice(
                    self.request
                        .variable_header_values(name)
                        .next()
                        .unwrap_or_default(),
                ),
            },
            Variable::ResponseHeader(name) => {
                if let Some(v) = self
                    .response
                    .and_then(|r| r.headers.get(name.replace('_', "-").as_str()))
                {
                    out.extend_from_slice(v.as_bytes());
                }
            }
            Variable::UpstreamHeader(name) => {
                if let Some(v) = self
                    .upstream
                    .and_then(|u| u.response.as_ref())
                    .and_then(|r| r.headers.get(name.replace('_', "-").as_str()))
                {
                    out.extend_from_slice(v.as_bytes());
                }
            }
            Variable::NotComputed(_) => {}
            Variable::Cookie(name) => {
                if let Some(v) = cookie(self.request, name.as_bytes()) {
                    out.extend_from_slice(v);
                }
            }
            Variable::Arg(name) => {
                if let Some(v) = self.args.and_then(|a| arg(a, name.as_bytes())) {
                    out.extend_from_slice(v);
                }
            }
            Variable::DocumentRoot | Variable::RequestFilename => match (self.alias, self.root) {
                (Some((alias, prefix_len)), _) => {
                    eval(alias, self, out);
                    if let (Variable::RequestFilename, Some(len)) = (var, prefix_len) {
                        out.extend_from_slice(self.uri.get(len..).unwrap_or_default());
                    }
                }
                (None, root) => {
                    match root {
                        Some(root) => eval(root, self, out),
                        None => out.extend_from_slice(DEFAULT_ROOT.as_bytes()),
                    }
                    if *var == Variable::RequestFilename {
                        out.extend_from_slice(self.uri);
                    }
                }
            },
            Variable::Declared(name) => match self.declared.iter().find(|(n, _)| **n == **name) {
                Some((_, value)) => out.extend_from_slice(value),
                None => self.tables.write(name, self, out),
            },
            Variable::Capture(n) => {
                if let Some(Some(range)) = self.captures.get(*n as usize) {
                    if let Some(bytes) = self.captured.unwrap_or(self.uri).get(range.clone()) {
                        out.extend_from_slice(bytes);
                    }
                }
            }
        }
    }
}

/// The entries of a per-try list, each written by `item`, joined with `, `.
/// The tries of `list`, `, ` between them and ` : ` where an error page moved the request to
/// another pool (before the tries `breaks` indexes), as nginx joins its upstream states.
fn join<T>(
    list: Option<&[T]>,
    breaks: &[usize],
    out: &mut Vec<u8>,
    item: impl Fn(&T, &mut Vec<u8>),
) {
    for (i, entry) in list.unwrap_or_default().iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(match breaks.contains(&i) {
                true => b" : ".as_slice(),
                false => b", ".as_slice(),
            });
        }
        item(entry, out);
    }
}

/// A stream session's tries, joined with `, ` as ngx_stream_upstream's variables join them.
fn session_tries(
    session: Option<&SessionVars>,
    out: &mut Vec<u8>,
    item: impl Fn(&SessionTry, &mut Vec<u8>),
) {
    join(session.map(|s| &s.tries[..]), &[], out, item)
}

/// A time of a try, or `-` for one it never reached.
fn write_time(time: &Option<Duration>, out: &mut Vec<u8>) {
    match time {
        Some(d) => write_seconds(*d, out),
        None => out.push(b'-'),
    }
}

fn protocol(request: ClientRequest<'_>) -> &'static str {
    match request.version() {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// A cookie's value from the `Cookie` headers (names compare case-insensitively, as nginx's
/// ngx_http_parse_multi_header_lines does).
pub fn cookie<'r>(request: ClientRequest<'r>, name: &[u8]) -> Option<&'r [u8]> {
    for header in request.header_values("cookie") {
        for pair in header.split(|b| *b == b';') {
            let pair = trim(pair);
            if let Some(eq) = pair.iter().position(|b| *b == b'=') {
                if pair[..eq].eq_ignore_ascii_case(name) {
                    return Some(&pair[eq + 1..]);
                }
            }
        }
    }
    None
}

/// An argument's value from `$args` (the first, names case-insensitive, as ngx_http_arg).
pub fn arg<'a>(args: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    args.split(|b| *b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|b| *b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        };
        key.eq_ignore_ascii_case(name).then_some(value)
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The two shapes of the time now that variables print.
#[derive(Clone, Copy)]
pub enum Now {
    /// `$time_local`: `21/Nov/2026:10:00:00 +0000` (the appliance logs in UTC).
    Local = 0,
    /// `$time_iso8601`: `2026-11-21T10:00:00+00:00`.
    Iso8601 = 1,
}

impl Now {
    fn text(self, unix_seconds: i64) -> String {
        let (y, mo, d, h, mi, s) = civil(unix_seconds);
        match self {
            Now::Local => {
                const MONTHS: [&str; 12] = [
                    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                    "Dec",
                ];
                let month = MONTHS[(mo - 1) as usize];
                format!("{d:02}/{month}/{y}:{h:02}:{mi:02}:{s:02} +0000")
            }
            Now::Iso8601 => format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}+00:00"),
        }
    }
}

thread_local! {
    /// Each shape's text and the second it was made for, per thread.
    static NOW_TEXT: RefCell<[(i64, String); 2]> =
        const { RefCell::new([(i64::MIN, String::new()), (i64::MIN, String::new())]) };
}

/// Appends the time now. The text is made once a second on each thread, as nginx keeps its
/// time strings (`ngx_cached_http_log_time`) from one clock update to the next: made for each
/// access log line, it was a third of the line's cost.
pub fn write_now(shape: Now, out: &mut Vec<u8>) {
    let now = unix_seconds();
    NOW_TEXT.with_borrow_mut(|cache| {
        let (made_for, text) = &mut cache[shape as usize];
        if *made_for != now {
            *made_for = now;
            *text = shape.text(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// `$time_iso8601` as a string, for the error log's lines.
pub fn time_iso8601() -> String {
    Now::Iso8601.text(unix_seconds())
}

fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Appends a number in decimal, without the formatter's machinery (its padding and width
/// handling), which every access log line would pay for each number.
pub fn write_number(n: impl itoa::Integer, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends an address as nginx prints it.
fn write_ip(ip: IpAddr, out: &mut Vec<u8>) {
    match ip {
        IpAddr::V4(a) => {
            for (i, octet) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_number(octet, out);
            }
        }
        IpAddr::V6(a) => {
            use std::io::Write;
            let _ = write!(out, "{a}");
        }
    }
}

/// Seconds since the epoch as (year, month 1-12, day, hour, minute, second) in UTC
/// (days-from-civil inverse, Howard Hinnant's algorithm).
pub(crate) fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

impl<'a> RequestVars<'a> {
    /// Variables with nothing known: no request, client, server or upstream. A stream
    /// connection's start from here (it has no request), and tests'.
    pub fn empty(tables: &'a Tables, request_id: &'a std::sync::OnceLock<String>) -> Self {
        RequestVars {
            request: ClientRequest::none(),
            client: None,
            connecting: None,
            local: None,
            tls: false,
            host: None,
            server_name: "",
            uri: b"",
            args: None,
            captures: &[],
            captured: None,
            root: None,
            alias: None,
            declared: &[],
            proxy_host: "",
            proxy_port: "",
            request_id,
            upstream: None,
            response: None,
            status: 0,
            body_bytes_sent: 0,
            request_time: 0.0,
            connection: 0,
            connection_requests: 0,
            limits: LimitStatus::default(),
            ssl_protocol: None,
            ssl_cipher: None,
            ssl_server_name: None,
            ssl_client: None,
            proxy_protocol: None,
            tables,
            preread: None,
            session: None,
            referers: None,
            secure_link: None,
            secure_link_expires: None,
            // Without rules every Referer is valid and no link is checked, so this one set of
            // values serves every caller.
            cached: {
                static WITHOUT_RULES: CachedVars = CachedVars::new();
                &WITHOUT_RULES
            },
        }
    }
}

/// Variables for unit tests: a client 10.0.0.9:5555 on 10.0.0.1:80, server `srv`, `$uri` `/`,
/// nothing else known; tests change what they look at.
#[cfg(test)]
pub fn sample<'a>(
    request: ClientRequest<'a>,
    request_id: &'a std::sync::OnceLock<String>,
) -> RequestVars<'a> {
    static NONE: std::sync::OnceLock<Tables> = std::sync::OnceLock::new();
    RequestVars {
        request,
        client: Some(("10.0.0.9".parse().unwrap(), 5555)),
        connecting: Some(("10.0.0.9".parse().unwrap(), 5555)),
        local: Some(("10.0.0.1".parse().unwrap(), 80)),
        server_name: "srv",
        uri: b"/",
        connection: 1,
        connection_requests: 1,
        ..RequestVars::empty(NONE.get_or_init(Tables::default), request_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;

    #[test]
    fn cookies_and_args() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("Cookie", "a=1; SID=xyz").unwrap();
        req.append_header("Cookie", "b=2").unwrap();
        let req = ClientRequest::from(&req);
        assert_eq!(cookie(req, b"sid"), Some(&b"xyz"[..]));
        assert_eq!(cookie(req, b"b"), Some(&b"2"[..]));
        assert_eq!(cookie(req, b"c"), None);
        assert_eq!(arg(b"x=1&K=v&k=w", b"k"), Some(&b"v"[..]));
        assert_eq!(arg(b"flag&x=1", b"flag"), Some(&b""[..]));
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-Forwarded-For", "1.1.1.1").unwrap();
        req.append_header("X-Forwarded-For", "2.2.2.2").unwrap();
        let request_id = std::sync::OnceLock::new();
        let vars = RequestVars {
            proxy_host: "backend",
            proxy_port: "80",
            ..sample((&req).into(), &request_id)
        };
        let t = Template::parse("$proxy_add_x_forwarded_for|$host|$server_port|$scheme").unwrap();
        assert_eq!(
            eval_to_vec(&t, &vars),
            b"1.1.1.1, 2.2.2.2, 10.0.0.9|srv|80|http"
        );
    }

    #[test]
    fn times_as_nginx_prints_them() {
        assert_eq!(Now::Local.text(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(Now::Local.text(1_800_000_000), "15/Jan/2027:08:00:00 +0000");
        // A leap day, in a year that is a multiple of 400.
        assert_eq!(Now::Iso8601.text(951_782_400), "2000-02-29T00:00:00+00:00");
        // The text kept for the second is the one made for it, in either shape.
        let mut out = Vec::new();
        write_now(Now::Iso8601, &mut out);
        write_now(Now::Local, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.len(), 25 + 26, "{text}");
        assert!(text.ends_with(" +0000"), "{text}");
    }

    #[test]
    fn numbers_and_addresses_as_nginx_prints_them() {
        let mut out = Vec::new();
        write_ip("10.0.255.1".parse().unwrap(), &mut out);
        out.push(b' ');
        write_ip("2001:db8::ffff:1.2.3.4".parse().unwrap(), &mut out);
        out.push(b' ');
        write_number(0u64, &mut out);
        out.push(b' ');
        write_number(u64::MAX, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "10.0.255.1 2001:db8::ffff:102:304 0 18446744073709551615"
        );
    }
}

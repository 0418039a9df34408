//! What nginx writes around an error it logs while serving a connection: the connection's
//! number before the message (`*5 `), and after it where the error happened. For a request
//! (ngx_http_log_error_handler): `, client: 10.0.0.1, server: example.com, request: "GET /
//! HTTP/1.1", upstream: "http://10.0.0.2:80/", host: "example.com", referrer: "..."`. For a
//! stream session (ngx_stream_log_error): `, client: 10.0.0.1, server: 0.0.0.0:5432`, then,
//! once the session proxies, `, upstream: "10.0.0.2:5432", bytes from/to client:...`.
//!
//! Operators' tools read these parts: fail2ban's stock nginx filters (nginx-http-auth,
//! nginx-limit-req, nginx-botsearch) match the `*N`, `client:`, `server:` and `request:`.
//! Errors are rare, so the parts are formatted only when a line is written.

use std::fmt;

use super::vars::RequestVars;
use crate::config::LogLevel;

/// The backend a request was at: `http://10.0.0.2:8080/path?a=1`, the scheme, the server's
/// address (or the upstream's name, when no server was live) and the URI sent to it.
pub struct UpstreamAt<'a> {
    pub scheme: &'a str,
    pub peer: &'a dyn fmt::Display,
    pub uri: &'a [u8],
    /// A Unix socket's path is followed by `:` before the URI.
    pub unix: bool,
}

/// A request's part of an error line.
pub struct InRequest<'a> {
    pub vars: &'a RequestVars<'a>,
    /// An `auth_request` subrequest's URI.
    pub subrequest: Option<&'a [u8]>,
    pub upstream: Option<UpstreamAt<'a>>,
}

impl<'a> InRequest<'a> {
    pub fn new(vars: &'a RequestVars<'a>) -> InRequest<'a> {
        InRequest {
            vars,
            subrequest: None,
            upstream: None,
        }
    }

    pub fn at_upstream(self, upstream: UpstreamAt<'a>) -> InRequest<'a> {
        InRequest {
            upstream: Some(upstream),
            ..self
        }
    }

    pub fn in_subrequest(self, uri: &'a [u8]) -> InRequest<'a> {
        InRequest {
            subrequest: Some(uri),
            ..self
        }
    }

    /// Logs `message` (with its ` while ...`, if any) as nginx logs a request's error.
    pub fn log(&self, level: LogLevel, message: fmt::Arguments<'_>) {
        emit(
            level,
            format_args!("*{} {message}{self}", self.vars.connection),
        );
    }
}

impl fmt::Display for InRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vars = self.vars;
        f.write_str(", client: ")?;
        write_client(f, vars.client.map(|(ip, _)| ip))?;
        write!(f, ", server: {}", vars.server_name)?;
        let mut request = Vec::new();
        vars.write(&crate::config::template::Variable::Request, &mut request);
        write!(f, ", request: \"{}\"", Lossy(&request))?;
        if let Some(uri) = self.subrequest {
            write!(f, ", subrequest: \"{}\"", Lossy(uri))?;
        }
        if let Some(u) = &self.upstream {
            let separator = if u.unix { ":" } else { "" };
            write!(
                f,
                ", upstream: \"{}{}{separator}{}\"",
                u.scheme,
                u.peer,
                Lossy(u.uri)
            )?;
        }
        if let Some(host) = vars.request.header("host") {
            write!(f, ", host: \"{}\"", Lossy(host))?;
        }
        if let Some(referrer) = vars.request.header("referer") {
            write!(f, ", referrer: \"{}\"", Lossy(referrer))?;
        }
        Ok(())
    }
}

/// A stream session's part of an error line.
pub struct InSession<'a> {
    pub number: u64,
    /// A UDP session: nginx says `udp client:`.
    pub udp: bool,
    pub client: Option<std::net::IpAddr>,
    /// The listening address, as the config wrote it (`0.0.0.0:5432`).
    pub server: &'a dyn fmt::Display,
    /// Once the session proxies: the backend (if one was chosen) and the bytes so far, from
    /// and to the client, from and to the backend.
    pub proxied: Option<(Option<&'a dyn fmt::Display>, [u64; 4])>,
}

impl InSession<'_> {
    pub fn log(&self, level: LogLevel, message: fmt::Arguments<'_>) {
        emit(level, format_args!("*{} {message}{self}", self.number));
    }
}

impl fmt::Display for InSession<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.udp {
            ", udp client: "
        } else {
            ", client: "
        })?;
        write_client(f, self.client)?;
        write!(f, ", server: {}", self.server)?;
        if let Some((upstream, [from_client, to_client, from_upstream, to_upstream])) = self.proxied
        {
            if let Some(upstream) = upstream {
                write!(f, ", upstream: \"{upstream}\"")?;
            }
            write!(
                f,
                ", bytes from/to client:{from_client}/{to_client}, bytes from/to \
                 upstream:{from_upstream}/{to_upstream}"
            )?;
        }
        Ok(())
    }
}

/// The client as nginx's `c->addr_text` has it: realip's address when it changed it, `unix:`
/// for a Unix-socket client.
fn write_client(f: &mut fmt::Formatter<'_>, client: Option<std::net::IpAddr>) -> fmt::Result {
    match client {
        Some(ip) => write!(f, "{ip}"),
        None => f.write_str("unix:"),
    }
}

/// Bytes from the wire, printed as nginx prints them (as they are; invalid UTF-8 replaced).
struct Lossy<'a>(&'a [u8]);

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.0))
    }
}

/// Writes an error log line at nginx's `level`.
pub fn emit(level: LogLevel, line: fmt::Arguments<'_>) {
    match level {
        LogLevel::Debug => tracing::debug!("{line}"),
        LogLevel::Info => tracing::info!(nginx_level = "info", "{line}"),
        LogLevel::Notice => tracing::info!("{line}"),
        LogLevel::Warn => tracing::warn!("{line}"),
        LogLevel::Error => tracing::error!("{line}"),
        LogLevel::Crit => tracing::error!(nginx_level = "crit", "{line}"),
        LogLevel::Alert => tracing::error!(nginx_level = "alert", "{line}"),
        LogLevel::Emerg => tracing::error!(nginx_level = "emerg", "{line}"),
    }
}

/// An I/O error as nginx prints one: `111: Connection refused`.
pub fn os_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    match e.raw_os_error() {
        Some(code) => format!("{code}: {text}"),
        None => text,
    }
}

/// A Pingora error with a backend, in nginx's words: `connect() failed (111: Connection
/// refused) while connecting to upstream`. `header_read`: the try had the response head, so a
/// read failed in the body (`while reading upstream`).
pub fn upstream_error_words(e: &pingora::Error, header_read: bool) -> String {
    use pingora::ErrorType::*;
    let reading = match header_read {
        true => "reading upstream",
        false => "reading response header from upstream",
    };
    let cause = || match e.root_cause().downcast_ref::<std::io::Error>() {
        Some(io) => os_error(io),
        None => e.root_cause().to_string(),
    };
    let timed_out = "upstream timed out (110: Connection timed out)";
    match e.etype() {
        ConnectTimedout => format!("{timed_out} while connecting to upstream"),
        ConnectRefused => {
            "connect() failed (111: Connection refused) while connecting to upstream".into()
        }
        ConnectNoRoute => {
            "connect() failed (113: No route to host) while connecting to upstream".into()
        }
        ConnectError | SocketError | BindError | ConnectProxyFailure => {
            format!(
                "connect() failed ({}) while connecting to upstream",
                cause()
            )
        }
        TLSHandshakeTimedout => format!("{timed_out} while SSL handshaking to upstream"),
        TLSHandshakeFailure | TLSWantX509Lookup | InvalidCert | HandshakeError => {
            format!(
                "SSL_do_handshake() failed ({}) while SSL handshaking to upstream",
                cause()
            )
        }
        ReadTimedout => format!("{timed_out} while {reading}"),
        WriteTimedout => format!("{timed_out} while sending request to upstream"),
        ConnectionClosed => format!("upstream prematurely closed connection while {reading}"),
        ReadError => format!("recv() failed ({}) while {reading}", cause()),
        WriteError => format!(
            "writev() failed ({}) while sending request to upstream",
            cause()
        ),
        InvalidHTTPHeader | H1Error => {
            format!("upstream sent invalid header while {reading}")
        }
        _ => format!("{} while {reading}", e.etype().as_str()),
    }
}

//! The fast path: HTTP/1.x requests without a body or with a short `Content-Length` one (on
//! cleartext or TLS connections), proxied without Pingora's per-request machinery; and files
//! sent whole ([`files`]).
//!
//! Why it exists: Pingora's HTTP session (built for caching, compression, HTTP/2 and
//! subrequests, with a pair of tasks and a channel per proxied request) spends about 14 µs of
//! CPU per request on the development machine, where nginx spends 3; that alone held the
//! appliance at half of nginx's throughput (docs/BENCHMARKS.md), and at a third of it for
//! POSTs. A request through a load balancer needs much less: parse the head, read the body
//! (whole, before connecting, as nginx's `proxy_request_buffering` does), decide, write one
//! request, read one response.
//!
//! The decisions are the data plane's own, shared with Pingora's phases in the parent module:
//! [`route`], [`RequestCtx::choose_peer`], `connect_failed`, `upstream_failed`,
//! `retry_on_status`, [`upstream_request::build`], `limit_req` and `limit_conn`
//! (`RequestCtx::limit_requests`), the access log and the metrics. What this
//! path does not do (a body over 16 KB, chunked, over `client_max_body_size` or not passed on;
//! `Upgrade`, `Expect`, an HTTPS or Unix-socket upstream, a sticky pool, `auth_basic`, an
//! `auth_request` subrequest it cannot make ([`auth_request`]), `return`,
//! `try_files` in a proxied location, an `internal` location, `error_page`s that change an
//! answer, gzip that reads more than the upstream's type, length and encoding, a location
//! without `proxy_pass` unless it answers with a whole file or a 304, a head it cannot parse)
//! it leaves to Pingora:
//! the connection is handed over with the bytes read so far put back, so Pingora sees the
//! request exactly as the client sent it, and stays with Pingora.
//!
//! The response is passed on as nginx passes it: the upstream's status line, nginx's header
//! order (`Server`, `Date`, then the framing and `Connection`, then the upstream's headers
//! minus `proxy_hide_header`), the body by its `Content-Length`, or chunked to an HTTP/1.1
//! client (to an HTTP/1.0 one, up to the close).

use std::future::Future;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use pingora::http::ResponseHeader;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::{GetSocketDigest, Ssl};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{
    route, same_or_clone, ConnectionInfo, Exchange, HttpProxy, Previous, RequestCtx, Route,
};
use crate::config::{LogLevel, NextUpstream, Scheme};
use crate::proxy::access_phase::Access;
use crate::proxy::balance::{Outcome, PeerAddr, PeerId};
use crate::proxy::body_filters::{BodyFilters, FilterFailed};
use crate::proxy::charset;
use crate::proxy::client_request::{Parsed, ParsedHead};
use crate::proxy::connection_tag::Tagged;
use crate::proxy::error_context::os_error;
use crate::proxy::expires::safe_status;
use crate::proxy::gunzip;
use crate::proxy::gzip;
use crate::proxy::idle_stop::IdleStop;
use crate::proxy::keepalive::Upstream;
use crate::proxy::limits::Verdict;
use crate::proxy::recode::Recoder;
use crate::proxy::redirect;
use crate::proxy::respond;
use crate::proxy::runtime::{LocationConf, ProxyConf, ServerConf};
use crate::proxy::sendfile::SendFile;
use crate::proxy::upstream_request;

mod auth_request;
mod files;

use auth_request::{AuthOutcome, AuthPlan};

/// The end of a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A request head longer than this goes to Pingora, which answers it as nginx's
/// `large_client_header_buffers` would.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// An upstream response head longer than this is nginx's "upstream sent too big header".
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_RESPONSE_HEADERS: usize = 128;
/// The largest request body this path reads (into memory, whole, before it connects, as
/// nginx's `proxy_request_buffering` does): nginx's `client_body_buffer_size` default on
/// 64-bit systems, above which nginx writes the body to a file. Longer bodies go to Pingora,
/// which streams them.
const MAX_BODY: usize = 16 * 1024;
/// nginx's `client_header_timeout` default, for the rest of a head that has begun.
const HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's NGX_TIMER_LAZY_DELAY: a timer is not moved for less than this (see [`Deadline`]).
const TIMER_LAZY_DELAY: Duration = Duration::from_millis(300);
/// nginx's `keepalive_timeout` default, until a request has named its location.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);

/// The upstream headers nginx's header filter writes first, in its order (after `Server` and
/// `Date`), with their places in [`KNOWN`]. (A `Location` that `proxy_redirect` made relative
/// follows them; any other `Location`, like `Last-Modified`, is passed where it came.)
const FIRST_HEADERS: [(&str, usize); 2] = [
    ("Content-Type", CONTENT_TYPE),
    ("Content-Length", CONTENT_LENGTH),
];

/// Upstream headers the fast path treats apart, matched once as a response is parsed: those
/// not passed in the rest of the response (written before it, or hop-by-hop), and those
/// `proxy_redirect` rewrites (passed in place).
const KNOWN: [&str; 9] = [
    "server",
    "date",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "location",
    "refresh",
];
const SERVER: usize = 0;
const DATE: usize = 1;
const CONTENT_TYPE: usize = 2;
const CONTENT_LENGTH: usize = 3;
const TRANSFER_ENCODING: usize = 4;
const CONNECTION: usize = 5;
const KEEP_ALIVE: usize = 6;
const LOCATION: usize = 7;
const REFRESH: usize = 8;

/// An upstream response header: where its name and value are in the upstream buffer, and which
/// of [`KNOWN`] it is, if one.
type ResponseHeaderAt = (Range<usize>, Range<usize>, Option<u8>);

/// A response header `proxy_redirect` rewrote: its place among the upstream's headers, its new
/// value, and whether it is the `Location` written with the first headers.
struct Rewritten {
    index: usize,
    first: bool,
    value: Vec<u8>,
    location: bool,
}

/// How a connection left the fast path.
// Moved once per connection; a box would cost more than the move.
#[allow(clippy::large_enum_variant)]
pub enum Served<S> {
    /// It is closed (or must be).
    Closed,
    /// Its next request is for Pingora: the stream, and what was read of it already (to be put
    /// back in front of it), and how many requests it had before.
    ToPingora(S, BytesMut, u64),
}

/// Serves an HTTP/1.x connection (cleartext, or TLS without ALPN `h2`) while its requests
/// suit the fast path. `fresh` keeps the connection awaited by a graceful stop (see `edge`)
/// until its first request is counted in flight: a stop between the two would drop it.
pub async fn serve<S>(
    proxy: &HttpProxy,
    client: S,
    fresh: impl Send,
    shutdown: &ShutdownWatch,
) -> Served<S>
where
    S: AsyncRead + AsyncWrite + SendFile + GetSocketDigest + Tagged + Ssl + Unpin + Send,
{
    crate::proxy::timer_tick::ensure_ticking();
    let mut stop = IdleStop::new(shutdown);
    let (number, proxy_protocol) = client.number_and_proxy();
    let conn_info = ConnectionInfo {
        number,
        proxy_protocol,
        ..ConnectionInfo::of_tls(client.get_ssl_digest().as_deref())
    };
    let digest = client.get_socket_digest();
    let local = digest.as_ref().and_then(|d| d.local_addr().cloned());
    let peer = digest.as_ref().and_then(|d| d.peer_addr().cloned());
    let mut conn = Connection {
        local_inet: local.as_ref().and_then(PingoraAddr::as_inet).copied(),
        client_inet: peer.as_ref().and_then(PingoraAddr::as_inet).copied(),
        local,
        client,
        conn_info,
        buf: BytesMut::with_capacity(4096),
        head: ParsedHead::default(),
        previous: Previous::default(),
        location: None,
        upstream_buf: BytesMut::with_capacity(4096),
        response_headers: Vec::with_capacity(16),
        out: Vec::with_capacity(4096),
        client_deadline: Deadline::new(),
        upstream_deadline: Deadline::new(),
        requests: 0,
        between_requests: false,
        keepalive_timeout: KEEPALIVE_TIMEOUT,
        now: Instant::now(),
    };
    let mut fresh = Some(fresh);
    loop {
        let head_len = match conn.next_head(&mut stop).await {
            Head::Request(len) => len,
            Head::Closed => return Served::Closed,
            Head::Other => return conn.into_pingora(),
        };
        let mut ctx = proxy.ctx_after(std::mem::take(&mut conn.previous), conn.now);
        drop(fresh.take());
        // Taken for the request, so that `conn` can be borrowed meanwhile; given back after.
        let request = std::mem::take(&mut conn.head);
        let step = conn.serve_request(&mut ctx, &request, head_len).await;
        conn.head = request;
        match step {
            Step::Next => conn.previous = ctx.into_previous(),
            Step::Close => return Served::Closed,
            Step::ToPingora => return conn.into_pingora(),
        }
    }
}

struct Connection<S> {
    client: S,
    /// What its TLS handshake and PROXY header said, for `$ssl_*` and `$proxy_protocol_*`.
    conn_info: ConnectionInfo,
    local: Option<PingoraAddr>,
    local_inet: Option<SocketAddr>,
    client_inet: Option<SocketAddr>,
    /// What the client sent that is not consumed yet: the head being read, or pipelined.
    buf: BytesMut,
    /// The last request head parsed, kept so that its space is reused.
    head: ParsedHead,
    /// What the last request left to the next (see [`Previous`]).
    previous: Previous,
    /// The location of the last request, for the next one to take over when it is the same
    /// (see [`same_or_clone`]).
    location: Option<Arc<LocationConf>>,
    upstream_buf: BytesMut,
    /// Where the upstream's response headers are, in `upstream_buf`: kept from one response to
    /// the next, so that parsing one allocates nothing.
    response_headers: Vec<ResponseHeaderAt>,
    out: Vec<u8>,
    /// The time limits of waits on the client, and on the upstream server (see [`Deadline`]).
    client_deadline: Deadline,
    upstream_deadline: Deadline,
    /// Requests served on this connection (nginx's `keepalive_requests` counts them).
    requests: u32,
    /// A request has been served: the next one is waited for as keep-alive (the first request
    /// has its first byte in already, see `edge`).
    between_requests: bool,
    /// How long to wait for the next request: the last location's `keepalive_timeout`.
    keepalive_timeout: Duration,
    /// The time, as of the last wake-up: read when a wait ends, not at each use, as nginx
    /// reads it once per event-loop turn (ngx_time_update). Request times, timeouts, the
    /// balancer's and the keep-alive pool's clocks all read this.
    now: Instant,
}

// Returned once per request, where a box would be an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Head {
    /// A head of this many bytes, parsed into [`Connection::head`].
    Request(usize),
    Closed,
    /// Not for this path: a head it cannot parse or will not take.
    Other,
}

enum Step {
    Next,
    Close,
    ToPingora,
}

/// Why a try with a server failed before its response began.
enum TryFailed {
    Upstream(NextUpstream),
    /// The client closed its connection meanwhile (nginx's 499).
    ClientGone,
}

/// The same, with what went wrong with the server, for the log.
enum HeadFailed {
    Upstream(NextUpstream, String),
    ClientGone,
}

/// A parsed response head: offsets into the upstream buffer (its headers are in
/// `Connection::response_headers`).
struct ResponseHead {
    status: u16,
    version: u8,
    reason: Range<usize>,
    len: usize,
}

/// How the upstream delimits its response body.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl<S: AsyncRead + AsyncWrite + SendFile + Unpin + Send> Connection<S> {
    fn into_pingora(self) -> Served<S> {
        Served::ToPingora(self.client, self.buf, u64::from(self.requests))
    }

    /// Reads the next request head. Between requests, waits for `keepalive_timeout`, or until
    /// a graceful stop begins (which closes an idle connection, as nginx does).
    async fn next_head(&mut self, stop: &mut IdleStop) -> Head {
        if self.buf.is_empty() && self.between_requests {
            if stop.stopping() {
                return Head::Closed;
            }
            tokio::select! {
                biased;
                read = self.client_deadline.within(&mut self.now, self.keepalive_timeout, self.client.read_buf(&mut self.buf)) => {
                    if !matches!(read, Some(Ok(n)) if n > 0) {
                        return Head::Closed;
                    }
                }
                () = stop.stopped() => return Head::Closed,
            }
        }
        loop {
            match self.head.parse(&self.buf) {
                Parsed::Complete(len) => return Head::Request(len),
                Parsed::Partial if self.buf.len() < MAX_REQUEST_HEAD => {}
                _ => return Head::Other,
            }
            match self
                .client_deadline
                .within(
                    &mut self.now,
                    HEADER_TIMEOUT,
                    self.client.read_buf(&mut self.buf),
                )
                .await
            {
                Some(Ok(n)) if n > 0 => {}
                // A partial head and then the end, an error or the timeout: nginx closes too
                // (with a 400 it logs for a partial head, which no client reads).
                _ => return Head::Closed,
            }
        }
    }

    async fn serve_request(
        &mut self,
        ctx: &mut RequestCtx,
        request: &ParsedHead,
        head_len: usize,
    ) -> Step {
        let Some(body_len) = body_length(request) else {
            return Step::ToPingora;
        };
        ctx.conn = self.conn_info.clone();
        ctx.conn.requests = u64::from(self.requests) + 1;
        let exchange = self.exchange(request, None, 0);
        let Route::Location = route(ctx, self.local.as_ref(), exchange) else {
            return Step::ToPingora;
        };
        let Some(location) = ctx.location.as_ref() else {
            return Step::ToPingora;
        };
        let location = same_or_clone(&mut self.location, location);
        let step = self
            .serve_location(ctx, request, (head_len, body_len), &location)
            .await;
        self.location = Some(location);
        step
    }

    /// Serves a request (its head `head_len` bytes, its body `body_len`) that `location` took.
    async fn serve_location(
        &mut self,
        ctx: &mut RequestCtx,
        request: &ParsedHead,
        (head_len, body_len): (usize, usize),
        location: &LocationConf,
    ) -> Step {
        if location.proxy.is_none() && location.dynamic_pass.is_none() && body_len == 0 {
            return self.serve_file(ctx, request, head_len).await;
        }
        let Some(proxy) = suits(location, ctx.server.as_deref()) else {
            return Step::ToPingora;
        };
        if let Some(gzip) = &location.gzip {
            // gzip here reads only the upstream's type, length and encoding: what it decides
            // with the response's Expires or Cache-Control (`gzip_proxied` for a request with
            // Via), and an error page it may compress, go to Pingora's session.
            let touched = gzip.may_touch(request.into());
            if gzip.proxied_without_response(request.into()).is_none()
                || (touched && location.error_pages.is_some())
            {
                return Step::ToPingora;
            }
        }
        // Pingora answers a client `deny` refuses (and logs it), and authentication this path
        // does not do.
        ctx.real_ip_by_location(self.client_inet, request.into());
        let Some(auth) = self.plan_auth(ctx, request, location) else {
            return Step::ToPingora;
        };
        let client = &location.client;
        // Pingora answers what nginx refuses (413) or reads and drops (the body of a location
        // with proxy_pass_request_body off).
        let too_large = client.max_body_size > 0 && body_len as u64 > client.max_body_size;
        if body_len > 0 && (too_large || !proxy.pass_request_body) {
            return Step::ToPingora;
        }
        // The request is this path's now.
        self.buf.advance(head_len);
        self.requests += 1;
        self.between_requests = true;
        self.keepalive_timeout = client.keepalive_timeout;
        let body = match self.read_body(body_len, client.body_timeout).await {
            Ok(body) => body,
            Err(status) => {
                ctx.log_exchange(self.exchange(request, None, 0), status, self.now);
                return Step::Close;
            }
        };
        let keepalive = client_keepalive(request)
            && !crate::proxy::draining()
            && !client.keepalive_timeout.is_zero()
            && self.requests < client.keepalive_requests;
        if location.limits.is_some() {
            if let Some(keep) = self.pre_access(ctx, request, location, keepalive).await {
                return if keep { Step::Next } else { Step::Close };
            }
        }
        if let AuthPlan::Ask(planned) = auth {
            let status = match self.ask(ctx, request, location, *planned).await {
                AuthOutcome::Access(Access::Allowed) => None,
                AuthOutcome::Access(Access::Forbidden) => Some(403),
                AuthOutcome::Access(Access::Unauthorized(challenges)) => {
                    let carried = challenges
                        .into_iter()
                        .map(|c| ("WWW-Authenticate".into(), c));
                    ctx.errors.carried.extend(carried);
                    Some(401)
                }
                AuthOutcome::Access(Access::Failed) => Some(500),
                AuthOutcome::ClientGone => {
                    ctx.log_exchange(self.exchange(request, None, 0), 499, self.now);
                    return Step::Close;
                }
            };
            if let Some(status) = status {
                return match self.answer(ctx, request, location, status, keepalive).await {
                    true => Step::Next,
                    false => Step::Close,
                };
            }
        }
        let keep = self
            .proxy(ctx, request, &body, location, proxy, keepalive)
            .await;
        if keep {
            Step::Next
        } else {
            Step::Close
        }
    }

    /// The request body, `len` bytes, read whole (what came with the head first), each read
    /// within `client_body_timeout`. Otherwise the status nginx logs, with nothing sent: 400
    /// when the client closed ("client prematurely closed connection"), 408 when it was too
    /// slow.
    async fn read_body(&mut self, len: usize, timeout: Duration) -> Result<bytes::Bytes, u16> {
        if len == 0 {
            // Splitting off nothing would still turn the buffer into a shared one.
            return Ok(bytes::Bytes::new());
        }
        while self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            match self
                .client_deadline
                .within(&mut self.now, timeout, self.client.read_buf(&mut self.buf))
                .await
            {
                Some(Ok(n)) if n > 0 => {}
                Some(_) => return Err(400),
                None => return Err(408),
            }
        }
        Ok(self.buf.split_to(len).freeze())
    }

    /// Proxies one request, trying servers as `proxy_next_upstream` allows; logs it. True when
    /// the client connection goes on.
    async fn proxy(
        &mut self,
        ctx: &mut RequestCtx,
        request: &ParsedHead,
        body: &[u8],
        location: &LocationConf,
        proxy: &ProxyConf,
        keepalive: bool,
    ) -> bool {
        let pool = &proxy.pool;
        let method = request.method();
        loop {
            let exchange = self.exchange(request, None, 0);
            let Some(peer) = ctx.choose_peer(exchange, proxy, self.now) else {
                return self.give_up(ctx, request, location, keepalive).await;
            };
            let Some(PeerAddr::Inet(addr)) = pool.balancer.peer(peer).map(|p| p.addr.clone())
            else {
                return self.give_up(ctx, request, location, keepalive).await;
            };
            ctx.upstream.addrs.push(PeerAddr::Inet(addr));
            ctx.upstream.begin_try(self.now);
            let mut upstream = match self.upstream_to(ctx, request, proxy, (peer, addr)).await {
                Ok(upstream) => upstream,
                Err(timed_out) => {
                    if ctx.connect_failed(timed_out, method) {
                        continue;
                    }
                    return self.give_up(ctx, request, location, keepalive).await;
                }
            };
            ctx.upstream.connected(self.now);
            pool.inflight.register(
                ctx.token,
                peer,
                &PeerAddr::Inet(addr),
                std::os::unix::io::AsRawFd::as_raw_fd(&upstream.stream),
                pool.drain_timeout.is_some(),
            );
            let head = match self
                .exchange_head(ctx, (request, body), proxy, addr, &mut upstream)
                .await
            {
                Ok(head) => head,
                Err(failed) => {
                    if pool.inflight.release(ctx.token) {
                        // A drain timeout cut it: the server was removed; nothing is retried.
                        ctx.release_at(Outcome::Success, self.now);
                        ctx.give_up_status = 502;
                        return self.give_up(ctx, request, location, keepalive).await;
                    }
                    match failed {
                        TryFailed::ClientGone => {
                            ctx.release_at(Outcome::Success, self.now);
                            ctx.upstream.end_try(self.now);
                            ctx.log_exchange(self.exchange(request, None, 0), 499, self.now);
                            return false;
                        }
                        TryFailed::Upstream(condition) => {
                            if ctx.upstream_failed(condition, upstream.reused, method) {
                                continue;
                            }
                            return self.give_up(ctx, request, location, keepalive).await;
                        }
                    }
                }
            };
            if ctx.retry_on_status(head.status, method, self.now) {
                pool.inflight.release(ctx.token);
                continue;
            }
            let keep = self
                .pass_response(
                    ctx,
                    request,
                    location,
                    proxy,
                    (peer, upstream),
                    head,
                    keepalive,
                )
                .await;
            pool.inflight.release(ctx.token);
            return keep;
        }
    }

    /// Sends the request (head and body) to the server and reads its response head; logs
    /// what went wrong with the server, as nginx does.
    async fn exchange_head(
        &mut self,
        ctx: &mut RequestCtx,
        (request, body): (&ParsedHead, &[u8]),
        proxy: &ProxyConf,
        addr: SocketAddr,
        upstream: &mut Upstream,
    ) -> Result<ResponseHead, TryFailed> {
        match self
            .send_and_read_head(ctx, (request, body), proxy, upstream)
            .await
        {
            Ok(head) => Ok(head),
            Err(HeadFailed::ClientGone) => Err(TryFailed::ClientGone),
            Err(HeadFailed::Upstream(condition, what)) => {
                let x = self.exchange(request, None, 0);
                ctx.log_error(x, Some(&addr), LogLevel::Error, format_args!("{what}"));
                Err(TryFailed::Upstream(condition))
            }
        }
    }

    async fn send_and_read_head(
        &mut self,
        ctx: &mut RequestCtx,
        (request, body): (&ParsedHead, &[u8]),
        proxy: &ProxyConf,
        upstream: &mut Upstream,
    ) -> Result<ResponseHead, HeadFailed> {
        let matched = ctx.matched();
        let vars = ctx.vars_of(self.exchange(request, None, 0), Some(proxy));
        self.out.clear();
        upstream_request::write(proxy, request.into(), &matched, &vars, &mut self.out);
        self.out.extend_from_slice(body);
        let failed =
            |condition: NextUpstream, what: String| Err(HeadFailed::Upstream(condition, what));
        match self
            .upstream_deadline
            .within(
                &mut self.now,
                proxy.send_timeout,
                upstream.stream.write_all(&self.out),
            )
            .await
        {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                return failed(
                    NextUpstream::Error,
                    format!(
                        "writev() failed ({}) while sending request to upstream",
                        os_error(&e)
                    ),
                )
            }
            None => {
                return failed(
                    NextUpstream::Timeout,
                    "upstream timed out (110: Connection timed out) while sending request to \
                     upstream"
                        .into(),
                )
            }
        }
        self.upstream_buf.clear();
        // Watch the client meanwhile: a client that closes is nginx's 499, and the server's
        // work for it stops (ngx_http_upstream_check_broken_connection).
        let mut watch_client = true;
        loop {
            match parse_response(&self.upstream_buf, &mut self.response_headers) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) if self.upstream_buf.len() < MAX_RESPONSE_HEAD => {}
                Ok(None) => {
                    return failed(
                        NextUpstream::InvalidHeader,
                        "upstream sent too big header while reading response header from upstream"
                            .into(),
                    )
                }
                Err(()) => {
                    return failed(
                        NextUpstream::InvalidHeader,
                        "upstream sent no valid HTTP/1.0 header while reading response header \
                         from upstream"
                            .into(),
                    )
                }
            }
            tokio::select! {
                biased;
                read = self.upstream_deadline.within(&mut self.now, proxy.read_timeout, upstream.stream.read_buf(&mut self.upstream_buf)) => {
                    match read {
                        Some(Ok(n)) if n > 0 => {}
                        Some(Ok(_)) => {
                            return failed(
                                NextUpstream::Error,
                                "upstream prematurely closed connection while reading response \
                                 header from upstream"
                                    .into(),
                            )
                        }
                        Some(Err(e)) => {
                            return failed(
                                NextUpstream::Error,
                                format!(
                                    "recv() failed ({}) while reading response header from upstream",
                                    os_error(&e)
                                ),
                            )
                        }
                        None => {
                            return failed(
                                NextUpstream::Timeout,
                                "upstream timed out (110: Connection timed out) while reading \
                                 response header from upstream"
                                    .into(),
                            )
                        }
                    }
                }
                read = self.client.read_buf(&mut self.buf), if watch_client => {
                    self.now = Instant::now();
                    match read {
                        Ok(n) if n > 0 => watch_client = self.buf.len() < MAX_REQUEST_HEAD,
                        _ => return Err(HeadFailed::ClientGone),
                    }
                }
            }
        }
    }

    /// Passes the response on to the client and gives the server back; true when the client
    /// connection goes on.
    #[allow(clippy::too_many_arguments)]
    async fn pass_response(
        &mut self,
        ctx: &mut RequestCtx,
        request: &ParsedHead,
        location: &LocationConf,
        proxy: &ProxyConf,
        (peer, upstream): (PeerId, Upstream),
        head: ResponseHead,
        mut keepalive: bool,
    ) -> bool {
        let pool = &proxy.pool;
        let client_http11 = request.version() == http::Version::HTTP_11;
        let head_only = request.method() == "HEAD";
        // Taken for the while, so that `self` can be borrowed meanwhile; given back below.
        let headers = std::mem::take(&mut self.response_headers);
        let buf = &self.upstream_buf;
        // The first header that is `KNOWN[known]`.
        let header = |known: usize| {
            headers
                .iter()
                .find(|(_, _, k)| *k == Some(known as u8))
                .map(|(_, v, _)| &buf[v.clone()])
        };
        let chunked = header(TRANSFER_ENCODING).is_some_and(|v| contains_token(v, b"chunked"));
        let length = header(CONTENT_LENGTH);
        let framing = if head_only || head.status < 200 || head.status == 204 || head.status == 304
        {
            Framing::None
        } else if chunked {
            Framing::Chunked
        } else if let Some(v) = length {
            match std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        } else {
            Framing::UntilClose
        };
        let upstream_close =
            head.version == 0 || header(CONNECTION).is_some_and(|v| contains_token(v, b"close"));
        let hide = &proxy.hide_headers;
        let passed = |known: usize| !hide.contains(KNOWN[known]);
        // nginx's gunzip filter comes first: the (last) Content-Encoding, when it is gzip and
        // this client does not take gzip, goes with the length, and the body is decompressed.
        // serve_location took only requests whose `gzip_proxied` reads no response header.
        let unzip_conf = location.gzip.as_ref().filter(|g| g.gunzips());
        let (unzip, unzipped_encoding) = match unzip_conf {
            None => (gzip::Unzip::Untouched, None),
            Some(conf) => {
                let last = (headers.iter().enumerate().rev())
                    .find(|(_, (name, _, _))| {
                        buf[name.clone()].eq_ignore_ascii_case(b"content-encoding")
                    })
                    .filter(|_| !hide.contains("content-encoding"));
                let value = last.map(|(_, (_, value, _))| &buf[value.clone()]);
                let unzip = conf.unzip_by(request.into(), value, || {
                    conf.proxied_without_response(request.into()) == Some(true)
                });
                (unzip, last.map(|(index, _)| index))
            }
        };
        let unzipped = unzip == gzip::Unzip::Decompress;
        // nginx's sub filter comes before gzip and takes the length away from it.
        let mut keeps_last_modified = false;
        let substituter = location.sub_filter.as_ref().and_then(|conf| {
            let vars = ctx.vars_of(self.exchange(request, None, 0), Some(proxy));
            let prepared = conf.prepare(&vars)?;
            keeps_last_modified = prepared.keeps_last_modified();
            prepared.decide(
                header(CONTENT_TYPE).filter(|_| passed(CONTENT_TYPE)),
                length.filter(|_| !chunked && !unzipped),
            )
        });
        let substituted = substituter.is_some();
        // nginx's charset filter, after the sub filter and before gzip: the charset the
        // Content-Type names, and the body recoded when a charset_map joins the response's
        // charset to it (not an encoded body).
        let encoded = || {
            !unzipped
                && !hide.contains("content-encoding")
                && headers.iter().any(|(name, value, _)| {
                    buf[name.clone()].eq_ignore_ascii_case(b"content-encoding") && !value.is_empty()
                })
        };
        let charset = match (
            &location.charset,
            header(CONTENT_TYPE).filter(|_| passed(CONTENT_TYPE)),
        ) {
            (Some(conf), Some(value)) => conf.verdict(head.status, value, encoded()),
            _ => charset::Verdict::default(),
        };
        if let Some(message) = &charset.missing_map {
            let x = self.exchange(request, None, 0);
            let peer = ctx.upstream.addrs.last().cloned();
            let peer = peer.as_ref().map(|p| p as &dyn std::fmt::Display);
            let message = format_args!("{message} while reading response header from upstream");
            ctx.log_error(x, peer, LogLevel::Error, message);
        }
        let resized = charset.recode.as_ref().is_some_and(|t| t.changes_length());
        let gzip = match &location.gzip {
            None => gzip::Verdict::Untouched,
            Some(conf) => {
                let content_encoding = headers
                    .iter()
                    .find(|(name, _, _)| {
                        buf[name.clone()].eq_ignore_ascii_case(b"content-encoding")
                    })
                    .map(|(_, value, _)| &buf[value.clone()])
                    .filter(|_| !hide.contains("content-encoding") && !unzipped);
                let facts = gzip::ResponseFacts {
                    content_type: header(CONTENT_TYPE).filter(|_| passed(CONTENT_TYPE)),
                    content_length: length
                        .filter(|_| !chunked && !substituted && !unzipped && !resized),
                    content_encoding,
                };
                conf.verdict_by(request.into(), head.status, facts, || {
                    // serve_location took only requests this can answer.
                    conf.proxied_without_response(request.into()) == Some(true)
                })
            }
        };
        let compress = gzip == gzip::Verdict::Compress;
        let vary = (gzip != gzip::Verdict::Untouched || unzip != gzip::Unzip::Untouched)
            && location.gzip.as_ref().is_some_and(|g| g.vary());
        // A compressed, decompressed or rewritten body's length is known only at its end (and
        // its ETag is weak); a recoded one's when a character may take more or fewer bytes.
        let reframed = compress || substituted || unzipped;
        let length_unknown = reframed || resized;
        let unframed = matches!(framing, Framing::Chunked | Framing::UntilClose)
            || (length_unknown && framing != Framing::None);
        // To the client: the length when the server gave one (and it goes out as it came),
        // else chunked to HTTP/1.1, else the body up to the close.
        let rechunk = unframed && client_http11;
        if unframed && !client_http11 {
            keepalive = false;
        }
        // A HEAD's answer says gzip but has no body to compress.
        let compressor = match compress && framing != Framing::None {
            true => location.gzip.as_ref().map(|g| {
                g.compressor(match framing {
                    Framing::Length(n) if !substituted => Some(n),
                    _ => None,
                })
            }),
            false => None,
        };
        let mut filters = Filtering {
            filters: BodyFilters {
                decompressor: (unzipped && framing != Framing::None)
                    .then(gunzip::Decompressor::new),
                substituter: substituter.filter(|_| framing != Framing::None),
                recoder: (charset.recode.clone())
                    .filter(|_| framing != Framing::None)
                    .map(Recoder::new),
                compressor,
            },
            failure: None,
        };

        // The response sent is kept whole only for a log line's `$sent_http_*` and
        // `$upstream_http_*`, and for `add_header` and `expires` values that may read it.
        let logs = logs_read_response(ctx);
        let reads_response = location
            .expires
            .as_ref()
            .is_some_and(|e| e.reads_response());
        let mut sent = if logs || location.add_header_reads_response || reads_response {
            ResponseHeader::build(head.status, Some(headers.len() + 4)).ok()
        } else {
            None
        };
        let rewritten = self.rewrite_redirects(ctx, request, proxy, &headers);
        let out = &mut self.out;
        out.clear();
        {
            use std::io::Write;
            let _ = write!(out, "HTTP/1.1 {} ", head.status);
        }
        out.extend_from_slice(&buf[head.reason.clone()]);
        out.extend_from_slice(b"\r\n");
        let mut own = |name: &'static str, value: &[u8], out: &mut Vec<u8>| {
            put_header(out, &mut sent, name, value)
        };
        // nginx's header filter order: Server, Date, Content-Type, Content-Length, a Location
        // proxy_redirect made relative, Transfer-Encoding, Connection, gzip's Vary, then the
        // rest.
        match header(SERVER).filter(|_| passed(SERVER)) {
            Some(v) => own("Server", v, out),
            None => own("Server", respond::SERVER.as_bytes(), out),
        }
        match header(DATE).filter(|_| passed(DATE)) {
            Some(v) => own("Date", v, out),
            None => {
                respond::with_http_date_at(ctx.date(), |date| own("Date", date.as_bytes(), out))
            }
        }
        // The Content-Type `charset` names a charset in, when it does; the headers filter
        // (`add_header`, `expires`) runs before nginx's charset filter and reads the
        // upstream's.
        let named = charset.content_type.as_deref();
        for (name, known) in FIRST_HEADERS {
            if known == CONTENT_LENGTH && (chunked || length_unknown) {
                continue;
            }
            if let Some(v) = header(known).filter(|_| passed(known)) {
                own(
                    name,
                    named.filter(|_| known == CONTENT_TYPE).unwrap_or(v),
                    out,
                );
            }
        }
        if let Some(location) = rewritten.iter().find_map(|r| r.first.then_some(&r.value)) {
            own("Location", location, out);
        }
        if rechunk {
            own("Transfer-Encoding", b"chunked", out);
        }
        own(
            "Connection",
            if keepalive { b"keep-alive" } else { b"close" },
            out,
        );
        if vary {
            own("Vary", b"Accept-Encoding", out);
        }
        // Where the upstream's Expires and Cache-Control lines went in `out`, for `expires`.
        let expiring = location
            .expires
            .as_deref()
            .filter(|_| safe_status(head.status));
        let (mut expires_lines, mut cache_control_lines) = (Vec::new(), Vec::new());
        for (index, (name, value, known)) in headers.iter().enumerate() {
            let name = &buf[name.clone()];
            let in_place = matches!(known.map(usize::from), Some(LOCATION | REFRESH));
            if (known.is_some() && !in_place) || hide.contains_any_case(name) {
                continue;
            }
            if unzipped && unzipped_encoding == Some(index) {
                continue;
            }
            let value = match rewritten.iter().find(|r| r.index == index) {
                Some(r) if r.first => continue,
                Some(r) => &r.value[..],
                None => &buf[value.clone()],
            };
            // What the sub filter takes from a response it rewrites: Last-Modified and the
            // ETag, or with `sub_filter_last_modified` a strong ETag; what gzip takes from a
            // compressed one: ranges, and a strong ETag.
            let (etag, last_modified) = (
                name.eq_ignore_ascii_case(b"etag"),
                name.eq_ignore_ascii_case(b"last-modified"),
            );
            if substituted && !keeps_last_modified && (etag || last_modified) {
                continue;
            }
            if (compress || unzipped) && name.eq_ignore_ascii_case(b"accept-ranges") {
                continue;
            }
            let weak;
            let value = match etag && reframed {
                true => match gzip::weak_etag(value) {
                    Some(w) => {
                        weak = w;
                        &weak[..]
                    }
                    None => continue,
                },
                false => value,
            };
            let line_start = out.len();
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
            if expiring.is_some() {
                if name.eq_ignore_ascii_case(b"expires") {
                    expires_lines.push(line_start..out.len());
                } else if name.eq_ignore_ascii_case(b"cache-control") {
                    cache_control_lines.push(line_start..out.len());
                }
            }
            if let Some(sent) = sent.as_mut() {
                let _ = sent.append_header(bytes::Bytes::copy_from_slice(name), value);
            }
        }
        let upstream_type = header(CONTENT_TYPE).filter(|_| named.is_some());
        if let (Some(sent), Some(value)) = (sent.as_mut(), upstream_type) {
            let _ = sent.insert_header(http::header::CONTENT_TYPE, value);
        }
        if let Some(conf) = expiring {
            let last_modified = headers
                .iter()
                .find(|(name, _, _)| buf[name.clone()].eq_ignore_ascii_case(b"last-modified"))
                .map(|(_, value, _)| &buf[value.clone()]);
            let vars = ctx.vars_of(self.exchange(request, sent.as_ref(), 0), Some(proxy));
            let computed = conf.headers(head.status, &vars, last_modified, ctx.date());
            if let Some((expires, cache_control)) = computed {
                set_expires(
                    &mut self.out,
                    (&expires_lines, &cache_control_lines),
                    (&expires, &cache_control),
                );
                if let Some(sent) = sent.as_mut() {
                    let _ = sent.insert_header("Expires", expires);
                    let _ = sent.insert_header("Cache-Control", cache_control);
                }
            }
        }
        if sent.is_some() {
            ctx.upstream.response = received_header(head.status, &headers, buf).map(Box::new);
        }
        if !location.add_header.is_empty() {
            // nginx's headers filter: after every header of the upstream's.
            let vars = ctx.vars_of(self.exchange(request, sent.as_ref(), 0), Some(proxy));
            let added = super::added_by_rules(&location.add_header, head.status, &vars);
            for (name, value) in added {
                let out = &mut self.out;
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(&value);
                out.extend_from_slice(b"\r\n");
                if let Some(sent) = sent.as_mut() {
                    let _ = sent.append_header(name.clone(), value);
                }
            }
        }
        if let (Some(sent), Some(value)) = (sent.as_mut(), named) {
            // What the log's `$sent_http_content_type` says.
            let _ = sent.insert_header(http::header::CONTENT_TYPE, value);
        }
        if compress {
            // gzip's filter comes after the headers filter: its header is the last.
            self.out.extend_from_slice(b"Content-Encoding: gzip\r\n");
            if let Some(sent) = sent.as_mut() {
                let _ = sent.append_header("Content-Encoding", "gzip");
            }
        }
        self.out.extend_from_slice(b"\r\n");

        self.response_headers = headers;

        // The body: what came with the head first, then the rest as it arrives.
        self.upstream_buf.advance(head.len);
        let send_timeout = location.client.send_timeout;
        let read_timeout = proxy.read_timeout;
        let mut body_sent = 0u64;
        let mut decoder = ChunkDecoder::default();
        let mut remaining = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        let mut complete = framing == Framing::None || (framing == Framing::Length(0));
        let mut upstream_ok = true;
        // What went wrong with the server's side, in nginx's words, for the log.
        let mut upstream_failure: Option<String> = None;
        let mut client_ok = true;
        let mut first = true;
        let mut upstream = Some(upstream);
        loop {
            // Move what the upstream buffer holds into the output.
            let mut data_start = self.out.len();
            match framing {
                Framing::None => {}
                Framing::Length(_) => {
                    let take = remaining.min(self.upstream_buf.len() as u64) as usize;
                    match filters.is_empty() {
                        true => self.out.extend_from_slice(&self.upstream_buf[..take]),
                        false => {
                            let data = &self.upstream_buf[..take];
                            upstream_ok &= filters.push(data, &mut self.out, rechunk)
                        }
                    }
                    self.upstream_buf.advance(take);
                    remaining -= take as u64;
                    complete = remaining == 0;
                }
                Framing::Chunked => {
                    let mut data = Vec::new();
                    match decoder.decode(&self.upstream_buf, &mut data) {
                        Ok((used, done)) => {
                            self.upstream_buf.advance(used);
                            complete = done;
                            upstream_ok &= filters.push(&data, &mut self.out, rechunk);
                        }
                        Err(()) => {
                            upstream_ok = false;
                            upstream_failure =
                                Some("upstream sent invalid chunked response".into());
                        }
                    }
                }
                Framing::UntilClose => {
                    let data = self.upstream_buf.split();
                    upstream_ok &= filters.push(&data, &mut self.out, rechunk);
                }
            }
            if first && !upstream_ok && filters.failure.is_some() {
                // nginx holds a head back until body bytes follow it: a body zlib refuses
                // from the start leaves the client with no response at all.
                self.out.clear();
                data_start = 0;
            }
            if complete && upstream_ok {
                upstream_ok = filters.finish(&mut self.out, rechunk);
            }
            // A body the filters could not finish is cut off: no last chunk.
            if complete && rechunk && upstream_ok {
                self.out.extend_from_slice(LAST_CHUNK);
            }
            // As nginx's `$body_bytes_sent`: what went out after the head, chunk framing too.
            body_sent += (self.out.len() - data_start) as u64;
            if complete && upstream_ok {
                // The server's part is over: its connection goes back to the pool now, before
                // the client has read everything, as nginx frees it.
                let reusable = framing != Framing::UntilClose
                    && !upstream_close
                    && self.upstream_buf.is_empty();
                if let (true, Some(_), Some(conn)) = (reusable, pool.keepalive, upstream.take()) {
                    pool.idle.put(peer, conn, pool.keepalive_requests, self.now);
                }
            }
            if !self.out.is_empty() || first {
                first = false;
                client_ok = self.send_out(send_timeout).await;
            }
            if complete || !upstream_ok || !client_ok {
                break;
            }
            let Some(conn) = upstream.as_mut() else {
                break;
            };
            match self
                .upstream_deadline
                .within(
                    &mut self.now,
                    read_timeout,
                    conn.stream.read_buf(&mut self.upstream_buf),
                )
                .await
            {
                Some(Ok(n)) if n > 0 => {}
                Some(Ok(_)) if framing == Framing::UntilClose => {
                    complete = true;
                    let tail_start = self.out.len();
                    if !filters.finish(&mut self.out, rechunk) {
                        upstream_ok = false;
                        break;
                    }
                    if rechunk {
                        self.out.extend_from_slice(LAST_CHUNK);
                    }
                    // The filters' last bytes go out too when the body ends with the close.
                    body_sent += (self.out.len() - tail_start) as u64;
                    if !self.out.is_empty() {
                        client_ok = self.send_out(send_timeout).await;
                    }
                    break;
                }
                failed => {
                    upstream_ok = false;
                    upstream_failure = Some(match failed {
                        Some(Ok(_)) => "upstream prematurely closed connection".into(),
                        Some(Err(e)) => format!("recv() failed ({})", os_error(&e)),
                        None => "upstream timed out (110: Connection timed out)".into(),
                    });
                    break;
                }
            }
        }
        // zlib's complaint (gunzip's, on what the upstream sent), as nginx logs it.
        if let Some(failure) = filters.failure.take() {
            upstream_failure.get_or_insert_with(|| failure.error.to_string());
        }
        if let Some(why) = upstream_failure {
            // ngx_event_pipe's action while it reads the body.
            let x = self.exchange(request, None, 0);
            let peer = ctx.upstream.addrs.last().cloned();
            let peer = peer.as_ref().map(|p| p as &dyn std::fmt::Display);
            ctx.log_error(
                x,
                peer,
                LogLevel::Error,
                format_args!("{why} while reading upstream"),
            );
        }
        ctx.upstream.try_body_bytes += body_sent;
        ctx.upstream.end_try(self.now);
        // The response has begun: whatever happens now, nginx frees the server as not failed.
        ctx.release_at(Outcome::Success, self.now);
        let unanswered = if client_ok { 0 } else { 499 };
        let mut exchange = self.exchange(request, sent.as_ref(), body_sent);
        exchange.status = head.status;
        ctx.log_exchange(exchange, unanswered, self.now);
        client_ok && upstream_ok && complete && keepalive
    }

    /// `proxy_redirect` on the response's `Location` and `Refresh` headers: the new values, by
    /// header. As in nginx, the last `Location` rewritten to a relative URL is made absolute
    /// and written with the first headers; the others stay where they came.
    fn rewrite_redirects(
        &self,
        ctx: &RequestCtx,
        request: &ParsedHead,
        proxy: &ProxyConf,
        headers: &[ResponseHeaderAt],
    ) -> Vec<Rewritten> {
        let mut rewritten = Vec::new();
        if proxy.redirect.is_empty() {
            return rewritten;
        }
        let mut vars = None;
        for (index, (_, value, known)) in headers.iter().enumerate() {
            let known = known.map(usize::from);
            // A hidden header is not passed, so not rewritten either.
            match known {
                Some(k @ (LOCATION | REFRESH)) if !proxy.hide_headers.contains(KNOWN[k]) => {}
                _ => continue,
            }
            let vars = vars
                .get_or_insert_with(|| ctx.vars_of(self.exchange(request, None, 0), Some(proxy)));
            let value = &self.upstream_buf[value.clone()];
            let new = if known == Some(LOCATION) {
                redirect::rewrite_location(&proxy.redirect, value, vars)
            } else {
                redirect::rewrite_refresh(&proxy.redirect, value, vars)
            };
            if let Some(value) = new {
                rewritten.push(Rewritten {
                    index,
                    first: false,
                    value,
                    location: known == Some(LOCATION),
                });
            }
        }
        if let Some(last) = rewritten.iter_mut().rev().find(|r| r.location) {
            if last.value.starts_with(b"/") {
                last.first = true;
                last.value =
                    redirect::absolute(ctx.tls, ctx.host.as_deref(), self.local_inet, &last.value);
            }
        }
        rewritten
    }

    /// nginx's pre-access phase for a location with limits: waits as `limit_req` asks, or
    /// answers as a limit refuses; then, whether the connection goes on.
    async fn pre_access(
        &mut self,
        ctx: &mut RequestCtx,
        request: &ParsedHead,
        location: &LocationConf,
        keepalive: bool,
    ) -> Option<bool> {
        let verdict = ctx.limit_requests(location, self.exchange(request, None, 0), self.now);
        let refused = match verdict {
            Verdict::Pass => None,
            Verdict::Refuse(status) => Some(status),
            Verdict::Wait(delay) => {
                let open = self.wait_unless_closed(delay).await;
                self.now = Instant::now();
                if !open {
                    // ngx_http_test_reading: "client prematurely closed connection" while
                    // the request waited; logged as 499, and nothing goes upstream.
                    ctx.log_exchange(self.exchange(request, None, 0), 499, self.now);
                    return Some(false);
                }
                None
            }
        };
        let status =
            refused.or_else(|| ctx.limit_connections(location, self.exchange(request, None, 0)))?;
        Some(self.answer(ctx, request, location, status, keepalive).await)
    }

    /// Waits `delay` (limit_req's), watching the client meanwhile as nginx does: false if it
    /// closes its connection. What it sends meanwhile (a pipelined request) is kept.
    async fn wait_unless_closed(&mut self, delay: Duration) -> bool {
        let mut sleep = pin!(tokio::time::sleep(delay));
        loop {
            if self.buf.len() >= MAX_REQUEST_HEAD {
                // Enough is waiting to be read next: the close would be seen then.
                sleep.await;
                return true;
            }
            tokio::select! {
                () = &mut sleep => return true,
                read = self.client.read_buf(&mut self.buf) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        return false;
                    }
                }
            }
        }
    }

    /// Answers with the status nginx finalizes with when no server could answer (502, 504, or
    /// the listed status of the last try) and logs the request.
    async fn give_up(
        &mut self,
        ctx: &mut RequestCtx,
        request: &ParsedHead,
        location: &LocationConf,
        keepalive: bool,
    ) -> bool {
        ctx.upstream.end_try(self.now);
        let status = ctx.give_up_status;
        self.answer(ctx, request, location, status, keepalive).await
    }

    /// Answers with nginx's page for `status` and logs the request.
    async fn answer(
        &mut self,
        ctx: &mut RequestCtx,
        request: &ParsedHead,
        location: &LocationConf,
        status: u16,
        keepalive: bool,
    ) -> bool {
        if status == respond::CLOSE {
            // nginx closes with no response at all, and logs 444.
            let mut exchange = self.exchange(request, None, 0);
            exchange.status = status;
            ctx.log_exchange(exchange, status, self.now);
            return false;
        }
        let head_only = request.method() == "HEAD";
        // A page read from a file (`error_page 502 /50x.html`), as Pingora's path sends it.
        let mut file = None;
        let mut status = status;
        if let (Some(_), Some(server)) = (&location.error_pages, ctx.server.clone()) {
            let vars = ctx.vars_of(self.exchange(request, None, 0), ctx.proxy());
            let page = super::error_pages::fast_page_file(location, &server, status, &vars);
            if let Some((path, content_type)) = page {
                match super::files::read_whole(&path) {
                    Ok((bytes, found)) => file = Some((bytes, content_type, found.etag())),
                    // nginx's page for the failed look-up (the error page is not used twice).
                    Err(failed) => status = failed,
                }
            }
        }
        let added = match location.add_header.is_empty() && location.expires.is_none() {
            true => Vec::new(),
            false => {
                let content_type = respond::error_page(status).map(|_| "text/html");
                let page = super::own_response(location, status, content_type);
                let vars = ctx.vars_of(self.exchange(request, page.as_ref(), 0), ctx.proxy());
                super::headers_filter(location, status, &vars, ctx.date())
            }
        };
        let mut added = added;
        // What the access phase set for a refusal (a 401's challenges) goes first.
        if !ctx.errors.carried.is_empty() {
            added.splice(0..0, ctx.errors.carried.iter().cloned());
        }
        self.out = match &file {
            Some((bytes, content_type, etag)) => {
                added.insert(0, ("ETag".to_string(), etag.clone().into_bytes()));
                let body = Some((bytes.as_slice(), content_type.as_str()));
                respond::page_with(status, keepalive, head_only, &added, body, ctx.date())
            }
            None => {
                let charset = location.charset.as_deref();
                respond::page(status, keepalive, head_only, &added, charset, ctx.date())
            }
        };
        let ok = self.send_out(location.client.send_timeout).await;
        let mut sent = ResponseHeader::build(status, Some(added.len())).ok();
        if let Some(sent) = sent.as_mut() {
            for (name, value) in added {
                let _ = sent.append_header(name, value);
            }
        }
        let body = match &file {
            Some((bytes, ..)) => bytes.len() as u64,
            None => respond::error_page(status).map_or(0, |p| p.len() as u64),
        };
        let mut exchange = self.exchange(request, sent.as_ref(), if head_only { 0 } else { body });
        exchange.status = status;
        ctx.log_exchange(exchange, if ok { 0 } else { 499 }, self.now);
        ok && keepalive
    }

    /// Sends what `out` holds to the client within `limit`, and empties it. False when the
    /// client is gone or too slow.
    async fn send_out(&mut self, limit: Duration) -> bool {
        let client = &mut self.client;
        let out = &self.out;
        let sent = self
            .client_deadline
            .within(&mut self.now, limit, async {
                client.write_all(out).await?;
                client.flush().await
            })
            .await;
        self.out.clear();
        matches!(sent, Some(Ok(())))
    }

    fn exchange<'a>(
        &self,
        request: &'a ParsedHead,
        response: Option<&'a ResponseHeader>,
        body_bytes_sent: u64,
    ) -> Exchange<'a> {
        Exchange {
            request: request.into(),
            client: self.client_inet,
            local: self.local_inet,
            response,
            status: response.map_or(0, |r| r.status.as_u16()),
            body_bytes_sent,
        }
    }
}

/// The server's response head as it came (`$upstream_http_*`: hidden headers too, before
/// `proxy_redirect`), from the headers found in `buf`.
fn received_header(
    status: u16,
    headers: &[ResponseHeaderAt],
    buf: &[u8],
) -> Option<ResponseHeader> {
    let mut response = ResponseHeader::build(status, Some(headers.len())).ok()?;
    for (name, value, _) in headers {
        let name = bytes::Bytes::copy_from_slice(&buf[name.clone()]);
        let _ = response.append_header(name, &buf[value.clone()]);
    }
    Some(response)
}

/// Writes a response header's line to `out`, and adds it to `sent` when the response is kept
/// whole (see `logs_read_response`).
fn put_header<N>(out: &mut Vec<u8>, sent: &mut Option<ResponseHeader>, name: N, value: &[u8])
where
    N: AsRef<str> + pingora::http::IntoCaseHeaderName,
{
    out.extend_from_slice(name.as_ref().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    if let Some(sent) = sent.as_mut() {
        let _ = sent.append_header(name, value);
    }
}

/// `expires` on the head written in `out`: the upstream's first `Expires` and first
/// `Cache-Control` lines get the new values where they are (its other `Cache-Control` lines go),
/// as nginx's headers filter sets them; a header the upstream did not send is added at the end.
fn set_expires(
    out: &mut Vec<u8>,
    (expires_lines, cache_control_lines): (&[Range<usize>], &[Range<usize>]),
    (expires, cache_control): (&str, &str),
) {
    let expires = format!("Expires: {expires}\r\n").into_bytes();
    let cache_control = format!("Cache-Control: {cache_control}\r\n").into_bytes();
    let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    let mut appended = Vec::new();
    match expires_lines.first() {
        Some(line) => edits.push((line.clone(), expires)),
        None => appended.extend_from_slice(&expires),
    }
    match cache_control_lines.split_first() {
        Some((first, others)) => {
            edits.push((first.clone(), cache_control));
            edits.extend(others.iter().map(|line| (line.clone(), Vec::new())));
        }
        None => appended.extend_from_slice(&cache_control),
    }
    // From the last line to the first, so that each range still points where it did.
    edits.sort_by_key(|(line, _)| std::cmp::Reverse(line.start));
    for (line, text) in edits {
        out.splice(line, text);
    }
    out.extend_from_slice(&appended);
}

/// Whether the request's access log lines may read the response's headers
/// (`$sent_http_*`, `$upstream_http_*`): the response sent is then kept whole for them.
/// nginx's `combined` reads none, and building the copy cost more than the line itself.
fn logs_read_response(ctx: &RequestCtx) -> bool {
    match &ctx.location {
        Some(l) => l.access_log.iter().any(|t| t.reads_response),
        None => true,
    }
}

/// The location's proxying, when this path can do all it asks for.
fn suits<'l>(location: &'l LocationConf, server: Option<&ServerConf>) -> Option<&'l ProxyConf> {
    let proxy = location.proxy.as_ref()?;
    // Error pages that matter and `internal` need Pingora's path.
    let pages_allow = server.is_some_and(|s| super::error_pages::fast_path_may_serve(location, s));
    // auth_basic is Pingora's; auth_request this path makes itself (see `plan_auth`).
    let simple = location.auth.as_ref().is_none_or(|a| a.basic.is_none())
        && !location.internal
        && pages_allow
        && proxies_plainly(location);
    simple.then_some(proxy)
}

/// Whether the location's `proxy_pass` is one this path makes: over plain HTTP to addresses
/// (no Unix socket), without stickiness, and no try_files before it.
fn proxies_plainly(location: &LocationConf) -> bool {
    location.proxy.as_ref().is_some_and(|proxy| {
        location.try_files.is_none()
            && proxy.scheme == Scheme::Http
            && proxy.pool.sticky.is_none()
            && proxy
                .pool
                .balancer
                .peers()
                .iter()
                .all(|p| matches!(p.addr, PeerAddr::Inet(_)))
    })
}

/// The length of the body of an HTTP/1.0 or 1.1 request this path takes: none, or one
/// `Content-Length` of at most [`MAX_BODY`], and no protocol change. `None` for the others.
fn body_length(request: &ParsedHead) -> Option<usize> {
    let facts = &request.facts;
    if facts.framing_or_upgrade || request.method() == "CONNECT" {
        return None;
    }
    let Some(digits) = request.value(facts.content_length) else {
        return Some(0);
    };
    if facts.content_lengths > 1
        || digits.is_empty()
        || digits.len() > 6
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let length = digits
        .iter()
        .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    (length <= MAX_BODY).then_some(length)
}

/// Whether the client asks to keep its connection: HTTP/1.1 unless `Connection: close`,
/// HTTP/1.0 only with `Connection: keep-alive` (ngx_http_process_connection).
fn client_keepalive(request: &ParsedHead) -> bool {
    let connection = request.value(request.facts.connection);
    if request.version() == http::Version::HTTP_11 {
        !connection.is_some_and(|v| contains_token(v, b"close"))
    } else {
        connection.is_some_and(|v| contains_token(v, b"keep-alive"))
    }
}

/// Whether a header value contains `token`, case-insensitively (as nginx's strcasestrn).
fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .windows(token.len())
        .any(|w| w.eq_ignore_ascii_case(token))
}

/// A response head, if the buffer holds a whole one; an error for one that is not HTTP.
/// Its headers' name and value ranges go to `ranges`.
fn parse_response(
    buf: &[u8],
    ranges: &mut Vec<ResponseHeaderAt>,
) -> Result<Option<ResponseHead>, ()> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parsing = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut headers,
    );
    let len = match parsing {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let base = buf.as_ptr() as usize;
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let reason = parsed.reason.map_or(0..0, |r| range(r.as_bytes()));
    ranges.clear();
    ranges.extend(parsed.headers.iter().map(|h| {
        let name = h.name.as_bytes();
        (range(name), range(h.value), known(name))
    }));
    Ok(Some(ResponseHead {
        status: parsed.code.ok_or(())?,
        version: parsed.version.ok_or(())?,
        reason,
        len,
    }))
}

/// Which of [`KNOWN`] a response header is, if one: told by its length first, as most names
/// have none of those lengths.
fn known(name: &[u8]) -> Option<u8> {
    let candidates: &[usize] = match name.len() {
        4 => &[DATE],
        6 => &[SERVER],
        7 => &[REFRESH],
        8 => &[LOCATION],
        10 => &[CONNECTION, KEEP_ALIVE],
        12 => &[CONTENT_TYPE],
        14 => &[CONTENT_LENGTH],
        17 => &[TRANSFER_ENCODING],
        _ => return None,
    };
    candidates
        .iter()
        .find(|&&k| token_is(name, KNOWN[k]))
        .map(|&k| k as u8)
}

/// Whether a header name (an HTTP token, as httparse accepts them) is `lower`, a name of
/// lowercase letters and dashes, in any case. Setting bit 0x20 lowercases a letter and leaves
/// `-`; the only other byte it would turn into a letter or `-` is CR, which no token holds.
fn token_is(name: &[u8], lower: &str) -> bool {
    name.len() == lower.len()
        && name
            .iter()
            .zip(lower.as_bytes())
            .all(|(n, l)| n | 0x20 == *l)
}

/// Body bytes to the client, as a chunk when the response is re-chunked.
fn push_body(out: &mut Vec<u8>, data: &[u8], rechunk: bool) {
    if data.is_empty() {
        return;
    }
    if rechunk {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// A response body's filters on this path, and what zlib said if it failed.
struct Filtering {
    filters: BodyFilters,
    failure: Option<FilterFailed>,
}

impl Filtering {
    fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// `data` through the filters into `out` (as a chunk when re-chunked); false if zlib
    /// failed.
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>, rechunk: bool) -> bool {
        if self.filters.is_empty() {
            push_body(out, data, rechunk);
            return true;
        }
        match self.filters.push(data) {
            Ok(filtered) => push_body(out, &filtered, rechunk),
            Err(failure) => self.failure = Some(failure),
        }
        self.failure.is_none()
    }

    /// The end of the body into `out`: what the filters held back, and gzip's trailer. False
    /// if zlib failed.
    fn finish(&mut self, out: &mut Vec<u8>, rechunk: bool) -> bool {
        if self.filters.is_empty() {
            return true;
        }
        match self.filters.finish() {
            Ok(rest) => push_body(out, &rest, rechunk),
            Err(failure) => self.failure = Some(failure),
        }
        self.failure.is_none()
    }
}

/// The time limit of one wait after another on a connection (nginx's read and send timeouts
/// count from each read or write), on one timer kept for the connection's life.
///
/// A `tokio::time::timeout` per read inserts a timer in the runtime's wheel and removes it
/// again, about once per request for each side; moving a timer that is already registered to a
/// later deadline only stores the new deadline (tokio re-files it when the old one comes), and
/// the deadlines of successive waits on one side mostly only move later. A wait that finishes
/// at its first poll (most writes do) arms nothing.
struct Deadline(Pin<Box<tokio::time::Sleep>>);

impl Deadline {
    fn new() -> Deadline {
        // Never polled before its first `reset`: the deadline here does not matter.
        Deadline(Box::pin(tokio::time::sleep(Duration::ZERO)))
    }

    /// Runs `io` within `limit` from `now`; `None` when it took longer. `now` is the
    /// connection's clock (see [`Connection::now`]), read again when `io` had to wait.
    async fn within<T>(
        &mut self,
        now: &mut Instant,
        limit: Duration,
        io: impl Future<Output = T>,
    ) -> Option<T> {
        let mut io = pin!(io);
        if let Poll::Ready(done) = futures::poll!(io.as_mut()) {
            return Some(done);
        }
        let deadline = *now + limit;
        // As nginx's ngx_event_add_timer: a timer within NGX_TIMER_LAZY_DELAY (300 ms) of the
        // new deadline is kept as it is, which spares most re-arms between the waits of one
        // connection; one that has passed is always re-armed.
        let armed = self.0.deadline().into_std();
        let close = if armed > deadline {
            armed - deadline < TIMER_LAZY_DELAY
        } else {
            deadline - armed < TIMER_LAZY_DELAY
        };
        if !close || armed <= *now {
            self.0
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
        }
        let done = tokio::select! {
            biased;
            done = io => Some(done),
            () = self.0.as_mut() => None,
        };
        *now = Instant::now();
        done
    }
}

impl<S: AsyncRead + AsyncWrite + SendFile + Unpin + Send> Connection<S> {
    /// A connection to the server `peer` at `addr` for the request: an idle one from the
    /// pool, else a new one. The error is true when the connect timed out.
    async fn upstream_to(
        &mut self,
        ctx: &RequestCtx,
        request: &ParsedHead,
        proxy: &ProxyConf,
        (peer, addr): (PeerId, SocketAddr),
    ) -> Result<Upstream, bool> {
        let pool = &proxy.pool;
        if let Some(idle) = pool.idle.take(peer, pool.keepalive_timeout, self.now) {
            return Ok(idle);
        }
        let stream = self
            .connect(ctx, request, addr, proxy.connect_timeout)
            .await?;
        Ok(Upstream {
            stream,
            requests: 0,
            reused: false,
        })
    }

    /// Opens a connection to `addr` for the request; logs a failure as nginx does. The error
    /// is true when the connect timed out.
    async fn connect(
        &mut self,
        ctx: &RequestCtx,
        request: &ParsedHead,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<TcpStream, bool> {
        // A connection opened takes a number, as nginx's ngx_event_connect_peer gives it one.
        crate::proxy::connection_tag::next_number();
        let connected = tokio::time::timeout(timeout, TcpStream::connect(addr)).await;
        self.now = Instant::now();
        let x = self.exchange(request, None, 0);
        match connected {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => {
                ctx.log_error(
                    x,
                    Some(&addr),
                    LogLevel::Error,
                    format_args!(
                        "connect() failed ({}) while connecting to upstream",
                        os_error(&e)
                    ),
                );
                Err(false)
            }
            Err(_) => {
                ctx.log_error(
                    x,
                    Some(&addr),
                    LogLevel::Error,
                    format_args!(
                        "upstream timed out (110: Connection timed out) while connecting to \
                         upstream"
                    ),
                );
                Err(true)
            }
        }
    }
}

/// A chunked body decoder (RFC 9112 7.1): data out, framing and trailers dropped.
#[derive(Default)]
struct ChunkDecoder {
    state: ChunkState,
}

#[derive(Default, Clone, Copy)]
enum ChunkState {
    /// Reading a chunk-size line (with its extensions) up to LF.
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailer,
    Done,
}

impl ChunkDecoder {
    /// Decodes what `input` holds: returns the bytes used and whether the body ended. A line
    /// not yet complete is left unused until more arrives.
    fn decode(&mut self, input: &[u8], data: &mut Vec<u8>) -> Result<(usize, bool), ()> {
        let mut at = 0;
        loop {
            match self.state {
                ChunkState::Done => return Ok((at, true)),
                ChunkState::Size => {
                    let Some(lf) = input[at..].iter().position(|&b| b == b'\n') else {
                        if input.len() - at > 1024 {
                            return Err(());
                        }
                        return Ok((at, false));
                    };
                    let line = &input[at..at + lf];
                    let digits: &[u8] = line
                        .split(|&b| b == b';' || b == b'\r' || b == b' ' || b == b'\t')
                        .next()
                        .unwrap_or(&[]);
                    if digits.is_empty() || digits.len() > 15 {
                        return Err(());
                    }
                    let size =
                        u64::from_str_radix(std::str::from_utf8(digits).map_err(|_| ())?, 16)
                            .map_err(|_| ())?;
                    at += lf + 1;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    let available = (input.len() - at) as u64;
                    if available == 0 {
                        return Ok((at, false));
                    }
                    let take = left.min(available) as usize;
                    data.extend_from_slice(&input[at..at + take]);
                    at += take;
                    self.state = if left == take as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take as u64)
                    };
                }
                ChunkState::DataEnd => {
                    let Some(lf) = input[at..].iter().position(|&b| b == b'\n') else {
                        return Ok((at, false));
                    };
                    if input[at..at + lf].iter().any(|&b| b != b'\r') {
                        return Err(());
                    }
                    at += lf + 1;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(lf) = input[at..].iter().position(|&b| b == b'\n') else {
                        return Ok((at, false));
                    };
                    let empty = input[at..at + lf].iter().all(|&b| b == b'\r');
                    at += lf + 1;
                    self.state = if empty {
                        ChunkState::Done
                    } else {
                        ChunkState::Trailer
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(parts: &[&[u8]]) -> Result<(Vec<u8>, bool), ()> {
        let mut decoder = ChunkDecoder::default();
        let mut pending = Vec::new();
        let mut data = Vec::new();
        let mut done = false;
        for part in parts {
            pending.extend_from_slice(part);
            let (used, end) = decoder.decode(&pending, &mut data)?;
            pending.drain(..used);
            done = end;
        }
        Ok((data, done))
    }

    #[test]
    fn chunks_decode_across_any_split() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for split in 0..body.len() {
            let (data, done) = decode_all(&[&body[..split], &body[split..]]).unwrap();
            assert_eq!(data, b"hello, world", "split at {split}");
            assert!(done, "split at {split}");
        }
        for split in 0..body.len() - 1 {
            let (_, done) = decode_all(&[&body[..split]]).unwrap();
            assert!(!done, "ended early with {split} bytes");
        }
    }

    #[test]
    fn bad_chunk_framing_is_an_error() {
        assert!(decode_all(&[b"zz\r\n"]).is_err());
        assert!(decode_all(&[b"2\r\nabX\r\n"]).is_err());
        assert!(decode_all(&[b"\r\n"]).is_err());
    }

    /// The fast path's own parse of a request head.
    fn head(text: &str) -> ParsedHead {
        let mut head = ParsedHead::default();
        assert!(matches!(head.parse(text.as_bytes()), Parsed::Complete(_)));
        head
    }

    #[test]
    fn expires_replaces_the_upstream_s_lines_in_place() {
        let head = "HTTP/1.1 200 OK\r\nCache-Control: private\r\nX-A: 1\r\nExpires: 0\r\n\
                    Cache-Control: no-store\r\n";
        let line = |text: &str| {
            let start = head.find(text).unwrap();
            start..start + text.len()
        };
        let mut out = head.as_bytes().to_vec();
        let expires = [line("Expires: 0\r\n")];
        let cache_control = [
            line("Cache-Control: private\r\n"),
            line("Cache-Control: no-store\r\n"),
        ];
        set_expires(&mut out, (&expires, &cache_control), ("E", "max-age=60"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nX-A: 1\r\nExpires: E\r\n"
        );
        let mut out = b"HTTP/1.1 200 OK\r\nX-A: 1\r\n".to_vec();
        set_expires(&mut out, (&[], &[]), ("E", "no-cache"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nX-A: 1\r\nExpires: E\r\nCache-Control: no-cache\r\n"
        );
    }

    #[test]
    fn every_header_treated_apart_is_known_by_any_case() {
        for (k, name) in KNOWN.iter().enumerate() {
            assert_eq!(known(name.as_bytes()), Some(k as u8), "{name}");
            assert_eq!(known(name.to_uppercase().as_bytes()), Some(k as u8));
        }
        for other in [
            "x-date",
            "servers",
            "etag",
            "content-encoding",
            "connectiox",
        ] {
            assert_eq!(known(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn keepalive_follows_the_version_and_connection_header() {
        let keepalive = |version: &str, connection: Option<&str>| {
            let connection = connection.map_or(String::new(), |c| format!("Connection: {c}\r\n"));
            client_keepalive(&head(&format!("GET / {version}\r\n{connection}\r\n")))
        };
        assert!(keepalive("HTTP/1.1", None));
        assert!(!keepalive("HTTP/1.1", Some("Close")));
        assert!(!keepalive("HTTP/1.0", None));
        assert!(keepalive("HTTP/1.0", Some("Keep-Alive")));
    }

    #[test]
    fn requests_without_a_body_or_with_a_short_length_delimited_one_are_taken() {
        let with = |method: &str, headers: &[(&str, &str)]| {
            let mut text = format!("{method} / HTTP/1.1\r\n");
            for (name, value) in headers {
                text.push_str(&format!("{name}: {value}\r\n"));
            }
            text.push_str("\r\n");
            body_length(&head(&text))
        };
        assert_eq!(with("GET", &[]), Some(0));
        assert_eq!(with("GET", &[("Content-Length", "0")]), Some(0));
        assert_eq!(with("POST", &[("Content-Length", "3")]), Some(3));
        assert_eq!(with("POST", &[("content-length", "16384")]), Some(MAX_BODY));
        // Longer, chunked, doubled, not a number, waiting for 100 Continue, upgrading or
        // tunnelling: Pingora's.
        assert_eq!(with("POST", &[("Content-Length", "16385")]), None);
        assert_eq!(with("POST", &[("Transfer-Encoding", "chunked")]), None);
        assert_eq!(
            with("POST", &[("Content-Length", "3"), ("Content-Length", "3")]),
            None
        );
        assert_eq!(with("POST", &[("Content-Length", "+3")]), None);
        assert_eq!(with("POST", &[("Content-Length", "")]), None);
        assert_eq!(
            with(
                "PUT",
                &[("Content-Length", "2"), ("Expect", "100-continue")]
            ),
            None
        );
        assert_eq!(with("GET", &[("Upgrade", "websocket")]), None);
        assert_eq!(with("CONNECT", &[]), None);
    }
}

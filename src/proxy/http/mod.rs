//! The HTTP data plane: Pingora's `ProxyHttp` phases doing what nginx's do.
//!
//! - `request_filter`: pick the server and location, answer `return`s, redirects and 4xx;
//! - `upstream_peer`: ask the pool's balancer for a server;
//! - `upstream_request_filter`: build the request nginx would send;
//! - `upstream_response_filter`: retry on the statuses `proxy_next_upstream` names, hide headers;
//! - `fail_to_connect` / `error_while_proxy`: decide retries as `ngx_http_upstream_next` does;
//! - `fail_to_proxy`: answer 502/504 as nginx does when it runs out of tries;
//! - `connected_to_upstream`: note the connection, so a drain timeout can cut it;
//! - `response_filter`: add the sticky-session cookie;
//! - `logging`: give the server back to the balancer.
//!
//! Plain HTTP/1.x requests without a body take a shorter road to the same decisions:
//! [`fast`].

mod auth_request;
mod error_pages;
mod fast;
mod files;

pub use fast::{serve as serve_fast, Served};

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpUpstreamRequestPolicy;
use pingora::ErrorType;

use super::access_phase::{Access, AccessPhase, Said};
use super::auth_basic;
use super::balance::{Attempt, Outcome, PeerAddr, PeerId, SelectKey};
use super::body_filters::{BodyFilters, FilterFailed, FILTER_FAILED};
use super::charset::CharsetConf;
use super::client_cert::{self, ClientCertificate};
use super::client_request::ClientRequest;
use super::error_context::{InRequest, UpstreamAt};
use super::gunzip;
use super::gzip;
use super::limits::{Held, LimitStatus, Verdict};
use super::locations::Found;
use super::proxy_protocol::ProxyInfo;
use super::recode::Recoder;
use super::redirect;
use super::respond;
use super::runtime::{
    AddrConf, HeaderRule, LocationConf, ProxyConf, ReturnConf, Runtime, ServerConf,
};
use super::script::{self, ConditionOp, Op, RewriteOp, SetTarget};
use super::server_names::validate_host_into;
use super::sticky::Affinity;
use super::sub_filter;
use super::tls::Handshaken;
use super::upstream_request::{self, Matched};
use super::uri::{normalize_into, NormalizedUri};
use super::vars::{eval_to_vec, CachedVars, RequestVars, UpstreamVars};
use crate::config::template::Template;
use crate::config::{HttpVersion, LogLevel, NextUpstream, Return, Satisfy, Scheme};

/// The proxy service: reads the current [`Runtime`] at the start of every request.
pub struct HttpProxy {
    pub runtime: Arc<ArcSwap<Runtime>>,
}

/// One request's state across the phases.
pub struct RequestCtx {
    runtime: Arc<Runtime>,
    server: Option<Arc<ServerConf>>,
    location: Option<Arc<LocationConf>>,
    uri: NormalizedUri,
    captures: Vec<Option<std::ops::Range<usize>>>,
    prefix_len: Option<usize>,
    host: Option<String>,
    tls: bool,
    attempt: Option<Attempt>,
    hash_key: Vec<u8>,
    /// When the first upstream was chosen, for `proxy_next_upstream_timeout`.
    started: Option<Instant>,
    /// Set when the current peer has already been given back (a retry decided in a filter).
    peer_released: bool,
    /// The status nginx would finalize with when tries run out (502, or 504 after a timeout).
    give_up_status: u16,
    upstream: UpstreamVars,
    /// `$request_id`, made only when something asks for it.
    request_id: std::sync::OnceLock<String>,
    /// `$invalid_referer` and `$secure_link`, once asked for (nginx keeps their first values
    /// for the request).
    cached: CachedVars,
    /// The time the response's `Date` and `Expires` are written from, read once so that the
    /// two agree (nginx reads both from its time cached for the event).
    date: std::sync::OnceLock<SystemTime>,
    /// The filters the response body goes through: gunzip, `sub_filter`, gzip (boxed: most
    /// responses go through none).
    body_filters: Option<Box<BodyFilters>>,
    /// What the request's sticky cookie says, when the pool has stickiness.
    affinity: Option<Affinity>,
    /// Names the request among its pool's connections in flight (draining).
    token: u64,
    /// A pooled connection was refused for having carried `keepalive_requests`: the next
    /// `upstream_peer` asks again for the same server, without a new selection.
    same_peer_again: bool,
    /// The length of a chunked request body read ahead of the upstream request, so that it is
    /// sent with a Content-Length as nginx sends it.
    buffered_body: Option<u64>,
    /// What the connection's TLS handshake and PROXY header said.
    conn: ConnectionInfo,
    /// The client address realip took from a trusted proxy, in place of the connecting one.
    real_client: Option<std::net::SocketAddr>,
    /// What the rewrite module did, when a script ran (boxed: most requests have none).
    rewrite: Option<Box<Rewritten>>,
    /// Where a `proxy_pass` with variables sent this request (boxed: most have none).
    dynamic: Option<Box<super::dynamic_pass::Target>>,
    /// try_files found a file in a regex location with `alias`: the file is the alias
    /// followed by the URI (nginx's `add_uri_to_alias`).
    uri_after_alias: bool,
    /// What `limit_req` and `limit_conn` decided.
    limits: LimitStatus,
    /// The request's places in `limit_conn` zones, given back when the request ends.
    held: Held,
    /// When the request began, for `$request_time`.
    begun: Instant,
    /// What the previous request on the connection left, for `route` to take over.
    previous: Previous,
    /// Where `error_page` has taken the request, and what it set.
    errors: error_pages::ErrorPageState,
    /// This is `auth_request`'s subrequest: it sends no body, but the client's
    /// `Content-Length`, as nginx does.
    subrequest: bool,
    /// What went wrong while routing (a rewrite cycle, an empty rewritten URI), logged when
    /// the refusal is answered: the fast path routes a request again in Pingora's session,
    /// so logging it at once would write it twice.
    route_error: Option<String>,
    _in_flight: super::metrics::InFlight,
}

/// Per-connection facts a request's variables read: `$ssl_*` and `$proxy_protocol_*`.
#[derive(Clone, Default)]
struct ConnectionInfo {
    /// `$connection`.
    number: u64,
    /// `$connection_requests`: this request's number on the connection, from 1.
    requests: u64,
    ssl_protocol: Option<String>,
    ssl_cipher: Option<String>,
    ssl_server_name: Option<String>,
    /// What the handshake got when the server asked for a client certificate.
    client_certificate: Option<Arc<ClientCertificate>>,
    proxy_protocol: Option<ProxyInfo>,
    /// Bytes Pingora had written to the connection when the request began.
    written_before: u64,
}

impl ConnectionInfo {
    fn of(session: &Session) -> ConnectionInfo {
        let Some(digest) = session.digest() else {
            return ConnectionInfo::default();
        };
        let tag = super::connection_tag::of(digest.proxy_digest.as_ref());
        ConnectionInfo {
            number: tag.map_or(0, |t| t.number),
            requests: tag.map_or(1, |t| t.next_request()),
            proxy_protocol: tag.and_then(|t| t.proxy),
            written_before: tag.map_or(0, |t| t.written()),
            ..ConnectionInfo::of_tls(digest.ssl_digest.as_deref())
        }
    }

    /// What a TLS handshake said (nothing, for a cleartext connection).
    fn of_tls(ssl: Option<&pingora::protocols::tls::SslDigest>) -> ConnectionInfo {
        let handshaken = ssl.and_then(|d| d.extension.get::<Handshaken>());
        ConnectionInfo {
            ssl_protocol: ssl.map(|d| d.version.to_string()),
            ssl_cipher: ssl.map(|d| d.cipher.to_string()),
            ssl_server_name: handshaken.and_then(|h| h.server_name.clone()),
            client_certificate: handshaken.and_then(|h| h.client_certificate.clone()),
            ..ConnectionInfo::default()
        }
    }
}

/// Whether Pingora writes `response`'s body in chunks: its last transfer coding is `chunked`.
fn is_chunked(response: &ResponseHeader) -> bool {
    response
        .headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The length of `response`'s head as Pingora writes it: the status line, each header as
/// `Name: value` and a line, and the empty line.
fn head_length(response: &ResponseHeader) -> u64 {
    let reason = response.get_reason_phrase().map_or(0, str::len);
    let headers: usize = response
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    ("HTTP/1.1 200 ".len() + reason + 2 + headers + 2) as u64
}

/// Distinguishes connections that must not be reused: a pool without `keepalive` gives each
/// request its own connection key, so nothing it opens is ever picked up again.
static NEXT_PRIVATE_GROUP: AtomicU64 = AtomicU64::new(1 << 63);

/// Request tokens are handed to each thread in blocks, so that taking one is not an atomic
/// operation on a counter every worker thread shares.
static NEXT_TOKEN_BLOCK: AtomicU64 = AtomicU64::new(1);
const TOKEN_BLOCK: u64 = 1 << 16;

/// A token no other request of the process has.
fn next_request_token() -> u64 {
    thread_local! {
        static NEXT: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
    }
    NEXT.with(|next| {
        let (mut token, end) = next.get();
        let end = if token == end {
            token = NEXT_TOKEN_BLOCK.fetch_add(TOKEN_BLOCK, Ordering::Relaxed);
            token + TOKEN_BLOCK
        } else {
            end
        };
        next.set((token + 1, end));
        token
    })
}

impl HttpProxy {
    pub fn new(runtime: Arc<ArcSwap<Runtime>>) -> Self {
        HttpProxy { runtime }
    }

    /// A request's context; the request began at `begun`.
    fn ctx_begun(&self, begun: Instant) -> RequestCtx {
        self.ctx_after(Previous::default(), begun)
    }

    /// The context of a request that follows another on its connection, taking over what that
    /// one left ([`RequestCtx::into_previous`]).
    fn ctx_after(&self, mut previous: Previous, begun: Instant) -> RequestCtx {
        let current = self.runtime.load();
        let runtime = match previous.runtime.take() {
            Some(same) if Arc::ptr_eq(&same, &current) => same,
            _ => arc_swap::Guard::into_inner(current),
        };
        RequestCtx::new(runtime, previous, begun)
    }
}

impl RequestCtx {
    /// A request's context on `runtime`, with what the connection's last request left.
    fn new(runtime: Arc<Runtime>, previous: Previous, begun: Instant) -> RequestCtx {
        RequestCtx {
            runtime,
            server: None,
            location: None,
            uri: NormalizedUri::default(),
            captures: Vec::new(),
            prefix_len: None,
            host: None,
            tls: false,
            attempt: None,
            hash_key: Vec::new(),
            started: None,
            peer_released: false,
            give_up_status: 502,
            upstream: UpstreamVars::default(),
            request_id: std::sync::OnceLock::new(),
            cached: CachedVars::new(),
            date: std::sync::OnceLock::new(),
            body_filters: None,
            affinity: None,
            token: next_request_token(),
            same_peer_again: false,
            buffered_body: None,
            conn: ConnectionInfo::default(),
            real_client: None,
            rewrite: None,
            dynamic: None,
            uri_after_alias: false,
            limits: LimitStatus::default(),
            held: Held::default(),
            begun,
            previous,
            errors: error_pages::ErrorPageState::default(),
            subrequest: false,
            route_error: None,
            _in_flight: super::metrics::InFlight::enter(),
        }
    }

    /// The context of a subrequest to `uri` (ngx_http_subrequest): the same server, Host and
    /// connection, the request's variables, an internal GET with no arguments; its URI is
    /// sent escaped, as a rewritten one is.
    fn subrequest(&self, uri: &[u8]) -> RequestCtx {
        let rewrite = Rewritten {
            vars: self
                .rewrite
                .as_ref()
                .map(|r| r.vars.clone())
                .unwrap_or_default(),
            uri_rewritten: true,
            target_changed: true,
            ..Default::default()
        };
        RequestCtx {
            server: self.server.clone(),
            uri: NormalizedUri {
                path: uri.to_vec(),
                args: None,
                quoted: false,
            },
            host: self.host.clone(),
            tls: self.tls,
            request_id: self.request_id.clone(),
            cached: self.cached.clone(),
            conn: self.conn.clone(),
            real_client: self.real_client,
            rewrite: Some(Box::new(rewrite)),
            limits: self.limits,
            errors: error_pages::ErrorPageState {
                internal: true,
                as_get: true,
                ..Default::default()
            },
            subrequest: true,
            ..RequestCtx::new(self.runtime.clone(), Previous::default(), Instant::now())
        }
    }

    /// Takes back what a subrequest changed of what the two share: the variables `set` gave
    /// values, and `$request_id`, `$invalid_referer` and `$secure_link` if the subrequest made
    /// them.
    fn after_subrequest(&mut self, mut sub: RequestCtx) {
        if let Some(vars) = sub.rewrite.take().map(|r| r.vars) {
            if !vars.is_empty() {
                self.rewritten().vars = vars;
            }
        }
        if let Some(id) = sub.request_id.take() {
            let _ = self.request_id.set(id);
        }
        self.cached.take_from(&mut sub.cached);
        sub.release(Outcome::Success);
    }
}

/// What a request leaves to the next one on the same connection: its buffers, and the
/// runtime, server and location it used. The next request, most often served by the same
/// ones, takes them over without touching their reference counts, which every worker thread
/// shares.
#[derive(Default)]
pub(super) struct Previous {
    runtime: Option<Arc<Runtime>>,
    server: Option<Arc<ServerConf>>,
    location: Option<Arc<LocationConf>>,
    uri: Option<NormalizedUri>,
    host: String,
}

impl RequestCtx {
    /// What this request leaves to the next one on its connection.
    pub(super) fn into_previous(self) -> Previous {
        Previous {
            runtime: Some(self.runtime),
            server: self.server,
            location: self.location,
            uri: Some(self.uri),
            host: self.host.unwrap_or_default(),
        }
    }
}

fn local_addr(session: &Session) -> Option<std::net::SocketAddr> {
    session
        .server_addr()
        .and_then(PingoraAddr::as_inet)
        .copied()
}

fn client_addr(session: &Session) -> Option<std::net::SocketAddr> {
    session
        .client_addr()
        .and_then(PingoraAddr::as_inet)
        .copied()
}

/// The address configuration a connection arrived on: the specific address if one is
/// configured, else the wildcard of its port (or the unix socket path).
fn find_addr_conf<'r>(runtime: &'r Runtime, local: Option<&PingoraAddr>) -> Option<&'r AddrConf> {
    use crate::config::ListenAddress;
    let local = local?;
    if let Some(path) = local.as_unix().and_then(|u| u.as_pathname()) {
        return runtime
            .sockets
            .iter()
            .flat_map(|s| s.addrs.iter())
            .find(|a| matches!(&a.addr, ListenAddress::Unix(p) if p == path));
    }
    let local = *local.as_inet()?;
    let exact = runtime
        .sockets
        .iter()
        .flat_map(|s| s.addrs.iter())
        .find(|a| a.addr == ListenAddress::Tcp(local));
    exact.or_else(|| {
        runtime
            .sockets
            .iter()
            .flat_map(|s| s.addrs.iter())
            .find(|a| match &a.addr {
                ListenAddress::Tcp(addr) => {
                    addr.port() == local.port() && addr.ip().is_unspecified()
                }
                ListenAddress::Unix(_) => false,
            })
    })
}

/// Where nginx's phases up to the rewrite phase send a request.
enum Route {
    /// Answered at once with this status (no address configuration, a bad URI or Host, a
    /// rewrite cycle).
    Reject(u16),
    /// A `return` of the server's or the location's script (`ctx.location` is set for a
    /// location's).
    Return(Arc<ReturnConf>),
    /// A `rewrite` that redirects: the status and the `Location`.
    Redirect(u16, Vec<u8>),
    /// A prefix location matched but for its trailing slash: a 301 to it
    /// (`ctx.location` is set).
    AddSlash,
    /// A location serves it: `ctx.location`.
    Location,
}

/// The error of a try that an error page answered instead (`fail_to_proxy` then sends
/// nothing more).
const ANSWERED_BY_ERROR_PAGE: &str = "answered by error_page";

/// nginx's NGX_HTTP_MAX_URI_CHANGES: how many times a rewrite may send a request back to the
/// location search.
const MAX_URI_CHANGES: u32 = 10;

/// Picks the server and location for a request, as nginx does, filling `ctx` (`tls`, `uri`,
/// `host`, `server`, `location`, captures), and runs the server's and the location's rewrite
/// scripts on the way. Shared by Pingora's phases and the fast path.
fn route(ctx: &mut RequestCtx, local: Option<&PingoraAddr>, x: Exchange<'_>) -> Route {
    let request = x.request;
    // Fields of `ctx` are borrowed one by one below: the config is read from `ctx.runtime`
    // while the others are written.
    let Some(addr) = find_addr_conf(&ctx.runtime, local) else {
        return Route::Reject(500);
    };
    ctx.tls = addr.ssl;
    // Into the previous request's buffers.
    let mut uri = ctx.previous.uri.take().unwrap_or_default();
    if normalize_into(request.raw_path(), true, &mut uri).is_err() {
        return Route::Reject(400);
    }
    ctx.uri = uri;
    let host_header = request
        .target_host()
        .map(str::as_bytes)
        .or_else(|| request.header("host"));
    if let Some(raw) = host_header {
        let mut host = std::mem::take(&mut ctx.previous.host);
        if !validate_host_into(raw, &mut host) {
            return Route::Reject(400);
        }
        ctx.host = Some(host);
    }
    let server = &addr.servers[addr.names.find(ctx.host.as_deref())];
    ctx.server = Some(same_or_clone(&mut ctx.previous.server, server));
    if addr.ssl {
        // ngx_http_process_request: plain HTTP on an HTTPS port, then the client's certificate.
        if ctx.conn.ssl_protocol.is_none() {
            return Route::Reject(respond::TO_HTTPS);
        }
        if let Some(refusal) = ctx.client_certificate_refusal() {
            return Route::Reject(refusal.status);
        }
    }
    // What an earlier routing of this request (the fast path's, before it handed the
    // request over) left.
    ctx.location = None;
    ctx.rewrite = None;
    ctx.captures.clear();
    if server.scripted {
        // The scripts change `ctx` as they run, so the server is held apart from it (one
        // more reference, only for servers with scripts).
        let server = server.clone();
        return route_scripted(ctx, &server, x);
    }
    let routed = match server.locations.find(&ctx.uri.path) {
        Found::Location {
            value,
            captures,
            prefix_len,
        } => {
            ctx.captures = captures;
            ctx.prefix_len = prefix_len;
            ctx.location = Some(same_or_clone(&mut ctx.previous.location, value));
            Route::Location
        }
        Found::AddSlash(value) => {
            ctx.location = Some(value.clone());
            Route::AddSlash
        }
        Found::None => {
            ctx.location = Some(same_or_clone(&mut ctx.previous.location, &server.fallback));
            Route::Location
        }
    };
    // nginx's post-read phase (realip), once the server is known.
    ctx.real_ip_by_server(x.client, request);
    routed
}

/// [`route`] for a server with rewrite scripts (a `return` counts) or regex locations with
/// named groups: its script, then the location search, as many times as the locations'
/// scripts change the URI.
fn route_scripted(ctx: &mut RequestCtx, server: &ServerConf, x: Exchange<'_>) -> Route {
    // nginx's post-read phase (realip), then its server rewrite phase.
    ctx.real_ip_by_server(x.client, x.request);
    route_from_server_rewrite(ctx, server, x)
}

/// nginx's phases from the server rewrite phase on, where an internal redirect enters them:
/// the server's script, then the location search and the location's script.
fn route_from_server_rewrite(ctx: &mut RequestCtx, server: &ServerConf, x: Exchange<'_>) -> Route {
    if let Some(script) = &server.script {
        if let Ran::Answer(route) = ctx.run(&script.ops, x) {
            // nginx answers with the server's own settings (its add_header, access_log).
            ctx.location = Some(server.fallback.clone());
            return route;
        }
    }
    route_from_location(ctx, server, x, None)
}

/// The location search and the location's script, as many times as scripts change the URI;
/// `named`: the first location is this one (a named location's rewrite phase), not searched.
fn route_from_location(
    ctx: &mut RequestCtx,
    server: &ServerConf,
    x: Exchange<'_>,
    mut named: Option<Arc<LocationConf>>,
) -> Route {
    let mut changes = 0;
    loop {
        let location = match named.take() {
            Some(location) => location,
            None => match search_location(ctx, server) {
                Some(location) => same_or_clone(&mut ctx.previous.location, location),
                None => return Route::AddSlash,
            },
        };
        if !location.named_groups.is_empty() {
            let path = std::mem::take(&mut ctx.uri.path);
            let ranges = std::mem::take(&mut ctx.captures);
            ctx.set_named_groups(&location.named_groups, &path, &ranges);
            ctx.uri.path = path;
            ctx.captures = ranges;
        }
        ctx.location = Some(location.clone());
        let Some(script) = &location.script else {
            return Route::Location;
        };
        if let Some(rewrite) = ctx.rewrite.as_mut() {
            rewrite.uri_changed = false;
        }
        if let Ran::Answer(route) = ctx.run(&script.ops, x) {
            return route;
        }
        if !ctx.rewrite.as_ref().is_some_and(|r| r.uri_changed) {
            return Route::Location;
        }
        changes += 1;
        if changes > MAX_URI_CHANGES {
            ctx.route_error = Some(format!(
                "rewrite or internal redirection cycle while processing \"{}\"",
                String::from_utf8_lossy(&ctx.uri.path)
            ));
            return Route::Reject(500);
        }
    }
}

/// The location for `ctx.uri` in `server` (the fallback when none matches), its captures
/// and prefix put in `ctx`; `None` when a prefix matched but for its trailing slash
/// (`ctx.location` is then that location, for the 301).
fn search_location<'s>(
    ctx: &mut RequestCtx,
    server: &'s ServerConf,
) -> Option<&'s Arc<LocationConf>> {
    match server.locations.find(&ctx.uri.path) {
        Found::Location {
            value,
            captures,
            prefix_len,
        } => {
            // A regex location's captures replace a script's; a prefix leaves them.
            if !captures.is_empty() {
                ctx.captures = captures;
                if let Some(rewrite) = ctx.rewrite.as_mut() {
                    rewrite.captured = None;
                }
            }
            ctx.prefix_len = prefix_len;
            Some(value)
        }
        Found::AddSlash(value) => {
            ctx.location = Some(value.clone());
            None
        }
        Found::None => Some(&server.fallback),
    }
}

impl RequestCtx {
    /// nginx's pre-access phase, first part: the location's `limit_req`. Runs once per
    /// request (as nginx's `r->main->limit_req_status` guards it).
    fn limit_requests(
        &mut self,
        location: &LocationConf,
        x: Exchange<'_>,
        now: Instant,
    ) -> Verdict {
        let Some(limits) = location.limits.as_ref().filter(|l| l.has_requests()) else {
            return Verdict::Pass;
        };
        if self.limits.requests.is_some() {
            return Verdict::Pass;
        }
        let log = |level, message: std::fmt::Arguments<'_>| self.log_error(x, None, level, message);
        let (status, verdict) =
            limits.check_requests(|key| eval_to_vec(key, &self.vars_of(x, None)), now, &log);
        self.limits.requests = status;
        verdict
    }

    /// The second part, after any wait `limit_req` asked for: the location's `limit_conn`.
    /// The status to answer with when a zone is at its limit.
    fn limit_connections(&mut self, location: &LocationConf, x: Exchange<'_>) -> Option<u16> {
        let limits = location.limits.as_ref().filter(|l| l.has_connections())?;
        if self.limits.connections.is_some() {
            return None;
        }
        let mut held = std::mem::take(&mut self.held);
        let log = |level, message: std::fmt::Arguments<'_>| self.log_error(x, None, level, message);
        let (status, admitted) = limits.check_connections(
            |key| eval_to_vec(key, &self.vars_of(x, None)),
            &mut held,
            &log,
        );
        self.held = held;
        self.limits.connections = status;
        admitted.err()
    }
}

/// How a script, or an `if` block's part of it, ended.
enum Ran {
    /// It ran to its end: the next directive runs.
    End,
    /// `break`, or a `rewrite` with `last` or `break`: the script is over.
    Stop,
    /// A `return`, a redirect, or an error answers the request.
    Answer(Route),
}

/// What the rewrite module changed in a request, beyond its URI and captures.
#[derive(Default)]
struct Rewritten {
    /// `set` values, by variable.
    vars: Vec<(Arc<str>, Vec<u8>)>,
    /// The text the captures index when a script regex matched last (else the URI).
    captured: Option<Vec<u8>>,
    /// A rewrite changed the URI (nginx's `r->internal`): the upstream gets it escaped, not
    /// the client's.
    uri_rewritten: bool,
    /// A rewrite or `set $args` changed the target: the client's is not sent as it was.
    target_changed: bool,
    /// After `rewrite ... break` (or `break` after a change), nginx's `valid_location` is
    /// off: a `proxy_pass` URI part goes before the whole URI instead of replacing the
    /// location's prefix.
    location_invalid: bool,
    /// The URI changed without `break`: the locations are searched again.
    uri_changed: bool,
    /// A replacement had arguments: later captures are escaped as arguments (nginx's
    /// `e->is_args`, which lasts for the script).
    is_args: bool,
}

impl RequestCtx {
    /// The rewrite module's state, made on first use.
    fn rewritten(&mut self) -> &mut Rewritten {
        self.rewrite.get_or_insert_with(Default::default)
    }

    /// Gives a variable of the config's its value for this request.
    fn set_declared(&mut self, name: &Arc<str>, value: Vec<u8>) {
        let vars = &mut self.rewritten().vars;
        match vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => vars.push((name.clone(), value)),
        }
    }

    /// A regex matched `subject` with `ranges`: its named groups become variables, as
    /// nginx's ngx_http_regex_exec sets them (empty for a group that took no part).
    fn set_named_groups(
        &mut self,
        groups: &[(usize, Arc<str>)],
        subject: &[u8],
        ranges: &[Option<std::ops::Range<usize>>],
    ) {
        for (index, name) in groups {
            let value = ranges
                .get(*index)
                .cloned()
                .flatten()
                .and_then(|r| subject.get(r))
                .unwrap_or_default()
                .to_vec();
            self.set_declared(name, value);
        }
    }

    /// Runs a script's directives in order (ngx_http_rewrite_handler).
    fn run(&mut self, ops: &[Op], x: Exchange<'_>) -> Ran {
        for op in ops {
            match op {
                Op::Set { target, value } => {
                    let value = eval_to_vec(value, &self.vars_of(x, None));
                    match target {
                        SetTarget::Declared(name) => self.set_declared(name, value),
                        SetTarget::Args => {
                            self.uri.args = Some(value);
                            self.rewritten().target_changed = true;
                        }
                    }
                }
                Op::Return(ret) => return Ran::Answer(Route::Return(ret.clone())),
                Op::Break => {
                    if let Some(r) = self.rewrite.as_mut().filter(|r| r.uri_changed) {
                        r.location_invalid = true;
                        r.uri_changed = false;
                    }
                    return Ran::Stop;
                }
                Op::If {
                    condition,
                    body,
                    location,
                } => {
                    if self.holds(condition, x) {
                        if let Some(location) = location {
                            self.location = Some(location.clone());
                        }
                        match self.run(&body.ops, x) {
                            Ran::End => {}
                            ended => return ended,
                        }
                    }
                }
                Op::Rewrite(rewrite) => match self.rewrite_uri(rewrite, x) {
                    Ran::End => {}
                    ended => return ended,
                },
            }
        }
        Ran::End
    }

    /// An `if` condition (ngx_http_script_*_code). A regex test's captures become the
    /// request's; one that fails clears them.
    fn holds(&mut self, condition: &ConditionOp, x: Exchange<'_>) -> bool {
        let eval = |ctx: &Self, t: &Template| eval_to_vec(t, &ctx.vars_of(x, None));
        match condition {
            ConditionOp::Value(t) => script::truthy(&eval(self, t)),
            ConditionOp::Equals {
                value,
                text,
                negate,
            } => (eval(self, value) == eval(self, text)) != *negate,
            ConditionOp::Matches {
                value,
                regex,
                named_groups,
                negate,
            } => {
                let subject = eval(self, value);
                match script::capture_ranges(regex, &subject) {
                    Some(ranges) => {
                        self.set_named_groups(named_groups, &subject, &ranges);
                        self.captures = ranges;
                        self.rewritten().captured = Some(subject);
                        !negate
                    }
                    None => {
                        self.captures.clear();
                        *negate
                    }
                }
            }
            ConditionOp::File { path, test, negate } => {
                script::file_test(&eval(self, path), *test) != *negate
            }
        }
    }

    /// `rewrite` (ngx_http_script_regex_start_code and _end_code): `Ran::End` when the regex
    /// does not match or the script goes on.
    fn rewrite_uri(&mut self, op: &RewriteOp, x: Exchange<'_>) -> Ran {
        let subject = self.uri.path.clone();
        let Some(ranges) = script::capture_ranges(&op.regex, &subject) else {
            self.captures.clear();
            return Ran::End;
        };
        self.set_named_groups(&op.named_groups, &subject, &ranges);
        self.captures = ranges;
        self.rewritten().captured = Some(subject);
        // Captures are escaped where arguments go when the client's URI had escapes or a `+`.
        let raw = x.request.raw_path();
        let raw_path = raw.split(|b| *b == b'?').next().unwrap_or(raw);
        let quoted = self.uri.quoted || raw_path.contains(&b'+');
        let old_args = self.uri.args.as_deref().filter(|a| !a.is_empty());
        let vars = self.vars_of(x, None);
        if let Some(status) = op.redirect {
            let mut written = Vec::new();
            script::write_replacement(&op.uri, &vars, quoted, &mut written);
            let mut location = script::unescape_redirect(&written);
            if let Some(args) = old_args.filter(|_| op.add_args) {
                location.push(if op.has_question { b'&' } else { b'?' });
                location.extend_from_slice(args);
            }
            return Ran::Answer(Route::Redirect(status, location));
        }
        let is_args = self.rewrite.as_ref().is_some_and(|r| r.is_args);
        let mut uri = Vec::new();
        script::write_replacement(&op.uri, &vars, is_args && quoted, &mut uri);
        let args = match &op.args {
            Some(segments) => {
                let mut args = Vec::new();
                script::write_replacement(segments, &vars, quoted, &mut args);
                if let Some(old) = old_args.filter(|_| op.add_args) {
                    args.push(b'&');
                    args.extend_from_slice(old);
                }
                Some(args)
            }
            None if op.add_args => self.uri.args.clone(),
            None => None,
        };
        let state = self.rewritten();
        state.is_args |= op.args.is_some();
        state.uri_rewritten = true;
        state.target_changed = true;
        if op.break_cycle {
            state.location_invalid = true;
            state.uri_changed = false;
        } else {
            state.uri_changed = true;
        }
        if uri.is_empty() {
            self.route_error = Some("the rewritten URI has a zero length".into());
            return Ran::Answer(Route::Reject(500));
        }
        self.uri.path = uri;
        self.uri.args = args;
        if op.stop {
            Ran::Stop
        } else {
            Ran::End
        }
    }

    /// The upstream URI's ingredients, after what the rewrite module did.
    fn matched(&self) -> Matched<'_> {
        let rewrite = self.rewrite.as_deref();
        Matched {
            uri: &self.uri,
            prefix_len: self.prefix_len,
            buffered_body: self.buffered_body,
            uri_rewritten: rewrite.is_some_and(|r| r.uri_rewritten),
            target_changed: rewrite.is_some_and(|r| r.target_changed),
            location_invalid: rewrite.is_some_and(|r| r.location_invalid),
            pass_uri: self.dynamic.as_ref().and_then(|d| d.uri.as_deref()),
            as_get: self.errors.as_get,
            subrequest: self.subrequest,
        }
    }
}

/// `current`, as the `previous` request's when it is the same one (taken over, with no
/// change to the reference count that every worker thread shares), else a new reference.
pub(super) fn same_or_clone<T>(previous: &mut Option<Arc<T>>, current: &Arc<T>) -> Arc<T> {
    match previous.take() {
        Some(same) if Arc::ptr_eq(&same, current) => same,
        _ => current.clone(),
    }
}

/// What a request's variables and log line need from the exchange: from Pingora's session,
/// or from the fast path's own.
#[derive(Clone, Copy)]
struct Exchange<'a> {
    request: ClientRequest<'a>,
    client: Option<std::net::SocketAddr>,
    local: Option<std::net::SocketAddr>,
    response: Option<&'a ResponseHeader>,
    /// The status sent (0: none yet), also when `response` is not kept.
    status: u16,
    body_bytes_sent: u64,
}

impl<'a> Exchange<'a> {
    fn of(session: &'a Session) -> Exchange<'a> {
        let response = session.response_written();
        Exchange {
            request: session.req_header().into(),
            client: client_addr(session),
            local: local_addr(session),
            response,
            status: response.map_or(0, |r| r.status.as_u16()),
            body_bytes_sent: session.body_bytes_sent() as u64,
        }
    }
}

impl RequestCtx {
    /// The client as nginx sees it: the connecting address, unless realip replaced it.
    fn client(&self, connecting: Option<std::net::SocketAddr>) -> Option<std::net::SocketAddr> {
        self.real_client.or(connecting)
    }

    /// nginx's realip in its post-read phase, once the server is known: the server's
    /// settings, given who connected.
    fn real_ip_by_server(
        &mut self,
        peer: Option<std::net::SocketAddr>,
        request: ClientRequest<'_>,
    ) {
        let conf = self.server.as_ref().and_then(|s| s.real_ip.as_ref());
        let pp = self.conn.proxy_protocol.as_ref();
        self.real_client = conf.and_then(|c| c.client(peer, request, pp));
    }

    /// nginx's realip in its pre-access phase (after `return`, before `allow`/`deny`): the
    /// location's settings, when the server's changed nothing.
    fn real_ip_by_location(
        &mut self,
        peer: Option<std::net::SocketAddr>,
        request: ClientRequest<'_>,
    ) {
        if self.real_client.is_none() {
            let conf = self.location.as_ref().and_then(|l| l.real_ip.as_ref());
            let pp = self.conn.proxy_protocol.as_ref();
            self.real_client = conf.and_then(|c| c.client(peer, request, pp));
        }
    }

    fn vars<'a>(&'a self, session: &'a Session, proxy: Option<&'a ProxyConf>) -> RequestVars<'a> {
        self.vars_of(Exchange::of(session), proxy)
    }

    /// The method nginx's handlers see (`r->method`): GET once an error page by URI has
    /// turned the request into one (HEAD stays), else the client's.
    fn method<'a>(&self, request: ClientRequest<'a>) -> &'a str {
        match self.errors.as_get {
            true => "GET",
            false => request.method(),
        }
    }

    /// The `charset` of the location, or of the server when the request is answered before a
    /// location is chosen.
    fn charset(&self) -> Option<&CharsetConf> {
        let server = self.server.as_ref().map(|s| &s.fallback);
        self.location.as_ref().or(server)?.charset.as_deref()
    }

    /// See the `date` field.
    fn date(&self) -> SystemTime {
        *self.date.get_or_init(SystemTime::now)
    }

    /// The filters a response the appliance makes goes through: `added` (the headers filter's
    /// and those carried over), the date, the location's sub_filter and gzip.
    fn filters<'a>(
        &'a self,
        session: &Session,
        added: &'a [(String, Vec<u8>)],
    ) -> respond::Filters<'a> {
        respond::Filters {
            added,
            date: Some(self.date()),
            sub_filter: self.sub_filter(session),
            gzip: self.location.as_ref().and_then(|l| l.gzip.as_deref()),
            charset: self.charset(),
            unsized_body: false,
        }
    }

    /// The response body's filters, made when the first is wanted.
    fn body_filters(&mut self) -> &mut BodyFilters {
        self.body_filters.get_or_insert_with(Box::default)
    }

    /// The strings `sub_filter` replaces in this request's response, if any: the location's,
    /// or before one is chosen the server's.
    fn sub_filter(&self, session: &Session) -> Option<sub_filter::Prepared> {
        let server = self.server.as_ref().map(|s| &s.fallback);
        let conf = self.location.as_ref().or(server)?.sub_filter.as_deref()?;
        conf.prepare(&self.vars(session, self.proxy()))
    }

    /// Logs an error of this request as nginx does: its connection's number, then where it
    /// happened (see [`error_context`](super::error_context)). `peer` names the server the
    /// error is about (its address, or the upstream's name when none was live).
    fn log_error(
        &self,
        x: Exchange<'_>,
        peer: Option<&dyn std::fmt::Display>,
        level: LogLevel,
        message: std::fmt::Arguments<'_>,
    ) {
        let proxy = self.proxy();
        let vars = self.vars_of(x, proxy);
        let mut at = InRequest::new(&vars);
        let uri;
        if let (Some(peer), Some(proxy)) = (peer, proxy) {
            uri = upstream_request::request_target(proxy, x.request, &self.matched());
            at = at.at_upstream(UpstreamAt {
                scheme: proxy.scheme.with_separator(),
                peer,
                uri: &uri,
                unix: false,
            });
        }
        if self.subrequest {
            at = at.in_subrequest(&self.uri.path);
        }
        at.log(level, message);
    }

    /// ngx_http_process_request's check of the client's certificate against the
    /// `ssl_verify_client` of the server the Host chose (see [`client_cert`](super::client_cert)).
    fn client_certificate_refusal(&self) -> Option<client_cert::Refusal> {
        let mode = self.server.as_ref()?.tls.verify_client.unwrap_or_default();
        client_cert::refusal(mode, self.conn.client_certificate.as_deref())
    }

    /// Logs a failed try at the server `peer`, as nginx logs it.
    fn log_upstream_error(&self, x: Exchange<'_>, peer: &HttpPeer, e: &Error) {
        let words =
            super::error_context::upstream_error_words(e, self.upstream.header_in_this_try());
        self.log_error(
            x,
            Some(&peer._address),
            LogLevel::Error,
            format_args!("{words}"),
        );
    }

    fn vars_of<'a>(&'a self, x: Exchange<'a>, proxy: Option<&'a ProxyConf>) -> RequestVars<'a> {
        // The settings in force: the location's, or in the server's rewrite phase the
        // server's own.
        let level =
            (self.location.as_deref()).or_else(|| self.server.as_ref().map(|s| &*s.fallback));
        RequestVars {
            request: x.request,
            client: self.client(x.client).map(|a| (a.ip(), a.port())),
            connecting: x.client.map(|a| (a.ip(), a.port())),
            local: x.local.map(|a| (a.ip(), a.port())),
            tls: self.tls,
            host: self.host.as_deref(),
            server_name: self.server.as_ref().map_or("", |s| s.name.as_str()),
            uri: &self.uri.path,
            args: self.uri.args.as_deref(),
            captures: &self.captures,
            captured: self.rewrite.as_ref().and_then(|r| r.captured.as_deref()),
            declared: self.rewrite.as_ref().map_or(&[], |r| &r.vars),
            root: self.location.as_ref().and_then(|l| l.root.as_ref()),
            alias: self.location.as_ref().and_then(|l| {
                let prefix_len = (!l.kind.is_regex()).then_some(l.name.len());
                Some((l.alias.as_ref()?, prefix_len))
            }),
            proxy_host: proxy.map_or("", |p| p.proxy_host.as_str()),
            proxy_port: proxy.map_or("", |p| p.proxy_port.as_str()),
            request_id: &self.request_id,
            cached: &self.cached,
            upstream: Some(&self.upstream),
            response: x.response,
            status: x.status,
            body_bytes_sent: x.body_bytes_sent,
            request_time: 0.0,
            connection: self.conn.number,
            connection_requests: self.conn.requests,
            limits: self.limits,
            ssl_protocol: self.conn.ssl_protocol.as_deref(),
            ssl_cipher: self.conn.ssl_cipher.as_deref(),
            ssl_server_name: self.conn.ssl_server_name.as_deref(),
            ssl_client: self.conn.client_certificate.as_deref(),
            proxy_protocol: self.conn.proxy_protocol,
            tables: &self.runtime.tables,
            referers: level.and_then(|l| l.valid_referers.as_deref()),
            secure_link: level.and_then(|l| l.secure_link.as_deref()),
            secure_link_expires: None,
            preread: None,
            session: None,
        }
    }

    /// Writes the access logs and counts the request (nginx's log phase).
    fn log_request(&self, session: &Session, e: Option<&Error>, now: Instant) {
        // No response went out: the client left (nginx's 499) or the request failed.
        let unanswered = match e.map(|e| e.esource()) {
            _ if e.is_some_and(respond::is_close) => respond::CLOSE,
            Some(pingora::ErrorSource::Downstream) => 499,
            Some(_) => 500,
            None => 0,
        };
        let mut x = Exchange::of(session);
        if let Some(bytes) = x.response.and_then(|r| self.chunked_body_bytes(session, r)) {
            x.body_bytes_sent = bytes;
        }
        self.log_exchange(x, unanswered, now);
    }

    /// nginx's `$body_bytes_sent` is what went out after the head, a chunked body's framing
    /// included, where Pingora counts the body's own bytes. For a chunked response, the bytes
    /// written to the connection since the request began (as its tag counts them), less the
    /// head. None for any other response, or where the connection's writes are not counted.
    fn chunked_body_bytes(&self, session: &Session, response: &ResponseHeader) -> Option<u64> {
        if !is_chunked(response) {
            return None;
        }
        let digest = session.digest()?;
        let tag = super::connection_tag::of(digest.proxy_digest.as_ref())?;
        let since = tag.written().checked_sub(self.conn.written_before)?;
        since.checked_sub(head_length(response))
    }

    /// Writes the access logs and counts the request, which ended at `now`; `unanswered` is the
    /// status logged when no response went out.
    fn log_exchange(&self, x: Exchange<'_>, unanswered: u16, now: Instant) {
        let elapsed = now.saturating_duration_since(self.begun).as_secs_f64();
        let mut vars = self.vars_of(x, self.proxy());
        vars.request_time = elapsed;
        if vars.status == 0 {
            vars.status = unanswered;
        }
        let logs = match (&self.location, &self.server) {
            (Some(l), _) => &l.access_log,
            (None, Some(s)) => &s.fallback.access_log,
            (None, None) => &self.runtime.access_log,
        };
        super::logging::write_access(logs, &vars);
        let (times, tries) = (&self.upstream.response_times, self.upstream.addrs.len());
        match self.proxy() {
            Some(p) => p.pool.metrics.observe(vars.status, elapsed, times, tries),
            None => {
                super::metrics::metrics().observe_request(vars.status, "-", elapsed, times, tries)
            }
        }
    }

    fn proxy(&self) -> Option<&ProxyConf> {
        match &self.dynamic {
            Some(target) => Some(&target.proxy),
            None => self.location.as_ref().and_then(|l| l.proxy.as_ref()),
        }
    }

    /// Before an error page sends the request on: the pool it leaves forgets it, and the
    /// next pool starts a new attempt (tries, hash key, stickiness) of its own.
    fn leave_upstream(&mut self) {
        if let Some(proxy) = self.proxy() {
            proxy.pool.inflight.release(self.token);
        }
        let tries = self.upstream.addrs.len();
        if tries > 0 && self.upstream.group_starts.last() != Some(&tries) {
            self.upstream.group_starts.push(tries);
        }
        self.release(Outcome::Success);
        self.attempt = None;
        self.dynamic = None;
        self.same_peer_again = false;
        self.give_up_status = 502;
        self.started = None;
        self.affinity = None;
        self.hash_key.clear();
    }

    /// Gives the held peer back to the balancer, once.
    fn release(&mut self, outcome: Outcome) {
        self.release_at(outcome, Instant::now());
    }

    /// [`Self::release`], with the clock read already (`now`).
    fn release_at(&mut self, outcome: Outcome, now: Instant) {
        if self.peer_released {
            return;
        }
        let proxy = match &self.dynamic {
            Some(target) => Some(&*target.proxy),
            None => self.location.as_ref().and_then(|l| l.proxy.as_ref()),
        };
        if let (Some(attempt), Some(proxy)) = (self.attempt.as_mut(), proxy) {
            if attempt.held().is_some() {
                proxy.pool.balancer.finish(attempt, outcome, now);
            }
        }
        self.peer_released = true;
    }

    /// The server for the next try: the first try starts the attempt (tries limit, hash key,
    /// sticky cookie); then the sticky server if the balancer may use it, else the balancer's
    /// choice, or the same server again after a worn-out pooled connection. `None`: no live
    /// upstreams (logged; the request gets a 502).
    fn choose_peer(&mut self, x: Exchange<'_>, proxy: &ProxyConf, now: Instant) -> Option<PeerId> {
        let pool = &proxy.pool;
        let client_ip: Option<IpAddr> = self.client(x.client).map(|a| a.ip());
        let request = x.request;
        if self.attempt.is_none() {
            let mut attempt = pool.balancer.begin();
            attempt.limit_tries(proxy.next_upstream_tries);
            self.attempt = Some(attempt);
            if let Some(key) = &pool.hash_key {
                self.hash_key = eval_to_vec(key, &self.vars_of(x, Some(proxy)));
            }
            self.started = Some(now);
            if let Some(sticky) = &pool.sticky {
                self.affinity = Some(sticky.read(request, SystemTime::now()));
            }
        }
        let key = SelectKey::new(client_ip, &self.hash_key);
        let attempt = self.attempt.as_mut()?;
        let held = attempt
            .held()
            .filter(|_| std::mem::take(&mut self.same_peer_again));
        let sticky_peer = held.or_else(|| {
            self.affinity
                .as_ref()
                .and_then(|a| a.peer)
                .and_then(|p| pool.balancer.select_peer(attempt, p, now))
        });
        let chosen = sticky_peer.map_or_else(|| pool.balancer.select(attempt, &key, now), Ok);
        match chosen {
            Ok(peer) => {
                self.peer_released = false;
                Some(peer)
            }
            Err(no_live) => {
                self.give_up_status = 502;
                let message = format_args!("{no_live} while connecting to upstream");
                self.log_error(x, Some(&pool.name), LogLevel::Error, message);
                None
            }
        }
    }

    /// A connection to the server failed (fail_to_connect): whether to try the next one.
    fn connect_failed(&mut self, timed_out: bool, method: &str) -> bool {
        let condition = if timed_out {
            NextUpstream::Timeout
        } else {
            NextUpstream::Error
        };
        self.give_up_status = if timed_out { 504 } else { 502 };
        self.upstream.statuses.push(self.give_up_status);
        self.release(Outcome::Failed);
        self.may_retry(condition, false, method, 1)
    }

    /// The server failed after the connection was made, before a response started
    /// (ngx_http_upstream_next): whether to try the next one. `reused`: the connection came
    /// from the keep-alive pool.
    fn upstream_failed(&mut self, condition: NextUpstream, reused: bool, method: &str) -> bool {
        self.give_up_status = if condition == NextUpstream::Timeout {
            504
        } else {
            502
        };
        self.upstream.statuses.push(self.give_up_status);
        // A server may close an idle keep-alive connection just as it is reused: nginx gives
        // such a request one more try.
        if reused && condition == NextUpstream::Error {
            if let Some(a) = self.attempt.as_mut() {
                a.grant_try();
            }
        }
        self.release(Outcome::Failed);
        self.may_retry(condition, true, method, 1)
    }

    /// The server answered with `status`: true when `proxy_next_upstream` lists it and another
    /// try remains (ngx_http_upstream_test_next), the server then given back. `now`: when the
    /// response header arrived.
    fn retry_on_status(&mut self, status: u16, method: &str, now: Instant) -> bool {
        self.upstream.statuses.push(status);
        self.upstream.header_received(now);
        let condition = match status {
            500 => NextUpstream::Http500,
            502 => NextUpstream::Http502,
            503 => NextUpstream::Http503,
            504 => NextUpstream::Http504,
            403 => NextUpstream::Http403,
            404 => NextUpstream::Http404,
            429 => NextUpstream::Http429,
            _ => return false,
        };
        if !self.may_retry(condition, true, method, 2) {
            return false;
        }
        let outcome = if matches!(status, 403 | 404) {
            Outcome::Success
        } else {
            Outcome::Failed
        };
        self.release_at(outcome, now);
        self.give_up_status = status;
        true
    }

    /// Whether `proxy_next_upstream` lets this request move on after `condition`:
    /// the condition is listed (with `non_idempotent` for POST/LOCK/PATCH once sent), tries
    /// remain, and `proxy_next_upstream_timeout` has not passed.
    fn may_retry(
        &self,
        condition: NextUpstream,
        sent: bool,
        method: &str,
        tries_needed: u32,
    ) -> bool {
        let Some(proxy) = self.proxy() else {
            return false;
        };
        if !proxy.next_upstream.contains(condition) {
            return false;
        }
        let non_idempotent = matches!(method, "POST" | "LOCK" | "PATCH");
        if sent && non_idempotent && !proxy.next_upstream.contains(NextUpstream::NonIdempotent) {
            return false;
        }
        if self
            .attempt
            .as_ref()
            .is_none_or(|a| a.tries_left() < tries_needed)
        {
            return false;
        }
        match (proxy.next_upstream_timeout, self.started) {
            (Some(limit), Some(started)) => started.elapsed() < limit,
            _ => true,
        }
    }
}

#[async_trait]
impl ProxyHttp for HttpProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.ctx_begun(Instant::now())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.conn = ConnectionInfo::of(session);
        let routed = route(ctx, session.server_addr(), Exchange::of(session));
        let next = after_route(session, ctx, routed).await?;
        error_pages::settle(session, ctx, next).await
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        loop {
            if let Some(jump) = ctx.errors.pending.take() {
                // An error page chosen when the upstream failed: Pingora's retry is where it
                // is followed.
                let next = error_pages::follow(session, ctx, jump).await?;
                if error_pages::settle(session, ctx, next).await? {
                    let mut e = Error::explain(
                        ErrorType::Custom(ANSWERED_BY_ERROR_PAGE),
                        "the error page answered",
                    );
                    e.set_retry(false);
                    return Err(e);
                }
            }
            let Some(location) = ctx.location.clone() else {
                return Error::e_explain(ErrorType::InternalError, "no location chosen");
            };
            let dynamic = ctx.dynamic.as_ref().map(|target| target.proxy.clone());
            let Some(proxy) = dynamic.as_deref().or(location.proxy.as_ref()) else {
                return Error::e_explain(ErrorType::InternalError, "location does not proxy");
            };
            let exchange = Exchange::of(session);
            if let Some(peer_id) = ctx.choose_peer(exchange, proxy, Instant::now()) {
                return peer_of(exchange, ctx, proxy, peer_id);
            }
            // No live upstreams: nginx finalizes with 502, which a page may answer.
            match error_pages::page_for(session, ctx, 502) {
                Some(jump) => ctx.errors.pending = Some(jump),
                None => {
                    let mut e = Error::explain(ErrorType::HTTPStatus(502), "no live upstreams");
                    e.set_retry(false);
                    return Err(e);
                }
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(proxy) = ctx.proxy() else {
            return Error::e_explain(ErrorType::InternalError, "location does not proxy");
        };
        let matched = ctx.matched();
        let vars = ctx.vars(session, Some(proxy));
        *upstream_request = upstream_request::build(proxy, session.req_header(), &matched, &vars)?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = response.status.as_u16();
        if ctx.retry_on_status(status, session.req_header().method.as_str(), Instant::now()) {
            let mut e = Error::explain(
                ErrorType::HTTPStatus(status),
                "upstream status listed in proxy_next_upstream",
            );
            e.set_retry(true);
            return Err(e);
        }
        let intercept = ctx.proxy().is_some_and(|p| p.intercept_errors) && status >= 300;
        if intercept {
            if let Some(jump) = error_pages::page_for(session, ctx, status) {
                // ngx_http_upstream_intercept_errors: the server answered (it has not failed),
                // and the page answers the client in its place, through Pingora's retry; a
                // 401's challenge goes with it.
                if status == 401 {
                    if let Some(challenge) = response.headers.get(http::header::WWW_AUTHENTICATE) {
                        let challenge = challenge.as_bytes().to_vec();
                        ctx.errors
                            .carried
                            .push(("WWW-Authenticate".into(), challenge));
                    }
                }
                ctx.release(Outcome::Success);
                ctx.errors.pending = Some(jump);
                let mut e = Error::explain(
                    ErrorType::HTTPStatus(status),
                    "upstream status answered by error_page",
                );
                e.set_retry(true);
                return Err(e);
            }
        }
        // `$upstream_http_*`: the server's headers as they came, hidden ones too.
        ctx.upstream.response = Some(Box::new(response.clone()));
        let hide: Vec<http::HeaderName> = response
            .headers
            .keys()
            .filter(|name| {
                ctx.proxy()
                    .is_some_and(|p| p.hide_headers.contains(name.as_str()))
            })
            .cloned()
            .collect();
        for name in hide {
            response.remove_header(&name);
        }
        rewrite_redirects(session, response, ctx)?;
        response.insert_header("Server", respond::SERVER)?;
        response.insert_header("Date", respond::http_date_at(ctx.date()))?;
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(b) = body {
            ctx.upstream.try_body_bytes += b.len() as u64;
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        add_sticky_cookie(response, ctx)?;
        if let Some(status) = ctx.errors.err_status {
            // An error page led here: its status goes out, whatever the upstream said.
            response.set_status(status)?;
            response.set_reason_phrase(Some(respond::reason(status)))?;
        }
        for (name, value) in &ctx.errors.carried {
            response.append_header(name.clone(), value.as_slice())?;
        }
        let Some(location) = ctx.location.clone() else {
            return Ok(());
        };
        let status = response.status.as_u16();
        if let Some(conf) = &location.expires {
            // The upstream's own Expires and Cache-Control get the new values.
            let last_modified = response
                .headers
                .get(http::header::LAST_MODIFIED)
                .map(|v| v.as_bytes().to_vec());
            let x = Exchange {
                response: Some(&*response),
                ..Exchange::of(session)
            };
            let vars = ctx.vars_of(x, ctx.proxy());
            let headers = conf.headers(status, &vars, last_modified.as_deref(), ctx.date());
            if let Some((expires, cache_control)) = headers {
                response.insert_header("Expires", expires)?;
                response.insert_header("Cache-Control", cache_control)?;
            }
        }
        if !location.add_header.is_empty() {
            // `$sent_http_*` reads the response as it stands (h5bp's maps on the content type).
            let x = Exchange {
                response: Some(&*response),
                ..Exchange::of(session)
            };
            let added = added_by_rules(&location.add_header, status, &ctx.vars_of(x, ctx.proxy()));
            for (name, value) in added {
                response.append_header(name, value)?;
            }
        }
        let bodiless = session.req_header().method == http::Method::HEAD
            || matches!(status, 100..=199 | 204 | 304);
        // nginx's gunzip filter, after the headers filter, before the sub filter.
        let mut varied = false;
        if let Some(gzip) = location.gzip.as_ref().filter(|g| g.gunzips()) {
            let request = gzip::Request::Pingora(session.req_header());
            match gzip.unzip(request, response, ctx.date()) {
                gzip::Unzip::Untouched => {}
                gzip::Unzip::Kept if gzip.vary() => {
                    response.append_header("Vary", "Accept-Encoding")?;
                    varied = true;
                }
                gzip::Unzip::Kept => {}
                gzip::Unzip::Decompress => {
                    gunzip::strip_headers(response, gzip.vary())?;
                    varied = gzip.vary();
                    if !bodiless {
                        ctx.body_filters().decompressor = Some(gunzip::Decompressor::new());
                    }
                    frame_unknown_length(session, response, bodiless)?;
                }
            }
        }
        // nginx's sub filter, after the headers filter, before the charset and gzip filters.
        if let Some(prepared) = location.sub_filter.as_ref().and_then(|conf| {
            let x = Exchange {
                response: Some(&*response),
                ..Exchange::of(session)
            };
            conf.prepare(&ctx.vars_of(x, ctx.proxy()))
        }) {
            if let Some(substituter) = prepared.start(response)? {
                ctx.body_filters().substituter = Some(substituter);
                frame_unknown_length(session, response, bodiless)?;
            }
        }
        // nginx's charset filter, after the sub filter: the charset the Content-Type names,
        // and the body recoded (not an encoded one).
        if let Some(charset) = &location.charset {
            let encoded = (response
                .headers
                .get_all(http::header::CONTENT_ENCODING)
                .iter())
            .any(|v| !v.is_empty());
            let value = response.headers.get(http::header::CONTENT_TYPE);
            let verdict = value
                .map(|v| charset.verdict(status, v.as_bytes(), encoded))
                .unwrap_or_default();
            if let Some(named) = verdict.content_type {
                response.insert_header(http::header::CONTENT_TYPE, named)?;
            }
            if let Some(message) = verdict.missing_map {
                let peer = ctx.upstream.addrs.last().cloned();
                let peer = peer.as_ref().map(|p| p as &dyn std::fmt::Display);
                let message = format_args!("{message} while reading response header from upstream");
                ctx.log_error(Exchange::of(session), peer, LogLevel::Error, message);
            }
            if let Some(table) = verdict.recode {
                if table.changes_length() {
                    response.remove_header(&http::header::CONTENT_LENGTH);
                    frame_unknown_length(session, response, bodiless)?;
                }
                if !bodiless {
                    ctx.body_filters().recoder = Some(Recoder::new(table));
                }
            }
        }
        // The gzip filter comes after the charset filter, as in nginx.
        if let Some(gzip) = &location.gzip {
            let request = gzip::Request::Pingora(session.req_header());
            let length = (response.headers.get(http::header::CONTENT_LENGTH))
                .and_then(|v| v.to_str().ok()?.trim().parse().ok());
            if gzip.filter(request, response, ctx.date(), varied)? {
                ctx.body_filters().compressor = Some(gzip.compressor(length));
                if request.version() < http::Version::HTTP_11 {
                    // No chunked encoding for it: the body ends with the connection.
                    session.set_keepalive(None);
                }
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        let Some(filters) = ctx.body_filters.as_mut() else {
            return Ok(None);
        };
        let mut out = match body.take() {
            Some(data) => filters.push(&data).map_err(FilterFailed::into_pingora)?,
            None => Bytes::new(),
        };
        if end_of_stream {
            let rest = filters.finish().map_err(FilterFailed::into_pingora)?;
            out = match out.is_empty() {
                true => rest,
                false => [out, rest].concat().into(),
            };
        }
        *body = (!out.is_empty()).then_some(out);
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // A connection opened takes a number, as nginx's ngx_event_connect_peer gives it one.
        super::connection_tag::next_number();
        ctx.log_upstream_error(Exchange::of(session), peer, &e);
        let timed_out = matches!(
            e.etype(),
            ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout
        );
        let retry = ctx.connect_failed(timed_out, session.req_header().method.as_str());
        e.set_retry(retry || error_page_retry(session, ctx));
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if ctx.same_peer_again {
            // A worn-out pooled connection: not the server's failure, and no try spent.
            return e;
        }
        if ctx
            .proxy()
            .is_some_and(|p| p.pool.inflight.was_cut(ctx.token))
        {
            // A drain timeout ended it: the server was removed, nothing is retried.
            ctx.release(Outcome::Success);
            ctx.give_up_status = 502;
            e.set_retry(false);
            return e.more_context("drain timeout expired");
        }
        if ctx.peer_released {
            // A retry this request decided itself (a status in proxy_next_upstream).
            return e;
        }
        if e.esource() == &pingora::ErrorSource::Upstream {
            ctx.log_upstream_error(Exchange::of(session), peer, &e);
        }
        if session.response_written().is_some() {
            // The response has started: nothing can be retried, and nginx frees the peer as
            // not failed.
            ctx.release(Outcome::Success);
            e.set_retry(false);
            return e;
        }
        if e.esource() == &pingora::ErrorSource::Downstream {
            // The client went away while the upstream was working on its request (wrk does this
            // to its open requests when a run ends). nginx finalizes with 499 and frees the peer
            // as not failed: not the server's fault, and nothing to retry for nobody.
            ctx.release(Outcome::Success);
            ctx.give_up_status = 499;
            e.set_retry(false);
            return e;
        }
        let condition = match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => NextUpstream::Timeout,
            ErrorType::InvalidHTTPHeader | ErrorType::H1Error => NextUpstream::InvalidHeader,
            _ => NextUpstream::Error,
        };
        let retry = ctx.upstream_failed(
            condition,
            client_reused,
            session.req_header().method.as_str(),
        );
        e.set_retry(retry || error_page_retry(session, ctx));
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if respond::is_close(e) {
            return FailToProxy {
                error_code: respond::CLOSE,
                can_reuse_downstream: false,
            };
        }
        if matches!(e.etype(), ErrorType::Custom(c) if *c == FILTER_FAILED) {
            // zlib refused what the upstream sent (gunzip): nginx logs it and ends the response
            // where it is, with no error page.
            let peer = ctx.upstream.addrs.last().cloned();
            let peer = peer.as_ref().map(|p| p as &dyn std::fmt::Display);
            let why = e.cause.as_ref().map(|c| c.to_string()).unwrap_or_default();
            let x = Exchange::of(session);
            ctx.log_error(
                x,
                peer,
                LogLevel::Error,
                format_args!("{why} while reading upstream"),
            );
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if let (ErrorType::Custom(ANSWERED_BY_ERROR_PAGE), Some(sent)) =
            (e.etype(), session.response_written())
        {
            return FailToProxy {
                error_code: sent.status.as_u16(),
                can_reuse_downstream: false,
            };
        }
        let status = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                pingora::ErrorSource::Upstream => ctx.give_up_status,
                pingora::ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    ErrorType::ReadTimedout => 408,
                    _ => 400,
                },
                _ => ctx.give_up_status,
            },
        };
        if status > 0 && session.response_written().is_none() {
            // An error page carries the location's `add_header ... always`, as nginx's do.
            let added = added_headers(ctx, session, status);
            let filters = ctx.filters(session, &added);
            let _ = respond::send_with(session, status, None, None, true, filters).await;
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        // An error page answered, or a server failed: either was logged when it happened, in
        // nginx's words (`log_upstream_error`).
        matches!(e.etype(), ErrorType::Custom(c) if [ANSWERED_BY_ERROR_PAGE, FILTER_FAILED].contains(c))
            || e.esource() == &pingora::ErrorSource::Upstream
    }

    /// Each failed try was logged when it failed, as nginx logs it.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        e: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        e.esource() == &pingora::ErrorSource::Upstream
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if !reused {
            super::connection_tag::next_number();
        }
        if let Some(proxy) = ctx.proxy() {
            if proxy.pool.keepalive.is_some() && worn_out(&proxy.pool, fd, reused) {
                // nginx closes a connection once it has carried keepalive_requests; Pingora's
                // pool does not count, so the worn-out connection is dropped here, when it
                // would carry one more, and the same server is asked for again.
                ctx.same_peer_again = true;
                let mut e = Error::explain(
                    ErrorType::Custom("keepalive_requests reached"),
                    "pooled connection has carried keepalive_requests",
                );
                e.set_retry(true);
                return Err(e);
            }
        }
        ctx.upstream.connected(Instant::now());
        let held = ctx.attempt.as_ref().and_then(|a| a.held());
        if let (Some(proxy), Some(peer)) = (ctx.proxy(), held) {
            if let Some(info) = proxy.pool.balancer.peer(peer) {
                proxy.pool.inflight.register(
                    ctx.token,
                    peer,
                    &info.addr,
                    fd,
                    proxy.pool.drain_timeout.is_some(),
                );
            }
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(proxy) = ctx.proxy() {
            proxy.pool.inflight.release(ctx.token);
        }
        let now = Instant::now();
        ctx.release_at(Outcome::Success, now);
        ctx.upstream.end_try(now);
        ctx.log_request(session, e, now);
    }
}

/// The peer Pingora connects to for the server `peer_id` of `proxy`'s pool: its address, TLS
/// and SNI, timeouts, and the connection pool it may reuse.
fn peer_of(
    x: Exchange<'_>,
    ctx: &mut RequestCtx,
    proxy: &ProxyConf,
    peer_id: PeerId,
) -> Result<Box<HttpPeer>> {
    let pool = &proxy.pool;
    let Some(info) = pool.balancer.peer(peer_id) else {
        return Error::e_explain(ErrorType::InternalError, "balancer chose an unknown peer");
    };
    let tls = proxy.scheme == Scheme::Https;
    // nginx sends SNI only with proxy_ssl_server_name on, but verifies the certificate
    // against proxy_ssl_name (default: the proxy_pass host) either way. Pingora verifies
    // only the name it sends, so with proxy_ssl_verify on the name is sent as SNI too.
    let sni = if tls && (proxy.ssl_server_name || proxy.ssl_verify) {
        match &proxy.ssl_name {
            Some(t) => {
                String::from_utf8_lossy(&eval_to_vec(t, &ctx.vars_of(x, Some(proxy)))).into_owned()
            }
            None => host_only(&proxy.proxy_host).to_string(),
        }
    } else {
        String::new()
    };
    ctx.upstream.addrs.push(info.addr.clone());
    ctx.upstream.begin_try(Instant::now());
    let mut peer = match &info.addr {
        PeerAddr::Inet(addr) => HttpPeer::new(*addr, tls, sni),
        PeerAddr::Unix(path) => HttpPeer::new_uds(&path.to_string_lossy(), tls, sni)?,
    };
    let options = &mut peer.options;
    options.connection_timeout = Some(proxy.connect_timeout);
    options.read_timeout = Some(proxy.read_timeout);
    options.write_timeout = Some(proxy.send_timeout);
    options.verify_cert = tls && proxy.ssl_verify;
    options.verify_hostname = tls && proxy.ssl_verify;
    if tls {
        options.ca = proxy.ssl_trusted.clone();
    }
    options.http_upstream_request_policy = HttpUpstreamRequestPolicy::preserve();
    match pool.keepalive {
        Some(_) => {
            peer.group_key = pool.id;
            peer.options.idle_timeout = Some(pool.keepalive_timeout);
        }
        None => {
            peer.group_key = NEXT_PRIVATE_GROUP.fetch_add(1, Ordering::Relaxed);
            peer.options.idle_timeout = Some(std::time::Duration::ZERO);
        }
    }
    Ok(Box::new(peer))
}

/// After the last try failed: whether the location has a page for the status nginx would
/// give up with; Pingora's retry then follows it (`upstream_peer`).
fn error_page_retry(session: &Session, ctx: &mut RequestCtx) -> bool {
    match error_pages::page_for(session, ctx, ctx.give_up_status) {
        Some(jump) => {
            ctx.errors.pending = Some(jump);
            true
        }
        None => false,
    }
}

/// What a request's phases lead to: the upstream, or an answer of the appliance's own.
enum Next {
    Proxy,
    Answer(Answer),
    /// An internal redirect (`index`, `try_files`).
    Jump(super::error_page::Jump),
}

/// A response the appliance makes itself, before `error_page` has had its say.
enum Answer {
    /// nginx's special response for `status`: its page (a `Location` for redirects, a
    /// `WWW-Authenticate` challenge for 401, a `Content-Range` for 416), `header`, added before
    /// `add_header`'s. `error_page` may take it over, unless `last`.
    Special {
        status: u16,
        location: Option<Vec<u8>>,
        header: Option<(&'static str, Vec<u8>)>,
        last: bool,
    },
    /// A `return` with a body, or of a status below 400 that is no redirect: sent as it is,
    /// with the status an error page gave it.
    Return(Arc<ReturnConf>),
    /// Sent as it is, without `add_header`, before any location (a bad request line or Host).
    Bare(u16),
    /// A file from disk (boxed: it is the largest and the rarest).
    File(Box<files::FileAnswer>),
    /// A directory listing (`autoindex`): its body and type.
    Listing(Bytes, &'static str),
}

impl Answer {
    fn special(status: u16) -> Answer {
        Answer::Special {
            status,
            location: None,
            header: None,
            last: false,
        }
    }

    /// What `route` answered with.
    fn of_route(session: &Session, ctx: &RequestCtx, routed: Route) -> Answer {
        match routed {
            Route::Reject(status @ (client_cert::CERT_ERROR | client_cert::NO_CERT)) => {
                if let Some(refusal) = ctx.client_certificate_refusal() {
                    let x = Exchange::of(session);
                    let message =
                        format_args!("{} while reading client request headers", refusal.message);
                    ctx.log_error(x, None, LogLevel::Info, message);
                }
                // A special response: the server's error_page may take it.
                Answer::special(status)
            }
            Route::Reject(respond::TO_HTTPS) => {
                let x = Exchange::of(session);
                let message = format_args!(
                    "client sent plain HTTP request to HTTPS port while reading client request \
                     headers"
                );
                ctx.log_error(x, None, LogLevel::Info, message);
                Answer::special(respond::TO_HTTPS)
            }
            Route::Reject(status) => {
                if let Some(message) = &ctx.route_error {
                    let x = Exchange::of(session);
                    ctx.log_error(x, None, LogLevel::Error, format_args!("{message}"));
                }
                Answer::Bare(status)
            }
            Route::Return(ret) => {
                // ngx_http_script_return_code: a redirect, or an error status without text,
                // finalizes the request with that status (a special response); the rest is
                // sent as a response.
                let special = Return::is_redirect_status(ret.status)
                    || (ret.status >= 400 && ret.body.is_none());
                if !special {
                    return Answer::Return(ret);
                }
                let location = match Return::is_redirect_status(ret.status) {
                    true => {
                        let target = ret
                            .location
                            .as_ref()
                            .map(|t| eval_to_vec(t, &ctx.vars(session, None)))
                            .unwrap_or_default();
                        Some(absolute_location(local_addr(session), ctx, target))
                    }
                    false => None,
                };
                Answer::Special {
                    status: ret.status,
                    location,
                    header: None,
                    last: false,
                }
            }
            Route::Redirect(status, location) => Answer::Special {
                status,
                location: Some(absolute_location(local_addr(session), ctx, location)),
                header: None,
                last: false,
            },
            Route::AddSlash => {
                let mut target = ctx.uri.path.clone();
                target.push(b'/');
                if let Some(args) = ctx.uri.args.as_deref().filter(|a| !a.is_empty()) {
                    target.push(b'?');
                    target.extend_from_slice(args);
                }
                Answer::Special {
                    status: 301,
                    location: Some(target),
                    header: None,
                    last: false,
                }
            }
            // Not an answer: `after_route` takes it.
            Route::Location => Answer::Bare(500),
        }
    }

    /// Sends it. `err_status`: the status an error page set, for a response that is not
    /// special.
    async fn send(self, session: &mut Session, ctx: &RequestCtx) -> Result<()> {
        match self {
            Answer::Bare(status) => {
                // No `add_header`, but the charset filter runs on it as on any response.
                let filters = respond::Filters {
                    charset: ctx.charset(),
                    sub_filter: ctx.sub_filter(session),
                    ..Default::default()
                };
                respond::send_with(session, status, None, None, false, filters).await
            }
            Answer::File(file) => files::send(session, ctx, *file).await,
            Answer::Listing(body, content_type) => {
                let added = added_headers_typed(ctx, session, 200, Some(content_type));
                let body = Some((body, content_type));
                let filters = respond::Filters {
                    unsized_body: true,
                    ..ctx.filters(session, &added)
                };
                respond::send_with(session, 200, None, body, true, filters).await
            }
            Answer::Return(ret) => answer_return(session, ctx, &ret).await,
            Answer::Special {
                status,
                location,
                header,
                ..
            } => {
                let mut added = added_headers(ctx, session, status);
                if let Some((name, value)) = header {
                    // Added in the access phase or by the range filter, before `add_header`.
                    added.insert(ctx.errors.carried.len(), (name.to_string(), value));
                }
                // ngx_http_special_response_handler ends keep-alive after these.
                let keepalive = !matches!(status, 400 | 413 | 414 | 495..=497 | 500 | 501);
                let filters = ctx.filters(session, &added);
                respond::send_with(
                    session,
                    status,
                    location.as_deref(),
                    None,
                    keepalive,
                    filters,
                )
                .await
            }
        }
    }
}

/// A `Location` made absolute as nginx makes a relative one (`absolute_redirect`).
fn absolute_location(
    local: Option<std::net::SocketAddr>,
    ctx: &RequestCtx,
    location: Vec<u8>,
) -> Vec<u8> {
    match location.starts_with(b"/") {
        true => redirect::absolute(ctx.tls, ctx.host.as_deref(), local, &location),
        false => location,
    }
}

/// Where `route` leads: an answer, or the phases of the location it chose.
async fn after_route(session: &mut Session, ctx: &mut RequestCtx, routed: Route) -> Result<Next> {
    if !matches!(routed, Route::Reject(_)) {
        keep_alive_as_location(session, ctx.location.as_deref());
    }
    if let Route::Reject(495..=497) = routed {
        // Refused before any location: the server's own settings (its error_page) apply.
        ctx.location = ctx.server.as_ref().map(|s| s.fallback.clone());
    }
    let Route::Location = routed else {
        return Ok(Next::Answer(Answer::of_route(session, ctx, routed)));
    };
    let Some(location) = ctx.location.clone() else {
        return Error::e_explain(ErrorType::InternalError, "no location chosen");
    };
    if location.internal && !ctx.errors.internal {
        // ngx_http_core_find_config_phase: a client's own request for it is not found.
        return Ok(Next::Answer(Answer::special(404)));
    }
    location_phases(session, ctx, &location).await
}

/// How often a request that limit_req delays looks at its client's connection.
const CLIENT_WATCH: std::time::Duration = std::time::Duration::from_millis(50);

/// limit_req's delay, watching the client as nginx does meanwhile (ngx_http_test_reading):
/// false as soon as the client has closed its connection, and the request must not go on.
/// Pingora reads the connection itself, and the request's body may still be waiting in it, so
/// the close is seen in the socket's TCP state instead, which the client's FIN or reset moves
/// out of ESTABLISHED: looked at every [`CLIENT_WATCH`] and as the delay ends. A connection
/// without one (a Unix socket) is not watched.
async fn delay_unless_client_gone(session: &Session, delay: std::time::Duration) -> bool {
    const TCP_ESTABLISHED: u8 = 1;
    let socket = session.digest().and_then(|d| d.socket_digest.clone());
    let Some(socket) = socket.filter(|s| s.tcp_info().is_some()) else {
        tokio::time::sleep(delay).await;
        return true;
    };
    let gone = || {
        socket
            .tcp_info()
            .is_some_and(|i| i.tcpi_state != TCP_ESTABLISHED)
    };
    let end = tokio::time::Instant::now() + delay;
    loop {
        if gone() {
            return false;
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            return true;
        }
        tokio::time::sleep_until(end.min(now + CLIENT_WATCH)).await;
    }
}

/// nginx's phases after the location's rewrite phase: the body size check, pre-access (realip,
/// limits), access (allow/deny, auth_basic), then the content: the upstream, or a 404 where
/// nginx would look for a file.
async fn location_phases(
    session: &mut Session,
    ctx: &mut RequestCtx,
    location: &LocationConf,
) -> Result<Next> {
    let answer = |status| Ok(Next::Answer(Answer::special(status)));
    // nginx's find-config phase refuses a body over client_max_body_size, before the
    // location's limits and rules.
    let max = location.client.max_body_size;
    if max > 0 {
        let length = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| {
                std::str::from_utf8(v.as_bytes())
                    .ok()?
                    .trim()
                    .parse::<u64>()
                    .ok()
            });
        if length.is_some_and(|l| l > max) {
            return answer(413);
        }
    }
    // nginx's pre-access and access phases: after the rewrite phase's `return`, before
    // the content.
    ctx.real_ip_by_location(client_addr(session), session.req_header().into());
    let verdict = ctx.limit_requests(location, Exchange::of(session), Instant::now());
    let refused = match verdict {
        Verdict::Refuse(status) => Some(status),
        Verdict::Wait(delay) if !delay_unless_client_gone(session, delay).await => {
            // Nothing is answered and the request goes nowhere; the log says 499.
            return Error::e_explain(
                ErrorType::ConnectionClosed,
                "client closed the connection during limit_req's delay",
            )
            .map_err(|e| e.into_down());
        }
        _ => ctx.limit_connections(location, Exchange::of(session)),
    };
    if let Some(status) = refused {
        return answer(status);
    }
    match access_phase(session, ctx, location).await {
        Access::Allowed => {}
        Access::Forbidden => return answer(403),
        Access::Unauthorized(mut challenges) => {
            // Every challenge goes out, in order: all but the last as if carried over.
            let last = challenges.pop();
            let carried = challenges
                .into_iter()
                .map(|c| ("WWW-Authenticate".into(), c));
            ctx.errors.carried.extend(carried);
            return Ok(Next::Answer(Answer::Special {
                status: 401,
                location: None,
                header: last.map(|c| ("WWW-Authenticate", c)),
                last: false,
            }));
        }
        Access::Failed => return answer(500),
    }
    if let Some(next) = content(Exchange::of(session), ctx, location).await {
        return Ok(next);
    }
    let dynamic = ctx.dynamic.as_ref().map(|target| target.proxy.clone());
    if let Some(proxy) = dynamic.as_deref().or(location.proxy.as_ref()) {
        // Once, before any server has had the body: after an error page that followed a try,
        // the body is where that try left it. One that followed a refusal (a 401 sent to a
        // sign-in page) finds it unread.
        if ctx.buffered_body.is_none() && ctx.upstream.addrs.is_empty() {
            if let Some(status) = buffer_chunked_body(session, ctx, proxy, max).await? {
                return Ok(Next::Answer(Answer::Bare(status)));
            }
        }
    }
    Ok(Next::Proxy)
}

/// What serves the request in nginx's content phase, for a request or a subrequest: try_files,
/// then the location's files when it does not proxy. `None`: the upstream, found now for a
/// `proxy_pass` with variables.
async fn content(x: Exchange<'_>, ctx: &mut RequestCtx, location: &LocationConf) -> Option<Next> {
    if let Some(next) = files::try_files_phase(x, ctx, location) {
        return Some(next);
    }
    if let Some(pass) = &location.dynamic_pass {
        let url = eval_to_vec(&pass.url, &ctx.vars_of(x, None));
        let resolver = location.resolver.as_deref();
        let log =
            |message: std::fmt::Arguments<'_>| ctx.log_error(x, None, LogLevel::Error, message);
        match pass.target(&url, &ctx.runtime.pools, resolver, &log).await {
            Ok(target) => ctx.dynamic = Some(Box::new(target)),
            Err(status) => return Some(Next::Answer(Answer::special(status))),
        }
    } else if location.proxy.is_none() {
        return Some(files::content(x, ctx, location, files::Failures::Logged));
    }
    None
}

/// nginx's access phase ([`access_phase`](super::access_phase)): `allow`/`deny`, then
/// `auth_basic`, then `auth_request`'s subrequest, as far as `satisfy` lets it go.
async fn access_phase(session: &Session, ctx: &mut RequestCtx, location: &LocationConf) -> Access {
    let client = ctx.client(client_addr(session)).map(|a| a.ip());
    let auth = location.auth.as_deref();
    let mut phase = AccessPhase::new(auth.map_or(Satisfy::All, |a| a.satisfy));
    let by_rules = Said::of_rules(location.access.decide(client));
    // nginx says why only when the rules alone decide.
    if by_rules == Said::Forbidden && phase.satisfy() == Satisfy::All {
        let x = Exchange::of(session);
        ctx.log_error(
            x,
            None,
            LogLevel::Error,
            format_args!("access forbidden by rule"),
        );
    }
    if let Some(verdict) = phase.hear(by_rules) {
        return verdict;
    }
    let Some(auth) = auth else {
        return phase.end();
    };
    if let Some(basic) = &auth.basic {
        let said = match auth_basic::authenticate(basic, &ctx.vars(session, None)) {
            auth_basic::Step::Done(said) => said,
            auth_basic::Step::Check(check) => {
                let (said, why) = tokio::task::spawn_blocking(move || check.run())
                    .await
                    .unwrap_or((Said::Failed, None));
                if let Some((level, why)) = why {
                    ctx.log_error(Exchange::of(session), None, level, format_args!("{why}"));
                }
                said
            }
        };
        if let Some(verdict) = phase.hear(said) {
            return verdict;
        }
    }
    if let Some(request) = &auth.request {
        let said = auth_request::check(session, ctx, request).await;
        if let Some(verdict) = phase.hear(said) {
            return verdict;
        }
    }
    phase.end()
}

/// The most a chunked body may be read ahead: Pingora's retry buffer, which sends the body
/// upstream once it is read, holds 64 KB.
const CHUNKED_READ_AHEAD: u64 = 64 * 1024;

/// nginx reads a chunked request body whole before it proxies (proxy_request_buffering), and
/// sends it with a Content-Length; an HTTP/1.0 upstream could not take it chunked anyway. The
/// appliance does the same for an HTTP/1.0 upstream, for bodies up to 64 KB; an HTTP/1.1
/// upstream gets the body streamed, chunked. Returns a status to answer with instead of
/// proxying: 413 over `client_max_body_size` or over what can be read ahead.
async fn buffer_chunked_body(
    session: &mut Session,
    ctx: &mut RequestCtx,
    proxy: &ProxyConf,
    max: u64,
) -> Result<Option<u16>> {
    let chunked = session
        .req_header()
        .headers
        .get(http::header::TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    if !chunked || !proxy.pass_request_body || proxy.http_version != HttpVersion::Http10 {
        return Ok(None);
    }
    session.enable_retry_buffering();
    let mut total = 0u64;
    while let Some(chunk) = session.read_request_body().await? {
        total += chunk.len() as u64;
        if max > 0 && total > max {
            return Ok(Some(413));
        }
        if total > CHUNKED_READ_AHEAD {
            tracing::error!(
                "a chunked request body over {CHUNKED_READ_AHEAD} bytes for an HTTP/1.0 upstream \
                 cannot be buffered; set proxy_http_version 1.1 to stream it"
            );
            return Ok(Some(413));
        }
    }
    ctx.buffered_body = Some(total);
    Ok(None)
}

/// Counts a request on an upstream connection; true when the connection has already carried
/// the pool's `keepalive_requests` and must not carry another.
fn worn_out(
    pool: &super::runtime::UpstreamPool,
    fd: std::os::unix::io::RawFd,
    reused: bool,
) -> bool {
    let Ok(mut uses) = pool.connection_uses.lock() else {
        return false;
    };
    if !reused {
        uses.insert(fd, 1);
        return false;
    }
    let count = uses.entry(fd).or_insert(0);
    if *count >= pool.keepalive_requests {
        uses.remove(&fd);
        return true;
    }
    *count += 1;
    false
}

/// Adds the sticky-session cookie to a response from the upstream, when the pool has
/// stickiness and the cookie must be (re)issued for the server that answered.
/// Frames a response whose body a filter changes (gunzip, the sub filter) as nginx's chunked
/// filter frames a body of unknown length: chunked to an HTTP/1.1 client, up to the close for
/// an HTTP/1.0 one, and nothing for a HEAD or a status without a body.
fn frame_unknown_length(
    session: &mut Session,
    response: &mut ResponseHeader,
    bodiless: bool,
) -> Result<()> {
    if bodiless {
        return Ok(());
    }
    match session.req_header().version < http::Version::HTTP_11 {
        true => session.set_keepalive(None),
        false => response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?,
    }
    Ok(())
}

fn add_sticky_cookie(response: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    let (Some(proxy), Some(affinity)) = (ctx.proxy(), ctx.affinity.as_ref()) else {
        return Ok(());
    };
    let (Some(sticky), Some(served)) = (
        proxy.pool.sticky.as_ref(),
        ctx.attempt.as_ref().and_then(|a| a.held()),
    ) else {
        return Ok(());
    };
    if ctx.upstream.response.is_none() {
        return Ok(());
    }
    let set_cookies: Vec<Vec<u8>> = response
        .headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    let cookie = sticky.set_cookie(
        affinity,
        served,
        set_cookies.iter().map(Vec::as_slice),
        ctx.tls,
        SystemTime::now(),
    );
    if let Some(cookie) = cookie {
        response.append_header(http::header::SET_COOKIE, cookie)?;
    }
    Ok(())
}

/// `proxy_redirect` on the `Location` and `Refresh` headers of an upstream response. Here,
/// unlike the fast path, headers keep Pingora's order, so a rewritten header is put back in
/// place of the old.
fn rewrite_redirects(
    session: &Session,
    response: &mut ResponseHeader,
    ctx: &RequestCtx,
) -> Result<()> {
    let Some(proxy) = ctx.proxy().filter(|p| !p.redirect.is_empty()) else {
        return Ok(());
    };
    let vars = ctx.vars(session, Some(proxy));
    for (name, written) in [
        (http::header::LOCATION, "Location"),
        (http::header::REFRESH, "Refresh"),
    ] {
        let values: Vec<Vec<u8>> = response
            .headers
            .get_all(&name)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        let mut changed = false;
        let values: Vec<Vec<u8>> = values
            .into_iter()
            .map(|value| {
                let rewritten = if name == http::header::LOCATION {
                    redirect::rewrite_location(&proxy.redirect, &value, &vars).map(|v| {
                        if v.starts_with(b"/") {
                            redirect::absolute(
                                ctx.tls,
                                ctx.host.as_deref(),
                                local_addr(session),
                                &v,
                            )
                        } else {
                            v
                        }
                    })
                } else {
                    redirect::rewrite_refresh(&proxy.redirect, &value, &vars)
                };
                changed |= rewritten.is_some();
                rewritten.unwrap_or(value)
            })
            .collect();
        if changed {
            response.remove_header(&name);
            for value in values {
                response.append_header(written, value)?;
            }
        }
    }
    Ok(())
}

/// The host part of `$proxy_host`, for SNI.
fn host_only(proxy_host: &str) -> &str {
    if let Some(rest) = proxy_host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    proxy_host.rsplit_once(':').map_or(proxy_host, |(h, _)| h)
}

/// The location's `add_header` headers for a response of `status` (nginx adds them to 200,
/// 201, 204, 206, 301, 302, 303, 304, 307 and 308, and with `always` to every status).
fn added_headers(ctx: &RequestCtx, session: &Session, status: u16) -> Vec<(String, Vec<u8>)> {
    let content_type = respond::error_page(status).map(|_| "text/html");
    added_headers_typed(ctx, session, status, content_type)
}

/// [`added_headers`] for a response of the given `Content-Type` (a `return` with a body).
fn added_headers_typed(
    ctx: &RequestCtx,
    session: &Session,
    status: u16,
    content_type: Option<&str>,
) -> Vec<(String, Vec<u8>)> {
    // What the answer an error page replaced had set goes out first (nginx keeps its
    // headers_out across the internal redirect).
    let mut added = ctx.errors.carried.clone();
    let Some(location) = ctx.location.as_ref() else {
        return added;
    };
    let response = own_response(location, status, content_type);
    let x = Exchange {
        response: response.as_ref(),
        ..Exchange::of(session)
    };
    added.extend(headers_filter(
        location,
        status,
        &ctx.vars_of(x, ctx.proxy()),
        ctx.date(),
    ));
    added
}

/// The head of a response the appliance makes itself, as `$sent_http_*` sees it while the
/// headers filter runs: its status and `Content-Type`. Only made when a value may read it.
fn own_response(
    location: &LocationConf,
    status: u16,
    content_type: Option<&str>,
) -> Option<ResponseHeader> {
    let reads = location.add_header_reads_response
        || location
            .expires
            .as_ref()
            .is_some_and(|e| e.reads_response());
    let content_type = content_type.filter(|_| reads)?;
    let mut response = ResponseHeader::build(status, Some(1)).ok()?;
    response.insert_header("Content-Type", content_type).ok()?;
    Some(response)
}

/// nginx's headers filter on a response the appliance makes itself (which has no `Expires`
/// or `Cache-Control` of its own): `expires`' two headers, then `add_header`'s.
fn headers_filter(
    location: &LocationConf,
    status: u16,
    vars: &RequestVars<'_>,
    date: SystemTime,
) -> Vec<(String, Vec<u8>)> {
    let mut added = Vec::new();
    if let Some((expires, cache_control)) = location
        .expires
        .as_ref()
        .and_then(|e| e.headers(status, vars, None, date))
    {
        added.push(("Expires".to_string(), expires.into_bytes()));
        added.push(("Cache-Control".to_string(), cache_control.into_bytes()));
    }
    added.extend(added_by_rules(&location.add_header, status, vars));
    added
}

/// `add_header`'s headers for a response of `status`: those marked `always`, or all of them
/// for the statuses nginx adds them to; an empty value adds nothing.
fn added_by_rules(
    rules: &[HeaderRule],
    status: u16,
    vars: &RequestVars<'_>,
) -> Vec<(String, Vec<u8>)> {
    let ok_status = super::expires::safe_status(status);
    let mut added = Vec::new();
    for rule in rules {
        if !ok_status && !rule.always {
            continue;
        }
        let value = eval_to_vec(&rule.value, vars);
        if !value.is_empty() {
            added.push((rule.name.clone(), value));
        }
    }
    added
}

/// Keep-alive as the location has it. An HTTP/1.0 client without `Connection: keep-alive` has
/// already turned keep-alive off (Pingora's respect_keepalive); the timeout must not turn it
/// back on, or the client waits for a close that never comes (nginx closes).
fn keep_alive_as_location(session: &mut Session, location: Option<&LocationConf>) {
    let Some(location) = location else {
        return;
    };
    if session.get_keepalive().is_some() {
        session.set_keepalive(match location.client.keepalive_timeout.as_secs() {
            // A graceful stop ends keep-alive after the current request.
            _ if super::draining() => None,
            0 => None,
            secs => Some(secs),
        });
    }
}

/// Answers a `return` that is not a special response (see [`Answer::of_route`]): the text as
/// body, or nginx's page, with the status an error page set if one led here.
async fn answer_return(
    session: &mut Session,
    ctx: &RequestCtx,
    ret: &super::runtime::ReturnConf,
) -> Result<()> {
    let status = ctx.errors.err_status.unwrap_or(ret.status);
    let body = ret
        .body
        .as_ref()
        .map(|t| eval_to_vec(t, &ctx.vars(session, None)));
    // nginx types its own responses by the URI's extension (`types`, `default_type`).
    let content_type = match (&ctx.location, &ctx.server) {
        (Some(location), _) => location.content_types.for_uri(&ctx.uri.path).to_string(),
        (None, Some(server)) => server
            .fallback
            .content_types
            .for_uri(&ctx.uri.path)
            .to_string(),
        (None, None) => "text/plain".to_string(),
    };
    // A body of the return's own, else nginx's page (text/html) for the status.
    let typed = match &body {
        Some(_) => Some(content_type.as_str()),
        None => respond::error_page(status).map(|_| "text/html"),
    };
    let added = added_headers_typed(ctx, session, status, typed);
    let body = body.map(|body| (Bytes::from(body), content_type.as_str()));
    let filters = ctx.filters(session, &added);
    respond::send_with(session, status, None, body, true, filters).await
}

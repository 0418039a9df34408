//! `auth_request`: the subrequest ngx_http_auth_request_module makes in the access phase, and
//! what its status means for the request.
//!
//! The subrequest is made as ngx_http_subrequest makes it (nginx 1.22):
//! - its URI is the one configured, as written, without arguments; it enters nginx's phases
//!   at the server's rewrite phase, and `internal` locations take it;
//! - it is a GET, with the client's headers (a client's `Content-Length` too, which nginx
//!   passes on although it sends no body: hence `proxy_set_header Content-Length ""` in
//!   every guide);
//! - it shares the request's variables: `$request_uri`, `$request_method` and `$http_*` are
//!   the client's, and what `set` does in it the request sees after;
//! - its access phase is skipped, and its answer is never sent: only the status and the
//!   response's headers count. No byte of the upstream's body is read, so a connection goes
//!   back to the keep-alive pool only when the response has none.
//!
//! Then: a 2xx lets the request in; 401 and 403 refuse it (a 401 with the upstream's first
//! `WWW-Authenticate`); any other status, an upstream that fails included, is "auth request
//! unexpected status" and a 500. `auth_request_set` values are evaluated in the subrequest
//! once it is done, whatever its status.

use std::sync::OnceLock;
use std::time::Instant;

use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::ErrorType;

use super::super::access_phase::{AuthRequestConf, Said};
use super::super::balance::Outcome;
use super::super::vars::eval_to_vec;
use super::{
    content, peer_of, route_from_server_rewrite, upstream_request, Answer, Exchange, Next,
    RequestCtx, Route,
};
use crate::config::LogLevel;
use crate::config::NextUpstream;

/// The connections subrequests make: Pingora's HTTP client, with its own keep-alive pool
/// (TLS and timeouts as the proxied requests' peers say).
fn connector() -> &'static Connector {
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    CONNECTOR.get_or_init(|| Connector::new(None))
}

/// The `auth_request` handler: makes the subrequest, sets the `auth_request_set` variables in
/// `ctx`, and says what the status means.
pub(super) async fn check(session: &Session, ctx: &mut RequestCtx, conf: &AuthRequestConf) -> Said {
    let x = Exchange::of(session);
    let mut sub = ctx.subrequest(&conf.uri);
    let status = run(&mut sub, x, session.req_header()).await;
    conclude(ctx, sub, x, conf, status)
}

/// The subrequest is over with `status`: the `auth_request_set` variables get their values
/// (evaluated in the subrequest), `ctx` takes back what the two share, and the status says
/// what it means for the request. Shared with the fast path.
pub(super) fn conclude(
    ctx: &mut RequestCtx,
    sub: RequestCtx,
    x: Exchange<'_>,
    conf: &AuthRequestConf,
    status: u16,
) -> Said {
    let values: Vec<_> = conf
        .set
        .iter()
        .map(|(name, value)| {
            (
                name.clone(),
                eval_to_vec(value, &sub.vars_of(x, sub.proxy())),
            )
        })
        .collect();
    let challenge = sub
        .upstream
        .response
        .as_ref()
        .and_then(|r| r.headers.get(http::header::WWW_AUTHENTICATE))
        .map(|v| v.as_bytes().to_vec());
    // nginx's log action is left at the proxy module's "sending to client" once the
    // subrequest went through it (ngx_http_upstream_finalize_request), and is unset otherwise.
    let action = match sub.proxy() {
        Some(_) => " while sending to client",
        None => "",
    };
    ctx.after_subrequest(sub);
    for (name, value) in values {
        ctx.set_declared(&name, value);
    }
    let said = said(status, challenge);
    if said == Said::Failed {
        let message = format_args!("auth request unexpected status: {status}{action}");
        ctx.log_error(x, None, LogLevel::Error, message);
    }
    said
}

/// What the subrequest's status says (ngx_http_auth_request_handler); `challenge`: the
/// upstream's `WWW-Authenticate`, which goes out with a 401.
fn said(status: u16, challenge: Option<Vec<u8>>) -> Said {
    match status {
        403 => Said::Forbidden,
        401 => Said::Unauthorized(challenge),
        200..=299 => Said::Ok,
        _ => Said::Failed,
    }
}

/// The subrequest's way through the phases: its status.
async fn run(sub: &mut RequestCtx, x: Exchange<'_>, client: &RequestHeader) -> u16 {
    let Some(server) = sub.server.clone() else {
        return 500;
    };
    match route_from_server_rewrite(sub, &server, x) {
        Route::Location => {}
        Route::Reject(status) | Route::Redirect(status, _) => return status,
        Route::Return(ret) => return ret.status,
        Route::AddSlash => return 301,
    }
    let Some(location) = sub.location.clone() else {
        return 500;
    };
    match content(x, sub, &location).await {
        Some(next) => status_of(next),
        None => proxy(sub, x, client).await,
    }
}

/// The status of an answer the subrequest's location makes itself (a file, a 404, ...).
fn status_of(next: Next) -> u16 {
    match next {
        Next::Answer(Answer::Special { status, .. } | Answer::Bare(status)) => status,
        Next::Answer(Answer::Return(ret)) => ret.status,
        Next::Answer(Answer::File(file)) => file.status,
        Next::Answer(Answer::Listing(..)) => 200,
        // An internal redirect (`index`, try_files' last entry) inside the subrequest.
        Next::Jump(_) | Next::Proxy => {
            tracing::error!(
                "auth request: the subrequest's internal redirect is not followed by the \
                 appliance"
            );
            500
        }
    }
}

/// Proxies the subrequest, trying servers as `proxy_next_upstream` allows: the status the
/// server answered with, or the one nginx gives up with.
async fn proxy(sub: &mut RequestCtx, x: Exchange<'_>, client: &RequestHeader) -> u16 {
    let location = sub.location.clone();
    let dynamic = sub.dynamic.as_ref().map(|target| target.proxy.clone());
    let Some(proxy) = dynamic
        .as_deref()
        .or(location.as_ref().and_then(|l| l.proxy.as_ref()))
    else {
        return 500;
    };
    loop {
        let Some(peer_id) = sub.choose_peer(x, proxy, Instant::now()) else {
            return sub.give_up_status;
        };
        let Ok(peer) = peer_of(x, sub, proxy, peer_id) else {
            return 500;
        };
        let (mut upstream, reused) = match connector().get_http_session(&*peer).await {
            Ok((session, reused)) => {
                if !reused {
                    crate::proxy::connection_tag::next_number();
                }
                (session, reused)
            }
            Err(e) => {
                crate::proxy::connection_tag::next_number();
                sub.log_upstream_error(x, &peer, &e);
                let timed_out = matches!(
                    e.etype(),
                    ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout
                );
                if sub.connect_failed(timed_out, "GET") {
                    continue;
                }
                return sub.give_up_status;
            }
        };
        sub.upstream.connected(Instant::now());
        // Pingora's proxy sets these itself for each request; its client does not.
        upstream.set_read_timeout(Some(proxy.read_timeout));
        upstream.set_write_timeout(Some(proxy.send_timeout));
        let sent = match upstream_request::build(
            proxy,
            client,
            &sub.matched(),
            &sub.vars_of(x, Some(proxy)),
        ) {
            Ok(request) => exchange(&mut upstream, request).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            sub.log_upstream_error(x, &peer, &e);
            let condition = match e.etype() {
                ErrorType::ReadTimedout | ErrorType::WriteTimedout => NextUpstream::Timeout,
                ErrorType::InvalidHTTPHeader | ErrorType::H1Error => NextUpstream::InvalidHeader,
                _ => NextUpstream::Error,
            };
            if sub.upstream_failed(condition, reused, "GET") {
                continue;
            }
            return sub.give_up_status;
        }
        let Some(response) = upstream.response_header().cloned() else {
            return 502;
        };
        let status = response.status.as_u16();
        if sub.retry_on_status(status, "GET", Instant::now()) {
            continue;
        }
        sub.release(Outcome::Success);
        sub.upstream.response = Some(Box::new(response));
        sub.upstream.end_try(Instant::now());
        match proxy.pool.keepalive {
            Some(_) => {
                // Pingora's client keeps it only when the response had no body to read.
                if let HttpSession::H1(h1) = &mut upstream {
                    if h1.is_body_done() {
                        h1.respect_keepalive();
                    }
                }
                let idle = Some(proxy.pool.keepalive_timeout);
                connector()
                    .release_http_session(upstream, &*peer, idle)
                    .await;
            }
            None => upstream.shutdown().await,
        }
        return status;
    }
}

/// Sends the request (no body) and reads the response's head.
async fn exchange(upstream: &mut HttpSession, request: RequestHeader) -> pingora::Result<()> {
    upstream.write_request_header(Box::new(request)).await?;
    match upstream.finish_request_body().await {
        // A client's Content-Length passed on with no body after it, as nginx does: the
        // server may wait for the body until proxy_read_timeout, in nginx too.
        Err(e) if e.etype() == &ErrorType::Custom("PrematureBodyEnd") => {}
        other => {
            other?;
        }
    }
    upstream.read_response_header().await
}

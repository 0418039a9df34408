//! `auth_request` on the fast path: the same subrequest as Pingora's path makes
//! ([`super::super::auth_request`]), over this path's own upstream connections.
//!
//! Why: through Pingora's session and client, a request with a subrequest costs about twice
//! nginx's CPU (docs/BENCHMARKS.md, `--auth-request`). The subrequest here is one more head
//! written and one more head read, as in nginx.
//!
//! It is planned before the request is taken ([`Connection::plan_auth`]): the subrequest's
//! location is found then, and a request whose subrequest this path cannot make (a file, a
//! `proxy_pass` with variables, an HTTPS upstream, ...) goes to Pingora whole, before any
//! upstream has seen it.

use tokio::io::{AsyncRead, AsyncWrite};

use super::super::super::access_phase::{Access, AccessPhase, AuthRequestConf, Said};
use super::super::super::balance::{Outcome, PeerAddr};
use super::super::super::runtime::LocationConf;
use super::super::super::sendfile::SendFile;
use super::super::{route_from_server_rewrite, RequestCtx, Route};
use super::{
    proxies_plainly, received_header, Connection, ResponseHead, TryFailed, CONNECTION,
    CONTENT_LENGTH,
};
use crate::config::Satisfy;
use crate::proxy::client_request::ParsedHead;

/// A location's access phase as this path runs it.
pub(super) enum AuthPlan {
    /// Nothing to ask: the rules decide alone, and let the request in.
    None,
    /// The subrequest to make, and where the phase stands before it.
    Ask(Box<Planned>),
}

pub(super) struct Planned {
    phase: AccessPhase,
    sub: RequestCtx,
    /// The subrequest's location proxies (this path's way); else it answered with this status
    /// in its rewrite phase (`return`).
    answered: Option<u16>,
}

/// How the subrequest ended on this path.
pub(super) enum AuthOutcome {
    Access(Access),
    /// The client closed its connection meanwhile.
    ClientGone,
}

impl<S: AsyncRead + AsyncWrite + SendFile + Unpin + Send> Connection<S> {
    /// The access phase of `location` up to its subrequest: `None` when this path cannot run
    /// it (auth_basic, a refusal by the rules that Pingora answers and logs, a subrequest's
    /// location this path cannot serve).
    pub(super) fn plan_auth(
        &self,
        ctx: &RequestCtx,
        request: &ParsedHead,
        location: &LocationConf,
    ) -> Option<AuthPlan> {
        let client = ctx.client(self.client_inet).map(|a| a.ip());
        let Some(auth) = location.auth.as_deref() else {
            return location.access.allows(client).then_some(AuthPlan::None);
        };
        let conf = auth.request.as_ref().filter(|_| auth.basic.is_none())?;
        let mut phase = AccessPhase::new(auth.satisfy);
        let by_rules = Said::of_rules(location.access.decide(client));
        if by_rules == Said::Forbidden && auth.satisfy == Satisfy::All {
            return None;
        }
        if let Some(verdict) = phase.hear(by_rules) {
            return (verdict == Access::Allowed).then_some(AuthPlan::None);
        }
        let server = ctx.server.clone()?;
        let mut sub = ctx.subrequest(&conf.uri);
        let answered =
            match route_from_server_rewrite(&mut sub, &server, self.exchange(request, None, 0)) {
                Route::Location => None,
                Route::Return(ret) => Some(ret.status),
                Route::Reject(status) | Route::Redirect(status, _) => Some(status),
                Route::AddSlash => Some(301),
            };
        if answered.is_none() {
            let target = sub.location.as_deref()?;
            // Its access phase and error pages do not apply (nor, in nginx, does `internal`).
            if target.dynamic_pass.is_some() || !proxies_plainly(target) {
                return None;
            }
        }
        Some(AuthPlan::Ask(Box::new(Planned {
            phase,
            sub,
            answered,
        })))
    }

    /// Makes the planned subrequest; sets the `auth_request_set` variables in `ctx`.
    pub(super) async fn ask(
        &mut self,
        ctx: &mut RequestCtx,
        request: &ParsedHead,
        location: &LocationConf,
        planned: Planned,
    ) -> AuthOutcome {
        let Planned {
            mut phase,
            mut sub,
            answered,
        } = planned;
        let Some(auth_request) = location.auth.as_deref().and_then(|a| a.request.as_ref()) else {
            return AuthOutcome::Access(Access::Failed);
        };
        let status = match answered {
            Some(status) => status,
            None => match self.exchange_sub(&mut sub, request, auth_request).await {
                Some(status) => status,
                None => {
                    ctx.after_subrequest(sub);
                    return AuthOutcome::ClientGone;
                }
            },
        };
        let x = self.exchange(request, None, 0);
        let said = super::super::auth_request::conclude(ctx, sub, x, auth_request, status);
        AuthOutcome::Access(phase.hear(said).unwrap_or_else(|| phase.end()))
    }

    /// Proxies the subrequest, trying servers as `proxy_next_upstream` allows: the status the
    /// server answered with, or the one nginx gives up with; `None` when the client left.
    async fn exchange_sub(
        &mut self,
        sub: &mut RequestCtx,
        request: &ParsedHead,
        conf: &AuthRequestConf,
    ) -> Option<u16> {
        let location = sub.location.clone()?;
        let proxy = location.proxy.as_ref()?;
        let pool = &proxy.pool;
        loop {
            let exchange = self.exchange(request, None, 0);
            let Some(peer) = sub.choose_peer(exchange, proxy, self.now) else {
                return Some(sub.give_up_status);
            };
            let Some(PeerAddr::Inet(addr)) = pool.balancer.peer(peer).map(|p| p.addr.clone())
            else {
                return Some(sub.give_up_status);
            };
            sub.upstream.addrs.push(PeerAddr::Inet(addr));
            sub.upstream.begin_try(self.now);
            let mut upstream = match self.upstream_to(sub, request, proxy, (peer, addr)).await {
                Ok(upstream) => upstream,
                Err(timed_out) => {
                    if sub.connect_failed(timed_out, "GET") {
                        continue;
                    }
                    return Some(sub.give_up_status);
                }
            };
            sub.upstream.connected(self.now);
            let head = match self
                .exchange_head(sub, (request, &[]), proxy, addr, &mut upstream)
                .await
            {
                Ok(head) => head,
                Err(TryFailed::ClientGone) => {
                    sub.release_at(Outcome::Success, self.now);
                    return None;
                }
                Err(TryFailed::Upstream(condition)) => {
                    if sub.upstream_failed(condition, upstream.reused, "GET") {
                        continue;
                    }
                    return Some(sub.give_up_status);
                }
            };
            if sub.retry_on_status(head.status, "GET", self.now) {
                continue;
            }
            sub.release_at(Outcome::Success, self.now);
            sub.upstream.end_try(self.now);
            if head.status == 401 || !conf.set.is_empty() {
                sub.upstream.response =
                    received_header(head.status, &self.response_headers, &self.upstream_buf)
                        .map(Box::new);
            }
            // No byte of the body is read, as in nginx: only a response without one leaves
            // the connection fit for the next request.
            if pool.keepalive.is_some() && self.bodiless(&head) {
                pool.idle
                    .put(peer, upstream, pool.keepalive_requests, self.now);
            }
            return Some(head.status);
        }
    }

    /// Whether the response ends with its head, and its connection may carry another request.
    fn bodiless(&self, head: &ResponseHead) -> bool {
        let buf = &self.upstream_buf;
        let header = |known: usize| {
            self.response_headers
                .iter()
                .find(|(_, _, k)| *k == Some(known as u8))
                .map(|(_, v, _)| &buf[v.clone()])
        };
        let no_body = matches!(head.status, 204 | 304)
            || header(CONTENT_LENGTH).is_some_and(|v| v.trim_ascii() == b"0");
        let close = head.version == 0
            || header(CONNECTION).is_some_and(|v| super::contains_token(v, b"close"));
        no_body && !close && buf.len() == head.len
    }
}

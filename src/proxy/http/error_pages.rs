//! `error_page` on Pingora's path (ngx_http_special_response_handler, ngx_http_send_error_page,
//! ngx_http_internal_redirect and ngx_http_named_location, nginx 1.22).
//!
//! An answer of the appliance's own, or an upstream failure, whose status the location has a
//! page for sends the request on: to another URI (the locations searched again, GET), to a
//! named location (the same request), or to the client as a redirect. Before the upstream, in
//! `request_filter`, the request is followed at once ([`settle`]). Once the upstream has
//! failed or answered with a status `proxy_intercept_errors` takes, the page is noted and
//! Pingora is asked to retry: its next `upstream_peer` follows the page ([`follow`]) and
//! proxies to where it leads, or answers.
//!
//! The locations that may need this are kept off the fast path (`fast::suits`).

use pingora::proxy::Session;
use pingora::Result;

use super::super::charset;
use super::super::error_page::{Jump, Overwrite};
use super::super::locations::Found;
use super::super::respond;
use super::super::runtime::{LocationConf, ServerConf};
use super::{
    after_route, route_from_location, route_from_server_rewrite, Answer, Exchange, Next,
    RequestCtx, MAX_URI_CHANGES,
};
use crate::config::LogLevel;

/// What `error_page` has done to a request.
#[derive(Default)]
pub(super) struct ErrorPageState {
    /// A page sent the request on: `internal` locations take it, and its body is not read
    /// again.
    pub internal: bool,
    /// nginx's `r->error_page`: pages are not consulted again, unless `recursive_error_pages`.
    pub used: bool,
    /// nginx's `r->err_status`: the status the answer goes out with, whatever the target
    /// answers (`None`: the target's own, after `=`).
    pub err_status: Option<u16>,
    /// Pages followed: nginx allows as many URI changes as rewrites.
    pub jumps: u32,
    /// A page by URI turned the method into GET (HEAD stays): nginx's `r->method`.
    pub as_get: bool,
    /// A page chosen where Pingora's retry carries it out: `upstream_peer` follows it.
    pub pending: Option<Jump>,
    /// Headers the answer a page replaced had set (a 401's `WWW-Authenticate`): nginx keeps
    /// them for the page's answer.
    pub carried: Vec<(String, Vec<u8>)>,
}

/// Follows pages from `next` until the request is to be proxied (`false`) or has been
/// answered (`true`).
pub(super) async fn settle(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut next: Next,
) -> Result<bool> {
    loop {
        let answer = match next {
            Next::Proxy => return Ok(false),
            Next::Jump(jump) => {
                next = follow(session, ctx, jump).await?;
                continue;
            }
            Next::Answer(answer) => answer,
        };
        let page = match &answer {
            Answer::Special {
                status,
                last: false,
                header,
                ..
            } => page_for(session, ctx, *status).map(|jump| (jump, header.clone())),
            _ => None,
        };
        match page {
            Some((jump, header)) => {
                if let Some((name, value)) = header {
                    ctx.errors.carried.push((name.to_string(), value));
                }
                next = follow(session, ctx, jump).await?
            }
            None => {
                answer.send(session, ctx).await?;
                return Ok(true);
            }
        }
    }
}

/// The page the current location has for an error of `status`, if pages may still be used
/// (ngx_http_special_response_handler); the status the answer will go out with is noted.
pub(super) fn page_for(session: &Session, ctx: &mut RequestCtx, status: u16) -> Option<Jump> {
    // 444 closes the connection before any response (ngx_http_finalize_request).
    if status == respond::CLOSE || ctx.errors.used || ctx.errors.jumps >= MAX_URI_CHANGES {
        return None;
    }
    let pages = ctx.location.as_ref()?.error_pages.clone()?;
    if !pages.recursive {
        ctx.errors.used = true;
    }
    let rule = pages.find(status)?;
    ctx.errors.err_status = match rule.overwrite {
        Overwrite::Keep => Some(status),
        Overwrite::Target => None,
        Overwrite::Code(code) => Some(code),
    };
    Some(rule.jump(&ctx.vars(session, None)))
}

/// Sends the request where a page leads and runs the phases there.
pub(super) async fn follow(
    session: &mut Session,
    ctx: &mut RequestCtx,
    jump: Jump,
) -> Result<Next> {
    ctx.leave_upstream();
    if !ctx.errors.jump() {
        // ngx_http_internal_redirect: out of URI changes (`index /`, try_files in a circle).
        let message = format_args!(
            "rewrite or internal redirection cycle while internally redirecting to \"{}\"",
            String::from_utf8_lossy(&ctx.uri.path)
        );
        ctx.log_error(Exchange::of(session), None, LogLevel::Error, message);
        return Ok(Next::Answer(Answer::Special {
            status: 500,
            location: None,
            header: None,
            last: true,
        }));
    }
    let Some(server) = ctx.server.clone() else {
        return Ok(Next::Answer(Answer::special(500)));
    };
    let routed = match jump {
        // A redirect is sent as it is: no page is looked for again.
        Jump::Redirect(status, location) => {
            return Ok(Next::Answer(Answer::Special {
                status,
                location: Some(location),
                header: None,
                last: true,
            }))
        }
        Jump::Uri { path, args, get } => {
            if get && session.req_header().method != http::Method::HEAD {
                ctx.errors.as_get = true;
            }
            enter_uri(ctx, &server, Exchange::of(session), (path, args))
        }
        Jump::Named(name) => {
            let found = server.named.iter().find(|l| l.name.as_bytes() == name);
            let Some(named) = found.cloned() else {
                let message = format_args!(
                    "could not find named location \"{}\"",
                    String::from_utf8_lossy(&name)
                );
                ctx.log_error(Exchange::of(session), None, LogLevel::Error, message);
                return Ok(Next::Answer(Answer::special(500)));
            };
            ctx.prefix_len = None;
            route_from_location(ctx, &server, Exchange::of(session), Some(named))
        }
    };
    after_route(session, ctx, routed).await
}

impl ErrorPageState {
    /// Counts an internal redirect (by a page, `index` or `try_files`): the request is
    /// nginx's own from now on. False when that is more than nginx allows (a cycle).
    pub(super) fn jump(&mut self) -> bool {
        self.jumps += 1;
        self.internal = true;
        self.jumps <= MAX_URI_CHANGES
    }
}

/// nginx's internal redirect to a URI (ngx_http_internal_redirect): the request enters the
/// server's rewrite phase again with `path` and `args`, which the upstream then gets escaped
/// (nginx's `valid_unparsed_uri` off).
pub(super) fn enter_uri(
    ctx: &mut RequestCtx,
    server: &ServerConf,
    x: Exchange<'_>,
    (path, args): (Vec<u8>, Option<Vec<u8>>),
) -> super::Route {
    ctx.uri.path = path;
    ctx.uri.args = args;
    ctx.captures.clear();
    ctx.prefix_len = None;
    let rewrite = ctx.rewritten();
    rewrite.uri_rewritten = true;
    rewrite.target_changed = true;
    rewrite.location_invalid = false;
    route_from_server_rewrite(ctx, server, x)
}

/// Whether the fast path, which follows no internal redirect, may serve `location` of
/// `server`: it has no page, or only pages it can send itself ([`fast_page_file`]). That is a
/// page by URI (no variables, no `=code`) to a location that serves files, with the same
/// headers to add and no access checks, so that the answer is the file with the error's
/// status. nginx's usual `error_page 500 502 503 504 /50x.html` with
/// `location = /50x.html { root html; }` is one. Decided once per location.
pub(super) fn fast_path_may_serve(location: &LocationConf, server: &ServerConf) -> bool {
    let Some(pages) = &location.error_pages else {
        return true;
    };
    *location.error_pages_fast.get_or_init(|| {
        let intercepts = location.proxy.as_ref().is_some_and(|p| p.intercept_errors);
        if intercepts || server.scripted {
            return false;
        }
        pages.rules().iter().all(|rule| {
            if rule.overwrite != Overwrite::Keep {
                return false;
            }
            let Some(path) = rule.static_uri() else {
                return false;
            };
            let target = match server.locations.find(&path) {
                Found::Location { value, .. } => value,
                Found::None => &server.fallback,
                Found::AddSlash(_) => return false,
            };
            // The fast path sends the file with its ETag.
            let reads_a_file = target.proxy.is_none()
                && target.dynamic_pass.is_none()
                && target.script.is_none()
                && target.try_files.is_none()
                && target.conditional.etag
                && !path.ends_with(b"/");
            reads_a_file
                && target.access.is_empty()
                && target.auth.is_none()
                && target.limits.is_none()
                && target.add_header == location.add_header
                && target.expires.is_none()
                && location.expires.is_none()
        })
    })
}

/// For the fast path, answering `status` in a location [`fast_path_may_serve`] took: the file
/// its page names and that file's type, if it has a page for the status.
pub(super) fn fast_page_file(
    location: &LocationConf,
    server: &ServerConf,
    status: u16,
    vars: &crate::proxy::vars::RequestVars<'_>,
) -> Option<(std::path::PathBuf, String)> {
    let rule = location.error_pages.as_ref()?.find(status)?;
    let uri = rule.static_uri()?;
    let (target, prefix_len) = match server.locations.find(&uri) {
        Found::Location { value, .. } => (value, value.name.len()),
        _ => (&server.fallback, 0),
    };
    let eval = |t: &crate::config::template::Template| crate::proxy::vars::eval_to_vec(t, vars);
    let path = crate::proxy::files::map_uri(
        target.root.as_ref().map(eval).as_deref(),
        target.alias.as_ref().map(eval).as_deref(),
        target.kind.is_regex(),
        prefix_len,
        &uri,
    );
    let content_type = target.content_types.for_uri(&uri);
    let charset = target.charset.as_deref();
    Some((
        path,
        charset::apply(charset, status, content_type).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Appliance;
    use crate::proxy::runtime::Runtime;
    use std::sync::Arc;

    /// The first server of a config whose first server has `server` (TOML) and these
    /// locations.
    fn server(server: &str, locations: &str) -> Arc<ServerConf> {
        let text = format!(
            "[[http.upstream]]\nname = \"app\"\nserver = [{{ address = \"127.0.0.1:9\" }}]\n\
             [[http.server]]\nlisten = [{{ address = \"127.0.0.1:8080\" }}]\n{server}\n{locations}"
        );
        let runtime = Runtime::build(&Appliance::from_toml(&text, "t.toml").unwrap()).unwrap();
        runtime.sockets[0].addrs[0].servers[0].clone()
    }

    fn fast_at(server: &ServerConf, uri: &str) -> bool {
        let Found::Location { value, .. } = server.locations.find(uri.as_bytes()) else {
            panic!("no location for {uri}");
        };
        fast_path_may_serve(value, server)
    }

    const PROXIED: &str =
        "[[http.server.location]]\npath = \"/\"\nproxy = { pass = \"http://app\" }\n";

    #[test]
    fn a_page_read_from_a_file_keeps_the_fast_path() {
        let files = "[[http.server.location]]\nkind = \"exact\"\npath = \"/50x.html\"\n\
                     root = \"/usr/share/nginx/html\"\n";
        let pages = "error_page = [{ codes = [500, 502, 503, 504], target = \"/50x.html\" }]";
        let s = server(pages, &format!("{PROXIED}{files}"));
        assert!(fast_at(&s, "/x"));
        // The answer would change: a status to answer with, a location that checks access.
        let with_code = "error_page = [{ codes = [502], target = \"/50x.html\", status = 200 }]";
        assert!(!fast_at(
            &server(with_code, &format!("{PROXIED}{files}")),
            "/x"
        ));
        let denied = format!("{files}access = [{{ deny = \"all\" }}]\n");
        assert!(!fast_at(
            &server(pages, &format!("{PROXIED}{denied}")),
            "/x"
        ));
    }

    #[test]
    fn pages_that_proxy_or_intercept_take_pingoras_path() {
        let named = "[[http.server.location]]\nkind = \"named\"\npath = \"@spare\"\n\
                     proxy = { pass = \"http://app\" }\n";
        let s = server(
            "error_page = [{ codes = [502], target = \"@spare\" }]",
            &format!("{PROXIED}{named}"),
        );
        assert!(!fast_at(&s, "/x"));
        let to_proxy = "error_page = [{ codes = [502], target = \"/other\" }]";
        assert!(!fast_at(&server(to_proxy, PROXIED), "/x"));
        let intercepting = "[[http.server.location]]\npath = \"/\"\n\
                            proxy = { pass = \"http://app\", intercept_errors = true }\n\
                            [[http.server.location]]\nkind = \"exact\"\npath = \"/404.html\"\n";
        let s = server(
            "error_page = [{ codes = [404], target = \"/404.html\" }]",
            intercepting,
        );
        assert!(!fast_at(&s, "/x"));
        // No pages: nothing to decide.
        assert!(fast_at(&server("", PROXIED), "/x"));
    }
}

//! The admin listener: `/status` (JSON), `/metrics` (Prometheus text) and `/healthz` (what an
//! NLB or a Route 53 health check asks), served by a Pingora service on the same server as the
//! data plane.
//!
//! Loopback by default. When a token is configured (required when the listener is reachable
//! from other hosts) `/status` and `/metrics` want `Authorization: Bearer <token>` and answer
//! 401 without it. `/healthz` never does: load balancer health checks cannot send headers, and
//! it tells nothing but 200 or 503.
//!
//! Other parts plug in through [`register_status`] and [`register_health_gate`].

mod health;
mod providers;
mod status;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

pub use health::{data_plane_problems, verdict, Verdict};
pub use providers::{
    register_health_gate, register_status, unregister, HealthGate, StatusProvider,
};

use crate::compile::describe_io_error;
use crate::compile::diag::Diagnostic;
use crate::config::Admin;
use crate::proxy::DataPlane;

/// The token `/status` and `/metrics` require, read from `token_file` when that is given.
pub fn token(admin: &Admin) -> Result<Option<String>, Diagnostic> {
    if let Some(t) = &admin.token {
        return Ok(Some(t.clone()));
    }
    let Some(path) = &admin.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostic::error(format!(
            "open() \"{}\" failed ({})",
            path.display(),
            describe_io_error(&e)
        ))
        .at_opt(admin.origin.as_ref())
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(Diagnostic::error(format!(
            "the admin token file \"{}\" is empty",
            path.display()
        ))
        .at_opt(admin.origin.as_ref()));
    }
    Ok(Some(token))
}

/// The admin listening service for `admin`, reading the data plane's current state.
pub fn service(admin: &Admin, plane: DataPlane) -> Service<HttpServer<AdminApp>> {
    let mut service = Service::new("admin".to_string(), HttpServer::new_app(AdminApp { plane }));
    service.add_tcp(&admin.listen.to_string());
    // A few requests a minute from a monitor: one thread is plenty.
    service.threads = Some(1);
    service
}

pub struct AdminApp {
    plane: DataPlane,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        if path == "/healthz" {
            let v = verdict(&self.plane);
            let status = if v.ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut body = if v.ok {
                "ok\n".to_string()
            } else {
                String::new()
            };
            for reason in &v.reasons {
                body.push_str(reason);
                body.push('\n');
            }
            return reply(status, "text/plain; charset=utf-8", body.into_bytes());
        }
        if !self.authorized(session) {
            let mut r = reply(
                StatusCode::UNAUTHORIZED,
                "text/plain; charset=utf-8",
                b"a bearer token is required\n".to_vec(),
            );
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"appliance\""),
            );
            return r;
        }
        match path.as_str() {
            "/status" => {
                let body =
                    serde_json::to_vec_pretty(&status::status(&self.plane)).unwrap_or_default();
                reply(StatusCode::OK, "application/json", body)
            }
            "/metrics" => {
                let runtime = self.plane.runtime.load();
                let body = crate::proxy::metrics::metrics().render(&runtime);
                reply(StatusCode::OK, prometheus::TEXT_FORMAT, body.into_bytes())
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                b"/status, /metrics, /healthz\n".to_vec(),
            ),
        }
    }
}

impl AdminApp {
    fn authorized(&self, session: &ServerSession) -> bool {
        let loaded = self.plane.loaded.load();
        let Some(expected) = loaded.admin_token.as_deref() else {
            return true;
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), expected.as_bytes())
    }
}

/// Compares without stopping at the first difference, so timing tells nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let len = r.body().len();
    let headers = r.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}

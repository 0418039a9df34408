//! The request sent upstream, built as ngx_http_proxy_create_request (nginx 1.22) builds it:
//!
//! - the request line: the client's method, the URI (the client's own when `proxy_pass` has no
//!   URI part; otherwise the URI part plus the rest of the path after the location prefix,
//!   re-escaped if the client's was, plus `?args`), and HTTP/1.0 unless `proxy_http_version 1.1`;
//! - the configured `proxy_set_header` headers in order, then nginx's defaults that were not
//!   overridden (`Host: $proxy_host`, `Connection: close`, the body framing); a header whose
//!   value comes out empty is not sent;
//! - then the client's headers in their order and case, minus every name set above.

use http::Version;
use pingora::http::{IntoCaseHeaderName, RequestHeader};
use pingora::prelude::*;

use super::runtime::{ProxyConf, ProxyHeaderValue};
use super::uri::{escape_uri, NormalizedUri};
use super::vars::{eval, RequestVars};
use crate::config::HttpVersion;

/// What the builder needs to know about the matched location.
pub struct Matched<'a> {
    pub uri: &'a NormalizedUri,
    /// The length of the matched location prefix, for URI replacement.
    pub prefix_len: Option<usize>,
    /// The length of a chunked body read ahead, sent as Content-Length instead.
    pub buffered_body: Option<u64>,
}

/// Builds the upstream request header, for Pingora.
pub fn build(
    proxy: &ProxyConf,
    client: &RequestHeader,
    matched: &Matched<'_>,
    vars: &RequestVars<'_>,
) -> Result<RequestHeader> {
    let target = request_target(proxy, client, matched);
    let mut req = RequestHeader::build(
        client.method.clone(),
        &target,
        Some(client.headers.len() + 4),
    )?;
    req.set_version(match proxy.http_version {
        HttpVersion::Http10 => Version::HTTP_10,
        HttpVersion::Http11 => Version::HTTP_11,
    });
    emit_headers(proxy, client, matched, vars, &mut req)?;
    Ok(req)
}

/// Writes the same request as [`build`] straight onto the wire (the fast path): request line,
/// headers, the empty line.
pub fn write(
    proxy: &ProxyConf,
    client: &RequestHeader,
    matched: &Matched<'_>,
    vars: &RequestVars<'_>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(client.method.as_str().as_bytes());
    out.push(b' ');
    match &proxy.uri {
        None => out.extend_from_slice(client.raw_path()),
        Some(_) => out.extend_from_slice(&request_target(proxy, client, matched)),
    }
    out.extend_from_slice(match proxy.http_version {
        HttpVersion::Http10 => b" HTTP/1.0\r\n".as_slice(),
        HttpVersion::Http11 => b" HTTP/1.1\r\n".as_slice(),
    });
    let mut wire = Wire(out);
    // Writing to a Vec cannot fail.
    let _ = emit_headers(proxy, client, matched, vars, &mut wire);
    wire.0.extend_from_slice(b"\r\n");
}

/// Where the request's headers go: Pingora's header, or the wire.
trait HeaderSink {
    fn configured(&mut self, name: &str, value: &[u8]) -> Result<()>;
    /// A client header: its name as sent, and (for Pingora's header) that name as Pingora
    /// keeps it.
    fn passed<N: IntoCaseHeaderName>(
        &mut self,
        name: &[u8],
        case_name: impl FnOnce() -> N,
        value: &http::HeaderValue,
    ) -> Result<()>;
}

impl HeaderSink for RequestHeader {
    fn configured(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.append_header(name.to_string(), value).map(|_| ())
    }

    fn passed<N: IntoCaseHeaderName>(
        &mut self,
        _name: &[u8],
        case_name: impl FnOnce() -> N,
        value: &http::HeaderValue,
    ) -> Result<()> {
        self.append_header(case_name(), value.clone()).map(|_| ())
    }
}

struct Wire<'a>(&'a mut Vec<u8>);

impl Wire<'_> {
    fn line(&mut self, name: &[u8], value: &[u8]) {
        self.0.extend_from_slice(name);
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value);
        self.0.extend_from_slice(b"\r\n");
    }
}

impl HeaderSink for Wire<'_> {
    fn configured(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.line(name.as_bytes(), value);
        Ok(())
    }

    fn passed<N: IntoCaseHeaderName>(
        &mut self,
        name: &[u8],
        _case_name: impl FnOnce() -> N,
        value: &http::HeaderValue,
    ) -> Result<()> {
        self.line(name, value.as_bytes());
        Ok(())
    }
}

/// The headers, in nginx's order, into `sink`.
fn emit_headers(
    proxy: &ProxyConf,
    client: &RequestHeader,
    matched: &Matched<'_>,
    vars: &RequestVars<'_>,
    req: &mut impl HeaderSink,
) -> Result<()> {
    let mut value = Vec::with_capacity(64);
    for header in &proxy.headers {
        value.clear();
        match &header.value {
            ProxyHeaderValue::Template(t) => eval(t, vars, &mut value),
            // The client's Content-Length, when it sent one.
            ProxyHeaderValue::BodyLength => {
                if !proxy.pass_request_body {
                    // nginx sends no body, and so no length.
                } else if let Some(len) = matched.buffered_body {
                    value.extend_from_slice(len.to_string().as_bytes());
                } else if let Some(len) = client.headers.get(http::header::CONTENT_LENGTH) {
                    value.extend_from_slice(len.as_bytes());
                }
            }
            // nginx buffers a chunked body and sends its length; the appliance streams it, so it
            // passes it on chunked, which an HTTP/1.1 upstream accepts.
            ProxyHeaderValue::Chunked => {
                let chunked = client
                    .headers
                    .get(http::header::TRANSFER_ENCODING)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
                if chunked && proxy.pass_request_body && proxy.http_version == HttpVersion::Http11 {
                    value.extend_from_slice(b"chunked");
                }
            }
        }
        if value.is_empty() {
            continue;
        }
        req.configured(&header.name, &value)?;
    }
    if proxy.pass_request_headers {
        for (name, v) in client.case_header_iter() {
            let name_bytes = name.as_slice();
            // nginx ignores header lines whose names have anything but letters, digits and
            // dashes (ignore_invalid_headers on, underscores_in_headers off): never passed.
            if !name_bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            {
                continue;
            }
            if proxy
                .header_names
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name_bytes))
            {
                continue;
            }
            req.passed(name_bytes, || name.clone(), v)?;
        }
    }
    Ok(())
}

/// The URI of the request line.
fn request_target(proxy: &ProxyConf, client: &RequestHeader, matched: &Matched<'_>) -> Vec<u8> {
    let Some(base) = &proxy.uri else {
        // No URI part: the client's URI as it sent it.
        return client.raw_path().to_vec();
    };
    let uri = matched.uri;
    let rest = match matched.prefix_len {
        Some(n) if n <= uri.path.len() => &uri.path[n..],
        _ => &uri.path[..],
    };
    let mut target = Vec::with_capacity(base.len() + rest.len() + 16);
    target.extend_from_slice(base);
    if uri.quoted {
        escape_uri(rest, &mut target);
    } else {
        target.extend_from_slice(rest);
    }
    if let Some(args) = uri.args.as_deref().filter(|a| !a.is_empty()) {
        target.push(b'?');
        target.extend_from_slice(args);
    }
    target
}

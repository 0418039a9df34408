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
use pingora::http::RequestHeader;
use pingora::prelude::*;

use super::client_request::ClientRequest;
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
    /// A `rewrite` changed the URI (nginx's `r->internal`): it is sent escaped.
    pub uri_rewritten: bool,
    /// A `rewrite` or `set $args` changed the URI or its arguments: the client's target is
    /// not sent as it was (nginx's `valid_unparsed_uri` off).
    pub target_changed: bool,
    /// After `rewrite ... break`: a URI part goes before the whole URI, not in place of the
    /// location's prefix (nginx's `valid_location` off).
    pub location_invalid: bool,
    /// The URI part of a `proxy_pass` with variables: the target, sent as it is.
    pub pass_uri: Option<&'a [u8]>,
    /// An error page sent the request to another URI: the method is GET now.
    pub as_get: bool,
    /// `auth_request`'s subrequest (a GET): no body goes with it, yet the client's
    /// `Content-Length` does, whatever `proxy_pass_request_body` says, as nginx builds it
    /// from the client's headers; a chunked body is neither sent nor announced.
    pub subrequest: bool,
}

/// Builds the upstream request header, for Pingora.
pub fn build(
    proxy: &ProxyConf,
    client: &RequestHeader,
    matched: &Matched<'_>,
    vars: &RequestVars<'_>,
) -> Result<RequestHeader> {
    let target = request_target(proxy, client.into(), matched);
    let method = match matched.as_get {
        true => http::Method::GET,
        false => client.method.clone(),
    };
    let mut req = RequestHeader::build(method, &target, Some(client.headers.len() + 4))?;
    req.set_version(match proxy.http_version {
        HttpVersion::Http10 => Version::HTTP_10,
        HttpVersion::Http11 => Version::HTTP_11,
    });
    emit_headers(proxy, client.into(), matched, vars, &mut req)?;
    Ok(req)
}

/// Writes the same request as [`build`] straight onto the wire (the fast path): request line,
/// headers, the empty line.
pub fn write(
    proxy: &ProxyConf,
    client: ClientRequest<'_>,
    matched: &Matched<'_>,
    vars: &RequestVars<'_>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(match matched.as_get {
        true => b"GET".as_slice(),
        false => client.method().as_bytes(),
    });
    out.push(b' ');
    write_target(proxy, client, matched, out);
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
    /// A client header, with its name as sent.
    fn passed(&mut self, name: &[u8], value: &[u8]) -> Result<()>;
}

impl HeaderSink for RequestHeader {
    fn configured(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.append_header(name.to_string(), value).map(|_| ())
    }

    fn passed(&mut self, name: &[u8], value: &[u8]) -> Result<()> {
        self.append_header(bytes::Bytes::copy_from_slice(name), value)
            .map(|_| ())
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

    fn passed(&mut self, name: &[u8], value: &[u8]) -> Result<()> {
        self.line(name, value);
        Ok(())
    }
}

/// The headers, in nginx's order, into `sink`.
fn emit_headers(
    proxy: &ProxyConf,
    client: ClientRequest<'_>,
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
                if matched.subrequest {
                    if let Some(len) = client.header("content-length") {
                        value.extend_from_slice(len);
                    }
                } else if !proxy.pass_request_body {
                    // nginx sends no body, and so no length.
                } else if let Some(len) = matched.buffered_body {
                    value.extend_from_slice(len.to_string().as_bytes());
                } else if let Some(len) = client.header("content-length") {
                    value.extend_from_slice(len);
                }
            }
            // nginx buffers a chunked body and sends its length; the appliance streams it, so it
            // passes it on chunked, which an HTTP/1.1 upstream accepts.
            ProxyHeaderValue::Chunked => {
                let chunked = client
                    .header("transfer-encoding")
                    .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
                let streamed = proxy.pass_request_body && !matched.subrequest;
                if chunked && streamed && proxy.http_version == HttpVersion::Http11 {
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
        let mut result = Ok(());
        client.for_each_header(|name, v| {
            // nginx ignores header lines whose names have anything but letters, digits and
            // dashes (ignore_invalid_headers on, underscores_in_headers off): never passed.
            if result.is_err()
                || !name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                || proxy
                    .header_names
                    .iter()
                    .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
            {
                return;
            }
            result = req.passed(name, v);
        });
        result?;
    }
    Ok(())
}

/// The URI of the request line.
pub fn request_target(
    proxy: &ProxyConf,
    client: ClientRequest<'_>,
    matched: &Matched<'_>,
) -> Vec<u8> {
    let mut target = Vec::with_capacity(client.raw_path().len() + 16);
    write_target(proxy, client, matched, &mut target);
    target
}

/// [`request_target`], appended to `out`.
fn write_target(
    proxy: &ProxyConf,
    client: ClientRequest<'_>,
    matched: &Matched<'_>,
    out: &mut Vec<u8>,
) {
    if let Some(target) = matched.pass_uri {
        out.extend_from_slice(target);
        return;
    }
    let uri = matched.uri;
    let rest = match (&proxy.uri, matched.prefix_len) {
        (None, _) if !matched.target_changed => {
            // No URI part: the client's URI as it sent it.
            out.extend_from_slice(client.raw_path());
            return;
        }
        (Some(_), Some(n)) if !matched.location_invalid && n <= uri.path.len() => &uri.path[n..],
        _ => &uri.path[..],
    };
    // After `rewrite ... break`, nginx leaves the URI part out.
    if let Some(base) = proxy.uri.as_ref().filter(|_| !matched.location_invalid) {
        out.extend_from_slice(base);
    }
    if uri.quoted || matched.uri_rewritten {
        escape_uri(rest, out);
    } else {
        out.extend_from_slice(rest);
    }
    if let Some(args) = uri.args.as_deref().filter(|a| !a.is_empty()) {
        out.push(b'?');
        out.extend_from_slice(args);
    }
}

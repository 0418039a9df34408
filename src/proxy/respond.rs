//! Responses the appliance makes itself: `return`, redirects, and error pages, shaped like
//! nginx's (ngx_http_special_response.c) so clients and monitors see the same thing.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::time::SystemTime;

use super::charset::{self, CharsetConf};
use super::gzip::{self, GzipConf};
use super::sub_filter::Prepared;

/// The `Server` header the appliance sends.
pub const SERVER: &str = "appliance";

/// nginx's 444 (NGX_HTTP_CLOSE): a `return 444` or a limit's status 444 closes the connection
/// with no response at all.
pub const CLOSE: u16 = 444;

/// The error [`send_with`] ends a request with for [`CLOSE`]: Pingora then closes the
/// connection without a response, and the access log says 444.
pub const CLOSED_WITHOUT_RESPONSE: &str = "closed without a response (444)";

/// How long a request body the appliance answers without reading is read and dropped after
/// the response, for the connection to go on: nginx's `lingering_time` default, the most it
/// spends discarding a body (ngx_http_discard_request_body).
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether `e` is the error of a [`CLOSE`].
pub fn is_close(e: &Error) -> bool {
    matches!(e.etype(), ErrorType::Custom(c) if *c == CLOSED_WITHOUT_RESPONSE)
}

/// The reason phrase nginx prints for a status (ngx_http_status_lines: older wordings than
/// today's for a few).
pub fn reason(status: u16) -> &'static str {
    match status {
        302 => "Moved Temporarily",
        405 => "Not Allowed",
        408 => "Request Time-out",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Large",
        416 => "Requested Range Not Satisfiable",
        503 => "Service Temporarily Unavailable",
        504 => "Gateway Time-out",
        _ => http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown"),
    }
}

/// nginx's 497: a plain HTTP request on an HTTPS port.
pub const TO_HTTPS: u16 = 497;

/// The status a response goes out with: nginx's own codes 494-497 (a header too large, a
/// client certificate refused or missing, plain HTTP on an HTTPS port) are sent as 400, each
/// with its page (ngx_http_special_response_handler).
pub fn wire_status(status: u16) -> u16 {
    match status {
        494..=497 => 400,
        _ => status,
    }
}

/// nginx's built-in page for a status, or `None` for statuses it sends without a body.
pub fn error_page(status: u16) -> Option<String> {
    if status < 300 || status == 304 {
        return None;
    }
    let own = match status {
        494 => Some("Request Header Or Cookie Too Large"),
        495 => Some("The SSL certificate error"),
        496 => Some("No required SSL certificate was sent"),
        497 => Some("The plain HTTP request was sent to HTTPS port"),
        _ => None,
    };
    if let Some(text) = own {
        return Some(format!(
            "<html>\r\n<head><title>400 {text}</title></head>\r\n<body>\r\n<center><h1>400 Bad \
             Request</h1></center>\r\n<center>{text}</center>\r\n<hr><center>{SERVER}</center>\r\n\
             </body>\r\n</html>\r\n"
        ));
    }
    // The pages' titles are the status lines' but for these two (ngx_http_special_response.c).
    let reason = match status {
        302 => "Found",
        401 => "Authorization Required",
        _ => reason(status),
    };
    let title = format!("{status} {reason}");
    Some(format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>{SERVER}</center>\r\n</body>\r\n</html>\r\n"
    ))
}

/// The HTTP date of now (`Sat, 21 Nov 2026 10:00:00 GMT`). Formatted once a second per thread,
/// as nginx caches its time strings: every response carries one.
pub fn http_date() -> String {
    http_date_at(SystemTime::now())
}

/// The HTTP date of `now`: a response whose `Expires` is computed from the same reading (see
/// `RequestCtx::date`) cannot have the two a second apart.
pub fn http_date_at(now: SystemTime) -> String {
    with_http_date_at(now, str::to_string)
}

/// Calls `f` with the HTTP date of `now` (see [`http_date`]), without copying it.
pub fn with_http_date_at<T>(now: SystemTime, f: impl FnOnce(&str) -> T) -> T {
    use std::cell::RefCell;
    use std::time::UNIX_EPOCH;
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != second || cache.1.is_empty() {
            *cache = (second, httpdate::fmt_http_date(now));
        }
        f(&cache.1)
    })
}

/// Sends a complete response: status, optional `Location`, and a body with its type.
pub async fn send(
    session: &mut Session,
    status: u16,
    location: Option<&[u8]>,
    body: Option<(Bytes, &str)>,
    keepalive: bool,
) -> Result<()> {
    send_with(
        session,
        status,
        location,
        body,
        keepalive,
        Filters::default(),
    )
    .await
}

/// What nginx's header and body filters do to a response the appliance makes itself.
#[derive(Default)]
pub struct Filters<'a> {
    /// Headers after the `Location`: the location's `add_header` and `expires` ones, and
    /// those an error page carried over.
    pub added: &'a [(String, Vec<u8>)],
    /// What `Date` says (the time `Expires` was computed from); now when unset.
    pub date: Option<SystemTime>,
    /// The strings the location's `sub_filter` replaces.
    pub sub_filter: Option<Prepared>,
    /// The location's gzip.
    pub gzip: Option<&'a GzipConf>,
    /// The location's `charset`.
    pub charset: Option<&'a CharsetConf>,
    /// The body goes out without a length, as nginx sends a body it makes as it goes (an
    /// autoindex listing): nginx's chunked filter then chunks it to an HTTP/1.1 client and
    /// sends it to the close to an HTTP/1.0 one.
    pub unsized_body: bool,
}

/// [`send`], through `filters`.
pub async fn send_with(
    session: &mut Session,
    status: u16,
    location: Option<&[u8]>,
    body: Option<(Bytes, &str)>,
    keepalive: bool,
    filters: Filters<'_>,
) -> Result<()> {
    if status == CLOSE {
        return Error::e_explain(ErrorType::Custom(CLOSED_WITHOUT_RESPONSE), "status 444");
    }
    let date = filters.date.unwrap_or_else(SystemTime::now);
    let mut body = match body {
        Some(b) => Some(b),
        None => error_page(status).map(|page| (Bytes::from(page), "text/html")),
    };
    let status = wire_status(status);
    let mut resp = ResponseHeader::build(status, Some(6))?;
    resp.set_reason_phrase(Some(reason(status)))?;
    resp.insert_header("Server", SERVER)?;
    resp.insert_header("Date", http_date_at(date))?;
    let head_only = session.req_header().method == http::Method::HEAD;
    let http_1_1 = session.req_header().version >= http::Version::HTTP_11;
    let mut keepalive = keepalive;
    if let Some((bytes, content_type)) = &mut body {
        let content_type = charset::apply(filters.charset, status, content_type);
        resp.insert_header("Content-Type", content_type.as_ref())?;
        // The sub filter leaves a body it filters without a length, as nginx's does.
        let mut unsized_body = filters.unsized_body;
        if let Some(prepared) = filters.sub_filter.filter(|_| !bytes.is_empty()) {
            if let Some(substituter) = prepared.start(&mut resp)? {
                *bytes = substituter.whole(bytes);
                unsized_body = true;
            }
        }
        match unsized_body {
            false => resp.insert_header("Content-Length", bytes.len().to_string())?,
            // ngx_http_chunked_header_filter: a HEAD's answer is left as it is.
            true if head_only => {}
            true if http_1_1 => resp.insert_header("Transfer-Encoding", "chunked")?,
            true => keepalive = false,
        }
    } else if status != 204 && status != 304 {
        resp.insert_header("Content-Length", "0")?;
    }
    if let Some(location) = location {
        resp.insert_header("Location", location)?;
    }
    for (name, value) in filters.added {
        resp.append_header(name.clone(), value.as_slice())?;
    }
    if let Some(gzip) = filters.gzip {
        let request = gzip::Request::Pingora(session.req_header());
        if gzip.filter(request, &mut resp, date, false)? {
            if let Some((bytes, _)) = body.as_mut() {
                *bytes = gzip
                    .compressor(Some(bytes.len() as u64))
                    .whole(bytes)
                    .map_err(|e| Error::because(ErrorType::InternalError, "gzip", e))?;
            }
            // An HTTP/1.0 client reads the compressed body to the close.
            keepalive &= request.version() >= http::Version::HTTP_11;
        }
    }
    if keepalive {
        // nginx answers first and discards the body after, keeping the connection; Pingora
        // would close a connection whose body is unread.
        session.set_close_on_response_before_downstream_finish(false);
        session.set_total_drain_timeout(Some(DISCARD_TIME));
    } else {
        session.set_keepalive(None);
        resp.insert_header("Connection", "close")?;
    }
    let end = body.is_none() || head_only;
    session.write_response_header(Box::new(resp), end).await?;
    if let (Some((bytes, _)), false) = (body, head_only) {
        session.write_response_body(Some(bytes), true).await?;
    }
    Ok(())
}

/// The same response as [`send_with`] gives for a status without a location or body of its
/// own, as bytes, for the fast path: nginx's page (its type named in `charset`), `Connection`
/// as the connection will go on, then `added` (`add_header`'s). Dated `date`, as
/// [`send_with`].
pub fn page(
    status: u16,
    keepalive: bool,
    head_only: bool,
    added: &[(String, Vec<u8>)],
    charset: Option<&CharsetConf>,
    date: SystemTime,
) -> Vec<u8> {
    let body = error_page(status);
    let status = wire_status(status);
    let content_type = charset::apply(charset, status, "text/html");
    page_with(
        status,
        keepalive,
        head_only,
        added,
        body.as_ref().map(|b| (b.as_bytes(), content_type.as_ref())),
        date,
    )
}

/// [`page`] with a body of its own and its type (a file an error page names).
pub fn page_with(
    status: u16,
    keepalive: bool,
    head_only: bool,
    added: &[(String, Vec<u8>)],
    body: Option<(&[u8], &str)>,
    date: SystemTime,
) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(512);
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nServer: {SERVER}\r\nDate: {}\r\n",
        reason(status),
        http_date_at(date)
    );
    match &body {
        Some((page, content_type)) => {
            let _ = write!(
                out,
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                page.len()
            );
        }
        None if status != 204 && status != 304 => out.extend_from_slice(b"Content-Length: 0\r\n"),
        None => {}
    }
    out.extend_from_slice(if keepalive {
        b"Connection: keep-alive\r\n".as_slice()
    } else {
        b"Connection: close\r\n".as_slice()
    });
    for (name, value) in added {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if let (Some((page, _)), false) = (body, head_only) {
        out.extend_from_slice(page);
    }
    out
}

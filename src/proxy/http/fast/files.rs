//! Files on the fast path: a GET or HEAD that a location without `proxy_pass` answers with a
//! file as it is on disk (a 200 of the whole file, a 206 of one range, or a 304), `index` and
//! `try_files` followed.
//!
//! Why: through Pingora's session a file cost about four times nginx's user CPU per request
//! (docs/BENCHMARKS.md, "Since: files on the fast path"), for what is a look-up, a head and one
//! `pread`. What to answer is decided by the same code as on Pingora's path
//! ([`super::super::files`]: try_files, index, the static module, the not-modified filter),
//! run over the fast path's request; only the sending is this module's: read into the head's
//! buffer, or with `sendfile on` on a cleartext connection handed to the socket by sendfile(2)
//! ([`crate::proxy::sendfile`]).
//!
//! Everything else goes to Pingora before a byte is consumed, where it is answered as before:
//! a missing file, a directory, several ranges, a precondition, gzip or gzip_static that would change
//! the file, a location with limits, `auth_basic` or access rules that refuse, an internal
//! redirect into a location that proxies, or a body.

use std::fs::File;
use std::os::unix::fs::FileExt;

use bytes::Buf;
use pingora::http::ResponseHeader;
use tokio::io::{AsyncRead, AsyncWrite};

use super::super::error_pages::enter_uri;
use super::super::files::{self as content, FileAnswer};
use super::super::{Answer, Next, RequestCtx, Route};
use super::{client_keepalive, logs_read_response, put_header, Connection, Step};
use crate::proxy::client_request::ParsedHead;
use crate::proxy::error_page::Jump;
use crate::proxy::expires::http_time;
use crate::proxy::gzip;
use crate::proxy::respond;
use crate::proxy::runtime::{ClientConf, LocationConf};
use crate::proxy::sendfile::{self, SendFile};

/// How much of a file is read and written at a time.
const CHUNK: u64 = 64 * 1024;

impl<S: AsyncRead + AsyncWrite + SendFile + Unpin + Send> Connection<S> {
    /// Serves a request (its head `head_len` bytes) to a location without `proxy_pass`, if
    /// the answer is a file this path sends; else leaves it to Pingora.
    pub(super) async fn serve_file(
        &mut self,
        ctx: &mut RequestCtx,
        request: &ParsedHead,
        head_len: usize,
    ) -> Step {
        let Some((answer, part)) = self.find_file(ctx, request) else {
            return Step::ToPingora;
        };
        let Some(location) = ctx.location.clone() else {
            return Step::ToPingora;
        };
        // The request is this path's now.
        self.buf.advance(head_len);
        self.requests += 1;
        self.between_requests = true;
        let client = &location.client;
        self.keepalive_timeout = client.keepalive_timeout;
        let keepalive = client_keepalive(request)
            && !crate::proxy::draining()
            && !client.keepalive_timeout.is_zero()
            && self.requests < client.keepalive_requests;
        match self
            .send_file(ctx, request, &location, (answer, part), keepalive)
            .await
        {
            true => Step::Next,
            false => Step::Close,
        }
    }

    /// nginx's phases from the location's pre-access phase to its content, as Pingora's path
    /// runs them, while they lead to a file this path sends: `None` as soon as they lead
    /// anywhere else. Changes `ctx` (the URI, the location) as internal redirects do; what
    /// goes to Pingora is routed again from the start.
    fn find_file(
        &self,
        ctx: &mut RequestCtx,
        request: &ParsedHead,
    ) -> Option<(FileAnswer, (u64, u64))> {
        if !matches!(request.method(), "GET" | "HEAD") {
            return None;
        }
        let x = self.exchange(request, None, 0);
        loop {
            let location = ctx.location.clone()?;
            let plain = location.proxy.is_none()
                && location.dynamic_pass.is_none()
                && location.auth.is_none()
                && location.limits.is_none()
                && (!location.internal || ctx.errors.internal);
            if !plain {
                return None;
            }
            ctx.real_ip_by_location(self.client_inet, request.into());
            let client = ctx.client(self.client_inet).map(|a| a.ip());
            if !location.access.allows(client) {
                return None;
            }
            let next = match content::try_files_phase(x, ctx, &location) {
                Some(next) => next,
                None => content::content(x, ctx, &location, content::Failures::Quiet),
            };
            match next {
                // sub_filter rewrites, and the charset filter recodes, a file's body on
                // Pingora's path.
                Next::Answer(Answer::File(file))
                    if location.sub_filter.is_none()
                        && content::charset_recoding(ctx, &location).is_none()
                        && gzip_leaves(ctx, &location, request, &file) =>
                {
                    let part = file.one_part()?;
                    return Some((*file, part));
                }
                Next::Jump(Jump::Uri { path, args, .. }) => {
                    let server = ctx.server.clone()?;
                    if !ctx.errors.jump() {
                        return None;
                    }
                    let Route::Location = enter_uri(ctx, &server, x, (path, args)) else {
                        return None;
                    };
                }
                _ => return None,
            }
        }
    }

    /// Sends a file's response (the bytes `start..end` of it) as nginx's static module and
    /// header filters make it, and logs the request. True when the connection goes on.
    async fn send_file(
        &mut self,
        ctx: &mut RequestCtx,
        request: &ParsedHead,
        location: &LocationConf,
        (answer, (start, end)): (FileAnswer, (u64, u64)),
        keepalive: bool,
    ) -> bool {
        let FileAnswer {
            file,
            found,
            status,
            ..
        } = answer;
        let head_only = status == 304 || request.method() == "HEAD";
        // The response is kept whole only for a log line's `$sent_http_*`, and for `add_header`
        // and `expires` values that may read it.
        let reads_response = location.add_header_reads_response
            || (location.expires.as_ref()).is_some_and(|e| e.reads_response());
        let mut sent = match logs_read_response(ctx) || reads_response {
            true => ResponseHeader::build(status, Some(10)).ok(),
            false => None,
        };
        let last_modified = http_time(found.mtime);
        let out = &mut self.out;
        out.clear();
        {
            use std::io::Write;
            let _ = write!(out, "HTTP/1.1 {status} {}\r\n", respond::reason(status));
        }
        let mut own = |name: &'static str, value: &[u8], out: &mut Vec<u8>| {
            put_header(out, &mut sent, name, value)
        };
        // nginx's header filter order: Server, Date, Content-Type, Content-Length,
        // Last-Modified, Connection, then the list: ETag (unless `etag off`), the headers
        // filter's, then the range filter's Accept-Ranges (a 200) or Content-Range (a 206).
        // A 304 has no type or length (ngx_http_not_modified_header_filter).
        own("Server", respond::SERVER.as_bytes(), out);
        respond::with_http_date_at(ctx.date(), |date| own("Date", date.as_bytes(), out));
        // The headers filter (`add_header`, `expires`) runs before the charset filter: its
        // variables read the type without the charset.
        let content_type = location.content_types.for_uri(&ctx.uri.path);
        let named = location.charset.as_deref().and_then(|c| {
            let named = c.content_type(status, content_type.as_bytes())?;
            Some(String::from_utf8_lossy(&named).into_owned())
        });
        if status != 304 {
            let value = named.as_deref().unwrap_or(content_type);
            // Kept in `sent` without the charset until the headers filter has run.
            put_header(out, &mut None, "Content-Type", value.as_bytes());
            own("Content-Length", (end - start).to_string().as_bytes(), out);
        }
        own("Last-Modified", last_modified.as_bytes(), out);
        own(
            "Connection",
            if keepalive { b"keep-alive" } else { b"close" },
            out,
        );
        if let Some(etag) = location.conditional.etag(&found) {
            own("ETag", etag.as_bytes(), out);
        }
        if let (Some(sent), true) = (sent.as_mut(), status != 304) {
            let _ = sent.append_header("Content-Type", content_type);
        }
        if !location.add_header.is_empty() || location.expires.is_some() {
            let vars = ctx.vars_of(self.exchange(request, sent.as_ref(), 0), None);
            // The headers filter sees the 200 the range filter makes a 206 after it.
            let filtered = if status == 206 { 200 } else { status };
            let added = content::headers_filter(ctx, location, filtered, &vars, &last_modified);
            for (name, value) in added {
                put_header(&mut self.out, &mut sent, name, &value);
            }
        }
        if let (Some(sent), Some(named), true) = (sent.as_mut(), &named, status != 304) {
            // What the log's `$sent_http_content_type` says.
            let _ = sent.insert_header(http::header::CONTENT_TYPE, named.as_str());
        }
        match status {
            200 => put_header(&mut self.out, &mut sent, "Accept-Ranges", b"bytes"),
            206 => {
                let range = format!("bytes {}-{}/{}", start, end - 1, found.size);
                put_header(&mut self.out, &mut sent, "Content-Range", range.as_bytes());
            }
            _ => {}
        }
        self.out.extend_from_slice(b"\r\n");
        let body_end = if head_only { start } else { end };
        let sendfile = if location.client.sendfile && body_end > start {
            self.sendfile_body(&file, (start, end), &location.client)
                .await
        } else {
            None
        };
        let (body_sent, whole) = match sendfile {
            Some(outcome) => outcome,
            None => {
                self.copy_body(&file, (start, body_end), &location.client)
                    .await
            }
        };
        let mut exchange = self.exchange(request, sent.as_ref(), body_sent);
        exchange.status = status;
        ctx.log_exchange(exchange, status, self.now);
        whole && keepalive
    }

    /// Sends the head in `out`, then the file's bytes `start..end` read into it, 64 KB at a
    /// time (nginx's `sendfile off`): how many of the file's bytes went, and whether all did.
    async fn copy_body(
        &mut self,
        file: &File,
        (start, body_end): (u64, u64),
        client: &ClientConf,
    ) -> (u64, bool) {
        let limit = client.send_timeout;
        // The head and the file's first bytes in one write: one segment for a small file.
        let (mut at, mut whole) = (start, true);
        loop {
            let want = (body_end - at).min(CHUNK) as usize;
            if want > 0 {
                let start = self.out.len();
                self.out.resize(start + want, 0);
                let read = file.read_at(&mut self.out[start..], at);
                let n = read.unwrap_or(0);
                self.out.truncate(start + n);
                at += n as u64;
                // The file shrank (or failed) after its length went out: the connection
                // cannot carry on, as nginx's "file was truncated" ends it.
                whole = n > 0;
            }
            if !self.send_out(limit).await {
                whole = false;
            }
            if !whole || at >= body_end {
                break;
            }
        }
        (at - start, whole)
    }

    /// The same with sendfile(2) (nginx's `sendfile on`), when the client's stream has a
    /// socket for it (`None` when it has not, before anything is sent). As in nginx, one call
    /// sends at most `sendfile_max_chunk`, and a connection that sent that much lets the
    /// others have a turn before its next.
    async fn sendfile_body(
        &mut self,
        file: &File,
        (start, end): (u64, u64),
        client: &ClientConf,
    ) -> Option<(u64, bool)> {
        let tcp = self.client.sendfile_socket()?;
        let limit = client.send_timeout;
        let head = (self.client_deadline)
            .within(&mut self.now, limit, sendfile::send_head(tcp, &self.out))
            .await;
        self.out.clear();
        if !matches!(head, Some(Ok(()))) {
            return Some((0, false));
        }
        let mut at = start;
        while at < end {
            let want = match client.sendfile_max_chunk {
                0 => end - at,
                max => (end - at).min(max),
            };
            let sent = (self.client_deadline)
                .within(
                    &mut self.now,
                    limit,
                    sendfile::send_some(tcp, file, at, want),
                )
                .await;
            let n = match sent {
                // Nothing sent: the file shrank after its length went out, and the
                // connection cannot carry on (nginx's "file was truncated").
                Some(Ok(n)) if n > 0 => n,
                _ => return Some((at - start, false)),
            };
            at += n;
            if n == want && at < end {
                tokio::task::yield_now().await;
            }
        }
        Some((at - start, true))
    }
}

/// Whether gzip leaves a file's response as it is: not compressed, and no `Vary` added.
fn gzip_leaves(
    ctx: &RequestCtx,
    location: &LocationConf,
    request: &ParsedHead,
    file: &FileAnswer,
) -> bool {
    let Some(conf) = &location.gzip else {
        return true;
    };
    let length = file.found.size.to_string();
    let facts = gzip::ResponseFacts {
        content_type: Some(location.content_types.for_uri(&ctx.uri.path).as_bytes()),
        content_length: Some(length.as_bytes()),
        content_encoding: None,
    };
    // gzip sees a range's 200 before the range filter makes it a 206; it ranges only a file
    // it leaves whole, and then at most varies it. A client gzip would compress for unless
    // the response's headers say otherwise (`gzip_proxied`) counts as compressed: Pingora's
    // path decides it.
    let ranged = file.status == 206;
    let status = if ranged { 200 } else { file.status };
    match conf.verdict_by(request.into(), status, facts, || true) {
        gzip::Verdict::Untouched => true,
        gzip::Verdict::VaryOnly => !conf.vary(),
        gzip::Verdict::Compress => ranged && !conf.vary(),
    }
}

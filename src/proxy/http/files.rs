//! The content of a location without `proxy_pass`: nginx's try_files phase, then its index
//! and static modules (nginx 1.22), on Pingora's path. What to answer is decided by
//! [`crate::proxy::files`]; this module looks at the disk and sends.
//!
//! File I/O is done in place, on the worker's thread, as nginx does it without `aio`: a file
//! in the page cache costs microseconds that way, where a hand-off to tokio's blocking pool
//! costs several times the whole request; a slow disk holds the worker as it holds nginx's.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::super::autoindex::{self, AutoindexConf};
use super::super::body_filters::{BodyFilters, FilterFailed};
use super::super::charset;
use super::super::error_context::os_error;
use super::super::error_page::{jump_of, Jump, Overwrite};
use super::super::expires::http_time;
use super::super::files::{self, Condition, Conditions, Found, Ranged};
use super::super::gunzip;
use super::super::gzip;
use super::super::recode::{Recoder, Table};
use super::super::respond;
use super::super::runtime::LocationConf;
use super::super::vars::{eval_to_vec, RequestVars};
use super::{absolute_location, added_by_rules, Answer, Exchange, Next, RequestCtx};
use crate::config::LogLevel;

/// A file about to be sent.
pub(super) struct FileAnswer {
    pub(super) file: std::fs::File,
    pub(super) found: Found,
    pub(super) status: u16,
    /// The bytes sent: the whole file, or ranges of it (206; several as multipart).
    parts: Vec<(u64, u64)>,
    /// A `.gz` gzip_static chose: sent with Content-Encoding, without ranges.
    precompressed: bool,
    /// gzip_static `on` found a `.gz`: `Vary` goes out if `gzip_vary` is on, whoever gets
    /// which file.
    static_vary: bool,
}

impl FileAnswer {
    /// The bytes sent (`start..end`), when they are one piece of the file as it is on disk: the
    /// whole file with a 200 or a 304, or one range with a 206. `None` for several ranges, a
    /// `.gz` or a `Vary` of gzip_static's, or an error page's status.
    pub(super) fn one_part(&self) -> Option<(u64, u64)> {
        let plain =
            matches!(self.status, 200 | 206 | 304) && !self.precompressed && !self.static_vary;
        match self.parts[..] {
            [part] if plain => Some(part),
            _ => None,
        }
    }
}

/// nginx's headers filter on a file's response of `status` (the status before the range
/// filter): `expires`' two headers (`modified` counts from `last_modified`) and `add_header`'s,
/// after those an error page carried over.
pub(super) fn headers_filter(
    ctx: &RequestCtx,
    location: &LocationConf,
    status: u16,
    vars: &RequestVars<'_>,
    last_modified: &str,
) -> Vec<(String, Vec<u8>)> {
    let mut added = ctx.errors.carried.clone();
    if let Some((expires, cache_control)) = location
        .expires
        .as_ref()
        .and_then(|e| e.headers(status, vars, Some(last_modified.as_bytes()), ctx.date()))
    {
        added.push(("Expires".to_string(), expires.into_bytes()));
        added.push(("Cache-Control".to_string(), cache_control.into_bytes()));
    }
    added.extend(added_by_rules(&location.add_header, status, vars));
    added
}

/// What `try_files` decided.
enum Tried {
    /// A file or directory was found: the request goes on with this URI. `file`: a file, not
    /// a directory.
    Found { uri: Vec<u8>, file: bool },
    /// The last entry: an answer (`=code`) or somewhere else.
    Then(Next),
}

/// The directory a location's files are under, and how a URI maps into it.
struct Root {
    root: Option<Vec<u8>>,
    alias: Option<Vec<u8>>,
    whole_alias: bool,
    prefix_len: usize,
    /// A regex location's alias, with the URI try_files found after it (nginx's
    /// `add_uri_to_alias`).
    uri_after_alias: bool,
}

impl Root {
    fn of(ctx: &RequestCtx, x: Exchange<'_>, location: &LocationConf) -> Root {
        let vars = ctx.vars_of(x, None);
        Root {
            root: location.root.as_ref().map(|t| eval_to_vec(t, &vars)),
            alias: location.alias.as_ref().map(|t| eval_to_vec(t, &vars)),
            whole_alias: location.kind.is_regex(),
            prefix_len: location.name.len(),
            uri_after_alias: ctx.uri_after_alias,
        }
    }

    fn path(&self, uri: &[u8]) -> std::path::PathBuf {
        files::map_uri(
            self.root.as_deref(),
            self.alias.as_deref(),
            self.whole_alias && !self.uri_after_alias,
            if self.whole_alias { 0 } else { self.prefix_len },
            uri,
        )
    }

    /// The file a try_files entry names (ngx_http_try_files_handler): under root, or after
    /// the alias, less the location's prefix when the entry starts with the request's.
    fn entry_path(&self, name: &[u8], uri: &[u8]) -> std::path::PathBuf {
        let rest = match (&self.alias, self.whole_alias) {
            (Some(_), false) => {
                let prefix = &uri[..self.prefix_len.min(uri.len())];
                name.strip_prefix(prefix).unwrap_or(name)
            }
            _ => name,
        };
        files::map_uri(self.root.as_deref(), self.alias.as_deref(), false, 0, rest)
    }
}

fn look_up(path: std::path::PathBuf) -> std::io::Result<Found> {
    std::fs::metadata(path).map(|m| Found::of(&m))
}

/// nginx's try_files phase, between access and content, if the location has `try_files`:
/// the request goes on with the URI it found (`None`), or to what its last entry says.
pub(super) fn try_files_phase(
    x: Exchange<'_>,
    ctx: &mut RequestCtx,
    location: &LocationConf,
) -> Option<Next> {
    let entries = location.try_files.clone()?;
    match try_files(x, ctx, location, &entries) {
        Tried::Found { uri, file } => {
            ctx.uri.path = uri;
            // nginx's add_uri_to_alias: a regex location's alias is followed by the URI.
            ctx.uri_after_alias = file && location.alias.is_some() && location.kind.is_regex();
            None
        }
        Tried::Then(next) => Some(next),
    }
}

/// nginx's try_files phase (ngx_http_try_files_handler): each entry but the last names a
/// file (a directory, with a trailing `/`) under the location's root; the first that exists
/// becomes the URI. Else the last entry: `=code`, `@name`, or a URI to redirect to.
fn try_files(
    x: Exchange<'_>,
    ctx: &mut RequestCtx,
    location: &LocationConf,
    entries: &[crate::config::template::Template],
) -> Tried {
    let root = Root::of(ctx, x, location);
    let Some((last, tried)) = entries.split_last() else {
        return Tried::Then(Next::Proxy);
    };
    for entry in tried {
        let mut name = eval_to_vec(entry, &ctx.vars_of(x, None));
        // An entry written with a trailing slash tests a directory, the slash left out.
        let test_dir = entry.ends_with_literal("/");
        if test_dir {
            name.pop();
        }
        match look_up(root.entry_path(&name, &ctx.uri.path)) {
            // A directory found keeps the URI without its slash (nginx strips it from the
            // entry): the static module then redirects to it.
            Ok(found) if found.is_dir == test_dir => {
                return Tried::Found {
                    uri: name,
                    file: !test_dir,
                }
            }
            _ => continue,
        }
    }
    let text = eval_to_vec(last, &ctx.vars_of(x, None));
    if let Some(code) = text.strip_prefix(b"=") {
        let code = std::str::from_utf8(code)
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(500);
        return Tried::Then(Next::Answer(Answer::special(code)));
    }
    Tried::Then(Next::Jump(match jump_of(text, Overwrite::Keep) {
        Jump::Uri { path, args, .. } => Jump::Uri {
            path,
            args,
            get: false,
        },
        other => other,
    }))
}

/// Whether [`content`] logs what it could not serve, as nginx's static module does: the fast
/// path only looks ahead, and what it leaves is served (and logged) by Pingora's path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Failures {
    Logged,
    Quiet,
}

/// The content phase of a location that proxies nowhere: a URI ending in `/` gets its index
/// file (an internal redirect) or a 403; any other URI its file, a 301 to the directory, or
/// the status the look-up failed with.
pub(super) fn content(
    x: Exchange<'_>,
    ctx: &mut RequestCtx,
    location: &LocationConf,
    failures: Failures,
) -> Next {
    let method = ctx.method(x.request);
    let readable = matches!(method, "GET" | "HEAD" | "POST");
    let answer = |status| Next::Answer(Answer::special(status));
    let root = Root::of(ctx, x, location);
    let uri = ctx.uri.path.clone();
    if uri.ends_with(b"/") {
        if readable {
            if let Some(next) = index(x, ctx, location, &root, &uri) {
                return next;
            }
            let listed = matches!(method, "GET" | "HEAD");
            if let (Some(conf), true) = (&location.autoindex, listed) {
                return listing(ctx.uri.args.as_deref(), conf, &root.path(&uri), &uri);
            }
            if failures == Failures::Logged {
                let path = root.path(&uri);
                ctx.log_error(
                    x,
                    None,
                    LogLevel::Error,
                    format_args!("directory index of \"{}\" is forbidden", path.display()),
                );
            }
            return answer(403);
        }
        return answer(405);
    }
    if !readable {
        return answer(405);
    }
    let mut static_vary = false;
    if method != "POST" {
        match precompressed(x, location, &root.path(&uri)) {
            GzipStatic::None => {}
            GzipStatic::Vary => static_vary = true,
            GzipStatic::NotAFile => return answer(404),
            GzipStatic::Send { file, found, vary } => {
                let take = Taken {
                    precompressed: true,
                    static_vary: vary,
                };
                return answer_file(x, ctx, location, (file, found), take);
            }
        }
    }
    let path = root.path(&uri);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            let status = files::open_error_status(&e);
            // ngx_http_static_handler: a missing file is an error unless `log_not_found off`;
            // what is neither missing nor forbidden is critical.
            if failures == Failures::Logged && (status != 404 || location.log_not_found) {
                let level = match status {
                    404 | 403 => LogLevel::Error,
                    _ => LogLevel::Crit,
                };
                ctx.log_error(
                    x,
                    None,
                    level,
                    format_args!("open() \"{}\" failed ({})", path.display(), os_error(&e)),
                );
            }
            return answer(status);
        }
    };
    let found = match file.metadata() {
        Ok(meta) => Found::of(&meta),
        Err(_) => return answer(500),
    };
    if found.is_dir {
        let mut target = uri;
        target.push(b'/');
        if let Some(args) = ctx.uri.args.as_deref().filter(|a| !a.is_empty()) {
            target.push(b'?');
            target.extend_from_slice(args);
        }
        return Next::Answer(Answer::Special {
            status: 301,
            location: Some(absolute_location(x.local, ctx, target)),
            header: None,
            last: false,
        });
    }
    if !found.is_file {
        return answer(404);
    }
    if method == "POST" {
        return answer(405);
    }
    let take = Taken {
        precompressed: false,
        static_vary,
    };
    answer_file(x, ctx, location, (file, found), take)
}

/// nginx's autoindex module: the directory's listing, or the status its failure gives.
fn listing(args: Option<&[u8]>, conf: &AutoindexConf, dir: &std::path::Path, uri: &[u8]) -> Next {
    let callback = match conf.format {
        autoindex::Format::Jsonp => match autoindex::jsonp_callback(args) {
            autoindex::Callback::Named(name) => Some(name),
            autoindex::Callback::None => None,
            autoindex::Callback::Refused => return Next::Answer(Answer::special(400)),
        },
        _ => None,
    };
    let entries = match autoindex::read_entries(dir) {
        Ok(entries) => entries,
        Err(e) => return Next::Answer(Answer::special(files::open_error_status(&e))),
    };
    let format = match (conf.format, &callback) {
        (autoindex::Format::Jsonp, None) => autoindex::Format::Json,
        (format, _) => format,
    };
    let gmtoff = if conf.localtime {
        autoindex::local_offset()
    } else {
        0
    };
    let body = autoindex::render(conf, uri, &entries, callback.as_deref(), gmtoff);
    Next::Answer(Answer::Listing(
        Bytes::from(body),
        autoindex::content_type(format),
    ))
}

/// What gzip_static decided about a file's `.gz` (ngx_http_gzip_static_handler).
enum GzipStatic {
    /// Nothing: no `.gz`, or gzip_static off, or not for this client and no `Vary` to add.
    None,
    /// The plain file goes out, with `Vary`.
    Vary,
    /// The `.gz` exists but is neither a file nor a directory: 404.
    NotAFile,
    Send {
        file: std::fs::File,
        found: Found,
        vary: bool,
    },
}

fn precompressed(x: Exchange<'_>, location: &LocationConf, path: &std::path::Path) -> GzipStatic {
    let request = x.request;
    let Some((mode, sendable)) =
        (location.gzip.as_ref()).and_then(|g| g.precompressed_for(request))
    else {
        return GzipStatic::None;
    };
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    // A `.gz` that cannot be opened is passed over, as nginx does (it logs the reason).
    let Ok(file) = std::fs::File::open(&gz) else {
        return GzipStatic::None;
    };
    let Ok(found) = file.metadata().map(|m| Found::of(&m)) else {
        return GzipStatic::None;
    };
    let vary = mode == gzip::Precompressed::On;
    match (sendable, found.is_dir, found.is_file) {
        (false, _, _) | (true, true, _) => match vary {
            true => GzipStatic::Vary,
            false => GzipStatic::None,
        },
        (true, false, false) => GzipStatic::NotAFile,
        (true, false, true) => GzipStatic::Send { file, found, vary },
    }
}

/// How a file was taken (see [`FileAnswer`]).
struct Taken {
    precompressed: bool,
    static_vary: bool,
}

/// The answer with a file found: nginx's not_modified filter, then (for a plain file) its
/// range filter.
fn answer_file(
    x: Exchange<'_>,
    ctx: &RequestCtx,
    location: &LocationConf,
    (file, found): (std::fs::File, Found),
    take: Taken,
) -> Next {
    let answer = |status| Next::Answer(Answer::special(status));
    // An error page's status goes out as it is; only a 200 is tested and ranged.
    let status = ctx.errors.err_status.unwrap_or(200);
    let mut parts = vec![(0, found.size)];
    let mut sent_status = status;
    if status == 200 {
        let header = |name: &str| x.request.header(name);
        let etag = location.conditional.etag(&found);
        let etag = etag.as_deref();
        let conditions = Conditions {
            if_modified_since: header("if-modified-since"),
            if_unmodified_since: header("if-unmodified-since"),
            if_match: header("if-match"),
            if_none_match: header("if-none-match"),
        };
        let ims = location.conditional.if_modified_since;
        match files::condition(&conditions, found.mtime, etag, ims) {
            Condition::PreconditionFailed => return answer(412),
            Condition::NotModified => sent_status = 304,
            // gzip_static allows no ranges; gzip comes before nginx's range filter and takes
            // the length it would cut by.
            Condition::Send if take.precompressed => {}
            Condition::Send if compressed_whole(x, ctx, location, &found) => {}
            // The sub filter takes the length away, and with it the range filter's ranges.
            Condition::Send if rewritten_by_sub_filter(x, ctx, location) => {}
            Condition::Send if resized_by_charset(ctx, location) => {}
            Condition::Send => {
                let ranged = files::range(
                    header("range"),
                    header("if-range"),
                    found.size,
                    found.mtime,
                    etag,
                );
                match ranged {
                    Ranged::Whole => {}
                    Ranged::Part { start, end } => {
                        (parts, sent_status) = (vec![(start, end)], 206);
                    }
                    Ranged::Parts(ranges) => (parts, sent_status) = (ranges, 206),
                    Ranged::Unsatisfiable => {
                        return Next::Answer(Answer::Special {
                            status: 416,
                            location: None,
                            header: Some((
                                "Content-Range",
                                format!("bytes */{}", found.size).into_bytes(),
                            )),
                            last: false,
                        });
                    }
                }
            }
        }
    }
    Next::Answer(Answer::File(Box::new(FileAnswer {
        file,
        found,
        status: sent_status,
        parts,
        precompressed: take.precompressed,
        static_vary: take.static_vary,
    })))
}

/// Whether `sub_filter` rewrites this file's body: it has strings for the request, and the
/// file's type is one it filters.
fn rewritten_by_sub_filter(x: Exchange<'_>, ctx: &RequestCtx, location: &LocationConf) -> bool {
    let Some(conf) = &location.sub_filter else {
        return false;
    };
    let content_type = location.content_types.for_uri(&ctx.uri.path);
    conf.prepare(&ctx.vars_of(x, None))
        .is_some_and(|prepared| prepared.filters_type(content_type.as_bytes()))
}

/// The type a file goes out with under the charset filter's `verdict`.
fn typed<'a>(verdict: &charset::Verdict, content_type: &'a str) -> std::borrow::Cow<'a, str> {
    match &verdict.content_type {
        // Pieces of a str and the configured name: UTF-8 still.
        Some(value) => String::from_utf8_lossy(value).into_owned().into(),
        None => content_type.into(),
    }
}

/// How the charset filter recodes this file served plain, if it does.
pub(super) fn charset_recoding(ctx: &RequestCtx, location: &LocationConf) -> Option<Arc<Table>> {
    let conf = location.charset.as_ref()?;
    let content_type = location.content_types.for_uri(&ctx.uri.path);
    conf.verdict(200, content_type.as_bytes(), false).recode
}

/// Whether the charset filter recodes this file to or from UTF-8, which takes its length
/// away, and with it the range filter's ranges.
fn resized_by_charset(ctx: &RequestCtx, location: &LocationConf) -> bool {
    charset_recoding(ctx, location).is_some_and(|t| t.changes_length())
}

/// Whether gzip compresses this file when it is sent whole with a 200.
fn compressed_whole(
    x: Exchange<'_>,
    ctx: &RequestCtx,
    location: &LocationConf,
    found: &Found,
) -> bool {
    let Some(gzip) = &location.gzip else {
        return false;
    };
    let headers = whole_file_headers(ctx, location, found);
    gzip.verdict(x.request, 200, &headers, ctx.date()) == gzip::Verdict::Compress
}

/// The headers gzip reads of a file's response before the range filter cuts it.
fn whole_file_headers(ctx: &RequestCtx, location: &LocationConf, found: &Found) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    let content_type = location.content_types.for_uri(&ctx.uri.path);
    let values = [
        (http::header::CONTENT_TYPE, Some(content_type.to_string())),
        (http::header::CONTENT_LENGTH, Some(found.size.to_string())),
        (http::header::LAST_MODIFIED, Some(http_time(found.mtime))),
        (http::header::ETAG, location.conditional.etag(found)),
    ];
    for (name, value) in values.into_iter().filter_map(|(n, v)| Some((n, v?))) {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    headers
}

/// nginx's index module: the first index file that exists under the directory, as an
/// internal redirect; an absolute index is redirected to at once. `None`: none exists (or the
/// method is not one the module serves).
fn index(
    x: Exchange<'_>,
    ctx: &mut RequestCtx,
    location: &LocationConf,
    root: &Root,
    uri: &[u8],
) -> Option<Next> {
    let args = ctx.uri.args.clone();
    let mut dir_tested = false;
    for index in location.index.iter() {
        let name = eval_to_vec(index, &ctx.vars_of(x, None));
        if name.starts_with(b"/") {
            return Some(Next::Jump(Jump::Uri {
                path: name,
                args,
                get: false,
            }));
        }
        let mut candidate = uri.to_vec();
        candidate.extend_from_slice(&name);
        match look_up(root.path(&candidate)) {
            Ok(_) => {
                return Some(Next::Jump(Jump::Uri {
                    path: candidate,
                    args,
                    get: false,
                }))
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::ENOTDIR | libc::ENAMETOOLONG) => {
                    return Some(Next::Answer(Answer::special(404)))
                }
                Some(libc::EACCES | libc::EMLINK | libc::ELOOP) => {
                    return Some(Next::Answer(Answer::special(403)))
                }
                Some(libc::ENOENT) => {
                    if !dir_tested {
                        // ngx_http_index_test_dir: no directory is a 404, not a 403.
                        match look_up(root.path(uri)) {
                            Ok(dir) if dir.is_dir => {}
                            Ok(_) => return Some(Next::Answer(Answer::special(500))),
                            Err(e) => {
                                let status = files::open_error_status(&e);
                                return Some(Next::Answer(Answer::special(status)));
                            }
                        }
                        dir_tested = true;
                    }
                }
                _ => return Some(Next::Answer(Answer::special(500))),
            },
        }
    }
    None
}

/// Sends a file: nginx's headers for it (`Last-Modified`, `ETag`, `Accept-Ranges` or
/// `Content-Range`), the location's `expires` and `add_header`, then the bytes.
pub(super) async fn send(
    session: &mut Session,
    ctx: &RequestCtx,
    answer: FileAnswer,
) -> Result<()> {
    let FileAnswer {
        mut file,
        found,
        status,
        parts,
        precompressed,
        static_vary,
    } = answer;
    let Some(location) = ctx.location.clone() else {
        return respond::send(session, 500, None, None, false).await;
    };
    let content_type = location.content_types.for_uri(&ctx.uri.path).to_string();
    // The charset filter, which runs after the headers filter and before the range filter
    // (whose parts are typed with its type): the type with its charset, and the body recoded
    // (not a `.gz` that goes out compressed).
    let charset_status = if status == 206 { 200 } else { status };
    let charset_of = |encoded: bool| match &location.charset {
        Some(conf) => conf.verdict(charset_status, content_type.as_bytes(), encoded),
        None => charset::Verdict::default(),
    };
    let mut charset = charset_of(precompressed);
    let mut named = typed(&charset, &content_type);
    let multipart = (parts.len() > 1).then(|| files::Multipart::new(&parts, found.size, &named));
    let last_modified = http_time(found.mtime);
    let mut response = ResponseHeader::build(status, Some(10))?;
    response.set_reason_phrase(Some(respond::reason(status)))?;
    response.insert_header("Server", respond::SERVER)?;
    response.insert_header("Date", respond::http_date_at(ctx.date()))?;
    if status != 304 {
        let (content_type, length) = match &multipart {
            Some(m) => (
                format!("multipart/byteranges; boundary={}", m.boundary),
                m.len(&parts),
            ),
            None => (content_type.clone(), parts.iter().map(|(s, e)| e - s).sum()),
        };
        response.insert_header("Content-Type", content_type)?;
        response.insert_header("Content-Length", length.to_string())?;
    }
    // The header filter drops it from other statuses (an error page's).
    if matches!(status, 200 | 206 | 304) {
        response.insert_header("Last-Modified", last_modified.as_str())?;
    }
    if let Some(etag) = location.conditional.etag(&found) {
        response.insert_header("ETag", etag)?;
    }
    // The headers filter sees the status before the range filter makes it 206.
    let filtered = if status == 206 { 200 } else { status };
    let x = Exchange {
        response: Some(&response),
        ..Exchange::of(session)
    };
    let vars = ctx.vars_of(x, None);
    let sub_filter = location.sub_filter.as_ref().and_then(|c| c.prepare(&vars));
    for (name, value) in headers_filter(ctx, &location, filtered, &vars, &last_modified) {
        response.append_header(name, value)?;
    }
    // gunzip, after the headers filter, on a `.gz` gzip_static sent to a client that does not
    // take gzip (`gzip_static always`); a 304 has lost its Content-Encoding before.
    let mut decompressor = None;
    let mut varied = false;
    if let Some(gzip) =
        (location.gzip.as_ref()).filter(|g| g.gunzips() && precompressed && status != 304)
    {
        let request = gzip::Request::Pingora(session.req_header());
        let unzip = gzip.unzip_by(request, Some(b"gzip"), || {
            gzip.proxied_allows(request, &response.headers, ctx.date())
        });
        varied = unzip != gzip::Unzip::Untouched && gzip.vary();
        match unzip {
            gzip::Unzip::Untouched => {}
            gzip::Unzip::Kept if varied => {
                response.append_header("Vary", "Accept-Encoding")?;
            }
            gzip::Unzip::Kept => {}
            gzip::Unzip::Decompress => {
                gunzip::strip_headers(&mut response, varied)?;
                decompressor = Some(gunzip::Decompressor::new());
                // The charset filter comes after gunzip: it sees the body decompressed.
                charset = charset_of(false);
                named = typed(&charset, &content_type);
            }
        }
    }
    // nginx's sub filter, after the headers filter (a whole file only: it allows no ranges).
    let mut substituter = None;
    if let Some(prepared) = sub_filter.filter(|_| multipart.is_none() && status != 206) {
        substituter = prepared.start(&mut response)?;
    }
    if status != 304 && multipart.is_none() && *named != *content_type {
        response.insert_header("Content-Type", named.as_ref())?;
    }
    // A 304 leaves it out, as nginx's does.
    if precompressed && status != 304 && decompressor.is_none() {
        response.append_header("Content-Encoding", "gzip")?;
    }
    let resized = charset.recode.as_ref().is_some_and(|t| t.changes_length());
    if resized {
        response.remove_header(&http::header::CONTENT_LENGTH);
    }
    match (status, &parts[..]) {
        // The range filter passes over a response without a length (sub_filter's, or a
        // recoding's to or from UTF-8).
        (200, _) if substituter.is_some() || resized => {}
        (200, _) if !precompressed => response.insert_header("Accept-Ranges", "bytes")?,
        (206, [(start, end)]) => response.insert_header(
            "Content-Range",
            format!("bytes {}-{}/{}", start, end - 1, found.size),
        )?,
        _ => {}
    }
    let mut compressor = None;
    if let Some(gzip) = &location.gzip {
        let request = gzip::Request::Pingora(session.req_header());
        // gzip sees the whole file's 200 before the range filter makes it 206, but a range
        // is cut only from a file gzip leaves whole (see `compressed_whole`).
        let verdict = match status {
            206 => match gzip.verdict(
                request,
                200,
                &whole_file_headers(ctx, &location, &found),
                ctx.date(),
            ) {
                gzip::Verdict::Compress => gzip::Verdict::VaryOnly,
                verdict => verdict,
            },
            _ => gzip.verdict(request, status, &response.headers, ctx.date()),
        };
        if static_vary && verdict == gzip::Verdict::Untouched && gzip.vary() {
            response.append_header("Vary", "Accept-Encoding")?;
        }
        if gzip.apply(verdict, request, &mut response, varied)? {
            let length = (substituter.is_none() && !resized).then_some(found.size);
            compressor = Some(gzip.compressor(length));
            if request.version() < http::Version::HTTP_11 {
                session.set_keepalive(None);
            }
        }
    }
    let head = session.req_header().method == http::Method::HEAD;
    let length_unknown = substituter.is_some() || decompressor.is_some() || resized;
    if length_unknown && compressor.is_none() && status != 304 && !head {
        // Framed as nginx's chunked filter frames a body of unknown length.
        match session.req_header().version < http::Version::HTTP_11 {
            true => session.set_keepalive(None),
            false => response.insert_header("Transfer-Encoding", "chunked")?,
        }
    }
    let empty = parts.iter().all(|(s, e)| s == e) && multipart.is_none();
    let head_only = status == 304 || session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(response), head_only || empty)
        .await?;
    if head_only || empty {
        return Ok(());
    }
    let recoder = charset.recode.map(Recoder::new);
    // Recoding byte for byte keeps the length, and the ranges cut from it.
    let only_bytes_recoded = decompressor.is_none() && substituter.is_none() && !resized;
    let (mut range_recoder, recoder) = match only_bytes_recoded && compressor.is_none() {
        true => (recoder, None),
        false => (None, recoder),
    };
    let filters = BodyFilters {
        decompressor,
        substituter,
        recoder,
        compressor,
    };
    if !filters.is_empty() {
        // Only a whole file is decompressed, rewritten, recoded to or from UTF-8 or compressed
        // (see `compressed_whole`).
        return copy_filtered(session, &mut file, found.size, filters).await;
    }
    for (i, (start, end)) in parts.iter().enumerate() {
        if let Some(m) = &multipart {
            let head = Bytes::from(m.heads[i].clone());
            session.write_response_body(Some(head), false).await?;
        }
        let last = multipart.is_none() && i + 1 == parts.len();
        let recoder = range_recoder.as_mut();
        copy_range(session, &file, (*start, *end), last, recoder).await?;
    }
    if let Some(m) = multipart {
        session
            .write_response_body(Some(Bytes::from(m.tail)), true)
            .await?;
    }
    Ok(())
}

/// Sends the first `size` bytes of `file` through `filters` (gunzip, the sub filter, gzip), in
/// chunks.
async fn copy_filtered(
    session: &mut Session,
    file: &mut std::fs::File,
    size: u64,
    mut filters: BodyFilters,
) -> Result<()> {
    let io = |e: std::io::Error| {
        pingora::Error::because(pingora::ErrorType::FileReadError, "reading a file", e)
    };
    let mut left = size;
    let mut chunk = vec![0; size.min(64 * 1024) as usize];
    while left > 0 {
        let want = left.min(chunk.len() as u64) as usize;
        let n = file.read(&mut chunk[..want]).map_err(io)?;
        if n == 0 {
            return pingora::Error::e_explain(pingora::ErrorType::FileReadError, "file shrank");
        }
        left -= n as u64;
        let out = filters
            .push(&chunk[..n])
            .map_err(FilterFailed::into_pingora)?;
        if !out.is_empty() {
            session.write_response_body(Some(out), false).await?;
        }
    }
    let rest = filters.finish().map_err(FilterFailed::into_pingora)?;
    session.write_response_body(Some(rest), true).await
}

/// Sends bytes `start..end` of `file`, in chunks, recoded byte for byte by `recoder`; `last`:
/// they end the response.
async fn copy_range(
    session: &mut Session,
    file: &std::fs::File,
    (start, end): (u64, u64),
    last: bool,
    mut recoder: Option<&mut Recoder>,
) -> Result<()> {
    let io = |e: std::io::Error| {
        pingora::Error::because(pingora::ErrorType::FileReadError, "reading a file", e)
    };
    // Read at offsets (pread): no seek to make before each range.
    let mut at = start;
    let mut left = end - start;
    while left > 0 {
        let mut chunk = vec![0; left.min(64 * 1024) as usize];
        let n = file.read_at(&mut chunk, at).map_err(io)?;
        at += n as u64;
        if n == 0 {
            // The file shrank after its length was sent: the connection cannot carry on.
            return pingora::Error::e_explain(pingora::ErrorType::FileReadError, "file shrank");
        }
        chunk.truncate(n);
        left -= n as u64;
        let chunk = match recoder.as_deref_mut() {
            Some(recoder) => recoder.push(&chunk),
            None => Bytes::from(chunk),
        };
        session
            .write_response_body(Some(chunk), last && left == 0)
            .await?;
    }
    Ok(())
}

/// A small file read whole (an error page the fast path sends), with what nginx's headers
/// need; else the status nginx answers the failed look-up with.
pub(super) fn read_whole(path: &std::path::Path) -> std::result::Result<(Vec<u8>, Found), u16> {
    let mut file = std::fs::File::open(path).map_err(|e| files::open_error_status(&e))?;
    let found = Found::of(&file.metadata().map_err(|_| 500u16)?);
    if !found.is_file {
        return Err(404);
    }
    let mut bytes = Vec::with_capacity(found.size as usize);
    file.read_to_end(&mut bytes).map_err(|_| 500u16)?;
    Ok((bytes, found))
}

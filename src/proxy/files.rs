//! Files from disk, as nginx's static, index and try_files modules serve them (nginx 1.22):
//! where a URI's file is (`root`, `alias`), what a failed look-up answers, and the conditional
//! and range headers of a response (the not_modified and range filters).
//!
//! The request flow is the data plane's (`proxy::http`); this module only decides.

use std::io;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use super::vars::DEFAULT_ROOT;

/// The file of `uri` (ngx_http_map_uri_to_path): `root` followed by the URI; with `alias`,
/// the alias followed by the URI after the location's prefix (`prefix_len` bytes), or for a
/// regex location (`whole_alias`) the alias alone.
pub fn map_uri(
    root: Option<&[u8]>,
    alias: Option<&[u8]>,
    whole_alias: bool,
    prefix_len: usize,
    uri: &[u8],
) -> PathBuf {
    let mut path = Vec::with_capacity(64 + uri.len());
    match alias {
        Some(alias) if whole_alias => path.extend_from_slice(alias),
        Some(alias) => {
            path.extend_from_slice(alias);
            path.extend_from_slice(uri.get(prefix_len..).unwrap_or_default());
        }
        None => {
            path.extend_from_slice(root.unwrap_or(DEFAULT_ROOT.as_bytes()));
            path.extend_from_slice(uri);
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(path))
}

/// What a file look-up found.
#[derive(Debug)]
pub struct Found {
    pub is_dir: bool,
    pub is_file: bool,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
}

impl Found {
    pub fn of(meta: &std::fs::Metadata) -> Found {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        Found {
            is_dir: meta.is_dir(),
            is_file: meta.is_file(),
            size: meta.len(),
            mtime,
        }
    }

    /// nginx's ETag: `"<mtime hex>-<size hex>"` (ngx_http_set_etag).
    pub fn etag(&self) -> String {
        format!("\"{:x}-{:x}\"", self.mtime, self.size)
    }
}

/// The status the static module answers a failed open with (ngx_http_static_handler):
/// missing is 404, not permitted 403, anything else 500.
pub fn open_error_status(e: &io::Error) -> u16 {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG) => 404,
        Some(libc::EACCES | libc::EMLINK | libc::ELOOP) => 403,
        _ => 500,
    }
}

/// How a location answers conditional requests: nginx's `etag` and `if_modified_since`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConditionalConf {
    /// Files carry an ETag (`etag on`, nginx's default).
    pub etag: bool,
    pub if_modified_since: IfModifiedSince,
}

/// How If-Modified-Since is compared with a file's time (`if_modified_since`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfModifiedSince {
    /// Never a 304 by date.
    Off,
    /// A 304 for the same second only (nginx's default).
    Exact,
    /// A 304 when the file is not newer.
    Before,
}

impl Default for ConditionalConf {
    fn default() -> Self {
        ConditionalConf {
            etag: true,
            if_modified_since: IfModifiedSince::Exact,
        }
    }
}

impl ConditionalConf {
    /// From the config (checked already: another value is the default).
    pub fn build(c: &crate::config::Conditional) -> ConditionalConf {
        ConditionalConf {
            etag: c.etag.unwrap_or(true),
            if_modified_since: match c.if_modified_since.as_deref() {
                Some("off") => IfModifiedSince::Off,
                Some("before") => IfModifiedSince::Before,
                _ => IfModifiedSince::Exact,
            },
        }
    }

    /// The ETag a response with this file carries, if `etag` is on.
    pub fn etag(&self, found: &Found) -> Option<String> {
        self.etag.then(|| found.etag())
    }
}

/// The request's conditional headers.
#[derive(Default)]
pub struct Conditions<'a> {
    pub if_modified_since: Option<&'a [u8]>,
    pub if_unmodified_since: Option<&'a [u8]>,
    pub if_match: Option<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
}

/// What the not_modified filter makes of a 200.
#[derive(Debug, PartialEq, Eq)]
pub enum Condition {
    Send,
    NotModified,
    PreconditionFailed,
}

/// ngx_http_not_modified_header_filter, for a file of `mtime` with `etag` (none with `etag
/// off`), If-Modified-Since compared as `ims` says.
pub fn condition(
    c: &Conditions<'_>,
    mtime: i64,
    etag: Option<&str>,
    ims: IfModifiedSince,
) -> Condition {
    if let Some(value) = c.if_unmodified_since {
        // An unreadable date fails the test, as ngx_parse_http_time's error does.
        if parse_http_time(value).is_none_or(|t| t < mtime) {
            return Condition::PreconditionFailed;
        }
    }
    if let Some(list) = c.if_match {
        if !etag_matches(list, etag, false) {
            return Condition::PreconditionFailed;
        }
    }
    if c.if_modified_since.is_none() && c.if_none_match.is_none() {
        return Condition::Send;
    }
    if let Some(value) = c.if_modified_since {
        // ngx_http_test_if_modified: an unreadable date is never the file's.
        let since = parse_http_time(value);
        let modified = match ims {
            IfModifiedSince::Off => true,
            _ if since == Some(mtime) => false,
            IfModifiedSince::Exact => true,
            IfModifiedSince::Before => since.is_none_or(|t| t < mtime),
        };
        if modified {
            return Condition::Send;
        }
    }
    if let Some(list) = c.if_none_match {
        if !etag_matches(list, etag, true) {
            return Condition::Send;
        }
    }
    Condition::NotModified
}

fn parse_http_time(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    Some(time.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64)
}

/// ngx_http_test_if_match: `*`, or the ETag among the list's (weak ones compared as strong
/// when `weak`). Without an ETag only `*` matches.
fn etag_matches(list: &[u8], etag: Option<&str>, weak: bool) -> bool {
    if list == b"*" {
        return true;
    }
    let Some(etag) = etag else {
        return false;
    };
    let etag = etag.as_bytes();
    let etag = match weak && etag.starts_with(b"W/") {
        true => &etag[2..],
        false => etag,
    };
    list.split(|b| *b == b',').any(|item| {
        let item = item.trim_ascii();
        let item = match weak && item.starts_with(b"W/") {
            true => &item[2..],
            false => item,
        };
        item == etag
    })
}

/// What the range filter makes of a 200 of `size` bytes (ngx_http_range_header_filter).
#[derive(Debug, PartialEq, Eq)]
pub enum Ranged {
    /// The whole file (no usable Range).
    Whole,
    /// 206: bytes `start..end`.
    Part { start: u64, end: u64 },
    /// 206 as multipart/byteranges: these `start..end`s.
    Parts(Vec<(u64, u64)>),
    /// 416.
    Unsatisfiable,
}

/// `Range` and `If-Range` against a file of `size` bytes with this mtime and ETag.
pub fn range(
    range: Option<&[u8]>,
    if_range: Option<&[u8]>,
    size: u64,
    mtime: i64,
    etag: Option<&str>,
) -> Ranged {
    let Some(range) = range else {
        return Ranged::Whole;
    };
    if range.len() < 7 || !range[..6].eq_ignore_ascii_case(b"bytes=") {
        return Ranged::Whole;
    }
    if let Some(if_range) = if_range {
        let still = match if_range.ends_with(b"\"") && if_range.len() >= 2 {
            // Without an ETag, an entity tag never matches (the whole file goes out).
            true => etag.is_some_and(|e| if_range == e.as_bytes()),
            false => parse_http_time(if_range) == Some(mtime),
        };
        if !still {
            return Ranged::Whole;
        }
    }
    match parse_ranges(&range[6..], size) {
        Ok(ranges) if ranges.len() == 1 => Ranged::Part {
            start: ranges[0].0,
            end: ranges[0].1,
        },
        Ok(ranges) if ranges.is_empty() => Ranged::Unsatisfiable,
        Ok(ranges) => Ranged::Parts(ranges),
        Err(Declined) => Ranged::Whole,
        Err(NotSatisfiable) => Ranged::Unsatisfiable,
    }
}

enum RangeError {
    /// Served whole.
    Declined,
    NotSatisfiable,
}
use RangeError::{Declined, NotSatisfiable};

/// ngx_http_range_parse: `start-end`, `start-` and `-suffix`, comma-separated, spaces
/// allowed; ranges that start past the end are dropped.
fn parse_ranges(spec: &[u8], size: u64) -> Result<Vec<(u64, u64)>, RangeError> {
    let mut ranges = Vec::new();
    let mut total: u64 = 0;
    let mut p = 0;
    let at = |i: usize| spec.get(i).copied().unwrap_or(0);
    let number = |p: &mut usize| -> Result<u64, RangeError> {
        if !at(*p).is_ascii_digit() {
            return Err(NotSatisfiable);
        }
        let mut n: u64 = 0;
        while at(*p).is_ascii_digit() {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(at(*p) - b'0')))
                .filter(|n| *n <= i64::MAX as u64)
                .ok_or(NotSatisfiable)?;
            *p += 1;
        }
        Ok(n)
    };
    loop {
        while at(p) == b' ' {
            p += 1;
        }
        let (start, end);
        if at(p) != b'-' {
            start = number(&mut p)?;
            while at(p) == b' ' {
                p += 1;
            }
            if at(p) != b'-' {
                return Err(NotSatisfiable);
            }
            p += 1;
            while at(p) == b' ' {
                p += 1;
            }
            if at(p) == b',' || at(p) == 0 {
                end = size;
            } else {
                let last = number(&mut p)?;
                while at(p) == b' ' {
                    p += 1;
                }
                if at(p) != b',' && at(p) != 0 {
                    return Err(NotSatisfiable);
                }
                end = if last >= size { size } else { last + 1 };
            }
        } else {
            p += 1;
            let suffix = number(&mut p)?;
            while at(p) == b' ' {
                p += 1;
            }
            if at(p) != b',' && at(p) != 0 {
                return Err(NotSatisfiable);
            }
            start = size.saturating_sub(suffix);
            end = size;
        }
        if start < end {
            ranges.push((start, end));
            total += end - start;
        } else if start == 0 {
            return Err(Declined);
        }
        if at(p) != b',' {
            break;
        }
        p += 1;
    }
    if total > size {
        return Err(Declined);
    }
    Ok(ranges)
}

/// A multipart/byteranges body's framing (ngx_http_range_multipart_header): the boundary,
/// and before each part its boundary line and headers, after the last the closing line.
pub struct Multipart {
    pub boundary: String,
    pub heads: Vec<String>,
    pub tail: String,
}

impl Multipart {
    /// For `parts` of a file of `size` bytes and `content_type`. The boundary counts up per
    /// response from 1, as nginx's does (ngx_next_temp_number).
    pub fn new(parts: &[(u64, u64)], size: u64, content_type: &str) -> Multipart {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let boundary = format!("{:020}", NEXT.fetch_add(1, Ordering::Relaxed));
        let heads = parts
            .iter()
            .map(|(start, end)| {
                format!(
                    "\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\
                     Content-Range: bytes {start}-{}/{size}\r\n\r\n",
                    end - 1
                )
            })
            .collect();
        let tail = format!("\r\n--{boundary}--\r\n");
        Multipart {
            boundary,
            heads,
            tail,
        }
    }

    /// The body's length with these parts' bytes in it.
    pub fn len(&self, parts: &[(u64, u64)]) -> u64 {
        let framing: usize = self.heads.iter().map(String::len).sum::<usize>() + self.tail.len();
        framing as u64 + parts.iter().map(|(s, e)| e - s).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_map_to_paths_as_nginx_maps_them() {
        let path = |root, alias, whole, prefix, uri: &str| {
            map_uri(root, alias, whole, prefix, uri.as_bytes())
                .display()
                .to_string()
        };
        assert_eq!(
            path(None, None, false, 0, "/a.html"),
            "/usr/share/nginx/html/a.html"
        );
        assert_eq!(path(Some(&b"/srv"[..]), None, false, 1, "/a/b"), "/srv/a/b");
        assert_eq!(
            path(None, Some(&b"/data/"[..]), false, 8, "/static/x.css"),
            "/data/x.css"
        );
        assert_eq!(
            path(None, Some(&b"/data/y.css"[..]), true, 0, "/s/x.css"),
            "/data/y.css"
        );
    }

    #[test]
    fn etags_are_mtime_and_size_in_hex() {
        let found = Found {
            is_dir: false,
            is_file: true,
            size: 612,
            mtime: 0x6373b0e4,
        };
        assert_eq!(found.etag(), "\"6373b0e4-264\"");
    }

    #[test]
    fn conditions_as_the_not_modified_filter_reads_them() {
        let etag = "\"10-5\"";
        let date = b"Thu, 01 Jan 1970 00:00:16 GMT";
        let when = |c: Conditions<'_>| condition(&c, 16, Some(etag), IfModifiedSince::Exact);
        assert_eq!(when(Conditions::default()), Condition::Send);
        let ims = |v| Conditions {
            if_modified_since: Some(v),
            ..Default::default()
        };
        assert_eq!(when(ims(date)), Condition::NotModified);
        // Exact: a later date is not the file's.
        assert_eq!(when(ims(b"Thu, 01 Jan 1970 00:00:17 GMT")), Condition::Send);
        let inm = |v| Conditions {
            if_none_match: Some(v),
            ..Default::default()
        };
        assert_eq!(when(inm(b"\"x\", W/\"10-5\"")), Condition::NotModified);
        assert_eq!(when(inm(b"*")), Condition::NotModified);
        assert_eq!(when(inm(b"\"x\"")), Condition::Send);
        let ius = |v| Conditions {
            if_unmodified_since: Some(v),
            ..Default::default()
        };
        assert_eq!(
            when(ius(b"Thu, 01 Jan 1970 00:00:15 GMT")),
            Condition::PreconditionFailed
        );
        assert_eq!(when(ius(date)), Condition::Send);
        let im = |v| Conditions {
            if_match: Some(v),
            ..Default::default()
        };
        assert_eq!(when(im(b"W/\"10-5\"")), Condition::PreconditionFailed);
        assert_eq!(when(im(b"\"10-5\"")), Condition::Send);
    }

    #[test]
    fn if_modified_since_and_etag_settings() {
        let earlier = b"Thu, 01 Jan 1970 00:00:15 GMT";
        let same = b"Thu, 01 Jan 1970 00:00:16 GMT";
        let later = b"Thu, 01 Jan 1970 00:00:17 GMT";
        let ims = |v: &'static [u8], how| {
            let c = Conditions {
                if_modified_since: Some(v),
                ..Default::default()
            };
            condition(&c, 16, Some("\"10-5\""), how)
        };
        // `before`: a 304 when the file is not newer than the date.
        assert_eq!(ims(later, IfModifiedSince::Before), Condition::NotModified);
        assert_eq!(ims(same, IfModifiedSince::Before), Condition::NotModified);
        assert_eq!(ims(earlier, IfModifiedSince::Before), Condition::Send);
        assert_eq!(ims(b"junk", IfModifiedSince::Before), Condition::Send);
        // `off`: never by date.
        assert_eq!(ims(same, IfModifiedSince::Off), Condition::Send);
        // `etag off`: only `*` matches.
        let tags = |inm: Option<&'static [u8]>, im: Option<&'static [u8]>| {
            let c = Conditions {
                if_none_match: inm,
                if_match: im,
                ..Default::default()
            };
            condition(&c, 16, None, IfModifiedSince::Exact)
        };
        assert_eq!(tags(Some(b"*"), None), Condition::NotModified);
        assert_eq!(tags(Some(b"\"10-5\""), None), Condition::Send);
        assert_eq!(tags(None, Some(b"*")), Condition::Send);
        assert_eq!(tags(None, Some(b"\"10-5\"")), Condition::PreconditionFailed);
        let if_range = range(Some(b"bytes=0-1"), Some(b"\"10-5\""), 100, 16, None);
        assert_eq!(if_range, Ranged::Whole);
    }

    #[test]
    fn ranges_as_the_range_filter_reads_them() {
        let r = |spec: &str| range(Some(spec.as_bytes()), None, 100, 16, Some("\"e\""));
        assert_eq!(r("bytes=0-9"), Ranged::Part { start: 0, end: 10 });
        assert_eq!(
            r("bytes=90-"),
            Ranged::Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            r("bytes=-10"),
            Ranged::Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            r("bytes=50-1000"),
            Ranged::Part {
                start: 50,
                end: 100
            }
        );
        assert_eq!(r("bytes= 1 - 2 "), Ranged::Part { start: 1, end: 3 });
        assert_eq!(r("bytes=100-"), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=x"), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), Ranged::Parts(vec![(0, 2), (5, 7)]));
        assert_eq!(r("bytes=0-99,0-99"), Ranged::Whole);
        assert_eq!(r("bytes=-0"), Ranged::Unsatisfiable);
        assert_eq!(r("items=0-1"), Ranged::Whole);
        assert_eq!(r("bytes=5-2"), Ranged::Unsatisfiable);
        let stale = range(Some(b"bytes=0-1"), Some(b"\"old\""), 100, 16, Some("\"e\""));
        assert_eq!(stale, Ranged::Whole);
        let fresh = range(Some(b"bytes=0-1"), Some(b"\"e\""), 100, 16, Some("\"e\""));
        assert_eq!(fresh, Ranged::Part { start: 0, end: 2 });
    }
}

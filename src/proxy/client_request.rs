//! The client's request head as the data plane's decisions read it (routing, variables, the
//! upstream request, stickiness): Pingora's [`RequestHeader`] for the requests its session
//! serves, or the fast path's [`ParsedHead`].
//!
//! Why two forms: building Pingora's header (a `HeaderMap`, a copy of every header name and
//! value, an `http::Uri`) was the largest single item of the fast path's CPU per request, for
//! values it only ever reads a few of. A parsed head keeps one copy of the bytes and where each
//! part lies in them; header lookups scan the few headers a request has, as nginx's do.

use std::ops::Range;

use pingora::http::RequestHeader;

/// A request head, borrowed for the decisions.
#[derive(Clone, Copy)]
pub enum ClientRequest<'a> {
    Pingora(&'a RequestHeader),
    Parsed(&'a ParsedHead),
}

impl<'a> ClientRequest<'a> {
    /// No request at all: a stream connection's variables are evaluated without one.
    pub fn none() -> ClientRequest<'static> {
        static EMPTY: std::sync::LazyLock<ParsedHead> =
            std::sync::LazyLock::new(ParsedHead::default);
        ClientRequest::Parsed(&EMPTY)
    }

    pub fn method(self) -> &'a str {
        match self {
            ClientRequest::Pingora(r) => r.method.as_str(),
            ClientRequest::Parsed(p) => &p.method,
        }
    }

    /// The request target as the client sent it (for the parsed form, always origin-form).
    pub fn raw_path(self) -> &'a [u8] {
        match self {
            ClientRequest::Pingora(r) => r.raw_path(),
            ClientRequest::Parsed(p) => p.raw_path(),
        }
    }

    pub fn version(self) -> http::Version {
        match self {
            ClientRequest::Pingora(r) => r.version,
            ClientRequest::Parsed(p) => p.version,
        }
    }

    /// The host of an absolute-form request target, which takes precedence over `Host`.
    pub fn target_host(self) -> Option<&'a str> {
        match self {
            ClientRequest::Pingora(r) => r.uri.host(),
            ClientRequest::Parsed(_) => None,
        }
    }

    /// The first header of that name (`name` in lowercase).
    pub fn header(self, name: &str) -> Option<&'a [u8]> {
        self.header_values(name).next()
    }

    /// Every header of that name (`name` in lowercase), in the order sent.
    pub fn header_values<'n>(self, name: &'n str) -> HeaderValues<'a, 'n> {
        match self {
            ClientRequest::Pingora(r) => HeaderValues::Map(r.headers.get_all(name).iter()),
            ClientRequest::Parsed(p) => HeaderValues::Parsed {
                head: p,
                at: 0,
                name: name.as_bytes(),
                dash: b'-',
            },
        }
    }

    /// The headers `$http_<var>` names: `var` in lowercase with `_` for each `-`, as nginx
    /// matches them (ngx_http_variable_unknown_header).
    pub fn variable_header_values<'n>(self, var: &'n str) -> HeaderValues<'a, 'n> {
        match self {
            ClientRequest::Pingora(r) => HeaderValues::MapScan {
                headers: r.headers.iter(),
                name: var.as_bytes(),
            },
            ClientRequest::Parsed(p) => HeaderValues::Parsed {
                head: p,
                at: 0,
                name: var.as_bytes(),
                dash: b'_',
            },
        }
    }

    /// Every header, with its name as sent, in the order sent.
    pub fn for_each_header(self, mut f: impl FnMut(&'a [u8], &'a [u8])) {
        match self {
            ClientRequest::Pingora(r) => {
                for (name, value) in r.case_header_iter() {
                    f(name.as_slice(), value.as_bytes());
                }
            }
            ClientRequest::Parsed(p) => {
                for (name, value) in &p.headers {
                    f(&p.bytes[name.clone()], &p.bytes[value.clone()]);
                }
            }
        }
    }

    pub fn header_count(self) -> usize {
        match self {
            ClientRequest::Pingora(r) => r.headers.len(),
            ClientRequest::Parsed(p) => p.headers.len(),
        }
    }
}

impl<'a> From<&'a RequestHeader> for ClientRequest<'a> {
    fn from(request: &'a RequestHeader) -> Self {
        ClientRequest::Pingora(request)
    }
}

impl<'a> From<&'a ParsedHead> for ClientRequest<'a> {
    fn from(head: &'a ParsedHead) -> Self {
        ClientRequest::Parsed(head)
    }
}

/// See [`ClientRequest::header_values`] and [`ClientRequest::variable_header_values`].
pub enum HeaderValues<'a, 'n> {
    Map(http::header::ValueIter<'a, http::HeaderValue>),
    MapScan {
        headers: http::header::Iter<'a, http::HeaderValue>,
        name: &'n [u8],
    },
    Parsed {
        head: &'a ParsedHead,
        at: usize,
        name: &'n [u8],
        /// What a `-` of a header name stands for in `name`.
        dash: u8,
    },
}

impl<'a> Iterator for HeaderValues<'a, '_> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            HeaderValues::Map(values) => values.next().map(|v| v.as_bytes()),
            HeaderValues::MapScan { headers, name } => headers
                .find(|(n, _)| same_name(n.as_str().as_bytes(), name, b'_'))
                .map(|(_, v)| v.as_bytes()),
            HeaderValues::Parsed {
                head,
                at,
                name,
                dash,
            } => {
                let head: &'a ParsedHead = head;
                while let Some((n, v)) = head.headers.get(*at) {
                    *at += 1;
                    if same_name(&head.bytes[n.clone()], name, *dash) {
                        return Some(&head.bytes[v.clone()]);
                    }
                }
                None
            }
        }
    }
}

/// Whether a header name as sent is `lower` (lowercase, with `dash` for each `-`).
fn same_name(sent: &[u8], lower: &[u8], dash: u8) -> bool {
    sent.len() == lower.len()
        && sent.iter().zip(lower).all(|(&s, &l)| {
            let s = if s == b'-' {
                dash
            } else {
                s.to_ascii_lowercase()
            };
            s == l
        })
}

/// The fast path's request head: a copy of its bytes and where each part lies in them. Kept by
/// the connection and parsed into again for each request, so that, once its buffers have grown
/// to a request's size, parsing one allocates nothing.
#[derive(Default)]
pub struct ParsedHead {
    bytes: Vec<u8>,
    method: String,
    target: Range<usize>,
    version: http::Version,
    headers: Vec<(Range<usize>, Range<usize>)>,
    /// What the fast path asks of every request, noted in the one pass over the headers (as
    /// nginx's header handlers note them while parsing).
    pub facts: HeadFacts,
}

/// The headers that decide how a request is read and whether its connection stays: indexes
/// into [`ParsedHead`]'s headers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HeadFacts {
    pub host: Option<u16>,
    pub connection: Option<u16>,
    pub content_length: Option<u16>,
    /// More than one `Content-Length`.
    pub content_lengths: u16,
    /// `Transfer-Encoding`, `Upgrade` or `Expect`: a body or a protocol this path leaves to
    /// Pingora.
    pub framing_or_upgrade: bool,
}

/// What [`ParsedHead::parse`] found at the start of a buffer.
pub enum Parsed {
    /// A whole head of this many bytes, now in the [`ParsedHead`].
    Complete(usize),
    /// Not all of it yet.
    Partial,
    /// Not a head this form takes: malformed (for Pingora to answer as it does), or one whose
    /// target is not a plain origin-form path (absolute-form, `*`, bytes outside the usual set),
    /// which Pingora's header represents as this form does not.
    Other,
}

const MAX_HEADERS: usize = 128;

impl ParsedHead {
    /// Parses the request head at the start of `buf` into `self`.
    pub fn parse(&mut self, buf: &[u8]) -> Parsed {
        // Left uninitialised: httparse writes the ones it fills, and 128 empty headers would be
        // 4 KB written per parse.
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut []);
        let len = match parsed.parse_with_uninit_headers(buf, &mut headers) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Other,
        };
        let (Some(method), Some(target), Some(version)) =
            (parsed.method, parsed.path, parsed.version)
        else {
            return Parsed::Other;
        };
        if !plain_origin_form(target.as_bytes()) {
            return Parsed::Other;
        }
        let base = buf.as_ptr() as usize;
        let range = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        self.version = match version {
            0 => http::Version::HTTP_10,
            1 => http::Version::HTTP_11,
            _ => return Parsed::Other,
        };
        self.method.clear();
        self.method.push_str(method);
        self.target = range(target.as_bytes());
        self.headers.clear();
        let mut facts = HeadFacts::default();
        for (i, h) in parsed.headers.iter().enumerate() {
            let name = h.name.as_bytes();
            // At most MAX_HEADERS, which fits.
            let index = Some(i as u16);
            let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
            match name.len() {
                4 if is(b"host") => facts.host = facts.host.or(index),
                10 if is(b"connection") => facts.connection = facts.connection.or(index),
                14 if is(b"content-length") => {
                    facts.content_length = facts.content_length.or(index);
                    facts.content_lengths += 1;
                }
                17 if is(b"transfer-encoding") => facts.framing_or_upgrade = true,
                7 if is(b"upgrade") => facts.framing_or_upgrade = true,
                6 if is(b"expect") => facts.framing_or_upgrade = true,
                _ => {}
            }
            self.headers.push((range(name), range(h.value)));
        }
        self.facts = facts;
        self.bytes.clear();
        self.bytes.extend_from_slice(&buf[..len]);
        Parsed::Complete(len)
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    /// The value of a header the [`HeadFacts`] point at.
    pub fn value(&self, index: Option<u16>) -> Option<&[u8]> {
        let (_, value) = self.headers.get(usize::from(index?))?;
        Some(&self.bytes[value.clone()])
    }

    pub fn raw_path(&self) -> &[u8] {
        &self.bytes[self.target.clone()]
    }

    pub fn version(&self) -> http::Version {
        self.version
    }
}

/// Whether a request target is an origin-form path (`/...`) of the characters URLs are
/// written with, which Pingora's header would keep byte for byte: no fragment, nothing
/// `http::Uri` refuses, nothing it would render differently.
fn plain_origin_form(target: &[u8]) -> bool {
    target.first() == Some(&b'/')
        && target.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'/' | b'?'
                        | b'='
                        | b'&'
                        | b'%'
                        | b'-'
                        | b'.'
                        | b'_'
                        | b'~'
                        | b'+'
                        | b','
                        | b';'
                        | b':'
                        | b'@'
                        | b'!'
                        | b'$'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &[u8]) -> ParsedHead {
        let mut p = ParsedHead::default();
        assert!(matches!(p.parse(head), Parsed::Complete(n) if n == head.len()));
        p
    }

    /// The parsed form reads as Pingora's header built from the same bytes does.
    #[test]
    fn reads_as_pingoras_header() {
        let bytes =
            b"POST /a/b?x=1&y=%20 HTTP/1.0\r\nHost: Example.com\r\nX-Forwarded-For: 1.1.1.1\r\n\
                      cookie: a=1\r\nX-FORWARDED-FOR: 2.2.2.2\r\nContent-Length: 3\r\n\r\n";
        let p = parsed(bytes);
        let mut r = RequestHeader::build("POST", b"/a/b?x=1&y=%20", None).unwrap();
        r.set_version(http::Version::HTTP_10);
        for (n, v) in [
            ("Host", "Example.com"),
            ("X-Forwarded-For", "1.1.1.1"),
            ("cookie", "a=1"),
            ("X-FORWARDED-FOR", "2.2.2.2"),
            ("Content-Length", "3"),
        ] {
            r.append_header(n.to_string(), v).unwrap();
        }
        assert_eq!(
            p.facts,
            HeadFacts {
                host: Some(0),
                connection: None,
                content_length: Some(4),
                content_lengths: 1,
                framing_or_upgrade: false,
            }
        );
        assert_eq!(p.value(p.facts.host), Some(&b"Example.com"[..]));
        let (a, b) = (ClientRequest::Parsed(&p), ClientRequest::Pingora(&r));
        assert_eq!(a.method(), b.method());
        assert_eq!(a.raw_path(), b.raw_path());
        assert_eq!(a.version(), b.version());
        assert_eq!(a.target_host(), b.target_host());
        assert_eq!(a.header_count(), b.header_count());
        for name in [
            "host",
            "x-forwarded-for",
            "cookie",
            "content-length",
            "accept",
        ] {
            assert_eq!(a.header(name), b.header(name), "{name}");
            let (x, y): (Vec<_>, Vec<_>) = (
                a.header_values(name).collect(),
                b.header_values(name).collect(),
            );
            assert_eq!(x, y, "{name}");
        }
        for var in ["x_forwarded_for", "host", "content_length"] {
            let (x, y): (Vec<_>, Vec<_>) = (
                a.variable_header_values(var).collect(),
                b.variable_header_values(var).collect(),
            );
            assert_eq!(x, y, "{var}");
            assert!(!x.is_empty(), "{var}");
        }
        // Every header with its name as sent, in the order sent, as nginx passes them on
        // (Pingora's map groups a repeated name at its first place).
        let mut x = Vec::new();
        a.for_each_header(|n, v| x.push(format!("{}: {}", s(n), s(v))));
        assert_eq!(
            x,
            [
                "Host: Example.com",
                "X-Forwarded-For: 1.1.1.1",
                "cookie: a=1",
                "X-FORWARDED-FOR: 2.2.2.2",
                "Content-Length: 3"
            ]
        );
    }

    fn s(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn targets_pingora_would_keep_otherwise_are_left_to_it() {
        let mut p = ParsedHead::default();
        for head in [
            &b"GET http://example.com/ HTTP/1.1\r\n\r\n"[..],
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"GET /a#frag HTTP/1.1\r\n\r\n",
            b"GET /a{b} HTTP/1.1\r\n\r\n",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET ?a HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert!(
                matches!(p.parse(head), Parsed::Other),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        assert!(matches!(
            p.parse(b"GET / HTTP/1.1\r\nHost: a"),
            Parsed::Partial
        ));
    }

    #[test]
    fn parsing_again_replaces_the_last_head() {
        let mut p = parsed(b"GET /one HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n");
        assert!(matches!(
            p.parse(b"HEAD /two HTTP/1.1\r\nC: 3\r\n\r\nGET /next"),
            Parsed::Complete(28)
        ));
        let r = ClientRequest::Parsed(&p);
        assert_eq!((r.method(), r.raw_path()), ("HEAD", &b"/two"[..]));
        assert_eq!(r.header("a"), None);
        assert_eq!(r.header("c"), Some(&b"3"[..]));
        assert_eq!(r.header_count(), 1);
        assert_eq!(p.facts, HeadFacts::default());
        p.parse(b"PUT /x HTTP/1.1\r\nCONNECTION: close\r\ncontent-length: 1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(
            p.facts,
            HeadFacts {
                host: None,
                connection: Some(0),
                content_length: Some(1),
                content_lengths: 2,
                framing_or_upgrade: true,
            }
        );
    }
}

//! The request URI as nginx sees it: `$uri` is the path decoded and normalized (percent-escapes
//! resolved, `//` merged, `.` and `..` segments removed) and is what locations match against;
//! `$args` is everything after the first `?`.
//!
//! This follows ngx_http_parse_complex_uri (nginx 1.22, src/http/ngx_http_parse.c) state by
//! state, including its quirks: a decoded `%`, `#` or `?` is kept as a literal character, while
//! other decoded characters (`%2F`, `%2E`) act like the character itself.

/// A request target split and normalized the nginx way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NormalizedUri {
    /// `$uri`: decoded and normalized, always starting with `/`.
    pub path: Vec<u8>,
    /// `$args`, without the `?`; `None` when the target had no `?`.
    pub args: Option<Vec<u8>>,
    /// Whether the target contained percent-escapes (nginx's `r->quoted_uri`): when a
    /// `proxy_pass` URI part replaces the location prefix, the rest is escaped again.
    pub quoted: bool,
}

/// Why nginx answers 400 to a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidUri {
    /// A bad `%` escape, a `%00`, or `..` above the root.
    Invalid,
}

/// Normalizes the path-and-query of a request target (origin form, `/...`). An absolute form
/// (`http://host/path`) is reduced to its path first.
pub fn normalize(target: &[u8], merge_slashes: bool) -> Result<NormalizedUri, InvalidUri> {
    let mut uri = NormalizedUri {
        path: Vec::new(),
        args: None,
        quoted: false,
    };
    normalize_into(target, merge_slashes, &mut uri)?;
    Ok(uri)
}

/// [`normalize`], into `uri`, whose buffers are reused (a connection's requests normalize
/// into the same ones). On an error `uri` holds nothing of use.
pub fn normalize_into(
    target: &[u8],
    merge_slashes: bool,
    uri: &mut NormalizedUri,
) -> Result<(), InvalidUri> {
    let target = origin_form(target);
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Usual,
        Slash,
        Dot,
        DotDot,
        Quoted,
        QuotedSecond,
    }
    let mut out = std::mem::take(&mut uri.path);
    out.clear();
    out.reserve(target.len() + 1);
    let mut quoted = false;
    if target.first() != Some(&b'/') {
        out.push(b'/');
    }
    let mut state = State::Usual;
    let mut quoted_state = State::Usual;
    let mut decoded: u8 = 0;
    let mut i = 0;
    // `ch` is the character being looked at; `Some(pending)` re-feeds a decoded character.
    let mut pending: Option<u8> = None;
    let mut args_at: Option<usize> = None;

    // Walks back over the last segment after `..`: nginx's `u -= 4` then back to a `/`.
    fn pop_segment(out: &mut Vec<u8>) -> Result<(), InvalidUri> {
        if out.len() < 4 {
            return Err(InvalidUri::Invalid);
        }
        let mut u = out.len() - 4;
        loop {
            if out[u] == b'/' {
                out.truncate(u + 1);
                return Ok(());
            }
            if u == 0 {
                return Err(InvalidUri::Invalid);
            }
            u -= 1;
        }
    }

    loop {
        let ch = match pending.take() {
            Some(c) => c,
            None => {
                if i >= target.len() {
                    break;
                }
                let c = target[i];
                i += 1;
                c
            }
        };
        match state {
            State::Usual => match ch {
                b'/' => {
                    state = State::Slash;
                    out.push(ch);
                }
                b'%' => {
                    quoted_state = state;
                    state = State::Quoted;
                }
                b'?' => {
                    args_at = Some(i);
                    break;
                }
                b'#' => break,
                _ => out.push(ch),
            },
            State::Slash => match ch {
                b'/' => {
                    if !merge_slashes {
                        out.push(ch);
                    }
                }
                b'.' => {
                    state = State::Dot;
                    out.push(ch);
                }
                b'%' => {
                    quoted_state = state;
                    state = State::Quoted;
                }
                b'?' => {
                    args_at = Some(i);
                    break;
                }
                b'#' => break,
                _ => {
                    state = State::Usual;
                    out.push(ch);
                }
            },
            State::Dot => match ch {
                b'/' => {
                    state = State::Slash;
                    out.pop();
                }
                b'.' => {
                    state = State::DotDot;
                    out.push(ch);
                }
                b'%' => {
                    quoted_state = state;
                    state = State::Quoted;
                }
                b'?' => {
                    out.pop();
                    args_at = Some(i);
                    break;
                }
                b'#' => {
                    out.pop();
                    state = State::Usual;
                    break;
                }
                _ => {
                    state = State::Usual;
                    out.push(ch);
                }
            },
            State::DotDot => match ch {
                b'/' | b'?' | b'#' => {
                    pop_segment(&mut out)?;
                    if ch == b'?' {
                        args_at = Some(i);
                        break;
                    }
                    if ch == b'#' {
                        state = State::Usual;
                        break;
                    }
                    state = State::Slash;
                }
                b'%' => {
                    quoted_state = state;
                    state = State::Quoted;
                }
                _ => {
                    state = State::Usual;
                    out.push(ch);
                }
            },
            State::Quoted => {
                quoted = true;
                decoded = hex(ch).ok_or(InvalidUri::Invalid)?;
                state = State::QuotedSecond;
            }
            State::QuotedSecond => {
                let low = hex(ch).ok_or(InvalidUri::Invalid)?;
                let c = (decoded << 4) + low;
                if ch.is_ascii_digit() {
                    if c == b'%' || c == b'#' {
                        state = State::Usual;
                        out.push(c);
                        continue;
                    } else if c == 0 {
                        return Err(InvalidUri::Invalid);
                    }
                } else if c == b'?' {
                    state = State::Usual;
                    out.push(c);
                    continue;
                }
                state = quoted_state;
                pending = Some(c);
            }
        }
    }
    match state {
        State::Quoted | State::QuotedSecond if args_at.is_none() => {
            return Err(InvalidUri::Invalid)
        }
        State::Dot if args_at.is_none() => {
            out.pop();
        }
        State::DotDot if args_at.is_none() => pop_segment(&mut out)?,
        _ => {}
    }
    let args = uri.args.take();
    uri.args = args_at.map(|start| {
        let rest = &target[start..];
        let end = rest.iter().position(|b| *b == b'#').unwrap_or(rest.len());
        let mut args = args.unwrap_or_default();
        args.clear();
        args.extend_from_slice(&rest[..end]);
        args
    });
    uri.path = out;
    uri.quoted = quoted;
    Ok(())
}

/// The path-and-query of an absolute-form target; other forms unchanged.
fn origin_form(target: &[u8]) -> &[u8] {
    for scheme in [&b"http://"[..], &b"https://"[..]] {
        if target.len() > scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &target[scheme.len()..];
            return match rest.iter().position(|b| *b == b'/' || *b == b'?') {
                Some(i) => &rest[i..],
                None => b"/",
            };
        }
    }
    target
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// nginx's NGX_ESCAPE_URI table: controls, space, `"`, `#`, `%`, `<`, `>`, `?`, `\`, `^`, `` ` ``,
/// `{`, `|`, `}`, DEL and every non-ASCII byte are escaped.
fn needs_escape(b: u8) -> bool {
    !(0x20..0x7f).contains(&b) || b" \"#%<>?\\^`{|}".contains(&b)
}

/// Appends `bytes` escaped as nginx escapes a URI part (`%XX`, uppercase hex).
pub fn escape_uri(bytes: &[u8], out: &mut Vec<u8>) {
    escape(bytes, out, needs_escape);
}

/// Appends `bytes` escaped as nginx escapes arguments (NGX_ESCAPE_ARGS): what
/// [`escape_uri`] escapes, and `&`, `+` and `;`.
pub fn escape_args(bytes: &[u8], out: &mut Vec<u8>) {
    escape(bytes, out, |b| {
        !(0x20..0x7f).contains(&b) || b" \"#%&+;<>?\\^`{|}".contains(&b)
    });
}

/// NGX_ESCAPE_URI_COMPONENT: everything but letters, digits, `-`, `.`, `_` and `~`.
pub fn escape_uri_component(bytes: &[u8], out: &mut Vec<u8>) {
    escape(bytes, out, |b| {
        !(b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    });
}

fn escape(bytes: &[u8], out: &mut Vec<u8>, needs: impl Fn(u8) -> bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if needs(b) {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> String {
        String::from_utf8(normalize(s.as_bytes(), true).unwrap().path).unwrap()
    }

    #[test]
    fn args_are_escaped_as_nginx_escapes_them() {
        let mut out = Vec::new();
        escape_args(b"a b&c+d/e=f?;", &mut out);
        assert_eq!(out, b"a%20b%26c%2Bd/e=f%3F%3B");
    }

    #[test]
    fn normalizes_like_nginx() {
        assert_eq!(path("/a/b"), "/a/b");
        assert_eq!(path("/a//b"), "/a/b");
        assert_eq!(path("/a/./b"), "/a/b");
        assert_eq!(path("/a/../b"), "/b");
        assert_eq!(path("/a/b/.."), "/a/");
        assert_eq!(path("/a/."), "/a/");
        assert_eq!(path("/a%2Fb"), "/a/b");
        assert_eq!(
            path("/a%2F%2E%2E%2Fb"),
            "/b",
            "decoded dots and slashes act as such"
        );
        assert_eq!(path("/a%3Fb"), "/a?b", "a decoded ? is literal");
        assert_eq!(path("/a%25b"), "/a%b");
        assert_eq!(path("/a%23b"), "/a#b");
        assert_eq!(path("/x#frag"), "/x");
        assert_eq!(path("http://h/p?q"), "/p");
        assert_eq!(path("/a+b"), "/a+b");
    }

    #[test]
    fn splits_args() {
        let u = normalize(b"/p/../q?a=1&b=%20#x", true).unwrap();
        assert_eq!(u.path, b"/q");
        assert_eq!(u.args.as_deref(), Some(&b"a=1&b=%20"[..]));
        assert!(!u.quoted);
        let u = normalize(b"/p?", true).unwrap();
        assert_eq!(u.args.as_deref(), Some(&b""[..]));
        assert_eq!(normalize(b"/p", true).unwrap().args, None);
        assert!(normalize(b"/%41", true).unwrap().quoted);
    }

    #[test]
    fn rejects_what_nginx_rejects() {
        assert!(normalize(b"/..", true).is_err());
        assert!(normalize(b"/../x", true).is_err());
        assert!(normalize(b"/a/../../x", true).is_err());
        assert!(normalize(b"/%zz", true).is_err());
        assert!(normalize(b"/%2", true).is_err());
        assert!(normalize(b"/%00", true).is_err());
    }

    #[test]
    fn keeps_slashes_without_merge() {
        assert_eq!(normalize(b"/a//b", false).unwrap().path, b"/a//b");
    }

    #[test]
    fn escapes_like_nginx() {
        let mut out = Vec::new();
        escape_uri("a b/é?%".as_bytes(), &mut out);
        assert_eq!(out, b"a%20b/%C3%A9%3F%25");
    }
}

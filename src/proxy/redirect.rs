//! nginx's `proxy_redirect`: the URL in an upstream's `Location` and `Refresh` headers rewritten
//! before the client sees it, so that a backend that names itself (`Location:
//! http://backend/login`, built from the `Host: backend` nginx sent it) sends the client back
//! through the proxy.
//!
//! nginx 1.22's rules (ngx_http_proxy_module.c), reproduced here:
//! - Where no level sets `proxy_redirect`, a location with a `proxy_pass` gets the `default`
//!   rule: the proxy_pass URL becomes the location's name (`proxy_pass http://u/two/;` in
//!   `location /one/` turns `http://u/two/x` into `/one/x`), or, for a proxy_pass without a
//!   URI, `http://u/` becomes `/`. Nested locations inherit it like any rule written above them.
//! - `proxy_redirect off` turns every rule off at its level and below.
//! - A text rule matches a URL that begins with it (case-sensitive, variables evaluated); the
//!   beginning is replaced. A regex rule (`~`, `~*`) is searched anywhere; on a match the whole
//!   URL becomes the replacement, in which `$1`..`$9` are the regex's captures.
//! - The first rule that matches is the only one applied.
//! - A `Location` that a rule made relative is made absolute again (`http://` + the client's
//!   Host + the port when not the scheme's) and written where nginx writes its own `Location`;
//!   any other is passed where the upstream had it. In `Refresh` the rules apply to what
//!   follows `url=`.

use std::ops::Range;

use regex::bytes::{Regex, RegexBuilder};

use super::vars::{eval, RequestVars};
use crate::compile::diag::Diagnostic;
use crate::config::template::Template;
use crate::config::{Defined, LocationKind, ProxyPass, ProxyRedirect};

/// One `proxy_redirect` as the data plane applies it.
pub struct RedirectRule {
    pattern: Pattern,
    replacement: Template,
}

enum Pattern {
    /// Text (with variables) a URL must begin with.
    Prefix(Template),
    /// A regex searched in the URL.
    Regex(Regex),
}

/// The rules a location applies, as nginx's merge leaves them, written as `proxy_redirect`s:
/// `merged` is what the location and the levels above it set (the innermost list), `pass` the
/// location's own `proxy_pass`. A `default` becomes the rule it stands for, and a location
/// with a proxy_pass under no `proxy_redirect` gets the default rule, which its nested
/// locations then inherit as written.
pub fn resolve(
    merged: Option<&[ProxyRedirect]>,
    pass: Option<&ProxyPass>,
    name: &str,
    kind: LocationKind,
) -> Option<Vec<ProxyRedirect>> {
    let default = |pass: &ProxyPass| {
        // A regex location's name does not count: its proxy_pass has no URI anyway.
        let name = if kind.is_regex() { "" } else { name };
        let url = pass.to_string();
        match pass.uri {
            Some(_) => ProxyRedirect::Replace {
                from: url,
                to: name.to_string(),
            },
            None => ProxyRedirect::Replace {
                from: format!("{url}/"),
                to: "/".to_string(),
            },
        }
    };
    match (merged, pass) {
        (None, None) => None,
        (None, Some(pass)) => Some(vec![default(pass)]),
        (Some(list), _) => Some(
            list.iter()
                .filter_map(|rule| match rule {
                    ProxyRedirect::Keyword(k) if k == "default" => pass.map(default),
                    other => Some(other.clone()),
                })
                .collect(),
        ),
    }
}

/// The rules of a resolved list ([`resolve`]); `off` leaves none.
pub fn compile(
    list: Option<&[ProxyRedirect]>,
    defined: Defined<'_>,
) -> Result<Vec<RedirectRule>, Diagnostic> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let mut rules = Vec::new();
    for rule in list {
        match rule {
            ProxyRedirect::Keyword(k) if k == "off" => return Ok(Vec::new()),
            // A `default` with no proxy_pass to stand for: nothing (validation refuses it).
            ProxyRedirect::Keyword(_) => {}
            ProxyRedirect::Replace { from, to } => rules.push(RedirectRule {
                pattern: pattern(from, defined)?,
                replacement: template(to, defined)?,
            }),
        }
    }
    Ok(rules)
}

/// What a `proxy_redirect`'s first argument means: a regex after `~` or `~*`, else text.
fn pattern(from: &str, defined: Defined<'_>) -> Result<Pattern, Diagnostic> {
    let (regex, caseless) = match from.strip_prefix('~') {
        Some(rest) => match rest.strip_prefix('*') {
            Some(rest) => (rest, true),
            None => (rest, false),
        },
        None => return Ok(Pattern::Prefix(template(from, defined)?)),
    };
    RegexBuilder::new(regex)
        .case_insensitive(caseless)
        .build()
        .map(Pattern::Regex)
        .map_err(|e| {
            Diagnostic::error(format!(
                "regular expression \"{regex}\" cannot be compiled: {}",
                e.to_string().lines().last().unwrap_or("invalid")
            ))
        })
}

fn template(text: &str, defined: Defined<'_>) -> Result<Template, Diagnostic> {
    Template::parse_in(text, defined).map_err(|e| Diagnostic::error(e.to_string()))
}

/// A `Location` value as the rules rewrite it, or `None` when no rule matches (the header is
/// then passed as it came).
pub fn rewrite_location(
    rules: &[RedirectRule],
    value: &[u8],
    vars: &RequestVars<'_>,
) -> Option<Vec<u8>> {
    rewrite_from(rules, value, 0, vars)
}

/// A `Refresh` value (`5; url=http://backend/x`) with its URL rewritten, or `None`.
pub fn rewrite_refresh(
    rules: &[RedirectRule],
    value: &[u8],
    vars: &RequestVars<'_>,
) -> Option<Vec<u8>> {
    let at = value
        .windows(4)
        .position(|w| w.eq_ignore_ascii_case(b"url="))?;
    rewrite_from(rules, value, at + 4, vars)
}

/// Applies the first matching rule to `value[start..]`.
fn rewrite_from(
    rules: &[RedirectRule],
    value: &[u8],
    start: usize,
    vars: &RequestVars<'_>,
) -> Option<Vec<u8>> {
    let url = &value[start..];
    let mut out = Vec::with_capacity(value.len() + 16);
    out.extend_from_slice(&value[..start]);
    let mut text = Vec::new();
    for rule in rules {
        match &rule.pattern {
            Pattern::Prefix(prefix) => {
                text.clear();
                eval(prefix, vars, &mut text);
                if !url.starts_with(&text) {
                    continue;
                }
                eval(&rule.replacement, vars, &mut out);
                out.extend_from_slice(&url[text.len()..]);
            }
            Pattern::Regex(regex) => {
                let Some(caps) = regex.captures(url) else {
                    continue;
                };
                let ranges: Vec<Option<Range<usize>>> =
                    caps.iter().map(|m| m.map(|m| m.range())).collect();
                eval(
                    &rule.replacement,
                    &vars.with_captures(url, &ranges),
                    &mut out,
                );
            }
        }
        return Some(out);
    }
    None
}

/// A relative redirect made absolute as nginx's header filter makes it (absolute_redirect on,
/// server_name_in_redirect off, port_in_redirect on): the scheme, the host the client asked
/// for (else the address it connected to), the port when not the scheme's, then `path`.
pub fn absolute(
    tls: bool,
    host: Option<&str>,
    local: Option<std::net::SocketAddr>,
    path: &[u8],
) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(path.len() + 32);
    out.extend_from_slice(if tls { b"https://" } else { b"http://" });
    match (host, local) {
        (Some(host), _) => out.extend_from_slice(host.as_bytes()),
        // nginx writes the address without brackets here, IPv6 too.
        (None, Some(local)) => {
            let _ = write!(out, "{}", local.ip());
        }
        (None, None) => {}
    }
    if let Some(local) = local {
        let default = if tls { 443 } else { 80 };
        if local.port() != default {
            let _ = write!(out, ":{}", local.port());
        }
    }
    out.extend_from_slice(path);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scheme;
    use pingora::http::RequestHeader;

    fn pass(host: &str, uri: Option<&str>) -> ProxyPass {
        ProxyPass {
            scheme: Scheme::Http,
            host: host.to_string(),
            uri: uri.map(str::to_string),
        }
    }

    fn pair(from: &str, to: &str) -> ProxyRedirect {
        ProxyRedirect::Replace {
            from: from.to_string(),
            to: to.to_string(),
        }
    }

    fn keyword(k: &str) -> ProxyRedirect {
        ProxyRedirect::Keyword(k.to_string())
    }

    /// Rewrites `value` as a request for `Host: front.test` would see it.
    fn apply(rules: &[ProxyRedirect], value: &str, refresh: bool) -> Option<String> {
        let rules = compile(Some(rules), Defined::NONE).unwrap();
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let request_id = std::sync::OnceLock::new();
        let vars = RequestVars {
            local: Some(("10.0.0.1".parse().unwrap(), 8080)),
            host: Some("front.test"),
            uri: b"/loc/x",
            captures: &[None, Some(1..4)],
            proxy_host: "u",
            proxy_port: "80",
            ..crate::proxy::vars::sample((&req).into(), &request_id)
        };
        let out = if refresh {
            rewrite_refresh(&rules, value.as_bytes(), &vars)
        } else {
            rewrite_location(&rules, value.as_bytes(), &vars)
        };
        out.map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn the_default_rule_follows_the_proxy_pass() {
        let prefix = LocationKind::Prefix;
        // With a URI: the proxy_pass URL becomes the location's name.
        assert_eq!(
            resolve(None, Some(&pass("u", Some("/two/"))), "/one/", prefix),
            Some(vec![pair("http://u/two/", "/one/")])
        );
        // Without: the URL with a slash becomes a slash.
        assert_eq!(
            resolve(None, Some(&pass("10.0.0.2:81", None)), "/one/", prefix),
            Some(vec![pair("http://10.0.0.2:81/", "/")])
        );
        // No proxy_pass, nothing set: no rules.
        assert_eq!(resolve(None, None, "/", prefix), None);
        // `default` stands for the same rule, among others; `off` is kept.
        assert_eq!(
            resolve(
                Some(&[pair("a", "b"), keyword("default")]),
                Some(&pass("u", Some("/"))),
                "/exact",
                LocationKind::Exact
            ),
            Some(vec![pair("a", "b"), pair("http://u/", "/exact")])
        );
        assert_eq!(
            resolve(Some(&[keyword("off")]), Some(&pass("u", None)), "/", prefix),
            Some(vec![keyword("off")])
        );
        // A regex location's name does not count.
        assert_eq!(
            resolve(None, Some(&pass("u", None)), "\\.php$", LocationKind::Regex),
            Some(vec![pair("http://u/", "/")])
        );
        // What a level above resolved is inherited as written, proxy_pass or not.
        assert_eq!(
            resolve(
                Some(&[pair("http://u/", "/")]),
                Some(&pass("v", Some("/x/"))),
                "/in/",
                prefix
            ),
            Some(vec![pair("http://u/", "/")])
        );
    }

    #[test]
    fn text_rules_replace_the_beginning_and_the_first_match_wins() {
        let rules = [pair("http://u/two/", "/one/"), pair("http://u/", "/")];
        assert_eq!(
            apply(&rules, "http://u/two/x?y", false).as_deref(),
            Some("/one/x?y")
        );
        assert_eq!(apply(&rules, "http://u/z", false).as_deref(), Some("/z"));
        // Case matters, and the rule must match at the start.
        assert_eq!(apply(&rules, "HTTP://U/z", false), None);
        assert_eq!(apply(&rules, "/http://u/z", false), None);
        assert_eq!(apply(&rules, "http://other/", false), None);
        // Variables on both sides.
        let rules = [pair("http://$proxy_host/", "$scheme://$host:$server_port/")];
        assert_eq!(
            apply(&rules, "http://u/a", false).as_deref(),
            Some("http://front.test:8080/a")
        );
    }

    #[test]
    fn regex_rules_replace_the_whole_url_with_their_captures() {
        let rules = [pair("~^http://([^/]+)/(.*)$", "/via/$1/$2")];
        assert_eq!(
            apply(&rules, "http://u:81/a/b", false).as_deref(),
            Some("/via/u:81/a/b")
        );
        // Searched anywhere, not anchored unless the regex says so.
        let rules = [pair("~backend", "/b")];
        assert_eq!(
            apply(&rules, "http://backend/x", false).as_deref(),
            Some("/b")
        );
        let rules = [pair("~*^HTTP://U/", "/")];
        assert_eq!(apply(&rules, "http://u/x", false).as_deref(), Some("/"));
        assert_eq!(apply(&[pair("~^https:", "/")], "http://u/", false), None);
    }

    #[test]
    fn refresh_is_rewritten_after_url_equals() {
        let rules = [pair("http://u/", "/")];
        assert_eq!(
            apply(&rules, "5; URL=http://u/next", true).as_deref(),
            Some("5; URL=/next")
        );
        assert_eq!(apply(&rules, "5", true), None);
        assert_eq!(apply(&rules, "5; url=http://other/", true), None);
    }

    #[test]
    fn off_leaves_no_rules() {
        assert!(compile(Some(&[keyword("off")]), Defined::NONE)
            .unwrap()
            .is_empty());
        assert!(compile(None, Defined::NONE).unwrap().is_empty());
    }

    #[test]
    fn relative_redirects_are_made_absolute_as_nginx_does() {
        let local = |s: &str| Some(s.parse().unwrap());
        assert_eq!(
            absolute(false, Some("a.test"), local("10.0.0.1:8080"), b"/x"),
            b"http://a.test:8080/x"
        );
        assert_eq!(
            absolute(false, Some("a.test"), local("10.0.0.1:80"), b"/x"),
            b"http://a.test/x"
        );
        assert_eq!(
            absolute(true, Some("a.test"), local("10.0.0.1:443"), b"/x"),
            b"https://a.test/x"
        );
        // No Host: the address the client connected to.
        assert_eq!(
            absolute(false, None, local("127.0.0.1:8080"), b"/x"),
            b"http://127.0.0.1:8080/x"
        );
    }
}

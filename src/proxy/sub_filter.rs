//! nginx's sub filter: the strings `sub_filter` names replaced in a response body as it
//! passes, as ngx_http_sub_filter_module replaces them (see `config::sub_filter`): proxied
//! responses, files, and the responses the appliance makes (all on Pingora's path; the fast
//! path hands such locations over).
//!
//! Which replacement wins where two could: nginx scans for the leftmost place where any
//! string starts, and there tries the strings in the order of their byte at the shortest
//! string's length (a stable sort), the first that matches in full winning; a string whose
//! start matches up to the end of the data received waits for more before anything after
//! it is tried. With `sub_filter_once` each string is replaced once, and once all have been,
//! the rest passes untouched.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::ResponseHeader;

use super::gzip::{type_listed, weak_etag};
use super::vars::{eval, RequestVars};
use crate::compile::diag::Diagnostic;
use crate::config::sub_filter::{SubFilter, ALWAYS_FILTERED};
use crate::config::template::Template;
use crate::config::{Defined, Origin};

/// A location's sub filter settings, after inheritance.
pub struct SubFilterConf {
    /// Search string and replacement, in config order.
    pairs: Vec<(Template, Template)>,
    once: bool,
    /// The types filtered, text/html among them; `None` for `*`. Shared with each request's
    /// [`Prepared`].
    types: Option<Arc<[String]>>,
    last_modified: bool,
}

impl SubFilterConf {
    /// `None` where no `sub_filter` applies.
    pub fn build(
        settings: &SubFilter,
        defined: Defined<'_>,
        origin: Option<&Origin>,
    ) -> Result<Option<SubFilterConf>, Diagnostic> {
        let Some(list) = settings.replace.as_deref().filter(|l| !l.is_empty()) else {
            return Ok(None);
        };
        let template = |text: &str| {
            Template::parse_in(text, defined)
                .map_err(|e| Diagnostic::error(e.to_string()).at_opt(origin))
        };
        let pairs = list
            .iter()
            .map(|r| Ok((template(&r.search)?, template(&r.with)?)))
            .collect::<Result<_, Diagnostic>>()?;
        let types = match settings.types.as_deref() {
            Some(list) if list.iter().any(|t| t == "*") => None,
            list => {
                let mut types = vec![ALWAYS_FILTERED.to_string()];
                types.extend(list.unwrap_or_default().iter().cloned());
                Some(types.into())
            }
        };
        Ok(Some(SubFilterConf {
            pairs,
            once: settings.once.unwrap_or(true),
            types,
            last_modified: settings.last_modified.unwrap_or(false),
        }))
    }

    /// The strings for one request (their variables evaluated, the search strings
    /// lowercased, empty ones left out); `None` when none is left.
    pub fn prepare(&self, vars: &RequestVars<'_>) -> Option<Prepared> {
        let mut matches = Vec::with_capacity(self.pairs.len());
        for (search, with) in &self.pairs {
            let mut text = Vec::new();
            eval(search, vars, &mut text);
            if text.is_empty() {
                continue;
            }
            text.make_ascii_lowercase();
            let mut replacement = Vec::new();
            eval(with, vars, &mut replacement);
            matches.push((text, Bytes::from(replacement)));
        }
        if matches.is_empty() {
            return None;
        }
        let shortest = matches.iter().map(|(s, _)| s.len()).min().unwrap_or(1);
        matches.sort_by_key(|(search, _)| search[shortest - 1]);
        let mut starts = [false; 256];
        for (search, _) in &matches {
            starts[search[0] as usize] = true;
            starts[search[0].to_ascii_uppercase() as usize] = true;
        }
        Some(Prepared {
            types: self.types.clone(),
            last_modified: self.last_modified,
            substituter: Substituter {
                applied: vec![false; matches.len()],
                matches,
                starts,
                once: self.once,
                done: false,
                pending: Vec::new(),
            },
        })
    }
}

/// A request's strings, before the response is known.
pub struct Prepared {
    types: Option<Arc<[String]>>,
    last_modified: bool,
    substituter: Substituter,
}

impl Prepared {
    /// Whether a response of this Content-Type is filtered.
    pub fn filters_type(&self, content_type: &[u8]) -> bool {
        type_listed(self.types.as_deref(), Some(content_type))
    }

    /// `sub_filter_last_modified`: Last-Modified stays, and the ETag is made weak (else both
    /// go).
    pub fn keeps_last_modified(&self) -> bool {
        self.last_modified
    }

    /// ngx_http_sub_header_filter's test: the response is filtered when its type is one of
    /// `types` and it is not known to be empty.
    pub fn decide(
        self,
        content_type: Option<&[u8]>,
        content_length: Option<&[u8]>,
    ) -> Option<Substituter> {
        let empty = content_length.is_some_and(|v| v.trim_ascii() == b"0");
        (!empty && type_listed(self.types.as_deref(), content_type)).then_some(self.substituter)
    }

    /// [`Prepared::decide`] on a response's headers, and if it is filtered, the headers as
    /// the filter leaves them: no Content-Length, and no Last-Modified and ETag (a weak ETag
    /// with `sub_filter_last_modified on`).
    pub fn start(self, response: &mut ResponseHeader) -> pingora::Result<Option<Substituter>> {
        let header = |name| response.headers.get(name).map(|v| v.as_bytes());
        let last_modified = self.last_modified;
        let decided = self.decide(
            header(http::header::CONTENT_TYPE),
            header(http::header::CONTENT_LENGTH),
        );
        let Some(substituter) = decided else {
            return Ok(None);
        };
        response.remove_header(&http::header::CONTENT_LENGTH);
        if last_modified {
            if let Some(etag) = response.remove_header(&http::header::ETAG) {
                if let Some(weak) = weak_etag(etag.as_bytes()) {
                    response.insert_header(http::header::ETAG, weak)?;
                }
            }
        } else {
            response.remove_header(&http::header::LAST_MODIFIED);
            response.remove_header(&http::header::ETAG);
        }
        Ok(Some(substituter))
    }
}

/// One response's replacements as its body passes.
pub struct Substituter {
    /// Lowercase search strings and their replacements, in the order they are tried.
    matches: Vec<(Vec<u8>, Bytes)>,
    /// Bytes a search string may start with (either case).
    starts: [bool; 256],
    once: bool,
    /// With `once`: which strings have been replaced.
    applied: Vec<bool>,
    /// With `once`: every string has been replaced, the rest passes as it is.
    done: bool,
    /// The end of the data so far, held while a string may be starting in it.
    pending: Vec<u8>,
}

/// What a search string makes of the text at one place.
enum Found {
    No,
    /// The text ends before the string does, and matches it so far.
    Partly,
    Yes,
}

impl Substituter {
    /// The body's next bytes, replaced; the end of them may be held for the next call.
    pub fn push(&mut self, data: &[u8]) -> Bytes {
        self.run(data, false)
    }

    /// The end of the body: what is held goes out.
    pub fn finish(&mut self) -> Bytes {
        self.run(&[], true)
    }

    /// A whole body at once.
    pub fn whole(mut self, body: &[u8]) -> Bytes {
        self.run(body, true)
    }

    fn run(&mut self, data: &[u8], last: bool) -> Bytes {
        let held;
        let text: &[u8] = if self.pending.is_empty() {
            data
        } else {
            let mut joined = std::mem::take(&mut self.pending);
            joined.extend_from_slice(data);
            held = joined;
            &held
        };
        let mut out = Vec::with_capacity(text.len());
        let mut copied = 0;
        let mut at = 0;
        'scan: while at < text.len() && !self.done {
            if !self.starts[text[at] as usize] {
                at += 1;
                continue;
            }
            for i in 0..self.matches.len() {
                if self.once && self.applied[i] {
                    continue;
                }
                match compare(&text[at..], &self.matches[i].0) {
                    Found::No => {}
                    Found::Partly if !last => {
                        // Wait for the rest before anything else is tried here.
                        out.extend_from_slice(&text[copied..at]);
                        self.pending = text[at..].to_vec();
                        return out.into();
                    }
                    Found::Partly => {}
                    Found::Yes => {
                        out.extend_from_slice(&text[copied..at]);
                        out.extend_from_slice(&self.matches[i].1);
                        at += self.matches[i].0.len();
                        copied = at;
                        if self.once {
                            self.applied[i] = true;
                            self.done = self.applied.iter().all(|a| *a);
                        }
                        continue 'scan;
                    }
                }
            }
            at += 1;
        }
        out.extend_from_slice(&text[copied..]);
        out.into()
    }
}

/// `search` (lowercase) against the start of `text`, without regard to case.
fn compare(text: &[u8], search: &[u8]) -> Found {
    let n = text.len().min(search.len());
    if !text[..n]
        .iter()
        .zip(&search[..n])
        .all(|(t, s)| t.to_ascii_lowercase() == *s)
    {
        return Found::No;
    }
    if n < search.len() {
        Found::Partly
    } else {
        Found::Yes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn substituter(pairs: &[(&str, &str)], once: bool) -> Substituter {
        let mut matches: Vec<(Vec<u8>, Bytes)> = pairs
            .iter()
            .map(|(s, w)| {
                (
                    s.to_ascii_lowercase().into_bytes(),
                    Bytes::from(w.to_string()),
                )
            })
            .collect();
        let shortest = matches.iter().map(|(s, _)| s.len()).min().unwrap();
        matches.sort_by_key(|(search, _)| search[shortest - 1]);
        let mut starts = [false; 256];
        for (search, _) in &matches {
            starts[search[0] as usize] = true;
            starts[search[0].to_ascii_uppercase() as usize] = true;
        }
        Substituter {
            applied: vec![false; matches.len()],
            matches,
            starts,
            once,
            done: false,
            pending: Vec::new(),
        }
    }

    /// The body in every split into two pieces gives the same output as whole.
    fn all_splits(pairs: &[(&str, &str)], once: bool, body: &str) -> String {
        let whole = substituter(pairs, once).whole(body.as_bytes());
        for cut in 0..=body.len() {
            let mut s = substituter(pairs, once);
            let mut out = s.push(&body.as_bytes()[..cut]).to_vec();
            out.extend_from_slice(&s.push(&body.as_bytes()[cut..]));
            out.extend_from_slice(&s.finish());
            assert_eq!(out, whole, "cut at {cut}");
        }
        String::from_utf8(whole.to_vec()).unwrap()
    }

    #[test]
    fn strings_are_replaced_as_nginx_replaces_them() {
        let pairs = [("http://Backend/", "https://site/")];
        let body = "<a href=\"HTTP://backend/x\">x</a> <a href=\"http://backend/y\">";
        assert_eq!(
            all_splits(&pairs, true, body),
            "<a href=\"https://site/x\">x</a> <a href=\"http://backend/y\">"
        );
        assert_eq!(
            all_splits(&pairs, false, body),
            "<a href=\"https://site/x\">x</a> <a href=\"https://site/y\">"
        );
        // Each string once, then the rest untouched.
        assert_eq!(
            all_splits(&[("a", "1"), ("b", "2")], true, "xaabbab"),
            "x1a2bab"
        );
        // Overlaps: the leftmost start wins; at one start, the order of the byte at the
        // shortest length ("ab" and "abc": 'b' both, config order).
        assert_eq!(
            all_splits(&[("ab", "X"), ("abc", "Y")], false, "abcab"),
            "XcX"
        );
        assert_eq!(
            all_splits(&[("abc", "Y"), ("ab", "X")], false, "abcab"),
            "YX"
        );
        // The leftmost start wins whatever the order.
        assert_eq!(all_splits(&[("xa", "1"), ("ab", "2")], false, "xab"), "1b");
        // A string cut off by the end of the body is left as it is.
        assert_eq!(
            all_splits(&[("hello", "bye")], false, "say hell"),
            "say hell"
        );
        assert_eq!(all_splits(&[("a", "")], false, "banana"), "bnn");
    }
}

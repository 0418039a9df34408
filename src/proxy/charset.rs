//! `charset` on the data path (see `config::charset`): the `Content-Type` a response goes out
//! with, and whether its body is recoded, as ngx_http_charset_filter_module and nginx's header
//! filter decide it. A response of one of `charset_types` that names no charset gets
//! `; charset=<name>`, and is recoded from `source_charset` when that is another charset; one
//! that names its own keeps it, unless `override_charset` is on: then it is named `<name>`,
//! recoded from its own charset when that is another. Recoding needs a `charset_map` between
//! the two (a response without one goes as it came, and nginx's error is logged) and a response
//! without a Content-Encoding. 301 and 302 responses never name a charset.

use std::borrow::Cow;
use std::sync::Arc;

use super::recode::{MapTables, Table};
use crate::compile::diag::Diagnostic;
use crate::config::charset::{self, Charset, CharsetMap};
use crate::config::Origin;

/// The http level's `charset_map`s, as written and as tables.
#[derive(Debug, Default)]
pub struct Charsets {
    maps: Vec<CharsetMap>,
    tables: Vec<MapTables>,
}

impl Charsets {
    pub fn build(maps: &[CharsetMap]) -> Result<Charsets, Diagnostic> {
        for (i, map) in maps.iter().enumerate() {
            if let Some(problem) = map.problem(&maps[..i]) {
                return Err(Diagnostic::error(format!("http.charset_map: {problem}")));
            }
        }
        Ok(Charsets {
            maps: maps.to_vec(),
            tables: maps.iter().map(MapTables::build).collect(),
        })
    }

    /// The table that recodes `source` to `target`, if a map joins them.
    fn table(&self, source: &str, target: &str) -> Option<Arc<Table>> {
        (self.tables.iter()).find_map(|t| t.between(source, target).cloned())
    }
}

#[derive(Debug)]
pub struct CharsetConf {
    /// The charset to name.
    name: Box<str>,
    /// `source_charset`: what responses without a charset are in, when set.
    source: Option<Box<str>>,
    override_charset: bool,
    /// Lowercase; `None` is any type (`charset_types *`).
    types: Option<Vec<Box<str>>>,
    charsets: Arc<Charsets>,
}

/// What the charset filter does to one response.
#[derive(Debug, Default)]
pub struct Verdict {
    /// The `Content-Type` to send instead of the response's, if another.
    pub content_type: Option<Vec<u8>>,
    /// The body is recoded with this table.
    pub recode: Option<Arc<Table>>,
    /// nginx's error when the response is in a charset no map joins to the one to name:
    /// "no "charset_map" between the charsets ..." (the response goes as it came).
    pub missing_map: Option<String>,
}

impl CharsetConf {
    /// `None` when the location names no charset (`charset off`, nginx's default).
    pub fn build(
        settings: &Charset,
        charsets: &Arc<Charsets>,
        at: Option<&Origin>,
    ) -> Result<Option<CharsetConf>, Diagnostic> {
        if let Some(problem) = settings.problem(&charsets.maps) {
            return Err(Diagnostic::error(problem).at_opt(at));
        }
        let Some(name) = settings.named() else {
            return Ok(None);
        };
        let types = match &settings.types {
            None => Some(charset::DEFAULT_TYPES.iter().map(|t| (*t).into()).collect()),
            Some(list) if list.iter().any(|t| t == "*") => None,
            Some(list) => Some(
                std::iter::once(charset::ALWAYS_NAMED)
                    .chain(list.iter().map(String::as_str))
                    .map(|t| t.to_ascii_lowercase().into())
                    .collect(),
            ),
        };
        Ok(Some(CharsetConf {
            name: name.into(),
            source: settings.source_named().map(Into::into),
            override_charset: settings.override_.unwrap_or(false),
            types,
            charsets: charsets.clone(),
        }))
    }

    /// The `Content-Type` to send instead of `value` on a response of `status`, or `None` to
    /// send it as it is; for a response the appliance makes, whose body is not recoded.
    pub fn content_type(&self, status: u16, value: &[u8]) -> Option<Vec<u8>> {
        self.verdict(status, value, false).content_type
    }

    /// ngx_http_charset_header_filter on a response of `status` whose `Content-Type` is
    /// `value` (`encoded`: it has a Content-Encoding).
    pub fn verdict(&self, status: u16, value: &[u8], encoded: bool) -> Verdict {
        // ngx_http_upstream_copy_content_type: the type runs up to the `;` before a
        // `charset=` parameter, or to the end when there is none (other parameters included).
        let (media_type, own) = split_charset(value);
        match own {
            None if !self.names(media_type) => return Verdict::default(),
            // A response that names its charset keeps it unless told otherwise.
            Some(_) if !self.override_charset => return Verdict::default(),
            _ => {}
        }
        let source = own
            .map(|o| String::from_utf8_lossy(o))
            .or_else(|| self.source.as_deref().map(Cow::Borrowed));
        let mut verdict = Verdict::default();
        if let Some(source) = source.filter(|s| !s.eq_ignore_ascii_case(&self.name)) {
            if encoded {
                return verdict;
            }
            match self.charsets.table(&source, &self.name) {
                Some(table) => verdict.recode = Some(table),
                None => {
                    verdict.missing_map = Some(format!(
                        "no \"charset_map\" between the charsets \"{source}\" and \"{}\"",
                        self.name
                    ));
                    return verdict;
                }
            }
        }
        // "do not set charset for the redirect because NN 4.x use this charset instead of the
        // next page charset" (ngx_http_set_charset): the type goes without one.
        if matches!(status, 301 | 302) {
            verdict.content_type = own.map(|_| media_type.to_vec());
            return verdict;
        }
        let mut out = Vec::with_capacity(media_type.len() + 10 + self.name.len());
        out.extend_from_slice(media_type);
        out.extend_from_slice(b"; charset=");
        out.extend_from_slice(self.name.as_bytes());
        verdict.content_type = Some(out);
        verdict
    }

    /// Whether responses of `media_type` (compared as nginx's types hash does: lowercase,
    /// parameters and all) are given the charset.
    fn names(&self, media_type: &[u8]) -> bool {
        match &self.types {
            None => !media_type.is_empty(),
            Some(types) => types
                .iter()
                .any(|t| t.as_bytes().eq_ignore_ascii_case(media_type)),
        }
    }
}

/// `content_type` as a response of `status` goes out under `charset`, when there is one.
pub fn apply<'a>(
    charset: Option<&CharsetConf>,
    status: u16,
    content_type: &'a str,
) -> Cow<'a, str> {
    match charset.and_then(|c| c.content_type(status, content_type.as_bytes())) {
        // Pieces of a str and the configured name: UTF-8 still.
        Some(value) => Cow::Owned(String::from_utf8_lossy(&value).into_owned()),
        None => Cow::Borrowed(content_type),
    }
}

/// A `Content-Type` value split as nginx's upstream module splits it: the part before a
/// `charset=` parameter (up to its `;`), and that parameter's value without quotes.
fn split_charset(value: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut at = 0;
    while let Some(offset) = value[at..].iter().position(|&b| b == b';') {
        let semicolon = at + offset;
        let mut p = semicolon + 1;
        while value.get(p) == Some(&b' ') {
            p += 1;
        }
        if p == value.len() {
            break;
        }
        if value.len() - p >= 8 && value[p..p + 8].eq_ignore_ascii_case(b"charset=") {
            let mut own = &value[p + 8..];
            own = own.strip_prefix(b"\"").unwrap_or(own);
            own = own.strip_suffix(b"\"").unwrap_or(own);
            return (&value[..semicolon], Some(own));
        }
        at = p;
    }
    (value, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(name: &str, override_charset: bool, types: Option<&[&str]>) -> CharsetConf {
        let settings = Charset {
            name: Some(name.into()),
            override_: Some(override_charset),
            types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
            ..Charset::default()
        };
        CharsetConf::build(&settings, &Arc::default(), None)
            .unwrap()
            .unwrap()
    }

    fn sent(conf: &CharsetConf, status: u16, value: &str) -> String {
        match conf.content_type(status, value.as_bytes()) {
            Some(v) => String::from_utf8(v).unwrap(),
            None => value.to_string(),
        }
    }

    #[test]
    fn names_the_charset_of_the_default_types() {
        let utf8 = conf("utf-8", false, None);
        assert_eq!(sent(&utf8, 200, "text/html"), "text/html; charset=utf-8");
        assert_eq!(sent(&utf8, 404, "text/plain"), "text/plain; charset=utf-8");
        assert_eq!(sent(&utf8, 200, "Text/HTML"), "Text/HTML; charset=utf-8");
        assert_eq!(sent(&utf8, 200, "text/css"), "text/css");
        assert_eq!(sent(&utf8, 200, "application/json"), "application/json");
        // Other parameters are part of the type nginx looks up.
        assert_eq!(sent(&utf8, 200, "text/html; q=1"), "text/html; q=1");
    }

    #[test]
    fn never_on_a_301_or_302() {
        let utf8 = conf("utf-8", true, None);
        assert_eq!(sent(&utf8, 301, "text/html"), "text/html");
        assert_eq!(sent(&utf8, 302, "text/html"), "text/html");
        assert_eq!(sent(&utf8, 307, "text/html"), "text/html; charset=utf-8");
        // Overridden on a redirect, the charset goes and none comes in its place.
        assert_eq!(sent(&utf8, 302, "text/html; charset=UTF-8"), "text/html");
    }

    #[test]
    fn a_response_keeps_its_own_charset_unless_overridden_with_the_same() {
        let keep = conf("utf-8", false, None);
        assert_eq!(
            sent(&keep, 200, "text/html; charset=iso-8859-1"),
            "text/html; charset=iso-8859-1"
        );
        let over = conf("utf-8", true, None);
        assert_eq!(
            sent(&over, 200, "text/html;charset=\"UTF-8\""),
            "text/html; charset=utf-8"
        );
        // Another charset would need recoding: sent as it came.
        assert_eq!(
            sent(&over, 200, "text/html; charset=iso-8859-1"),
            "text/html; charset=iso-8859-1"
        );
        // With override on, a named charset is replaced whatever the type.
        assert_eq!(
            sent(&over, 200, "application/json; charset=utf-8"),
            "application/json; charset=utf-8"
        );
    }

    #[test]
    fn listed_types_and_any_type() {
        let css = conf("utf-8", false, Some(&["text/css"]));
        assert_eq!(sent(&css, 200, "text/css"), "text/css; charset=utf-8");
        assert_eq!(sent(&css, 200, "text/html"), "text/html; charset=utf-8");
        assert_eq!(sent(&css, 200, "text/plain"), "text/plain");
        let any = conf("koi8-r", false, Some(&["*"]));
        assert_eq!(sent(&any, 200, "image/png"), "image/png; charset=koi8-r");
    }

    #[test]
    fn splits_as_nginx_does() {
        assert_eq!(split_charset(b"text/html"), (&b"text/html"[..], None));
        assert_eq!(
            split_charset(b"text/html; a=b; charset=x"),
            (&b"text/html; a=b"[..], Some(&b"x"[..]))
        );
        assert_eq!(split_charset(b"text/html;"), (&b"text/html;"[..], None));
        assert_eq!(split_charset(b"text/html;  "), (&b"text/html;  "[..], None));
    }

    #[test]
    fn off_builds_nothing_and_a_recoding_is_refused() {
        let off = Charset {
            name: Some("off".into()),
            ..Charset::default()
        };
        assert!(CharsetConf::build(&off, &Arc::default(), None)
            .unwrap()
            .is_none());
        let recode = Charset {
            name: Some("utf-8".into()),
            source: Some("windows-1251".into()),
            ..Charset::default()
        };
        assert!(CharsetConf::build(&recode, &Arc::default(), None).is_err());
    }
}

//! `$invalid_referer`: whether a request's Referer is one `valid_referers` allows, decided as
//! ngx_http_referer_variable decides it (see `config::referers` for how the words are read).

use std::sync::Arc;

use regex::{Regex, RegexBuilder};

use crate::compile::diag::Diagnostic;
use crate::config::referers::Rules;
use crate::config::Origin;

/// One level's `valid_referers`, ready to match.
pub struct ValidReferers {
    rules: Rules,
    regexes: Arc<[Regex]>,
    server_name_regexes: Arc<[Regex]>,
}

/// The longest host nginx copies out of a Referer (its 256-byte buffer); a longer one is
/// invalid.
const MAX_HOST: usize = 256;

impl ValidReferers {
    /// The rules of a level's words, `server_names` standing for `server_names` of the server
    /// the level is in. As ngx_http_referer_merge_conf merges them, a level with no `~regex`
    /// words of its own takes those of the level around it (`outer`), and one with no regex
    /// server names the outer level's; its host names and `none`/`blocked` are its own.
    pub fn build(
        words: &[String],
        server_names: &[String],
        outer: Option<&ValidReferers>,
        origin: Option<&Origin>,
    ) -> Result<ValidReferers, Diagnostic> {
        let fail = |e: String| Diagnostic::error(e).at_opt(origin).about("valid_referers");
        let rules = Rules::parse(words, server_names).map_err(fail)?;
        // nginx compiles both kinds without regard to case; the host they see is lowercase.
        let compile = |pattern: &String| {
            RegexBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .map_err(|e| fail(format!("regular expression \"{pattern}\": {e}")))
        };
        let compile_all = |patterns: &[String], inherited: Option<&Arc<[Regex]>>| match (
            patterns.is_empty(),
            inherited,
        ) {
            (true, Some(outer)) => Ok(outer.clone()),
            _ => patterns
                .iter()
                .map(compile)
                .collect::<Result<Arc<[Regex]>, _>>(),
        };
        Ok(ValidReferers {
            regexes: compile_all(&rules.regexes, outer.map(|o| &o.regexes))?,
            server_name_regexes: compile_all(
                &rules.server_name_regexes,
                outer.map(|o| &o.server_name_regexes),
            )?,
            rules,
        })
    }

    /// Whether `$invalid_referer` is `1` for a request with this Referer header (its first).
    pub fn invalid(&self, referer: Option<&[u8]>) -> bool {
        let Some(referer) = referer else {
            return !self.rules.none;
        };
        let rest = scheme_stripped(referer);
        let Some(rest) = rest else {
            return !self.rules.blocked;
        };
        let host_len = rest
            .iter()
            .position(|b| *b == b'/' || *b == b':')
            .unwrap_or(rest.len());
        if host_len > MAX_HOST {
            return true;
        }
        let host = String::from_utf8_lossy(&rest[..host_len]).to_ascii_lowercase();
        if let Some(prefix) = self.rules.host_entry(&host) {
            // The path is what follows the host and any port; without a prefix any will do.
            let after = &rest[host_len..];
            let path = &after[after.iter().position(|b| *b == b'/').unwrap_or(after.len())..];
            return prefix
                .as_deref()
                .is_some_and(|prefix| !path.starts_with(prefix.as_bytes()));
        }
        if self.server_name_regexes.iter().any(|re| re.is_match(&host)) {
            return false;
        }
        let rest = String::from_utf8_lossy(rest);
        !self.regexes.iter().any(|re| re.is_match(&rest))
    }
}

/// What follows `http://` or `https://` (either case) in a Referer of at least
/// `http://i.ru`'s length; `None` for any other.
fn scheme_stripped(referer: &[u8]) -> Option<&[u8]> {
    if referer.len() < "http://i.ru".len() {
        return None;
    }
    let starts = |scheme: &str| {
        referer.len() >= scheme.len()
            && referer[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
    };
    if starts("http://") {
        Some(&referer[7..])
    } else if starts("https://") {
        Some(&referer[8..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referers(words: &[&str], names: &[&str]) -> ValidReferers {
        let words: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        ValidReferers::build(&words, &names, None, None).unwrap()
    }

    /// A location's own host names, with its server's regexes when it has none (the
    /// differential test `valid_referers` shows nginx doing this).
    #[test]
    fn regexes_come_from_the_outer_level_when_a_level_has_none() {
        let words = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let names = words(&["a.test", r"~^img\d+\.test$"]);
        let server = ValidReferers::build(
            &words(&["server_names", r"~\.google\."]),
            &names,
            None,
            None,
        )
        .unwrap();
        let location =
            ValidReferers::build(&words(&["none", "b.test"]), &names, Some(&server), None).unwrap();
        let invalid = |r: &ValidReferers, referer: &str| r.invalid(Some(referer.as_bytes()));
        assert!(!invalid(&location, "http://b.test/"));
        assert!(
            invalid(&location, "http://a.test/"),
            "host names are the level's own"
        );
        assert!(!invalid(&location, "http://www.google.com/"));
        assert!(!invalid(&location, "http://img7.test/"));
        assert!(!location.invalid(None));
        assert!(server.invalid(None), "none is the level's own");
        let own =
            ValidReferers::build(&words(&["b.test", "~^c"]), &[], Some(&server), None).unwrap();
        assert!(
            invalid(&own, "http://www.google.com/"),
            "its own regexes replace them"
        );
        assert!(!invalid(&own, "http://img7.test/"));
    }

    /// The cases nginx 1.22 answered in the differential test `valid_referers`, here without
    /// a network.
    #[test]
    fn referers_are_judged_as_nginx_judges_them() {
        let first = referers(&["none", "example.com", r"~\.google\."], &[]);
        let second = referers(
            &[
                "blocked",
                "server_names",
                "example.com/pics/",
                "*.wild.com",
                "www.tail.*",
                ".dot.org",
            ],
            &["www.site.org", "*.site.net", r"~^img\d+\.site\.com$"],
        );
        let cases: &[(Option<&str>, bool, bool)] = &[
            (None, false, true),
            (Some(""), true, false),
            (Some("http://example.com/"), false, true),
            (Some("http://EXAMPLE.com:80/x"), false, true),
            (Some("https://www.google.com/"), false, true),
            (Some("http://google.de"), true, true),
            (Some("http://exa"), true, false),
            (Some("ftp://example.com/"), true, false),
            (Some("http://example.com/pics/a.png"), false, false),
            (Some("http://example.com/pic"), false, true),
            (Some("http://a.wild.com"), true, false),
            (Some("http://wild.com"), true, true),
            (Some("http://www.tail.co.uk/"), true, false),
            (Some("http://www.tail./"), true, false),
            (Some("http://dot.org"), true, false),
            (Some("http://x.dot.org"), true, false),
            (Some("http://www.site.org/"), true, false),
            (Some("http://a.site.net"), true, false),
            (Some("http://img12.site.com/"), true, false),
            (Some("http://IMG12.site.com/"), true, false),
            (Some("http://example.com:8080/pics/z"), false, false),
            (Some("HTTP://example.com"), false, true),
            (Some("http://example.com?x"), true, true),
            (Some("http://www.google.com.evil/"), false, true),
        ];
        for (referer, first_invalid, second_invalid) in cases {
            let referer_bytes = referer.map(str::as_bytes);
            assert_eq!(
                first.invalid(referer_bytes),
                *first_invalid,
                "first server, {referer:?}"
            );
            assert_eq!(
                second.invalid(referer_bytes),
                *second_invalid,
                "second server, {referer:?}"
            );
        }
    }

    #[test]
    fn a_host_longer_than_nginx_copies_is_invalid() {
        let r = referers(&[r"~."], &[]);
        let host = "a".repeat(MAX_HOST);
        assert!(!r.invalid(Some(format!("http://{host}/").as_bytes())));
        assert!(r.invalid(Some(format!("http://{host}a/").as_bytes())));
    }
}

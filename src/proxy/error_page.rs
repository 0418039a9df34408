//! `error_page` at request time: which rule answers a status, and where it sends the request
//! (ngx_http_special_response_handler and ngx_http_send_error_page, nginx 1.22).
//!
//! Following a rule is the data plane's job (`proxy::http`); this module only knows the
//! rules.

use crate::compile::diag::Diagnostic;
use crate::config::map::Defined;
use crate::config::template::Template;
use crate::config::{ErrorPage, Origin, PageStatus};

use super::vars::{eval_to_vec, RequestVars};

/// A location's `error_page` rules, inherited whole, and `recursive_error_pages`.
pub struct ErrorPages {
    /// One per status, in the order written: the first for a status wins.
    rules: Vec<Rule>,
    /// An error in an error page's answer may use a rule again.
    pub recursive: bool,
}

pub struct Rule {
    pub status: u16,
    pub overwrite: Overwrite,
    /// The target's text, evaluated per request: what it comes out as decides its kind.
    target: Template,
}

/// The status the answer goes out with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// The error's own (no `=`).
    Keep,
    /// Whatever the target answers (bare `=`).
    Target,
    /// This one (`=200`).
    Code(u16),
}

/// Where a rule sends the request.
#[derive(Debug, PartialEq, Eq)]
pub enum Jump {
    /// An internal redirect: the locations are searched again for this URI. `get`: the
    /// method becomes GET (HEAD stays HEAD), as for an error page; `index` and `try_files`
    /// keep it.
    Uri {
        path: Vec<u8>,
        args: Option<Vec<u8>>,
        get: bool,
    },
    /// A named location (`@name`): the same request, method and URI kept.
    Named(Vec<u8>),
    /// A redirect the client follows: this status and `Location`.
    Redirect(u16, Vec<u8>),
}

impl ErrorPages {
    /// The rules of `list` (`None` when there are none, as for most locations).
    pub fn build(
        list: Option<&[ErrorPage]>,
        recursive: bool,
        defined: Defined<'_>,
        origin: Option<&Origin>,
    ) -> Result<Option<ErrorPages>, Diagnostic> {
        let Some(list) = list.filter(|l| !l.is_empty()) else {
            return Ok(None);
        };
        let mut rules = Vec::new();
        for page in list {
            let target = Template::parse_in(&page.target, defined)
                .map_err(|e| Diagnostic::error(e.to_string()).at_opt(origin))?;
            for &status in &page.codes {
                let overwrite = match page.status {
                    Some(PageStatus::Target) => Overwrite::Target,
                    Some(PageStatus::Code(code)) => Overwrite::Code(code),
                    // nginx's own codes for TLS and header errors go out as 400 unless told.
                    None if matches!(status, 494..=497) => Overwrite::Code(400),
                    None => Overwrite::Keep,
                };
                rules.push(Rule {
                    status,
                    overwrite,
                    target: target.clone(),
                });
            }
        }
        Ok(Some(ErrorPages { rules, recursive }))
    }

    /// The rule for `status`, if any.
    pub fn find(&self, status: u16) -> Option<&Rule> {
        self.rules.iter().find(|r| r.status == status)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

impl Rule {
    /// Where the rule sends this request.
    pub fn jump(&self, vars: &RequestVars<'_>) -> Jump {
        let text = eval_to_vec(&self.target, vars);
        jump_of(text, self.overwrite)
    }

    /// The target, when it has no variables and is an internal redirect: the URI's path.
    pub fn static_uri(&self) -> Option<Vec<u8>> {
        match jump_of(self.target.literal_text()?.into_bytes(), self.overwrite) {
            Jump::Uri { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// What a target's text means (ngx_http_send_error_page): `/...` a URI, split at its first
/// `?` (ngx_http_split_args); `@...` a named location; anything else a redirect.
pub fn jump_of(text: Vec<u8>, overwrite: Overwrite) -> Jump {
    match text.first() {
        Some(b'/') => match text.iter().position(|b| *b == b'?') {
            Some(q) => Jump::Uri {
                path: text[..q].to_vec(),
                args: Some(text[q + 1..].to_vec()),
                get: true,
            },
            None => Jump::Uri {
                path: text,
                args: None,
                get: true,
            },
        },
        Some(b'@') => Jump::Named(text),
        _ => {
            let status = match overwrite {
                Overwrite::Code(code) => ErrorPage::redirect_status(Some(PageStatus::Code(code))),
                _ => 302,
            };
            Jump::Redirect(status, text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(text: &str) -> ErrorPages {
        let list: Vec<ErrorPage> = toml::from_str::<toml::Table>(text)
            .unwrap()
            .remove("error_page")
            .unwrap()
            .try_into()
            .unwrap();
        ErrorPages::build(Some(&list), false, Defined::NONE, None)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn the_first_rule_for_a_status_wins() {
        let p = pages(
            r#"
            [[error_page]]
            codes = [502, 504]
            target = "@fallback"
            [[error_page]]
            codes = [504, 404]
            target = "/x"
            status = 200
            "#,
        );
        assert_eq!(p.find(504).unwrap().overwrite, Overwrite::Keep);
        assert_eq!(p.find(404).unwrap().overwrite, Overwrite::Code(200));
        assert!(p.find(500).is_none());
    }

    #[test]
    fn targets_are_told_apart_by_their_first_byte() {
        assert_eq!(
            jump_of(b"/50x.html?from=err".to_vec(), Overwrite::Keep),
            Jump::Uri {
                path: b"/50x.html".to_vec(),
                args: Some(b"from=err".to_vec()),
                get: true,
            }
        );
        assert_eq!(
            jump_of(b"@up".to_vec(), Overwrite::Target),
            Jump::Named(b"@up".to_vec())
        );
        assert_eq!(
            jump_of(b"http://e.example/".to_vec(), Overwrite::Code(200)),
            Jump::Redirect(302, b"http://e.example/".to_vec())
        );
        assert_eq!(
            jump_of(b"https://e.example/".to_vec(), Overwrite::Code(301)),
            Jump::Redirect(301, b"https://e.example/".to_vec())
        );
    }

    #[test]
    fn tls_and_header_codes_go_out_as_400() {
        let p = pages("[[error_page]]\ncodes = [497, 502]\ntarget = \"/x\"\n");
        assert_eq!(p.find(497).unwrap().overwrite, Overwrite::Code(400));
        assert_eq!(p.find(502).unwrap().overwrite, Overwrite::Keep);
        assert_eq!(p.find(502).unwrap().static_uri(), Some(b"/x".to_vec()));
    }
}

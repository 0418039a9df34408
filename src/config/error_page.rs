//! nginx's `error_page`: for which statuses a request is answered from somewhere else, and
//! with what status that answer goes out. The list is inherited whole, as nginx merges it.
//!
//! ```toml
//! [[http.server.error_page]]
//! codes = [502, 503, 504]
//! target = "@fallback"          # a named location: the same request, method kept
//!
//! [[http.server.error_page]]
//! codes = [404]
//! target = "/not-found"         # an internal redirect, as GET (HEAD stays HEAD)
//! status = 200                  # nginx's `=200`; "target" is its bare `=`
//!
//! [[http.server.error_page]]
//! codes = [403]
//! target = "https://example.com/forbidden"   # a 302 to it (or `status = 301`, 303, 307, 308)
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorPage {
    /// The statuses it answers for: 300 to 599, not 499.
    pub codes: Vec<u16>,
    /// `/uri[?args]`, `@name`, or any other text, which the client is redirected to. May hold
    /// variables; which kind it is, is then decided by what it comes out as.
    pub target: String,
    /// The status the answer goes out with. Unset: the error's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PageStatus>,
}

/// What replaces the error's status (nginx's `=code` and bare `=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageStatus {
    /// Whatever the target answers with (`=`).
    Target,
    /// This status (`=200`).
    Code(u16),
}

impl ErrorPage {
    /// Where nginx's `error_page` checks end: a status it would refuse, in its words.
    pub fn check_code(code: u16) -> Result<(), String> {
        if code == 499 {
            return Err(format!("invalid value \"{code}\""));
        }
        if !(300..=599).contains(&code) {
            return Err(format!("value \"{code}\" must be between 300 and 599"));
        }
        Ok(())
    }

    /// The status sent for a redirect target: `status` when it is a redirect code, else 302
    /// (ngx_http_send_error_page).
    pub fn redirect_status(status: Option<PageStatus>) -> u16 {
        match status {
            Some(PageStatus::Code(code @ (301 | 302 | 303 | 307 | 308))) => code,
            _ => 302,
        }
    }
}

impl fmt::Display for PageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageStatus::Target => f.write_str("="),
            PageStatus::Code(code) => write!(f, "={code}"),
        }
    }
}

impl Serialize for PageStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PageStatus::Target => s.serialize_str("target"),
            PageStatus::Code(code) => s.serialize_u16(*code),
        }
    }
}

impl<'de> Deserialize<'de> for PageStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Code(u16),
            Word(String),
        }
        match Written::deserialize(d)? {
            Written::Code(code) => Ok(PageStatus::Code(code)),
            Written::Word(word) if word == "target" => Ok(PageStatus::Target),
            Written::Word(word) => Err(serde::de::Error::custom(format!(
                "status \"{word}\" is neither a number nor \"target\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize)]
    struct Holder {
        error_page: Vec<ErrorPage>,
    }

    #[test]
    fn status_is_a_number_or_target() {
        let text = r#"
            [[error_page]]
            codes = [502]
            target = "@fallback"
            status = "target"

            [[error_page]]
            codes = [404]
            target = "/empty"
            status = 200
        "#;
        let held: Holder = toml::from_str(text).unwrap();
        assert_eq!(held.error_page[0].status, Some(PageStatus::Target));
        assert_eq!(held.error_page[1].status, Some(PageStatus::Code(200)));
        let again: Holder = toml::from_str(&toml::to_string(&held).unwrap()).unwrap();
        assert_eq!(again.error_page, held.error_page);
        let bad = "[[error_page]]\ncodes = [404]\ntarget = \"/x\"\nstatus = \"same\"\n";
        assert!(toml::from_str::<Holder>(bad).is_err());
    }

    #[test]
    fn codes_as_nginx_checks_them() {
        assert!(ErrorPage::check_code(404).is_ok());
        assert!(ErrorPage::check_code(300).is_ok());
        assert!(ErrorPage::check_code(599).is_ok());
        assert_eq!(
            ErrorPage::check_code(499).unwrap_err(),
            "invalid value \"499\""
        );
        assert_eq!(
            ErrorPage::check_code(200).unwrap_err(),
            "value \"200\" must be between 300 and 599"
        );
    }

    #[test]
    fn redirects_go_out_as_302_unless_told() {
        assert_eq!(ErrorPage::redirect_status(None), 302);
        assert_eq!(ErrorPage::redirect_status(Some(PageStatus::Target)), 302);
        assert_eq!(ErrorPage::redirect_status(Some(PageStatus::Code(200))), 302);
        assert_eq!(ErrorPage::redirect_status(Some(PageStatus::Code(301))), 301);
        assert_eq!(ErrorPage::redirect_status(Some(PageStatus::Code(308))), 308);
    }
}

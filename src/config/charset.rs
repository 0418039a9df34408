//! nginx's charset settings at one level (ngx_http_charset_filter_module): `charset`,
//! `source_charset`, `override_charset` and `charset_types`. They name a response's charset in
//! its `Content-Type` (`text/html; charset=utf-8`); the appliance has no `charset_map`, so it
//! never recodes a body, as nginx does not without one. Each setting is inherited on its own;
//! `types` is inherited whole.
//!
//! ```toml
//! [http.charset]
//! name = "utf-8"                  # `charset utf-8`; "off" names none
//! types = ["text/css"]            # besides text/html; "*" is any type
//! ```

use serde::{Deserialize, Serialize};

/// The type nginx's `charset_types` always holds, whatever it lists.
pub const ALWAYS_NAMED: &str = "text/html";

/// nginx's `charset_types` when the config has none.
pub const DEFAULT_TYPES: [&str; 6] = [
    "text/html",
    "text/xml",
    "text/plain",
    "text/vnd.wap.wml",
    "application/javascript",
    "application/rss+xml",
];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Charset {
    /// `charset`: the charset a response of one of `types` is said to be in, or "off"
    /// (nginx's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `source_charset`: the charset responses without one are in (unset: nginx's default,
    /// none). Another than `name` would need recoding, which the appliance refuses as nginx
    /// does without a `charset_map`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `override_charset`: a response that names its charset is given `name` too (nginx's
    /// default: off).
    #[serde(rename = "override", default, skip_serializing_if = "Option::is_none")]
    pub override_: Option<bool>,
    /// `charset_types`: the MIME types, lowercase, besides text/html; `"*"` is any type.
    /// Unset: nginx's list (text/html, text/xml, text/plain, text/vnd.wap.wml,
    /// application/javascript, application/rss+xml).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
}

impl Charset {
    pub fn is_empty(&self) -> bool {
        *self == Charset::default()
    }

    /// Inner settings win setting by setting.
    pub fn merged(&self, outer: &Charset) -> Charset {
        Charset {
            name: self.name.clone().or_else(|| outer.name.clone()),
            source: self.source.clone().or_else(|| outer.source.clone()),
            override_: self.override_.or(outer.override_),
            types: self.types.clone().or_else(|| outer.types.clone()),
        }
    }

    /// `name`, unless unset or "off".
    pub fn named(&self) -> Option<&str> {
        on(&self.name)
    }

    /// `source`, unless unset ("off" is a charset's name there, as nginx reads it).
    pub fn source_named(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// What is wrong with the merged settings of a location, in nginx's words: a source
    /// charset other than the one to name needs a `charset_map`, which the appliance has not.
    pub fn problem(&self) -> Option<String> {
        match (self.named(), self.source_named()) {
            (Some(name), Some(source)) if !name.eq_ignore_ascii_case(source) => Some(format!(
                "no \"charset_map\" between the charsets \"{source}\" and \"{name}\""
            )),
            _ => None,
        }
    }
}

fn on(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| *v != "off")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str, source: Option<&str>) -> Charset {
        Charset {
            name: Some(name.into()),
            source: source.map(Into::into),
            ..Charset::default()
        }
    }

    #[test]
    fn inner_settings_win_one_by_one() {
        let outer = Charset {
            name: Some("utf-8".into()),
            types: Some(vec!["text/css".into()]),
            ..Charset::default()
        };
        let inner = Charset {
            name: Some("off".into()),
            override_: Some(true),
            ..Charset::default()
        };
        let merged = inner.merged(&outer);
        assert_eq!(merged.named(), None);
        assert_eq!(merged.override_, Some(true));
        assert_eq!(merged.types, Some(vec!["text/css".into()]));
    }

    #[test]
    fn a_source_other_than_the_name_needs_a_map() {
        assert_eq!(named("utf-8", None).problem(), None);
        assert_eq!(named("UTF-8", Some("utf-8")).problem(), None);
        assert_eq!(named("off", Some("koi8-r")).problem(), None);
        assert_eq!(
            named("utf-8", Some("koi8-r")).problem().as_deref(),
            Some("no \"charset_map\" between the charsets \"koi8-r\" and \"utf-8\"")
        );
    }
}

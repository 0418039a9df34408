//! nginx's `autoindex`, `autoindex_exact_size`, `autoindex_format` and `autoindex_localtime` at
//! one level: a directory without an index file is listed instead of refused (403). Each is
//! inherited on its own, as nginx merges them.
//!
//! ```toml
//! [[http.server.location]]
//! path = "/pub/"
//! autoindex = { enable = true, exact_size = false, format = "html", localtime = true }
//! ```

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoindex {
    /// `autoindex on|off` (nginx's default: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable: Option<bool>,
    /// `autoindex_exact_size`: sizes in bytes (nginx's default), or rounded to K, M or G.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_size: Option<bool>,
    /// `autoindex_format`: `html` (nginx's default), `xml`, `json` or `jsonp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `autoindex_localtime`: times in the server's time zone instead of GMT (HTML only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localtime: Option<bool>,
}

/// `autoindex_format`'s values.
pub const FORMATS: [&str; 4] = ["html", "xml", "json", "jsonp"];

impl Autoindex {
    pub fn is_empty(&self) -> bool {
        *self == Autoindex::default()
    }

    /// Inner settings win setting by setting.
    pub fn merged(&self, outer: &Autoindex) -> Autoindex {
        Autoindex {
            enable: self.enable.or(outer.enable),
            exact_size: self.exact_size.or(outer.exact_size),
            format: self.format.clone().or_else(|| outer.format.clone()),
            localtime: self.localtime.or(outer.localtime),
        }
    }

    /// What is wrong with the settings, for the config check.
    pub fn problem(&self) -> Option<String> {
        let format = self.format.as_deref()?;
        super::not_one_of("autoindex.format", format, &FORMATS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_wins_and_formats_are_checked() {
        let outer = Autoindex {
            enable: Some(true),
            format: Some("json".into()),
            ..Autoindex::default()
        };
        let inner = Autoindex {
            exact_size: Some(false),
            ..Autoindex::default()
        };
        let merged = inner.merged(&outer);
        assert_eq!(merged.enable, Some(true));
        assert_eq!(merged.exact_size, Some(false));
        assert_eq!(merged.format.as_deref(), Some("json"));
        assert_eq!(merged.problem(), None);
        let bad = Autoindex {
            format: Some("yaml".into()),
            ..Autoindex::default()
        };
        assert!(bad.problem().unwrap_or_default().contains("\"yaml\""));
    }
}

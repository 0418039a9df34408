//! nginx's `sub_filter`, `sub_filter_once`, `sub_filter_types` and
//! `sub_filter_last_modified` (ngx_http_sub_filter_module): strings replaced in response
//! bodies, as sites behind a proxy use it to rewrite the backend's own links. Each setting is
//! inherited on its own; the list of replacements and `types` are inherited whole.
//!
//! ```toml
//! [http.server.location.sub_filter]
//! replace = [{ search = "http://backend.internal/", with = "https://$host/" }]
//! once = false                 # every occurrence (nginx's default: the first of each)
//! types = ["text/css"]         # text/html is always filtered; "*" is any type
//! last_modified = true         # keep Last-Modified, weaken the ETag
//! ```

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubFilter {
    /// `sub_filter`, in order: the string searched for, without regard to case, and what
    /// replaces it; both templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<Vec<Replacement>>,
    /// `sub_filter_once` (nginx's default: on, each string replaced at its first occurrence
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once: Option<bool>,
    /// `sub_filter_types`: the MIME types filtered besides text/html, lowercase; `"*"` is any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    /// `sub_filter_last_modified` (nginx's default: off, Last-Modified and ETag removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    pub search: String,
    pub with: String,
}

/// The type nginx filters whatever `sub_filter_types` says.
pub const ALWAYS_FILTERED: &str = "text/html";

/// nginx's limit on the strings one level searches for.
pub const MAX_SEARCHES: usize = 255;

impl SubFilter {
    pub fn is_empty(&self) -> bool {
        *self == SubFilter::default()
    }

    /// Inner settings win setting by setting (ngx_http_sub_merge_conf).
    pub fn merged(&self, outer: &SubFilter) -> SubFilter {
        SubFilter {
            replace: self.replace.clone().or_else(|| outer.replace.clone()),
            once: self.once.or(outer.once),
            types: self.types.clone().or_else(|| outer.types.clone()),
            last_modified: self.last_modified.or(outer.last_modified),
        }
    }

    /// The checks ngx_http_sub_filter makes of each `sub_filter`.
    pub fn check(&self) -> Result<(), String> {
        let list = self.replace.as_deref().unwrap_or_default();
        if list.iter().any(|r| r.search.is_empty()) {
            return Err("empty search pattern".into());
        }
        if list.len() > MAX_SEARCHES {
            return Err(format!("number of search patterns exceeds {MAX_SEARCHES}"));
        }
        Ok(())
    }
}

//! How a file's response answers conditional requests, at one level: nginx's `etag` and
//! `if_modified_since`. Each is inherited on its own, as nginx merges them.
//!
//! ```toml
//! [[http.server.location]]
//! path = "/downloads/"
//! conditional = { etag = false, if_modified_since = "before" }
//! ```

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditional {
    /// `etag on|off`: files carry an ETag, which If-Match, If-None-Match and If-Range compare
    /// (nginx's default: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<bool>,
    /// `if_modified_since`: how If-Modified-Since is compared with the file's time: `exact`
    /// (nginx's default: the same second), `before` (the file is not newer), or `off` (never a
    /// 304 by date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_modified_since: Option<String>,
}

/// `if_modified_since`'s values.
pub const IF_MODIFIED_SINCE: [&str; 3] = ["off", "exact", "before"];

impl Conditional {
    pub fn is_empty(&self) -> bool {
        *self == Conditional::default()
    }

    /// Inner settings win setting by setting.
    pub fn merged(&self, outer: &Conditional) -> Conditional {
        Conditional {
            etag: self.etag.or(outer.etag),
            if_modified_since: (self.if_modified_since.clone())
                .or_else(|| outer.if_modified_since.clone()),
        }
    }

    /// What is wrong with the settings, for the config check.
    pub fn problem(&self) -> Option<String> {
        let value = self.if_modified_since.as_deref()?;
        super::not_one_of("conditional.if_modified_since", value, &IF_MODIFIED_SINCE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_wins_and_values_are_checked() {
        let outer = Conditional {
            etag: Some(false),
            if_modified_since: Some("before".into()),
        };
        let inner = Conditional {
            if_modified_since: Some("off".into()),
            ..Conditional::default()
        };
        let merged = inner.merged(&outer);
        assert_eq!(merged.etag, Some(false));
        assert_eq!(merged.if_modified_since.as_deref(), Some("off"));
        assert_eq!(merged.problem(), None);
        let bad = Conditional {
            if_modified_since: Some("later".into()),
            ..Conditional::default()
        };
        assert!(bad.problem().is_some_and(|p| p.contains("later")));
        assert!(Conditional::default().is_empty());
    }
}

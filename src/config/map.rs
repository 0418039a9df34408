//! nginx's `map`: a variable whose value is chosen by matching another value (`$http_upgrade`,
//! `$host`, `$uri`...) against keys. The common use is the WebSocket idiom:
//!
//! ```toml
//! [[http.map]]
//! source = "$http_upgrade"
//! variable = "connection_upgrade"
//! default = "upgrade"
//! entries = [{ key = "", value = "close" }]
//! ```
//!
//! Keys, as in nginx: a string matched without regard to case, or a regex after `~` (`~*`
//! without regard to case) tried in the order written, after every string key; `\` escapes a
//! key that would otherwise start with `~`. With `hostnames`, keys may also be
//! `*.example.com`, `.example.com` (both the domain and its subdomains) or `www.example.*`.
//! Values may hold variables, and a regex key's `$1`..`$9`.

use serde::{Deserialize, Serialize};

use super::origin::Origin;

/// One `map` block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapVar {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// What is matched: a template, usually one variable.
    pub source: String,
    /// The variable defined, without its `$`.
    pub variable: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hostnames: bool,
    /// The value when no key matches; empty when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<MapEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapEntry {
    pub key: String,
    pub value: String,
}

/// What a key is, read as nginx reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapKey<'a> {
    /// Matched without regard to case (stored lowercase).
    Exact(String),
    Regex {
        pattern: &'a str,
        caseless: bool,
    },
    /// With `hostnames`: `*.example.com` or `.example.com`, stored as `example.com`; `.` also
    /// matches the domain itself.
    LeadingWildcard {
        domain: String,
        with_domain: bool,
    },
    /// With `hostnames`: `www.example.*`, stored as `www.example.`.
    TrailingWildcard(String),
}

impl MapEntry {
    pub fn key(&self, hostnames: bool) -> MapKey<'_> {
        let key = self.key.as_str();
        if let Some(regex) = key.strip_prefix('~') {
            return match regex.strip_prefix('*') {
                Some(pattern) => MapKey::Regex {
                    pattern,
                    caseless: true,
                },
                None => MapKey::Regex {
                    pattern: regex,
                    caseless: false,
                },
            };
        }
        let key = key.strip_prefix('\\').unwrap_or(key).to_ascii_lowercase();
        if hostnames {
            if let Some(domain) = key.strip_prefix("*.") {
                return MapKey::LeadingWildcard {
                    domain: domain.to_string(),
                    with_domain: false,
                };
            }
            if let Some(domain) = key.strip_prefix('.') {
                return MapKey::LeadingWildcard {
                    domain: domain.to_string(),
                    with_domain: true,
                };
            }
            if let Some(prefix) = key.strip_suffix('*') {
                if prefix.ends_with('.') {
                    return MapKey::TrailingWildcard(prefix.to_string());
                }
            }
        }
        MapKey::Exact(key)
    }
}

/// The names a config's maps define, which templates may use beside nginx's own variables:
/// the maps of a model, or (while an nginx.conf is read) the names its `map` blocks declare.
#[derive(Clone, Copy, Debug)]
pub enum Defined<'a> {
    Maps(&'a [MapVar]),
    Names(&'a std::collections::HashSet<String>),
}

impl<'a> Defined<'a> {
    pub const NONE: Defined<'static> = Defined::Maps(&[]);

    pub fn new(maps: &'a [MapVar]) -> Defined<'a> {
        Defined::Maps(maps)
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            Defined::Maps(maps) => maps.iter().any(|m| m.variable == name),
            Defined::Names(names) => names.contains(name),
        }
    }
}

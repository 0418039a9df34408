//! nginx's gzip settings at one level: `gzip`, `gzip_types`, `gzip_min_length`,
//! `gzip_comp_level` (ngx_http_gzip_filter_module) and `gzip_http_version`, `gzip_proxied`,
//! `gzip_vary`, `gzip_disable` (which nginx keeps in its core module), and `gzip_static`
//! (ngx_http_gzip_static_module), and `gunzip` (ngx_http_gunzip_filter_module), which reads the
//! core module's settings to tell which clients take gzip. Each is inherited on its own, as
//! nginx merges them; `types`, `proxied` and `disable` are inherited whole.
//!
//! ```toml
//! [http.gzip]
//! enable = true
//! types = ["text/css", "application/json"]   # text/html is always compressed
//! min_length = "256"
//! vary = true
//! proxied = ["any"]
//! disable = ["msie6"]
//! gunzip = true      # gzip-encoded responses decompressed for clients that do not take gzip
//! ```

use serde::{Deserialize, Serialize};

use super::units::Size;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gzip {
    /// `gzip on|off` (nginx's default: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable: Option<bool>,
    /// `gzip_types`: the response MIME types compressed besides text/html, lowercase; `"*"`
    /// is any type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    /// `gzip_min_length`: a response whose Content-Length says less is sent as it is
    /// (nginx's default: 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<Size>,
    /// `gzip_comp_level`, 1 to 9 (nginx's default: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comp_level: Option<u32>,
    /// `gzip_http_version`: "1.0" or "1.1", the oldest request version compressed for
    /// (nginx's default: 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_version: Option<String>,
    /// `gzip_proxied`: for requests with a `Via` header, which responses are compressed: `off`
    /// (nginx's default), `expired`, `no-cache`, `no-store`, `private`, `no_last_modified`,
    /// `no_etag`, `auth`, `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxied: Option<Vec<String>>,
    /// `gzip_vary`: `Vary: Accept-Encoding` on every response that could be compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vary: Option<bool>,
    /// `gzip_disable`: case-insensitive regular expressions on the User-Agent, and `msie6`
    /// (Internet Explorer 4 to 6 before SP2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable: Option<Vec<String>>,
    /// `gzip_static`: `off` (nginx's default), `on` (a file's `.gz` beside it is sent, with
    /// Content-Encoding, to a client that accepts gzip) or `always` (to every client).
    #[serde(rename = "static", default, skip_serializing_if = "Option::is_none")]
    pub static_: Option<String>,
    /// `gunzip`: a response whose Content-Encoding is gzip is decompressed for a client the
    /// settings above do not let have gzip (nginx's default: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gunzip: Option<bool>,
}

/// The type nginx compresses whatever `gzip_types` says.
pub const ALWAYS_COMPRESSED: &str = "text/html";

/// `gzip_proxied`'s values, as nginx spells them.
pub const PROXIED_VALUES: [&str; 9] = [
    "off",
    "expired",
    "no-cache",
    "no-store",
    "private",
    "no_last_modified",
    "no_etag",
    "auth",
    "any",
];

impl Gzip {
    pub fn is_empty(&self) -> bool {
        *self == Gzip::default()
    }

    /// Inner settings win setting by setting.
    pub fn merged(&self, outer: &Gzip) -> Gzip {
        let pick = |inner: &Option<Vec<String>>, outer: &Option<Vec<String>>| {
            inner.clone().or_else(|| outer.clone())
        };
        Gzip {
            enable: self.enable.or(outer.enable),
            types: pick(&self.types, &outer.types),
            min_length: self.min_length.or(outer.min_length),
            comp_level: self.comp_level.or(outer.comp_level),
            http_version: self
                .http_version
                .clone()
                .or_else(|| outer.http_version.clone()),
            proxied: pick(&self.proxied, &outer.proxied),
            vary: self.vary.or(outer.vary),
            disable: pick(&self.disable, &outer.disable),
            static_: self.static_.clone().or_else(|| outer.static_.clone()),
            gunzip: self.gunzip.or(outer.gunzip),
        }
    }

    /// What is wrong with the settings, for the config check.
    pub fn problem(&self) -> Option<String> {
        if let Some(level) = self.comp_level.filter(|l| !(1..=9).contains(l)) {
            return Some(format!("gzip.comp_level {level} is not between 1 and 9"));
        }
        if let Some(v) = self
            .http_version
            .as_deref()
            .filter(|v| !["1.0", "1.1"].contains(v))
        {
            return Some(format!(
                "gzip.http_version \"{v}\" is not \"1.0\" or \"1.1\""
            ));
        }
        for p in self.proxied.iter().flatten() {
            if let Some(problem) = super::not_one_of("gzip.proxied", p, &PROXIED_VALUES) {
                return Some(problem);
            }
        }
        for pattern in self.disable.iter().flatten().filter(|p| *p != "msie6") {
            if let Err(e) = regex::Regex::new(&format!("(?i){pattern}")) {
                return Some(format!("gzip.disable \"{pattern}\": {e}"));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_settings_win_one_by_one() {
        let outer = Gzip {
            enable: Some(true),
            types: Some(vec!["text/css".into()]),
            vary: Some(true),
            ..Gzip::default()
        };
        let inner = Gzip {
            enable: Some(false),
            comp_level: Some(5),
            ..Gzip::default()
        };
        let merged = inner.merged(&outer);
        assert_eq!(merged.enable, Some(false));
        assert_eq!(merged.types, Some(vec!["text/css".to_string()]));
        assert_eq!(merged.comp_level, Some(5));
        assert_eq!(merged.vary, Some(true));
    }

    #[test]
    fn problems_are_named() {
        let bad = |g: Gzip| g.problem().unwrap_or_default();
        assert!(bad(Gzip {
            comp_level: Some(10),
            ..Gzip::default()
        })
        .contains("comp_level 10"));
        assert!(bad(Gzip {
            http_version: Some("2.0".into()),
            ..Gzip::default()
        })
        .contains("http_version"));
        assert!(bad(Gzip {
            proxied: Some(vec!["sometimes".into()]),
            ..Gzip::default()
        })
        .contains("\"sometimes\""));
        assert!(bad(Gzip {
            disable: Some(vec!["msie6".into(), "(".into()]),
            ..Gzip::default()
        })
        .contains("gzip.disable \"(\""));
        assert_eq!(Gzip::default().problem(), None);
    }
}

//! nginx's `secure_link`, `secure_link_md5` and `secure_link_secret`
//! (ngx_http_secure_link_module): the settings `$secure_link` and `$secure_link_expires` are
//! worked out from, so that `if ($secure_link = "") { return 403; }` turns away a link that
//! was not signed with the secret. At each level (http, server, location):
//!
//! ```toml
//! # A hash and expiry time in the request (`?md5=...&expires=...`), signed over a template:
//! secure_link = { link = "$arg_md5,$arg_expires", md5 = "$secure_link_expires$uri$remote_addr secret" }
//! # Or the old form: /prefix/<hex MD5 of the rest and the secret>/rest
//! secure_link = { secret = "secret" }
//! ```

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureLink {
    /// `secure_link`: a template giving the link's hash (the MD5 in base64url) and, after a
    /// comma, the Unix time it expires at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// `secure_link_md5`: the template whose MD5 the hash must be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// `secure_link_secret`: the old form's secret, which `link` and `md5` may not be set
    /// beside at the same level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// nginx's message for a level that sets both forms.
pub const MIXED: &str =
    "\"secure_link_secret\" cannot be mixed with \"secure_link\" and \"secure_link_md5\"";

impl SecureLink {
    pub fn is_empty(&self) -> bool {
        *self == SecureLink::default()
    }

    /// A level with a secret keeps to the old form (its own `link` and `md5`, which
    /// validation refuses); otherwise `link` and `md5` are inherited each on its own, and the
    /// outer secret only when the level ends up with neither (ngx_http_secure_link_merge_conf).
    pub fn merged(&self, outer: &SecureLink) -> SecureLink {
        if self.secret.is_some() {
            return self.clone();
        }
        let link = self.link.clone().or_else(|| outer.link.clone());
        let md5 = self.md5.clone().or_else(|| outer.md5.clone());
        let secret = match (&link, &md5) {
            (None, None) => outer.secret.clone(),
            _ => None,
        };
        SecureLink { link, md5, secret }
    }

    /// The check nginx makes of a server or location as it merges it.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.secret.is_some() && (self.link.is_some() || self.md5.is_some()) {
            return Err(MIXED);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(link: Option<&str>, md5: Option<&str>, secret: Option<&str>) -> SecureLink {
        SecureLink {
            link: link.map(str::to_string),
            md5: md5.map(str::to_string),
            secret: secret.map(str::to_string),
        }
    }

    #[test]
    fn levels_merge_as_nginx_merges_them() {
        let outer = level(Some("$arg_h"), None, None);
        let inner = level(None, Some("$uri s"), None);
        assert_eq!(
            inner.merged(&outer),
            level(Some("$arg_h"), Some("$uri s"), None)
        );
        let old = level(None, None, Some("s"));
        assert_eq!(level(None, None, None).merged(&old), old);
        // A level that names a link of its own no longer takes the outer secret.
        assert_eq!(
            level(Some("$arg_h"), None, None).merged(&old),
            level(Some("$arg_h"), None, None)
        );
        // A secret keeps the level to the old form.
        let both = level(Some("$arg_h"), Some("x"), None);
        assert_eq!(old.merged(&both), old);
        assert_eq!(level(Some("a"), None, Some("s")).check(), Err(MIXED));
        assert_eq!(old.check(), Ok(()));
    }
}

//! `$secure_link` and `$secure_link_expires`, worked out as ngx_http_secure_link_variable
//! works them out (see `config::secure_link` for the settings).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use md5::{Digest, Md5};

use super::vars::{eval, RequestVars};
use crate::compile::diag::Diagnostic;
use crate::config::secure_link::SecureLink;
use crate::config::template::Template;
use crate::config::{Defined, Origin};

/// A location's secure link settings, after inheritance.
pub enum SecureLinkConf {
    /// `secure_link` and `secure_link_md5`.
    Signed { link: Template, md5: Template },
    /// `secure_link_secret`: the old form, `/prefix/<hex MD5>/rest`.
    Secret(Vec<u8>),
}

/// What `$secure_link` and `$secure_link_expires` are for a request, once asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecureLinkValue {
    /// `None`: nginx's "not found" (empty), the link was not signed with the secret.
    pub link: Option<Vec<u8>>,
    /// The expiry time as the link gave it, once read (even when the hash did not match).
    pub expires: Option<Vec<u8>>,
}

/// nginx's ngx_decode_base64url: `-` and `_` for `+` and `/`, what follows a `=` ignored, the
/// last bits not checked.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

impl SecureLinkConf {
    /// The settings a level ends up with; `None` when `$secure_link` is always empty there
    /// (no secret, and `link` or `md5` missing).
    pub fn build(
        settings: &SecureLink,
        defined: Defined<'_>,
        origin: Option<&Origin>,
    ) -> Result<Option<SecureLinkConf>, Diagnostic> {
        let template = |text: &str| {
            Template::parse_in(text, defined)
                .map_err(|e| Diagnostic::error(e.to_string()).at_opt(origin))
        };
        Ok(match settings {
            SecureLink {
                secret: Some(secret),
                ..
            } => Some(SecureLinkConf::Secret(secret.as_bytes().to_vec())),
            SecureLink {
                link: Some(link),
                md5: Some(md5),
                ..
            } => Some(SecureLinkConf::Signed {
                link: template(link)?,
                md5: template(md5)?,
            }),
            _ => None,
        })
    }

    /// The two variables for a request. `vars` must not lead back here (its `secure_link` is
    /// left unset, so a template that names `$secure_link` finds it empty rather than
    /// looping; nginx refuses that cycle at run time).
    pub fn evaluate(&self, vars: &RequestVars<'_>) -> SecureLinkValue {
        match self {
            SecureLinkConf::Secret(secret) => SecureLinkValue {
                link: old_form(vars.request.raw_path(), secret).map(<[u8]>::to_vec),
                expires: None,
            },
            SecureLinkConf::Signed { link, md5 } => {
                let mut value = Vec::new();
                eval(link, vars, &mut value);
                signed(&value, |expires| {
                    let vars = RequestVars {
                        secure_link_expires: Some(expires),
                        ..*vars
                    };
                    let mut text = Vec::new();
                    eval(md5, &vars, &mut text);
                    text
                })
            }
        }
    }
}

/// The `secure_link` value `hash[,expires]` checked against the MD5 of what `md5_text` gives
/// for the expiry text.
fn signed(value: &[u8], md5_text: impl FnOnce(&[u8]) -> Vec<u8>) -> SecureLinkValue {
    let mut outcome = SecureLinkValue::default();
    let (hash, expires) = match value.iter().position(|b| *b == b',') {
        Some(comma) => {
            let text = &value[comma + 1..];
            match unix_time(text) {
                Some(at) if at > 0 => {}
                _ => return outcome,
            }
            outcome.expires = Some(text.to_vec());
            (&value[..comma], unix_time(text))
        }
        None => (value, None),
    };
    if hash.len() > 24 {
        return outcome;
    }
    let hash = &hash[..hash.iter().position(|b| *b == b'=').unwrap_or(hash.len())];
    let Ok(decoded) = BASE64URL.decode(hash) else {
        return outcome;
    };
    if decoded.len() != 16 {
        return outcome;
    }
    let text = md5_text(outcome.expires.as_deref().unwrap_or_default());
    if Md5::digest(&text)[..] != decoded[..] {
        return outcome;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let expired = expires.is_some_and(|at| at < now);
    outcome.link = Some(if expired {
        b"0".to_vec()
    } else {
        b"1".to_vec()
    });
    outcome
}

/// ngx_atotm: a decimal number of seconds; `None` for anything else, or one too large.
fn unix_time(text: &[u8]) -> Option<i64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// The old form: in the request's URI as it came, `/<anything>/<32 hex digits>/<rest>`, the
/// digits the MD5 of the rest and the secret; the rest is `$secure_link`.
fn old_form<'a>(raw_uri: &'a [u8], secret: &[u8]) -> Option<&'a [u8]> {
    let after_first = raw_uri.get(1..)?;
    let start = after_first.iter().position(|b| *b == b'/')? + 1;
    let from_hash = &after_first[start..];
    let end = from_hash.iter().position(|b| *b == b'/')?;
    let (hex, rest) = (&from_hash[..end], &from_hash[end + 1..]);
    if hex.len() != 32 || rest.is_empty() {
        return None;
    }
    let mut md5 = Md5::new();
    md5.update(rest);
    md5.update(secret);
    let digest = md5.finalize();
    let matches = hex.chunks(2).zip(digest.iter()).all(|(pair, byte)| {
        std::str::from_utf8(pair)
            .ok()
            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            == Some(*byte)
    });
    matches.then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What nginx's docs make: base64url without the `=` padding.
    fn hash_of(text: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Md5::digest(text.as_bytes()))
    }

    #[test]
    fn signed_links_are_judged_as_nginx_judges_them() {
        let md5 = |expires: &[u8]| [expires, b"/s/file secret"].concat();
        let check = |value: String| signed(value.as_bytes(), md5).link;
        let good = hash_of("/s/file secret");
        assert_eq!(check(good.clone()), Some(b"1".to_vec()));
        // nginx reads up to a `=` and ignores the rest.
        assert_eq!(check(format!("{good}==")), Some(b"1".to_vec()));
        assert_eq!(check(format!("{good}=x")), Some(b"1".to_vec()));
        assert_eq!(check(format!("{good}A")), None, "17 bytes");
        assert_eq!(check(good.replace('-', "+").replace('_', "/") + "x"), None);
        assert_eq!(check(hash_of("another")), None);
        assert_eq!(check(String::new()), None);

        let future = "4102444800"; // 2100-01-01
        let past = "946684800"; // 2000-01-01
        for (expires, link) in [(future, Some(b"1".to_vec())), (past, Some(b"0".to_vec()))] {
            let hash = hash_of(&format!("{expires}/s/file secret"));
            let outcome = signed(format!("{hash},{expires}").as_bytes(), md5);
            assert_eq!(outcome.link, link, "{expires}");
            assert_eq!(outcome.expires.as_deref(), Some(expires.as_bytes()));
        }
        for bad in ["0", "-5", "12x", ""] {
            let outcome = signed(format!("{good},{bad}").as_bytes(), md5);
            assert_eq!(outcome, SecureLinkValue::default(), "{bad:?}");
        }
        // The expiry is kept though the hash is wrong, as nginx keeps it.
        let outcome = signed(b"AAAA,4102444800", md5);
        assert_eq!(outcome.link, None);
        assert_eq!(outcome.expires.as_deref(), Some(&b"4102444800"[..]));
    }

    #[test]
    fn the_old_form_checks_the_path_after_the_hash() {
        let secret = b"secret";
        let digest = |rest: &str| {
            let mut md5 = Md5::new();
            md5.update(rest.as_bytes());
            md5.update(secret);
            md5.finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let hex = digest("top/file.pdf?x=1");
        let uri = format!("/p/{hex}/top/file.pdf?x=1");
        assert_eq!(
            old_form(uri.as_bytes(), secret),
            Some(&b"top/file.pdf?x=1"[..])
        );
        let upper = format!("/p/{}/top/file.pdf?x=1", hex.to_uppercase());
        assert!(old_form(upper.as_bytes(), secret).is_some());
        assert_eq!(old_form(format!("/p/{hex}/").as_bytes(), secret), None);
        assert_eq!(old_form(b"/p/abc/top/file.pdf", secret), None);
        assert_eq!(old_form(b"/p", secret), None);
        assert_eq!(old_form(b"", secret), None);
    }
}

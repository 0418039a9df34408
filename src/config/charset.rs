//! nginx's charset settings at one level (ngx_http_charset_filter_module): `charset`,
//! `source_charset`, `override_charset` and `charset_types`. They name a response's charset in
//! its `Content-Type` (`text/html; charset=utf-8`), and with a `charset_map` between its
//! source charset and that one, recode its body. Each setting is inherited on its own; `types`
//! is inherited whole. The maps are the http level's, as nginx's `charset_map` blocks are.
//!
//! ```toml
//! [http.charset]
//! name = "utf-8"                  # `charset utf-8`; "off" names none
//! source = "koi8-r"               # responses without a charset are in koi8-r: recoded
//! types = ["text/css"]            # besides text/html; "*" is any type
//!
//! [[http.charset_map]]            # nginx's `charset_map koi8-r utf-8 { ... }`
//! from = "koi8-r"
//! to = "utf-8"
//! codes = [["C1", "D0B0"], ["C2", "D0B1"]]   # a byte of koi8-r, and its UTF-8 bytes
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
    /// none). Another than `name` is recoded to it, and needs a `charset_map` between them.
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
    /// charset other than the one to name needs a `charset_map` between them, either way.
    pub fn problem(&self, maps: &[CharsetMap]) -> Option<String> {
        match (self.named(), self.source_named()) {
            (Some(name), Some(source))
                if !name.eq_ignore_ascii_case(source)
                    && !maps.iter().any(|m| m.joins(source, name)) =>
            {
                Some(format!(
                    "no \"charset_map\" between the charsets \"{source}\" and \"{name}\""
                ))
            }
            _ => None,
        }
    }
}

/// `charset_map FROM TO { SRC DST; ... }`: the bytes of one charset and what each is in another,
/// used both ways. With TO `utf-8`, DST is the UTF-8 bytes of the character (up to U+FFFF); else
/// one byte. Bytes below 0x80 stay as they are; an unmapped byte becomes `?`, and a character
/// without a byte, recoding from UTF-8, an HTML entity (`&#1105;`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharsetMap {
    pub from: String,
    pub to: String,
    /// The pairs, in hex as nginx writes them, in the config's order (a later pair for the
    /// same byte wins).
    #[serde(default)]
    pub codes: Vec<[String; 2]>,
}

impl CharsetMap {
    /// Whether the map recodes between `a` and `b` (either way; names without regard to case).
    pub fn joins(&self, a: &str, b: &str) -> bool {
        let same = |x: &str, y: &str| x.eq_ignore_ascii_case(y);
        (same(&self.from, a) && same(&self.to, b)) || (same(&self.from, b) && same(&self.to, a))
    }

    /// Whether the map's target is UTF-8.
    pub fn to_utf8(&self) -> bool {
        self.to.eq_ignore_ascii_case("utf-8")
    }

    /// One pair as nginx reads it: the byte, and what it becomes (a byte, or UTF-8's bytes of
    /// a character up to U+FFFF). `Err` names the value nginx calls invalid.
    pub fn code(&self, source: &str, target: &str) -> Result<(u8, Vec<u8>), String> {
        let invalid = |v: &str| format!("invalid value \"{v}\"");
        let byte = hex(source)
            .filter(|b| *b <= 255)
            .ok_or_else(|| invalid(source))?;
        if !self.to_utf8() {
            let to = hex(target)
                .filter(|b| *b <= 255)
                .ok_or_else(|| invalid(target))?;
            return Ok((byte as u8, vec![to as u8]));
        }
        let digits = target.as_bytes();
        if digits.is_empty() || digits.len() % 2 != 0 || digits.len() > 6 {
            return Err(invalid(target));
        }
        let bytes = digits
            .chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(hex)
                    .map(|b| b as u8)
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| invalid(target))?;
        // nginx decodes the bytes (as far as their first byte says) and wants a character up
        // to U+FFFF; the bytes are kept as written.
        let (character, _) = utf8_decode(&bytes);
        if character > 0xffff {
            return Err(invalid(target));
        }
        Ok((byte as u8, bytes))
    }

    /// What is wrong with the map, for the config check (nginx's words, but for the line).
    pub fn problem(&self, others: &[CharsetMap]) -> Option<String> {
        if self.from.eq_ignore_ascii_case(&self.to) {
            return Some(format!(
                "\"charset_map\" between the same charsets \"{}\" and \"{}\"",
                self.from, self.to
            ));
        }
        if others.iter().any(|m| m.joins(&self.from, &self.to)) {
            return Some(format!(
                "duplicate \"charset_map\" between \"{}\" and \"{}\"",
                self.from, self.to
            ));
        }
        self.codes
            .iter()
            .find_map(|[source, target]| self.code(source, target).err())
    }
}

/// What ngx_utf8_decode reads at the start of `bytes` (which starts at a byte of 0x80 or more
/// in nginx's use): the character and how many bytes it took. A character not in valid UTF-8
/// (a bad first byte, a byte that does not continue it, an overlong form) is
/// [`INVALID_UTF8`], taking the bytes read up to and including the one at fault; one cut short
/// by the end of `bytes` is [`INCOMPLETE_UTF8`], taking none.
pub fn utf8_decode(bytes: &[u8]) -> (u32, usize) {
    let first = u32::from(bytes[0]);
    let (mut u, valid, len) = match first {
        0xf0.. => (first & 0x07, 0xffff, 3),
        0xe0.. => (first & 0x0f, 0x7ff, 2),
        0xc2.. => (first & 0x1f, 0x7f, 1),
        _ => return (INVALID_UTF8, 1),
    };
    if bytes.len() - 1 < len {
        return (INCOMPLETE_UTF8, 0);
    }
    for (taken, &byte) in bytes[1..=len].iter().enumerate() {
        if byte < 0x80 {
            return (INVALID_UTF8, taken + 2);
        }
        u = (u << 6) | u32::from(byte & 0x3f);
    }
    match u > valid {
        true => (u, len + 1),
        false => (INVALID_UTF8, len + 1),
    }
}

/// ngx_utf8_decode's answers for a character that is not valid UTF-8, and for one whose bytes
/// go on past the end of the data.
pub const INVALID_UTF8: u32 = 0xffff_ffff;
pub const INCOMPLETE_UTF8: u32 = 0xffff_fffe;

/// ngx_hextoi: hex digits, any case, nothing else; `None` for none or another character.
fn hex(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 7 {
        return None;
    }
    u32::from_str_radix(text, 16)
        .ok()
        .filter(|_| text.bytes().all(|b| b.is_ascii_hexdigit()))
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
        assert_eq!(named("utf-8", None).problem(&[]), None);
        assert_eq!(named("UTF-8", Some("utf-8")).problem(&[]), None);
        assert_eq!(named("off", Some("koi8-r")).problem(&[]), None);
        assert_eq!(
            named("utf-8", Some("koi8-r")).problem(&[]).as_deref(),
            Some("no \"charset_map\" between the charsets \"koi8-r\" and \"utf-8\"")
        );
        // A map serves both ways.
        let map = CharsetMap {
            from: "KOI8-R".into(),
            to: "utf-8".into(),
            codes: Vec::new(),
        };
        assert_eq!(
            named("utf-8", Some("koi8-r")).problem(std::slice::from_ref(&map)),
            None
        );
        assert_eq!(named("koi8-r", Some("UTF-8")).problem(&[map]), None);
    }

    #[test]
    fn map_codes_as_nginx_reads_them() {
        let map = |to: &str| CharsetMap {
            from: "koi8-r".into(),
            to: to.into(),
            codes: Vec::new(),
        };
        let utf8 = map("utf-8");
        assert_eq!(utf8.code("C1", "D0B0"), Ok((0xC1, vec![0xD0, 0xB0])));
        assert_eq!(
            utf8.code("80", "e282ac"),
            Ok((0x80, vec![0xE2, 0x82, 0xAC]))
        );
        assert!(utf8.code("100", "41").is_err());
        assert!(utf8.code("C1", "D0B").is_err());
        assert!(utf8.code("x1", "41").is_err());
        let win = map("windows-1251");
        assert_eq!(win.code("A3", "B8"), Ok((0xA3, vec![0xB8])));
        assert_eq!(
            win.code("A3", "1FF").unwrap_err(),
            "invalid value \"1FF\"".to_string()
        );
        let same = CharsetMap {
            to: "KOI8-R".into(),
            ..map("x")
        };
        assert!(same
            .problem(&[])
            .unwrap()
            .contains("between the same charsets"));
        assert!(win
            .problem(&[map("WINDOWS-1251")])
            .unwrap()
            .starts_with("duplicate"));
    }
}

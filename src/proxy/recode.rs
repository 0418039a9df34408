//! Recoding a body from one charset to another with a `charset_map` (see `config::charset`), as
//! ngx_http_charset_filter_module recodes it: byte for byte between two 8-bit charsets, each
//! byte to its UTF-8 bytes, or UTF-8 characters back to bytes.
//!
//! Bytes below 0x80 are ASCII in every charset and pass as they are. An 8-bit byte the map does
//! not name becomes `?`. Recoding from UTF-8, a character the map has no byte for becomes an HTML
//! entity (`&#1105;`), a byte that is not valid UTF-8 becomes `?` (with what nginx reads of it),
//! and a character cut at the end of the data waits for the rest (cut at the end of the body, it
//! is dropped).

use std::sync::Arc;

use bytes::Bytes;

use crate::config::charset::{utf8_decode, CharsetMap, INCOMPLETE_UTF8};

/// One map's tables, both ways.
#[derive(Debug)]
pub struct MapTables {
    from: Box<str>,
    to: Box<str>,
    forward: Arc<Table>,
    backward: Arc<Table>,
}

/// How bytes are recoded one way.
#[derive(Debug)]
pub enum Table {
    /// Between two 8-bit charsets: each byte's new byte.
    Bytes(Box<[u8; 256]>),
    /// From an 8-bit charset to UTF-8: each byte's UTF-8 bytes.
    ToUtf8(Box<[Box<[u8]>]>),
    /// From UTF-8 to an 8-bit charset: the byte of each character up to U+FFFF, by its high
    /// byte then its low byte; 0 for none.
    FromUtf8(Box<[Option<Box<[u8; 256]>>]>),
}

impl MapTables {
    /// The tables of a map whose codes the config check has passed (a code it would refuse is
    /// passed over here).
    pub fn build(map: &CharsetMap) -> MapTables {
        let codes = map.codes.iter().filter_map(|[s, t]| map.code(s, t).ok());
        let (forward, backward) = match map.to_utf8() {
            true => {
                let mut to: Vec<Box<[u8]>> = (0..=255u8)
                    .map(|b| match b < 0x80 {
                        true => Box::from([b]),
                        false => Box::from(*b"?"),
                    })
                    .collect();
                let mut back: Vec<Option<Box<[u8; 256]>>> = vec![None; 256];
                let mut ascii = Box::new([0u8; 256]);
                for b in 0..0x80u8 {
                    ascii[usize::from(b)] = b;
                }
                back[0] = Some(ascii);
                for (byte, bytes) in codes {
                    let (character, _) = utf8_decode(&bytes);
                    to[usize::from(byte)] = bytes.into();
                    let page =
                        back[(character >> 8) as usize].get_or_insert_with(|| Box::new([0; 256]));
                    page[(character & 0xff) as usize] = byte;
                }
                (Table::ToUtf8(to.into()), Table::FromUtf8(back.into()))
            }
            false => {
                let identity_then_unknown = || {
                    let mut t = Box::new([b'?'; 256]);
                    for b in 0..0x80u8 {
                        t[usize::from(b)] = b;
                    }
                    t
                };
                let (mut to, mut back) = (identity_then_unknown(), identity_then_unknown());
                for (byte, bytes) in codes {
                    to[usize::from(byte)] = bytes[0];
                    back[usize::from(bytes[0])] = byte;
                }
                (Table::Bytes(to), Table::Bytes(back))
            }
        };
        MapTables {
            from: map.from.as_str().into(),
            to: map.to.as_str().into(),
            forward: Arc::new(forward),
            backward: Arc::new(backward),
        }
    }

    /// The table from `source` to `target` (names without regard to case), if this map has it.
    pub fn between(&self, source: &str, target: &str) -> Option<&Arc<Table>> {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        if same(&self.from, source) && same(&self.to, target) {
            Some(&self.forward)
        } else if same(&self.to, source) && same(&self.from, target) {
            Some(&self.backward)
        } else {
            None
        }
    }
}

impl Table {
    /// Whether the recoded body can differ in length (nginx then drops Content-Length).
    pub fn changes_length(&self) -> bool {
        !matches!(self, Table::Bytes(_))
    }
}

/// One body being recoded.
pub struct Recoder {
    table: Arc<Table>,
    /// The start of a UTF-8 character cut at the end of the last data.
    saved: Vec<u8>,
}

impl Recoder {
    pub fn new(table: Arc<Table>) -> Recoder {
        Recoder {
            table,
            saved: Vec::new(),
        }
    }

    /// `data` recoded: what can go out now.
    pub fn push(&mut self, data: &[u8]) -> Bytes {
        match &*self.table {
            Table::Bytes(t) => data
                .iter()
                .map(|&b| t[usize::from(b)])
                .collect::<Vec<u8>>()
                .into(),
            Table::ToUtf8(t) => {
                let mut out = Vec::with_capacity(data.len() + data.len() / 2);
                for &b in data {
                    out.extend_from_slice(&t[usize::from(b)]);
                }
                out.into()
            }
            Table::FromUtf8(pages) => {
                let joined;
                let data = match self.saved.is_empty() {
                    true => data,
                    false => {
                        joined = [std::mem::take(&mut self.saved).as_slice(), data].concat();
                        &joined[..]
                    }
                };
                let mut out = Vec::with_capacity(data.len());
                let mut at = 0;
                while at < data.len() {
                    let b = data[at];
                    if b < 0x80 {
                        out.push(b);
                        at += 1;
                        continue;
                    }
                    let (character, taken) = utf8_decode(&data[at..]);
                    if character == INCOMPLETE_UTF8 {
                        self.saved = data[at..].to_vec();
                        break;
                    }
                    at += taken;
                    let byte = match character {
                        0..0x10000 => pages[(character >> 8) as usize]
                            .as_ref()
                            .map_or(0, |page| page[(character & 0xff) as usize]),
                        _ => 0,
                    };
                    match (byte, character) {
                        (0, 0..=0x10ffff) => {
                            out.extend_from_slice(format!("&#{character};").as_bytes())
                        }
                        (0, _) => out.push(b'?'),
                        (byte, _) => out.push(byte),
                    }
                }
                out.into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(to: &str, codes: &[(&str, &str)]) -> MapTables {
        MapTables::build(&CharsetMap {
            from: "koi8-r".into(),
            to: to.into(),
            codes: codes
                .iter()
                .map(|(a, b)| [a.to_string(), b.to_string()])
                .collect(),
        })
    }

    fn recode(table: &Arc<Table>, pieces: &[&[u8]]) -> Vec<u8> {
        let mut r = Recoder::new(table.clone());
        pieces.iter().flat_map(|p| r.push(p).to_vec()).collect()
    }

    #[test]
    fn eight_bit_both_ways() {
        let m = map("windows-1251", &[("C1", "E1"), ("A3", "B8")]);
        let to = m.between("KOI8-R", "windows-1251").unwrap();
        assert_eq!(recode(to, &[b"a\xC1\xA3\xFF"]), b"a\xE1\xB8?");
        let back = m.between("windows-1251", "koi8-r").unwrap();
        assert_eq!(recode(back, &[b"\xE1\xB8\xC1"]), b"\xC1\xA3?");
        assert!(!to.changes_length());
        assert!(m.between("koi8-r", "utf-8").is_none());
    }

    #[test]
    fn to_utf8_and_back() {
        let m = map("utf-8", &[("C1", "D0B0"), ("80", "E282AC")]);
        let to = m.between("koi8-r", "utf-8").unwrap();
        assert_eq!(recode(to, &[b"x\xC1\x80\xC2"]), "xа€?".as_bytes());
        let back = m.between("utf-8", "koi8-r").unwrap();
        // A character without a byte is an entity; beyond U+FFFF too; a bad byte is `?`, and
        // swallows the ASCII byte it met, as ngx_utf8_decode does.
        let text = "а€ё😀".as_bytes();
        assert_eq!(recode(back, &[text]), b"\xC1\x80&#1105;&#128512;");
        assert_eq!(recode(back, &[b"\xD0ab\x80c"]), b"?b?c");
        // A first byte of 0xF0 or more waits for three more, whatever it is.
        assert_eq!(recode(back, &[b"x\xFF"]), b"x");
        // Cut anywhere, the same.
        for cut in 0..text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(
                recode(back, &[a, b]),
                b"\xC1\x80&#1105;&#128512;",
                "cut {cut}"
            );
        }
        // Cut short at the end: dropped.
        assert_eq!(recode(back, &[b"a\xD0"]), b"a");
    }
}

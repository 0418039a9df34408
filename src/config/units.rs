//! Durations and sizes, written the way nginx writes them (`10s`, `1m30s`, `500ms`, `8k`, `1m`).
//!
//! The parsers follow `ngx_parse_time` and `ngx_parse_offset` exactly, so that the nginx front end
//! accepts and rejects the same values nginx does, and the TOML uses the same notation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A time span with millisecond resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

/// A byte count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

const MAX_INT32: u64 = i32::MAX as u64;

/// Which units a time value may use: nginx parses some directives in seconds (no `ms`, and a
/// result in seconds) and others in milliseconds (no `y`, and a result in milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Milliseconds,
}

/// `ngx_parse_time`: units in decreasing order (`y M w d h m s ms`), a bare trailing number is
/// seconds, spaces may separate the parts, and the total must fit nginx's 32-bit limits.
pub fn parse_nginx_time(text: &str, unit: TimeUnit) -> Option<std::time::Duration> {
    #[derive(PartialEq, PartialOrd, Clone, Copy)]
    enum Step {
        Start,
        Year,
        Month,
        Week,
        Day,
        Hour,
        Min,
        Sec,
        Msec,
        Last,
    }
    let is_sec = unit == TimeUnit::Seconds;
    let bytes = text.as_bytes();
    let mut step = if is_sec { Step::Start } else { Step::Month };
    let (mut value, mut total, mut valid) = (0u64, 0u64, false);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_digit() {
            value = value.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            if value > u64::from(u32::MAX) * 1000 {
                return None;
            }
            valid = true;
            i += 1;
            continue;
        }
        let (next, mut max, mut scale): (Step, u64, u64) = match c {
            b'y' if step <= Step::Start => (Step::Year, MAX_INT32 / 31_536_000, 31_536_000),
            b'M' if step < Step::Month => (Step::Month, MAX_INT32 / 2_592_000, 2_592_000),
            b'w' if step < Step::Week => (Step::Week, MAX_INT32 / 604_800, 604_800),
            b'd' if step < Step::Day => (Step::Day, MAX_INT32 / 86_400, 86_400),
            b'h' if step < Step::Hour => (Step::Hour, MAX_INT32 / 3_600, 3_600),
            b'm' if bytes.get(i + 1) == Some(&b's') => {
                if is_sec || step >= Step::Msec {
                    return None;
                }
                i += 1;
                (Step::Msec, MAX_INT32, 1)
            }
            b'm' if step < Step::Min => (Step::Min, MAX_INT32 / 60, 60),
            b's' if step < Step::Sec => (Step::Sec, MAX_INT32, 1),
            b' ' if step < Step::Sec => (Step::Last, MAX_INT32, 1),
            _ => return None,
        };
        step = next;
        if step != Step::Msec && !is_sec {
            scale *= 1000;
            max /= 1000;
        }
        if value > max {
            return None;
        }
        value *= scale;
        if total > MAX_INT32 - value.min(MAX_INT32) || value > MAX_INT32 {
            return None;
        }
        total += value;
        value = 0;
        i += 1;
        while bytes.get(i) == Some(&b' ') {
            i += 1;
        }
    }
    if !valid {
        return None;
    }
    if !is_sec {
        if value > MAX_INT32 / 1000 {
            return None;
        }
        value *= 1000;
    }
    if total > MAX_INT32 - value.min(MAX_INT32) || value > MAX_INT32 {
        return None;
    }
    let total = total + value;
    Some(if is_sec {
        std::time::Duration::from_secs(total)
    } else {
        std::time::Duration::from_millis(total)
    })
}

/// `ngx_parse_size` (`k`, `m`) and, with `allow_giga`, `ngx_parse_offset` (also `g`).
pub fn parse_nginx_size(text: &str, allow_giga: bool) -> Option<u64> {
    let (digits, scale) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 1024u64),
        b'm' | b'M' => (&text[..text.len() - 1], 1024 * 1024),
        b'g' | b'G' if allow_giga => (&text[..text.len() - 1], 1024 * 1024 * 1024),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let max = if allow_giga {
        i64::MAX as u64
    } else {
        isize::MAX as u64
    };
    if n > max / scale {
        return None;
    }
    Some(n * scale)
}

impl Duration {
    pub fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    pub fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl fmt::Display for Duration {
    /// The shortest exact form in the largest unit that divides it: `1h`, `90s`, `250ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 != 0 {
            return write!(f, "{ms}ms");
        }
        let s = ms / 1000;
        for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if s != 0 && s % len == 0 {
                return write!(f, "{}{unit}", s / len);
            }
        }
        write!(f, "{s}s")
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_nginx_time(s, TimeUnit::Milliseconds)
            .map(Duration)
            .ok_or_else(|| format!("\"{s}\" is not a time such as \"10s\", \"500ms\" or \"1m30s\""))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    /// A string in nginx notation, or a bare integer meaning seconds.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, len) in [("g", 1u64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
            if n != 0 && n % len == 0 {
                return write!(f, "{}{unit}", n / len);
            }
        }
        write!(f, "{n}")
    }
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_nginx_size(s, true)
            .map(Size)
            .ok_or_else(|| format!("\"{s}\" is not a size such as \"512\", \"8k\" or \"1m\""))
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(Size(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    #[test]
    fn times_as_nginx_parses_them() {
        let ms = |s| parse_nginx_time(s, TimeUnit::Milliseconds);
        let sec = |s| parse_nginx_time(s, TimeUnit::Seconds);
        assert_eq!(ms("10s"), Some(D::from_secs(10)));
        assert_eq!(ms("10"), Some(D::from_secs(10)));
        assert_eq!(ms("500ms"), Some(D::from_millis(500)));
        assert_eq!(ms("1m30s"), Some(D::from_secs(90)));
        assert_eq!(ms("1m 30s"), Some(D::from_secs(90)));
        assert_eq!(ms("1h"), Some(D::from_secs(3600)));
        assert_eq!(
            ms("1y"),
            None,
            "years are not allowed in millisecond directives"
        );
        assert_eq!(sec("1y"), Some(D::from_secs(31_536_000)));
        assert_eq!(
            sec("500ms"),
            None,
            "milliseconds are not allowed in second directives"
        );
        assert_eq!(ms("30s1m"), None, "units must decrease");
        assert_eq!(ms("s"), None);
        assert_eq!(ms(""), None);
        assert_eq!(ms("10x"), None);
        assert_eq!(
            ms("3000000s"),
            None,
            "over nginx's 32-bit millisecond limit"
        );
    }

    #[test]
    fn sizes_as_nginx_parses_them() {
        assert_eq!(parse_nginx_size("8k", false), Some(8192));
        assert_eq!(parse_nginx_size("1M", false), Some(1 << 20));
        assert_eq!(parse_nginx_size("1g", false), None);
        assert_eq!(parse_nginx_size("1g", true), Some(1 << 30));
        assert_eq!(parse_nginx_size("k", true), None);
        assert_eq!(parse_nginx_size("-1", true), None);
    }

    #[test]
    fn display_round_trips() {
        for s in ["1h", "90s", "250ms", "1m", "2d", "0s"] {
            assert_eq!(s.parse::<Duration>().unwrap().to_string(), s);
        }
        for s in ["1m", "8k", "1g", "1000"] {
            assert_eq!(s.parse::<Size>().unwrap().to_string(), s);
        }
    }
}

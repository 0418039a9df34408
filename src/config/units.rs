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

/// Which units a time value may use: nginx parses some directives in seconds (no `ms`, and a
/// result in seconds) and others in milliseconds (no `y`, and a result in milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Milliseconds,
}

/// `ngx_parse_time` as a [`std::time::Duration`] (see [`parse_time`]).
pub fn parse_nginx_time(text: &str, unit: TimeUnit) -> Option<std::time::Duration> {
    let is_sec = unit == TimeUnit::Seconds;
    let n = u64::try_from(parse_time(text.as_bytes(), is_sec)?).ok()?;
    Some(if is_sec {
        std::time::Duration::from_secs(n)
    } else {
        std::time::Duration::from_millis(n)
    })
}

/// `ngx_parse_size` (`k`, `m`) and, with `allow_giga`, `ngx_parse_offset` (also `g`).
pub fn parse_nginx_size(text: &str, allow_giga: bool) -> Option<u64> {
    let n = if allow_giga {
        parse_offset(text.as_bytes())
    } else {
        parse_size(text.as_bytes())
    }?;
    u64::try_from(n).ok()
}

/// ngx_atoi: decimal digits only, no sign, at most NGX_MAX_INT_T_VALUE.
pub fn atoi(v: &[u8]) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    Some(value)
}

/// ngx_parse_size: a number with an optional k or m (either case).
pub fn parse_size(v: &[u8]) -> Option<i64> {
    let (digits, scale) = match v.last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1024),
        b'm' | b'M' => (&v[..v.len() - 1], 1024 * 1024),
        _ => (v, 1),
    };
    let n = atoi(digits)?;
    if n > i64::MAX / scale {
        return None;
    }
    Some(n * scale)
}

/// ngx_parse_offset: like a size, and g for gigabytes.
pub fn parse_offset(v: &[u8]) -> Option<i64> {
    let (digits, scale) = match v.last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1024),
        b'm' | b'M' => (&v[..v.len() - 1], 1024 * 1024),
        b'g' | b'G' => (&v[..v.len() - 1], 1024 * 1024 * 1024),
        _ => (v, 1),
    };
    let n = atoi(digits)?;
    if n > i64::MAX / scale {
        return None;
    }
    Some(n * scale)
}

/// ngx_parse_time: `1h 30m`, `500ms`, `10s`, a bare number (seconds). In milliseconds unless
/// `is_sec`. Units must come in decreasing order, each at most once.
pub fn parse_time(v: &[u8], is_sec: bool) -> Option<i64> {
    #[derive(Clone, Copy, PartialEq, PartialOrd)]
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
    const MAX: i64 = i64::MAX;
    let mut valid = false;
    let mut value: i64 = 0;
    let mut total: i64 = 0;
    let mut step = if is_sec { Step::Start } else { Step::Month };
    let mut p = 0;
    while p < v.len() {
        let c = v[p];
        if c.is_ascii_digit() {
            value = value.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
            p += 1;
            valid = true;
            continue;
        }
        p += 1;
        let (next, mut max, mut scale): (Step, i64, i64) = match c {
            b'y' if step <= Step::Start => (Step::Year, MAX / 31_536_000, 31_536_000),
            b'M' if step < Step::Month => (Step::Month, MAX / 2_592_000, 2_592_000),
            b'w' if step < Step::Week => (Step::Week, MAX / 604_800, 604_800),
            b'd' if step < Step::Day => (Step::Day, MAX / 86_400, 86_400),
            b'h' if step < Step::Hour => (Step::Hour, MAX / 3_600, 3_600),
            b'm' if v.get(p) == Some(&b's') => {
                if is_sec || step >= Step::Msec {
                    return None;
                }
                p += 1;
                (Step::Msec, MAX, 1)
            }
            b'm' if step < Step::Min => (Step::Min, MAX / 60, 60),
            b's' if step < Step::Sec => (Step::Sec, MAX, 1),
            b' ' if step < Step::Sec => (Step::Last, MAX, 1),
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
        if total > MAX - value {
            return None;
        }
        total += value;
        value = 0;
        while v.get(p) == Some(&b' ') {
            p += 1;
        }
    }
    if !valid {
        return None;
    }
    if !is_sec {
        if value > MAX / 1000 {
            return None;
        }
        value *= 1000;
    }
    if total > MAX - value {
        return None;
    }
    Some(total + value)
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
            Some(D::from_secs(3_000_000)),
            "nginx 1.22's limit is its 64-bit ngx_int_t, not 32 bits"
        );
        assert_eq!(ms("99999999999999999999"), None);
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

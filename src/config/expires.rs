//! nginx's `expires`: the `Expires` and `Cache-Control` headers added to a response, as
//! ngx_http_headers_filter_module reads and computes them. At each level (http, server,
//! location) the setting is the directive's arguments as written, inherited whole:
//!
//! ```toml
//! expires = "1h"            # or "modified 1h", "@15h30m", "epoch", "max", "off", "-1",
//!                           # or a template such as "$expires" (read on each response)
//! ```

/// What a value of `expires` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiresKind {
    Off,
    /// `Expires` in 1970, `Cache-Control: no-cache`.
    Epoch,
    /// `Expires` in 2037, ten years of `max-age`.
    Max,
    /// This many seconds (maybe negative) after the response.
    Access(i64),
    /// This many seconds after the response's `Last-Modified` (after the response without one).
    Modified(i64),
    /// The next time of day this many seconds after midnight (`@`), in UTC as the appliance's
    /// `$time_local`.
    Daily(i64),
}

/// `expires`' arguments as the model keeps them, `[modified ]value`: whether `modified` was
/// given, and the value (which may hold spaces: `1h 30m`).
pub fn split(text: &str) -> Result<(bool, &str), &'static str> {
    match text.strip_prefix("modified ") {
        Some(value) => Ok((true, value.trim_start())),
        None if text.is_empty() => Err("invalid value"),
        None => Ok((false, text)),
    }
}

/// ngx_http_parse_expires: a value of `expires` read as nginx reads it, `modified` given or not.
pub fn parse(value: &str, modified: bool) -> Result<ExpiresKind, &'static str> {
    if !modified {
        match value {
            "epoch" => return Ok(ExpiresKind::Epoch),
            "max" => return Ok(ExpiresKind::Max),
            "off" => return Ok(ExpiresKind::Off),
            _ => {}
        }
    }
    let (daily, minus, time) = if let Some(rest) = value.strip_prefix('@') {
        if modified {
            return Err("daily time cannot be used with \"modified\" parameter");
        }
        (true, false, rest)
    } else if let Some(rest) = value.strip_prefix('+') {
        (false, false, rest)
    } else if let Some(rest) = value.strip_prefix('-') {
        (false, true, rest)
    } else {
        (false, false, value)
    };
    let seconds = super::units::parse_time(time.as_bytes(), true).ok_or("invalid value")?;
    if daily && seconds > 24 * 60 * 60 {
        return Err("daily time value must be less than 24 hours");
    }
    let seconds = if minus { -seconds } else { seconds };
    Ok(match (daily, modified) {
        (true, _) => ExpiresKind::Daily(seconds),
        (false, true) => ExpiresKind::Modified(seconds),
        (false, false) => ExpiresKind::Access(seconds),
    })
}

/// The two headers for a response sent at `now` (seconds since the epoch) with the given
/// `Last-Modified`: the `Expires` time (seconds since the epoch; `None` for nginx's fixed
/// 1970 and 2037 texts, given as `Err`) and the `Cache-Control` value. `None` for `off`.
pub fn headers(
    kind: ExpiresKind,
    now: i64,
    last_modified: Option<i64>,
) -> Option<(Result<i64, &'static str>, String)> {
    let (expires, max_age, seconds) = match kind {
        ExpiresKind::Off => return None,
        ExpiresKind::Epoch => {
            return Some((Err("Thu, 01 Jan 1970 00:00:01 GMT"), "no-cache".into()))
        }
        ExpiresKind::Max => {
            return Some((
                Err("Thu, 31 Dec 2037 23:55:55 GMT"),
                "max-age=315360000".into(),
            ))
        }
        ExpiresKind::Access(0) | ExpiresKind::Modified(0) => {
            return Some((Ok(now), "max-age=0".into()))
        }
        ExpiresKind::Daily(seconds) => {
            let midnight = now - now.rem_euclid(86_400);
            let mut next = midnight + seconds;
            if next - now <= 0 {
                next += 86_400;
            }
            (next, next - now, seconds)
        }
        // Saturating: a time of many years must not overflow (nginx's time_t would).
        ExpiresKind::Access(seconds) => (now.saturating_add(seconds), seconds, seconds),
        ExpiresKind::Modified(seconds) => match last_modified {
            Some(modified) => {
                let expires = modified.saturating_add(seconds);
                (expires, expires.saturating_sub(now), seconds)
            }
            None => (now.saturating_add(seconds), seconds, seconds),
        },
    };
    let cache_control = if seconds < 0 || max_age < 0 {
        "no-cache".to_string()
    } else {
        format!("max-age={max_age}")
    };
    Some((Ok(expires), cache_control))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_nginx_reads_them() {
        assert_eq!(parse("1h", false), Ok(ExpiresKind::Access(3600)));
        assert_eq!(parse("+1d", false), Ok(ExpiresKind::Access(86_400)));
        assert_eq!(parse("-1", false), Ok(ExpiresKind::Access(-1)));
        assert_eq!(parse("1h", true), Ok(ExpiresKind::Modified(3600)));
        assert_eq!(parse("@15h30m", false), Ok(ExpiresKind::Daily(55_800)));
        assert_eq!(parse("epoch", false), Ok(ExpiresKind::Epoch));
        assert_eq!(parse("max", false), Ok(ExpiresKind::Max));
        assert_eq!(parse("off", false), Ok(ExpiresKind::Off));
        assert_eq!(parse("epoch", true), Err("invalid value"));
        assert_eq!(
            parse("@1h", true),
            Err("daily time cannot be used with \"modified\" parameter")
        );
        assert_eq!(
            parse("@25h", false),
            Err("daily time value must be less than 24 hours")
        );
        assert_eq!(parse("soon", false), Err("invalid value"));
        assert_eq!(split("modified 1h"), Ok((true, "1h")));
        assert_eq!(split("1h"), Ok((false, "1h")));
        assert_eq!(split("1h 30m"), Ok((false, "1h 30m")));
        assert_eq!(split(""), Err("invalid value"));
    }

    #[test]
    fn headers_as_nginx_computes_them() {
        let now = 1_800_000_000;
        assert_eq!(
            headers(ExpiresKind::Access(3600), now, None),
            Some((Ok(now + 3600), "max-age=3600".into()))
        );
        assert_eq!(
            headers(ExpiresKind::Access(-60), now, None),
            Some((Ok(now - 60), "no-cache".into()))
        );
        assert_eq!(
            headers(ExpiresKind::Access(0), now, None),
            Some((Ok(now), "max-age=0".into()))
        );
        assert_eq!(
            headers(ExpiresKind::Modified(3600), now, Some(now - 600)),
            Some((Ok(now + 3000), "max-age=3000".into()))
        );
        assert_eq!(
            headers(ExpiresKind::Modified(60), now, Some(now - 600)),
            Some((Ok(now - 540), "no-cache".into()))
        );
        // 1_800_000_000 is 08:00:00 UTC; @9h is an hour later, @7h tomorrow.
        assert_eq!(
            headers(ExpiresKind::Daily(9 * 3600), now, None),
            Some((Ok(now + 3600), "max-age=3600".into()))
        );
        assert_eq!(
            headers(ExpiresKind::Daily(7 * 3600), now, None),
            Some((Ok(now + 23 * 3600), "max-age=82800".into()))
        );
        assert_eq!(headers(ExpiresKind::Off, now, None), None);
        let far = headers(ExpiresKind::Access(i64::MAX), now, None);
        assert_eq!(far, Some((Ok(i64::MAX), format!("max-age={}", i64::MAX))));
        let past = headers(ExpiresKind::Modified(-i64::MAX), now, Some(-now));
        assert_eq!(past, Some((Ok(i64::MIN), "no-cache".into())));
    }
}

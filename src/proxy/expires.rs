//! `expires` on the data path (see `config::expires`): for the statuses nginx's headers filter
//! treats as safe, the `Expires` and `Cache-Control` values, worked out when the response is
//! sent. A value with variables (`expires $expires`, usually a `map` on
//! `$sent_http_content_type`) is read then, and one that does not parse adds nothing, as in
//! nginx.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::vars::{eval_to_vec, RequestVars};
use crate::compile::diag::Diagnostic;
use crate::config::expires::{self, ExpiresKind};
use crate::config::template::Template;
use crate::config::{Defined, Origin};

#[derive(Debug)]
pub struct ExpiresConf {
    modified: bool,
    value: Value,
}

#[derive(Debug)]
enum Value {
    Fixed(ExpiresKind),
    Template(Template),
}

/// The statuses nginx's headers filter adds headers to (without `always`).
pub fn safe_status(status: u16) -> bool {
    matches!(
        status,
        200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
    )
}

impl ExpiresConf {
    /// `None` for no setting or `off`.
    pub fn build(
        text: Option<&str>,
        defined: Defined<'_>,
        at: Option<&Origin>,
    ) -> Result<Option<ExpiresConf>, Diagnostic> {
        let Some(text) = text else {
            return Ok(None);
        };
        let fail = |e: &str| Diagnostic::error(format!("\"expires\" directive {e}")).at_opt(at);
        let (modified, value) = expires::split(text).map_err(fail)?;
        let template = super::tables::template(value, defined, at)?;
        let value = if template.variables().next().is_some() {
            Value::Template(template)
        } else {
            match expires::parse(value, modified).map_err(fail)? {
                ExpiresKind::Off => return Ok(None),
                kind => Value::Fixed(kind),
            }
        };
        Ok(Some(ExpiresConf { modified, value }))
    }

    /// Whether the value is read from variables when the response is sent (they may read the
    /// response's own headers).
    pub fn reads_response(&self) -> bool {
        matches!(self.value, Value::Template(_))
    }

    /// The `Expires` and `Cache-Control` values for a response of `status` with the given
    /// `Last-Modified`, at `now` (the response's `Date`); `None` when nothing is added.
    pub fn headers(
        &self,
        status: u16,
        vars: &RequestVars<'_>,
        last_modified: Option<&[u8]>,
        now: SystemTime,
    ) -> Option<(String, String)> {
        if !safe_status(status) {
            return None;
        }
        let kind = match &self.value {
            Value::Fixed(kind) => *kind,
            Value::Template(template) => {
                let value = eval_to_vec(template, vars);
                expires::parse(std::str::from_utf8(&value).ok()?, self.modified).ok()?
            }
        };
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let last_modified = last_modified
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        let (expires, cache_control) = expires::headers(kind, now, last_modified)?;
        let expires = match expires {
            Err(fixed) => fixed.to_string(),
            Ok(seconds) => http_time(seconds),
        };
        Some((expires, cache_control))
    }
}

/// ngx_http_time: an HTTP date. Times before 1970 (a large negative `expires`) are written as
/// the epoch itself, and times past the year 9999 as its last second: nginx would print those
/// dates, `httpdate` has none.
pub(crate) fn http_time(seconds: i64) -> String {
    const LAST: u64 = 253_402_300_799;
    let seconds = u64::try_from(seconds).unwrap_or(0).min(LAST);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_out_of_range_do_not_panic() {
        assert_eq!(http_time(-5), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_time(i64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(http_time(1), "Thu, 01 Jan 1970 00:00:01 GMT");
    }
}

//! nginx's generic slot handlers (`ngx_conf_set_flag_slot` and its siblings in
//! src/core/ngx_conf_file.c and ngx_file.c): the value checks and the duplicate check they
//! apply, with their messages, so the parser rejects what they reject.
//!
//! A slot stores into a field of a block's configuration, and a second occurrence finds the
//! field already set: "is duplicate". The parser stands in for those fields with a set of
//! (configuration instance, module, field) keys; the caller says which instance a directive's
//! configuration is (the block that created it).

use std::collections::HashSet;

use super::directives::{c_str, Directive, Handler, Post};

/// What a slot handler returned: a string nginx prints after the directive's name
/// (`"x" directive is duplicate`), or a message it logged itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// Printed as `"name" directive <rv>`.
    Rv(&'static str),
    /// Printed as is.
    Message(String),
}

impl SlotError {
    pub fn message(&self, name: &str) -> String {
        match self {
            SlotError::Rv(rv) => format!("\"{}\" directive {rv}", c_str(name)),
            SlotError::Message(m) => m.clone(),
        }
    }
}

/// The configuration fields set so far.
#[derive(Debug, Default)]
pub struct Fields {
    set: HashSet<(u32, &'static str, &'static str)>,
}

impl Fields {
    /// Marks a field of configuration `instance` as set; false when it already was.
    pub fn set(&mut self, instance: u32, module: &'static str, field: &'static str) -> bool {
        self.set.insert((instance, module, field))
    }
}

/// Applies the directive's generic slot (if it has one) to its argument values. Returns a
/// warning nginx would print (a deprecation) on success.
pub fn apply(
    d: &Directive,
    args: &[&[u8]],
    instance: u32,
    fields: &mut Fields,
) -> Result<Option<String>, SlotError> {
    let has_duplicate_check = matches!(
        d.handler,
        Handler::Flag
            | Handler::Str
            | Handler::Num
            | Handler::Size
            | Handler::Off
            | Handler::Msec
            | Handler::Sec
            | Handler::Bufs
            | Handler::Enum
            | Handler::Path
            | Handler::Access
    );
    if has_duplicate_check && !fields.set(instance, d.module, d.field) {
        return Err(SlotError::Rv("is duplicate"));
    }
    let first = args.first().copied().unwrap_or_default();
    let mut number = None;
    match d.handler {
        Handler::Flag => {
            let v = c_bytes(first);
            if !v.eq_ignore_ascii_case(b"on") && !v.eq_ignore_ascii_case(b"off") {
                return Err(SlotError::Message(format!(
                    "invalid value \"{}\" in \"{}\" directive, it must be \"on\" or \"off\"",
                    lossy(v),
                    d.name
                )));
            }
        }
        Handler::Num => match atoi(first) {
            Some(n) => number = Some(n),
            None => return Err(SlotError::Rv("invalid number")),
        },
        Handler::Size => {
            parse_size(first).ok_or(SlotError::Rv("invalid value"))?;
        }
        Handler::Off => {
            parse_offset(first).ok_or(SlotError::Rv("invalid value"))?;
        }
        Handler::Msec => {
            parse_time(first, false).ok_or(SlotError::Rv("invalid value"))?;
        }
        Handler::Sec => {
            parse_time(first, true).ok_or(SlotError::Rv("invalid value"))?;
        }
        Handler::Bufs => {
            let size = args.get(1).copied().unwrap_or_default();
            if !matches!(atoi(first), Some(n) if n > 0)
                || !matches!(parse_size(size), Some(n) if n > 0)
            {
                return Err(SlotError::Rv("invalid value"));
            }
            return Ok(None);
        }
        Handler::Enum => {
            let Post::Values(values) = d.post else {
                return Ok(None);
            };
            if !values
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(first))
            {
                return Err(invalid_value(c_bytes(first)));
            }
            return Ok(None);
        }
        Handler::Bitmask => {
            let Post::Values(values) = d.post else {
                return Ok(None);
            };
            for arg in args {
                if !values
                    .iter()
                    .any(|v| v.as_bytes().eq_ignore_ascii_case(arg))
                {
                    return Err(invalid_value(c_bytes(arg)));
                }
            }
            return Ok(None);
        }
        Handler::Path => {
            // Up to three directory levels, each 1 or more, at most 10 together.
            let mut total = 0i64;
            for level in args.iter().skip(1) {
                match atoi(level) {
                    Some(n) if n > 0 => total = total.saturating_add(n),
                    _ => return Err(SlotError::Rv("invalid value")),
                }
            }
            if total > 10 {
                return Err(SlotError::Rv("invalid value"));
            }
            return Ok(None);
        }
        Handler::Access => {
            for arg in args {
                if !valid_access(arg) {
                    return Err(invalid_value(arg));
                }
            }
            return Ok(None);
        }
        Handler::Str | Handler::StrArray | Handler::KeyVal => {}
        Handler::Block(_) | Handler::Custom(_) => return Ok(None),
    }
    match d.post {
        Post::Bounds(low, high) => {
            let Some(n) = number else {
                return Ok(None);
            };
            if high == -1 {
                if n < low {
                    return Err(SlotError::Message(format!(
                        "value must be equal to or greater than {low}"
                    )));
                }
            } else if n < low || n > high {
                return Err(SlotError::Message(format!(
                    "value must be between {low} and {high}"
                )));
            }
            Ok(None)
        }
        Post::Deprecated(old, new) => Ok(Some(format!(
            "the \"{old}\" directive is deprecated, use the \"{new}\" directive instead"
        ))),
        _ => Ok(None),
    }
}

fn invalid_value(v: &[u8]) -> SlotError {
    SlotError::Message(format!("invalid value \"{}\"", lossy(v)))
}

fn lossy(v: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(v)
}

/// A value as C string functions see it: up to the first NUL.
fn c_bytes(v: &[u8]) -> &[u8] {
    v.split(|&b| b == 0).next().unwrap_or(v)
}

/// ngx_conf_set_access_slot's words: `user:`, `group:` or `all:`, then `rw` or `r`.
fn valid_access(arg: &[u8]) -> bool {
    let rest = [&b"user:"[..], b"group:", b"all:"]
        .iter()
        .find_map(|p| arg.strip_prefix(*p));
    matches!(rest.map(c_bytes), Some(b"rw") | Some(b"r"))
}

pub use crate::config::units::{atoi, parse_offset, parse_size, parse_time};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::nginx::directives::find;

    fn run(name: &str, args: &[&str]) -> Result<Option<String>, String> {
        let d = find(name).unwrap();
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        apply(d, &args, 1, &mut Fields::default()).map_err(|e| e.message(name))
    }

    #[test]
    fn flags() {
        assert!(run("gzip", &["on"]).is_ok());
        assert!(run("gzip", &["OFF"]).is_ok());
        assert_eq!(
            run("gzip", &["yes"]).unwrap_err(),
            "invalid value \"yes\" in \"gzip\" directive, it must be \"on\" or \"off\""
        );
    }

    #[test]
    fn duplicates_are_per_instance() {
        let d = find("gzip").unwrap();
        let mut fields = Fields::default();
        assert!(apply(d, &[b"on"], 1, &mut fields).is_ok());
        assert_eq!(
            apply(d, &[b"on"], 1, &mut fields)
                .unwrap_err()
                .message("gzip"),
            "\"gzip\" directive is duplicate"
        );
        assert!(apply(d, &[b"on"], 2, &mut fields).is_ok());
        let headers = find("add_header").unwrap();
        assert!(apply(headers, &[b"a", b"b"], 1, &mut fields).is_ok());
        assert!(apply(headers, &[b"a", b"b"], 1, &mut fields).is_ok());
    }

    #[test]
    fn numbers_sizes_times() {
        assert_eq!(
            run("keepalive_requests", &["x"]).unwrap_err(),
            "\"keepalive_requests\" directive invalid number"
        );
        assert!(run("client_max_body_size", &["10m"]).is_ok());
        assert_eq!(
            run("client_body_buffer_size", &["10g"]).unwrap_err(),
            "\"client_body_buffer_size\" directive invalid value"
        );
        assert!(
            run("client_max_body_size", &["1G"]).is_ok(),
            "an offset takes g"
        );
        assert!(run("proxy_read_timeout", &["1h 30m"]).is_ok());
        assert!(run("proxy_read_timeout", &["500ms"]).is_ok());
        assert!(run("proxy_read_timeout", &["30m1h"]).is_err());
        assert_eq!(
            run("gzip_comp_level", &["10"]).unwrap_err(),
            "value must be between 1 and 9"
        );
        assert!(run("gzip_buffers", &["16", "8k"]).is_ok());
        assert!(run("gzip_buffers", &["0", "8k"]).is_err());
    }

    #[test]
    fn enums_and_bitmasks() {
        assert!(run("proxy_next_upstream", &["error", "TIMEOUT", "http_502"]).is_ok());
        assert_eq!(
            run("proxy_next_upstream", &["error", "nope"]).unwrap_err(),
            "invalid value \"nope\""
        );
        assert!(run("satisfy", &["Any"]).is_ok());
        assert_eq!(
            run("satisfy", &["some"]).unwrap_err(),
            "invalid value \"some\""
        );
    }

    #[test]
    fn time_parser_matches_nginx() {
        assert_eq!(parse_time(b"10", false), Some(10_000));
        assert_eq!(parse_time(b"10", true), Some(10));
        assert_eq!(parse_time(b"1m 1s", true), Some(61));
        assert_eq!(parse_time(b"1y", true), Some(31_536_000));
        assert_eq!(
            parse_time(b"1y", false),
            None,
            "msec values start at months"
        );
        assert_eq!(parse_time(b"5ms", true), None);
        assert_eq!(parse_time(b"", false), None);
        assert_eq!(parse_time(b"s", false), None);
        assert_eq!(parse_time(b"99999999999999999999", true), None);
    }
}

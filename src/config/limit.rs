//! Request-rate and connection limits (nginx's `limit_req` and `limit_conn` modules): the
//! zones, declared once in `[http]` and shared by every worker, and the limits each level
//! applies to the requests it serves.
//!
//! A zone counts per key, a template such as `$binary_remote_addr`; a request whose key is
//! empty is not counted. Limits are inherited as nginx merges them: a level that sets any
//! `requests` (or `connections`) replaces the outer level's list, and each of the other
//! settings is inherited on its own.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::log::LogLevel;
use super::origin::Origin;
use super::units::Size;

/// `limit_req_zone key zone=name:size rate=rate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestZone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    pub name: String,
    pub key: String,
    /// How many keys it can follow: about one per 128 bytes, as nginx's slab allocator
    /// stores a state. When it is full, the least recently used state gives way.
    pub size: Size,
    pub rate: Rate,
}

/// `limit_conn_zone key zone=name:size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionZone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    pub name: String,
    pub key: String,
    /// About one key per 64 bytes; a new key finding it full is refused as over the limit,
    /// as in nginx.
    pub size: Size,
}

/// A rate, written `10r/s` or `30r/m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub requests: u32,
    pub per_minute: bool,
}

impl Rate {
    /// Requests per 1000 seconds, nginx's unit (`ctx->rate`), rounded down as nginx does.
    pub fn per_kilosecond(&self) -> u64 {
        let per_second = u64::from(self.requests) * 1000;
        if self.per_minute {
            per_second / 60
        } else {
            per_second
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.per_minute { "r/m" } else { "r/s" };
        write!(f, "{}{unit}", self.requests)
    }
}

impl FromStr for Rate {
    type Err = String;
    /// nginx's reading: a number, then `r/s` or `r/m` (a bare number is per second).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (number, per_minute) = if let Some(n) = s.strip_suffix("r/s") {
            (n, false)
        } else if let Some(n) = s.strip_suffix("r/m") {
            (n, true)
        } else {
            (s, false)
        };
        match number.parse::<u32>() {
            Ok(requests) if requests > 0 && number.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Rate {
                    requests,
                    per_minute,
                })
            }
            _ => Err(format!("invalid rate \"{s}\"")),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The limits of one level (http, server or location).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `limit_req`: every zone listed must let a request through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Vec<RequestLimit>>,
    /// `limit_req_status`: the answer to a request over the limit (nginx's default 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_status: Option<u16>,
    /// `limit_req_log_level`: refusals are logged at it, delays one level lower (default
    /// `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_log_level: Option<LogLevel>,
    /// `limit_req_dry_run`: count and log, but let every request through at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_dry_run: Option<bool>,
    /// `limit_conn`: requests in progress at once, per key of each zone listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<ConnectionLimit>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_log_level: Option<LogLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_dry_run: Option<bool>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Inner settings win setting by setting; a list is taken whole.
    pub fn merged(&self, outer: &Limits) -> Limits {
        Limits {
            requests: self.requests.clone().or_else(|| outer.requests.clone()),
            request_status: self.request_status.or(outer.request_status),
            request_log_level: self.request_log_level.or(outer.request_log_level),
            request_dry_run: self.request_dry_run.or(outer.request_dry_run),
            connections: self
                .connections
                .clone()
                .or_else(|| outer.connections.clone()),
            connection_status: self.connection_status.or(outer.connection_status),
            connection_log_level: self.connection_log_level.or(outer.connection_log_level),
            connection_dry_run: self.connection_dry_run.or(outer.connection_dry_run),
        }
    }
}

/// `limit_req zone=name [burst=n] [nodelay | delay=n]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLimit {
    pub zone: String,
    /// Requests over the rate a key may have waiting (or, with `nodelay`, let through at
    /// once) before the next is refused.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub burst: u32,
    /// Requests over the rate let through without waiting; the others wait until the rate
    /// allows them. Zero (the default): every request over the rate waits.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay: u32,
    /// No request waits: those within `burst` go through at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nodelay: bool,
}

/// `limit_conn zone number`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimit {
    pub zone: String,
    pub max: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_nginx_reads_them() {
        let r: Rate = "10r/s".parse().unwrap();
        assert_eq!(
            (r.per_kilosecond(), r.to_string().as_str()),
            (10_000, "10r/s")
        );
        let r: Rate = "30r/m".parse().unwrap();
        assert_eq!(r.per_kilosecond(), 500);
        let r: Rate = "1r/m".parse().unwrap();
        assert_eq!(r.per_kilosecond(), 16);
        assert_eq!("7".parse::<Rate>().unwrap().per_kilosecond(), 7000);
        for bad in ["0r/s", "r/s", "-1r/s", "10r/h", "", "1.5r/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }
}

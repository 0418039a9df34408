//! Access and error logs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One `access_log`: a file and the name of its format (`combined` unless named; `json` is
/// built in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// nginx's `if=`: a template; a request (or stream session) whose value is empty or `0`
    /// is not written to this log.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// nginx's `buffer=` (and `gzip`): lines are gathered and written together by a thread of
    /// the file's own, at most 10 ms after they are made, instead of one `write` per line on
    /// the request's thread.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub buffered: bool,
}

/// A named `log_format`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFormat {
    pub name: String,
    /// `default`, `json` or `none`: how variable values are escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escape: Option<String>,
    pub template: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorLog {
    /// A file, or `stderr`.
    pub path: PathBuf,
    #[serde(default)]
    pub level: LogLevel,
}

/// nginx's error log levels, most verbose first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Notice,
    Warn,
    #[default]
    Error,
    Crit,
    Alert,
    Emerg,
}

impl LogLevel {
    pub fn from_nginx(word: &str) -> Option<Self> {
        Some(match word {
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "notice" => LogLevel::Notice,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            "crit" => LogLevel::Crit,
            "alert" => LogLevel::Alert,
            "emerg" => LogLevel::Emerg,
            _ => return None,
        })
    }
}

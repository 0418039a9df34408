//! `access_log` and `log_format`, in http and in stream: each block has its formats (stream's
//! without a predefined one), and a log names one of its own block's.

use super::{Lowering, Result};
use crate::compile::nginx::tree::Statement;
use crate::compile::Impact;
use crate::config::units::{parse_nginx_size, parse_nginx_time, TimeUnit};
use crate::config::{AccessLog, LogFormat};

impl Lowering<'_> {
    /// One `access_log` line, added to the level's `logs` (`off`: an empty list). `buffer=`
    /// (or `gzip`) makes the log a buffered one, its lines written together by a thread of
    /// their own; the size and `flush=` are checked as nginx checks them, and the lines are
    /// written sooner than nginx would write them.
    pub(super) fn access_log(
        &mut self,
        stmt: &Statement,
        logs: &mut Option<Vec<AccessLog>>,
    ) -> Result<()> {
        let path = self.arg(stmt, 0)?;
        if path == "off" {
            if let Some(extra) = stmt.arg(1) {
                return Err(self.error(stmt, format!("invalid parameter \"{extra}\"")));
            }
            *logs = Some(Vec::new());
            self.mapped(stmt);
            return Ok(());
        }
        let format = match stmt.arg(1) {
            Some(name) => Some(self.known_format(stmt, name)?),
            // http has `combined` when none is named; stream has no default.
            None if self.in_stream => return Err(self.error(stmt, "log format is not specified")),
            None => None,
        };
        let (mut buffered, mut flush, mut gzip) = (false, false, false);
        let mut condition = None;
        for param in stmt.values().skip(2) {
            if let Some(size) = param.strip_prefix("buffer=") {
                if parse_nginx_size(size, false).is_none_or(|s| s == 0) {
                    return Err(self.error(stmt, format!("invalid buffer size \"{size}\"")));
                }
                buffered = true;
            } else if let Some(time) = param.strip_prefix("flush=") {
                if parse_nginx_time(time, TimeUnit::Milliseconds).is_none_or(|t| t.is_zero()) {
                    return Err(self.error(stmt, format!("invalid flush time \"{time}\"")));
                }
                flush = true;
            } else if param == "gzip" || param.starts_with("gzip=") {
                if let Some(level) = param.strip_prefix("gzip=") {
                    if !level.parse::<u8>().is_ok_and(|l| (1..=9).contains(&l)) {
                        let message = format!("invalid compression level \"{level}\"");
                        return Err(self.error(stmt, message));
                    }
                }
                (buffered, gzip) = (true, true);
            } else if let Some(text) = param.strip_prefix("if=") {
                match self.template(stmt, text)? {
                    Some(text) => condition = Some(text),
                    // A variable nothing supported defines: reported, and the log left out.
                    None => return Ok(()),
                }
            } else {
                return Err(self.error(stmt, format!("invalid parameter \"{param}\"")));
            }
        }
        if flush && !buffered {
            let message = format!("no buffer is defined for access_log \"{path}\"");
            return Err(self.error(stmt, message));
        }
        if path.starts_with("syslog:") || path.contains('$') {
            return self.partial(
                stmt,
                Impact::NoTrafficChange,
                "syslog and variable log paths are not supported",
            );
        }
        let path = self.path(path);
        logs.get_or_insert_with(Vec::new).push(AccessLog {
            path,
            format,
            condition,
            buffered,
        });
        if gzip {
            return self.partial(
                stmt,
                Impact::NoTrafficChange,
                "gzip: the log is written uncompressed",
            );
        }
        self.mapped(stmt);
        Ok(())
    }

    /// The format an `access_log` names. In stream it must be written before, as nginx looks
    /// it up then (case-insensitively); http's formats are looked up when the config is built.
    fn known_format(&self, stmt: &Statement, name: &str) -> Result<String> {
        if !self.in_stream {
            return Ok(name.to_string());
        }
        let formats = &self.model.stream.log_format;
        match formats.iter().find(|f| f.name.eq_ignore_ascii_case(name)) {
            Some(f) => Ok(f.name.clone()),
            None => Err(self.error(stmt, format!("unknown log format \"{name}\""))),
        }
    }

    /// A `log_format`, of the http block or the stream block.
    pub(super) fn log_format(&mut self, stmt: &Statement) -> Result<LogFormat> {
        let name = self.arg(stmt, 0)?.to_string();
        let mut rest: Vec<&str> = stmt.values().skip(1).collect();
        let mut escape = None;
        if let Some(e) = rest.first().and_then(|w| w.strip_prefix("escape=")) {
            if !matches!(e, "default" | "json" | "none") {
                return Err(self.error(stmt, format!("unknown log format escaping \"{e}\"")));
            }
            escape = Some(e.to_string());
            rest.remove(0);
        }
        if rest.is_empty() {
            return Err(self.error(
                stmt,
                "invalid number of arguments in \"log_format\" directive",
            ));
        }
        let (existing, predefined) = match self.in_stream {
            true => (&self.model.stream.log_format, None),
            false => (&self.model.http.log_format, Some("combined")),
        };
        // Names are unique as written (strcmp); an access_log finds one ignoring case.
        let taken = |n: &str| n == name;
        if existing.iter().any(|f| taken(&f.name)) || predefined.is_some_and(taken) {
            return Err(self.error(stmt, format!("duplicate \"log_format\" name \"{name}\"")));
        }
        let template = rest.concat();
        let template = self.template(stmt, &template)?.unwrap_or_default();
        Ok(LogFormat {
            name,
            escape,
            template,
        })
    }
}

//! The main and events contexts: processes, the pid file, the error log, and the blocks.

use super::{Lowering, Result};
use crate::compile::nginx::tree::Statement;
use crate::compile::Impact;
use crate::config::{ErrorLog, LogLevel};

impl Lowering<'_> {
    pub(super) fn main(&mut self, statements: &[Statement]) -> Result<()> {
        for stmt in statements {
            match stmt.name.as_str() {
                "http" => {
                    self.mapped(stmt);
                    self.http(stmt)?;
                }
                "stream" => {
                    self.mapped(stmt);
                    self.stream(stmt)?;
                }
                "events" => {
                    self.mapped(stmt);
                    self.events(stmt)?;
                }
                "worker_processes" => {
                    let v = self.arg(stmt, 0)?;
                    if v != "auto" {
                        let n = v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                            self.error(
                                stmt,
                                format!("invalid value \"{v}\" in \"worker_processes\""),
                            )
                        })?;
                        self.model.global.worker_threads = Some(n);
                    }
                    self.partial(
                        stmt,
                        Impact::NoTrafficChange,
                        "worker processes become worker threads of one process, each with its own event \
                         loop and upstream keepalive cache",
                    )?;
                }
                "pid" => {
                    let v = self.arg(stmt, 0)?;
                    if v != "off" {
                        self.model.global.pid = Some(self.path(v));
                    }
                    self.mapped(stmt);
                }
                "error_log" => self.error_log(stmt)?,
                "daemon" => {
                    self.model.global.daemon = Some(self.flag(stmt)?);
                    self.mapped(stmt);
                }

                "include" => self.mapped(stmt),
                _ => self.unsupported(stmt)?,
            }
        }
        Ok(())
    }

    fn events(&mut self, stmt: &Statement) -> Result<()> {
        for s in stmt.block.iter().flatten() {
            match s.name.as_str() {
                "worker_connections" => {
                    self.model.global.worker_connections = Some(self.number(s, 0)?);
                    self.mapped(s);
                }
                _ => self.unsupported(s)?,
            }
        }
        Ok(())
    }

    /// `error_log file [level]`: the first one in the main context is the appliance's; others
    /// (and those in http, server and location) are reported.
    fn error_log(&mut self, stmt: &Statement) -> Result<()> {
        let path = self.arg(stmt, 0)?;
        let level = match stmt.arg(1) {
            Some(l) => LogLevel::from_nginx(l)
                .ok_or_else(|| self.error(stmt, format!("invalid log level \"{l}\"")))?,
            None => LogLevel::Error,
        };
        if path.starts_with("syslog:") || path.starts_with("memory:") {
            return self.partial(
                stmt,
                Impact::NoTrafficChange,
                "syslog and memory logs are not supported; the log goes to stderr",
            );
        }
        if self.model.global.error_log.is_some() {
            return self.partial(
                stmt,
                Impact::NoTrafficChange,
                "only the first error_log is kept",
            );
        }
        let path = if path == "stderr" {
            "stderr".into()
        } else {
            self.path(path)
        };
        self.model.global.error_log = Some(ErrorLog { path, level });
        self.mapped(stmt);
        Ok(())
    }
}

//! The main and events contexts: processes, the pid file, the error log, and the blocks.

use super::{Lowering, Result};
use crate::compile::nginx::tree::Statement;
use crate::compile::Impact;
use crate::config::validate::CPU_SETSIZE;
use crate::config::{CpuAffinity, ErrorLog, LogLevel};

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
                "worker_priority" => {
                    self.worker_priority(stmt)?;
                    self.mapped(stmt);
                }
                "worker_cpu_affinity" => {
                    self.worker_cpu_affinity(stmt)?;
                    self.mapped(stmt);
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
                "worker_shutdown_timeout" => {
                    if self.model.global.shutdown_timeout.is_some() {
                        return Err(
                            self.error(stmt, "\"worker_shutdown_timeout\" directive is duplicate")
                        );
                    }
                    self.model.global.shutdown_timeout = Some(self.msec(stmt, 0)?);
                    self.mapped(stmt);
                }

                "include" => self.mapped(stmt),
                _ => self.unsupported(stmt)?,
            }
        }
        Ok(())
    }

    /// `worker_priority [+|-]N`, read as `ngx_set_priority` reads it. Its duplicate check is
    /// nginx's: a second one is refused only after a non-zero first.
    fn worker_priority(&mut self, stmt: &Statement) -> Result<()> {
        if self.model.global.worker_priority.is_some_and(|p| p != 0) {
            return Err(self.error(stmt, "\"worker_priority\" directive is duplicate"));
        }
        let v = self.arg(stmt, 0)?;
        let (negative, digits) = match v.as_bytes().first() {
            Some(b'-') => (true, &v[1..]),
            Some(b'+') => (false, &v[1..]),
            _ => (false, v),
        };
        // ngx_atoi: digits only, up to the largest ngx_int_t.
        let n = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<i64>().ok())
            .flatten()
            .ok_or_else(|| self.error(stmt, "\"worker_priority\" directive invalid number"))?;
        let n = if negative { -n } else { n };
        // The kernel takes nice values from -20 to 19 and clamps the rest to them.
        self.model.global.worker_priority = Some(n.clamp(-20, 19) as i32);
        Ok(())
    }

    /// `worker_cpu_affinity mask...` or `auto [mask]`, read as `ngx_set_cpu_affinity` reads it:
    /// a mask is binary digits with CPU 0 rightmost, spaces skipped.
    fn worker_cpu_affinity(&mut self, stmt: &Statement) -> Result<()> {
        if self.model.global.worker_cpu_affinity.is_some() {
            return Err(self.error(stmt, "\"worker_cpu_affinity\" directive is duplicate"));
        }
        let words: Vec<&str> = stmt.args.iter().map(|w| w.value.as_str()).collect();
        let auto = words.first() == Some(&"auto");
        if auto && words.len() > 2 {
            return Err(self.error(
                stmt,
                "invalid number of arguments in \"worker_cpu_affinity\" directive",
            ));
        }
        let mut masks = words[usize::from(auto)..]
            .iter()
            .map(|mask| self.cpu_mask(stmt, mask))
            .collect::<Result<Vec<_>>>()?;
        self.model.global.worker_cpu_affinity = Some(match (auto, masks.pop()) {
            (true, None) => CpuAffinity::Auto,
            (true, Some(cpus)) => CpuAffinity::AutoFrom(cpus),
            (false, last) => {
                masks.extend(last);
                CpuAffinity::PerWorker(masks)
            }
        });
        Ok(())
    }

    /// The CPUs of one `worker_cpu_affinity` mask, in increasing order.
    fn cpu_mask(&self, stmt: &Statement, mask: &str) -> Result<Vec<usize>> {
        if mask.len() > CPU_SETSIZE {
            return Err(self.error(
                stmt,
                format!("\"worker_cpu_affinity\" supports up to {CPU_SETSIZE} CPUs only"),
            ));
        }
        let mut cpus = Vec::new();
        for (cpu, ch) in mask.chars().rev().filter(|c| *c != ' ').enumerate() {
            match ch {
                '0' => {}
                '1' => cpus.push(cpu),
                other => {
                    return Err(self.error(
                        stmt,
                        format!("invalid character \"{other}\" in \"worker_cpu_affinity\""),
                    ))
                }
            }
        }
        Ok(cpus)
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

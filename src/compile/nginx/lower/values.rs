//! Argument values as nginx's generic handlers read them, with their error messages.

use super::{Lowering, Result};
use crate::compile::nginx::tree::Statement;
use crate::config::units::{parse_nginx_size, parse_nginx_time, TimeUnit};
use crate::config::{Duration, Size};

impl Lowering<'_> {
    /// The argument at `i`, or nginx's argument-count error.
    pub(super) fn arg<'s>(&self, stmt: &'s Statement, i: usize) -> Result<&'s str> {
        stmt.arg(i).ok_or_else(|| {
            self.error(
                stmt,
                format!("invalid number of arguments in \"{}\" directive", stmt.name),
            )
        })
    }

    /// ngx_conf_set_flag_slot: `on` or `off`, case-insensitively.
    pub(super) fn flag(&self, stmt: &Statement) -> Result<bool> {
        let v = self.arg(stmt, 0)?;
        if v.eq_ignore_ascii_case("on") {
            Ok(true)
        } else if v.eq_ignore_ascii_case("off") {
            Ok(false)
        } else {
            Err(self.error(
                stmt,
                format!(
                    "invalid value \"{v}\" in \"{}\" directive, it must be \"on\" or \"off\"",
                    stmt.name
                ),
            ))
        }
    }

    /// ngx_conf_set_msec_slot: a time in milliseconds.
    pub(super) fn msec(&self, stmt: &Statement, i: usize) -> Result<Duration> {
        let v = self.arg(stmt, i)?;
        parse_nginx_time(v, TimeUnit::Milliseconds)
            .map(Duration)
            .ok_or_else(|| self.error(stmt, format!("\"{}\" directive invalid value", stmt.name)))
    }

    /// ngx_conf_set_sec_slot: a time in seconds.
    pub(super) fn sec(&self, stmt: &Statement, i: usize) -> Result<Duration> {
        let v = self.arg(stmt, i)?;
        parse_nginx_time(v, TimeUnit::Seconds)
            .map(Duration)
            .ok_or_else(|| self.error(stmt, format!("\"{}\" directive invalid value", stmt.name)))
    }

    /// ngx_conf_set_off_slot: a size that may use `g`.
    pub(super) fn offset(&self, stmt: &Statement, i: usize) -> Result<Size> {
        let v = self.arg(stmt, i)?;
        parse_nginx_size(v, true)
            .map(Size)
            .ok_or_else(|| self.error(stmt, format!("\"{}\" directive invalid value", stmt.name)))
    }

    /// ngx_conf_set_size_slot: a size with `k` or `m`, not `g`.
    pub(super) fn size(&self, stmt: &Statement, i: usize) -> Result<Size> {
        let v = self.arg(stmt, i)?;
        parse_nginx_size(v, false)
            .map(Size)
            .ok_or_else(|| self.error(stmt, format!("\"{}\" directive invalid value", stmt.name)))
    }

    /// ngx_conf_set_num_slot: a non-negative integer.
    pub(super) fn number(&self, stmt: &Statement, i: usize) -> Result<u32> {
        let v = self.arg(stmt, i)?;
        v.parse::<u32>()
            .ok()
            .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| self.error(stmt, format!("\"{}\" directive invalid number", stmt.name)))
    }
}

//! nginx's limit_req and limit_conn modules: the zones (`limit_req_zone`, `limit_conn_zone`)
//! and each level's limits, read as ngx_http_limit_req_module and ngx_http_limit_conn_module
//! read them, with their messages. Zones are shared memory in nginx: the name checks of
//! ngx_shared_memory_add (one use per name, one size) apply to them and to upstream `zone`s.

use super::{Lowering, Result};
use crate::compile::diag::Diagnostic;
use crate::compile::nginx::tree::Statement;
use crate::config::units::parse_nginx_size;
use crate::config::{
    ConnectionLimit, ConnectionZone, Limits, LogLevel, Rate, RequestLimit, RequestZone, Size,
};

/// What a shared memory zone is for (nginx's zone tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ZoneUse {
    Upstream,
    LimitReq,
    LimitConn,
    StreamLimitConn,
}

/// A shared memory zone named so far: by a declaration with its size, or only by a use
/// (size 0 until declared).
#[derive(Debug)]
pub(super) struct SharedZone {
    name: String,
    usage: ZoneUse,
    size: u64,
}

/// nginx's smallest zone: eight pages of 4 KB.
const MIN_ZONE_SIZE: u64 = 8 * 4096;

impl Lowering<'_> {
    /// `limit_req_zone key zone=name:size rate=rate` or `limit_conn_zone key zone=name:size`
    /// in http.
    pub(super) fn limit_zone(&mut self, stmt: &Statement) -> Result<()> {
        let usage = if stmt.name == "limit_req_zone" {
            ZoneUse::LimitReq
        } else {
            ZoneUse::LimitConn
        };
        self.zone_declaration(stmt, usage)
    }

    /// `limit_conn_zone key zone=name:size` in stream.
    pub(super) fn stream_limit_zone(&mut self, stmt: &Statement) -> Result<()> {
        self.zone_declaration(stmt, ZoneUse::StreamLimitConn)
    }

    /// A stream server's (or the stream block's) `limit_conn`, `limit_conn_log_level` or
    /// `limit_conn_dry_run`.
    pub(super) fn stream_limit_setting(
        &mut self,
        stmt: &Statement,
        limits: &mut Limits,
    ) -> Result<()> {
        if stmt.name == "limit_conn" {
            if let Some(limit) = self.limit_conn(stmt, limits, ZoneUse::StreamLimitConn)? {
                limits.connections.get_or_insert_with(Vec::new).push(limit);
            }
        } else {
            self.limit_setting(stmt, limits)?;
        }
        Ok(())
    }

    /// A zone declaration of either module, in either context (ngx_http_limit_req_zone and
    /// ngx_http_limit_conn_zone read their arguments alike; only limit_req's has `rate=`).
    fn zone_declaration(&mut self, stmt: &Statement, usage: ZoneUse) -> Result<()> {
        let requests = usage == ZoneUse::LimitReq;
        let key = self.arg(stmt, 0)?.to_string();
        let key_usable = self.template(stmt, &key)?.is_some();
        let mut zone: Option<(String, u64)> = None;
        let mut rate = Rate {
            requests: 1,
            per_minute: false,
        };
        for value in stmt.values().skip(1) {
            if let Some(spec) = value.strip_prefix("zone=") {
                let invalid = || self.error(stmt, format!("invalid zone size \"{value}\""));
                let (name, size) = spec.split_once(':').ok_or_else(invalid)?;
                let size = parse_nginx_size(size, false).ok_or_else(invalid)?;
                if size < MIN_ZONE_SIZE {
                    return Err(self.error(stmt, format!("zone \"{value}\" is too small")));
                }
                zone = Some((name.to_string(), size));
            } else if requests && value.starts_with("rate=") {
                rate = value[5..]
                    .parse()
                    .map_err(|_| self.error(stmt, format!("invalid rate \"{value}\"")))?;
            } else {
                return Err(self.error(stmt, format!("invalid parameter \"{value}\"")));
            }
        }
        let Some((name, size)) = zone else {
            return Err(self.error(
                stmt,
                format!("\"{}\" must have \"zone\" parameter", stmt.name),
            ));
        };
        self.shared_zone(stmt, &name, size, usage)?;
        let bound = self
            .zone_keys
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, key)| key.clone());
        if let Some(bound) = bound {
            return Err(self.error(
                stmt,
                format!(
                    "{} \"{name}\" is already bound to key \"{bound}\"",
                    stmt.name
                ),
            ));
        }
        self.zone_keys.push((name.clone(), key.clone()));
        if !key_usable {
            // Reported by `template`; the limits that name it are reported in turn.
            self.unusable_zones.push(name);
            return Ok(());
        }
        let origin = self.origin(stmt);
        let size = Size(size);
        match usage {
            ZoneUse::LimitReq => self.model.http.request_zones.push(RequestZone {
                origin,
                name,
                key,
                size,
                rate,
            }),
            ZoneUse::LimitConn => self.model.http.connection_zones.push(ConnectionZone {
                origin,
                name,
                key,
                size,
            }),
            _ => self.model.stream.connection_zones.push(ConnectionZone {
                origin,
                name,
                key,
                size,
            }),
        }
        self.mapped(stmt);
        Ok(())
    }

    /// An upstream's `zone name [size]`: only its name's checks (the appliance always shares
    /// a pool's state between its threads).
    pub(super) fn upstream_zone(&mut self, stmt: &Statement) -> Result<()> {
        let name = self.arg(stmt, 0)?.to_string();
        let size = stmt
            .arg(1)
            .and_then(|s| parse_nginx_size(s, false))
            .unwrap_or(0);
        self.shared_zone(stmt, &name, size, ZoneUse::Upstream)
    }

    /// The limit settings of a level: `limit_req`, `limit_conn` and their `_status`,
    /// `_log_level` and `_dry_run`. False for any other directive.
    pub(super) fn limit_setting(&mut self, stmt: &Statement, limits: &mut Limits) -> Result<bool> {
        match stmt.name.as_str() {
            "limit_req" => {
                if let Some(limit) = self.limit_req(stmt, limits)? {
                    limits.requests.get_or_insert_with(Vec::new).push(limit);
                }
            }
            "limit_conn" => {
                if let Some(limit) = self.limit_conn(stmt, limits, ZoneUse::LimitConn)? {
                    limits.connections.get_or_insert_with(Vec::new).push(limit);
                }
            }
            "limit_req_status" => limits.request_status = Some(self.status(stmt)?),
            "limit_conn_status" => limits.connection_status = Some(self.status(stmt)?),
            "limit_req_log_level" => limits.request_log_level = Some(self.log_level(stmt)?),
            "limit_conn_log_level" => limits.connection_log_level = Some(self.log_level(stmt)?),
            "limit_req_dry_run" => limits.request_dry_run = Some(self.flag(stmt)?),
            "limit_conn_dry_run" => limits.connection_dry_run = Some(self.flag(stmt)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `limit_req zone=name [burst=n] [nodelay | delay=n]`. `None` (reported) when the zone's
    /// key cannot be computed.
    fn limit_req(&mut self, stmt: &Statement, limits: &Limits) -> Result<Option<RequestLimit>> {
        let mut limit = RequestLimit {
            zone: String::new(),
            burst: 0,
            delay: 0,
            nodelay: false,
        };
        let mut zone = None;
        for value in stmt.values() {
            let positive = |text: &str, what: &str| {
                text.parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0 && text.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| self.error(stmt, format!("invalid {what} value \"{value}\"")))
            };
            if let Some(name) = value.strip_prefix("zone=") {
                self.shared_zone(stmt, name, 0, ZoneUse::LimitReq)?;
                zone = Some(name.to_string());
            } else if let Some(n) = value.strip_prefix("burst=") {
                limit.burst = positive(n, "burst")?;
            } else if let Some(n) = value.strip_prefix("delay=") {
                limit.delay = positive(n, "delay")?;
                limit.nodelay = false;
            } else if value == "nodelay" {
                limit.nodelay = true;
                limit.delay = 0;
            } else {
                return Err(self.error(stmt, format!("invalid parameter \"{value}\"")));
            }
        }
        let Some(zone) = zone else {
            return Err(self.error(stmt, "\"limit_req\" must have \"zone\" parameter"));
        };
        let listed = limits.requests.iter().flatten().any(|l| l.zone == zone);
        if listed {
            return Err(self.error(stmt, "\"limit_req\" directive is duplicate"));
        }
        if self.zone_unusable(stmt, &zone)? {
            return Ok(None);
        }
        limit.zone = zone;
        Ok(Some(limit))
    }

    /// `limit_conn zone number`.
    fn limit_conn(
        &mut self,
        stmt: &Statement,
        limits: &Limits,
        usage: ZoneUse,
    ) -> Result<Option<ConnectionLimit>> {
        let zone = self.arg(stmt, 0)?.to_string();
        self.shared_zone(stmt, &zone, 0, usage)?;
        if limits.connections.iter().flatten().any(|l| l.zone == zone) {
            return Err(self.error(stmt, "\"limit_conn\" directive is duplicate"));
        }
        let text = self.arg(stmt, 1)?;
        let max = match text.parse::<i64>() {
            Ok(n) if n > 0 && text.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(self.error(stmt, format!("invalid number of connections \"{text}\""))),
        };
        if max > 65535 {
            return Err(self.error(stmt, "connection limit must be less 65536"));
        }
        if self.zone_unusable(stmt, &zone)? {
            return Ok(None);
        }
        Ok(Some(ConnectionLimit {
            zone,
            max: max as u32,
        }))
    }

    /// A limit on a zone whose key uses a variable the appliance cannot compute is reported
    /// and left out, as the zone was.
    fn zone_unusable(&mut self, stmt: &Statement, zone: &str) -> Result<bool> {
        if !self.unusable_zones.iter().any(|n| n == zone) {
            return Ok(false);
        }
        self.partial(
            stmt,
            crate::compile::Impact::ChangesTraffic,
            format!(
                "zone \"{zone}\" is keyed by a variable the appliance cannot compute; left out"
            ),
        )?;
        Ok(true)
    }

    /// `limit_req_status` and `limit_conn_status` (the parser has checked 400-599).
    fn status(&self, stmt: &Statement) -> Result<u16> {
        let n = self.number(stmt, 0)?;
        u16::try_from(n).map_err(|_| self.error(stmt, "value must be between 400 and 599"))
    }

    /// `info`, `notice`, `warn` or `error` (the parser has checked the word).
    fn log_level(&self, stmt: &Statement) -> Result<LogLevel> {
        let word = self.arg(stmt, 0)?;
        LogLevel::from_nginx(word)
            .ok_or_else(|| self.error(stmt, format!("invalid value \"{word}\"")))
    }

    /// ngx_shared_memory_add: a name has one use and, once declared, one size.
    fn shared_zone(
        &mut self,
        stmt: &Statement,
        name: &str,
        size: u64,
        usage: ZoneUse,
    ) -> Result<()> {
        let Some(zone) = self.shared_zones.iter_mut().find(|z| z.name == name) else {
            self.shared_zones.push(SharedZone {
                name: name.to_string(),
                usage,
                size,
            });
            return Ok(());
        };
        if zone.usage != usage {
            return Err(self.error(
                stmt,
                format!(
                    "the shared memory zone \"{name}\" is already declared for a different use"
                ),
            ));
        }
        if zone.size == 0 {
            zone.size = size;
        }
        if size != 0 && size != zone.size {
            let declared = zone.size;
            return Err(self.error(
                stmt,
                format!(
                    "the size {size} of shared memory zone \"{name}\" conflicts with already declared size {declared}"
                ),
            ));
        }
        Ok(())
    }

    /// nginx's check once the whole config is read (ngx_init_cycle): every zone named has a
    /// size, so was declared.
    pub(super) fn check_shared_zones(&self) -> Result<()> {
        match self.shared_zones.iter().find(|z| z.size == 0) {
            Some(zone) => Err(Diagnostic::error(format!(
                "zero size shared memory zone \"{}\"",
                zone.name
            ))),
            None => Ok(()),
        }
    }
}

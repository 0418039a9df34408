//! `upstream` blocks, in http and in stream: servers and their parameters, the balancing
//! method, keep-alive, and nginx Plus's `sticky cookie`.

use super::url;
use super::{Lowering, Result};
use crate::compile::nginx::tree::Statement;
use crate::compile::Impact;
use crate::config::units::{parse_nginx_time, TimeUnit};
use crate::config::{Balance, Duration, Sticky, Upstream, UpstreamServer};

impl Lowering<'_> {
    pub(super) fn upstream(&mut self, block: &Statement, stream: bool) -> Result<Upstream> {
        let name = self.arg(block, 0)?.to_string();
        let existing = if stream {
            &self.model.stream.upstreams
        } else {
            &self.model.http.upstreams
        };
        if existing.iter().any(|u| u.name == name) {
            return Err(self.error(block, format!("duplicate upstream \"{name}\"")));
        }
        self.mapped(block);
        let mut pool = Upstream {
            name,
            origin: self.origin(block),
            balance: Balance::RoundRobin,
            servers: Vec::new(),
            keepalive: None,
            keepalive_timeout: None,
            keepalive_requests: None,
            health_check: None,
            sticky: None,
            drain_timeout: None,
        };
        // What the balancing method chosen so far lets a server line use (nginx's
        // uscf->flags): every method but least_conn and round robin refuses `backup`.
        let mut allows_backup = true;
        let mut method_set = false;
        for stmt in block.block.iter().flatten() {
            match stmt.name.as_str() {
                "server" => {
                    let server = self.upstream_server(stmt, allows_backup)?;
                    pool.servers.push(server);
                }
                "least_conn" | "ip_hash" | "hash" | "random" => {
                    if method_set {
                        self.partial(
                            stmt,
                            Impact::ChangesTraffic,
                            "load balancing method redefined; the last one applies",
                        )?;
                    }
                    method_set = true;
                    pool.balance = self.balance(stmt)?;
                    allows_backup = matches!(pool.balance, Balance::LeastConn);
                    self.mapped(stmt);
                }
                "keepalive" => {
                    let v = self.arg(stmt, 0)?;
                    let n = v.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        self.error(
                            stmt,
                            format!("invalid value \"{v}\" in \"keepalive\" directive"),
                        )
                    })?;
                    pool.keepalive = Some(n);
                    self.mapped(stmt);
                }
                "keepalive_timeout" => {
                    pool.keepalive_timeout = Some(self.msec(stmt, 0)?);
                    self.mapped(stmt);
                }
                "keepalive_requests" => {
                    pool.keepalive_requests = Some(self.number(stmt, 0)?);
                    self.mapped(stmt);
                }
                "zone" => {
                    self.upstream_zone(stmt)?;
                    // The appliance always shares a pool's state between its threads, which is
                    // what a zone does between nginx workers.
                    self.mapped(stmt);
                }
                "sticky" => {
                    pool.sticky = Some(self.sticky(stmt)?);
                    self.mapped(stmt);
                }
                _ => self.unsupported(stmt)?,
            }
        }
        if pool.servers.is_empty() {
            return Err(self
                .error(block, "no servers are inside upstream")
                .at(block.nginx_block_end_origin()));
        }
        if !allows_backup && pool.servers.iter().any(|s| s.backup) {
            // nginx checks `backup` against the method known when the server line is read; a
            // method set after it silently ignores backups. The appliance rejects the mix.
            return Err(self.error(
                block,
                format!(
                    "balancing method \"{}\" does not support the \"backup\" parameter",
                    pool.balance
                ),
            ));
        }
        Ok(pool)
    }

    /// `server address [weight=N] [max_fails=N] [fail_timeout=T] [max_conns=N] [backup] [down]`.
    fn upstream_server(&mut self, stmt: &Statement, allows_backup: bool) -> Result<UpstreamServer> {
        let address = self.arg(stmt, 0)?;
        let mut server = UpstreamServer::new(address);
        server.origin = self.origin(stmt);
        for param in stmt.values().skip(1) {
            let invalid = || self.error(stmt, format!("invalid parameter \"{param}\""));
            if let Some(v) = param.strip_prefix("weight=") {
                server.weight = atoi(v).filter(|w| *w > 0).ok_or_else(invalid)?;
            } else if let Some(v) = param.strip_prefix("max_conns=") {
                server.max_conns = atoi(v).ok_or_else(invalid)?;
            } else if let Some(v) = param.strip_prefix("max_fails=") {
                server.max_fails = atoi(v).ok_or_else(invalid)?;
            } else if let Some(v) = param.strip_prefix("fail_timeout=") {
                server.fail_timeout = parse_nginx_time(v, TimeUnit::Seconds)
                    .map(Duration)
                    .ok_or_else(invalid)?;
            } else if param == "backup" {
                if !allows_backup {
                    return Err(self.error(
                        stmt,
                        format!("balancing method does not support parameter \"{param}\""),
                    ));
                }
                server.backup = true;
            } else if param == "down" {
                server.down = true;
            } else {
                return Err(invalid());
            }
        }
        let parsed = url::parse(address, false, 80)
            .map_err(|e| self.error(stmt, format!("{e} in upstream \"{address}\"")))?;
        if let url::Url::Inet {
            host,
            port,
            no_port,
        } = &parsed
        {
            // Keep the address as written (consistent hashing hashes it), but a bare IPv6
            // literal needs its brackets to carry a port.
            if *no_port && host.contains(':') {
                server.address = format!("[{host}]:{port}");
            }
        }
        self.mapped(stmt);
        Ok(server)
    }

    fn balance(&mut self, stmt: &Statement) -> Result<Balance> {
        Ok(match stmt.name.as_str() {
            "least_conn" => Balance::LeastConn,
            "ip_hash" => Balance::IpHash,
            "hash" => {
                let key = self.arg(stmt, 0)?.to_string();
                let consistent = match stmt.arg(1) {
                    None => false,
                    Some("consistent") => true,
                    Some(p) => return Err(self.error(stmt, format!("invalid parameter \"{p}\""))),
                };
                if self.template(stmt, &key)?.is_none() {
                    // A key from an unsupported `map`: nginx would hash it; without it every
                    // request has the same key.
                    return Ok(Balance::RoundRobin);
                }
                Balance::Hash { key, consistent }
            }
            _ => match (stmt.arg(0), stmt.arg(1)) {
                (None, _) => Balance::Random { two: false },
                (Some("two"), None | Some("least_conn")) => Balance::Random { two: true },
                (Some("two"), Some(p)) | (Some(p), _) => {
                    return Err(self.error(stmt, format!("invalid parameter \"{p}\"")))
                }
            },
        })
    }

    /// nginx Plus's `sticky cookie name [expires=time] [domain=d] [path=p] [httponly] [secure]`.
    /// Other forms (`route`, `learn`) are reported.
    fn sticky(&mut self, stmt: &Statement) -> Result<Sticky> {
        match self.arg(stmt, 0)? {
            "cookie" => {}
            "learn" => {
                // `sticky learn create=$upstream_cookie_x lookup=$cookie_x`: follow the app's
                // cookie, which is ELB's app-cookie stickiness.
                let cookie = stmt
                    .values()
                    .find_map(|p| p.strip_prefix("lookup=$cookie_"))
                    .ok_or_else(|| self.error(stmt, "sticky learn needs lookup=$cookie_<name>"))?;
                return Ok(Sticky::AppCookie {
                    cookie: cookie.to_string(),
                    origin: self.origin(stmt),
                });
            }
            other => return Err(self.error(stmt, format!("invalid sticky method \"{other}\""))),
        }
        let cookie = self.arg(stmt, 1)?.to_string();
        let (mut expires, mut domain, mut path) = (None, None, None);
        for param in stmt.values().skip(2) {
            if let Some(v) = param.strip_prefix("expires=") {
                expires = if v == "max" {
                    Some(Duration::from_secs(604_800))
                } else {
                    Some(
                        parse_nginx_time(v, TimeUnit::Seconds)
                            .map(Duration)
                            .ok_or_else(|| self.error(stmt, format!("invalid expires \"{v}\"")))?,
                    )
                };
            } else if let Some(v) = param.strip_prefix("domain=") {
                domain = Some(v.to_string());
            } else if let Some(v) = param.strip_prefix("path=") {
                path = Some(v.to_string());
            } else if param == "httponly" || param == "secure" {
                // The appliance always sets HttpOnly, and Secure on TLS listeners.
            } else {
                return Err(self.error(stmt, format!("invalid parameter \"{param}\"")));
            }
        }
        Ok(Sticky::LbCookie {
            cookie,
            expires,
            domain,
            path,
            origin: self.origin(stmt),
        })
    }
}

/// ngx_atoi: digits only, no sign.
fn atoi(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

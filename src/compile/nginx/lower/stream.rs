//! The stream context: TCP upstreams and servers. Settings written at stream level are the
//! defaults of every server, as nginx merges them.

use std::collections::HashSet;

use super::url::{self, Url};
use super::{Lowering, Result};
use crate::compile::nginx::tree::Statement;
use crate::compile::Impact;
use crate::config::{AccessRule, Limits, Listen, ListenAddress, ProxyProtocol, StreamServer, Tls};

/// What a stream server does with a connection.
enum Handler {
    Pass(String),
    Return(String),
}

/// Settings a stream server inherits from the stream block.
#[derive(Clone, Default)]
struct StreamSettings {
    connect_timeout: Option<crate::config::Duration>,
    timeout: Option<crate::config::Duration>,
    next_upstream: Option<bool>,
    next_upstream_tries: Option<u32>,
    next_upstream_timeout: Option<crate::config::Duration>,
    proxy_protocol: Option<bool>,
    upstream_tls: Option<bool>,
    upstream_tls_check: crate::config::UpstreamTlsCheck,
    /// `allow` and `deny`: a server with rules of its own does not inherit the stream's.
    access: Option<Vec<AccessRule>>,
    /// `limit_conn` and its log level and dry run, merged as in http.
    limits: Limits,
    /// `resolver` and `resolver_timeout`, for `proxy_pass $name` to a host name.
    resolver: crate::config::Resolver,
    ssl_preread: Option<bool>,
    preread_timeout: Option<crate::config::Duration>,
    preread_buffer_size: Option<crate::config::Size>,
    /// `access_log`: a server with lines of its own (`off` among them) does not inherit.
    access_log: Option<Vec<crate::config::AccessLog>>,
    /// `set_real_ip_from`: a server with addresses of its own does not inherit.
    real_ip_from: Option<Vec<String>>,
    proxy_protocol_timeout: Option<crate::config::Duration>,
    handshake_timeout: Option<crate::config::Duration>,
    half_close: Option<bool>,
    responses: Option<u32>,
    requests: Option<u32>,
}

impl Lowering<'_> {
    pub(super) fn stream(&mut self, block: &Statement) -> Result<()> {
        self.in_stream = true;
        let lowered = self.stream_block(block);
        self.in_stream = false;
        lowered
    }

    fn stream_block(&mut self, block: &Statement) -> Result<()> {
        let statements = block.block.as_deref().unwrap_or_default();
        // nginx resolves variables once the whole file is read: a server may use a map
        // written after it.
        self.stream_vars = statements
            .iter()
            .filter_map(|s| match s.name.as_str() {
                "map" => s.arg(1),
                "geo" => s.args.last().map(|w| w.value.as_str()),
                "split_clients" => s.arg(1),
                _ => None,
            })
            .filter_map(|v| v.strip_prefix('$'))
            .map(str::to_string)
            .collect();
        let mut defaults = StreamSettings::default();
        let mut tls = super::http::TlsLevel::default();
        let mut servers = Vec::new();
        for stmt in statements {
            match stmt.name.as_str() {
                "upstream" => {
                    let pool = self.upstream(stmt, true)?;
                    self.model.stream.upstreams.push(pool);
                }
                "map" => {
                    if let Some(map) = self.map_block(stmt)? {
                        self.model.stream.maps.push(map);
                        self.mapped(stmt);
                    }
                }
                "geo" => {
                    if let Some(geo) = self.geo_block(stmt)? {
                        self.model.stream.geo.push(geo);
                        self.mapped(stmt);
                    }
                }
                "split_clients" => {
                    if let Some(split) = self.split_clients_block(stmt)? {
                        self.model.stream.split_clients.push(split);
                        self.mapped(stmt);
                    }
                }
                "server" => {
                    self.mapped(stmt);
                    servers.push(stmt);
                }
                "limit_conn_zone" => self.stream_limit_zone(stmt)?,
                "log_format" => {
                    let format = self.log_format(stmt)?;
                    self.model.stream.log_format.push(format);
                    self.mapped(stmt);
                }
                _ => {
                    if !self.stream_setting(stmt, &mut defaults, Some(&mut tls))? {
                        self.unsupported(stmt)?;
                    }
                }
            }
        }
        let stream_tls = self.pair_certificates(tls)?;
        // Every socket the stream's servers listen on (a UDP and a TCP one may share a port).
        let mut sockets = HashSet::new();
        for stmt in servers {
            let server = self.stream_server(stmt, &defaults, &stream_tls, &mut sockets)?;
            if let Some(server) = server {
                self.model.stream.servers.push(server);
            }
        }
        Ok(())
    }

    fn stream_server(
        &mut self,
        block: &Statement,
        defaults: &StreamSettings,
        stream_tls: &Tls,
        sockets: &mut HashSet<(ListenAddress, bool)>,
    ) -> Result<Option<StreamServer>> {
        let mut settings = StreamSettings {
            access: None,
            access_log: None,
            real_ip_from: None,
            upstream_tls_check: Default::default(),
            limits: Limits::default(),
            resolver: Default::default(),
            ..defaults.clone()
        };
        let mut tls = super::http::TlsLevel::default();
        let mut listen = Vec::new();
        // proxy_pass and return each set the server's handler: the last one written is it.
        let mut handler = None;
        let (mut seen_pass, mut seen_return) = (false, false);
        let mut unusable = false;
        for stmt in block.block.iter().flatten() {
            match stmt.name.as_str() {
                "listen" => {
                    for l in self.stream_listen(stmt)? {
                        if !sockets.insert((l.address.clone(), l.udp)) {
                            let message =
                                format!("duplicate \"{}\" address and port pair", l.address);
                            return Err(self.error(stmt, message));
                        }
                        listen.push(l);
                    }
                }
                "proxy_pass" => {
                    if std::mem::replace(&mut seen_pass, true) {
                        return Err(self.error(stmt, "\"proxy_pass\" directive is duplicate"));
                    }
                    let target = self.arg(stmt, 0)?.to_string();
                    if target.contains('$') {
                        // Evaluated per connection. One that cannot be (an unknown variable,
                        // or one only an unsupported directive defines) leaves the server out,
                        // with the error or the report line `template` has made.
                        if self.template(stmt, &target)?.is_none() {
                            unusable = true;
                            continue;
                        }
                    } else if let Err(e) = url::parse(&target, false, 0) {
                        return Err(self.error(stmt, format!("{e} in \"{target}\"")));
                    }
                    handler = Some(Handler::Pass(target));
                    self.mapped(stmt);
                }
                "return" => {
                    if std::mem::replace(&mut seen_return, true) {
                        return Err(self.error(stmt, "\"return\" directive is duplicate"));
                    }
                    let text = self.arg(stmt, 0)?.to_string();
                    if self.template(stmt, &text)?.is_none() {
                        unusable = true;
                        continue;
                    }
                    handler = Some(Handler::Return(text));
                    self.mapped(stmt);
                }
                _ => {
                    if !self.stream_setting(stmt, &mut settings, Some(&mut tls))? {
                        self.unsupported(stmt)?;
                    }
                }
            }
        }
        if unusable {
            return Ok(None);
        }
        let Some(handler) = handler else {
            // nginx needs a content handler: proxy_pass, return or js; without one it rejects
            // the server at startup.
            return Err(self.error(block, "no handler for server"));
        };
        if listen.is_empty() {
            return Err(self.error(block, "no \"listen\" is defined for server"));
        }
        let server_tls = self.pair_certificates(tls)?.inherit(stream_tls);
        Ok(Some(StreamServer {
            origin: self.origin(block),
            listen,
            pass: match &handler {
                Handler::Pass(target) => Some(target.clone()),
                Handler::Return(_) => None,
            },
            respond: match handler {
                Handler::Return(text) => Some(text),
                Handler::Pass(_) => None,
            },
            resolver: settings.resolver.merged(&defaults.resolver),
            ssl_preread: settings.ssl_preread.unwrap_or(false),
            preread_timeout: settings.preread_timeout,
            preread_buffer_size: settings.preread_buffer_size,
            tls: server_tls,
            connect_timeout: settings.connect_timeout,
            timeout: settings.timeout,
            next_upstream: settings.next_upstream,
            next_upstream_tries: settings.next_upstream_tries,
            next_upstream_timeout: settings.next_upstream_timeout,
            proxy_protocol: settings
                .proxy_protocol
                .filter(|on| *on)
                .map(|_| ProxyProtocol::V1),
            upstream_tls: settings.upstream_tls.unwrap_or(false),
            upstream_tls_check: settings
                .upstream_tls_check
                .merged(&defaults.upstream_tls_check),
            access: settings.access.or_else(|| defaults.access.clone()),
            limits: settings.limits.merged(&defaults.limits),
            access_log: settings.access_log.or_else(|| defaults.access_log.clone()),
            real_ip_from: settings
                .real_ip_from
                .or_else(|| defaults.real_ip_from.clone()),
            proxy_protocol_timeout: settings.proxy_protocol_timeout,
            handshake_timeout: settings.handshake_timeout,
            half_close: settings.half_close.unwrap_or(false),
            responses: settings.responses,
            requests: settings.requests,
        }))
    }

    /// A stream `listen`: `udp`, `ssl` and `proxy_protocol` kept, with nginx's checks of what
    /// goes with `udp`.
    fn stream_listen(&mut self, stmt: &Statement) -> Result<Vec<Listen>> {
        let text = self.arg(stmt, 0)?;
        let parsed = url::parse(text, true, 0).map_err(|e| {
            self.error(
                stmt,
                format!("{e} in \"{text}\" of the \"listen\" directive"),
            )
        })?;
        if let Url::Inet { no_port: true, .. } = parsed {
            return Err(self.error(
                stmt,
                format!("no port in \"{text}\" of the \"listen\" directive"),
            ));
        }
        let mut template = Listen::new(ListenAddress::Unix(Default::default()));
        // Parameters that matter only for what goes with `udp`.
        #[derive(Default)]
        struct Given {
            backlog: bool,
            so_keepalive: bool,
            fastopen: bool,
        }
        let mut given = Given::default();
        for param in stmt.values().skip(1) {
            match param {
                "ssl" => template.ssl = true,
                "proxy_protocol" => template.proxy_protocol = true,
                "reuseport" => template.reuseport = true,
                "bind" => {}
                "udp" => template.udp = true,
                p if p.starts_with("backlog=") => {
                    template.backlog = p["backlog=".len()..].parse().ok();
                    given.backlog = true;
                }
                p if p.starts_with("so_keepalive=") => given.so_keepalive = true,
                p if p.starts_with("fastopen=") => given.fastopen = true,
                p if p.starts_with("ipv6only=")
                    || p.starts_with("rcvbuf=")
                    || p.starts_with("sndbuf=") => {}
                p => return Err(self.error(stmt, format!("invalid parameter \"{p}\""))),
            }
        }
        // ngx_stream_core_listen's checks, in its order.
        if template.udp {
            let clash = [
                ("backlog", given.backlog),
                ("ssl", template.ssl),
                ("so_keepalive", given.so_keepalive),
                ("proxy_protocol", template.proxy_protocol),
                ("fastopen", given.fastopen),
            ]
            .into_iter()
            .find_map(|(name, set)| set.then_some(name));
            if let Some(name) = clash {
                let message = format!(
                    "\"listen\" directive \"{name}\" parameter is incompatible with \"udp\""
                );
                return Err(self.error(stmt, message));
            }
            if let Url::Unix(_) = parsed {
                self.partial(
                    stmt,
                    Impact::ChangesTraffic,
                    "UDP on a Unix socket is not proxied; this listen is left out",
                )?;
                return Ok(Vec::new());
            }
        }
        self.mapped(stmt);
        let addrs = match &parsed {
            Url::Unix(path) => vec![ListenAddress::Unix(path.into())],
            Url::Inet { .. } => url::listen_addrs(&parsed)
                .map_err(|e| {
                    self.error(
                        stmt,
                        format!("{e} in \"{text}\" of the \"listen\" directive"),
                    )
                })?
                .into_iter()
                .map(ListenAddress::Tcp)
                .collect(),
        };
        Ok(addrs
            .into_iter()
            .map(|address| Listen {
                address,
                ..template.clone()
            })
            .collect())
    }

    fn stream_setting(
        &mut self,
        stmt: &Statement,
        s: &mut StreamSettings,
        tls: Option<&mut super::http::TlsLevel>,
    ) -> Result<bool> {
        match stmt.name.as_str() {
            "proxy_connect_timeout" => s.connect_timeout = Some(self.msec(stmt, 0)?),
            "proxy_timeout" => s.timeout = Some(self.msec(stmt, 0)?),
            "proxy_next_upstream" => s.next_upstream = Some(self.flag(stmt)?),
            "proxy_next_upstream_tries" => s.next_upstream_tries = Some(self.number(stmt, 0)?),
            "proxy_next_upstream_timeout" => s.next_upstream_timeout = Some(self.msec(stmt, 0)?),
            "proxy_protocol" => s.proxy_protocol = Some(self.flag(stmt)?),
            "proxy_ssl" => s.upstream_tls = Some(self.flag(stmt)?),
            "proxy_ssl_verify" => s.upstream_tls_check.verify = Some(self.flag(stmt)?),
            "proxy_ssl_verify_depth" => {
                s.upstream_tls_check.verify_depth = Some(self.number(stmt, 0)?)
            }
            "proxy_ssl_server_name" => s.upstream_tls_check.server_name = Some(self.flag(stmt)?),
            "proxy_ssl_trusted_certificate" => {
                s.upstream_tls_check.trusted_certificate = Some(self.path(self.arg(stmt, 0)?))
            }
            "proxy_ssl_name" => {
                let name = self.arg(stmt, 0)?.to_string();
                // A name with a variable nothing supported defines: reported, left out.
                let Some(name) = self.template(stmt, &name)? else {
                    return Ok(true);
                };
                s.upstream_tls_check.name = Some(name);
            }
            "resolver" => self.resolver_line(stmt, &mut s.resolver)?,
            "resolver_timeout" => s.resolver.timeout = Some(self.msec(stmt, 0)?),
            "ssl_preread" => s.ssl_preread = Some(self.flag(stmt)?),
            "proxy_half_close" => s.half_close = Some(self.flag(stmt)?),
            "proxy_responses" => s.responses = Some(self.number(stmt, 0)?),
            "proxy_requests" => s.requests = Some(self.number(stmt, 0)?),
            "proxy_protocol_timeout" => s.proxy_protocol_timeout = Some(self.msec(stmt, 0)?),
            "ssl_handshake_timeout" => s.handshake_timeout = Some(self.msec(stmt, 0)?),
            "set_real_ip_from" => {
                let addresses = self.real_ip_from(stmt)?;
                s.real_ip_from
                    .get_or_insert_with(Vec::new)
                    .extend(addresses);
            }
            "preread_timeout" => s.preread_timeout = Some(self.msec(stmt, 0)?),
            "preread_buffer_size" => s.preread_buffer_size = Some(self.size(stmt, 0)?),
            "allow" | "deny" => {
                let rule = self.access_rule(stmt)?;
                s.access.get_or_insert_with(Vec::new).push(rule);
            }
            // Maps itself (or reports what it leaves out).
            "access_log" => {
                self.access_log(stmt, &mut s.access_log)?;
                return Ok(true);
            }
            "limit_conn" | "limit_conn_log_level" | "limit_conn_dry_run" => {
                self.stream_limit_setting(stmt, &mut s.limits)?;
            }
            "ssl_certificate"
            | "ssl_certificate_key"
            | "ssl_protocols"
            | "ssl_ciphers"
            | "ssl_prefer_server_ciphers"
            | "ssl_session_timeout"
            | "ssl_verify_client"
            | "ssl_client_certificate"
            | "ssl_trusted_certificate"
            | "ssl_verify_depth"
            | "ssl_crl" => match tls {
                Some(level) => self.tls_setting(stmt, level)?,
                None => return Ok(false),
            },
            _ => return Ok(false),
        }
        self.mapped(stmt);
        Ok(true)
    }
}

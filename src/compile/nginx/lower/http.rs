//! The http context: upstreams, servers, locations, and the settings they inherit.

use indexmap::IndexMap;

use super::rewrite;
use super::url::{self, Url};
use super::{Lowering, Result};
use crate::compile::nginx::tree::Statement;
use crate::compile::Impact;
use crate::config::autoindex::Autoindex;
use crate::config::charset::{self, Charset, CharsetMap};
use crate::config::conditional::Conditional;
use crate::config::expires;
use crate::config::gzip::{self, Gzip};
use crate::config::referers::Rules;
use crate::config::resolver::{self as dns, Resolver};
use crate::config::sub_filter::{self, SubFilter};
use crate::config::units::{parse_nginx_time, Duration, TimeUnit};
use crate::config::{
    AccessLog, AccessRule, AccessScope, AddHeader, Auth, Certificate, Client, ErrorPage,
    HttpVersion, Limits, Listen, ListenAddress, Location, LocationKind, MapEntry, MapKey, MapVar,
    NextUpstream, PageStatus, Proxy, ProxyPass, ProxyRedirect, RealIp, Return, Satisfy, SecureLink,
    Tls, TlsVersion, VerifyClient, VirtualServer,
};

/// ngx_http_charset_merge_loc_conf's check at every level once the http block is read: a
/// `source_charset` other than the `charset` it meets needs a `charset_map` between them
/// (nginx names no line for it).
fn charset_maps(http: &crate::config::Http) -> Result<()> {
    let maps = &http.charset_map;
    let check = |charset: &Charset| -> Result<()> {
        match charset.problem(maps) {
            Some(problem) => Err(crate::compile::diag::Diagnostic::error(problem)),
            None => Ok(()),
        }
    };
    fn locations(
        list: &[Location],
        outer: &Charset,
        check: &dyn Fn(&Charset) -> Result<()>,
    ) -> Result<()> {
        for loc in list {
            let merged = loc.charset.merged(outer);
            check(&merged)?;
            for step in &loc.script {
                if let crate::config::Step::If(block) = step {
                    check(&block.charset.merged(&merged))?;
                }
            }
            locations(&loc.locations, &merged, check)?;
        }
        Ok(())
    }
    check(&http.charset)?;
    for vs in &http.servers {
        let merged = vs.charset.merged(&http.charset);
        check(&merged)?;
        locations(&vs.locations, &merged, &check)?;
    }
    Ok(())
}

/// A number as ngx_atoi reads one: digits only, no sign.
fn digits(text: &str) -> std::result::Result<u16, ()> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    text.parse().map_err(|_| ())
}

/// nginx's message (PCRE2's) for the mistakes in a regex that both PCRE2 and the appliance's
/// engine refuse the same way: parentheses that do not pair up.
fn pcre_message(pattern: &str) -> Option<String> {
    use regex_syntax::ast::{parse::Parser, ErrorKind};
    let error = Parser::new().parse(pattern).err()?;
    let (message, at) = match error.kind() {
        // PCRE2 finds the missing `)` at the end of the pattern.
        ErrorKind::GroupUnclosed => ("missing closing parenthesis", pattern.len()),
        ErrorKind::GroupUnopened => ("unmatched closing parenthesis", error.span().start.offset),
        _ => return None,
    };
    let mut text = format!("pcre2_compile() failed: {message} in \"{pattern}\"");
    if at < pattern.len() {
        text.push_str(&format!(" at \"{}\"", &pattern[at..]));
    }
    Some(text)
}

/// The settings one level (http, server or location) may set.
pub(super) struct Level<'a> {
    pub proxy: &'a mut Proxy,
    pub client: &'a mut Client,
    pub add_header: &'a mut Option<Vec<AddHeader>>,
    pub access: &'a mut Option<Vec<AccessRule>>,
    pub real_ip: &'a mut RealIp,
    pub limits: &'a mut Limits,
    pub auth: &'a mut Auth,
    pub secure_link: &'a mut SecureLink,
    pub sub_filter: &'a mut SubFilter,
    pub expires: &'a mut Option<String>,
    pub gzip: &'a mut Gzip,
    pub charset: &'a mut Charset,
    pub resolver: &'a mut Resolver,
    pub autoindex: &'a mut Autoindex,
    pub conditional: &'a mut Conditional,
    pub error_page: &'a mut Option<Vec<ErrorPage>>,
    pub recursive_error_pages: &'a mut Option<bool>,
    pub log_not_found: &'a mut Option<bool>,
    pub access_log: &'a mut Option<Vec<AccessLog>>,
    pub default_type: &'a mut Option<String>,
    pub root: &'a mut Option<String>,
    pub index: &'a mut Option<Vec<String>>,
    pub types: &'a mut Option<IndexMap<String, String>>,
    /// Only http and server levels carry TLS settings.
    pub tls: Option<&'a mut TlsLevel>,
}

/// Certificates and keys are paired only when the level's block ends, as nginx pairs the i-th
/// `ssl_certificate` with the i-th `ssl_certificate_key`.
#[derive(Default)]
pub(super) struct TlsLevel {
    pub tls: Tls,
    certificates: Vec<(String, Statement)>,
    keys: Vec<String>,
}

impl Lowering<'_> {
    pub(super) fn http(&mut self, block: &Statement) -> Result<()> {
        let mut proxy = Proxy::default();
        let mut client = Client::default();
        let mut add_header = None;
        let mut access = None;
        let mut real_ip = RealIp::default();
        let mut limits = Limits::default();
        let mut auth = Auth::default();
        let mut secure_link = SecureLink::default();
        let mut sub_filter = SubFilter::default();
        let mut expires = None;
        let mut gzip = Gzip::default();
        let mut charset = Charset::default();
        let mut resolver = Resolver::default();
        let mut autoindex = Autoindex::default();
        let mut conditional = Conditional::default();
        let (mut error_page, mut recursive_error_pages) = (None, None);
        let mut log_not_found = None;
        let mut access_log = None;
        let mut default_type = None;
        let mut root = None;
        let mut index = None;
        let mut types = None;
        let mut tls = TlsLevel::default();
        let mut servers = Vec::new();
        for stmt in block.block.iter().flatten() {
            match stmt.name.as_str() {
                "upstream" => {
                    let pool = self.upstream(stmt, false)?;
                    self.model.http.upstreams.push(pool);
                }
                "server" => {
                    self.mapped(stmt);
                    servers.push(self.server(stmt)?);
                }
                "log_format" => {
                    let format = self.log_format(stmt)?;
                    self.model.http.log_format.push(format);
                    self.mapped(stmt);
                }
                "limit_req_zone" | "limit_conn_zone" => self.limit_zone(stmt)?,
                "charset_map" => {
                    let map = self.charset_map_block(stmt)?;
                    self.model.http.charset_map.push(map);
                    self.mapped(stmt);
                }
                "map" => {
                    if let Some(map) = self.map_block(stmt)? {
                        self.forget_table_var(&map.variable);
                        self.model.http.maps.push(map);
                        self.mapped(stmt);
                    }
                }
                "geo" => {
                    if let Some(geo) = self.geo_block(stmt)? {
                        self.forget_table_var(&geo.variable);
                        self.model.http.geo.push(geo);
                        self.mapped(stmt);
                    }
                }
                "split_clients" => {
                    if let Some(split) = self.split_clients_block(stmt)? {
                        self.forget_table_var(&split.variable);
                        self.model.http.split_clients.push(split);
                        self.mapped(stmt);
                    }
                }
                _ => {
                    let level = Level {
                        proxy: &mut proxy,
                        client: &mut client,
                        add_header: &mut add_header,
                        access: &mut access,
                        real_ip: &mut real_ip,
                        limits: &mut limits,
                        auth: &mut auth,
                        secure_link: &mut secure_link,
                        sub_filter: &mut sub_filter,
                        expires: &mut expires,
                        gzip: &mut gzip,
                        charset: &mut charset,
                        resolver: &mut resolver,
                        autoindex: &mut autoindex,
                        conditional: &mut conditional,
                        error_page: &mut error_page,
                        recursive_error_pages: &mut recursive_error_pages,
                        log_not_found: &mut log_not_found,
                        access_log: &mut access_log,
                        default_type: &mut default_type,
                        root: &mut root,
                        index: &mut index,
                        types: &mut types,
                        tls: Some(&mut tls),
                    };
                    if !self.setting(stmt, level)? {
                        self.unsupported(stmt)?;
                    }
                }
            }
        }
        let tls = self.pair_certificates(tls)?;
        let http = &mut self.model.http;
        http.tls = tls;
        http.proxy = proxy;
        http.client = client;
        http.add_header = add_header;
        http.access = access;
        http.real_ip = real_ip;
        http.limits = limits;
        http.auth = auth;
        http.secure_link = secure_link;
        http.sub_filter = sub_filter;
        http.expires = expires;
        http.gzip = gzip;
        http.charset = charset;
        http.resolver = resolver;
        http.autoindex = autoindex;
        http.conditional = conditional;
        http.error_page = error_page;
        http.recursive_error_pages = recursive_error_pages;
        http.log_not_found = log_not_found;
        http.access_log = access_log;
        http.default_type = default_type;
        // nginx's default root is its prefix's html: with `-p`, that prefix's.
        http.root = root.or_else(|| {
            let prefix = self.options.prefix.as_ref()?;
            Some(prefix.join("html").display().to_string())
        });
        http.index = index;
        http.types = types;
        http.servers = servers;
        charset_maps(http)
    }

    fn server(&mut self, block: &Statement) -> Result<VirtualServer> {
        let mut vs = VirtualServer {
            origin: self.origin(block),
            listen: Vec::new(),
            server_name: Vec::new(),
            tls: Tls::default(),
            proxy: Proxy::default(),
            client: Client::default(),
            add_header: None,
            access: None,
            real_ip: RealIp::default(),
            limits: Default::default(),
            auth: Default::default(),
            secure_link: Default::default(),
            sub_filter: Default::default(),
            expires: None,
            valid_referers: None,
            gzip: Gzip::default(),
            charset: Charset::default(),
            resolver: Resolver::default(),
            autoindex: Autoindex::default(),
            conditional: Conditional::default(),
            access_log: None,
            root: None,
            default_type: None,
            types: None,
            index: None,
            try_files: None,
            error_page: None,
            recursive_error_pages: None,
            log_not_found: None,
            return_: None,
            script: Vec::new(),
            locations: Vec::new(),
        };
        let mut tls = TlsLevel::default();
        let mut ssl_on = false;
        let mut http2_on = false;
        let mut steps = Vec::new();
        for stmt in block.block.iter().flatten() {
            match stmt.name.as_str() {
                name if rewrite::is_rewrite_directive(name) => {
                    self.rewrite_step(stmt, None, &mut steps)?;
                }
                "try_files" => {
                    let mut set = vs.try_files.take();
                    self.try_files(stmt, &mut set)?;
                    vs.try_files = set;
                }
                "listen" => {
                    let listens = self.listen(stmt)?;
                    vs.listen.extend(listens);
                    self.mapped(stmt);
                }
                "server_name" => {
                    for name in stmt.values() {
                        // nginx lowercases names but not regular expressions.
                        let name = if name.starts_with('~') {
                            name.to_string()
                        } else {
                            name.to_ascii_lowercase()
                        };
                        if !vs.server_name.contains(&name) {
                            vs.server_name.push(name);
                        }
                    }
                    self.mapped(stmt);
                }
                "location" => {
                    if let Some(loc) = self.location(stmt, None)? {
                        // nginx lets a name repeat; error_page takes the first.
                        let duplicate = loc.kind != LocationKind::Named
                            && vs
                                .locations
                                .iter()
                                .any(|l| l.kind == loc.kind && l.path == loc.path);
                        if duplicate {
                            return Err(
                                self.error(stmt, format!("duplicate location \"{}\"", loc.path))
                            );
                        }
                        vs.locations.push(loc);
                    }
                }
                "ssl" => {
                    ssl_on = self.flag(stmt)?;
                    self.mapped(stmt);
                }
                "http2" => {
                    http2_on = self.flag(stmt)?;
                    self.mapped(stmt);
                }
                "valid_referers" => self.valid_referers(stmt, &mut vs.valid_referers)?,
                _ => {
                    let level = Level {
                        proxy: &mut vs.proxy,
                        client: &mut vs.client,
                        add_header: &mut vs.add_header,
                        access: &mut vs.access,
                        real_ip: &mut vs.real_ip,
                        limits: &mut vs.limits,
                        auth: &mut vs.auth,
                        secure_link: &mut vs.secure_link,
                        sub_filter: &mut vs.sub_filter,
                        expires: &mut vs.expires,
                        gzip: &mut vs.gzip,
                        charset: &mut vs.charset,
                        resolver: &mut vs.resolver,
                        autoindex: &mut vs.autoindex,
                        conditional: &mut vs.conditional,
                        error_page: &mut vs.error_page,
                        recursive_error_pages: &mut vs.recursive_error_pages,
                        log_not_found: &mut vs.log_not_found,
                        access_log: &mut vs.access_log,
                        default_type: &mut vs.default_type,
                        root: &mut vs.root,
                        index: &mut vs.index,
                        types: &mut vs.types,
                        tls: Some(&mut tls),
                    };
                    if !self.setting(stmt, level)? {
                        self.unsupported(stmt)?;
                    }
                }
            }
        }
        if vs.listen.is_empty() {
            // nginx's default: *:80 (when run as root, which an appliance is).
            vs.listen
                .push(Listen::new(ListenAddress::Tcp(([0, 0, 0, 0], 80).into())));
        }
        for l in &mut vs.listen {
            l.ssl |= ssl_on;
            l.http2 |= http2_on;
        }
        vs.tls = self.pair_certificates(tls)?;
        (vs.return_, vs.script) = rewrite::into_model(steps);
        self.merge_checks(block, &vs.server_name)?;
        Ok(vs)
    }

    /// The checks nginx makes of a server and each of its locations as it merges the levels,
    /// once the server's names are all known: `valid_referers`, its words with
    /// `server_names` standing for those names (ngx_http_referer_merge_conf), and
    /// `secure_link_secret` beside `secure_link` or `secure_link_md5`
    /// (ngx_http_secure_link_merge_conf). An error names the level's directive (nginx names
    /// none, or the end of `http`).
    fn merge_checks(&self, level: &Statement, names: &[String]) -> Result<()> {
        let named = |name: &str| -> Vec<&Statement> {
            level
                .block
                .iter()
                .flatten()
                .filter(|s| s.name == name)
                .collect()
        };
        let referers = named("valid_referers");
        if let Some(last) = referers.last() {
            let words: Vec<String> = referers
                .iter()
                .flat_map(|s| s.values())
                .map(str::to_string)
                .collect();
            Rules::parse(&words, names).map_err(|e| self.error(last, e))?;
        }
        if let Some(secret) = named("secure_link_secret").first() {
            if !named("secure_link").is_empty() || !named("secure_link_md5").is_empty() {
                return Err(self.error(secret, crate::config::secure_link::MIXED));
            }
        }
        for inner in level.block.iter().flatten() {
            if inner.name == "location" {
                self.merge_checks(inner, names)?;
            }
        }
        Ok(())
    }

    /// `listen address[:port] [default_server] [ssl] [http2] [proxy_protocol] [backlog=N]
    /// [reuseport] ...`: one Listen per address the name stands for.
    fn listen(&mut self, stmt: &Statement) -> Result<Vec<Listen>> {
        let text = self.arg(stmt, 0)?;
        let parsed = url::parse(text, true, 80).map_err(|e| {
            self.error(
                stmt,
                format!("{e} in \"{text}\" of the \"listen\" directive"),
            )
        })?;
        let mut template = Listen::new(ListenAddress::Unix(Default::default()));
        let mut partial = Vec::new();
        for param in stmt.values().skip(1) {
            match param {
                "default_server" | "default" => template.default_server = true,
                "ssl" => template.ssl = true,
                "http2" => template.http2 = true,
                "proxy_protocol" => template.proxy_protocol = true,
                "reuseport" => template.reuseport = true,
                "bind" | "deferred" => {}
                p if p.starts_with("backlog=") => {
                    let n = p["backlog=".len()..]
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| self.error(stmt, format!("invalid backlog \"{p}\"")))?;
                    template.backlog = Some(n);
                }
                p if p.starts_with("ipv6only=o") => {
                    if !matches!(&p[10..], "n" | "ff") {
                        return Err(
                            self.error(stmt, format!("invalid ipv6only flags \"{}\"", &p[10..]))
                        );
                    }
                }
                p if p.starts_with("so_keepalive=")
                    || p.starts_with("rcvbuf=")
                    || p.starts_with("sndbuf=")
                    || p.starts_with("fastopen=")
                    || p.starts_with("setfib=")
                    || p.starts_with("accept_filter=") =>
                {
                    partial.push(p.to_string());
                }
                p => return Err(self.error(stmt, format!("invalid parameter \"{p}\""))),
            }
        }
        if !partial.is_empty() {
            self.partial(
                stmt,
                Impact::NoTrafficChange,
                format!(
                    "socket tuning {} left to the system defaults",
                    partial.join(" ")
                ),
            )?;
        }
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

    /// The path of `root` or `alias` (ngx_http_core_root): no `$document_root` in it, and a
    /// relative one made absolute against nginx's prefix, not the config's directory.
    fn file_root(&mut self, stmt: &Statement) -> Result<String> {
        let path = self.arg(stmt, 0)?.to_string();
        for name in ["document_root", "realpath_root"] {
            if path.contains(&format!("${name}")) || path.contains(&format!("${{{name}}}")) {
                let message = format!(
                    "the ${name} variable cannot be used in the \"{}\" directive",
                    stmt.name
                );
                return Err(self.error(stmt, message));
            }
        }
        self.template(stmt, &path)?;
        Ok(if path.starts_with('/') || path.starts_with('$') {
            path
        } else {
            let prefix = self.options.prefix.clone();
            let prefix = prefix.unwrap_or_else(|| "/usr/share/nginx".into());
            prefix.join(&path).display().to_string()
        })
    }

    /// `try_files file ... uri|=code` (ngx_http_try_files).
    fn try_files(&mut self, stmt: &Statement, set: &mut Option<Vec<String>>) -> Result<()> {
        if set.is_some() {
            return Err(self.error(stmt, "\"try_files\" directive is duplicate"));
        }
        let values: Vec<String> = stmt.values().map(str::to_string).collect();
        for value in &values {
            if self.template(stmt, value)?.is_none() {
                return Ok(());
            }
        }
        if let Some(code) = values.last().and_then(|v| v.strip_prefix('=')) {
            if digits(code).map_or(true, |c| c > 999) {
                return Err(self.error(stmt, format!("invalid code \"={code}\"")));
            }
        }
        *set = Some(values);
        self.mapped(stmt);
        Ok(())
    }

    /// `error_page code ... [=[response]] uri` (ngx_http_core_error_page).
    fn error_page(&mut self, stmt: &Statement) -> Result<Option<ErrorPage>> {
        let values: Vec<&str> = stmt.values().collect();
        if values.len() < 2 {
            return Err(self.error(
                stmt,
                "invalid number of arguments in \"error_page\" directive",
            ));
        }
        let last = values.len() - 1;
        let (status, codes) = match values[last - 1].strip_prefix('=') {
            Some(_) if last == 1 => {
                let message = format!("invalid value \"{}\"", values[last - 1]);
                return Err(self.error(stmt, message));
            }
            Some("") => (Some(PageStatus::Target), &values[..last - 1]),
            // nginx takes any number here; one that is no status line's is refused.
            Some(code) => match digits(code) {
                Ok(0) => (Some(PageStatus::Target), &values[..last - 1]),
                Ok(code) if (100..=999).contains(&code) => {
                    (Some(PageStatus::Code(code)), &values[..last - 1])
                }
                _ => {
                    let message = format!("invalid value \"{}\"", values[last - 1]);
                    return Err(self.error(stmt, message));
                }
            },
            None => (None, &values[..last]),
        };
        let mut parsed = Vec::with_capacity(codes.len());
        for code in codes {
            let number =
                digits(code).map_err(|_| self.error(stmt, format!("invalid value \"{code}\"")))?;
            ErrorPage::check_code(number).map_err(|e| self.error(stmt, e))?;
            parsed.push(number);
        }
        let target = values[last];
        if self.template(stmt, target)?.is_none() {
            return Ok(None);
        }
        self.mapped(stmt);
        Ok(Some(ErrorPage {
            codes: parsed,
            target: target.to_string(),
            status,
        }))
    }

    /// `location [modifier] uri { ... }`, or `location @name { ... }`, which only `error_page`
    /// reaches.
    fn location(
        &mut self,
        stmt: &Statement,
        parent: Option<&Location>,
    ) -> Result<Option<Location>> {
        let (kind, path) = match stmt.args.len() {
            1 => {
                let v = stmt.args[0].value.as_str();
                if let Some(rest) = v.strip_prefix('=') {
                    (LocationKind::Exact, rest)
                } else if let Some(rest) = v.strip_prefix("^~") {
                    (LocationKind::PrefixNoRegex, rest)
                } else if let Some(rest) = v.strip_prefix("~*") {
                    (LocationKind::RegexCaseless, rest)
                } else if let Some(rest) = v.strip_prefix('~') {
                    (LocationKind::Regex, rest)
                } else {
                    (LocationKind::Prefix, v)
                }
            }
            2 => {
                let kind = match stmt.args[0].value.as_str() {
                    "=" => LocationKind::Exact,
                    "^~" => LocationKind::PrefixNoRegex,
                    "~" => LocationKind::Regex,
                    "~*" => LocationKind::RegexCaseless,
                    m => return Err(self.error(stmt, format!("invalid location modifier \"{m}\""))),
                };
                (kind, stmt.args[1].value.as_str())
            }
            _ => {
                return Err(self.error(
                    stmt,
                    "invalid number of arguments in \"location\" directive",
                ))
            }
        };
        // Only a location without a modifier is named (ngx_http_core_location).
        let kind = match kind {
            LocationKind::Prefix if path.starts_with('@') => LocationKind::Named,
            kind => kind,
        };
        if let Some(parent) = parent {
            if parent.kind == LocationKind::Exact {
                return Err(self.error(
                    stmt,
                    format!(
                        "location \"{path}\" cannot be inside the exact location \"{}\"",
                        parent.path
                    ),
                ));
            }
            if parent.kind == LocationKind::Named {
                return Err(self.error(
                    stmt,
                    format!(
                        "location \"{path}\" cannot be inside the named location \"{}\"",
                        parent.path
                    ),
                ));
            }
            if kind == LocationKind::Named {
                return Err(self.error(
                    stmt,
                    format!("named location \"{path}\" can be on the server level only"),
                ));
            }
            if !kind.is_regex() && !parent.kind.is_regex() && !path.starts_with(&parent.path) {
                return Err(self.error(
                    stmt,
                    format!(
                        "location \"{path}\" is outside location \"{}\"",
                        parent.path
                    ),
                ));
            }
        }
        if kind.is_regex() {
            self.usable_regex(stmt, path, kind == LocationKind::RegexCaseless)?;
        }
        self.mapped(stmt);
        let mut loc = Location {
            origin: self.origin(stmt),
            kind,
            path: path.to_string(),
            internal: false,
            alias: None,
            proxy: Proxy::default(),
            client: Client::default(),
            add_header: None,
            access: None,
            real_ip: RealIp::default(),
            limits: Default::default(),
            auth: Default::default(),
            secure_link: Default::default(),
            sub_filter: Default::default(),
            expires: None,
            valid_referers: None,
            gzip: Gzip::default(),
            charset: Charset::default(),
            resolver: Resolver::default(),
            autoindex: Autoindex::default(),
            conditional: Conditional::default(),
            access_log: None,
            root: None,
            default_type: None,
            types: None,
            index: None,
            try_files: None,
            error_page: None,
            recursive_error_pages: None,
            log_not_found: None,
            return_: None,
            script: Vec::new(),
            locations: Vec::new(),
        };
        let mut steps = Vec::new();
        for s in stmt.block.iter().flatten() {
            match s.name.as_str() {
                name if rewrite::is_rewrite_directive(name) => {
                    self.rewrite_step(s, Some(kind), &mut steps)?;
                }
                "location" => {
                    if let Some(inner) = self.location(s, Some(&loc))? {
                        if loc
                            .locations
                            .iter()
                            .any(|l| l.kind == inner.kind && l.path == inner.path)
                        {
                            return Err(
                                self.error(s, format!("duplicate location \"{}\"", inner.path))
                            );
                        }
                        loc.locations.push(inner);
                    }
                }
                "alias" | "root"
                    if loc.alias.is_some() || (s.name == "alias" && loc.root.is_some()) =>
                {
                    let message = match (s.name.as_str(), loc.alias.is_some()) {
                        ("alias", true) => "\"alias\" directive is duplicate".to_string(),
                        (name, true) => format!(
                            "\"{name}\" directive is duplicate, \"alias\" directive was specified earlier"
                        ),
                        (name, false) => format!(
                            "\"{name}\" directive is duplicate, \"root\" directive was specified earlier"
                        ),
                    };
                    return Err(self.error(s, message));
                }
                "alias" => {
                    if kind == LocationKind::Named {
                        return Err(self.error(
                            s,
                            "the \"alias\" directive cannot be used inside the named location",
                        ));
                    }
                    loc.alias = Some(self.file_root(s)?);
                    self.mapped(s);
                }
                "try_files" => {
                    let mut set = loc.try_files.take();
                    self.try_files(s, &mut set)?;
                    loc.try_files = set;
                }
                "valid_referers" => self.valid_referers(s, &mut loc.valid_referers)?,
                "internal" => {
                    if loc.internal {
                        return Err(self.error(s, "\"internal\" directive is duplicate"));
                    }
                    loc.internal = true;
                    self.mapped(s);
                }
                "proxy_pass" => {
                    if loc.proxy.pass.is_some() || loc.proxy.pass_template.is_some() {
                        return Err(self.error(s, "\"proxy_pass\" directive is duplicate"));
                    }
                    if self.arg(s, 0)?.contains('$') {
                        loc.proxy.pass_template = self.proxy_pass_template(s)?;
                    } else if let Some(pass) = self.proxy_pass(s, kind)? {
                        loc.proxy.pass = Some(pass);
                    }
                }
                _ => {
                    let level = Level {
                        proxy: &mut loc.proxy,
                        client: &mut loc.client,
                        add_header: &mut loc.add_header,
                        access: &mut loc.access,
                        real_ip: &mut loc.real_ip,
                        limits: &mut loc.limits,
                        auth: &mut loc.auth,
                        secure_link: &mut loc.secure_link,
                        sub_filter: &mut loc.sub_filter,
                        expires: &mut loc.expires,
                        gzip: &mut loc.gzip,
                        charset: &mut loc.charset,
                        resolver: &mut loc.resolver,
                        autoindex: &mut loc.autoindex,
                        conditional: &mut loc.conditional,
                        error_page: &mut loc.error_page,
                        recursive_error_pages: &mut loc.recursive_error_pages,
                        log_not_found: &mut loc.log_not_found,
                        access_log: &mut loc.access_log,
                        default_type: &mut loc.default_type,
                        root: &mut loc.root,
                        index: &mut loc.index,
                        types: &mut loc.types,
                        tls: None,
                    };
                    if !self.setting(s, level)? {
                        self.unsupported(s)?;
                    }
                }
            }
        }
        (loc.return_, loc.script) = rewrite::into_model(steps);
        Ok(Some(loc))
    }

    /// `valid_referers`: its words added to the level's, each checked as
    /// ngx_http_valid_referers checks it. The checks that need the server's names, or every
    /// directive of the level, are the model's (`config::validate`), as nginx makes them when
    /// it merges the levels.
    fn valid_referers(&mut self, stmt: &Statement, level: &mut Option<Vec<String>>) -> Result<()> {
        let mut words = level.take().unwrap_or_default();
        let mut rules = Rules::default();
        rules.add_words(&words).map_err(|e| self.error(stmt, e))?;
        for word in stmt.values() {
            let word = word.to_string();
            rules
                .add_words(std::slice::from_ref(&word))
                .map_err(|e| self.error(stmt, e))?;
            if let Some(pattern) = word.strip_prefix('~') {
                self.usable_regex(stmt, pattern, true)?;
            }
            words.push(word);
        }
        *level = Some(words);
        self.mapped(stmt);
        Ok(())
    }

    /// `proxy_pass URL`. A URL with variables needs a resolver at request time, which the
    /// appliance does not do: reported, and the location then has no pass.
    pub(super) fn proxy_pass(
        &mut self,
        stmt: &Statement,
        kind: LocationKind,
    ) -> Result<Option<ProxyPass>> {
        let text = self.arg(stmt, 0)?;
        if text.contains('$') {
            self.unsupported(stmt)?;
            return Ok(None);
        }
        let pass: ProxyPass = text.parse().map_err(|e: String| self.error(stmt, e))?;
        if pass.uri.is_some() && (kind.is_regex() || kind == LocationKind::Named) {
            return Err(self.error(
                stmt,
                "\"proxy_pass\" cannot have URI part in location given by regular expression, \
                 or inside named location, or inside \"if\" statement, or inside \"limit_except\" block",
            ));
        }
        if let Err(e) = url::parse(&pass.host, false, pass.scheme.default_port()) {
            return Err(self.error(stmt, format!("{e} in upstream \"{}\"", pass.host)));
        }
        self.mapped(stmt);
        Ok(Some(pass))
    }

    /// `proxy_pass` with variables in a location: evaluated per request (`None` when a
    /// variable cannot be computed, reported). A value naming a host that is no upstream is
    /// looked up with the location's `resolver`, as nginx does.
    fn proxy_pass_template(&mut self, stmt: &Statement) -> Result<Option<String>> {
        let text = self.arg(stmt, 0)?.to_string();
        let Some(text) = self.template(stmt, &text)? else {
            return Ok(None);
        };
        self.mapped(stmt);
        Ok(Some(text))
    }

    /// `return code [text]`, `return code URL`, `return URL`.
    pub(super) fn return_directive(&mut self, stmt: &Statement) -> Result<Option<Return>> {
        let first = self.arg(stmt, 0)?;
        let (status, text) = match first.parse::<u16>() {
            Ok(code) if first.bytes().all(|b| b.is_ascii_digit()) => {
                if stmt.args.len() > 2 {
                    return Err(
                        self.error(stmt, "invalid number of arguments in \"return\" directive")
                    );
                }
                if code > 999 {
                    return Err(self.error(stmt, format!("invalid return code \"{first}\"")));
                }
                (code, stmt.arg(1))
            }
            _ => {
                if stmt.args.len() > 1 {
                    return Err(self.error(stmt, format!("invalid return code \"{first}\"")));
                }
                if !(first.starts_with("http://")
                    || first.starts_with("https://")
                    || first.starts_with("$scheme"))
                {
                    return Err(self.error(stmt, format!("invalid return code \"{first}\"")));
                }
                (302, Some(first))
            }
        };
        let text = match text {
            Some(t) => match self.template(stmt, t)? {
                Some(t) => Some(t),
                None => return Ok(None),
            },
            None => None,
        };
        self.mapped(stmt);
        let redirect = Return::is_redirect_status(status);
        Ok(Some(Return {
            status,
            location: text.clone().filter(|_| redirect),
            body: text.filter(|_| !redirect),
        }))
    }

    /// The settings shared by http, server and location. Returns false for a directive that is
    /// not one of them.
    pub(super) fn setting(&mut self, stmt: &Statement, level: Level<'_>) -> Result<bool> {
        let name = stmt.name.as_str();
        if name.starts_with("proxy_") && self.proxy_setting(stmt, level.proxy)? {
            return Ok(true);
        }
        match name {
            "client_max_body_size" => level.client.max_body_size = Some(self.offset(stmt, 0)?),
            "client_header_timeout" => level.client.header_timeout = Some(self.msec(stmt, 0)?),
            "client_body_timeout" => level.client.body_timeout = Some(self.msec(stmt, 0)?),
            "send_timeout" => level.client.send_timeout = Some(self.msec(stmt, 0)?),
            "sendfile" => level.client.sendfile = Some(self.flag(stmt)?),
            "sendfile_max_chunk" => level.client.sendfile_max_chunk = Some(self.size(stmt, 0)?),
            "keepalive_requests" => level.client.keepalive_requests = Some(self.number(stmt, 0)?),
            "keepalive_timeout" => {
                level.client.keepalive_timeout = Some(self.msec(stmt, 0)?);
                if stmt.args.len() > 1 {
                    self.sec(stmt, 1)?;
                    return self
                        .partial(
                            stmt,
                            Impact::ChangesTraffic,
                            "the Keep-Alive: timeout= response header is not sent",
                        )
                        .map(|_| true);
                }
            }
            "add_header" => {
                let header = self.arg(stmt, 0)?.to_string();
                let value = self.arg(stmt, 1)?.to_string();
                let always = match stmt.arg(2) {
                    None => false,
                    Some("always") => true,
                    Some(p) => return Err(self.error(stmt, format!("invalid parameter \"{p}\""))),
                };
                let Some(value) = self.template(stmt, &value)? else {
                    return Ok(true);
                };
                level
                    .add_header
                    .get_or_insert_with(Vec::new)
                    .push(AddHeader {
                        name: header,
                        value,
                        always,
                    });
            }
            "allow" | "deny" => {
                let rule = self.access_rule(stmt)?;
                level.access.get_or_insert_with(Vec::new).push(rule);
            }
            "set_real_ip_from" => {
                let addresses = self.real_ip_from(stmt)?;
                level
                    .real_ip
                    .from
                    .get_or_insert_with(Vec::new)
                    .extend(addresses);
            }
            "real_ip_header" => {
                if level.real_ip.header.is_some() {
                    return Err(self.error(stmt, "\"real_ip_header\" directive is duplicate"));
                }
                level.real_ip.header = Some(self.arg(stmt, 0)?.to_string());
            }
            "real_ip_recursive" => level.real_ip.recursive = Some(self.flag(stmt)?),
            name if name.starts_with("limit_") => {
                if !self.limit_setting(stmt, level.limits)? {
                    return Ok(false);
                }
            }
            "auth_basic" => {
                if level.auth.basic.is_some() {
                    return Err(self.error(stmt, "\"auth_basic\" directive is duplicate"));
                }
                let Some(realm) = self.template(stmt, self.arg(stmt, 0)?)? else {
                    return Ok(true);
                };
                level.auth.basic = Some(realm);
            }
            "sub_filter" => {
                let (search, with) = (self.arg(stmt, 0)?, self.arg(stmt, 1)?);
                if search.is_empty() {
                    return Err(self.error(stmt, "empty search pattern"));
                }
                let list = level.sub_filter.replace.get_or_insert_with(Vec::new);
                if list.len() == sub_filter::MAX_SEARCHES {
                    return Err(self.error(
                        stmt,
                        format!(
                            "number of search patterns exceeds {}",
                            sub_filter::MAX_SEARCHES
                        ),
                    ));
                }
                let (search, with) = (search.to_string(), with.to_string());
                if self.template(stmt, &search)?.is_none() || self.template(stmt, &with)?.is_none()
                {
                    return Ok(true);
                }
                list.push(sub_filter::Replacement { search, with });
            }
            "sub_filter_once" => level.sub_filter.once = Some(self.flag(stmt)?),
            "sub_filter_last_modified" => level.sub_filter.last_modified = Some(self.flag(stmt)?),
            "sub_filter_types" => self.mime_types(
                stmt,
                &mut level.sub_filter.types,
                sub_filter::ALWAYS_FILTERED,
            ),
            "secure_link" | "secure_link_md5" | "secure_link_secret" => {
                let slot = match stmt.name.as_str() {
                    "secure_link" => &mut level.secure_link.link,
                    "secure_link_md5" => &mut level.secure_link.md5,
                    _ => &mut level.secure_link.secret,
                };
                if slot.is_some() {
                    return Err(
                        self.error(stmt, format!("\"{}\" directive is duplicate", stmt.name))
                    );
                }
                let value = self.arg(stmt, 0)?.to_string();
                // The secret is a plain string; the others are templates.
                if stmt.name != "secure_link_secret" && self.template(stmt, &value)?.is_none() {
                    return Ok(true);
                }
                *slot = Some(value);
            }
            "auth_request" => {
                if level.auth.request.is_some() {
                    return Err(self.error(stmt, "\"auth_request\" directive is duplicate"));
                }
                level.auth.request = Some(self.arg(stmt, 0)?.to_string());
            }
            "auth_request_set" => {
                if let Some(set) = self.auth_request_set(stmt)? {
                    level
                        .auth
                        .request_set
                        .get_or_insert_with(Vec::new)
                        .push(set);
                }
            }
            "auth_basic_user_file" => {
                if level.auth.basic_user_file.is_some() {
                    return Err(self.error(stmt, "\"auth_basic_user_file\" directive is duplicate"));
                }
                let text = self.arg(stmt, 0)?.to_string();
                let Some(_) = self.template(stmt, &text)? else {
                    return Ok(true);
                };
                // nginx makes a path absolute against the configuration's directory when it is
                // read; one that begins with a variable only once that is evaluated.
                let file = if text.starts_with('$') {
                    self.partial(
                        stmt,
                        Impact::ChangesTraffic,
                        "a relative file named by a variable is read from the appliance's \
                         working directory, where nginx reads it from the configuration's",
                    )?;
                    text
                } else {
                    self.path(&text).display().to_string()
                };
                level.auth.basic_user_file = Some(file);
            }
            "expires" => {
                if level.expires.is_some() {
                    return Err(self.error(stmt, "\"expires\" directive is duplicate"));
                }
                // nginx's handler returns its message: "\"expires\" directive <message>".
                let message = |e: &str| format!("\"expires\" directive {e}");
                let (modified, value) = match (stmt.arg(0), stmt.arg(1)) {
                    (Some("modified"), Some(value)) => (true, value.to_string()),
                    (Some(_), Some(_)) => return Err(self.error(stmt, message("invalid value"))),
                    _ => (false, self.arg(stmt, 0)?.to_string()),
                };
                // A value with variables is read on each response; nginx checks it only then.
                if !value.contains('$') {
                    if let Err(e) = expires::parse(&value, modified) {
                        return Err(self.error(stmt, message(e)));
                    }
                }
                if self.template(stmt, &value)?.is_none() {
                    return Ok(true);
                }
                let text = match modified {
                    true => format!("modified {value}"),
                    false => value,
                };
                *level.expires = Some(text);
            }
            // The generic slots have checked the values (on/off, 1-9, 1.0/1.1, the bitmask).
            "gzip" => level.gzip.enable = Some(self.flag(stmt)?),
            "gzip_vary" => level.gzip.vary = Some(self.flag(stmt)?),
            "gzip_comp_level" => level.gzip.comp_level = Some(self.number(stmt, 0)?),
            "gzip_min_length" => level.gzip.min_length = Some(self.offset(stmt, 0)?),
            "gzip_http_version" => level.gzip.http_version = Some(self.arg(stmt, 0)?.to_string()),
            "gzip_static" => level.gzip.static_ = Some(self.arg(stmt, 0)?.to_string()),
            "gunzip" => level.gzip.gunzip = Some(self.flag(stmt)?),
            "etag" => level.conditional.etag = Some(self.flag(stmt)?),
            "if_modified_since" => {
                level.conditional.if_modified_since = Some(self.arg(stmt, 0)?.to_string())
            }
            "autoindex" => level.autoindex.enable = Some(self.flag(stmt)?),
            "autoindex_exact_size" => level.autoindex.exact_size = Some(self.flag(stmt)?),
            "autoindex_localtime" => level.autoindex.localtime = Some(self.flag(stmt)?),
            "autoindex_format" => level.autoindex.format = Some(self.arg(stmt, 0)?.to_string()),
            "gzip_proxied" => {
                let proxied = level.gzip.proxied.get_or_insert_with(Vec::new);
                proxied.extend(stmt.values().map(str::to_string));
            }
            "gzip_types" => self.mime_types(stmt, &mut level.gzip.types, gzip::ALWAYS_COMPRESSED),
            "charset" | "source_charset" => {
                let slot = match name {
                    "charset" => &mut level.charset.name,
                    _ => &mut level.charset.source,
                };
                if slot.is_some() {
                    return Err(self.error(stmt, format!("\"{name}\" directive is duplicate")));
                }
                let value = self.arg(stmt, 0)?.to_string();
                if value.starts_with('$') {
                    self.partial(
                        stmt,
                        Impact::ChangesTraffic,
                        "a charset named by a variable is not added to Content-Type",
                    )?;
                    return Ok(true);
                }
                *slot = Some(match (name, value.as_str()) {
                    ("charset", "off") => value,
                    _ => self.charset_spelling(&value),
                });
            }
            "override_charset" => level.charset.override_ = Some(self.flag(stmt)?),
            "resolver" => self.resolver_line(stmt, level.resolver)?,
            "resolver_timeout" => level.resolver.timeout = Some(self.msec(stmt, 0)?),
            "charset_types" => {
                self.mime_types(stmt, &mut level.charset.types, charset::ALWAYS_NAMED)
            }
            "gzip_disable" => {
                for value in stmt.values() {
                    if value != "msie6" {
                        self.usable_regex(stmt, value, true)?;
                    }
                }
                let disable = level.gzip.disable.get_or_insert_with(Vec::new);
                disable.extend(stmt.values().map(str::to_string));
            }
            "error_page" => {
                if let Some(page) = self.error_page(stmt)? {
                    level.error_page.get_or_insert_with(Vec::new).push(page);
                }
            }
            "recursive_error_pages" => *level.recursive_error_pages = Some(self.flag(stmt)?),
            "log_not_found" => *level.log_not_found = Some(self.flag(stmt)?),
            "satisfy" => {
                level.auth.satisfy = Some(match self.arg(stmt, 0)? {
                    "any" => Satisfy::Any,
                    _ => Satisfy::All,
                });
            }
            "access_log" => return self.access_log(stmt, level.access_log).map(|_| true),
            "default_type" => *level.default_type = Some(self.arg(stmt, 0)?.to_string()),
            "root" => {
                if level.root.is_some() {
                    return Err(self.error(stmt, "\"root\" directive is duplicate"));
                }
                let mut path = self.file_root(stmt)?;
                // nginx drops one trailing slash of a root (not of an alias).
                if path.len() > 1 && path.ends_with('/') {
                    path.pop();
                }
                *level.root = Some(path);
            }
            "index" => {
                for value in stmt.values() {
                    if value.is_empty() {
                        let message = format!(
                            "index \"{}\" in \"index\" directive is invalid",
                            self.arg(stmt, 0)?
                        );
                        return Err(self.error(stmt, message));
                    }
                    if self.template(stmt, value)?.is_none() {
                        return Ok(true);
                    }
                }
                level
                    .index
                    .get_or_insert_with(Vec::new)
                    .extend(stmt.values().map(str::to_string));
            }
            "types" => {
                // `types { text/html html htm; }`: each line names a type and its extensions.
                // Several blocks at one level add up, as in nginx.
                let types = level.types.get_or_insert_with(IndexMap::new);
                for line in stmt.block.iter().flatten() {
                    for ext in line.values() {
                        types.insert(ext.to_ascii_lowercase(), line.name.clone());
                    }
                }
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
            | "ssl_crl" => {
                let Some(tls) = level.tls else {
                    return Ok(false);
                };
                self.tls_setting(stmt, tls)?;
            }
            // OCSP checks are not carried over (a refused access guard); turned off, there is
            // nothing to carry.
            "ssl_ocsp" if stmt.values().eq(["off"]) => {}
            _ => return Ok(false),
        }
        self.mapped(stmt);
        Ok(true)
    }

    /// `map source $variable { ... }`, with ngx_http_map's checks. `None` (reported) when the
    /// source or a value uses a variable the appliance cannot compute.
    /// A second `map`, `geo` or `split_clients` of a variable replaces the first, as in nginx
    /// (each takes the variable over).
    fn forget_table_var(&mut self, name: &str) {
        let http = &mut self.model.http;
        http.maps.retain(|m| m.variable != name);
        http.geo.retain(|g| g.variable != name);
        http.split_clients.retain(|s| s.variable != name);
    }

    pub(super) fn map_block(&mut self, stmt: &Statement) -> Result<Option<MapVar>> {
        let source = self.arg(stmt, 0)?.to_string();
        let variable = self.defined_name(stmt, self.arg(stmt, 1)?)?;
        let mut map = MapVar {
            origin: self.origin(stmt),
            source,
            variable,
            hostnames: false,
            default: None,
            entries: Vec::new(),
        };
        let lines = stmt.block.as_deref().unwrap_or_default();
        for line in lines {
            match (line.name.as_str(), line.args.len()) {
                ("hostnames", 0) => map.hostnames = true,
                ("volatile", 0) => {}
                (_, 1) => {}
                _ => return Err(self.error(line, "invalid number of the map parameters")),
            }
        }
        let mut keys = std::collections::HashSet::new();
        for line in lines.iter().filter(|l| l.args.len() == 1) {
            let value = line.args[0].value.clone();
            match line.name.as_str() {
                "default" if map.default.is_some() => {
                    return Err(self.error(line, "duplicate default map parameter"));
                }
                "default" => map.default = Some(value),
                key => {
                    let entry = MapEntry {
                        key: key.to_string(),
                        value,
                    };
                    match entry.key(map.hostnames) {
                        MapKey::Regex { pattern, caseless } => {
                            self.usable_regex(line, pattern, caseless)?
                        }
                        other => {
                            if !keys.insert(format!("{other:?}")) {
                                // nginx names the key as it stored it: lowercase.
                                return Err(self.error(
                                    line,
                                    format!(
                                        "conflicting parameter \"{}\"",
                                        key.to_ascii_lowercase()
                                    ),
                                ));
                            }
                        }
                    }
                    map.entries.push(entry);
                }
            }
        }
        let texts = std::iter::once(map.source.clone())
            .chain(map.default.clone())
            .chain(map.entries.iter().map(|e| e.value.clone()))
            .collect::<Vec<_>>();
        for text in texts {
            if self.template(stmt, &text)?.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(map))
    }

    /// A `resolver` line, at any level of http or stream.
    pub(super) fn resolver_line(&self, stmt: &Statement, resolver: &mut Resolver) -> Result<()> {
        if resolver.servers.is_some() {
            return Err(self.error(stmt, "\"resolver\" directive is duplicate"));
        }
        // ngx_resolver_create: addresses, then `valid=` and `ipv6=` among them.
        let invalid = |v: &str| format!("invalid parameter: {v}");
        let mut servers = Vec::new();
        for value in stmt.values() {
            if let Some(time) = value.strip_prefix("valid=") {
                let valid = parse_nginx_time(time, TimeUnit::Seconds)
                    .ok_or_else(|| self.error(stmt, invalid(value)))?;
                resolver.valid = Some(Duration(valid));
            } else if let Some(flag) = value.strip_prefix("ipv6=") {
                resolver.ipv6 = Some(match flag {
                    "on" => true,
                    "off" => false,
                    _ => return Err(self.error(stmt, invalid(value))),
                });
            } else {
                dns::check_server(value).map_err(|e| self.error(stmt, e))?;
                servers.push(value.to_string());
            }
        }
        resolver.servers = Some(servers);
        Ok(())
    }

    /// `set_real_ip_from`: an address, a CIDR block or `unix:`, else a host name, resolved now
    /// as nginx resolves it, to the addresses it has.
    pub(super) fn real_ip_from(&mut self, stmt: &Statement) -> Result<Vec<String>> {
        let text = self.arg(stmt, 0)?.to_string();
        // `all` is the access module's word; here it would be a host name.
        match AccessScope::parse(&text)
            .ok()
            .filter(|(scope, _)| *scope != AccessScope::All)
        {
            Some((_, meaningless)) => {
                if meaningless {
                    self.warn(stmt, format!("low address bits of {text} are meaningless"));
                }
                Ok(vec![text])
            }
            None => {
                use std::net::ToSocketAddrs;
                let resolved: Vec<String> = (text.as_str(), 0)
                    .to_socket_addrs()
                    .map(|addrs| addrs.map(|a| a.ip().to_string()).collect())
                    .unwrap_or_default();
                if resolved.is_empty() {
                    return Err(self.error(
                        stmt,
                        format!("host not found in set_real_ip_from \"{text}\""),
                    ));
                }
                Ok(resolved)
            }
        }
    }

    /// An `allow` or `deny` (http or stream), read as ngx_http_access_rule reads it.
    pub(super) fn access_rule(&mut self, stmt: &Statement) -> Result<AccessRule> {
        let address = self.arg(stmt, 0)?.to_string();
        let rule = match stmt.name.as_str() {
            "allow" => AccessRule::Allow(address),
            _ => AccessRule::Deny(address),
        };
        match rule.scope() {
            Err(message) => return Err(self.error(stmt, message)),
            Ok((_, true)) => self.warn(
                stmt,
                format!("low address bits of {} are meaningless", rule.addresses()),
            ),
            Ok(_) => {}
        }
        Ok(rule)
    }

    /// `charset_map FROM TO { SRC DST; ... }`, checked line by line as nginx reads it.
    pub(super) fn charset_map_block(&mut self, stmt: &Statement) -> Result<CharsetMap> {
        let (from, to) = (self.arg(stmt, 0)?, self.arg(stmt, 1)?);
        let mut map = CharsetMap {
            from: from.to_string(),
            to: to.to_string(),
            codes: Vec::new(),
        };
        // The charsets are checked, as written, before the block is read; the model has them
        // as the config first spelled them.
        if let Some(problem) = map.problem(&self.model.http.charset_map) {
            return Err(self.error(stmt, problem));
        }
        map.from = self.charset_spelling(&map.from);
        map.to = self.charset_spelling(&map.to);
        for line in stmt.block.as_deref().unwrap_or_default() {
            // The parser has made sure each line has two words.
            let target = line.args.first().map_or("", |w| w.value.as_str());
            if let Err(message) = map.code(&line.name, target) {
                return Err(self.error(line, message));
            }
            map.codes.push([line.name.clone(), target.to_string()]);
        }
        Ok(map)
    }

    /// `name` as the config first spelled the charset (see `Lowering::charsets`).
    fn charset_spelling(&mut self, name: &str) -> String {
        match self.charsets.iter().find(|c| c.eq_ignore_ascii_case(name)) {
            Some(first) => first.clone(),
            None => {
                self.charsets.push(name.to_string());
                name.to_string()
            }
        }
    }

    /// `gzip_types` or `charset_types` as ngx_http_types_slot reads them: lowercased, adding
    /// up over the level's lines, `*` for any type (the rest then ignored), and a warning for a
    /// type named twice (`always`, the type the list always has, included).
    fn mime_types(&mut self, stmt: &Statement, types: &mut Option<Vec<String>>, always: &str) {
        let types = types.get_or_insert_with(Vec::new);
        if types.iter().any(|t| t == "*") {
            return;
        }
        for value in stmt.values() {
            if value == "*" {
                *types = vec!["*".to_string()];
                return;
            }
            let value = value.to_ascii_lowercase();
            if value == always || types.contains(&value) {
                self.warn(stmt, format!("duplicate MIME type \"{value}\""));
                continue;
            }
            types.push(value);
        }
    }

    /// Refuses a regex the appliance's engine cannot compile (PCRE syntax it lacks, or a bad
    /// one), naming the directive.
    pub(super) fn usable_regex(
        &self,
        stmt: &Statement,
        pattern: &str,
        caseless: bool,
    ) -> Result<()> {
        match regex::RegexBuilder::new(pattern)
            .case_insensitive(caseless)
            .build()
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(
                stmt,
                pcre_message(pattern).unwrap_or_else(|| {
                    format!(
                        "regular expression \"{pattern}\" cannot be used by the appliance: {}",
                        e.to_string().lines().last().unwrap_or("invalid")
                    )
                }),
            )),
        }
    }

    /// `proxy_redirect`, with nginx's checks: `off` alone at its level, `default` after the
    /// level's own `proxy_pass`.
    fn proxy_redirect(&mut self, stmt: &Statement, proxy: &mut Proxy) -> Result<bool> {
        let duplicate = || "\"proxy_redirect\" directive is duplicate";
        let rules = proxy.redirect.get_or_insert_with(Vec::new);
        if rules
            .iter()
            .any(|r| matches!(r, ProxyRedirect::Keyword(k) if k == "off"))
        {
            return Err(self.error(stmt, duplicate()));
        }
        if stmt.args.len() == 1 {
            let word = self.arg(stmt, 0)?;
            match word {
                "off" if !rules.is_empty() => return Err(self.error(stmt, duplicate())),
                "off" => rules.push(ProxyRedirect::Keyword(word.to_string())),
                "default" if proxy.pass_template.is_some() => {
                    return Err(self.error(
                        stmt,
                        "\"proxy_redirect default\" cannot be used with \"proxy_pass\" directive with variables",
                    ));
                }
                "default" if proxy.pass.is_none() => {
                    return Err(self.error(
                        stmt,
                        "\"proxy_redirect default\" should be placed after the \"proxy_pass\" directive",
                    ))
                }
                "default" => rules.push(ProxyRedirect::Keyword(word.to_string())),
                _ => return Err(self.error(stmt, format!("invalid parameter \"{word}\""))),
            }
            self.mapped(stmt);
            return Ok(true);
        }
        let from = self.arg(stmt, 0)?.to_string();
        let to = self.arg(stmt, 1)?.to_string();
        if let Some(regex) = from.strip_prefix('~') {
            let (regex, caseless) = match regex.strip_prefix('*') {
                Some(rest) => (rest, true),
                None => (regex, false),
            };
            self.usable_regex(stmt, regex, caseless)?;
        } else if self.template(stmt, &from)?.is_none() {
            return Ok(true);
        }
        let Some(to) = self.template(stmt, &to)? else {
            return Ok(true);
        };
        if let Some(rules) = proxy.redirect.as_mut() {
            rules.push(ProxyRedirect::Replace { from, to });
        }
        self.mapped(stmt);
        Ok(true)
    }

    fn proxy_setting(&mut self, stmt: &Statement, proxy: &mut Proxy) -> Result<bool> {
        match stmt.name.as_str() {
            "proxy_set_header" => {
                let name = self.arg(stmt, 0)?.to_string();
                let value = self.arg(stmt, 1)?.to_string();
                let Some(value) = self.template(stmt, &value)? else {
                    return Ok(true);
                };
                let headers = proxy.set_header.get_or_insert_with(IndexMap::new);
                let existing = headers
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case(&name))
                    .cloned();
                if let Some(existing) = existing {
                    headers.shift_remove(&existing);
                    self.partial(
                        stmt,
                        Impact::ChangesTraffic,
                        format!("\"{name}\" is set twice; only the last value is sent"),
                    )?;
                }
                headers.insert(name, value);
            }
            "proxy_http_version" => {
                proxy.http_version = Some(match self.arg(stmt, 0)? {
                    "1.0" => HttpVersion::Http10,
                    "1.1" => HttpVersion::Http11,
                    v => return Err(self.error(stmt, format!("invalid value \"{v}\""))),
                });
            }
            "proxy_connect_timeout" => proxy.connect_timeout = Some(self.msec(stmt, 0)?),
            "proxy_send_timeout" => proxy.send_timeout = Some(self.msec(stmt, 0)?),
            "proxy_read_timeout" => proxy.read_timeout = Some(self.msec(stmt, 0)?),
            "proxy_next_upstream" => {
                let mut conditions = Vec::new();
                for word in stmt.values() {
                    if word == "updating" {
                        continue;
                    }
                    let c = NextUpstream::from_word(word)
                        .ok_or_else(|| self.error(stmt, format!("invalid value \"{word}\"")))?;
                    conditions.push(c);
                }
                proxy.next_upstream = Some(conditions);
            }
            "proxy_next_upstream_tries" => proxy.next_upstream_tries = Some(self.number(stmt, 0)?),
            "proxy_next_upstream_timeout" => {
                proxy.next_upstream_timeout = Some(self.msec(stmt, 0)?)
            }
            "proxy_pass_request_headers" => proxy.pass_request_headers = Some(self.flag(stmt)?),
            "proxy_pass_request_body" => proxy.pass_request_body = Some(self.flag(stmt)?),
            "proxy_hide_header" => proxy
                .hide_header
                .get_or_insert_with(Vec::new)
                .push(self.arg(stmt, 0)?.to_string()),
            "proxy_pass_header" => proxy
                .pass_header
                .get_or_insert_with(Vec::new)
                .push(self.arg(stmt, 0)?.to_string()),
            "proxy_redirect" => return self.proxy_redirect(stmt, proxy),
            "proxy_buffering" => proxy.buffering = Some(self.flag(stmt)?),
            "proxy_request_buffering" => proxy.request_buffering = Some(self.flag(stmt)?),
            "proxy_intercept_errors" => proxy.intercept_errors = Some(self.flag(stmt)?),
            "proxy_ssl_verify" => proxy.ssl_verify = Some(self.flag(stmt)?),
            "proxy_ssl_verify_depth" => proxy.ssl_verify_depth = Some(self.number(stmt, 0)?),
            "proxy_ssl_name" => {
                let v = self.arg(stmt, 0)?.to_string();
                let Some(v) = self.template(stmt, &v)? else {
                    return Ok(true);
                };
                proxy.ssl_name = Some(v);
            }
            "proxy_ssl_server_name" => proxy.ssl_server_name = Some(self.flag(stmt)?),
            "proxy_ssl_trusted_certificate" => {
                proxy.ssl_trusted_certificate = Some(self.path(self.arg(stmt, 0)?))
            }
            _ => return Ok(false),
        }
        self.mapped(stmt);
        Ok(true)
    }

    pub(super) fn tls_setting(&mut self, stmt: &Statement, level: &mut TlsLevel) -> Result<()> {
        match stmt.name.as_str() {
            "ssl_certificate" => {
                let v = self.arg(stmt, 0)?.to_string();
                if v.starts_with("data:") || v.contains('$') {
                    return self.partial(
                        stmt,
                        Impact::ChangesTraffic,
                        "certificates from variables or data: are not supported",
                    );
                }
                level.certificates.push((v, stmt.clone()));
            }
            "ssl_certificate_key" => {
                let v = self.arg(stmt, 0)?.to_string();
                level.keys.push(v);
            }
            "ssl_protocols" => {
                let mut protocols = Vec::new();
                for p in stmt.values() {
                    match p {
                        "SSLv2" | "SSLv3" => {}
                        _ => {
                            protocols.push(TlsVersion::from_nginx(p).ok_or_else(|| {
                                self.error(stmt, format!("invalid value \"{p}\""))
                            })?)
                        }
                    }
                }
                level.tls.protocols = Some(protocols);
            }
            "ssl_ciphers" => level.tls.ciphers = Some(self.arg(stmt, 0)?.to_string()),
            "ssl_prefer_server_ciphers" => level.tls.prefer_server_ciphers = Some(self.flag(stmt)?),
            "ssl_session_timeout" => level.tls.session_timeout = Some(self.sec(stmt, 0)?),
            "ssl_verify_client" => {
                let word = self.arg(stmt, 0)?;
                let mode = VerifyClient::from_nginx(word)
                    .ok_or_else(|| self.error(stmt, format!("invalid value \"{word}\"")))?;
                level.tls.verify_client = Some(mode);
            }
            "ssl_client_certificate" => {
                level.tls.client_certificate = Some(self.path(self.arg(stmt, 0)?))
            }
            "ssl_trusted_certificate" => {
                level.tls.trusted_certificate = Some(self.path(self.arg(stmt, 0)?))
            }
            "ssl_verify_depth" => {
                level.tls.verify_depth = Some(self.number(stmt, 0)?);
            }
            "ssl_crl" => level.tls.crl = Some(self.path(self.arg(stmt, 0)?)),
            _ => {}
        }
        Ok(())
    }

    /// Pairs the level's certificates with their keys, as nginx does when it merges the level.
    pub(super) fn pair_certificates(&mut self, mut level: TlsLevel) -> Result<Tls> {
        if level.certificates.is_empty() {
            return Ok(level.tls);
        }
        if level.keys.len() < level.certificates.len() {
            let (cert, stmt) = &level.certificates[level.keys.len()];
            return Err(self.error(
                stmt,
                format!("no \"ssl_certificate_key\" is defined for certificate \"{cert}\""),
            ));
        }
        let pairs = level
            .certificates
            .iter()
            .zip(&level.keys)
            .map(|((cert, stmt), key)| Certificate {
                certificate: self.path(cert),
                key: self.path(key),
                chain: None,
                origin: Some(stmt.origin.clone()),
            })
            .collect();
        level.tls.certificates = Some(pairs);
        Ok(level.tls)
    }
}

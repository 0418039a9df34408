//! The checks types cannot express, made once when a config is loaded: names that must resolve,
//! values that must be in range, listeners that must not conflict. After them the data plane
//! trusts the model.
//!
//! The first problem found is returned, with the origin of the item at fault, as nginx stops at
//! the first `[emerg]`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use regex::RegexBuilder;

use super::template::{Context, Template, Variable};
use super::*;
use crate::compile::diag::Diagnostic;

type Check = Result<(), Diagnostic>;

/// Checks a whole model.
pub fn validate(model: &Appliance) -> Check {
    let declared = rewrite::declared_variables(&model.http);
    let defined = Defined::Names(&declared);
    table_variables(&Tables::of_http(&model.http), defined)?;
    let stream_names = stream_variables(&model.stream);
    let stream_defined = Defined::Names(&stream_names);
    table_variables(&Tables::of_stream(&model.stream), stream_defined)?;
    let http_pools = upstreams(&model.http.upstreams, false, defined)?;
    let stream_pools = upstreams(&model.stream.upstreams, true, stream_defined)?;
    http(model, &http_pools, defined)?;
    stream(&model.stream, &stream_pools, stream_defined)?;
    stream_limits(model)?;
    listeners_do_not_clash(model)?;
    if let Some(ha) = &model.ha {
        ha_section(ha)?;
    }
    if let Some(admin) = &model.admin {
        admin_section(admin)?;
    }
    if let Some(t) = model.global.worker_threads {
        if t == 0 {
            return Err(Diagnostic::error("worker_threads must be at least 1")
                .about("global.worker_threads"));
        }
    }
    if let Some(affinity) = &model.global.worker_cpu_affinity {
        cpu_affinity(affinity).map_err(|e| e.about("global.worker_cpu_affinity"))?;
    }
    Ok(())
}

/// The `map`, `geo` and `split_clients` variables of `[http]` or of `[stream]`, each with
/// the other's variables.
struct Tables<'a> {
    section: &'static str,
    context: Context,
    maps: &'a [MapVar],
    geo: &'a [GeoVar],
    split_clients: &'a [SplitClients],
}

impl<'a> Tables<'a> {
    fn of_http(http: &'a Http) -> Self {
        Tables {
            section: "http",
            context: Context::Http,
            maps: &http.maps,
            geo: &http.geo,
            split_clients: &http.split_clients,
        }
    }

    fn of_stream(stream: &'a Stream) -> Self {
        Tables {
            section: "stream",
            context: Context::Stream,
            maps: &stream.maps,
            geo: &stream.geo,
            split_clients: &stream.split_clients,
        }
    }
}

/// The names the stream's tables define.
pub fn stream_variables(stream: &Stream) -> HashSet<String> {
    let maps = stream.maps.iter().map(|m| &m.variable);
    let geo = stream.geo.iter().map(|g| &g.variable);
    let splits = stream.split_clients.iter().map(|s| &s.variable);
    maps.chain(geo).chain(splits).cloned().collect()
}

/// The variables of `map`, `geo` and `split_clients`: names nginx would take (or that two of
/// them define), keys and networks it would refuse, templates that do not parse, and
/// variables that (through one another) need their own value.
fn table_variables(tables: &Tables<'_>, defined: Defined<'_>) -> Check {
    let Tables {
        section,
        context,
        maps,
        geo,
        split_clients,
    } = *tables;
    let mut names = HashSet::new();
    let mut check_name = |name: &str, at: Option<&Origin>, key: &str| {
        let fail = |message: String| {
            Err(Diagnostic::error(message)
                .at_opt(at)
                .about(format!("{key}.variable")))
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return fail(format!("invalid variable name \"${name}\""));
        }
        if Variable::from_name(name).is_some_and(|v| v.in_context(context))
            || !names.insert(name.to_string())
        {
            return fail(format!("the duplicate \"{name}\" variable"));
        }
        Ok(())
    };
    let parse = |text: &str, at: Option<&Origin>, field: String| match Template::parse_for(
        context, text, defined,
    ) {
        Ok(_) => Ok(()),
        Err(e) => Err(Diagnostic::error(e.to_string()).at_opt(at).about(field)),
    };
    for (i, m) in maps.iter().enumerate() {
        let at = m.origin.as_ref();
        let key = format!("{section}.map[{i}]");
        check_name(&m.variable, at, &key)?;
        parse(&m.source, at, format!("{key}.source"))?;
        if let Some(default) = &m.default {
            parse(default, at, format!("{key}.default"))?;
        }
        let mut keys = HashSet::new();
        for (j, entry) in m.entries.iter().enumerate() {
            parse(&entry.value, at, format!("{key}.entries[{j}].value"))?;
            match entry.key(m.hostnames) {
                MapKey::Regex { pattern, caseless } => {
                    regex(pattern, caseless)
                        .map_err(|e| e.at_opt(at).about(format!("{key}.entries[{j}].key")))?;
                }
                other => {
                    if !keys.insert(format!("{other:?}")) {
                        return Err(Diagnostic::error(format!(
                            "conflicting parameter \"{}\"",
                            entry.key.to_ascii_lowercase()
                        ))
                        .at_opt(at)
                        .about(format!("{key}.entries[{j}].key")));
                    }
                }
            }
        }
    }
    for (i, g) in geo.iter().enumerate() {
        let at = g.origin.as_ref();
        let key = format!("{section}.geo[{i}]");
        check_name(&g.variable, at, &key)?;
        if let Some(source) = &g.source {
            parse(source, at, format!("{key}.source"))?;
        }
        for (j, entry) in g.entries.iter().enumerate() {
            if entry.delete && !entry.value.is_empty() {
                return Err(
                    Diagnostic::error("an entry that deletes a network has no value")
                        .at_opt(at)
                        .about(format!("{key}.entries[{j}]")),
                );
            }
        }
        if let Err((entry, message)) = g.table() {
            let field = match entry {
                Some(j) => format!("{key}.entries[{j}].network"),
                None => format!("{key}.proxies"),
            };
            return Err(Diagnostic::error(message).at_opt(at).about(field));
        }
    }
    for (i, split) in split_clients.iter().enumerate() {
        let at = split.origin.as_ref();
        let key = format!("{section}.split_clients[{i}]");
        check_name(&split.variable, at, &key)?;
        parse(&split.source, at, format!("{key}.source"))?;
        if let Err((part, message)) = split.bounds() {
            let field = match part {
                Some(j) => format!("{key}.parts[{j}].percent"),
                None => format!("{key}.parts"),
            };
            return Err(Diagnostic::error(message).at_opt(at).about(field));
        }
    }
    // A variable whose value needs itself, through its source or a value: nginx finds the
    // cycle while serving ("cycle while evaluating variable") and answers 500; here it is
    // refused. (geo and split_clients values are literal text; only their sources count.)
    let uses = |texts: Vec<&String>| -> Vec<String> {
        texts
            .into_iter()
            .filter_map(|t| Template::parse_for(context, t, defined).ok())
            .flat_map(|t| {
                t.variables()
                    .filter_map(|v| match v {
                        Variable::Declared(name) => Some(name.clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut by_name: HashMap<&str, (Vec<String>, Option<&Origin>, String)> = HashMap::new();
    for (i, m) in maps.iter().enumerate() {
        let texts = std::iter::once(&m.source)
            .chain(m.default.iter())
            .chain(m.entries.iter().map(|e| &e.value))
            .collect();
        let about = format!("{section}.map[{i}]");
        by_name.insert(&m.variable, (uses(texts), m.origin.as_ref(), about));
    }
    for (i, g) in geo.iter().enumerate() {
        let about = format!("{section}.geo[{i}]");
        let texts = g.source.iter().collect();
        by_name.insert(&g.variable, (uses(texts), g.origin.as_ref(), about));
    }
    for (i, split) in split_clients.iter().enumerate() {
        let about = format!("{section}.split_clients[{i}]");
        let texts = vec![&split.source];
        by_name.insert(&split.variable, (uses(texts), split.origin.as_ref(), about));
    }
    let mut order: Vec<&&str> = by_name.keys().collect();
    order.sort();
    for name in order {
        let (first, at, about) = &by_name[*name];
        let mut seen = HashSet::new();
        let mut todo = first.clone();
        while let Some(used) = todo.pop() {
            if used == *name {
                return Err(Diagnostic::error(format!(
                    "cycle while evaluating variable \"{name}\""
                ))
                .at_opt(*at)
                .about(about.clone()));
            }
            if seen.insert(used.clone()) {
                if let Some((more, _, _)) = by_name.get(used.as_str()) {
                    todo.extend(more.iter().cloned());
                }
            }
        }
    }
    Ok(())
}

/// The CPU numbers a `cpu_set_t` can hold, as nginx bounds `worker_cpu_affinity`.
pub const CPU_SETSIZE: usize = 1024;

fn cpu_affinity(affinity: &CpuAffinity) -> Check {
    let sets: Vec<&[usize]> = match affinity {
        CpuAffinity::Auto => Vec::new(),
        CpuAffinity::AutoFrom(cpus) => vec![cpus],
        CpuAffinity::PerWorker(sets) if sets.is_empty() => {
            return Err(Diagnostic::error(
                "worker_cpu_affinity.per_worker needs the CPUs of one worker at least",
            ))
        }
        CpuAffinity::PerWorker(sets) => sets.iter().map(Vec::as_slice).collect(),
    };
    if let Some(cpu) = sets
        .iter()
        .flat_map(|s| s.iter())
        .find(|c| **c >= CPU_SETSIZE)
    {
        return Err(Diagnostic::error(format!(
            "worker_cpu_affinity names CPU {cpu}; CPUs are numbered 0 to {}",
            CPU_SETSIZE - 1
        )));
    }
    Ok(())
}

fn upstreams<'a>(
    pools: &'a [Upstream],
    stream: bool,
    defined: Defined<'_>,
) -> Result<HashSet<&'a str>, Diagnostic> {
    let mut names = HashSet::new();
    let section = if stream { "stream" } else { "http" };
    for (i, pool) in pools.iter().enumerate() {
        let at = pool.origin.as_ref();
        let key = format!("{section}.upstream[{i}]");
        if !names.insert(pool.name.as_str()) {
            return Err(
                Diagnostic::error(format!("duplicate upstream \"{}\"", pool.name))
                    .at_opt(at)
                    .about(format!("{key}.name")),
            );
        }
        if pool.servers.is_empty() {
            return Err(Diagnostic::error(format!(
                "no servers are inside upstream \"{}\"",
                pool.name
            ))
            .at_opt(at));
        }
        match &pool.balance {
            Balance::IpHash if stream => {
                return Err(Diagnostic::error(
                    "ip_hash is not available in stream upstreams; use \"hash $remote_addr\"",
                )
                .at_opt(at)
                .about(format!("{key}.balance")));
            }
            Balance::Hash { key, .. } => {
                let context = if stream {
                    Context::Stream
                } else {
                    Context::Http
                };
                Template::parse_for(context, key, defined).map_err(|e| {
                    Diagnostic::error(e.to_string())
                        .at_opt(at)
                        .about(format!("{section}.upstream[{i}].balance"))
                })?;
            }
            _ => {}
        }
        let no_backup = matches!(
            pool.balance,
            Balance::IpHash | Balance::Hash { .. } | Balance::Random { .. }
        );
        for (j, server) in pool.servers.iter().enumerate() {
            let at = server.origin.as_ref().or(at);
            let key = format!("{key}.server[{j}]");
            server_address(&server.address, 80).map_err(|e| {
                Diagnostic::error(e)
                    .at_opt(at)
                    .about(format!("{key}.address"))
            })?;
            if server.weight == 0 {
                return Err(Diagnostic::error("invalid parameter \"weight=0\"")
                    .at_opt(at)
                    .about(format!("{key}.weight")));
            }
            if server.backup && no_backup {
                return Err(Diagnostic::error(format!(
                    "balancing method \"{}\" does not support the \"backup\" parameter",
                    pool.balance
                ))
                .at_opt(at)
                .about(format!("{key}.backup")));
            }
        }
        if pool.keepalive == Some(0) {
            return Err(
                Diagnostic::error("invalid value \"0\" in \"keepalive\" directive")
                    .at_opt(at)
                    .about(format!("{key}.keepalive")),
            );
        }
        if let Some(check) = &pool.health_check {
            health_check(check).map_err(|e| {
                e.at_opt(check.origin.as_ref().or(at))
                    .about(format!("{key}.health_check"))
            })?;
        }
        if let Some(sticky) = &pool.sticky {
            if stream {
                return Err(Diagnostic::error(
                    "sticky sessions need HTTP; a stream upstream cannot have them",
                )
                .at_opt(at)
                .about(format!("{key}.sticky")));
            }
            sticky_policy(sticky).map_err(|e| e.at_opt(at).about(format!("{key}.sticky")))?;
        }
        if let Some(d) = pool.drain_timeout {
            let s = d.get().as_secs_f64();
            if !(1.0..=3600.0).contains(&s) {
                return Err(Diagnostic::error(format!(
                    "drain_timeout {d} is out of range: connection draining lasts 1s to 3600s"
                ))
                .at_opt(at)
                .about(format!("{key}.drain_timeout")));
            }
        }
    }
    Ok(names)
}

/// Splits `host:port`, `host`, `[v6]:port` or `unix:/path`, as nginx's `ngx_parse_url` does for
/// upstream servers. Returns the host and port (port 0 for unix sockets).
pub fn server_address(address: &str, default_port: u16) -> Result<(String, u16), String> {
    if let Some(path) = address.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!("no path in the unix socket address \"{address}\""));
        }
        return Ok((address.to_string(), 0));
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let close = rest
            .find(']')
            .ok_or_else(|| format!("invalid IPv6 address in \"{address}\""))?;
        let host = &rest[..close];
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("invalid IPv6 address in \"{address}\""))?;
        match &rest[close + 1..] {
            "" => (host, None),
            p if p.starts_with(':') => (host, Some(&p[1..])),
            _ => return Err(format!("invalid host in \"{address}\"")),
        }
    } else {
        match address.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (address, None),
        }
    };
    if host.is_empty() {
        return Err(format!("no host in \"{address}\""));
    }
    if host.contains('/') || host.contains(' ') {
        return Err(format!("invalid host in \"{address}\""));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port in \"{address}\""))?,
    };
    Ok((host.to_string(), port))
}

pub fn health_check(check: &HealthCheck) -> Check {
    let interval = check.interval.get();
    let timeout = check.timeout.get();
    if interval.is_zero() || timeout.is_zero() {
        return Err(Diagnostic::error(
            "a health check's interval and timeout must be above zero",
        ));
    }
    if timeout >= interval {
        return Err(Diagnostic::error(format!(
            "health check timeout {} must be less than its interval {}",
            check.timeout, check.interval
        )));
    }
    if check.healthy_threshold == 0 || check.unhealthy_threshold == 0 {
        return Err(Diagnostic::error(
            "health check thresholds must be at least 1",
        ));
    }
    if check.success_codes.is_empty() {
        return Err(Diagnostic::error(
            "health check success_codes is empty: nothing would ever be healthy",
        ));
    }
    Ok(())
}

pub fn sticky_policy(sticky: &Sticky) -> Check {
    match sticky {
        Sticky::LbCookie {
            cookie,
            expires,
            domain,
            path,
            ..
        } => {
            cookie_name(cookie)?;
            for (what, value) in [("domain", domain), ("path", path)] {
                if let Some(v) = value {
                    cookie_attribute(what, v)?;
                }
            }
            if let Some(e) = expires {
                let s = e.get().as_secs_f64();
                if !(1.0..=604_800.0).contains(&s) {
                    return Err(Diagnostic::error(format!(
                        "sticky cookie expiry {e} is out of range: 1s to 7d"
                    )));
                }
            }
            Ok(())
        }
        Sticky::AppCookie { cookie, .. } => {
            cookie_name(cookie)?;
            // The balancer's own cookie rides beside the application's (see proxy::sticky).
            if cookie == "AWSELB" {
                return Err(Diagnostic::error(
                    "app_cookie \"AWSELB\" is the name of the balancer's own cookie",
                ));
            }
            Ok(())
        }
    }
}

/// A cookie attribute value (RFC 6265 `av-octet`): printable, no `;`.
fn cookie_attribute(what: &str, value: &str) -> Check {
    if value.is_empty()
        || !value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b';')
    {
        return Err(Diagnostic::error(format!(
            "sticky cookie {what} \"{value}\" is not a valid cookie attribute value"
        )));
    }
    Ok(())
}

fn cookie_name(name: &str) -> Check {
    let token = |b: u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(Diagnostic::error(format!(
            "\"{name}\" is not a valid cookie name"
        )));
    }
    Ok(())
}

fn http(model: &Appliance, pools: &HashSet<&str>, defined: Defined<'_>) -> Check {
    let h = &model.http;
    proxy_settings(&h.proxy, None, "http.proxy", defined)?;
    headers(&h.add_header, None, "http.add_header", defined)?;
    access_rules(&h.access, None, "http.access")?;
    real_ip(&h.real_ip, None, "http.real_ip")?;
    root(&h.root, None, "http.root", defined)?;
    auth(&h.auth, None, "http.auth", defined)?;
    // nginx never merges the http level into another, so it does not check the forms apart.
    secure_link(&h.secure_link, None, "http.secure_link", defined, false)?;
    expires(&h.expires, None, "http.expires", defined)?;
    gzip(&h.gzip, None, "http.gzip")?;
    autoindex(&h.autoindex, None, "http.autoindex")?;
    conditional(&h.conditional, None, "http.conditional")?;
    error_pages(&h.error_page, None, "http.error_page", defined)?;
    file_settings(None, &h.index, &None, None, "http", defined)?;
    let formats: HashSet<&str> = h.log_format.iter().map(|f| f.name.as_str()).collect();
    for (i, f) in h.log_format.iter().enumerate() {
        Template::parse_in(&f.template, defined).map_err(|e| {
            Diagnostic::error(e.to_string()).about(format!("http.log_format[{i}].template"))
        })?;
    }
    access_logs(&h.access_log, &formats, None, "http.access_log")?;
    let zones = limit_zones(h, defined)?;
    limits(&h.limits, &zones, None, "http.limits")?;
    for (i, server) in h.servers.iter().enumerate() {
        let at = server.origin.as_ref();
        let key = format!("http.server[{i}]");
        if server.listen.is_empty() {
            return Err(
                Diagnostic::error("a server needs at least one listen address")
                    .at_opt(at)
                    .about(&key),
            );
        }
        for (j, l) in server.listen.iter().enumerate() {
            if l.ssl && certificates_of(&server.tls, &h.tls).is_none() {
                return Err(Diagnostic::error(format!(
                    "no \"ssl_certificate\" is defined for the \"listen ... ssl\" directive ({})",
                    l.address
                ))
                .at_opt(at)
                .about(format!("{key}.listen[{j}]")));
            }
        }
        for (j, name) in server.server_name.iter().enumerate() {
            if let Some(re) = name.strip_prefix('~') {
                regex(re, false)
                    .map_err(|e| e.at_opt(at).about(format!("{key}.server_name[{j}]")))?;
            }
        }
        proxy_settings(&server.proxy, at, &format!("{key}.proxy"), defined)?;
        headers(
            &server.add_header,
            at,
            &format!("{key}.add_header"),
            defined,
        )?;
        access_rules(&server.access, at, &format!("{key}.access"))?;
        real_ip(&server.real_ip, at, &format!("{key}.real_ip"))?;
        limits(&server.limits, &zones, at, &format!("{key}.limits"))?;
        root(&server.root, at, &format!("{key}.root"), defined)?;
        auth(&server.auth, at, &format!("{key}.auth"), defined)?;
        let secure_link_key = format!("{key}.secure_link");
        secure_link(&server.secure_link, at, &secure_link_key, defined, true)?;
        expires(&server.expires, at, &format!("{key}.expires"), defined)?;
        valid_referers(server, at, &key)?;
        gzip(&server.gzip, at, &format!("{key}.gzip"))?;
        autoindex(&server.autoindex, at, &format!("{key}.autoindex"))?;
        conditional(&server.conditional, at, &format!("{key}.conditional"))?;
        error_pages(
            &server.error_page,
            at,
            &format!("{key}.error_page"),
            defined,
        )?;
        file_settings(None, &server.index, &server.try_files, at, &key, defined)?;
        access_logs(
            &server.access_log,
            &formats,
            at,
            &format!("{key}.access_log"),
        )?;
        if let Some(r) = &server.return_ {
            return_directive(r, defined)
                .map_err(|e| e.at_opt(at).about(format!("{key}.return")))?;
        }
        let scope = ScriptScope {
            pools,
            formats: &formats,
            defined,
            in_location: false,
        };
        script(server, &server.script, &scope, at, &key)?;
        locations(
            &server.locations,
            pools,
            &formats,
            &zones,
            at,
            &key,
            defined,
        )?;
    }
    Ok(())
}

/// The `valid_referers` of a server and of its locations, read with the server's names, as
/// nginx reads them when it merges the levels.
fn valid_referers(server: &VirtualServer, at: Option<&Origin>, key: &str) -> Check {
    fn level(
        words: &Option<Vec<String>>,
        names: &[String],
        at: Option<&Origin>,
        key: &str,
    ) -> Check {
        let Some(words) = words else {
            return Ok(());
        };
        let fail = |e: Diagnostic| e.at_opt(at).about(format!("{key}.valid_referers"));
        let rules = referers::Rules::parse(words, names).map_err(|e| fail(Diagnostic::error(e)))?;
        for pattern in &rules.regexes {
            regex(pattern, true).map_err(fail)?;
        }
        Ok(())
    }
    fn walk(
        list: &[Location],
        names: &[String],
        parent: Option<&Origin>,
        parent_key: &str,
    ) -> Check {
        for (i, loc) in list.iter().enumerate() {
            let at = loc.origin.as_ref().or(parent);
            let key = format!("{parent_key}.location[{i}]");
            level(&loc.valid_referers, names, at, &key)?;
            walk(&loc.locations, names, at, &key)?;
        }
        Ok(())
    }
    level(&server.valid_referers, &server.server_name, at, key)?;
    walk(&server.locations, &server.server_name, at, key)
}

/// The certificates a server ends up with after inheriting from `[http]`.
pub fn certificates_of<'a>(server: &'a Tls, http: &'a Tls) -> Option<&'a Vec<Certificate>> {
    server
        .certificates
        .as_ref()
        .or(http.certificates.as_ref())
        .filter(|c| !c.is_empty())
}

fn locations(
    list: &[Location],
    pools: &HashSet<&str>,
    formats: &HashSet<&str>,
    zones: &ZoneNames<'_>,
    parent: Option<&Origin>,
    parent_key: &str,
    defined: Defined<'_>,
) -> Check {
    for (i, loc) in list.iter().enumerate() {
        let at = loc.origin.as_ref().or(parent);
        let key = format!("{parent_key}.location[{i}]");
        match loc.kind {
            LocationKind::Regex => regex(&loc.path, false).map(|_| ()),
            LocationKind::RegexCaseless => regex(&loc.path, true).map(|_| ()),
            _ if loc.path.is_empty() => Err(Diagnostic::error("a location needs a path")),
            _ => Ok(()),
        }
        .map_err(|e| e.at_opt(at).about(format!("{key}.path")))?;
        if loc.kind == LocationKind::Named {
            let fail = |message: String| Err(Diagnostic::error(message).at_opt(at).about(&key));
            if !loc.path.starts_with('@') {
                return fail(format!(
                    "the name of named location \"{}\" must begin with \"@\"",
                    loc.path
                ));
            }
            if parent_key.contains(".location[") {
                return fail(format!(
                    "named location \"{}\" can be on the server level only",
                    loc.path
                ));
            }
            if let Some(inner) = loc.locations.first() {
                return fail(format!(
                    "location \"{}\" cannot be inside the named location \"{}\"",
                    inner.path, loc.path
                ));
            }
        }
        if loc.kind == LocationKind::Exact && !loc.locations.is_empty() {
            return Err(Diagnostic::error(format!(
                "location \"{}\" cannot be inside the exact location \"{}\"",
                loc.locations[0].path, loc.path
            ))
            .at_opt(at)
            .about(format!("{key}.location[0]")));
        }
        if let Some(text) = &loc.proxy.pass_template {
            let about = || format!("{key}.proxy.pass_template");
            if loc.proxy.pass.is_some() {
                return Err(Diagnostic::error("\"proxy_pass\" directive is duplicate")
                    .at_opt(at)
                    .about(about()));
            }
            Template::parse_in(text, defined)
                .map_err(|e| Diagnostic::error(e.to_string()).at_opt(at).about(about()))?;
        }
        if let Some(pass) = &loc.proxy.pass {
            let pass_key = || format!("{key}.proxy.pass");
            proxy_pass(pass, pools).map_err(|e| e.at_opt(at).about(pass_key()))?;
            if pass.uri.is_some() && (loc.kind.is_regex() || loc.kind == LocationKind::Named) {
                return Err(Diagnostic::error(
                    "\"proxy_pass\" cannot have URI part in location given by regular \
                     expression, or inside named location",
                )
                .at_opt(at)
                .about(pass_key()));
            }
        }
        proxy_settings(&loc.proxy, at, &format!("{key}.proxy"), defined)?;
        headers(&loc.add_header, at, &format!("{key}.add_header"), defined)?;
        access_rules(&loc.access, at, &format!("{key}.access"))?;
        real_ip(&loc.real_ip, at, &format!("{key}.real_ip"))?;
        limits(&loc.limits, zones, at, &format!("{key}.limits"))?;
        root(&loc.root, at, &format!("{key}.root"), defined)?;
        auth(&loc.auth, at, &format!("{key}.auth"), defined)?;
        let secure_link_key = format!("{key}.secure_link");
        secure_link(&loc.secure_link, at, &secure_link_key, defined, true)?;
        expires(&loc.expires, at, &format!("{key}.expires"), defined)?;
        gzip(&loc.gzip, at, &format!("{key}.gzip"))?;
        autoindex(&loc.autoindex, at, &format!("{key}.autoindex"))?;
        conditional(&loc.conditional, at, &format!("{key}.conditional"))?;
        error_pages(&loc.error_page, at, &format!("{key}.error_page"), defined)?;
        file_settings(
            loc.alias.as_deref(),
            &loc.index,
            &loc.try_files,
            at,
            &key,
            defined,
        )?;
        if loc.alias.is_some() && (loc.kind == LocationKind::Named || loc.root.is_some()) {
            return Err(Diagnostic::error(
                "a location takes alias or root, and a named location no alias",
            )
            .at_opt(at)
            .about(format!("{key}.alias")));
        }
        access_logs(&loc.access_log, formats, at, &format!("{key}.access_log"))?;
        if let Some(r) = &loc.return_ {
            return_directive(r, defined)
                .map_err(|e| e.at_opt(at).about(format!("{key}.return")))?;
        }
        let scope = ScriptScope {
            pools,
            formats,
            defined,
            in_location: true,
        };
        script(loc, &loc.script, &scope, at, &key)?;
        locations(&loc.locations, pools, formats, zones, at, &key, defined)?;
    }
    Ok(())
}

/// A `root`: a path, which may hold variables.
fn root(root: &Option<String>, at: Option<&Origin>, key: &str, defined: Defined<'_>) -> Check {
    let Some(root) = root else {
        return Ok(());
    };
    if root.is_empty() {
        return Err(Diagnostic::error("root needs a path").at_opt(at).about(key));
    }
    Template::parse_in(root, defined)
        .map(|_| ())
        .map_err(|e| Diagnostic::error(e.to_string()).at_opt(at).about(key))
}

/// A level's `auth_basic` realm and user file: templates that parse; the file not empty. Its
/// `auth_request` URI not empty; what `auth_request_set` assigns a variable of the config's
/// own, from a template that parses.
/// A level's `secure_link` settings: its templates and, for a server or location, the two
/// forms apart.
fn secure_link(
    s: &SecureLink,
    at: Option<&Origin>,
    key: &str,
    defined: Defined<'_>,
    merged: bool,
) -> Check {
    if merged {
        s.check()
            .map_err(|e| Diagnostic::error(e).at_opt(at).about(key))?;
    }
    for (text, field) in [(&s.link, "link"), (&s.md5, "md5")] {
        if let Some(text) = text {
            Template::parse_in(text, defined).map_err(|e| {
                Diagnostic::error(e.to_string())
                    .at_opt(at)
                    .about(format!("{key}.{field}"))
            })?;
        }
    }
    Ok(())
}

fn auth(a: &Auth, at: Option<&Origin>, key: &str, defined: Defined<'_>) -> Check {
    let check = |text: &Option<String>, field: &str| -> Check {
        let Some(text) = text else {
            return Ok(());
        };
        let about = format!("{key}.{field}");
        if field == "basic_user_file" && text.is_empty() {
            return Err(Diagnostic::error("basic_user_file needs a path")
                .at_opt(at)
                .about(about));
        }
        Template::parse_in(text, defined)
            .map(|_| ())
            .map_err(|e| Diagnostic::error(e.to_string()).at_opt(at).about(about))
    };
    check(&a.basic, "basic")?;
    check(&a.basic_user_file, "basic_user_file")?;
    if a.request.as_deref() == Some("") {
        return Err(Diagnostic::error("request needs a URI (or \"off\")")
            .at_opt(at)
            .about(format!("{key}.request")));
    }
    for (i, set) in a.request_set.iter().flatten().enumerate() {
        let about = format!("{key}.request_set[{i}]");
        let builtin = crate::config::template::Variable::from_name(&set.variable)
            .is_some_and(|v| !v.is_prefixed())
            && !crate::config::rewrite::settable_builtin(&set.variable);
        if set.variable.is_empty() || set.variable.starts_with('$') || builtin {
            let error = format!(
                "\"{}\" cannot be set: name a variable of the config's own, without its $",
                set.variable
            );
            return Err(Diagnostic::error(error).at_opt(at).about(about));
        }
        check(&Some(set.value.clone()), &format!("request_set[{i}].value"))?;
    }
    Ok(())
}

/// `alias`, `index` and `try_files`: templates that parse; no empty index; at least a file
/// and a fallback to try, the fallback's `=code` a number nginx takes.
fn file_settings(
    alias: Option<&str>,
    index: &Option<Vec<String>>,
    try_files: &Option<Vec<String>>,
    at: Option<&Origin>,
    key: &str,
    defined: Defined<'_>,
) -> Check {
    let fail = |field: &str, message: String| {
        Err(Diagnostic::error(message)
            .at_opt(at)
            .about(format!("{key}.{field}")))
    };
    let parse = |field: &str, text: &str| match Template::parse_in(text, defined) {
        Ok(_) => Ok(()),
        Err(e) => fail(field, e.to_string()),
    };
    if let Some(alias) = alias {
        parse("alias", alias)?;
    }
    for name in index.iter().flatten() {
        if name.is_empty() {
            return fail("index", "an index file needs a name".to_string());
        }
        parse("index", name)?;
    }
    if let Some(list) = try_files {
        if list.len() < 2 {
            return fail(
                "try_files",
                "try_files needs a file and what to do when none exists".to_string(),
            );
        }
        for entry in list {
            parse("try_files", entry)?;
        }
        if let Some(code) = list.last().and_then(|l| l.strip_prefix('=')) {
            if code.parse::<u16>().map_or(true, |c| c > 999) {
                return fail("try_files", format!("invalid code \"={code}\""));
            }
        }
    }
    Ok(())
}

/// A level's `error_page` list: statuses nginx accepts, a status to answer with that can be
/// sent, a target that parses.
fn error_pages(
    list: &Option<Vec<ErrorPage>>,
    at: Option<&Origin>,
    key: &str,
    defined: Defined<'_>,
) -> Check {
    for (i, page) in list.iter().flatten().enumerate() {
        let fail = |message: String| {
            Err(Diagnostic::error(message)
                .at_opt(at)
                .about(format!("{key}[{i}]")))
        };
        if page.codes.is_empty() {
            return fail("error_page needs at least one status in codes".to_string());
        }
        for code in &page.codes {
            if let Err(e) = ErrorPage::check_code(*code) {
                return fail(e);
            }
        }
        if let Some(PageStatus::Code(code)) = page.status {
            if !(100..=999).contains(&code) {
                return fail(format!(
                    "status {code} is not one an HTTP response can have"
                ));
            }
        }
        if page.target.is_empty() {
            return fail("error_page needs a target".to_string());
        }
        if let Err(e) = Template::parse_in(&page.target, defined) {
            return fail(e.to_string());
        }
    }
    Ok(())
}

/// A level's `expires`: `[modified] value`, the value a template or one nginx reads.
fn expires(text: &Option<String>, at: Option<&Origin>, key: &str, defined: Defined<'_>) -> Check {
    let Some(text) = text else {
        return Ok(());
    };
    let fail = |message: String| Err(Diagnostic::error(message).at_opt(at).about(key));
    let (modified, value) = match super::expires::split(text) {
        Ok(parts) => parts,
        Err(e) => return fail(format!("expires: {e}")),
    };
    match Template::parse_in(value, defined) {
        Err(e) => fail(e.to_string()),
        Ok(t) if t.variables().next().is_some() => Ok(()),
        Ok(_) => match super::expires::parse(value, modified) {
            Ok(_) => Ok(()),
            Err(e) => fail(format!("expires: {e}")),
        },
    }
}

/// What a level's script may refer to.
struct ScriptScope<'a> {
    pools: &'a HashSet<&'a str>,
    formats: &'a HashSet<&'a str>,
    defined: Defined<'a>,
    /// A location's `if` blocks may change its settings; a server's may not.
    in_location: bool,
}

/// A level with a `return` field and a script: they may not both be set, as the order
/// between them would be unclear.
trait HasReturn {
    fn has_return(&self) -> bool;
}

impl HasReturn for VirtualServer {
    fn has_return(&self) -> bool {
        self.return_.is_some()
    }
}

impl HasReturn for Location {
    fn has_return(&self) -> bool {
        self.return_.is_some()
    }
}

/// The rewrite module's directives at `key`: regexes that compile, templates that parse,
/// names `set` may assign, conditions nginx would read, and `if` blocks' settings.
fn script(
    level: &impl HasReturn,
    steps: &[Step],
    scope: &ScriptScope<'_>,
    at: Option<&Origin>,
    key: &str,
) -> Check {
    if level.has_return() && !steps.is_empty() {
        return Err(Diagnostic::error(
            "a level with a script writes its return as a step of the script",
        )
        .at_opt(at)
        .about(format!("{key}.return")));
    }
    steps_check(steps, scope, at, &format!("{key}.script"))
}

fn steps_check(steps: &[Step], scope: &ScriptScope<'_>, at: Option<&Origin>, key: &str) -> Check {
    let template = |text: &str, key: &str| {
        Template::parse_in(text, scope.defined)
            .map(|_| ())
            .map_err(|e| Diagnostic::error(e.to_string()).at_opt(at).about(key))
    };
    for (i, step) in steps.iter().enumerate() {
        let key = format!("{key}[{i}]");
        match step {
            Step::Rewrite(r) => {
                let key = format!("{key}.rewrite");
                regex(&r.regex, false).map_err(|e| e.at_opt(at).about(format!("{key}.regex")))?;
                if r.replacement.is_empty() {
                    return Err(Diagnostic::error("empty replacement")
                        .at_opt(at)
                        .about(format!("{key}.replacement")));
                }
                template(&r.replacement, &format!("{key}.replacement"))?;
            }
            Step::Set(set) => {
                let key = format!("{key}.set");
                let name = set.variable.as_str();
                if name.is_empty() || name.contains('$') {
                    return Err(
                        Diagnostic::error(format!("invalid variable name \"${name}\""))
                            .at_opt(at)
                            .about(format!("{key}.variable")),
                    );
                }
                let builtin = Variable::from_name(name).is_some_and(|v| !v.is_prefixed());
                if builtin && !rewrite::settable_builtin(name) {
                    return Err(
                        Diagnostic::error(format!("the duplicate \"{name}\" variable"))
                            .at_opt(at)
                            .about(format!("{key}.variable")),
                    );
                }
                template(&set.value, &format!("{key}.value"))?;
            }
            Step::If(block) => {
                let key = format!("{key}.if");
                let condition = rewrite::Condition::parse(&block.condition).map_err(|e| {
                    Diagnostic::error(e)
                        .at_opt(at)
                        .about(format!("{key}.condition"))
                })?;
                for text in condition.templates() {
                    template(text, &format!("{key}.condition"))?;
                }
                if let rewrite::Condition::Matches {
                    regex: pattern,
                    caseless,
                    ..
                } = condition
                {
                    regex(pattern, caseless)
                        .map_err(|e| e.at_opt(at).about(format!("{key}.condition")))?;
                }
                if block.has_settings() && !scope.in_location {
                    return Err(Diagnostic::error(
                        "a server's if block may hold only rewrite, set, break, return and if",
                    )
                    .at_opt(at)
                    .about(&key));
                }
                if let Some(pass) = &block.proxy_pass {
                    proxy_pass(pass, scope.pools)
                        .map_err(|e| e.at_opt(at).about(format!("{key}.proxy_pass")))?;
                    if pass.uri.is_some() {
                        return Err(Diagnostic::error(
                            "\"proxy_pass\" cannot have URI part inside \"if\" statement",
                        )
                        .at_opt(at)
                        .about(format!("{key}.proxy_pass")));
                    }
                }
                headers(
                    &block.add_header,
                    at,
                    &format!("{key}.add_header"),
                    scope.defined,
                )?;
                access_logs(
                    &block.access_log,
                    scope.formats,
                    at,
                    &format!("{key}.access_log"),
                )?;
                expires(&block.expires, at, &format!("{key}.expires"), scope.defined)?;
                error_pages(
                    &block.error_page,
                    at,
                    &format!("{key}.error_page"),
                    scope.defined,
                )?;
                steps_check(&block.script, scope, at, &format!("{key}.script"))?;
            }
            Step::Return(r) => {
                return_directive(r, scope.defined)
                    .map_err(|e| e.at_opt(at).about(format!("{key}.return")))?;
            }
            Step::Break(true) => {}
            Step::Break(false) => {
                return Err(
                    Diagnostic::error("break = false is not a step: leave it out")
                        .at_opt(at)
                        .about(&key),
                );
            }
        }
    }
    Ok(())
}

fn regex(pattern: &str, caseless: bool) -> Result<regex::Regex, Diagnostic> {
    RegexBuilder::new(pattern)
        .case_insensitive(caseless)
        .build()
        .map_err(|e| {
            Diagnostic::error(format!(
                "regular expression \"{pattern}\" cannot be compiled: {}",
                e.to_string().lines().last().unwrap_or("invalid")
            ))
        })
}

fn proxy_pass(pass: &ProxyPass, pools: &HashSet<&str>) -> Check {
    if pass.host.contains('$') || pass.uri.as_deref().is_some_and(|u| u.contains('$')) {
        return Err(Diagnostic::error(format!(
            "proxy_pass with variables (\"{pass}\") is not supported: name an upstream or an address"
        )));
    }
    if pools.contains(pass.host.as_str()) {
        return Ok(());
    }
    server_address(&pass.host, pass.scheme.default_port())
        .map(|_| ())
        .map_err(Diagnostic::error)
}

/// The `proxy` settings written at `key` (`http.proxy`, `http.server[0].proxy`).
fn proxy_settings(p: &Proxy, at: Option<&Origin>, key: &str, defined: Defined<'_>) -> Check {
    if let Some(headers) = &p.set_header {
        let place = |e: Diagnostic| e.at_opt(at).about(format!("{key}.set_header"));
        for (name, value) in headers {
            header_name(name).map_err(place)?;
            Template::parse_in(value, defined)
                .map_err(|e| place(Diagnostic::error(e.to_string())))?;
        }
    }
    if let Some(rules) = &p.redirect {
        proxy_redirects(rules, p.pass.is_some(), defined)
            .map_err(|e| e.at_opt(at).about(format!("{key}.redirect")))?;
    }
    if let Some(conds) = &p.next_upstream {
        if conds.contains(&NextUpstream::Off) && conds.len() > 1 {
            return Err(Diagnostic::error(
                "invalid value \"off\" in \"proxy_next_upstream\": \"off\" cannot be combined",
            )
            .at_opt(at)
            .about(format!("{key}.next_upstream")));
        }
    }
    for (name, t) in [
        ("connect_timeout", p.connect_timeout),
        ("send_timeout", p.send_timeout),
        ("read_timeout", p.read_timeout),
    ] {
        if t.is_some_and(|t| t.get().is_zero()) {
            return Err(
                Diagnostic::error(format!("proxy {name} must be above zero"))
                    .at_opt(at)
                    .about(format!("{key}.{name}")),
            );
        }
    }
    Ok(())
}

/// The `allow` and `deny` rules written at `key`.
/// The stream's `limit_conn`: zones of its own (their names apart from `[http]`'s, as nginx's
/// shared memory zones are one name space), and no setting only HTTP has.
fn stream_limits(model: &Appliance) -> Check {
    let zones = &model.stream.connection_zones;
    let stream_names = stream_variables(&model.stream);
    let mut seen = HashSet::new();
    for (i, z) in zones.iter().enumerate() {
        let about = format!("stream.connection_zone[{i}]");
        let at = z.origin.as_ref();
        let taken = model.http.request_zones.iter().map(|h| &h.name);
        let taken = taken.chain(model.http.connection_zones.iter().map(|h| &h.name));
        if !seen.insert(z.name.as_str()) || taken.into_iter().any(|n| *n == z.name) {
            return Err(Diagnostic::error(format!(
                "the shared memory zone \"{}\" is declared twice",
                z.name
            ))
            .at_opt(at)
            .about(&about));
        }
        Template::parse_for(Context::Stream, &z.key, Defined::Names(&stream_names)).map_err(
            |e| {
                Diagnostic::error(e.to_string())
                    .at_opt(at)
                    .about(format!("{about}.key"))
            },
        )?;
        if z.size.0 < 8 * 4096 {
            return Err(Diagnostic::error(format!(
                "zone \"{}\" is too small (at least 32k)",
                z.name
            ))
            .at_opt(at)
            .about(format!("{about}.size")));
        }
    }
    let names = ZoneNames {
        requests: HashSet::new(),
        connections: seen,
    };
    for (i, server) in model.stream.servers.iter().enumerate() {
        let at = server.origin.as_ref();
        let key = format!("stream.server[{i}].limits");
        let l = &server.limits;
        if l.requests.is_some()
            || l.request_status.is_some()
            || l.request_log_level.is_some()
            || l.request_dry_run.is_some()
            || l.connection_status.is_some()
        {
            return Err(Diagnostic::error(
                "a stream server's limits are connections, connection_log_level and connection_dry_run",
            )
            .at_opt(at)
            .about(&key));
        }
        limits(l, &names, at, &key)?;
    }
    Ok(())
}

/// The names of the limit zones, by kind.
struct ZoneNames<'a> {
    requests: HashSet<&'a str>,
    connections: HashSet<&'a str>,
}

/// The `limit_req_zone`s and `limit_conn_zone`s: one name, one zone (of either kind), keys
/// that parse, sizes nginx takes.
fn limit_zones<'a>(h: &'a Http, defined: Defined<'_>) -> Result<ZoneNames<'a>, Diagnostic> {
    let mut seen = HashSet::new();
    let request_zones = h
        .request_zones
        .iter()
        .map(|z| (z.origin.as_ref(), &z.name, &z.key, z.size, true));
    let connection_zones = h
        .connection_zones
        .iter()
        .map(|z| (z.origin.as_ref(), &z.name, &z.key, z.size, false));
    for (i, (at, name, key_text, size, requests)) in
        request_zones.chain(connection_zones).enumerate()
    {
        let about = if requests {
            format!("http.request_zone[{i}]")
        } else {
            format!("http.connection_zone[{}]", i - h.request_zones.len())
        };
        if !seen.insert(name) {
            return Err(Diagnostic::error(format!(
                "the shared memory zone \"{name}\" is declared twice"
            ))
            .at_opt(at)
            .about(&about));
        }
        Template::parse_in(key_text, defined).map_err(|e| {
            Diagnostic::error(e.to_string())
                .at_opt(at)
                .about(format!("{about}.key"))
        })?;
        if size.0 < 8 * 4096 {
            return Err(
                Diagnostic::error(format!("zone \"{name}\" is too small (at least 32k)"))
                    .at_opt(at)
                    .about(format!("{about}.size")),
            );
        }
    }
    Ok(ZoneNames {
        requests: h.request_zones.iter().map(|z| z.name.as_str()).collect(),
        connections: h.connection_zones.iter().map(|z| z.name.as_str()).collect(),
    })
}

/// A level's limits: zones that exist, each once per list, nginx's ranges.
fn limits(l: &Limits, zones: &ZoneNames<'_>, at: Option<&Origin>, key: &str) -> Check {
    let fail = |message: String, field: String| {
        Err(Diagnostic::error(message)
            .at_opt(at)
            .about(format!("{key}.{field}")))
    };
    for (i, limit) in l.requests.iter().flatten().enumerate() {
        if !zones.requests.contains(limit.zone.as_str()) {
            return fail(
                format!("no request_zone is named \"{}\"", limit.zone),
                format!("requests[{i}].zone"),
            );
        }
        if l.requests
            .iter()
            .flatten()
            .take(i)
            .any(|o| o.zone == limit.zone)
        {
            return fail(
                "\"limit_req\" directive is duplicate".into(),
                format!("requests[{i}]"),
            );
        }
        if limit.nodelay && limit.delay > 0 {
            return fail(
                "\"nodelay\" and \"delay\" cannot be set together".into(),
                format!("requests[{i}]"),
            );
        }
    }
    for (i, limit) in l.connections.iter().flatten().enumerate() {
        if !zones.connections.contains(limit.zone.as_str()) {
            return fail(
                format!("no connection_zone is named \"{}\"", limit.zone),
                format!("connections[{i}].zone"),
            );
        }
        if l.connections
            .iter()
            .flatten()
            .take(i)
            .any(|o| o.zone == limit.zone)
        {
            return fail(
                "\"limit_conn\" directive is duplicate".into(),
                format!("connections[{i}]"),
            );
        }
        if !(1..=65535).contains(&limit.max) {
            return fail(
                format!("invalid number of connections \"{}\"", limit.max),
                format!("connections[{i}].max"),
            );
        }
    }
    for (status, field) in [
        (l.request_status, "request_status"),
        (l.connection_status, "connection_status"),
    ] {
        if status.is_some_and(|s| !(400..=599).contains(&s)) {
            return fail("value must be between 400 and 599".into(), field.into());
        }
    }
    for (level, field) in [
        (l.request_log_level, "request_log_level"),
        (l.connection_log_level, "connection_log_level"),
    ] {
        if level.is_some_and(|l| !(LogLevel::Info..=LogLevel::Error).contains(&l)) {
            return fail(
                "the level must be info, notice, warn or error".into(),
                field.into(),
            );
        }
    }
    Ok(())
}

fn access_rules(list: &Option<Vec<AccessRule>>, at: Option<&Origin>, key: &str) -> Check {
    for (i, rule) in list.iter().flatten().enumerate() {
        rule.scope().map_err(|message| {
            Diagnostic::error(format!(
                "{message} in \"{}\"",
                if rule.deny() { "deny" } else { "allow" }
            ))
            .at_opt(at)
            .about(format!("{key}[{i}]"))
        })?;
    }
    Ok(())
}

/// The realip settings written at `key`: addresses the access rules' way (host names are
/// resolved by the nginx front end, not here), and a header name.
fn gzip(g: &super::Gzip, at: Option<&Origin>, key: &str) -> Check {
    match g.problem() {
        None => Ok(()),
        Some(problem) => Err(Diagnostic::error(problem).at_opt(at).about(key.to_string())),
    }
}

fn autoindex(a: &super::Autoindex, at: Option<&Origin>, key: &str) -> Check {
    match a.problem() {
        None => Ok(()),
        Some(problem) => Err(Diagnostic::error(problem).at_opt(at).about(key.to_string())),
    }
}

fn conditional(c: &super::Conditional, at: Option<&Origin>, key: &str) -> Check {
    match c.problem() {
        None => Ok(()),
        Some(problem) => Err(Diagnostic::error(problem).at_opt(at).about(key.to_string())),
    }
}

fn real_ip(r: &RealIp, at: Option<&Origin>, key: &str) -> Check {
    for (i, text) in r.from.iter().flatten().enumerate() {
        if text == "all" {
            return Err(Diagnostic::error(format!("invalid parameter \"{text}\""))
                .at_opt(at)
                .about(format!("{key}.from[{i}]")));
        }
        AccessScope::parse(text).map_err(|message| {
            Diagnostic::error(format!("{message} in set_real_ip_from"))
                .at_opt(at)
                .about(format!("{key}.from[{i}]"))
        })?;
    }
    if let Some(header) = &r.header {
        header_name(header).map_err(|e| e.at_opt(at).about(format!("{key}.header")))?;
    }
    Ok(())
}

/// A `proxy_redirect` list as written at one level: `location_pass` is whether that level has
/// its own proxy_pass, which a `default` stands for.
fn proxy_redirects(list: &[ProxyRedirect], location_pass: bool, defined: Defined<'_>) -> Check {
    for rule in list {
        match rule {
            ProxyRedirect::Keyword(k) if k == "off" && list.len() > 1 => {
                return Err(Diagnostic::error(
                    "\"proxy_redirect off\" cannot be combined with other rules",
                ))
            }
            ProxyRedirect::Keyword(k) if k == "off" => {}
            ProxyRedirect::Keyword(k) if k == "default" && !location_pass => {
                return Err(Diagnostic::error(
                    "\"proxy_redirect default\" needs a \"proxy_pass\" in the same location",
                ))
            }
            ProxyRedirect::Keyword(k) if k == "default" => {}
            ProxyRedirect::Keyword(k) => {
                return Err(Diagnostic::error(format!(
                "invalid parameter \"{k}\" in \"proxy_redirect\": \"default\", \"off\" or a pair"
            )))
            }
            ProxyRedirect::Replace { from, to } => {
                match from.strip_prefix('~') {
                    Some(re) => match re.strip_prefix('*') {
                        Some(re) => regex(re, true).map(|_| ())?,
                        None => regex(re, false).map(|_| ())?,
                    },
                    None => Template::parse_in(from, defined)
                        .map(|_| ())
                        .map_err(|e| Diagnostic::error(e.to_string()))?,
                }
                Template::parse_in(to, defined).map_err(|e| Diagnostic::error(e.to_string()))?;
            }
        }
    }
    Ok(())
}

fn header_name(name: &str) -> Check {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(Diagnostic::error(format!(
            "\"{name}\" is not a valid header name"
        )));
    }
    Ok(())
}

/// The `add_header` list written at `key`.
fn headers(
    list: &Option<Vec<AddHeader>>,
    at: Option<&Origin>,
    key: &str,
    defined: Defined<'_>,
) -> Check {
    for (i, h) in list.iter().flatten().enumerate() {
        let place = |e: Diagnostic| e.at_opt(at).about(format!("{key}[{i}]"));
        header_name(&h.name).map_err(place)?;
        Template::parse_in(&h.value, defined)
            .map_err(|e| place(Diagnostic::error(e.to_string())))?;
    }
    Ok(())
}

fn access_logs(
    logs: &Option<Vec<AccessLog>>,
    formats: &HashSet<&str>,
    at: Option<&Origin>,
    key: &str,
) -> Check {
    for (i, log) in logs.iter().flatten().enumerate() {
        if let Some(f) = &log.format {
            if !matches!(f.as_str(), "combined" | "json") && !formats.contains(f.as_str()) {
                return Err(Diagnostic::error(format!("unknown log format \"{f}\""))
                    .at_opt(at)
                    .about(format!("{key}[{i}].format")));
            }
        }
    }
    Ok(())
}

fn return_directive(r: &Return, defined: Defined<'_>) -> Check {
    if r.status > 999 {
        return Err(Diagnostic::error(format!(
            "invalid return code \"{}\"",
            r.status
        )));
    }
    if r.location.is_some() && !Return::is_redirect_status(r.status) {
        return Err(Diagnostic::error(format!(
            "return {} cannot have a location: only 301, 302, 303, 307 and 308 redirect",
            r.status
        )));
    }
    for text in r.location.iter().chain(r.body.iter()) {
        Template::parse_in(text, defined).map_err(|e| Diagnostic::error(e.to_string()))?;
    }
    Ok(())
}

fn stream(s: &Stream, pools: &HashSet<&str>, defined: Defined<'_>) -> Check {
    for (i, server) in s.servers.iter().enumerate() {
        let at = server.origin.as_ref();
        let key = format!("stream.server[{i}]");
        access_rules(&server.access, at, &format!("{key}.access"))?;
        let trusted = RealIp {
            from: server.real_ip_from.clone(),
            ..RealIp::default()
        };
        real_ip(&trusted, at, &format!("{key}.real_ip_from"))?;
        if server.listen.is_empty() {
            return Err(
                Diagnostic::error("a stream server needs at least one listen address")
                    .at_opt(at)
                    .about(&key),
            );
        }
        for (j, l) in server.listen.iter().enumerate() {
            let listen_key = || format!("{key}.listen[{j}]");
            if l.http2 || l.default_server {
                return Err(Diagnostic::error(format!(
                    "listen {}: http2 and default_server are HTTP parameters",
                    l.address
                ))
                .at_opt(at)
                .about(listen_key()));
            }
            if l.ssl
                && server
                    .tls
                    .certificates
                    .as_ref()
                    .is_none_or(|c| c.is_empty())
            {
                return Err(Diagnostic::error(format!(
                    "no \"ssl_certificate\" is defined for the \"listen ... ssl\" directive ({})",
                    l.address
                ))
                .at_opt(at)
                .about(listen_key()));
            }
        }
        let pass = match (&server.pass, &server.respond) {
            (Some(pass), None) => pass,
            (None, Some(text)) => {
                Template::parse_for(Context::Stream, text, defined).map_err(|e| {
                    let e = Diagnostic::error(e.to_string());
                    e.at_opt(at).about(format!("{key}.return"))
                })?;
                continue;
            }
            _ => {
                return Err(Diagnostic::error(
                    "a stream server has either pass (where connections go) or return (what \
                     they are sent)",
                )
                .at_opt(at)
                .about(&key))
            }
        };
        let place = |e: Diagnostic| e.at_opt(at).about(format!("{key}.pass"));
        if pass.contains('$') {
            // Where it points is known per connection; the variables must be the stream's.
            Template::parse_for(Context::Stream, pass, defined)
                .map_err(|e| place(Diagnostic::error(e.to_string())))?;
        } else if !pools.contains(pass.as_str()) {
            match server_address(pass, 0) {
                Ok((_, 0)) if !pass.starts_with("unix:") => {
                    return Err(place(Diagnostic::error(format!(
                        "no port in upstream \"{pass}\""
                    ))))
                }
                Ok(_) => {}
                Err(e) => return Err(place(Diagnostic::error(e))),
            }
        }
    }
    Ok(())
}

/// Two servers may share a socket (virtual hosts), but not a default, and a socket cannot speak
/// both HTTP and stream.
fn listeners_do_not_clash(model: &Appliance) -> Check {
    let mut defaults: HashMap<&ListenAddress, &Option<Origin>> = HashMap::new();
    let mut http_sockets = HashSet::new();
    for server in &model.http.servers {
        for l in &server.listen {
            if l.udp {
                let m = format!(
                    "listen {}: an http server does not listen on UDP",
                    l.address
                );
                return Err(Diagnostic::error(m).at_opt(server.origin.as_ref()));
            }
            http_sockets.insert(&l.address);
            if l.default_server && defaults.insert(&l.address, &server.origin).is_some() {
                return Err(Diagnostic::error(format!(
                    "a duplicate default server for {}",
                    l.address
                ))
                .at_opt(server.origin.as_ref()));
            }
        }
    }
    // A UDP socket and a TCP one may share an address and port.
    let mut stream_sockets = HashSet::new();
    for server in &model.stream.servers {
        for l in &server.listen {
            let at = server.origin.as_ref();
            if l.udp {
                let clash = [
                    ("backlog", l.backlog.is_some()),
                    ("ssl", l.ssl),
                    ("proxy_protocol", l.proxy_protocol),
                ]
                .into_iter()
                .find_map(|(name, set)| set.then_some(name));
                if let Some(name) = clash {
                    let m = format!(
                        "listen {}: \"{name}\" is incompatible with \"udp\"",
                        l.address
                    );
                    return Err(Diagnostic::error(m).at_opt(at));
                }
                if let ListenAddress::Unix(_) = l.address {
                    let m = format!(
                        "listen {}: UDP on a Unix socket is not supported",
                        l.address
                    );
                    return Err(Diagnostic::error(m).at_opt(at));
                }
            }
            let tcp_clash = !l.udp && http_sockets.contains(&l.address);
            if tcp_clash || !stream_sockets.insert((&l.address, l.udp)) {
                return Err(Diagnostic::error(format!(
                    "duplicate \"{}\" address and port pair",
                    l.address
                ))
                .at_opt(server.origin.as_ref()));
            }
        }
    }
    Ok(())
}

fn ha_section(ha: &Ha) -> Check {
    let at = ha.origin.as_ref();
    // Each problem points at the setting it is about, when an appliance.toml is read.
    let fail =
        |field: &str, m: String| Err(Diagnostic::error(m).at_opt(at).about(format!("ha.{field}")));
    if ha.priority == 0 {
        return fail("priority", "ha priority must be 1 to 255".into());
    }
    if ha.heartbeat_interval.get() < std::time::Duration::from_millis(10) {
        return fail(
            "heartbeat_interval",
            format!(
                "ha heartbeat_interval {} is too short: 10ms at least",
                ha.heartbeat_interval
            ),
        );
    }
    if ha.failure_threshold == 0 {
        return fail(
            "failure_threshold",
            "ha failure_threshold must be at least 1".into(),
        );
    }
    match ha.mode {
        HaMode::Local if ha.interface.is_none() => {
            return fail("mode", "ha mode \"local\" needs the interface the VIP goes on".into())
        }
        HaMode::Ec2 if ha.interface.is_some() => {
            return fail("interface", "ha mode \"ec2\" finds its interface through the instance metadata; remove \"interface\"".into())
        }
        _ => {}
    }
    if let Some(p) = ha.vip_prefix {
        let max = if ha.vip.is_ipv4() { 32 } else { 128 };
        if p > max {
            return fail(
                "vip_prefix",
                format!("ha vip_prefix /{p} is too long for {}", ha.vip),
            );
        }
    }
    if ha.vip.is_unspecified() || ha.vip.is_multicast() {
        return fail(
            "vip",
            format!("ha vip {} cannot be assigned to a host", ha.vip),
        );
    }
    if ha.peer.port() == 0 || ha.peer.ip().is_unspecified() {
        return fail(
            "peer",
            format!(
                "ha peer {} must name the other node's address and heartbeat port",
                ha.peer
            ),
        );
    }
    if let Some(bind) = ha.bind {
        if bind.is_ipv4() != ha.peer.is_ipv4() {
            return fail(
                "bind",
                format!(
                    "ha bind {bind} and peer {} are of different address families",
                    ha.peer
                ),
            );
        }
    }
    if let Some(id) = &ha.node_id {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return fail(
                "node_id",
                format!("ha node_id \"{id}\" must be 1 to 64 printable characters without spaces"),
            );
        }
    }
    if ha.secret.as_deref() == Some("") {
        return fail("secret", "ha secret is empty: remove it or set one".into());
    }
    if ha.ownership_check_interval.get() < ha.heartbeat_interval.get() {
        return fail(
            "ownership_check_interval",
            format!(
                "ha ownership_check_interval {} is shorter than heartbeat_interval {}",
                ha.ownership_check_interval, ha.heartbeat_interval
            ),
        );
    }
    match ha.mode {
        HaMode::Ec2 => {
            if !ha.vip.is_ipv4() {
                return fail(
                    "vip",
                    format!(
                        "ha mode \"ec2\" moves a secondary private IPv4 address; {} is IPv6",
                        ha.vip
                    ),
                );
            }
            if let Some(id) = &ha.eip_allocation_id {
                if !id.starts_with("eipalloc-") {
                    return fail(
                        "eip_allocation_id",
                        format!(
                            "ha eip_allocation_id \"{id}\" is not an allocation id (eipalloc-...)"
                        ),
                    );
                }
            }
        }
        HaMode::Local => {
            if ha.eip_allocation_id.is_some() {
                return fail("eip_allocation_id", 
                    "ha eip_allocation_id needs mode \"ec2\": an Elastic IP moves through the EC2 API"
                        .into(),
                );
            }
            if let Some(name) = &ha.interface {
                if name.is_empty() || name.len() > 15 || name.contains('/') {
                    return fail(
                        "interface",
                        format!("ha interface \"{name}\" is not an interface name"),
                    );
                }
            }
        }
    }
    Ok(())
}

fn admin_section(admin: &Admin) -> Check {
    let loopback = match admin.listen.ip() {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback(),
    };
    if !loopback && admin.token.is_none() && admin.token_file.is_none() {
        return Err(Diagnostic::error(format!(
            "the admin listener on {} is reachable from other hosts: set a token",
            admin.listen
        ))
        .at_opt(admin.origin.as_ref())
        .about("admin.listen"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_split_like_nginx() {
        assert_eq!(server_address("10.0.0.1", 80), Ok(("10.0.0.1".into(), 80)));
        assert_eq!(
            server_address("b.example:8080", 80),
            Ok(("b.example".into(), 8080))
        );
        assert_eq!(server_address("[::1]:81", 80), Ok(("::1".into(), 81)));
        assert_eq!(server_address("[::1]", 80), Ok(("::1".into(), 80)));
        assert!(server_address("10.0.0.1:0", 80).is_err());
        assert!(server_address("10.0.0.1:99999", 80).is_err());
        assert!(server_address("[zz]:1", 80).is_err());
        assert!(server_address(":80", 80).is_err());
        assert!(server_address("unix:", 80).is_err());
    }

    #[test]
    fn sticky_cookie_attributes_cannot_break_the_header() {
        let lb = |domain: &str, path: &str| {
            toml::from_str::<Sticky>(&format!(
                "mode = \"lb_cookie\"\ndomain = \"{domain}\"\npath = \"{path}\""
            ))
            .unwrap()
        };
        assert!(sticky_policy(&lb(".example.com", "/app")).is_ok());
        assert!(sticky_policy(&lb("a.com; Secure", "/")).is_err());
        assert!(sticky_policy(&lb("a.com", "/\\r\\nX: y")).is_err());
        let app = |name: &str| Sticky::AppCookie {
            cookie: name.to_string(),
            origin: None,
        };
        assert!(sticky_policy(&app("JSESSIONID")).is_ok());
        assert!(sticky_policy(&app("AWSELB")).is_err());
    }

    fn ha_error(section: &str) -> Option<String> {
        let text = format!("[ha]\n{section}");
        let model = Appliance::from_toml(&text, "ha.toml").expect("the test TOML parses");
        validate(&model).err().map(|d| d.message.clone())
    }

    #[test]
    fn ha_sections_are_checked_for_what_types_cannot_say() {
        let local = "mode = \"local\"\npeer = \"10.0.0.2:7000\"\nvip = \"10.0.0.100\"\ninterface = \"eth0\"\n";
        assert_eq!(ha_error(local), None);
        let ec2 = "mode = \"ec2\"\npeer = \"10.0.0.2:7000\"\nvip = \"10.0.0.100\"\neip_allocation_id = \"eipalloc-1\"\n";
        assert_eq!(ha_error(ec2), None);
        for (extra, complaint) in [
            ("node_id = \"a b\"\n", "node_id"),
            ("secret = \"\"\n", "secret"),
            (
                "ownership_check_interval = \"100ms\"\n",
                "ownership_check_interval",
            ),
            ("bind = \"[::]:7000\"\n", "families"),
        ] {
            let e = ha_error(&format!("{local}{extra}")).unwrap_or_default();
            assert!(e.contains(complaint), "{extra:?} gave {e:?}");
        }
        let e = ha_error(&local.replace("10.0.0.2:7000", "0.0.0.0:7000")).unwrap_or_default();
        assert!(e.contains("peer"), "{e}");
        let e =
            ha_error(&format!("{local}eip_allocation_id = \"eipalloc-1\"\n")).unwrap_or_default();
        assert!(e.contains("needs mode \"ec2\""), "{e}");
        let e = ha_error(&ec2.replace("10.0.0.100", "fd00::100")).unwrap_or_default();
        assert!(e.contains("IPv6"), "{e}");
        let e = ha_error(&ec2.replace("eipalloc-1", "52.1.2.3")).unwrap_or_default();
        assert!(e.contains("allocation id"), "{e}");
    }
}

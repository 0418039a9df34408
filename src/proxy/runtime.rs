//! The model compiled for serving: every lookup a request needs, built once per config.
//!
//! A [`Runtime`] is immutable; a reload builds a new one and swaps it in, and requests in flight
//! keep the one they started with. Settings are merged here, with nginx's inheritance rules
//! (http → server → location → nested location), so a request never walks the hierarchy.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::compile::diag::Diagnostic;
use crate::config::template::{Context, Template};
use crate::config::{
    self, AccessRule, AddHeader, Appliance, Balance, Client, Defined, HttpVersion, ListenAddress,
    Location, LocationKind, NextUpstream, Origin, Proxy, RealIp, Return, Scheme, Tls, Upstream,
    UpstreamServer, VirtualServer,
};

use super::access::AccessRules;
use super::balance::{Pool, ResolvedServer};
use super::client_cert::ClientVerification;
use super::drain::Inflight;
use super::header_names::HeaderNames;
use super::locations::{LocationTree, Spec};
use super::logging::{AccessLogs, Formats};
use super::realip::RealIpConf;
use super::redirect::RedirectRule;
use super::referers::ValidReferers;
use super::script::{IfLocation, Op, Script};
use super::server_names::ServerNames;
use super::sticky::Sticky;

/// Everything the HTTP data plane serves from.
pub struct Runtime {
    /// One per socket to bind, in config order.
    pub sockets: Vec<Socket>,
    pub pools: HashMap<String, Arc<UpstreamPool>>,
    /// The `stream {}` servers, in config order.
    pub streams: Vec<Arc<super::stream::StreamConf>>,
    /// The `http` level's access logs, for requests that reach no server.
    pub access_log: AccessLogs,
    /// The `map` variables.
    pub tables: super::tables::Tables,
}

/// A socket to listen on and the address configurations reachable through it. nginx binds a
/// wildcard (`0.0.0.0:80`) once and picks the configuration of the specific address a
/// connection arrived on, when one is configured, by the connection's local address.
pub struct Socket {
    pub bind: ListenAddress,
    pub ssl: bool,
    pub http2: bool,
    pub proxy_protocol: bool,
    pub backlog: Option<u32>,
    pub reuseport: bool,
    pub addrs: Vec<AddrConf>,
}

/// The servers on one address:port.
pub struct AddrConf {
    pub addr: ListenAddress,
    pub names: ServerNames,
    pub servers: Vec<Arc<ServerConf>>,
    pub ssl: bool,
}

pub struct ServerConf {
    pub origin: Option<Origin>,
    /// The first `server_name`, nginx's `$server_name` and `$host` fallback.
    pub name: String,
    pub tls: Tls,
    /// The certificates of `tls`, read and checked when the config was built.
    pub tls_keys: Option<Arc<super::tls::ServerKeys>>,
    /// The rewrite module's directives at server level (a lone `return` included).
    pub script: Option<Script>,
    /// The server or one of its locations has a script, or a regex location has named
    /// groups: requests take the longer road through the rewrite phases.
    pub scripted: bool,
    pub locations: LocationTree<Arc<LocationConf>>,
    /// What applies when no location matches.
    pub fallback: Arc<LocationConf>,
    /// Named locations (`@name`), which only `error_page` reaches.
    pub named: Vec<Arc<LocationConf>>,
    /// realip, as merged for the server: applied before a location is chosen.
    pub real_ip: Option<RealIpConf>,
}

/// A location's effective settings after inheritance.
pub struct LocationConf {
    pub origin: Option<Origin>,
    /// `log_not_found`: a file not found is logged as an error.
    pub log_not_found: bool,
    /// The location's name: the prefix a `proxy_pass` URI part replaces.
    pub name: String,
    pub kind: LocationKind,
    /// `root`, for `$document_root` and `$request_filename` (`None`: nginx's default).
    pub root: Option<Template>,
    /// A regex location's named groups, by capture index: variables when it matches.
    pub named_groups: Vec<(usize, Arc<str>)>,
    /// The rewrite module's directives (a lone `return` included).
    pub script: Option<Script>,
    pub proxy: Option<ProxyConf>,
    /// `proxy_pass` with variables: where each request goes is worked out as it comes.
    pub dynamic_pass: Option<Arc<super::dynamic_pass::DynamicPass>>,
    pub client: ClientConf,
    pub add_header: Vec<HeaderRule>,
    /// Whether an `add_header` value may read the response's headers (`$upstream_http_*`,
    /// `$sent_http_*`, or a `map` and the like, which may be on them): the fast path then
    /// keeps the response it passes on.
    pub add_header_reads_response: bool,
    /// `allow` and `deny`.
    pub access: AccessRules,
    /// `limit_req` and `limit_conn`, when the location has any.
    pub limits: Option<Arc<super::limits::Limits>>,
    /// `auth_basic` (with its user file) or `auth_request`, and `satisfy`, when either
    /// applies.
    pub auth: Option<Arc<super::access_phase::AuthConf>>,
    /// `expires`, unless unset or `off`.
    pub expires: Option<Arc<super::expires::ExpiresConf>>,
    /// `valid_referers`, for `$invalid_referer`.
    pub valid_referers: Option<Arc<ValidReferers>>,
    /// `secure_link` and the like, for `$secure_link`, unless it is always empty here.
    pub secure_link: Option<Arc<super::secure_link::SecureLinkConf>>,
    /// `sub_filter`, when it has strings to replace.
    pub sub_filter: Option<Arc<super::sub_filter::SubFilterConf>>,
    /// gzip, when on.
    pub gzip: Option<Arc<super::gzip::GzipConf>>,
    /// The charset named in `Content-Type`, when `charset` is on.
    pub charset: Option<Arc<super::charset::CharsetConf>>,
    /// `resolver`, when the location has one: for `proxy_pass` with variables.
    pub resolver: Option<Arc<super::resolver::NameResolver>>,
    /// `autoindex`, when on.
    pub autoindex: Option<super::autoindex::AutoindexConf>,
    /// `etag` and `if_modified_since`.
    pub conditional: super::files::ConditionalConf,
    /// realip, as merged for the location (`None` without `set_real_ip_from`).
    pub real_ip: Option<RealIpConf>,
    pub content_types: ContentTypes,
    /// Where requests are logged (empty: `access_log off`, or none configured).
    pub access_log: AccessLogs,
    /// `error_page` and `recursive_error_pages`, when the location has any page.
    pub error_pages: Option<Arc<super::error_page::ErrorPages>>,
    /// `internal`: a client's own request for it is answered 404.
    pub internal: bool,
    /// `alias`: where the location's files are, its prefix replaced (a regex location's: the
    /// whole path).
    pub alias: Option<Template>,
    /// `index`, in order (nginx's default: `index.html`).
    pub index: Arc<[Template]>,
    /// `try_files`: the files, then the last entry.
    pub try_files: Option<Arc<[Template]>>,
    /// Whether the fast path may serve the location although it has error pages: decided on
    /// first use, as it depends on the locations the pages lead to.
    pub error_pages_fast: std::sync::OnceLock<bool>,
}

/// `types` and `default_type`: the type of a response the appliance makes itself, by the URI's
/// extension. Shared between the locations that inherit them.
#[derive(Clone)]
pub struct ContentTypes {
    default: Arc<str>,
    types: Option<Arc<indexmap::IndexMap<String, String>>>,
}

impl Default for ContentTypes {
    /// nginx's built-in defaults: `text/plain`, and only html, gif and jpg known.
    fn default() -> Self {
        ContentTypes {
            default: "text/plain".into(),
            types: None,
        }
    }
}

impl ContentTypes {
    fn inherit(
        &self,
        default_type: &Option<String>,
        types: &Option<indexmap::IndexMap<String, String>>,
    ) -> ContentTypes {
        ContentTypes {
            default: default_type
                .as_deref()
                .map_or_else(|| self.default.clone(), Arc::from),
            types: types.clone().map(Arc::new).or_else(|| self.types.clone()),
        }
    }

    /// The type for a normalized URI: its extension (after the last dot of the last segment,
    /// lowercased) looked up in `types`, else `default_type`.
    pub fn for_uri(&self, uri: &[u8]) -> &str {
        let segment = uri.rsplit(|b| *b == b'/').next().unwrap_or_default();
        let ext = match segment.iter().rposition(|b| *b == b'.') {
            Some(i) => String::from_utf8_lossy(&segment[i + 1..]).to_ascii_lowercase(),
            None => return &self.default,
        };
        let found = match &self.types {
            Some(types) => types.get(&ext).map(String::as_str),
            None => match ext.as_str() {
                "html" => Some("text/html"),
                "gif" => Some("image/gif"),
                "jpg" => Some("image/jpeg"),
                _ => None,
            },
        };
        found.unwrap_or(&self.default)
    }
}

pub struct ReturnConf {
    pub status: u16,
    pub location: Option<Template>,
    pub body: Option<Template>,
}

/// A header set on a request or response: the name as written and its value template.
#[derive(PartialEq)]
pub struct HeaderRule {
    pub name: String,
    pub value: Template,
    pub always: bool,
}

pub struct ClientConf {
    /// 0: no limit.
    pub max_body_size: u64,
    pub keepalive_timeout: Duration,
    pub keepalive_requests: u32,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub send_timeout: Duration,
    pub sendfile: bool,
    /// 0: no limit.
    pub sendfile_max_chunk: u64,
}

pub struct ProxyConf {
    pub pool: Arc<UpstreamPool>,
    pub scheme: Scheme,
    /// The `proxy_pass` URI part, if given.
    pub uri: Option<Vec<u8>>,
    /// `$proxy_host` and `$proxy_port`.
    pub proxy_host: String,
    pub proxy_port: String,
    /// Request headers in the order nginx sends them: the configured ones, then nginx's
    /// defaults that were not overridden. Empty values are never sent.
    pub headers: Vec<ProxyHeader>,
    /// Lowercase names of those headers: the client's headers of these names are not passed.
    pub header_names: Vec<String>,
    pub http_version: HttpVersion,
    pub connect_timeout: Duration,
    pub send_timeout: Duration,
    pub read_timeout: Duration,
    pub next_upstream: NextUpstreamSet,
    pub next_upstream_tries: u32,
    pub next_upstream_timeout: Option<Duration>,
    pub pass_request_headers: bool,
    pub pass_request_body: bool,
    /// `proxy_intercept_errors`: an upstream status the location has an error page for is
    /// answered by that page.
    pub intercept_errors: bool,
    /// Upstream response headers not passed to the client: looked up for every response
    /// header.
    pub hide_headers: HeaderNames,
    /// `proxy_redirect`, as nginx's merge leaves it for this location.
    pub redirect: Vec<RedirectRule>,
    pub ssl_verify: bool,
    pub ssl_name: Option<Template>,
    pub ssl_server_name: bool,
    pub ssl_trusted_certificate: Option<std::path::PathBuf>,
    /// The certificates of `ssl_trusted_certificate`, read when the config was built.
    pub ssl_trusted: Option<Arc<Box<[pingora::tls::x509::X509]>>>,
}

/// A request header the proxy sets.
pub struct ProxyHeader {
    pub name: String,
    pub value: ProxyHeaderValue,
}

pub enum ProxyHeaderValue {
    Template(Template),
    /// nginx's `$proxy_internal_body_length`: the client's body length, when known.
    BodyLength,
    /// nginx's `$proxy_internal_chunked`: `chunked` when the body is passed on chunked.
    Chunked,
}

/// The `proxy_next_upstream` conditions as a set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextUpstreamSet(u32);

impl NextUpstreamSet {
    pub fn from_list(list: &[NextUpstream]) -> Self {
        let mut set = NextUpstreamSet(0);
        for c in list {
            if *c == NextUpstream::Off {
                return NextUpstreamSet(0);
            }
            set.0 |= 1 << (*c as u32);
        }
        set
    }

    pub fn contains(&self, c: NextUpstream) -> bool {
        self.0 & (1 << (c as u32)) != 0
    }
}

/// An upstream pool as the data plane uses it: the balancer, and how to reach its peers.
pub struct UpstreamPool {
    pub name: String,
    /// Distinguishes pools in the connection cache: connections are reused only within the
    /// pool that made them, as nginx's keepalive cache is per upstream.
    pub id: u64,
    pub balancer: Pool,
    pub balance: Balance,
    /// The evaluated-per-request key of `hash`.
    pub hash_key: Option<Template>,
    /// Idle connections kept (nginx `keepalive`); None: every connection is closed after use.
    pub keepalive: Option<u32>,
    pub keepalive_timeout: Duration,
    /// Requests one upstream connection may carry before it is closed (nginx
    /// `keepalive_requests`, default 1000).
    pub keepalive_requests: u32,
    /// Requests each pooled connection has carried, by descriptor. Pingora's pool does not
    /// count uses, so the data plane does, and retires a connection that has carried its share.
    pub connection_uses: std::sync::Mutex<HashMap<std::os::unix::io::RawFd, u32>>,
    pub origin: Option<Origin>,
    /// The active health check, run by [`health`](super::health).
    pub health_check: Option<config::HealthCheck>,
    /// Session stickiness ([`sticky`](super::sticky)).
    pub sticky: Option<Sticky>,
    /// How long requests to a server a reload removed may go on ([`drain`](super::drain)).
    pub drain_timeout: Option<Duration>,
    /// Requests with an upstream connection open, for draining.
    pub inflight: Inflight,
    /// Idle connections of the fast path (Pingora's requests use Pingora's pool).
    pub idle: super::keepalive::KeepaliveCache,
    /// Its request metrics.
    pub metrics: Arc<super::metrics::PoolMetrics>,
}

/// nginx's default request headers for proxying (ngx_http_proxy_headers), in its order.
const DEFAULT_PROXY_HEADERS: [(&str, &str); 8] = [
    ("Host", "$proxy_host"),
    ("Connection", "close"),
    ("Content-Length", "$proxy_internal_body_length"),
    ("Transfer-Encoding", "$proxy_internal_chunked"),
    ("TE", ""),
    ("Keep-Alive", ""),
    ("Expect", ""),
    ("Upgrade", ""),
];

/// Upstream response headers nginx never passes (ngx_http_proxy_hide_headers).
const DEFAULT_HIDE_HEADERS: [&str; 8] = [
    "date",
    "server",
    "x-pad",
    "x-accel-expires",
    "x-accel-redirect",
    "x-accel-limit-rate",
    "x-accel-buffering",
    "x-accel-charset",
];

impl Runtime {
    /// Compiles a validated model. Host names of upstream servers are resolved here (blocking),
    /// as nginx resolves them when it reads its config.
    pub fn build(model: &Appliance) -> Result<Runtime, Diagnostic> {
        let mut pools = HashMap::new();
        let mut next_id = 1u64;
        let declared = Arc::new(config::rewrite::declared_variables(&model.http));
        for upstream in &model.http.upstreams {
            let pool = build_pool(
                upstream,
                next_id,
                model.global.sticky_secret.as_deref(),
                (Context::Http, Defined::Names(&declared)),
            )?;
            next_id += 1;
            pools.insert(upstream.name.clone(), Arc::new(pool));
        }
        let http = &model.http;
        let formats = Arc::new(Formats::build(http, &declared)?);
        let access_log = formats.targets(http.access_log.as_deref(), None)?;
        let zones = Arc::new(super::limits::Zones::build(
            http,
            Defined::Names(&declared),
        )?);
        let charsets = Arc::new(super::charset::Charsets::build(&http.charset_map)?);
        let mut servers: Vec<(Arc<ServerConf>, &VirtualServer)> = Vec::new();
        for vs in &http.servers {
            let inherited = Inherited {
                formats: &formats,
                zones: &zones,
                charsets: &charsets,
                access_log: &access_log,
                declared: &declared,
            };
            let conf = build_server(http, vs, inherited, &mut pools, &mut next_id)?;
            servers.push((Arc::new(conf), vs));
        }
        let sockets = group_sockets(&servers)?;
        let streams = super::stream::build(&model.stream, &mut next_id)?;
        Ok(Runtime {
            sockets,
            pools,
            streams,
            access_log,
            tables: super::tables::Tables::build(http, Defined::Names(&declared))?,
        })
    }

    /// The address configuration for a connection that arrived on `socket` with this local
    /// address: the specific address if configured, else the socket's wildcard.
    pub fn addr_conf(&self, socket: usize, local: Option<SocketAddr>) -> Option<&AddrConf> {
        let socket = self.sockets.get(socket)?;
        if let Some(local) = local {
            if let Some(a) = socket
                .addrs
                .iter()
                .find(|a| a.addr == ListenAddress::Tcp(local))
            {
                return Some(a);
            }
        }
        socket.addrs.iter().find(|a| a.addr == socket.bind)
    }
}

pub(crate) fn build_pool(
    upstream: &Upstream,
    id: u64,
    sticky_secret: Option<&str>,
    (context, defined): (Context, Defined<'_>),
) -> Result<UpstreamPool, Diagnostic> {
    let resolved = ResolvedServer::resolve(upstream).map_err(|e| {
        Diagnostic::error(format!("upstream \"{}\": {e}", upstream.name))
            .at_opt(upstream.origin.as_ref())
    })?;
    let hash_key = match &upstream.balance {
        Balance::Hash { key, .. } => Some(
            Template::parse_for(context, key, defined)
                .map_err(|e| Diagnostic::error(e.to_string()).at_opt(upstream.origin.as_ref()))?,
        ),
        _ => None,
    };
    let balancer = Pool::new(upstream, resolved);
    Ok(UpstreamPool {
        name: upstream.name.clone(),
        id,
        sticky: Sticky::new(upstream, &balancer, sticky_secret),
        balancer,
        balance: upstream.balance.clone(),
        hash_key,
        keepalive: upstream.keepalive,
        keepalive_requests: upstream.keepalive_requests.unwrap_or(1000),
        connection_uses: Default::default(),
        keepalive_timeout: upstream
            .keepalive_timeout
            .map_or(Duration::from_secs(60), |d| d.get()),
        origin: upstream.origin.clone(),
        health_check: upstream.health_check.clone(),
        drain_timeout: upstream.drain_timeout.map(|d| d.get()),
        inflight: Inflight::default(),
        idle: super::keepalive::KeepaliveCache::new(upstream.keepalive),
        metrics: super::metrics::metrics().for_pool(&upstream.name),
    })
}

/// nginx builds an implicit upstream for `proxy_pass http://host:port`: every address of the
/// host is a server with the default parameters.
pub(crate) fn implicit_pool(
    pass_host: &str,
    default_port: u16,
    origin: Option<&Origin>,
    id: u64,
) -> Result<UpstreamPool, Diagnostic> {
    let address = if pass_host.starts_with("unix:") {
        pass_host.to_string()
    } else {
        let (host, port) = config::validate::server_address(pass_host, default_port)
            .map_err(|e| Diagnostic::error(e).at_opt(origin))?;
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    };
    one_off_pool(pass_host, vec![UpstreamServer::new(address)], origin, id)
}

/// The pool nginx makes of the addresses its resolver found for `name` (`host:port` as the URL
/// has it): every address at the port, weight 1, round robin.
pub(crate) fn resolved_pool(
    name: &str,
    addresses: &[std::net::SocketAddr],
    origin: Option<&Origin>,
    id: u64,
) -> Result<UpstreamPool, Diagnostic> {
    let servers = addresses
        .iter()
        .map(|a| UpstreamServer::new(a.to_string()))
        .collect();
    one_off_pool(name, servers, origin, id)
}

/// A pool of `servers` no `upstream` block describes.
fn one_off_pool(
    name: &str,
    servers: Vec<UpstreamServer>,
    origin: Option<&Origin>,
    id: u64,
) -> Result<UpstreamPool, Diagnostic> {
    let upstream = Upstream {
        name: name.to_string(),
        origin: origin.cloned(),
        balance: Balance::RoundRobin,
        servers,
        keepalive: None,
        keepalive_timeout: None,
        keepalive_requests: None,
        health_check: None,
        sticky: None,
        drain_timeout: None,
    };
    build_pool(&upstream, id, None, (Context::Http, Defined::NONE))
}

/// What every server takes from the http level besides its settings.
#[derive(Clone, Copy)]
struct Inherited<'a> {
    formats: &'a Arc<Formats>,
    zones: &'a Arc<super::limits::Zones>,
    charsets: &'a Arc<super::charset::Charsets>,
    access_log: &'a AccessLogs,
    declared: &'a Arc<HashSet<String>>,
}

fn build_server(
    http: &config::Http,
    vs: &VirtualServer,
    inherited: Inherited<'_>,
    pools: &mut HashMap<String, Arc<UpstreamPool>>,
    next_id: &mut u64,
) -> Result<ServerConf, Diagnostic> {
    let Inherited {
        formats,
        zones,
        charsets,
        access_log: http_access_log,
        declared,
    } = inherited;
    let server_level = Level {
        proxy: merge_proxy(&http.proxy, &vs.proxy),
        client: merge_client(&http.client, &vs.client),
        add_header: vs.add_header.clone().or_else(|| http.add_header.clone()),
        access: vs.access.clone().or_else(|| http.access.clone()),
        real_ip: vs.real_ip.merged(&http.real_ip),
        limits: vs.limits.merged(&http.limits),
        auth: vs.auth.merged(&http.auth),
        secure_link: vs.secure_link.merged(&http.secure_link),
        sub_filter: vs.sub_filter.merged(&http.sub_filter),
        expires: vs.expires.clone().or_else(|| http.expires.clone()),
        valid_referers: vs
            .valid_referers
            .as_deref()
            .map(|words| ValidReferers::build(words, &vs.server_name, None, vs.origin.as_ref()))
            .transpose()?
            .map(Arc::new),
        server_names: vs.server_name.clone().into(),
        gzip: vs.gzip.merged(&http.gzip),
        charset: vs.charset.merged(&http.charset),
        resolver: vs.resolver.merged(&http.resolver),
        autoindex: vs.autoindex.merged(&http.autoindex),
        conditional: vs.conditional.merged(&http.conditional),
        error_page: vs.error_page.clone().or_else(|| http.error_page.clone()),
        recursive_error_pages: vs.recursive_error_pages.or(http.recursive_error_pages),
        log_not_found: vs.log_not_found.or(http.log_not_found),
        index: vs.index.clone().or_else(|| http.index.clone()),
        zones: zones.clone(),
        charsets: charsets.clone(),
        declared: declared.clone(),
        root: vs.root.clone().or_else(|| http.root.clone()),
        content_types: ContentTypes::default()
            .inherit(&http.default_type, &http.types)
            .inherit(&vs.default_type, &vs.types),
        access_log: match &vs.access_log {
            Some(list) => formats.targets(Some(list), vs.origin.as_ref())?,
            None => http_access_log.clone(),
        },
        formats: formats.clone(),
    };
    let name = vs.server_name.first().cloned().unwrap_or_default();
    let (named, located): (Vec<&Location>, Vec<&Location>) = vs
        .locations
        .iter()
        .partition(|l| l.kind == LocationKind::Named);
    let specs = location_specs(located, &server_level, pools, next_id)?;
    let named = location_specs(named, &server_level, pools, next_id)?
        .into_iter()
        .map(|spec| spec.value)
        .collect();
    let locations =
        LocationTree::build(specs).map_err(|e| Diagnostic::error(e).at_opt(vs.origin.as_ref()))?;
    let fallback = location_conf(
        None,
        (String::new(), LocationKind::Prefix, None),
        (None, &[]),
        &server_level,
        pools,
        next_id,
    )?;
    // A server's try_files applies where no location matches.
    let fallback = Arc::new(LocationConf {
        try_files: try_files_conf(vs.try_files.as_deref(), &server_level, vs.origin.as_ref())?,
        ..fallback
    });
    let tls = vs.tls.clone().inherit(&http.tls);
    // nginx reads the certificates of every server that has them, listening on ssl or not.
    let tls_keys = match config::validate::certificates_of(&vs.tls, &http.tls) {
        Some(certificates) => {
            let keys = super::tls::ServerKeys::load(certificates, vs.origin.as_ref())?;
            let verification = ClientVerification::load(&tls, vs.origin.as_ref())?;
            Some(Arc::new(keys.verifying_clients(verification)))
        }
        None => None,
    };
    Ok(ServerConf {
        origin: vs.origin.clone(),
        name,
        tls,
        tls_keys,
        script: level_script(
            vs.return_.as_ref(),
            &vs.script,
            Defined::Names(declared),
            &mut |_| Ok(None),
        )
        .map_err(|e| e.at_opt(vs.origin.as_ref()))?,
        scripted: vs.return_.is_some() || !vs.script.is_empty() || scripted(&vs.locations),
        locations,
        fallback,
        named,
        real_ip: RealIpConf::new(&server_level.real_ip),
    })
}

/// Whether any of the locations (nested ones too) has a script or named regex groups.
fn scripted(locations: &[Location]) -> bool {
    locations.iter().any(|l| {
        l.return_.is_some()
            || !l.script.is_empty()
            || (l.kind.is_regex() && !config::rewrite::named_groups(&l.path).is_empty())
            || scripted(&l.locations)
    })
}

/// The settings a level passes down to the locations inside it.
#[derive(Clone)]
struct Level {
    proxy: Proxy,
    client: Client,
    add_header: Option<Vec<AddHeader>>,
    access: Option<Vec<AccessRule>>,
    real_ip: RealIp,
    limits: config::Limits,
    auth: config::Auth,
    secure_link: config::SecureLink,
    sub_filter: config::SubFilter,
    expires: Option<String>,
    valid_referers: Option<Arc<ValidReferers>>,
    /// The names of the server the level is in, which `valid_referers server_names` allows.
    server_names: Arc<[String]>,
    gzip: config::Gzip,
    charset: config::Charset,
    resolver: config::Resolver,
    autoindex: config::Autoindex,
    conditional: config::Conditional,
    error_page: Option<Vec<config::ErrorPage>>,
    recursive_error_pages: Option<bool>,
    log_not_found: Option<bool>,
    index: Option<Vec<String>>,
    zones: Arc<super::limits::Zones>,
    /// The http level's `charset_map`s.
    charsets: Arc<super::charset::Charsets>,
    content_types: ContentTypes,
    /// The variables the config defines (`map`, `geo`, `split_clients`, `set`), which templates
    /// may use.
    declared: Arc<HashSet<String>>,
    root: Option<String>,
    /// Access logs are inherited whole, as nginx merges them.
    access_log: AccessLogs,
    formats: Arc<Formats>,
}

fn location_specs<'a>(
    locations: impl IntoIterator<Item = &'a Location>,
    parent: &Level,
    pools: &mut HashMap<String, Arc<UpstreamPool>>,
    next_id: &mut u64,
) -> Result<Vec<Spec<Arc<LocationConf>>>, Diagnostic> {
    let mut specs = Vec::new();
    for loc in locations {
        let mut proxy = merge_proxy(&parent.proxy, &loc.proxy);
        // proxy_pass is not inherited: it belongs to the location that names it.
        proxy.pass = loc.proxy.pass.clone();
        proxy.pass_template = loc.proxy.pass_template.clone();
        proxy.redirect = super::redirect::resolve(
            proxy.redirect.as_deref(),
            proxy.pass.as_ref(),
            &loc.path,
            loc.kind,
        );
        let level = Level {
            proxy,
            client: merge_client(&parent.client, &loc.client),
            add_header: loc.add_header.clone().or_else(|| parent.add_header.clone()),
            access: loc.access.clone().or_else(|| parent.access.clone()),
            real_ip: loc.real_ip.merged(&parent.real_ip),
            limits: loc.limits.merged(&parent.limits),
            auth: loc.auth.merged(&parent.auth),
            secure_link: loc.secure_link.merged(&parent.secure_link),
            sub_filter: loc.sub_filter.merged(&parent.sub_filter),
            expires: loc.expires.clone().or_else(|| parent.expires.clone()),
            valid_referers: match &loc.valid_referers {
                Some(words) => Some(Arc::new(ValidReferers::build(
                    words,
                    &parent.server_names,
                    parent.valid_referers.as_deref(),
                    loc.origin.as_ref(),
                )?)),
                None => parent.valid_referers.clone(),
            },
            server_names: parent.server_names.clone(),
            gzip: loc.gzip.merged(&parent.gzip),
            charset: loc.charset.merged(&parent.charset),
            resolver: loc.resolver.merged(&parent.resolver),
            autoindex: loc.autoindex.merged(&parent.autoindex),
            conditional: loc.conditional.merged(&parent.conditional),
            error_page: loc.error_page.clone().or_else(|| parent.error_page.clone()),
            recursive_error_pages: loc.recursive_error_pages.or(parent.recursive_error_pages),
            log_not_found: loc.log_not_found.or(parent.log_not_found),
            index: loc.index.clone().or_else(|| parent.index.clone()),
            zones: parent.zones.clone(),
            charsets: parent.charsets.clone(),
            declared: parent.declared.clone(),
            root: loc.root.clone().or_else(|| parent.root.clone()),
            content_types: parent.content_types.inherit(&loc.default_type, &loc.types),
            access_log: match &loc.access_log {
                Some(list) => parent.formats.targets(Some(list), loc.origin.as_ref())?,
                None => parent.access_log.clone(),
            },
            formats: parent.formats.clone(),
        };
        let alias = loc
            .alias
            .as_deref()
            .map(|text| {
                Template::parse_in(text, defined_of(&level))
                    .map_err(|e| Diagnostic::error(e.to_string()).at_opt(loc.origin.as_ref()))
            })
            .transpose()?;
        let conf = location_conf(
            loc.origin.as_ref(),
            (loc.path.clone(), loc.kind, alias.as_ref()),
            (loc.return_.as_ref(), &loc.script),
            &level,
            pools,
            next_id,
        )?;
        let conf = LocationConf {
            internal: loc.internal,
            try_files: try_files_conf(loc.try_files.as_deref(), &level, loc.origin.as_ref())?,
            ..conf
        };
        // Nested locations inherit the settings but not the pass.
        let mut inherited = level.clone();
        inherited.proxy.pass = None;
        inherited.proxy.pass_template = None;
        let children = location_specs(&loc.locations, &inherited, pools, next_id)?;
        let proxied = conf.proxy.is_some() || conf.dynamic_pass.is_some();
        let auto_redirect = proxied && !loc.kind.is_regex() && loc.path.ends_with('/');
        specs.push(Spec {
            kind: loc.kind,
            path: loc.path.clone(),
            auto_redirect,
            value: Arc::new(conf),
            children,
        });
    }
    Ok(specs)
}

/// A location's effective settings (its name, kind and `alias` given), and its script
/// (`return` and steps), whose `if` blocks become locations of their own. Those take the
/// alias too, as nginx merges it into the block's configuration (`try_files` they do not).
fn location_conf(
    origin: Option<&Origin>,
    (name, kind, alias): (String, LocationKind, Option<&Template>),
    (ret, steps): (Option<&Return>, &[config::Step]),
    level: &Level,
    pools: &mut HashMap<String, Arc<UpstreamPool>>,
    next_id: &mut u64,
) -> Result<LocationConf, Diagnostic> {
    let declared = level.declared.clone();
    let defined = Defined::Names(&declared);
    let script = level_script(ret, steps, defined, &mut |block| {
        // nginx's "if in location": a location that inherits everything from this one,
        // `proxy_pass` included, with the block's own settings over it.
        let mut inner = level.clone();
        if let Some(pass) = &block.proxy_pass {
            inner.proxy.pass = Some(pass.clone());
            inner.proxy.pass_template = None;
        }
        if let Some(list) = &block.add_header {
            inner.add_header = Some(list.clone());
        }
        if let Some(list) = &block.access_log {
            inner.access_log = level.formats.targets(Some(list), origin)?;
        }
        if let Some(expires) = &block.expires {
            inner.expires = Some(expires.clone());
        }
        if let Some(enable) = block.gzip {
            inner.gzip.enable = Some(enable);
        }
        if let Some(pages) = &block.error_page {
            inner.error_page = Some(pages.clone());
        }
        if let Some(on) = block.sendfile {
            inner.client.sendfile = Some(on);
        }
        inner.charset = block.charset.merged(&level.charset);
        let conf = location_conf(
            origin,
            (name.clone(), kind, alias),
            (None, &[]),
            &inner,
            pools,
            next_id,
        )?;
        Ok(Some(Arc::new(conf)))
    })
    .map_err(|e| e.at_opt(origin))?;
    let proxy = match &level.proxy.pass {
        Some(pass) => {
            let pool = match pools.get(&pass.host) {
                Some(pool) => pool.clone(),
                None => {
                    let key = format!("{}://{}", pass.scheme.as_str(), pass.host);
                    match pools.get(&key) {
                        Some(pool) => pool.clone(),
                        None => {
                            let pool = Arc::new(implicit_pool(
                                &pass.host,
                                pass.scheme.default_port(),
                                origin,
                                *next_id,
                            )?);
                            *next_id += 1;
                            pools.insert(key, pool.clone());
                            pool
                        }
                    }
                }
            };
            Some(proxy_conf(&level.proxy, pass, pool, origin, defined)?)
        }
        None => None,
    };
    let dynamic_pass = match (&level.proxy.pass, &level.proxy.pass_template) {
        (None, Some(text)) => Some(Arc::new(super::dynamic_pass::DynamicPass::new(
            text,
            &level.proxy,
            origin,
            declared.clone(),
        )?)),
        _ => None,
    };
    let named_groups = match kind.is_regex() {
        true => super::script::named_groups(&name, kind == LocationKind::RegexCaseless),
        false => Vec::new(),
    };
    let root = level
        .root
        .as_deref()
        .map(|text| {
            Template::parse_in(text, defined)
                .map_err(|e| Diagnostic::error(e.to_string()).at_opt(origin))
        })
        .transpose()?;
    let add_header = header_rules(
        level.add_header.as_deref().unwrap_or_default(),
        origin,
        defined,
    )?;
    Ok(LocationConf {
        origin: origin.cloned(),
        root,
        named_groups,
        name,
        kind,
        script,
        proxy,
        dynamic_pass,
        client: client_conf(&level.client),
        add_header_reads_response: add_header.iter().any(|rule| rule.value.reads_response()),
        add_header,
        access: AccessRules::new(level.access.as_deref().unwrap_or_default()),
        limits: level.zones.limits(&level.limits),
        auth: super::access_phase::AuthConf::build(&level.auth, defined, origin)?.map(Arc::new),
        expires: super::expires::ExpiresConf::build(level.expires.as_deref(), defined, origin)?
            .map(Arc::new),
        valid_referers: level.valid_referers.clone(),
        secure_link: super::secure_link::SecureLinkConf::build(
            &level.secure_link,
            defined,
            origin,
        )?
        .map(Arc::new),
        sub_filter: super::sub_filter::SubFilterConf::build(&level.sub_filter, defined, origin)?
            .map(Arc::new),
        gzip: super::gzip::GzipConf::build(&level.gzip, origin)?.map(Arc::new),
        charset: super::charset::CharsetConf::build(&level.charset, &level.charsets, origin)?
            .map(Arc::new),
        resolver: super::resolver::NameResolver::shared(&level.resolver, origin)?,
        autoindex: super::autoindex::AutoindexConf::build(&level.autoindex),
        conditional: super::files::ConditionalConf::build(&level.conditional),
        real_ip: RealIpConf::new(&level.real_ip),
        content_types: level.content_types.clone(),
        access_log: level.access_log.clone(),
        error_pages: super::error_page::ErrorPages::build(
            level.error_page.as_deref(),
            level.recursive_error_pages.unwrap_or(false),
            defined,
            origin,
        )?
        .map(Arc::new),
        log_not_found: level.log_not_found.unwrap_or(true),
        internal: false,
        alias: alias.cloned(),
        index: templates(
            level
                .index
                .as_deref()
                .unwrap_or(&["index.html".to_string()]),
            defined,
            origin,
        )?
        .into(),
        try_files: None,
        error_pages_fast: std::sync::OnceLock::new(),
    })
}

pub(crate) fn proxy_conf(
    p: &Proxy,
    pass: &config::ProxyPass,
    pool: Arc<UpstreamPool>,
    origin: Option<&Origin>,
    defined: Defined<'_>,
) -> Result<ProxyConf, Diagnostic> {
    let template = |text: &str| {
        Template::parse_in(text, defined)
            .map_err(|e| Diagnostic::error(e.to_string()).at_opt(origin))
    };
    let (proxy_host, proxy_port) = proxy_host_and_port(pass);
    // The configured headers first, in order, then nginx's defaults not overridden.
    let mut headers = Vec::new();
    let mut header_names: Vec<String> = Vec::new();
    for (name, value) in p.set_header.iter().flatten() {
        let lower = name.to_ascii_lowercase();
        if !header_names.contains(&lower) {
            header_names.push(lower);
        }
        headers.push(ProxyHeader {
            name: name.clone(),
            value: ProxyHeaderValue::Template(template(value)?),
        });
    }
    for (name, value) in DEFAULT_PROXY_HEADERS {
        let lower = name.to_ascii_lowercase();
        if header_names.contains(&lower) {
            continue;
        }
        header_names.push(lower);
        let value = match value {
            "$proxy_internal_body_length" => ProxyHeaderValue::BodyLength,
            "$proxy_internal_chunked" => ProxyHeaderValue::Chunked,
            _ => ProxyHeaderValue::Template(template(value)?),
        };
        headers.push(ProxyHeader {
            name: name.to_string(),
            value,
        });
    }
    let passed: Vec<String> = p
        .pass_header
        .iter()
        .flatten()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let hide_headers = HeaderNames::new(
        DEFAULT_HIDE_HEADERS
            .iter()
            .map(|h| h.to_string())
            .chain(
                p.hide_header
                    .iter()
                    .flatten()
                    .map(|h| h.to_ascii_lowercase()),
            )
            .filter(|h| !passed.contains(h)),
    );
    let seconds = |d: Option<config::Duration>, default: u64| {
        d.map_or(Duration::from_secs(default), |d| d.get())
    };
    let ssl_verify = p.ssl_verify.unwrap_or(false);
    let ssl_trusted = match (&p.ssl_trusted_certificate, pass.scheme) {
        (Some(path), Scheme::Https) => Some(super::tls::load_ca(path, origin)?),
        (None, Scheme::Https) if ssl_verify => {
            return Err(
                Diagnostic::error("no proxy_ssl_trusted_certificate for proxy_ssl_verify")
                    .at_opt(origin),
            )
        }
        _ => None,
    };
    let next_upstream = NextUpstreamSet::from_list(
        p.next_upstream
            .as_deref()
            .unwrap_or(&[NextUpstream::Error, NextUpstream::Timeout]),
    );
    Ok(ProxyConf {
        pool,
        scheme: pass.scheme,
        uri: pass.uri.as_ref().map(|u| u.as_bytes().to_vec()),
        proxy_host,
        proxy_port,
        headers,
        header_names,
        http_version: p.http_version.unwrap_or(HttpVersion::Http10),
        connect_timeout: seconds(p.connect_timeout, 60),
        send_timeout: seconds(p.send_timeout, 60),
        read_timeout: seconds(p.read_timeout, 60),
        next_upstream,
        next_upstream_tries: p.next_upstream_tries.unwrap_or(0),
        next_upstream_timeout: p
            .next_upstream_timeout
            .map(|d| d.get())
            .filter(|d| !d.is_zero()),
        pass_request_headers: p.pass_request_headers.unwrap_or(true),
        pass_request_body: p.pass_request_body.unwrap_or(true),
        intercept_errors: p.intercept_errors.unwrap_or(false),
        hide_headers,
        redirect: super::redirect::compile(p.redirect.as_deref(), defined)
            .map_err(|e| e.at_opt(origin))?,
        ssl_verify,
        ssl_name: p.ssl_name.as_deref().map(template).transpose()?,
        ssl_server_name: p.ssl_server_name.unwrap_or(false),
        ssl_trusted_certificate: p.ssl_trusted_certificate.clone(),
        ssl_trusted,
    })
}

/// `$proxy_host` and `$proxy_port` as ngx_http_proxy_set_vars computes them: the host as
/// written, with the port only when it is not the scheme's default; `localhost` for sockets.
pub fn proxy_host_and_port(pass: &config::ProxyPass) -> (String, String) {
    if pass.host.starts_with("unix:") {
        return ("localhost".to_string(), String::new());
    }
    let default = pass.scheme.default_port();
    match config::validate::server_address(&pass.host, default) {
        Ok((_, port)) if port != default => (pass.host.clone(), port.to_string()),
        Ok(_) => {
            let host = pass
                .host
                .strip_suffix(&format!(":{default}"))
                .unwrap_or(&pass.host);
            (host.to_string(), default.to_string())
        }
        Err(_) => (pass.host.clone(), default.to_string()),
    }
}

/// A level's `return` or its steps, compiled (`None` when it has neither).
fn level_script(
    ret: Option<&Return>,
    steps: &[config::Step],
    defined: Defined<'_>,
    if_location: &mut IfLocation<'_>,
) -> Result<Option<Script>, Diagnostic> {
    let return_conf = |r: &Return| return_conf(r, defined);
    if let Some(r) = ret {
        let ret = Arc::new(return_conf(r)?);
        return Ok(Some(Script {
            ops: vec![Op::Return(ret)],
        }));
    }
    if steps.is_empty() {
        return Ok(None);
    }
    super::script::compile(steps, defined, if_location, &return_conf).map(Some)
}

fn return_conf(r: &Return, defined: Defined<'_>) -> Result<ReturnConf, Diagnostic> {
    let parse =
        |t: &String| Template::parse_in(t, defined).map_err(|e| Diagnostic::error(e.to_string()));
    Ok(ReturnConf {
        status: r.status,
        location: r.location.as_ref().map(parse).transpose()?,
        body: r.body.as_ref().map(parse).transpose()?,
    })
}

/// Texts that may hold variables, parsed.
fn templates(
    list: &[String],
    defined: Defined<'_>,
    origin: Option<&Origin>,
) -> Result<Vec<Template>, Diagnostic> {
    list.iter()
        .map(|text| {
            Template::parse_in(text, defined)
                .map_err(|e| Diagnostic::error(e.to_string()).at_opt(origin))
        })
        .collect()
}

/// A level's `try_files` entries, parsed.
fn try_files_conf(
    list: Option<&[String]>,
    level: &Level,
    origin: Option<&Origin>,
) -> Result<Option<Arc<[Template]>>, Diagnostic> {
    list.map(|list| templates(list, defined_of(level), origin).map(Into::into))
        .transpose()
}

fn defined_of(level: &Level) -> Defined<'_> {
    Defined::Names(&level.declared)
}

fn header_rules(
    list: &[AddHeader],
    origin: Option<&Origin>,
    defined: Defined<'_>,
) -> Result<Vec<HeaderRule>, Diagnostic> {
    list.iter()
        .map(|h| {
            Ok(HeaderRule {
                name: h.name.clone(),
                value: Template::parse_in(&h.value, defined)
                    .map_err(|e| Diagnostic::error(e.to_string()).at_opt(origin))?,
                always: h.always,
            })
        })
        .collect()
}

fn client_conf(c: &Client) -> ClientConf {
    let d =
        |v: Option<config::Duration>, secs: u64| v.map_or(Duration::from_secs(secs), |d| d.get());
    ClientConf {
        max_body_size: c.max_body_size.map_or(1024 * 1024, |s| s.0),
        keepalive_timeout: d(c.keepalive_timeout, 75),
        keepalive_requests: c.keepalive_requests.unwrap_or(1000),
        header_timeout: d(c.header_timeout, 60),
        body_timeout: d(c.body_timeout, 60),
        send_timeout: d(c.send_timeout, 60),
        sendfile: c.sendfile.unwrap_or(false),
        sendfile_max_chunk: c.sendfile_max_chunk.map_or(2 * 1024 * 1024, |s| s.0),
    }
}

/// Inner settings win field by field; list settings are taken whole from the innermost level
/// that has any, as nginx merges arrays.
fn merge_proxy(outer: &Proxy, inner: &Proxy) -> Proxy {
    macro_rules! pick {
        ($($field:ident),*) => {
            Proxy { $($field: inner.$field.clone().or_else(|| outer.$field.clone()),)* }
        };
    }
    pick!(
        pass,
        pass_template,
        set_header,
        http_version,
        connect_timeout,
        send_timeout,
        read_timeout,
        next_upstream,
        next_upstream_tries,
        next_upstream_timeout,
        pass_request_headers,
        pass_request_body,
        hide_header,
        pass_header,
        redirect,
        buffering,
        request_buffering,
        intercept_errors,
        ssl_verify,
        ssl_verify_depth,
        ssl_name,
        ssl_server_name,
        ssl_trusted_certificate
    )
}

fn merge_client(outer: &Client, inner: &Client) -> Client {
    Client {
        max_body_size: inner.max_body_size.or(outer.max_body_size),
        keepalive_timeout: inner.keepalive_timeout.or(outer.keepalive_timeout),
        keepalive_requests: inner.keepalive_requests.or(outer.keepalive_requests),
        header_timeout: inner.header_timeout.or(outer.header_timeout),
        body_timeout: inner.body_timeout.or(outer.body_timeout),
        send_timeout: inner.send_timeout.or(outer.send_timeout),
        sendfile: inner.sendfile.or(outer.sendfile),
        sendfile_max_chunk: inner.sendfile_max_chunk.or(outer.sendfile_max_chunk),
    }
}

/// Groups the servers' listens into sockets the way nginx does (ngx_http_optimize_servers):
/// per port, a wildcard address is bound once and specific addresses on that port become
/// configurations selected by the local address; default servers are per address.
fn group_sockets(servers: &[(Arc<ServerConf>, &VirtualServer)]) -> Result<Vec<Socket>, Diagnostic> {
    struct Addr {
        addr: ListenAddress,
        ssl: bool,
        http2: bool,
        proxy_protocol: bool,
        backlog: Option<u32>,
        reuseport: bool,
        servers: Vec<usize>,
        default: Option<usize>,
    }
    let mut addrs: Vec<Addr> = Vec::new();
    for (index, (_, vs)) in servers.iter().enumerate() {
        for l in &vs.listen {
            let entry = match addrs.iter_mut().position(|a| a.addr == l.address) {
                Some(i) => &mut addrs[i],
                None => {
                    addrs.push(Addr {
                        addr: l.address.clone(),
                        ssl: false,
                        http2: false,
                        proxy_protocol: false,
                        backlog: None,
                        reuseport: false,
                        servers: Vec::new(),
                        default: None,
                    });
                    addrs.last_mut().expect("just pushed")
                }
            };
            // Parameters of one address are the union of what its listens say, as nginx
            // applies `ssl` or `http2` on any listen to the whole address.
            entry.ssl |= l.ssl;
            entry.http2 |= l.http2;
            entry.proxy_protocol |= l.proxy_protocol;
            entry.reuseport |= l.reuseport;
            entry.backlog = entry.backlog.or(l.backlog);
            if !entry.servers.contains(&index) {
                entry.servers.push(index);
            }
            if l.default_server {
                entry.default = Some(index);
            }
        }
    }
    let wildcard_of = |addr: &ListenAddress| match addr {
        ListenAddress::Tcp(SocketAddr::V4(a)) => Some(ListenAddress::Tcp(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            a.port(),
        ))),
        ListenAddress::Tcp(SocketAddr::V6(a)) => Some(ListenAddress::Tcp(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            a.port(),
        ))),
        ListenAddress::Unix(_) => None,
    };
    let mut sockets: Vec<Socket> = Vec::new();
    let binds: Vec<ListenAddress> = addrs
        .iter()
        .map(|a| match wildcard_of(&a.addr) {
            Some(w) if addrs.iter().any(|b| b.addr == w) => w,
            _ => a.addr.clone(),
        })
        .collect();
    for (a, bind) in addrs.into_iter().zip(binds) {
        let names: Vec<Vec<String>> = a
            .servers
            .iter()
            .map(|i| servers[*i].1.server_name.clone())
            .collect();
        let default = match a.default {
            Some(d) => a.servers.iter().position(|i| *i == d).unwrap_or(0),
            None => 0,
        };
        let names = ServerNames::build(&names, default)
            .map_err(|e| Diagnostic::error(e).at_opt(servers[a.servers[0]].0.origin.as_ref()))?;
        let conf = AddrConf {
            addr: a.addr.clone(),
            names,
            servers: a.servers.iter().map(|i| servers[*i].0.clone()).collect(),
            ssl: a.ssl,
        };
        match sockets.iter_mut().find(|s| s.bind == bind) {
            Some(s) => {
                s.ssl |= a.ssl;
                s.http2 |= a.http2;
                s.addrs.push(conf);
            }
            None => sockets.push(Socket {
                bind,
                ssl: a.ssl,
                http2: a.http2,
                proxy_protocol: a.proxy_protocol,
                backlog: a.backlog,
                reuseport: a.reuseport,
                addrs: vec![conf],
            }),
        }
    }
    Ok(sockets)
}

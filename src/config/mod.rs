//! The internal model: the one config every front end compiles into and the data plane, HA and
//! admin sides run from. These serde types *are* the appliance.toml schema.
//!
//! A model that deserializes is well-formed; [`validate`] then checks what types cannot (names
//! that must resolve, ranges, listeners that conflict) once, at the edge, so that the runtime can
//! trust it.

pub mod admin;
pub mod auth;
pub mod autoindex;
pub mod charset;
pub mod conditional;
pub mod error_page;
pub mod expires;
pub mod geo;
pub mod gzip;
pub mod ha;
pub mod http;
pub mod limit;
pub mod log;
pub mod map;
pub mod origin;
pub mod referers;
pub mod resolver;
pub mod rewrite;
pub mod secure_link;
pub mod split_clients;
pub mod stream;
pub mod sub_filter;
pub mod template;
mod toml_origins;
pub mod units;
pub mod upstream;
pub mod validate;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use admin::Admin;
pub use auth::{Auth, RequestSet, Satisfy};
pub use autoindex::Autoindex;
pub use charset::{Charset, CharsetMap};
pub use conditional::Conditional;
pub use error_page::{ErrorPage, PageStatus};
pub use geo::{GeoEntry, GeoVar};
pub use gzip::Gzip;
pub use ha::{Ha, HaMode};
pub use http::{
    AccessRule, AccessScope, AddHeader, Certificate, Client, HttpVersion, Listen, ListenAddress,
    Location, LocationKind, NextUpstream, Proxy, ProxyPass, ProxyRedirect, RealIp, Return, Scheme,
    Tls, TlsVersion, VerifyClient, VirtualServer,
};
pub use limit::{ConnectionLimit, ConnectionZone, Limits, Rate, RequestLimit, RequestZone};
pub use log::{AccessLog, ErrorLog, LogFormat, LogLevel};
pub use map::{Defined, MapEntry, MapKey, MapVar};
pub use origin::Origin;
pub use resolver::Resolver;
pub use rewrite::{IfBlock, Rewrite, RewriteFlag, SetVar, Step};
pub use secure_link::SecureLink;
pub use split_clients::{SplitClients, SplitPart};
pub use stream::{StreamServer, UpstreamTlsCheck};
pub use sub_filter::SubFilter;
pub(crate) use toml_origins::place as place_in_toml;
pub use units::{Duration, Size};
pub use upstream::{
    Balance, HealthCheck, HealthProtocol, HealthTarget, ProxyProtocol, StatusRange, Sticky,
    Upstream, UpstreamServer,
};
pub use validate::validate;

use crate::compile::diag::Diagnostic;

/// A whole appliance: what it listens on, where it sends traffic, and how it pairs with a peer.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Appliance {
    #[serde(default, skip_serializing_if = "Global::is_default")]
    pub global: Global,
    #[serde(default, skip_serializing_if = "Http::is_empty")]
    pub http: Http,
    #[serde(default, skip_serializing_if = "Stream::is_empty")]
    pub stream: Stream,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<Ha>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
}

/// Process-wide settings (nginx's main context).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Global {
    /// Worker threads; unset means one per core (nginx `worker_processes auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
    /// Connections each worker may hold (nginx `worker_connections`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_connections: Option<u32>,
    /// The CPUs each worker thread may run on (nginx `worker_cpu_affinity`); unset means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_cpu_affinity: Option<CpuAffinity>,
    /// The nice value of the worker threads, -20 (first served) to 19 (nginx
    /// `worker_priority`); unset leaves the one the process started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_priority: Option<i32>,
    /// How long a graceful stop may wait for requests and stream sessions before the process
    /// closes them and exits (nginx `worker_shutdown_timeout`). Unset, it waits up to 300 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<PathBuf>,
    /// nginx's `daemon`: fork into the background once serving (a `Type=forking` unit). Unset
    /// means nginx's default (on) when run as `nginx`, and off for `appliance run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_log: Option<ErrorLog>,
    /// The key that signs sticky-session cookies. Every appliance of a fleet must share it; when
    /// unset, one is derived from the upstream definitions, which a fleet also shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_secret: Option<String>,
}

impl Global {
    fn is_default(&self) -> bool {
        *self == Global::default()
    }

    /// Takes every setting `other` makes (nginx's `-g` over an appliance.toml).
    pub fn overlay(&mut self, other: Global) {
        // Spelled out field by field, so that a new setting cannot be forgotten here.
        let Global {
            worker_threads,
            worker_connections,
            worker_cpu_affinity,
            worker_priority,
            shutdown_timeout,
            pid,
            daemon,
            error_log,
            sticky_secret,
        } = other;
        fn set<T>(into: &mut Option<T>, from: Option<T>) {
            if from.is_some() {
                *into = from;
            }
        }
        set(&mut self.worker_threads, worker_threads);
        set(&mut self.worker_connections, worker_connections);
        set(&mut self.worker_cpu_affinity, worker_cpu_affinity);
        set(&mut self.worker_priority, worker_priority);
        set(&mut self.shutdown_timeout, shutdown_timeout);
        set(&mut self.pid, pid);
        set(&mut self.daemon, daemon);
        set(&mut self.error_log, error_log);
        set(&mut self.sticky_secret, sticky_secret);
    }

    /// What the worker threads are started with: a change to any of it takes new threads, as
    /// a change to nginx's takes new worker processes.
    pub fn worker_settings(&self) -> (Option<usize>, &Option<CpuAffinity>, Option<i32>) {
        (
            self.worker_threads,
            &self.worker_cpu_affinity,
            self.worker_priority,
        )
    }
}

/// Which CPUs each worker thread may run on; CPUs are numbered from 0 as Linux numbers them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CpuAffinity {
    /// `"auto"`: each worker on one CPU of its own, in order, over the CPUs online (nginx
    /// `worker_cpu_affinity auto`); with more workers than CPUs they go round again.
    Auto,
    /// `{ auto_from = [0, 2] }`: as `auto`, over these CPUs only (`auto 0101`).
    AutoFrom(Vec<usize>),
    /// `{ per_worker = [[0], [1], [2, 3]] }`: the CPUs of each worker in turn; workers past the
    /// end of the list take its last entry (`worker_cpu_affinity 0001 0010 1100`).
    PerWorker(Vec<Vec<usize>>),
}

/// The `http {}` block: defaults every server inherits, the pools and the virtual servers.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    #[serde(default, skip_serializing_if = "Proxy::is_empty")]
    pub proxy: Proxy,
    #[serde(default, skip_serializing_if = "Client::is_empty")]
    pub client: Client,
    #[serde(default, skip_serializing_if = "Tls::is_empty")]
    pub tls: Tls,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_header: Option<Vec<AddHeader>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Vec<AccessRule>>,
    #[serde(default, skip_serializing_if = "RealIp::is_empty")]
    pub real_ip: RealIp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<Vec<AccessLog>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_format: Vec<LogFormat>,
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Auth::is_empty")]
    pub auth: Auth,
    #[serde(default, skip_serializing_if = "SecureLink::is_empty")]
    pub secure_link: SecureLink,
    #[serde(default, skip_serializing_if = "SubFilter::is_empty")]
    pub sub_filter: SubFilter,
    /// `expires`, as its arguments are written (see `config::expires`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Gzip::is_empty")]
    pub gzip: Gzip,
    #[serde(default, skip_serializing_if = "Charset::is_empty")]
    pub charset: Charset,
    /// nginx's `charset_map` blocks: how a body is recoded from one charset to another.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charset_map: Vec<CharsetMap>,
    #[serde(default, skip_serializing_if = "Resolver::is_empty")]
    pub resolver: Resolver,
    #[serde(default, skip_serializing_if = "Autoindex::is_empty")]
    pub autoindex: Autoindex,
    #[serde(default, skip_serializing_if = "Conditional::is_empty")]
    pub conditional: Conditional,
    /// `index`, inherited whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Vec<String>>,
    /// `error_page`: inherited whole, as nginx merges it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_page: Option<Vec<ErrorPage>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive_error_pages: Option<bool>,
    /// `log_not_found`: a file not found is logged as an error (nginx's default: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_not_found: Option<bool>,
    /// `limit_req_zone`s.
    #[serde(
        rename = "request_zone",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub request_zones: Vec<RequestZone>,
    /// `limit_conn_zone`s.
    #[serde(
        rename = "connection_zone",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub connection_zones: Vec<ConnectionZone>,
    /// nginx's `root`: where files are served from, and what `$document_root` and
    /// `$request_filename` say. Unset everywhere: `/usr/share/nginx/html`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<indexmap::IndexMap<String, String>>,
    /// Variables defined by `map`.
    #[serde(rename = "map", default, skip_serializing_if = "Vec::is_empty")]
    pub maps: Vec<MapVar>,
    /// Variables defined by `geo`: by the client's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub geo: Vec<GeoVar>,
    /// Variables defined by `split_clients`: by a hash of a key, in set proportions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split_clients: Vec<SplitClients>,
    #[serde(rename = "upstream", default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<Upstream>,
    #[serde(rename = "server", default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<VirtualServer>,
}

impl Http {
    pub fn is_empty(&self) -> bool {
        *self == Http::default()
    }
}

/// The `stream {}` block: TCP pools and servers.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    #[serde(rename = "upstream", default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<Upstream>,
    /// The stream's `limit_conn_zone`s (a name space shared with `[http]`'s zones).
    #[serde(
        rename = "connection_zone",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub connection_zones: Vec<ConnectionZone>,
    #[serde(rename = "server", default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<StreamServer>,
    /// The stream's own `map`, `geo` and `split_clients` variables, as `[http]`'s: most often
    /// a server chosen by `$ssl_preread_server_name`.
    #[serde(rename = "map", default, skip_serializing_if = "Vec::is_empty")]
    pub maps: Vec<MapVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub geo: Vec<GeoVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split_clients: Vec<SplitClients>,
    /// The stream's `log_format`s: a name space of their own, apart from `[http]`'s, and
    /// without a predefined format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_format: Vec<LogFormat>,
}

impl Stream {
    pub fn is_empty(&self) -> bool {
        *self == Stream::default()
    }
}

impl Appliance {
    /// Reads an appliance.toml. `file` names it in diagnostics and in the origins given to items
    /// that carry none of their own.
    pub fn from_toml(text: &str, file: &str) -> Result<Appliance, Diagnostic> {
        let mut model: Appliance = toml::from_str(text).map_err(|e| {
            let (line, column, span) = match e.span() {
                Some(span) => {
                    let (l, c) = line_col(text, span.start);
                    (l, c, Some(span.start..span.end.max(span.start + 1)))
                }
                None => (0, 0, None),
            };
            let mut d =
                Diagnostic::error(e.message().to_string()).at(Origin::new(file, line, column));
            if let Some(span) = span {
                d = d.with_span(span);
            }
            d
        })?;
        toml_origins::fill(&mut model, text, file);
        Ok(model)
    }

    /// The model as TOML, without comments (see `compile::render` for the annotated form).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the model always serializes: it has no non-string keys")
    }
}

/// 1-based line and column of a byte offset.
/// The config check's complaint about `key`'s `value` when it is not among `allowed`.
pub(crate) fn not_one_of(key: &str, value: &str, allowed: &[&str]) -> Option<String> {
    (!allowed.contains(&value))
        .then(|| format!("{key} \"{value}\" is not one of {}", allowed.join(", ")))
}

pub(crate) fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() as u32 + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() as u32 + 1;
    (line, column)
}

//! HTTP virtual servers, their listeners and locations, and the settings they inherit.
//!
//! Settings follow nginx's inheritance: what is set in `[http]` is the default for every server,
//! a server's for its locations, a location's for the locations nested in it. A list setting
//! (`set_header`, `add_header`, `hide_header`, `access`) is inherited only when the inner level
//! sets none of it, exactly as nginx merges arrays.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::auth::Auth;
use super::autoindex::Autoindex;
use super::charset::Charset;
use super::conditional::Conditional;
use super::error_page::ErrorPage;
use super::gzip::Gzip;
use super::limit::Limits;
use super::log::AccessLog;
use super::origin::Origin;
use super::resolver::Resolver;
use super::rewrite::Step;
use super::secure_link::SecureLink;
use super::sub_filter::SubFilter;
use super::units::{Duration, Size};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualServer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(default)]
    pub listen: Vec<Listen>,
    /// Exact names, `*.example.com`, `www.example.*`, `.example.com`, `~regex`, or `""`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_name: Vec<String>,
    #[serde(default, skip_serializing_if = "Tls::is_empty")]
    pub tls: Tls,
    #[serde(default, skip_serializing_if = "Proxy::is_empty")]
    pub proxy: Proxy,
    #[serde(default, skip_serializing_if = "Client::is_empty")]
    pub client: Client,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_header: Option<Vec<AddHeader>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Vec<AccessRule>>,
    #[serde(default, skip_serializing_if = "RealIp::is_empty")]
    pub real_ip: RealIp,
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
    /// `valid_referers`, its words as written (see `config::referers`): what leaves
    /// `$invalid_referer` empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_referers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Gzip::is_empty")]
    pub gzip: Gzip,
    #[serde(default, skip_serializing_if = "Charset::is_empty")]
    pub charset: Charset,
    #[serde(default, skip_serializing_if = "Resolver::is_empty")]
    pub resolver: Resolver,
    #[serde(default, skip_serializing_if = "Autoindex::is_empty")]
    pub autoindex: Autoindex,
    #[serde(default, skip_serializing_if = "Conditional::is_empty")]
    pub conditional: Conditional,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<Vec<AccessLog>>,
    /// nginx's `root`: where files are served from, and what `$document_root` and
    /// `$request_filename` say. Unset everywhere: `/usr/share/nginx/html`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// The MIME type of responses the appliance makes itself when `types` has none for the URI's
    /// extension (nginx `default_type`; nginx's own default is `text/plain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_type: Option<String>,
    /// Extension to MIME type (nginx `types`); unset inherits, and with none anywhere nginx's
    /// built-in html, gif and jpg apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<IndexMap<String, String>>,
    /// A `return` at server level answers before any location is chosen.
    /// `index`: the files tried, in order, for a URI that ends in `/` (nginx's default:
    /// `index.html`). Inherited whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Vec<String>>,
    /// `try_files`: files tried in order (a trailing `/` tests a directory), then the last
    /// entry: a URI, a named location or `=code`. Not inherited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub try_files: Option<Vec<String>>,
    /// `error_page`: inherited whole, as nginx merges it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_page: Option<Vec<ErrorPage>>,
    /// `recursive_error_pages`: an error in an error page's answer may use `error_page`
    /// again (nginx's default: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive_error_pages: Option<bool>,
    /// `log_not_found`: a file not found is logged as an error (nginx's default: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_not_found: Option<bool>,
    #[serde(rename = "return", default, skip_serializing_if = "Option::is_none")]
    pub return_: Option<Return>,
    /// The rewrite module's directives in order (`rewrite`, `set`, `if`, `break`, `return`),
    /// when there is more than a lone `return`; a server's run before a location is chosen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub script: Vec<Step>,
    #[serde(rename = "location", default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<Location>,
}

/// One `listen`: a socket and what is spoken on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub address: ListenAddress,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default_server: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ssl: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http2: bool,
    /// Expect a PROXY protocol header (v1 or v2) from a front load balancer such as an NLB.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reuseport: bool,
    /// A stream server's UDP socket (nginx `listen ... udp`): datagrams from one client
    /// address are one session.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub udp: bool,
}

impl Listen {
    pub fn new(address: ListenAddress) -> Self {
        Listen {
            address,
            default_server: false,
            ssl: false,
            http2: false,
            proxy_protocol: false,
            backlog: None,
            reuseport: false,
            udp: false,
        }
    }
}

/// A TCP address or a Unix socket path, written `0.0.0.0:80`, `[::]:443` or `unix:/run/lb.sock`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListenAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Tcp(a) => write!(f, "{a}"),
            ListenAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl FromStr for ListenAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("a unix: listen address needs a path".into());
            }
            return Ok(ListenAddress::Unix(PathBuf::from(path)));
        }
        s.parse().map(ListenAddress::Tcp).map_err(|_| {
            format!("listen address \"{s}\" is not \"ip:port\", \"[ipv6]:port\" or \"unix:/path\"")
        })
    }
}

impl Serialize for ListenAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(default, skip_serializing_if = "LocationKind::is_prefix")]
    pub kind: LocationKind,
    /// The URI prefix or exact URI, the regular expression for the regex kinds, or the name
    /// (`@name`) of a named location.
    pub path: String,
    /// nginx's `internal`: only internal redirects (`error_page`) reach it; a client's request
    /// for it gets a 404.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// `alias`: the files of the location's URIs are under this path, the location's prefix
    /// replaced (for a regex location, the whole path, with its captures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Proxy::is_empty")]
    pub proxy: Proxy,
    #[serde(default, skip_serializing_if = "Client::is_empty")]
    pub client: Client,
    /// Response headers added by the appliance (nginx `add_header`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_header: Option<Vec<AddHeader>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Vec<AccessRule>>,
    #[serde(default, skip_serializing_if = "RealIp::is_empty")]
    pub real_ip: RealIp,
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
    /// `valid_referers`, its words as written (see `config::referers`): what leaves
    /// `$invalid_referer` empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_referers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Gzip::is_empty")]
    pub gzip: Gzip,
    #[serde(default, skip_serializing_if = "Charset::is_empty")]
    pub charset: Charset,
    #[serde(default, skip_serializing_if = "Resolver::is_empty")]
    pub resolver: Resolver,
    #[serde(default, skip_serializing_if = "Autoindex::is_empty")]
    pub autoindex: Autoindex,
    #[serde(default, skip_serializing_if = "Conditional::is_empty")]
    pub conditional: Conditional,
    /// Where requests are logged; an empty list means `access_log off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<Vec<AccessLog>>,
    /// nginx's `root`: where files are served from, and what `$document_root` and
    /// `$request_filename` say. Unset everywhere: `/usr/share/nginx/html`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// The MIME type of responses the appliance makes itself when `types` has none for the URI's
    /// extension (nginx `default_type`; nginx's own default is `text/plain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_type: Option<String>,
    /// Extension to MIME type (nginx `types`); unset inherits, and with none anywhere nginx's
    /// built-in html, gif and jpg apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<IndexMap<String, String>>,
    /// `index`: the files tried, in order, for a URI that ends in `/` (nginx's default:
    /// `index.html`). Inherited whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Vec<String>>,
    /// `try_files`: files tried in order (a trailing `/` tests a directory), then the last
    /// entry: a URI, a named location or `=code`. Not inherited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub try_files: Option<Vec<String>>,
    /// `error_page`: inherited whole, as nginx merges it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_page: Option<Vec<ErrorPage>>,
    /// `recursive_error_pages`: an error in an error page's answer may use `error_page`
    /// again (nginx's default: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive_error_pages: Option<bool>,
    /// `log_not_found`: a file not found is logged as an error (nginx's default: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_not_found: Option<bool>,
    #[serde(rename = "return", default, skip_serializing_if = "Option::is_none")]
    pub return_: Option<Return>,
    /// The rewrite module's directives in order (`rewrite`, `set`, `if`, `break`, `return`),
    /// when there is more than a lone `return`; a server's run before a location is chosen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub script: Vec<Step>,
    #[serde(rename = "location", default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<Location>,
}

/// nginx's location modifiers: none, `=`, `^~`, `~`, `~*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationKind {
    #[default]
    Prefix,
    /// `=`: matches this URI only, and wins at once.
    Exact,
    /// `^~`: a prefix that, when it is the longest match, stops the regex search.
    PrefixNoRegex,
    /// `~`: a case-sensitive regular expression.
    Regex,
    /// `~*`: a case-insensitive regular expression.
    RegexCaseless,
    /// `@name`: no URI reaches it; `error_page` sends requests to it by name. Server level
    /// only.
    Named,
}

impl LocationKind {
    pub fn is_prefix(&self) -> bool {
        *self == LocationKind::Prefix
    }
    pub fn is_regex(&self) -> bool {
        matches!(self, LocationKind::Regex | LocationKind::RegexCaseless)
    }
    /// The modifier as written in nginx.conf.
    pub fn modifier(&self) -> &'static str {
        match self {
            LocationKind::Prefix => "",
            LocationKind::Exact => "=",
            LocationKind::PrefixNoRegex => "^~",
            LocationKind::Regex => "~",
            LocationKind::RegexCaseless => "~*",
            LocationKind::Named => "",
        }
    }
}

/// nginx's `return`: a status with, for redirects, a `Location`, and otherwise an optional body.
/// Both may hold variables (`https://$host$request_uri`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Return {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl Return {
    /// The statuses for which nginx treats the text as a redirect target.
    pub fn is_redirect_status(status: u16) -> bool {
        matches!(status, 301 | 302 | 303 | 307 | 308)
    }
}

/// How requests are passed to the upstream (nginx's `proxy_*`).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// `http://pool`, `https://10.0.0.5:8443/api/`: the target and an optional URI part that
    /// replaces the matched location prefix. Only locations (and `if` blocks) have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<ProxyPass>,
    /// `proxy_pass` with variables (`http://$backend`, `$target`): evaluated for each request.
    /// A result naming an upstream (`http://name`) goes to that pool; one with an IP address,
    /// to that address; one with a URI part is sent that URI as it is. Only locations have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_template: Option<String>,
    /// Request headers to set, in order; an empty value removes the header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_header: Option<IndexMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_version: Option<HttpVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_timeout: Option<Duration>,
    /// When a request moves on to the next server; `["off"]` never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_upstream: Option<Vec<NextUpstream>>,
    /// Zero: no limit but the number of servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_upstream_tries: Option<u32>,
    /// Zero: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_upstream_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_request_headers: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_request_body: Option<bool>,
    /// Upstream response headers not passed to the client (beyond nginx's own list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hide_header: Option<Vec<String>>,
    /// Headers nginx hides by default that should be passed after all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_header: Option<Vec<String>>,
    /// Rewriting of `Location` and `Refresh` in responses (nginx's `proxy_redirect`): `"off"`
    /// alone, or rules tried in order, each `"default"` (in a location with a `pass`) or
    /// `{ from, to }` (`from` a prefix, or a regex after `~`/`~*`). Unset, a location with a
    /// `pass` gets the default rule (see `proxy::redirect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Vec<ProxyRedirect>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffering: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_buffering: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercept_errors: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_verify_depth: Option<u32>,
    /// The name checked in the upstream's certificate and sent as SNI (default: the pass host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_server_name: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_trusted_certificate: Option<PathBuf>,
}

impl Proxy {
    pub fn is_empty(&self) -> bool {
        *self == Proxy::default()
    }
}

/// `proxy_pass` parsed: scheme, the host part as written (an upstream name, `host:port` or
/// `unix:/path`), and the URI part if one was given.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProxyPass {
    pub scheme: Scheme,
    pub host: String,
    pub uri: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(&self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// `http://`, as nginx's error lines write an upstream.
    pub fn with_separator(&self) -> &'static str {
        match self {
            Scheme::Http => "http://",
            Scheme::Https => "https://",
        }
    }
    pub fn default_port(&self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl fmt::Display for ProxyPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if let Some(uri) = &self.uri {
            if self.host.starts_with("unix:") {
                // nginx separates a socket path from the URI with a colon.
                f.write_str(":")?;
            }
            f.write_str(uri)?;
        }
        Ok(())
    }
}

impl FromStr for ProxyPass {
    type Err = String;
    /// nginx's rules: `http://` or `https://`, then the host up to the first `/`; for a Unix
    /// socket (`http://unix:/path:/uri`) the URI starts after the colon that ends the path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = if let Some(r) = s.strip_prefix("http://") {
            (Scheme::Http, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (Scheme::Https, r)
        } else {
            return Err(format!("invalid URL prefix in \"{s}\""));
        };
        let (host, uri) = if let Some(path) = rest.strip_prefix("unix:") {
            match path.find(':') {
                Some(i) => (
                    format!("unix:{}", &path[..i]),
                    Some(path[i + 1..].to_string()),
                ),
                None => (rest.to_string(), None),
            }
        } else {
            match rest.find('/') {
                Some(i) => (rest[..i].to_string(), Some(rest[i..].to_string())),
                None => (rest.to_string(), None),
            }
        };
        if host.is_empty() || host == "unix:" {
            return Err(format!("no host in \"{s}\""));
        }
        Ok(ProxyPass { scheme, host, uri })
    }
}

impl Serialize for ProxyPass {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProxyPass {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HttpVersion {
    #[serde(rename = "1.0")]
    Http10,
    #[serde(rename = "1.1")]
    Http11,
}

/// The conditions of `proxy_next_upstream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NextUpstream {
    Error,
    Timeout,
    InvalidHeader,
    Http500,
    Http502,
    Http503,
    Http504,
    Http403,
    Http404,
    Http429,
    NonIdempotent,
    Off,
}

impl NextUpstream {
    pub const ALL: [NextUpstream; 12] = [
        NextUpstream::Error,
        NextUpstream::Timeout,
        NextUpstream::InvalidHeader,
        NextUpstream::Http500,
        NextUpstream::Http502,
        NextUpstream::Http503,
        NextUpstream::Http504,
        NextUpstream::Http403,
        NextUpstream::Http404,
        NextUpstream::Http429,
        NextUpstream::NonIdempotent,
        NextUpstream::Off,
    ];

    /// The word nginx uses for it.
    pub fn as_str(&self) -> &'static str {
        match self {
            NextUpstream::Error => "error",
            NextUpstream::Timeout => "timeout",
            NextUpstream::InvalidHeader => "invalid_header",
            NextUpstream::Http500 => "http_500",
            NextUpstream::Http502 => "http_502",
            NextUpstream::Http503 => "http_503",
            NextUpstream::Http504 => "http_504",
            NextUpstream::Http403 => "http_403",
            NextUpstream::Http404 => "http_404",
            NextUpstream::Http429 => "http_429",
            NextUpstream::NonIdempotent => "non_idempotent",
            NextUpstream::Off => "off",
        }
    }

    pub fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == word)
    }

    /// The status this condition retries on, if it is a status condition.
    pub fn status(&self) -> Option<u16> {
        match self {
            NextUpstream::Http500 => Some(500),
            NextUpstream::Http502 => Some(502),
            NextUpstream::Http503 => Some(503),
            NextUpstream::Http504 => Some(504),
            NextUpstream::Http403 => Some(403),
            NextUpstream::Http404 => Some(404),
            NextUpstream::Http429 => Some(429),
            _ => None,
        }
    }
}

/// One `allow` or `deny` of nginx's access module, as `{ allow = "10.0.0.0/8" }` or
/// `{ deny = "all" }`: the first rule whose addresses hold the client decides; a client no rule
/// holds is allowed. Denied requests get 403.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessRule {
    Allow(String),
    Deny(String),
}

/// The clients an [`AccessRule`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessScope {
    All,
    /// Clients on a Unix-domain socket (`unix:`).
    Unix,
    /// An address or a CIDR block, its low bits cleared as nginx clears them.
    Net(ipnet::IpNet),
}

impl AccessRule {
    pub fn deny(&self) -> bool {
        matches!(self, AccessRule::Deny(_))
    }

    pub fn addresses(&self) -> &str {
        match self {
            AccessRule::Allow(a) | AccessRule::Deny(a) => a,
        }
    }

    /// The clients the rule is about, as ngx_http_access_rule reads them; with `true` when a
    /// CIDR block had low bits set (nginx warns that they "are meaningless").
    pub fn scope(&self) -> Result<(AccessScope, bool), String> {
        AccessScope::parse(self.addresses())
    }
}

impl AccessScope {
    /// `all`, `unix:`, an address or a CIDR block (ngx_ptocidr); with `true` when the block
    /// had low bits set.
    pub fn parse(text: &str) -> Result<(AccessScope, bool), String> {
        let invalid = || format!("invalid parameter \"{text}\"");
        match text {
            "all" => return Ok((AccessScope::All, false)),
            "unix:" => return Ok((AccessScope::Unix, false)),
            _ => {}
        }
        let net = match text.split_once('/') {
            None => ipnet::IpNet::from(text.parse::<std::net::IpAddr>().map_err(|_| invalid())?),
            Some((addr, len)) => {
                let addr: std::net::IpAddr = addr.parse().map_err(|_| invalid())?;
                let len: u8 = len.parse().map_err(|_| invalid())?;
                ipnet::IpNet::new(addr, len).map_err(|_| invalid())?
            }
        };
        let trunc = net.trunc();
        Ok((AccessScope::Net(trunc), trunc != net))
    }
}

/// nginx's realip module at one level: who is trusted to say who the client is, and where
/// it says it. Each setting is inherited on its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealIp {
    /// `set_real_ip_from`: addresses, CIDR blocks or `unix:` (a list, inherited whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<String>>,
    /// `real_ip_header`: `X-Real-IP` (nginx's default), `X-Forwarded-For`, `proxy_protocol`
    /// or another header's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `real_ip_recursive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive: Option<bool>,
}

impl RealIp {
    pub fn is_empty(&self) -> bool {
        *self == RealIp::default()
    }

    /// Inner settings win setting by setting.
    pub fn merged(&self, outer: &RealIp) -> RealIp {
        RealIp {
            from: self.from.clone().or_else(|| outer.from.clone()),
            header: self.header.clone().or_else(|| outer.header.clone()),
            recursive: self.recursive.or(outer.recursive),
        }
    }
}

/// One `proxy_redirect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProxyRedirect {
    /// `"default"` or `"off"`.
    Keyword(String),
    /// Replace `from` (a prefix, or a regex when it starts with `~`/`~*`) with `to`.
    Replace { from: String, to: String },
}

/// What the appliance expects of clients (nginx's `client_*` and `keepalive_*`).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// Largest request body accepted; larger gets 413. Zero: no limit. nginx default 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<Size>,
    /// How long an idle keep-alive connection stays open (ELB: idle timeout). Zero disables
    /// keep-alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_timeout: Option<Duration>,
    /// Timeout between two writes of the response (nginx `send_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_timeout: Option<Duration>,
    /// Files go from the page cache to the socket with sendfile(2), not through a buffer
    /// (nginx `sendfile`, off by default). Cleartext connections only, as in nginx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sendfile: Option<bool>,
    /// The most one sendfile(2) call sends before other connections get a turn; zero: no
    /// limit. nginx default 2m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sendfile_max_chunk: Option<Size>,
}

impl Client {
    pub fn is_empty(&self) -> bool {
        *self == Client::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddHeader {
    pub name: String,
    pub value: String,
    /// Also on error responses, not only 200, 201, 204, 206, 301, 302, 303, 304, 307, 308.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub always: bool,
}

/// TLS for a server's `ssl` listeners, inherited from `[http]` like the other settings.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate and key pairs; several (RSA and ECDSA) may serve one server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Vec<Certificate>>,
    /// `TLSv1`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`; TLS 1.2 and 1.3 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<TlsVersion>>,
    /// An OpenSSL cipher list for TLS 1.2 and below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphers: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_server_ciphers: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_timeout: Option<Duration>,
    /// `ssl_verify_client`: whether clients are asked for a certificate, and which requests
    /// are refused for it (`off` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_client: Option<VerifyClient>,
    /// `ssl_client_certificate`: PEM CA certificates client certificates are verified
    /// against, whose names are sent to the client in the certificate request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<PathBuf>,
    /// `ssl_trusted_certificate`: CA certificates also trusted, whose names are not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_certificate: Option<PathBuf>,
    /// `ssl_verify_depth`: how long a client's chain may be (1 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_depth: Option<u32>,
    /// `ssl_crl`: PEM certificate revocation lists. With one, every certificate of a client's
    /// chain must have its issuer's list, and be absent from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
}

impl Tls {
    pub fn is_empty(&self) -> bool {
        *self == Tls::default()
    }

    /// These settings, with what they leave unset taken from `outer` (a server's from the
    /// `http` or `stream` block's), as nginx merges them.
    pub fn inherit(self, outer: &Tls) -> Tls {
        Tls {
            certificates: self.certificates.or_else(|| outer.certificates.clone()),
            protocols: self.protocols.or_else(|| outer.protocols.clone()),
            ciphers: self.ciphers.or_else(|| outer.ciphers.clone()),
            prefer_server_ciphers: self.prefer_server_ciphers.or(outer.prefer_server_ciphers),
            session_timeout: self.session_timeout.or(outer.session_timeout),
            verify_client: self.verify_client.or(outer.verify_client),
            client_certificate: (self.client_certificate)
                .or_else(|| outer.client_certificate.clone()),
            trusted_certificate: (self.trusted_certificate)
                .or_else(|| outer.trusted_certificate.clone()),
            verify_depth: self.verify_depth.or(outer.verify_depth),
            crl: self.crl.or_else(|| outer.crl.clone()),
        }
    }
}

/// nginx's `ssl_verify_client`. The handshake always completes; a request the mode refuses
/// gets nginx's 400 page ("The SSL certificate error", "No required SSL certificate was
/// sent").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyClient {
    #[default]
    Off,
    /// A certificate is required, and must verify.
    On,
    /// A certificate is asked for; one that is sent must verify.
    Optional,
    /// A certificate is asked for; one that does not verify for want of its CA is let
    /// through, its `$ssl_client_verify` saying why.
    OptionalNoCa,
}

impl VerifyClient {
    pub fn from_nginx(word: &str) -> Option<VerifyClient> {
        Some(match word {
            "off" => VerifyClient::Off,
            "on" => VerifyClient::On,
            "optional" => VerifyClient::Optional,
            "optional_no_ca" => VerifyClient::OptionalNoCa,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// PEM: the certificate followed by its chain.
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// PEM intermediates sent after `certificate`, for certificates kept apart from their chain
    /// (as IAM keeps them: `iam-servercertupload -c`, GetServerCertificate's chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "TLSv1")]
    Tls10,
    #[serde(rename = "TLSv1.1")]
    Tls11,
    #[serde(rename = "TLSv1.2")]
    Tls12,
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

impl TlsVersion {
    pub fn from_nginx(word: &str) -> Option<Self> {
        match word {
            "TLSv1" => Some(TlsVersion::Tls10),
            "TLSv1.1" => Some(TlsVersion::Tls11),
            "TLSv1.2" => Some(TlsVersion::Tls12),
            "TLSv1.3" => Some(TlsVersion::Tls13),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_pass_splits_like_nginx() {
        let p: ProxyPass = "http://backend".parse().unwrap();
        assert_eq!((p.host.as_str(), p.uri.as_deref()), ("backend", None));
        let p: ProxyPass = "https://10.0.0.1:8443/api/".parse().unwrap();
        assert_eq!(p.scheme, Scheme::Https);
        assert_eq!(
            (p.host.as_str(), p.uri.as_deref()),
            ("10.0.0.1:8443", Some("/api/"))
        );
        let p: ProxyPass = "http://unix:/run/app.sock:/x".parse().unwrap();
        assert_eq!(
            (p.host.as_str(), p.uri.as_deref()),
            ("unix:/run/app.sock", Some("/x"))
        );
        assert_eq!(p.to_string(), "http://unix:/run/app.sock:/x");
        assert!("ftp://x".parse::<ProxyPass>().is_err());
        assert!("http:///x".parse::<ProxyPass>().is_err());
    }

    #[test]
    fn listen_addresses() {
        assert!("0.0.0.0:80".parse::<ListenAddress>().is_ok());
        assert!("[::]:443".parse::<ListenAddress>().is_ok());
        assert_eq!(
            "unix:/run/x.sock"
                .parse::<ListenAddress>()
                .unwrap()
                .to_string(),
            "unix:/run/x.sock"
        );
        assert!("80".parse::<ListenAddress>().is_err());
    }
}

//! TCP and UDP load balancing (nginx `stream {}`, ELB TCP and SSL listeners).

use serde::{Deserialize, Serialize};

use super::http::{AccessRule, Listen, Tls};
use super::limit::Limits;
use super::log::AccessLog;
use super::origin::Origin;
use super::resolver::Resolver;
use super::units::{Duration, Size};
use super::upstream::ProxyProtocol;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamServer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    pub listen: Vec<Listen>,
    /// An upstream name from `[[stream.upstream]]` or an address `host:port`; with variables
    /// (`$by_sni`), evaluated for each connection to one of those. Each server has `pass` or
    /// `return`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    /// nginx's stream `return`: the text (variables allowed) sent to the client, which is
    /// then closed; nothing is proxied.
    #[serde(rename = "return", default, skip_serializing_if = "Option::is_none")]
    pub respond: Option<String>,
    /// nginx's `ssl_preread on`: before choosing where to go, read the client's TLS
    /// ClientHello for `$ssl_preread_server_name`, `$ssl_preread_alpn_protocols` and
    /// `$ssl_preread_protocol`, and pass it on untouched.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ssl_preread: bool,
    /// nginx's `resolver`: where a `pass` with variables that names a host is looked up.
    #[serde(default, skip_serializing_if = "Resolver::is_empty")]
    pub resolver: Resolver,
    /// How long to wait for the ClientHello (nginx `preread_timeout`, default 30s); a client
    /// that has not sent enough by then is closed, not proxied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preread_timeout: Option<Duration>,
    /// At most this much is read waiting for it (nginx `preread_buffer_size`, default 16k); a
    /// ClientHello that does not fit closes the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preread_buffer_size: Option<Size>,
    /// TLS termination for `ssl` listeners (ELB SSL listeners).
    #[serde(default, skip_serializing_if = "Tls::is_empty")]
    pub tls: Tls,
    /// nginx default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Idle time between two reads or writes before the session is closed; nginx default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Try the next server when a connection cannot be made; nginx default on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_upstream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_upstream_tries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_upstream_timeout: Option<Duration>,
    /// Send a PROXY protocol header to the upstream (nginx `proxy_protocol on` is v1; ELB's
    /// ProxyProtocolPolicyType is v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Speak TLS to the upstream (nginx `proxy_ssl on`, ELB `instance-protocol=SSL`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upstream_tls: bool,
    /// How that TLS checks the backend, as nginx's `proxy_ssl_verify`, `_verify_depth`,
    /// `_name`, `_server_name` and `_trusted_certificate` in stream.
    #[serde(default, skip_serializing_if = "UpstreamTlsCheck::is_empty")]
    pub upstream_tls_check: UpstreamTlsCheck,
    /// `allow` and `deny`: a connection from a client they refuse is closed at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Vec<AccessRule>>,
    /// `limit_conn` (with its log level and dry run): connections at once per key of each
    /// `[[stream.connection_zone]]` listed; one over the limit is closed at once.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// nginx's stream `set_real_ip_from`: from these addresses (CIDR blocks, `unix:`), the
    /// client is the one a connection's PROXY header names: `$remote_addr`, `allow` and `deny`,
    /// `limit_conn`, `hash` keys and the PROXY header sent on see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_ip_from: Option<Vec<String>>,
    /// How long to wait for a `listen ... proxy_protocol` header (nginx
    /// `proxy_protocol_timeout`, default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol_timeout: Option<Duration>,
    /// How long a client's TLS handshake may take (nginx `ssl_handshake_timeout`, default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_timeout: Option<Duration>,
    /// nginx `proxy_responses`, for UDP: the datagrams expected from the backend for each
    /// one from the client; once they have come, the session ends (unset: no limit, and the
    /// session ends after `timeout` of silence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses: Option<u32>,
    /// nginx `proxy_requests`, for UDP: after this many datagrams from a client, the next
    /// starts a new session (unset or 0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
    /// nginx `proxy_half_close`: one side's close is passed on to the other, and the session
    /// lasts until both have closed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub half_close: bool,
    /// Where each session is logged when it ends, in a `[[stream.log_format]]` named by each
    /// (a stream log has no default format); none, or an empty list, logs nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<Vec<AccessLog>>,
}

/// The checks of TLS to stream backends. nginx's defaults: nothing checked, no SNI.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsCheck {
    /// `proxy_ssl_verify on`: the backend's certificate must chain to `trusted_certificate`
    /// and match the name; otherwise the next server is tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
    /// `proxy_ssl_verify_depth` (nginx's default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_depth: Option<u32>,
    /// `proxy_ssl_name`, variables allowed: the name checked (and sent as SNI); by default
    /// the host of `pass` (an upstream's name, or the address without its port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `proxy_ssl_server_name on`: send the name as SNI (never an IP address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<bool>,
    /// `proxy_ssl_trusted_certificate`: PEM CA certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_certificate: Option<std::path::PathBuf>,
}

impl UpstreamTlsCheck {
    pub fn is_empty(&self) -> bool {
        *self == UpstreamTlsCheck::default()
    }

    /// Settings of a server over those of the stream block, one by one, as nginx merges them.
    pub fn merged(&self, outer: &UpstreamTlsCheck) -> UpstreamTlsCheck {
        UpstreamTlsCheck {
            verify: self.verify.or(outer.verify),
            verify_depth: self.verify_depth.or(outer.verify_depth),
            name: self.name.clone().or_else(|| outer.name.clone()),
            server_name: self.server_name.or(outer.server_name),
            trusted_certificate: self
                .trusted_certificate
                .clone()
                .or_else(|| outer.trusted_certificate.clone()),
        }
    }
}

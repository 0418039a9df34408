//! TCP load balancing (nginx `stream {}`, ELB TCP and SSL listeners).

use serde::{Deserialize, Serialize};

use super::http::{AccessRule, Listen, Tls};
use super::limit::Limits;
use super::origin::Origin;
use super::units::Duration;
use super::upstream::ProxyProtocol;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamServer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    pub listen: Vec<Listen>,
    /// An upstream name from `[[stream.upstream]]` or an address `host:port`.
    pub pass: String,
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
    /// `allow` and `deny`: a connection from a client they refuse is closed at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Vec<AccessRule>>,
    /// `limit_conn` (with its log level and dry run): connections at once per key of each
    /// `[[stream.connection_zone]]` listed; one over the limit is closed at once.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
}

//! nginx's `resolver` on the data path: the host name in a `proxy_pass` with variables turned
//! into addresses by DNS, as ngx_resolver does it: queries go to the configured servers only
//! (no /etc/hosts, no search domains), for A and AAAA records (A only with `ipv6=off`); an
//! answer is kept for its TTL, or for `valid=` when set, and a name that does not exist for
//! `valid=` or 10 s; a query gives up after `resolver_timeout`. Each worker thread keeps its
//! own cache, as each nginx worker process does.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::TokioResolver;
use thread_local::ThreadLocal;

use crate::compile::diag::Diagnostic;
use crate::config::{self, Origin};
use crate::sync::lock;

/// nginx's `resolver_timeout` when the config has none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long nginx keeps "no such name" when `valid=` does not say.
const NEGATIVE_TTL: Duration = Duration::from_secs(10);

/// Resolvers built so far, by their settings: locations with the same `resolver` share one
/// (and its caches), and a reload that keeps the settings keeps what they cached.
static BUILT: Mutex<Vec<(config::Resolver, Weak<NameResolver>)>> = Mutex::new(Vec::new());

pub struct NameResolver {
    config: ResolverConfig,
    options: ResolverOpts,
    /// Made on each worker thread as it first needs one: its queries and cache stay there.
    per_thread: ThreadLocal<TokioResolver>,
}

impl NameResolver {
    /// The resolver for a location's settings, `None` without a `resolver` line. A server
    /// given by name is looked up now, as nginx does when it reads the config.
    pub fn shared(
        settings: &config::Resolver,
        at: Option<&Origin>,
    ) -> Result<Option<Arc<NameResolver>>, Diagnostic> {
        let Some(servers) = settings.servers.as_deref().filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let mut built = lock(&BUILT);
        built.retain(|(_, weak)| weak.strong_count() > 0);
        if let Some(resolver) = built
            .iter()
            .find(|(key, _)| key == settings)
            .and_then(|(_, weak)| weak.upgrade())
        {
            return Ok(Some(resolver));
        }
        let mut name_servers = Vec::new();
        for text in servers {
            for address in server_addresses(text).map_err(|e| Diagnostic::error(e).at_opt(at))? {
                let mut udp = ConnectionConfig::udp();
                udp.port = address.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = address.port();
                name_servers.push(NameServerConfig::new(address.ip(), true, vec![udp, tcp]));
            }
        }
        let mut options = ResolverOpts::default();
        options.timeout = settings.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
        options.attempts = 1;
        options.ndots = 0;
        options.use_hosts_file = ResolveHosts::Never;
        options.ip_strategy = match settings.ipv6 {
            Some(false) => LookupIpStrategy::Ipv4Only,
            _ => LookupIpStrategy::Ipv4AndIpv6,
        };
        if let Some(valid) = settings.valid {
            options.positive_min_ttl = Some(valid.0);
            options.positive_max_ttl = Some(valid.0);
        }
        let negative = settings.valid.map_or(NEGATIVE_TTL, |v| v.0);
        options.negative_min_ttl = Some(negative);
        options.negative_max_ttl = Some(negative);
        let resolver = Arc::new(NameResolver {
            config: ResolverConfig::from_parts(None, Vec::new(), name_servers),
            options,
            per_thread: ThreadLocal::new(),
        });
        built.push((settings.clone(), Arc::downgrade(&resolver)));
        Ok(Some(resolver))
    }

    /// The addresses of `name`, or why there are none in nginx's words ("3: Host not found").
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        let resolver = self.per_thread.get_or_try(|| {
            let provider = TokioRuntimeProvider::default();
            TokioResolver::builder_with_config(self.config.clone(), provider)
                .with_options(self.options.clone())
                .build()
                .map_err(|e| format!("resolver: {e}"))
        })?;
        // The name as given, never one of the search domains.
        let absolute = match name.ends_with('.') {
            true => name.to_string(),
            false => format!("{name}."),
        };
        match resolver.lookup_ip(absolute.as_str()).await {
            Ok(found) => {
                let addresses: Vec<IpAddr> = found.iter().collect();
                match addresses.is_empty() {
                    true => Err(reason(None)),
                    false => Ok(addresses),
                }
            }
            Err(e) => Err(reason(Some(&e))),
        }
    }
}

/// ngx_resolver_strerror's text for a failed look-up.
fn reason(error: Option<&NetError>) -> String {
    let Some(error) = error else {
        return "3: Host not found".to_string();
    };
    match error {
        NetError::Timeout => "110: Operation timed out".to_string(),
        NetError::Dns(DnsError::NoRecordsFound(no)) => match no.response_code {
            ResponseCode::ServFail => "2: Server failure".to_string(),
            ResponseCode::Refused => "5: Operation refused".to_string(),
            ResponseCode::FormErr => "1: Format error".to_string(),
            ResponseCode::NotImp => "4: Unimplemented".to_string(),
            _ => "3: Host not found".to_string(),
        },
        other => format!("Unknown error: {other}"),
    }
}

/// A `resolver` address's socket addresses: one for an IP address, those the system finds for
/// a name.
fn server_addresses(text: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = config::resolver::split_server(text)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default();
    match found.is_empty() {
        true => Err(format!("host not found in resolver \"{text}\"")),
        false => Ok(found),
    }
}

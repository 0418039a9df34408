//! `proxy_pass` with variables (`proxy_pass http://$backend;`): the URL is evaluated for each
//! request, as ngx_http_proxy_eval does, and the request goes where it points.
//!
//! nginx's rules, kept here: the URL must begin with `http://` or `https://` (else a 500, and
//! "invalid URL prefix" in the log); a host without a port that names an `upstream` goes to
//! that pool, sharing its state with every other use of it; an IP address goes to that
//! address; any other name is looked up with the location's `resolver` (see `resolver.rs`) and
//! the request goes to the addresses found, round robin; a name that cannot be resolved gets
//! 502 ("... could not be resolved (3: Host not found)"), and so does any name without a
//! `resolver` ("no resolver defined to resolve ..."). A URI part in the result is sent as the
//! request target as it is (the client's arguments are not added); without one, the request's
//! own URI is sent, as for a `proxy_pass` without a URI part.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::compile::diag::Diagnostic;
use crate::config::template::Template;
use crate::config::{self, Defined, Origin, ProxyPass};
use crate::sync::lock;

use super::resolver::NameResolver;
use super::runtime::{implicit_pool, proxy_conf, resolved_pool, ProxyConf, UpstreamPool};

/// How many proxying set-ups (one per upstream or address the URL named) a location keeps for
/// the next requests; past it, they are made afresh.
const KEPT: usize = 256;

/// Pools made for addresses no `upstream` names get ids apart from the config's.
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1 << 48);

/// A location's `proxy_pass` with variables.
pub struct DynamicPass {
    pub url: Template,
    /// The location's proxying settings, for each target the URL names.
    settings: config::Proxy,
    origin: Option<Origin>,
    declared: Arc<std::collections::HashSet<String>>,
    /// Set-ups made so far, by scheme and target.
    made: Mutex<HashMap<String, Arc<ProxyConf>>>,
}

/// Where a request goes: the proxying set-up, and the URI part the URL had, sent as it is.
pub struct Target {
    pub proxy: Arc<ProxyConf>,
    pub uri: Option<Vec<u8>>,
}

impl DynamicPass {
    pub fn new(
        text: &str,
        settings: &config::Proxy,
        origin: Option<&Origin>,
        declared: Arc<std::collections::HashSet<String>>,
    ) -> Result<DynamicPass, Diagnostic> {
        let url = Template::parse_in(text, Defined::Names(&declared))
            .map_err(|e| Diagnostic::error(e.to_string()).at_opt(origin))?;
        let mut settings = settings.clone();
        settings.pass = None;
        settings.pass_template = None;
        Ok(DynamicPass {
            url,
            settings,
            origin: origin.cloned(),
            declared,
            made: Mutex::new(HashMap::new()),
        })
    }

    /// Where the evaluated URL `url` sends the request; `pools` are the config's, `resolver`
    /// the location's. `Err` with the status nginx answers with, the reason given to `log`.
    pub async fn target(
        &self,
        url: &[u8],
        pools: &HashMap<String, Arc<UpstreamPool>>,
        resolver: Option<&NameResolver>,
        log: &(dyn Fn(std::fmt::Arguments<'_>) + Sync),
    ) -> Result<Target, u16> {
        let text = String::from_utf8_lossy(url);
        let (scheme, rest) = match split_scheme(&text) {
            Some(split) => split,
            None => {
                log(format_args!("invalid URL prefix in \"{text}\""));
                return Err(500);
            }
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (host, uri) = rest.split_at(end);
        let uri = match uri {
            "" => None,
            u if u.starts_with('?') => Some(format!("/{u}").into_bytes()),
            u => Some(u.as_bytes().to_vec()),
        };
        if host.is_empty() {
            log(format_args!("no host in upstream \"{rest}\""));
            return Err(500);
        }
        let mut key = format!("{scheme}://{host}");
        // An upstream or an address made before (a name never is under this key alone).
        if let Some(proxy) = lock(&self.made).get(&key) {
            return Ok(Target {
                proxy: proxy.clone(),
                uri,
            });
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        let upstream = pools
            .iter()
            .find(|(name, _)| !name.contains("://") && name.eq_ignore_ascii_case(host));
        // A name for the resolver: the set-up is made for the addresses it found.
        let mut resolved = None;
        if upstream.is_none() && !is_address(host) {
            let (name, port) = match host.rsplit_once(':') {
                Some((name, port)) => match port.parse::<u16>() {
                    Ok(port) if port > 0 => (name, port),
                    _ => {
                        log(format_args!("invalid port in upstream \"{rest}\""));
                        return Err(502);
                    }
                },
                None => (host, default_port),
            };
            let Some(resolver) = resolver else {
                log(format_args!("no resolver defined to resolve {name}"));
                return Err(502);
            };
            let addresses = match resolver.resolve(name).await {
                Ok(ips) => ips,
                Err(why) => {
                    log(format_args!("{name} could not be resolved ({why})"));
                    return Err(502);
                }
            };
            let addresses: Vec<SocketAddr> = addresses
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect();
            key = format!("{key} {addresses:?}");
            if let Some(proxy) = lock(&self.made).get(&key) {
                return Ok(Target {
                    proxy: proxy.clone(),
                    uri,
                });
            }
            resolved = Some(addresses);
        }
        let id = || NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed);
        let pool = match upstream {
            // An `upstream` block of that name (nginx matches one only for a host without a
            // port).
            Some((_, pool)) => pool.clone(),
            None => {
                let made = match &resolved {
                    Some(addresses) => resolved_pool(host, addresses, self.origin.as_ref(), id()),
                    None => implicit_pool(host, default_port, self.origin.as_ref(), id()),
                };
                match made {
                    Ok(pool) => Arc::new(pool),
                    Err(e) => {
                        log(format_args!("{} in upstream \"{rest}\"", e.message));
                        return Err(502);
                    }
                }
            }
        };
        let pass = ProxyPass {
            scheme: if scheme == "https" {
                config::Scheme::Https
            } else {
                config::Scheme::Http
            },
            host: host.to_string(),
            uri: None,
        };
        let proxy = proxy_conf(
            &self.settings,
            &pass,
            pool,
            self.origin.as_ref(),
            Defined::Names(&self.declared),
        )
        .map_err(|e| {
            log(format_args!("{}", e.message));
            500u16
        })?;
        let proxy = Arc::new(proxy);
        let mut made = lock(&self.made);
        if made.len() >= KEPT {
            made.clear();
        }
        made.insert(key, proxy.clone());
        Ok(Target { proxy, uri })
    }
}

/// `http` or `https` and the rest, nginx's way: the prefix in any case, something after it.
fn split_scheme(url: &str) -> Option<(&'static str, &str)> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") && url.len() > 7 {
        Some(("http", &url[7..]))
    } else if lower.starts_with("https://") && url.len() > 8 {
        Some(("https", &url[8..]))
    } else {
        None
    }
}

/// An IP address, with or without a port (`10.0.0.1`, `10.0.0.1:8080`, `[::1]:8080`).
fn is_address(host: &str) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<IpAddr>().is_ok());
    }
    let ip = host.rsplit_once(':').map_or(host, |(ip, _)| ip);
    ip.parse::<std::net::Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_as_nginx_splits_them() {
        assert_eq!(split_scheme("http://a/b"), Some(("http", "a/b")));
        assert_eq!(split_scheme("HTTPS://a"), Some(("https", "a")));
        assert_eq!(split_scheme("http://"), None);
        assert_eq!(split_scheme("ftp://a"), None);
        assert_eq!(split_scheme("backend"), None);
        assert!(is_address("10.0.0.1"));
        assert!(is_address("10.0.0.1:8080"));
        assert!(is_address("[::1]:8080"));
        assert!(!is_address("backend"));
        assert!(!is_address("backend:8080"));
    }
}

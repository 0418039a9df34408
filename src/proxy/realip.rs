//! nginx's realip module (`set_real_ip_from`, `real_ip_header`, `real_ip_recursive`): behind
//! a trusted proxy, the client address is the one the proxy reports, in a header or its PROXY
//! protocol header, and it is that address `$remote_addr`, `allow`/`deny`, `ip_hash` and the
//! `X-Forwarded-For` sent upstream see.
//!
//! As ngx_http_realip_handler does it: nothing changes unless the connecting address is
//! trusted. From `X-Forwarded-For` (every such header, last first) the rightmost address is
//! taken; with `real_ip_recursive on`, addresses are taken from the right for as long as the
//! one before was trusted (ngx_http_get_forwarded_addr). An address may carry a port
//! (`1.2.3.4:5`, `[::1]:5`); the PROXY protocol gives its source port. The server's settings
//! apply first (nginx's post-read phase), and the location's only when those changed nothing
//! (its pre-access phase).

use std::net::{IpAddr, SocketAddr};

use super::client_request::ClientRequest;
use super::proxy_protocol::ProxyInfo;
use crate::config::{AccessScope, RealIp};

/// A level's realip settings, once at least one trusted address is set.
#[derive(Clone, Debug)]
pub struct RealIpConf {
    from: Vec<AccessScope>,
    source: Source,
    recursive: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum Source {
    XRealIp,
    XForwardedFor,
    ProxyProtocol,
    /// Another header, by its lowercase name.
    Header(String),
}

/// How a walk through a header ended (nginx's NGX_OK, NGX_DONE, NGX_DECLINED).
#[derive(Clone, Copy, PartialEq)]
enum Walk {
    Whole,
    Stopped,
    Unchanged,
}

impl RealIpConf {
    /// The settings of a level as merged; `None` without `set_real_ip_from`.
    pub fn new(model: &RealIp) -> Option<RealIpConf> {
        let from: Vec<AccessScope> = model
            .from
            .iter()
            .flatten()
            .filter_map(|text| AccessScope::parse(text).ok().map(|(scope, _)| scope))
            .collect();
        if from.is_empty() {
            return None;
        }
        // nginx compares the three names as written; any other is a header name.
        let source = match model.header.as_deref().unwrap_or("X-Real-IP") {
            "X-Real-IP" => Source::XRealIp,
            "X-Forwarded-For" => Source::XForwardedFor,
            "proxy_protocol" => Source::ProxyProtocol,
            other => Source::Header(other.to_ascii_lowercase()),
        };
        Some(RealIpConf {
            from,
            source,
            recursive: model.recursive.unwrap_or(false),
        })
    }

    /// `geo`'s `proxy` and `proxy_recursive`: the address in `X-Forwarded-For` when the client
    /// is one of `proxies`, as ngx_http_geo_addr asks ngx_http_get_forwarded_addr.
    pub fn forwarded_for(proxies: Vec<ipnet::IpNet>, recursive: bool) -> Option<RealIpConf> {
        if proxies.is_empty() {
            return None;
        }
        Some(RealIpConf {
            from: proxies.into_iter().map(AccessScope::Net).collect(),
            source: Source::XForwardedFor,
            recursive,
        })
    }

    /// The client address to use instead of `peer`, the connecting one (`None` on a Unix
    /// socket), or `None` to keep it. A port of 0 means none was given.
    pub fn client(
        &self,
        peer: Option<SocketAddr>,
        request: ClientRequest<'_>,
        proxy_protocol: Option<&ProxyInfo>,
    ) -> Option<SocketAddr> {
        let mut addr = peer;
        let walk = match &self.source {
            Source::XForwardedFor => {
                let values: Vec<&[u8]> = request.header_values("x-forwarded-for").collect();
                let mut walk = Walk::Unchanged;
                let mut found = false;
                for value in values.iter().rev() {
                    walk = self.walk(&mut addr, value);
                    if !self.recursive {
                        break;
                    }
                    if walk == Walk::Unchanged && found {
                        walk = Walk::Stopped;
                        break;
                    }
                    if walk != Walk::Whole {
                        break;
                    }
                    found = true;
                }
                walk
            }
            Source::XRealIp => self.walk(&mut addr, request.header("x-real-ip")?),
            Source::Header(name) => self.walk(&mut addr, request.header(name)?),
            Source::ProxyProtocol => {
                let source = proxy_protocol?.source?;
                let text = source.ip().to_string();
                let walk = self.walk(&mut addr, text.as_bytes());
                addr = addr.map(|a| SocketAddr::new(a.ip(), source.port()));
                walk
            }
        };
        match walk {
            Walk::Unchanged => None,
            _ => addr,
        }
    }

    fn trusted(&self, addr: Option<SocketAddr>) -> bool {
        let ip = addr.map(|a| a.ip().to_canonical());
        self.from.iter().any(|scope| match (scope, ip) {
            (AccessScope::All, _) => true,
            (AccessScope::Unix, None) => true,
            (AccessScope::Net(net), Some(ip)) => net.contains(&ip),
            _ => false,
        })
    }

    /// ngx_http_get_forwarded_addr_internal: takes addresses from the right of `list` while
    /// the current one is trusted (once, unless recursive).
    fn walk(&self, addr: &mut Option<SocketAddr>, list: &[u8]) -> Walk {
        let mut found = false;
        let mut end = list.len();
        loop {
            if !self.trusted(*addr) {
                return if found {
                    Walk::Stopped
                } else {
                    Walk::Unchanged
                };
            }
            if end == 0 {
                return if found {
                    Walk::Stopped
                } else {
                    Walk::Unchanged
                };
            }
            // Past trailing separators, then back to the start of the last address; as in
            // nginx, the first byte is never looked at as a separator.
            while end > 1 && matches!(list[end - 1], b' ' | b',') {
                end -= 1;
            }
            let mut start = end - 1;
            while start > 0 {
                if matches!(list[start], b' ' | b',') {
                    start += 1;
                    break;
                }
                start -= 1;
            }
            let Some(parsed) = parse_addr_port(&list[start..end]) else {
                return if found {
                    Walk::Stopped
                } else {
                    Walk::Unchanged
                };
            };
            *addr = Some(parsed);
            found = true;
            if !self.recursive || start == 0 {
                return Walk::Whole;
            }
            end = start - 1;
        }
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1` or `[::1]:80` (ngx_parse_addr_port); port 0 when none.
fn parse_addr_port(text: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(text).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    text.parse::<SocketAddr>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;

    fn conf(from: &[&str], header: &str, recursive: bool) -> RealIpConf {
        RealIpConf::new(&RealIp {
            from: Some(from.iter().map(|s| s.to_string()).collect()),
            header: Some(header.to_string()),
            recursive: Some(recursive),
        })
        .unwrap()
    }

    fn client(conf: &RealIpConf, peer: &str, xff: &[&str]) -> Option<String> {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for value in xff {
            req.append_header("X-Forwarded-For", *value).unwrap();
        }
        conf.client(Some(peer.parse().unwrap()), (&req).into(), None)
            .map(|a| a.to_string())
    }

    #[test]
    fn the_rightmost_address_from_a_trusted_peer() {
        let c = conf(&["10.0.0.0/8"], "X-Forwarded-For", false);
        assert_eq!(
            client(&c, "10.0.0.1:5", &["1.1.1.1, 2.2.2.2"]).as_deref(),
            Some("2.2.2.2:0")
        );
        assert_eq!(client(&c, "11.0.0.1:5", &["1.1.1.1"]), None);
        assert_eq!(client(&c, "10.0.0.1:5", &["junk"]), None);
        assert_eq!(
            client(&c, "10.0.0.1:5", &["1.1.1.1", "3.3.3.3:7, "]).as_deref(),
            Some("3.3.3.3:7")
        );
    }

    #[test]
    fn the_proxy_protocol_source_with_its_port() {
        let c = conf(&["127.0.0.1"], "proxy_protocol", false);
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let info = ProxyInfo {
            source: Some("203.0.113.9:4242".parse().unwrap()),
            ..ProxyInfo::default()
        };
        let peer = Some("127.0.0.1:9".parse().unwrap());
        assert_eq!(
            c.client(peer, (&req).into(), Some(&info)),
            Some("203.0.113.9:4242".parse().unwrap())
        );
        // From an untrusted peer, or without a PROXY header: unchanged.
        let other = Some("127.0.0.2:9".parse().unwrap());
        assert_eq!(c.client(other, (&req).into(), Some(&info)), None);
        assert_eq!(c.client(peer, (&req).into(), None), None);
    }

    #[test]
    fn recursive_skips_trusted_addresses_across_headers() {
        let c = conf(&["10.0.0.0/8"], "X-Forwarded-For", true);
        assert_eq!(
            client(&c, "10.0.0.1:5", &["1.1.1.1, 10.0.0.2", "10.0.0.3"]).as_deref(),
            Some("1.1.1.1:0")
        );
        // All trusted: the leftmost.
        assert_eq!(
            client(&c, "10.0.0.1:5", &["10.0.0.9,10.0.0.8"]).as_deref(),
            Some("10.0.0.9:0")
        );
        // An unparsable entry stops the walk at the last good address.
        assert_eq!(
            client(&c, "10.0.0.1:5", &["x, 10.0.0.7"]).as_deref(),
            Some("10.0.0.7:0")
        );
        assert_eq!(
            client(&c, "10.0.0.1:5", &["[2001:db8::1]:80"]).as_deref(),
            Some("[2001:db8::1]:80")
        );
    }
}

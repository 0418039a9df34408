//! nginx's access module (`allow`, `deny`): which client addresses a location serves.
//!
//! As ngx_http_access_module does it: the rules are tried in order and the first that holds the
//! client decides; a client no rule holds is allowed. An IPv4 client on an IPv6 socket
//! (`::ffff:a.b.c.d`) is matched as IPv4; a client on a Unix-domain socket only by `unix:` and
//! `all`. The check runs where nginx's access phase does: after `return`, before proxying.

use std::net::IpAddr;

use crate::config::{AccessRule, AccessScope};

/// A location's rules, ready to match.
#[derive(Clone, Debug, Default)]
pub struct AccessRules(Vec<(AccessScope, bool)>);

impl AccessRules {
    /// The rules as the model lists them (already checked by validation; a rule that does not
    /// read is left out).
    pub fn new(rules: &[AccessRule]) -> AccessRules {
        AccessRules(
            rules
                .iter()
                .filter_map(|rule| Some((rule.scope().ok()?.0, rule.deny())))
                .collect(),
        )
    }

    /// No `allow` or `deny` at all (the access module then declines).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a client (`None`: on a Unix-domain socket) may be served.
    pub fn allows(&self, client: Option<IpAddr>) -> bool {
        self.decide(client).unwrap_or(true)
    }

    /// What the first rule that holds for the client says (true: allowed), as
    /// ngx_http_access_handler finds it; `None` when none holds and the module declines,
    /// which `satisfy any` does not count as letting the client in.
    pub fn decide(&self, client: Option<IpAddr>) -> Option<bool> {
        let client = client.map(|ip| ip.to_canonical());
        for (scope, deny) in &self.0 {
            let holds = match (scope, client) {
                (AccessScope::All, _) => true,
                (AccessScope::Unix, None) => true,
                (AccessScope::Net(net), Some(ip)) => net.contains(&ip),
                _ => false,
            };
            if holds {
                return Some(!deny);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[(&str, &str)]) -> AccessRules {
        AccessRules::new(
            &list
                .iter()
                .map(|(kind, addr)| match *kind {
                    "allow" => AccessRule::Allow(addr.to_string()),
                    _ => AccessRule::Deny(addr.to_string()),
                })
                .collect::<Vec<_>>(),
        )
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn the_first_rule_that_holds_decides() {
        let r = rules(&[
            ("deny", "192.168.1.1"),
            ("allow", "192.168.1.0/24"),
            ("allow", "2001:db8::/32"),
            ("deny", "all"),
        ]);
        assert!(!r.allows(ip("192.168.1.1")));
        assert!(r.allows(ip("192.168.1.2")));
        assert!(!r.allows(ip("192.168.2.1")));
        assert!(r.allows(ip("2001:db8::1")));
        assert!(!r.allows(ip("2001:db9::1")));
        assert!(!r.allows(None));
    }

    #[test]
    fn no_rule_that_holds_allows() {
        assert!(rules(&[]).allows(ip("10.0.0.1")));
        assert!(rules(&[("deny", "10.0.0.0/8")]).allows(ip("11.0.0.1")));
        // IPv6 rules say nothing of IPv4 clients, and `unix:` nothing of either.
        assert!(rules(&[("deny", "::/0"), ("deny", "unix:")]).allows(ip("10.0.0.1")));
        assert!(!rules(&[("deny", "unix:")]).allows(None));
        // Which `satisfy any` tells apart from an `allow`.
        assert_eq!(
            rules(&[("allow", "10.0.0.0/8")]).decide(ip("11.0.0.1")),
            None
        );
        assert_eq!(rules(&[]).decide(ip("11.0.0.1")), None);
    }

    #[test]
    fn ipv4_clients_on_ipv6_sockets_match_ipv4_rules() {
        let r = rules(&[("deny", "127.0.0.1")]);
        assert!(!r.allows(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn low_bits_are_cleared_as_nginx_clears_them() {
        let rule = AccessRule::Deny("10.1.2.3/8".into());
        let (scope, meaningless) = rule.scope().unwrap();
        assert!(meaningless);
        assert_eq!(scope, AccessScope::Net("10.0.0.0/8".parse().unwrap()));
        assert!(!rules(&[("deny", "10.1.2.3/8")]).allows(ip("10.200.0.1")));
        for bad in ["10.0.0.0/33", "10.0.0", "example.com", "10.0.0.1/x", ""] {
            assert!(AccessRule::Allow(bad.into()).scope().is_err(), "{bad}");
        }
    }
}

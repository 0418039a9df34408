//! Session stickiness that needs no shared state: the cookie itself names the backend.
//!
//! # The cookie
//!
//! `AWSELB=<tag>.<expiry>.<mac>`, all hex or decimal:
//!
//! - `tag`: the first 8 bytes of HMAC-SHA256(key, server string as written ‖ resolved address).
//!   It is looked up in a table of the pool's own peers, so a cookie can only ever lead to a
//!   server of the pool; an address is never read out of it.
//! - `expiry`: Unix seconds after which the cookie is ignored (0: a session cookie).
//! - `mac`: the first 16 bytes of HMAC-SHA256(key, pool ‖ tag ‖ expiry ‖ bound value), checked
//!   in constant time. A changed byte anywhere, a cookie of another pool, an expired one: all are
//!   ignored, the request is balanced normally and gets a fresh cookie.
//!
//! # The key
//!
//! HMAC-SHA256(`global.sticky_secret`, a label) when the secret is set. Without it the key is a
//! SHA-256 of the pool's name and stickiness policy, so every appliance of a fleet loading the
//! same config agrees with no coordination, and adding or removing servers keeps the cookies of
//! the servers that stay valid. Such a key is only as secret as the config: someone who knows it
//! can mint cookies, but still only for servers of the pool (what retrying until one lands on
//! the server they want also gives them). Set `sticky_secret` for unforgeable cookies.
//!
//! # Application-cookie stickiness
//!
//! ELB's app-cookie policy follows the application's own session cookie (`JSESSIONID`) and
//! issues its own `AWSELB` cookie whose lifetime follows the application cookie's. Here, when a
//! response sets the application cookie, the balancer cookie is issued beside it, bound to that
//! cookie's value (the value is part of the MAC) and with the same `Path`, `Domain`, `Max-Age`
//! and `Expires`, so the browser keeps and drops the two together. The application cookie is
//! never rewritten (the application must read it back unchanged), and a balancer cookie that
//! arrives with a different application value (a new session, a logout) is ignored.
//!
//! Divergence from ELB, on purpose: an expired LB cookie is refused here (ELB trusts the browser
//! to drop it), so a client cannot keep an old cookie alive past its duration.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::balance::{PeerId, Pool};
use super::client_request::ClientRequest;
use crate::config;

type HmacSha256 = Hmac<Sha256>;

const TAG_LEN: usize = 8;
const MAC_LEN: usize = 16;

/// The name of the cookie the balancer issues in app-cookie mode, as ELB names it.
pub const BALANCER_COOKIE: &str = "AWSELB";

/// A pool's stickiness: the policy, the key and the table from tags to peers.
#[derive(Debug)]
pub struct Sticky {
    mode: Mode,
    pool: String,
    key: [u8; 32],
    peers: HashMap<[u8; TAG_LEN], PeerId>,
    tags: Vec<[u8; TAG_LEN]>,
}

#[derive(Debug)]
enum Mode {
    LbCookie {
        cookie: String,
        expires: Option<Duration>,
        domain: Option<String>,
        path: String,
    },
    AppCookie {
        app: String,
    },
}

/// What a request's cookies say about its backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Affinity {
    /// The peer a valid balancer cookie names.
    pub peer: Option<PeerId>,
    /// App-cookie mode: the application cookie's value in the request.
    pub app_value: Option<String>,
}

impl Sticky {
    /// The stickiness of a pool built from `upstream`, if it has a policy.
    pub fn new(upstream: &config::Upstream, pool: &Pool, secret: Option<&str>) -> Option<Sticky> {
        let policy = upstream.sticky.as_ref()?;
        let mode = match policy {
            config::Sticky::LbCookie {
                cookie,
                expires,
                domain,
                path,
                ..
            } => Mode::LbCookie {
                cookie: cookie.clone(),
                expires: expires.map(|d| d.get()),
                domain: domain.clone(),
                path: path.clone().unwrap_or_else(|| "/".to_string()),
            },
            config::Sticky::AppCookie { cookie, .. } => Mode::AppCookie {
                app: cookie.clone(),
            },
        };
        let key = derive_key(&upstream.name, policy, secret);
        let mut peers = HashMap::new();
        let mut tags = Vec::with_capacity(pool.peers().len());
        for (i, info) in pool.peers().iter().enumerate() {
            let tag = peer_tag(&key, &info.server, &info.addr.to_string());
            peers.entry(tag).or_insert(PeerId(i as u32));
            tags.push(tag);
        }
        Some(Sticky {
            mode,
            pool: upstream.name.clone(),
            key,
            peers,
            tags,
        })
    }

    /// The cookie the balancer reads and writes.
    pub fn cookie_name(&self) -> &str {
        match &self.mode {
            Mode::LbCookie { cookie, .. } => cookie,
            Mode::AppCookie { .. } => BALANCER_COOKIE,
        }
    }

    /// Reads the request's cookies: a balancer cookie that verifies names a peer.
    pub fn read<'r>(&self, request: impl Into<ClientRequest<'r>>, now: SystemTime) -> Affinity {
        let request = request.into();
        let app_value = match &self.mode {
            Mode::AppCookie { app } => request_cookies(request, app).next(),
            Mode::LbCookie { .. } => None,
        };
        let bound = app_value.as_deref().unwrap_or("");
        let peer = match (&self.mode, &app_value) {
            // Without the application's cookie there is no session to follow.
            (Mode::AppCookie { .. }, None) => None,
            _ => request_cookies(request, self.cookie_name())
                .find_map(|token| self.verify(&token, bound, now)),
        };
        Affinity { peer, app_value }
    }

    /// The `Set-Cookie` value to add to a response `served` gave, if any: when the request had
    /// no valid cookie for that peer (a new client, a fallback after its peer went away), or,
    /// in app-cookie mode, when the application set its cookie.
    pub fn set_cookie<'h>(
        &self,
        affinity: &Affinity,
        served: PeerId,
        mut upstream_set_cookies: impl Iterator<Item = &'h [u8]>,
        tls: bool,
        now: SystemTime,
    ) -> Option<String> {
        let tag = *self.tags.get(served.index())?;
        let unchanged = affinity.peer == Some(served);
        let mut out = String::with_capacity(128);
        match &self.mode {
            Mode::LbCookie {
                cookie,
                expires,
                domain,
                path,
            } => {
                if unchanged {
                    return None;
                }
                let expiry = expires.map_or(0, |d| unix_secs(now).saturating_add(d.as_secs()));
                out.push_str(cookie);
                out.push('=');
                out.push_str(&self.token(&tag, expiry, ""));
                out.push_str("; Path=");
                out.push_str(path);
                if let Some(domain) = domain {
                    out.push_str("; Domain=");
                    out.push_str(domain);
                }
                if let Some(d) = expires {
                    out.push_str(&format!("; Max-Age={}", d.as_secs()));
                    let at = now + Duration::from_secs(d.as_secs());
                    out.push_str("; Expires=");
                    out.push_str(&httpdate::fmt_http_date(at));
                }
            }
            Mode::AppCookie { app } => {
                let set = upstream_set_cookies.find_map(|h| SetCookie::parse(h, app));
                let (value, attributes) = match (set, &affinity.app_value) {
                    (Some(set), _) => (set.value, set.attributes),
                    // The application kept its session but the peer changed: bind anew.
                    (None, Some(value)) if !unchanged => (value.clone(), "; Path=/".to_string()),
                    _ => return None,
                };
                out.push_str(BALANCER_COOKIE);
                out.push('=');
                out.push_str(&self.token(&tag, 0, &value));
                out.push_str(&attributes);
            }
        }
        out.push_str("; HttpOnly");
        if tls {
            out.push_str("; Secure");
        }
        Some(out)
    }

    fn token(&self, tag: &[u8; TAG_LEN], expiry: u64, bound: &str) -> String {
        let tag_hex = hex(tag);
        let mac = self.mac(&tag_hex, expiry, bound).finalize().into_bytes();
        format!("{tag_hex}.{expiry}.{}", hex(&mac[..MAC_LEN]))
    }

    /// The MAC of a token's fields, not yet finalized (a check compares it in constant time).
    fn mac(&self, tag_hex: &str, expiry: u64, bound: &str) -> HmacSha256 {
        let mut m = hmac(&self.key);
        for part in [
            b"cookie".as_slice(),
            self.pool.as_bytes(),
            tag_hex.as_bytes(),
            expiry.to_string().as_bytes(),
            bound.as_bytes(),
        ] {
            m.update(part);
            m.update(&[0]);
        }
        m
    }

    /// The peer a token names, if it is well-formed, authentic, unexpired and one of ours.
    fn verify(&self, token: &str, bound: &str, now: SystemTime) -> Option<PeerId> {
        let mut parts = token.split('.');
        let (tag_hex, expiry, mac_hex) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || tag_hex.len() != TAG_LEN * 2 || expiry.len() > 20 {
            return None;
        }
        let tag: [u8; TAG_LEN] = unhex(tag_hex)?.try_into().ok()?;
        let expiry_secs: u64 = expiry.parse().ok()?;
        // The canonical decimal only, so one cookie has exactly one spelling.
        if expiry_secs.to_string() != expiry {
            return None;
        }
        let mac = unhex(mac_hex)?;
        if mac.len() != MAC_LEN {
            return None;
        }
        self.mac(tag_hex, expiry_secs, bound)
            .verify_truncated_left(&mac)
            .ok()?;
        if expiry_secs != 0 && unix_secs(now) >= expiry_secs {
            return None;
        }
        self.peers.get(&tag).copied()
    }
}

fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; the error case cannot happen for SHA-256.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key"))
}

fn derive_key(pool: &str, policy: &config::Sticky, secret: Option<&str>) -> [u8; 32] {
    const LABEL: &[u8] = b"appliance sticky-session key v1";
    match secret {
        Some(secret) => {
            let mut m = hmac(secret.as_bytes());
            m.update(LABEL);
            m.finalize().into_bytes().into()
        }
        None => {
            let mut h = Sha256::new();
            h.update(LABEL);
            h.update([0]);
            h.update(pool.as_bytes());
            h.update([0]);
            let policy = match policy {
                config::Sticky::LbCookie { cookie, .. } => format!("lb_cookie {cookie}"),
                config::Sticky::AppCookie { cookie, .. } => format!("app_cookie {cookie}"),
            };
            h.update(policy.as_bytes());
            h.finalize().into()
        }
    }
}

fn peer_tag(key: &[u8; 32], server: &str, addr: &str) -> [u8; TAG_LEN] {
    let mut m = hmac(key);
    m.update(b"peer\0");
    m.update(server.as_bytes());
    m.update(&[0]);
    m.update(addr.as_bytes());
    let full: [u8; 32] = m.finalize().into_bytes().into();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&full[..TAG_LEN]);
    tag
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// The values of every cookie called `name` in the request's `Cookie` headers, in order.
fn request_cookies<'a>(
    request: ClientRequest<'a>,
    name: &'a str,
) -> impl Iterator<Item = String> + 'a {
    request
        .header_values("cookie")
        .flat_map(|h| h.split(|b| *b == b';'))
        .filter_map(move |pair| {
            let pair = std::str::from_utf8(pair).ok()?.trim();
            let (n, v) = pair.split_once('=')?;
            (n.trim() == name).then(|| unquote(v.trim()).to_string())
        })
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// The parts of an application's `Set-Cookie` the balancer cookie copies.
struct SetCookie {
    value: String,
    /// `; Path=..; Domain=..; Max-Age=..; Expires=..` as the application wrote them (`Path=/`
    /// when it gave none, so the balancer cookie is sent wherever the application's is).
    attributes: String,
}

impl SetCookie {
    /// The cookie `name` from one `Set-Cookie` header, or None for another cookie.
    fn parse(header: &[u8], name: &str) -> Option<SetCookie> {
        let header = std::str::from_utf8(header).ok()?;
        let mut parts = header.split(';');
        let (n, v) = parts.next()?.split_once('=')?;
        if n.trim() != name {
            return None;
        }
        let mut attributes = String::new();
        let mut has_path = false;
        for attr in parts {
            let (k, val) = attr.split_once('=').unwrap_or((attr, ""));
            let k = k.trim();
            let canonical = ["Path", "Domain", "Max-Age", "Expires"]
                .into_iter()
                .find(|c| c.eq_ignore_ascii_case(k));
            if let Some(c) = canonical {
                has_path |= c == "Path";
                attributes.push_str("; ");
                attributes.push_str(c);
                attributes.push('=');
                attributes.push_str(val.trim());
            }
        }
        if !has_path {
            attributes.insert_str(0, "; Path=/");
        }
        Some(SetCookie {
            value: unquote(v.trim()).to_string(),
            attributes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Upstream, UpstreamServer};
    use crate::proxy::balance::ResolvedServer;
    use pingora::http::RequestHeader;

    fn upstream(sticky: &str) -> Upstream {
        let mut up: Upstream =
            toml::from_str(&format!("name = \"app\"\nsticky = {{ {sticky} }}")).unwrap();
        for a in ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"] {
            up.servers.push(UpstreamServer::new(a));
        }
        up
    }

    fn sticky_for(up: &Upstream, secret: Option<&str>) -> Sticky {
        let pool = Pool::new(up, ResolvedServer::literal(up).unwrap());
        Sticky::new(up, &pool, secret).unwrap()
    }

    /// A request with that `Cookie` header.
    fn headers(cookie: &str) -> RequestHeader {
        let mut h = RequestHeader::build("GET", b"/", None).unwrap();
        h.append_header("Cookie", cookie).unwrap();
        h
    }

    fn issued(s: &Sticky, peer: u32, now: SystemTime) -> String {
        let set = s
            .set_cookie(
                &Affinity::default(),
                PeerId(peer),
                std::iter::empty(),
                false,
                now,
            )
            .unwrap();
        set.split(';').next().unwrap().to_string()
    }

    #[test]
    fn a_cookie_leads_back_to_its_peer_on_every_appliance_with_the_config() {
        let up = upstream("mode = \"lb_cookie\", expires = \"1h\"");
        let now = SystemTime::now();
        let one = sticky_for(&up, None);
        let two = sticky_for(&up, None);
        for peer in 0..3 {
            let cookie = issued(&one, peer, now);
            assert!(cookie.starts_with("AWSELB="));
            assert_eq!(two.read(&headers(&cookie), now).peer, Some(PeerId(peer)));
            // A served request with its own valid cookie gets none again.
            let a = two.read(&headers(&cookie), now);
            assert!(two
                .set_cookie(&a, PeerId(peer), std::iter::empty(), false, now)
                .is_none());
        }
        // With a secret, fleet members agree with each other and not with a config without it.
        let s1 = sticky_for(&up, Some("fleet secret"));
        let s2 = sticky_for(&up, Some("fleet secret"));
        let cookie = issued(&s1, 2, now);
        assert_eq!(s2.read(&headers(&cookie), now).peer, Some(PeerId(2)));
        assert_eq!(one.read(&headers(&cookie), now).peer, None);
    }

    #[test]
    fn tampered_foreign_and_expired_cookies_name_nobody() {
        let up = upstream("mode = \"lb_cookie\", expires = \"10s\"");
        let now = SystemTime::now();
        let s = sticky_for(&up, None);
        let good = issued(&s, 1, now);
        let value = good.strip_prefix("AWSELB=").unwrap();
        // Every single-character change is refused.
        for i in 0..value.len() {
            let mut bytes = value.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let bad = String::from_utf8(bytes).unwrap();
            assert_eq!(
                s.read(&headers(&format!("AWSELB={bad}")), now).peer,
                None,
                "{bad}"
            );
        }
        // Another peer's tag under this MAC, garbage, a longer expiry: refused.
        let other_tag = hex(&s.tags[2]);
        let forged = format!("{other_tag}{}", &value[16..]);
        assert_eq!(
            s.read(&headers(&format!("AWSELB={forged}")), now).peer,
            None
        );
        for junk in [
            "",
            "x",
            "..",
            "1.2.3.4",
            "127.0.0.1:80",
            &value[..value.len() - 2],
        ] {
            assert_eq!(s.read(&headers(&format!("AWSELB={junk}")), now).peer, None);
        }
        // Another pool's cookie (same servers, another name).
        let mut other = up.clone();
        other.name = "other".into();
        let foreign = issued(&sticky_for(&other, None), 1, now);
        assert_eq!(s.read(&headers(&foreign), now).peer, None);
        // Expired.
        assert_eq!(
            s.read(&headers(&good), now + Duration::from_secs(11)).peer,
            None
        );
        assert_eq!(
            s.read(&headers(&good), now + Duration::from_secs(9)).peer,
            Some(PeerId(1))
        );
        // Among several cookies of the name, the valid one counts.
        let mixed = format!("a=b; AWSELB=junk; {good}; c=d");
        assert_eq!(s.read(&headers(&mixed), now).peer, Some(PeerId(1)));
    }

    #[test]
    fn lb_cookie_attributes() {
        let up = upstream(
            "mode = \"lb_cookie\", cookie = \"srv\", expires = \"1h\", domain = \".example.com\", path = \"/app\"",
        );
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let set = sticky_for(&up, None)
            .set_cookie(
                &Affinity::default(),
                PeerId(0),
                std::iter::empty(),
                true,
                now,
            )
            .unwrap();
        let attrs: Vec<&str> = set.split("; ").skip(1).collect();
        assert_eq!(
            attrs,
            [
                "Path=/app",
                "Domain=.example.com",
                "Max-Age=3600",
                "Expires=Sun, 09 Sep 2001 02:46:40 GMT",
                "HttpOnly",
                "Secure"
            ]
        );
        assert!(set.starts_with("srv="));
        // Without expires: a session cookie, and its expiry field is 0.
        let up = upstream("mode = \"lb_cookie\"");
        let set = sticky_for(&up, None)
            .set_cookie(
                &Affinity::default(),
                PeerId(0),
                std::iter::empty(),
                false,
                now,
            )
            .unwrap();
        assert!(
            set.contains(".0.") && set.ends_with("; Path=/; HttpOnly"),
            "{set}"
        );
    }

    #[test]
    fn app_cookie_binds_to_the_application_session() {
        let up = upstream("mode = \"app_cookie\", cookie = \"JSESSIONID\"");
        let s = sticky_for(&up, None);
        let now = SystemTime::now();
        // No application cookie in the response: nothing to follow yet.
        let none = Affinity::default();
        assert!(s
            .set_cookie(&none, PeerId(1), std::iter::empty(), false, now)
            .is_none());
        // The application starts a session: the balancer cookie follows its attributes.
        let app: &[u8] = b"JSESSIONID=abc123; path=/shop; Max-Age=600; HttpOnly";
        let set = s
            .set_cookie(
                &none,
                PeerId(1),
                [b"other=1".as_slice(), app].into_iter(),
                false,
                now,
            )
            .unwrap();
        assert!(set.starts_with("AWSELB="), "{set}");
        assert!(
            set.ends_with("; Path=/shop; Max-Age=600; HttpOnly"),
            "{set}"
        );
        let token = set.split(';').next().unwrap();
        let with = |app: &str| headers(&format!("JSESSIONID={app}; {token}"));
        let a = s.read(&with("abc123"), now);
        assert_eq!(a.peer, Some(PeerId(1)));
        assert_eq!(a.app_value.as_deref(), Some("abc123"));
        // Another session, or none, is not sticky.
        assert_eq!(s.read(&with("other"), now).peer, None);
        assert_eq!(s.read(&headers(token), now).peer, None);
        // The peer changed (fallback) and the app kept its session: bound anew for the new peer.
        let set = s
            .set_cookie(&a, PeerId(2), std::iter::empty(), false, now)
            .unwrap();
        let again = headers(&format!(
            "JSESSIONID=abc123; {}",
            set.split(';').next().unwrap()
        ));
        assert_eq!(s.read(&again, now).peer, Some(PeerId(2)));
        assert!(s
            .set_cookie(&a, PeerId(1), std::iter::empty(), false, now)
            .is_none());
    }
}

//! Choosing the virtual server for a request on one address, as nginx does: the exact name,
//! then the longest wildcard starting with `*`, then the longest ending with `*`, then the first
//! matching regular expression in config order, else the default server of the address.

use std::collections::HashMap;

use regex::{Regex, RegexBuilder};

/// The names of the servers sharing one address:port, and which is the default.
#[derive(Debug)]
pub struct ServerNames {
    exact: HashMap<String, usize>,
    /// `*.example.com` stored as `.example.com`; `.example.com` also matches `example.com`.
    leading: Vec<(String, usize)>,
    /// `www.example.*` stored as `www.example.`.
    trailing: Vec<(String, usize)>,
    regexes: Vec<(Regex, usize)>,
    default: usize,
}

impl ServerNames {
    /// `servers` lists each server's names by index; the first name wins a duplicate, as in
    /// nginx (which warns "conflicting server name").
    pub fn build(servers: &[Vec<String>], default: usize) -> Result<Self, String> {
        let mut names = ServerNames {
            exact: HashMap::new(),
            leading: Vec::new(),
            trailing: Vec::new(),
            regexes: Vec::new(),
            default,
        };
        for (index, list) in servers.iter().enumerate() {
            for name in list {
                if let Some(pattern) = name.strip_prefix('~') {
                    let re = RegexBuilder::new(pattern)
                        .case_insensitive(true)
                        .build()
                        .map_err(|e| format!("server_name \"{name}\": {e}"))?;
                    names.regexes.push((re, index));
                } else if let Some(rest) = name.strip_prefix("*.") {
                    names
                        .leading
                        .push((format!(".{}", rest.to_ascii_lowercase()), index));
                } else if name.starts_with('.') {
                    let lower = name.to_ascii_lowercase();
                    names.exact.entry(lower[1..].to_string()).or_insert(index);
                    names.leading.push((lower, index));
                } else if let Some(rest) = name.strip_suffix(".*") {
                    names
                        .trailing
                        .push((format!("{}.", rest.to_ascii_lowercase()), index));
                } else {
                    names
                        .exact
                        .entry(name.to_ascii_lowercase())
                        .or_insert(index);
                }
            }
        }
        // Longest first, so the first hit is the most specific.
        names
            .leading
            .sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        names
            .trailing
            .sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        Ok(names)
    }

    /// The address's default server: the one a TLS handshake without SNI gets its certificate
    /// from.
    pub fn default_server(&self) -> usize {
        self.default
    }

    /// The server for a validated, lowercased host (see [`validate_host`]); `None` host (no
    /// Host header) goes to the default server unless a server is named `""`.
    pub fn find(&self, host: Option<&str>) -> usize {
        let host = host.unwrap_or("");
        if let Some(i) = self.exact.get(host) {
            return *i;
        }
        if !host.is_empty() {
            if let Some((_, i)) = self
                .leading
                .iter()
                .find(|(suffix, _)| host.ends_with(suffix.as_str()) && host.len() > suffix.len())
            {
                return *i;
            }
            if let Some((_, i)) = self
                .trailing
                .iter()
                .find(|(prefix, _)| host.starts_with(prefix.as_str()) && host.len() > prefix.len())
            {
                return *i;
            }
        }
        for (re, i) in &self.regexes {
            if re.is_match(host) {
                return *i;
            }
        }
        self.default
    }
}

/// ngx_http_validate_host: strips the port and a trailing dot and lowercases; `None` for a host
/// nginx answers with 400 (empty, `..`, a path separator, controls or spaces).
pub fn validate_host(raw: &[u8]) -> Option<String> {
    let mut host = String::new();
    validate_host_into(raw, &mut host).then_some(host)
}

/// [`validate_host`], into `host` (cleared first), whose buffer is reused; false for a Host
/// nginx refuses.
pub fn validate_host_into(raw: &[u8], host: &mut String) -> bool {
    host.clear();
    let Some(len) = valid_host_len(raw) else {
        return false;
    };
    let raw = &raw[..len];
    match std::str::from_utf8(raw) {
        Ok(text) => host.push_str(text),
        Err(_) => host.push_str(&String::from_utf8_lossy(raw)),
    }
    host.make_ascii_lowercase();
    true
}

/// The length of the host part of a Host value nginx accepts (ngx_http_validate_host).
fn valid_host_len(raw: &[u8]) -> Option<usize> {
    let mut dot_pos: Option<usize> = None;
    let mut host_len = raw.len();
    #[derive(PartialEq)]
    enum State {
        Usual,
        Literal,
        Rest,
    }
    let mut state = State::Usual;
    for (i, &ch) in raw.iter().enumerate() {
        match ch {
            b'.' => {
                if i > 0 && dot_pos == Some(i - 1) {
                    return None;
                }
                dot_pos = Some(i);
            }
            b':' if state == State::Usual => {
                host_len = i;
                state = State::Rest;
            }
            b'[' if i == 0 => state = State::Literal,
            b']' if state == State::Literal => {
                host_len = i + 1;
                state = State::Rest;
            }
            b':' | b'[' | b']' => {}
            b'/' => return None,
            c if c <= 0x20 || c == 0x7f => return None,
            _ => {}
        }
    }
    if host_len > 0 && dot_pos == Some(host_len - 1) {
        host_len -= 1;
    }
    if host_len == 0 {
        return None;
    }
    Some(host_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&[&str]], default: usize) -> ServerNames {
        let servers: Vec<Vec<String>> = list
            .iter()
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .collect();
        ServerNames::build(&servers, default).unwrap()
    }

    #[test]
    fn precedence_is_nginx_order() {
        let n = names(
            &[
                &["default.test"],
                &["www.example.com"],
                &["*.example.com"],
                &["*.b.example.com"],
                &["www.example.*"],
                &[r"~^www\d+\.example\.net$"],
                &[".wild.org"],
            ],
            0,
        );
        assert_eq!(n.find(Some("www.example.com")), 1, "exact first");
        assert_eq!(n.find(Some("x.example.com")), 2, "leading wildcard");
        assert_eq!(
            n.find(Some("a.b.example.com")),
            3,
            "longest leading wildcard"
        );
        assert_eq!(n.find(Some("www.example.org")), 4, "trailing wildcard");
        assert_eq!(n.find(Some("www42.example.net")), 5, "regex");
        assert_eq!(n.find(Some("wild.org")), 6, ".name matches the bare name");
        assert_eq!(n.find(Some("a.wild.org")), 6);
        assert_eq!(
            n.find(Some("example.com")),
            0,
            "*.example.com does not match example.com"
        );
        assert_eq!(n.find(Some("nothing")), 0, "default");
        assert_eq!(n.find(None), 0);
    }

    #[test]
    fn empty_name_catches_requests_without_host() {
        let n = names(&[&["a.test"], &[""]], 0);
        assert_eq!(n.find(None), 1);
    }

    #[test]
    fn hosts_are_validated_like_nginx() {
        assert_eq!(
            validate_host(b"Example.COM:8080").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            validate_host(b"example.com.").as_deref(),
            Some("example.com")
        );
        assert_eq!(validate_host(b"[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(validate_host(b"a..b"), None);
        assert_eq!(validate_host(b"a/b"), None);
        assert_eq!(validate_host(b""), None);
        assert_eq!(validate_host(b":80"), None);
    }
}

//! nginx's `valid_referers` (ngx_http_referer_module): the Referer values that leave
//! `$invalid_referer` empty, so that `if ($invalid_referer) { return 403; }` turns away the
//! rest. At server and location level the setting is the directive's words as written, in
//! order (several directives at one level add up); a location without any takes its server's:
//!
//! ```toml
//! valid_referers = ["none", "blocked", "server_names", "*.example.com", "example.org/galleries/", "~\\.google\\."]
//! ```
//!
//! This module reads the words as ngx_http_valid_referers and ngx_http_referer_merge_conf do,
//! with their checks and messages, into [`Rules`]; `proxy::referers` matches requests against
//! them.

use std::collections::{HashMap, HashSet};

/// A host name a Referer may have, and the path its URI must then start with, if any.
pub type PathPrefix = Option<String>;

/// One level's `valid_referers`, read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// `none`: a request without a Referer header is valid.
    pub none: bool,
    /// `blocked`: a Referer that does not start with `http://` or `https://` (what firewalls
    /// and proxies leave of one) is valid.
    pub blocked: bool,
    /// `server_names`: the server's own names are valid hosts.
    pub server_names: bool,
    /// Exact host names, lowercase.
    pub exact: HashMap<String, PathPrefix>,
    /// `*.example.com` (`subdomains_only`) and `.example.com`, keyed by `example.com`.
    pub leading: Vec<Leading>,
    /// `www.example.*`, keyed by `www.example.` (its `*` dropped).
    pub trailing: Vec<(String, PathPrefix)>,
    /// `~regex` words without the `~`, in order: matched, without regard to case, against the
    /// Referer after its scheme.
    pub regexes: Vec<String>,
    /// The server's `~regex` names (with `server_names`): matched against the Referer's host.
    pub server_name_regexes: Vec<String>,
    /// What nginx's hash keeps to refuse a name given twice (ngx_hash_add_key's
    /// `keys_hash`): the exact names and the bare names of `.example.com`.
    taken_exact: HashSet<String>,
}

/// A leading wildcard host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leading {
    /// `example.com` for both `*.example.com` and `.example.com`.
    pub suffix: String,
    /// `*.example.com`: names under it only; `.example.com` also matches `example.com`.
    pub subdomains_only: bool,
    pub path: PathPrefix,
}

impl Rules {
    /// The rules of one level: its words, then (with `server_names`) the names of the server
    /// it is in, with every check nginx makes of them.
    pub fn parse(words: &[String], server_names: &[String]) -> Result<Rules, String> {
        let mut rules = Rules::default();
        rules.add_words(words)?;
        if rules.server_names {
            rules.add_server_names(server_names)?;
        }
        rules.check_complete()?;
        Ok(rules)
    }

    /// ngx_http_valid_referers: the words of one directive. The checks are the directive's
    /// own (the `~regex` words are kept as written; their syntax is the caller's to check).
    pub fn add_words(&mut self, words: &[String]) -> Result<(), String> {
        for word in words {
            match word.as_str() {
                "" => return Err("invalid referer \"\"".to_string()),
                "none" => self.none = true,
                "blocked" => self.blocked = true,
                "server_names" => self.server_names = true,
                _ => match word.strip_prefix('~') {
                    Some("") => return Err(format!("empty regex in \"{word}\"")),
                    Some(pattern) => self.regexes.push(pattern.to_string()),
                    None => {
                        let (host, path) = match word.find('/') {
                            Some(at) => (&word[..at], Some(word[at..].to_string())),
                            None => (word.as_str(), None),
                        };
                        self.add_host(host, path)?;
                    }
                },
            }
        }
        Ok(())
    }

    /// ngx_http_referer_merge_conf's `server_names`: each name of the server (`""` when it
    /// has none, as nginx's default name is), a regex name among the host regexes.
    pub fn add_server_names(&mut self, names: &[String]) -> Result<(), String> {
        let unnamed = [String::new()];
        let names = if names.is_empty() {
            &unnamed[..]
        } else {
            names
        };
        for name in names {
            match name.strip_prefix('~') {
                Some(pattern) => self.server_name_regexes.push(pattern.to_string()),
                None => self.add_host(name, None)?,
            }
        }
        Ok(())
    }

    /// The check nginx makes once a level's directives are all read.
    pub fn check_complete(&self) -> Result<(), String> {
        let hosts = self.exact.len() + self.leading.len() + self.trailing.len();
        if (self.none || self.blocked) && hosts == 0 {
            return Err("the \"none\" or \"blocked\" referers are specified in the \
                        \"valid_referers\" directive without any valid referer"
                .to_string());
        }
        Ok(())
    }

    /// ngx_hash_add_key with NGX_HASH_WILDCARD_KEY: an exact name, `*.example.com`,
    /// `.example.com` or `www.example.*`, refused when it is none of these ("invalid hostname
    /// or wildcard") or already given ("conflicting parameter").
    fn add_host(&mut self, host: &str, path: PathPrefix) -> Result<(), String> {
        let invalid = || format!("invalid hostname or wildcard \"{host}\"");
        if host.matches('*').count() > 1 || host.contains("..") {
            return Err(invalid());
        }
        // nginx lowercases the name in place before it looks for a duplicate, so its message
        // names the lowercase form.
        let lower = host.to_ascii_lowercase();
        let conflict = || format!("conflicting parameter \"{lower}\"");
        let len = lower.len();
        if len > 1 && lower.starts_with('.') {
            let suffix = &lower[1..];
            if self.taken_exact.contains(suffix) || self.leading.iter().any(|l| l.suffix == suffix)
            {
                return Err(conflict());
            }
            self.taken_exact.insert(suffix.to_string());
            self.leading.push(Leading {
                suffix: suffix.to_string(),
                subdomains_only: false,
                path,
            });
        } else if len > 2 && lower.starts_with("*.") {
            let suffix = &lower[2..];
            if self.leading.iter().any(|l| l.suffix == suffix) {
                return Err(conflict());
            }
            self.leading.push(Leading {
                suffix: suffix.to_string(),
                subdomains_only: true,
                path,
            });
        } else if len > 2 && lower.ends_with(".*") {
            let prefix = &lower[..len - 1];
            if self.trailing.iter().any(|(p, _)| p == prefix) {
                return Err(conflict());
            }
            self.trailing.push((prefix.to_string(), path));
        } else if lower.contains('*') {
            return Err(invalid());
        } else {
            if !self.taken_exact.insert(lower.clone()) {
                return Err(conflict());
            }
            self.exact.insert(lower, path);
        }
        Ok(())
    }

    /// ngx_hash_find_combined: the path prefix of the entry a lowercase host matches (`None`
    /// inside: any path), else `None`. An exact name first; then the longest leading
    /// wildcard, then the longest trailing one, as nginx's wildcard hashes find them (the
    /// name's part a wildcard stands for may be empty: `*.example.com` matches
    /// `.example.com`, `www.example.*` matches `www.example.`).
    pub fn host_entry(&self, host: &str) -> Option<&PathPrefix> {
        if let Some(path) = self.exact.get(host) {
            return Some(path);
        }
        if host.is_empty() {
            return None;
        }
        let leading = self
            .leading
            .iter()
            .filter(|l| {
                let under = host.len() > l.suffix.len()
                    && host.ends_with(l.suffix.as_str())
                    && host.as_bytes()[host.len() - l.suffix.len() - 1] == b'.';
                under || (!l.subdomains_only && host == l.suffix)
            })
            .max_by_key(|l| l.suffix.len());
        if let Some(l) = leading {
            return Some(&l.path);
        }
        self.trailing
            .iter()
            .filter(|(prefix, _)| host.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, path)| path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn rules(list: &[&str]) -> Rules {
        Rules::parse(&words(list), &[]).unwrap()
    }

    #[test]
    fn words_are_checked_as_nginx_checks_them() {
        let err = |list: &[&str], names: &[&str]| Rules::parse(&words(list), &words(names));
        assert_eq!(err(&[""], &[]).unwrap_err(), "invalid referer \"\"");
        assert_eq!(err(&["~"], &[]).unwrap_err(), "empty regex in \"~\"");
        for bad in ["a.*.com", "*.a.*", "a..com", "*", "*a.com", "a*", "*."] {
            assert_eq!(
                err(&[bad], &[]).unwrap_err(),
                format!("invalid hostname or wildcard \"{bad}\"")
            );
        }
        for (list, name) in [
            (&["a.com", "a.com/x"][..], "a.com"),
            (&[".a.com", "a.com"][..], "a.com"),
            (&["a.com", ".A.com"][..], ".a.com"),
            (&["*.a.com", ".a.com"][..], ".a.com"),
            (&["www.a.*", "WWW.A.*/x"][..], "www.a.*"),
        ] {
            assert_eq!(
                err(list, &[]).unwrap_err(),
                format!("conflicting parameter \"{name}\"")
            );
        }
        // A wildcard and the bare name are different keys.
        assert!(err(&["*.a.com", "a.com"], &[]).is_ok());
        assert_eq!(
            err(&["server_names", "example.com"], &["example.com"]).unwrap_err(),
            "conflicting parameter \"example.com\""
        );
        let lonely = "the \"none\" or \"blocked\" referers are specified in the \
                      \"valid_referers\" directive without any valid referer";
        assert_eq!(err(&["none"], &[]).unwrap_err(), lonely);
        assert_eq!(err(&["blocked", "~x"], &[]).unwrap_err(), lonely);
        // A server without a name has nginx's "", which counts.
        assert!(err(&["none", "server_names"], &[]).is_ok());
    }

    #[test]
    fn hosts_match_as_nginx_hashes_find_them() {
        let r = rules(&[
            "example.com/pics/",
            "*.wild.com",
            ".dot.org",
            "www.tail.*",
            "*.a.b.com",
            "*.b.com/deep",
        ]);
        let entry = |host: &str| r.host_entry(host).map(|p| p.as_deref());
        assert_eq!(entry("example.com"), Some(Some("/pics/")));
        assert_eq!(entry("x.example.com"), None);
        assert_eq!(entry("a.wild.com"), Some(None));
        assert_eq!(entry("x.y.wild.com"), Some(None));
        assert_eq!(
            entry(".wild.com"),
            Some(None),
            "the empty label nginx allows"
        );
        assert_eq!(entry("wild.com"), None);
        assert_eq!(entry("xwild.com"), None);
        assert_eq!(entry("dot.org"), Some(None));
        assert_eq!(entry("x.dot.org"), Some(None));
        assert_eq!(entry("www.tail.co.uk"), Some(None));
        assert_eq!(entry("www.tail."), Some(None));
        assert_eq!(entry("www.tail"), None);
        assert_eq!(entry("x.a.b.com"), Some(None), "the longest wildcard");
        assert_eq!(entry("x.b.com"), Some(Some("/deep")));
        assert_eq!(entry(""), None);
    }
}

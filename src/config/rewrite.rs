//! nginx's rewrite module: `rewrite`, `set`, `if`, `break` and `return`, which a server or a
//! location runs in the order written, before the request is proxied.
//!
//! ```toml
//! [[http.server.location.script]]
//! rewrite = { regex = "^/api/(.*)$", replacement = "/$1", flag = "break" }
//!
//! [[http.server.location.script]]
//! [http.server.location.script.if]
//! condition = ["$request_method", "=", "OPTIONS"]
//! add_header = [{ name = "Access-Control-Allow-Origin", value = "*" }]
//! script = [{ return = { status = 204 } }]
//! ```
//!
//! A lone `return` is written as the level's `return`; `script` is for the rest.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::charset::Charset;
use super::error_page::ErrorPage;
use super::http::{AddHeader, Location, ProxyPass, Return};
use super::log::AccessLog;

/// One directive of the rewrite module.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    Rewrite(Rewrite),
    /// `set $name value`.
    Set(SetVar),
    If(Box<IfBlock>),
    Return(Return),
    /// `break`: stops the script; the request stays in the location it is in.
    Break(bool),
}

/// `rewrite regex replacement [flag]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Matched against the normalized URI (`$uri`).
    pub regex: String,
    /// The new URI, with variables and the regex's `$1`..`$9`. A replacement that starts with
    /// `http://`, `https://` or `$scheme` redirects. Arguments after `?` come before the
    /// request's own, which a trailing `?` drops.
    pub replacement: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<RewriteFlag>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewriteFlag {
    /// Stop the script and search the locations again with the new URI.
    Last,
    /// Stop the script and stay in this location.
    Break,
    /// Answer 302 with the replacement as the Location.
    Redirect,
    /// Answer 301.
    Permanent,
}

impl RewriteFlag {
    pub fn parse(text: &str) -> Option<RewriteFlag> {
        Some(match text {
            "last" => RewriteFlag::Last,
            "break" => RewriteFlag::Break,
            "redirect" => RewriteFlag::Redirect,
            "permanent" => RewriteFlag::Permanent,
            _ => return None,
        })
    }
}

/// `set $variable value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVar {
    /// Without its `$`.
    pub variable: String,
    pub value: String,
}

/// `if (condition) { ... }`. In a location, a block whose condition holds also becomes the
/// location the request is served with: its own `proxy_pass`, `add_header`, `access_log`,
/// `expires`, `gzip`, `error_page`, `sendfile` and charset settings over the location's, as
/// nginx's "if in location" does.
/// (Those are the settings nginx allows there that the appliance applies.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IfBlock {
    /// The condition's words as nginx.conf has them between the parentheses:
    /// `["$http_x"]`, `["$host", "=", "example.com"]`, `["$uri", "~*", "\\.php$"]`,
    /// `["!-f", "/srv/maintenance"]`.
    pub condition: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_pass: Option<ProxyPass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_header: Option<Vec<AddHeader>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<Vec<AccessLog>>,
    /// `expires`, as its arguments are written (see `config::expires`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// `gzip on|off`: the one gzip directive nginx allows in `if`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip: Option<bool>,
    /// `error_page`: the block's pages replace the location's, as nginx merges them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_page: Option<Vec<ErrorPage>>,
    /// `sendfile on|off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sendfile: Option<bool>,
    /// `charset`, `source_charset` and `override_charset` (not `charset_types`).
    #[serde(default, skip_serializing_if = "Charset::is_empty")]
    pub charset: Charset,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub script: Vec<Step>,
}

impl IfBlock {
    /// Whether the block changes the location's settings, not only runs directives.
    pub fn has_settings(&self) -> bool {
        self.proxy_pass.is_some()
            || self.add_header.is_some()
            || self.access_log.is_some()
            || self.expires.is_some()
            || self.gzip.is_some()
            || self.error_page.is_some()
            || self.sendfile.is_some()
            || !self.charset.is_empty()
    }
}

/// An `if` condition, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition<'a> {
    /// `($var)`: true unless the value is empty or `0`.
    Value(&'a str),
    /// `($var = text)`, or `!=` when `negate`.
    Equals {
        value: &'a str,
        text: &'a str,
        negate: bool,
    },
    /// `($var ~ regex)`, `~*` (`caseless`), `!~`, `!~*`.
    Matches {
        value: &'a str,
        regex: &'a str,
        caseless: bool,
        negate: bool,
    },
    /// `(-f path)`, `-d`, `-e`, `-x`, and their `!` forms.
    File {
        test: FileTest,
        path: &'a str,
        negate: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileTest {
    /// `-f`: a regular file.
    File,
    /// `-d`: a directory.
    Dir,
    /// `-e`: a file, directory or symbolic link.
    Exists,
    /// `-x`: an executable file.
    Executable,
}

impl<'a> Condition<'a> {
    /// Reads the words between the parentheses with nginx's rules
    /// (ngx_http_rewrite_if_condition), with its messages.
    pub fn parse(words: &'a [String]) -> Result<Condition<'a>, String> {
        let invalid = |w: &str| format!("invalid condition \"{w}\"");
        let Some(first) = words.first() else {
            return Err(invalid(""));
        };
        if first.len() > 1 && first.starts_with('$') {
            let value = first.as_str();
            match words {
                [_] => return Ok(Condition::Value(value)),
                [_, op, operand] => {
                    let (operand, op) = (operand.as_str(), op.as_str());
                    return match op {
                        "=" | "!=" => Ok(Condition::Equals {
                            value,
                            text: operand,
                            negate: op == "!=",
                        }),
                        "~" | "~*" | "!~" | "!~*" => Ok(Condition::Matches {
                            value,
                            regex: operand,
                            caseless: op.ends_with('*'),
                            negate: op.starts_with('!'),
                        }),
                        _ => Err(format!("unexpected \"{op}\" in condition")),
                    };
                }
                _ => return Err(invalid(first)),
            }
        }
        let (negate, letter) = match first.as_bytes() {
            [b'-', c] => (false, *c),
            [b'!', b'-', c] => (true, *c),
            _ => return Err(invalid(first)),
        };
        let [_, path] = words else {
            return Err(invalid(first));
        };
        let test = match letter {
            b'f' => FileTest::File,
            b'd' => FileTest::Dir,
            b'e' => FileTest::Exists,
            b'x' => FileTest::Executable,
            _ => return Err(invalid(first)),
        };
        Ok(Condition::File { test, path, negate })
    }

    /// The templates the condition evaluates (the tested value, the compared text, the path).
    pub fn templates(&self) -> Vec<&'a str> {
        match *self {
            Condition::Value(v) => vec![v],
            Condition::Equals { value, text, .. } => vec![value, text],
            Condition::Matches { value, .. } => vec![value],
            Condition::File { path, .. } => vec![path],
        }
    }
}

/// Whether `set` may assign nginx's own variable `name`: `$args` and `$invalid_referer`
/// (nginx's `$limit_rate` too, which the appliance does not have); the rest are refused with
/// "the duplicate ... variable".
pub fn settable_builtin(name: &str) -> bool {
    matches!(name, "args" | "invalid_referer")
}

/// The named groups of a regular expression (`(?<name>...)`, `(?P<name>...)`), which nginx
/// makes variables when the regex of a location, `rewrite` or `if` matches.
pub fn named_groups(pattern: &str) -> Vec<String> {
    regex::Regex::new(pattern)
        .map(|r| r.capture_names().flatten().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Every variable the config defines, which templates anywhere may use (nginx resolves
/// variables once the whole config is read): those of `map`, `geo` and `split_clients`, what
/// the `set`s and `auth_request_set`s assign, and the named groups of the regexes of
/// locations, `rewrite`s and `if`s.
pub fn declared_variables(http: &super::Http) -> HashSet<String> {
    fn walk(steps: &[Step], out: &mut HashSet<String>) {
        for step in steps {
            match step {
                Step::Set(set) => {
                    out.insert(set.variable.clone());
                }
                Step::Rewrite(r) => out.extend(named_groups(&r.regex)),
                Step::If(block) => {
                    if let Ok(Condition::Matches { regex, .. }) = Condition::parse(&block.condition)
                    {
                        out.extend(named_groups(regex));
                    }
                    walk(&block.script, out)
                }
                _ => {}
            }
        }
    }
    fn auth_sets(auth: &super::Auth, out: &mut HashSet<String>) {
        let sets = auth.request_set.iter().flatten();
        out.extend(sets.map(|set| set.variable.clone()));
    }
    fn locations(list: &[Location], out: &mut HashSet<String>) {
        for l in list {
            if l.kind.is_regex() {
                out.extend(named_groups(&l.path));
            }
            walk(&l.script, out);
            auth_sets(&l.auth, out);
            locations(&l.locations, out);
        }
    }
    let mut out: HashSet<String> = http.maps.iter().map(|m| m.variable.clone()).collect();
    out.extend(http.geo.iter().map(|g| g.variable.clone()));
    out.extend(http.split_clients.iter().map(|s| s.variable.clone()));
    auth_sets(&http.auth, &mut out);
    for server in &http.servers {
        walk(&server.script, &mut out);
        auth_sets(&server.auth, &mut out);
        locations(&server.locations, &mut out);
    }
    // `set $args` assigns nginx's own variable.
    out.retain(|name| !settable_builtin(name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn conditions_read_as_nginx_reads_them() {
        let w = words(&["$a"]);
        assert_eq!(Condition::parse(&w), Ok(Condition::Value("$a")));
        let w = words(&["$a", "!=", "x y"]);
        assert_eq!(
            Condition::parse(&w),
            Ok(Condition::Equals {
                value: "$a",
                text: "x y",
                negate: true
            })
        );
        let w = words(&["$a", "!~*", "^x"]);
        assert!(matches!(
            Condition::parse(&w),
            Ok(Condition::Matches {
                caseless: true,
                negate: true,
                ..
            })
        ));
        let w = words(&["!-d", "/x"]);
        assert!(matches!(
            Condition::parse(&w),
            Ok(Condition::File {
                test: FileTest::Dir,
                negate: true,
                ..
            })
        ));
        assert_eq!(
            Condition::parse(&words(&["$a", "<", "b"])),
            Err("unexpected \"<\" in condition".into())
        );
        assert_eq!(
            Condition::parse(&words(&["$a", "="])),
            Err("invalid condition \"$a\"".into())
        );
        assert_eq!(
            Condition::parse(&words(&["-q", "/x"])),
            Err("invalid condition \"-q\"".into())
        );
        assert_eq!(
            Condition::parse(&words(&["a"])),
            Err("invalid condition \"a\"".into())
        );
    }
}

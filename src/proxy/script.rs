//! nginx's rewrite module as the data plane runs it (see `config::rewrite`): the steps of a
//! server or location compiled once, and the pieces of ngx_http_script.c that give a rewrite
//! its exact result (how captures are escaped, how arguments are split and appended, how a
//! redirect is unescaped). The steps themselves run in [`super::http`], against the request.

use std::ops::Range;
use std::sync::Arc;

use regex::bytes::{Regex, RegexBuilder};

use super::runtime::{LocationConf, ReturnConf};
use super::vars::RequestVars;
use crate::compile::diag::Diagnostic;
use crate::config::rewrite::{Condition, FileTest};
use crate::config::template::{Segment, Template, Variable};
use crate::config::{Defined, RewriteFlag, Step};

/// A level's steps, compiled.
pub struct Script {
    pub ops: Vec<Op>,
}

pub enum Op {
    Rewrite(RewriteOp),
    Set {
        target: SetTarget,
        value: Template,
    },
    If {
        condition: ConditionOp,
        body: Script,
        /// In a location: the location as the block changes it, which serves the request when
        /// the condition holds.
        location: Option<Arc<LocationConf>>,
    },
    Return(Arc<ReturnConf>),
    Break,
}

pub enum SetTarget {
    /// A variable of the config's own (shared between the requests' values by name).
    Declared(Arc<str>),
    /// `$args`.
    Args,
}

pub struct RewriteOp {
    pub regex: Regex,
    pub named_groups: Vec<(usize, Arc<str>)>,
    /// The replacement before the first `?` (the URI), and after it (new arguments), when it
    /// has one and is not a redirect.
    pub uri: Vec<Segment>,
    pub args: Option<Vec<Segment>>,
    /// 301 or 302 for a redirect.
    pub redirect: Option<u16>,
    /// The script stops after a match (`last`, `break`, a redirect).
    pub stop: bool,
    /// `break`: no new location search.
    pub break_cycle: bool,
    /// The request's arguments are kept (no trailing `?`).
    pub add_args: bool,
    /// The replacement's text has a `?`: a redirect appends the arguments after `&`.
    pub has_question: bool,
}

pub enum ConditionOp {
    Value(Template),
    Equals {
        value: Template,
        text: Template,
        negate: bool,
    },
    Matches {
        value: Template,
        regex: Regex,
        named_groups: Vec<(usize, Arc<str>)>,
        negate: bool,
    },
    File {
        path: Template,
        test: FileTest,
        negate: bool,
    },
}

/// Makes the location an `if` block serves with, from the block's settings (`None` at server
/// level, where blocks have none).
pub type IfLocation<'a> =
    dyn FnMut(&crate::config::IfBlock) -> Result<Option<Arc<LocationConf>>, Diagnostic> + 'a;

/// Compiles `steps`; `location` makes an `if` block's location from its settings (`None` at
/// server level).
pub fn compile(
    steps: &[Step],
    defined: Defined<'_>,
    location: &mut IfLocation<'_>,
    return_conf: &dyn Fn(&crate::config::Return) -> Result<ReturnConf, Diagnostic>,
) -> Result<Script, Diagnostic> {
    let template = |text: &str| {
        Template::parse_in(text, defined).map_err(|e| Diagnostic::error(e.to_string()))
    };
    let mut ops = Vec::with_capacity(steps.len());
    for step in steps {
        ops.push(match step {
            Step::Rewrite(r) => Op::Rewrite(rewrite_op(r, defined)?),
            Step::Set(set) => Op::Set {
                target: if set.variable == "args" {
                    SetTarget::Args
                } else {
                    SetTarget::Declared(Arc::from(set.variable.as_str()))
                },
                value: template(&set.value)?,
            },
            Step::If(block) => {
                let condition =
                    match Condition::parse(&block.condition).map_err(Diagnostic::error)? {
                        Condition::Value(v) => ConditionOp::Value(template(v)?),
                        Condition::Equals {
                            value,
                            text,
                            negate,
                        } => ConditionOp::Equals {
                            value: template(value)?,
                            text: template(text)?,
                            negate,
                        },
                        Condition::Matches {
                            value,
                            regex,
                            caseless,
                            negate,
                        } => {
                            let regex = build_regex(regex, caseless)?;
                            ConditionOp::Matches {
                                value: template(value)?,
                                named_groups: groups_of(&regex),
                                regex,
                                negate,
                            }
                        }
                        Condition::File { test, path, negate } => ConditionOp::File {
                            path: template(path)?,
                            test,
                            negate,
                        },
                    };
                Op::If {
                    condition,
                    body: compile(&block.script, defined, location, return_conf)?,
                    location: location(block)?,
                }
            }
            Step::Return(r) => Op::Return(Arc::new(return_conf(r)?)),
            Step::Break(_) => Op::Break,
        });
    }
    Ok(Script { ops })
}

fn build_regex(pattern: &str, caseless: bool) -> Result<Regex, Diagnostic> {
    RegexBuilder::new(pattern)
        .case_insensitive(caseless)
        .build()
        .map_err(|e| Diagnostic::error(format!("regular expression \"{pattern}\": {e}")))
}

/// ngx_http_rewrite: the flag, the redirect a scheme implies, and the split at `?`.
fn rewrite_op(r: &crate::config::Rewrite, defined: Defined<'_>) -> Result<RewriteOp, Diagnostic> {
    let regex = build_regex(&r.regex, false)?;
    let (replacement, add_args) = match r.replacement.strip_suffix('?') {
        // The last "?" drops the request's arguments.
        Some(rest) => (rest, false),
        None => (r.replacement.as_str(), true),
    };
    let scheme_redirect = ["http://", "https://", "$scheme"]
        .iter()
        .any(|p| replacement.starts_with(p));
    let mut redirect = scheme_redirect.then_some(302);
    let mut stop = scheme_redirect;
    let mut break_cycle = false;
    match r.flag {
        None => {}
        Some(RewriteFlag::Last) => stop = true,
        Some(RewriteFlag::Break) => {
            break_cycle = true;
            stop = true;
        }
        Some(RewriteFlag::Redirect) => {
            redirect = Some(302);
            stop = true;
        }
        Some(RewriteFlag::Permanent) => {
            redirect = Some(301);
            stop = true;
        }
    }
    let template =
        Template::parse_in(replacement, defined).map_err(|e| Diagnostic::error(e.to_string()))?;
    let has_question = template
        .segments
        .iter()
        .any(|s| matches!(s, Segment::Literal(t) if t.contains('?')));
    let (uri, args) = if redirect.is_some() {
        (template.segments, None)
    } else {
        split_at_question(template.segments)
    };
    Ok(RewriteOp {
        named_groups: groups_of(&regex),
        regex,
        uri,
        args,
        redirect,
        stop,
        break_cycle,
        add_args,
        has_question,
    })
}

/// The segments before the first literal `?` and after it.
fn split_at_question(segments: Vec<Segment>) -> (Vec<Segment>, Option<Vec<Segment>>) {
    let mut uri = Vec::new();
    let mut iter = segments.into_iter();
    for segment in iter.by_ref() {
        if let Segment::Literal(text) = &segment {
            if let Some((before, after)) = text.split_once('?') {
                if !before.is_empty() {
                    uri.push(Segment::Literal(before.to_string()));
                }
                let mut args = Vec::new();
                if !after.is_empty() {
                    args.push(Segment::Literal(after.to_string()));
                }
                args.extend(iter);
                return (uri, Some(args));
            }
        }
        uri.push(segment);
    }
    (uri, None)
}

/// The value of a rewrite's replacement segments: variables as they are, captures escaped as
/// arguments when `escape_captures` (ngx_http_script_copy_capture_code: in arguments or a
/// redirect, when the request's URI had `%` escapes or a `+`).
pub fn write_replacement(
    segments: &[Segment],
    vars: &RequestVars<'_>,
    escape_captures: bool,
    out: &mut Vec<u8>,
) {
    for segment in segments {
        match segment {
            Segment::Literal(text) => out.extend_from_slice(text.as_bytes()),
            Segment::Var(Variable::Capture(n)) if escape_captures => {
                let mut raw = Vec::new();
                vars.write(&Variable::Capture(*n), &mut raw);
                super::uri::escape_args(&raw, out);
            }
            Segment::Var(v) => vars.write(v, out),
        }
    }
}

/// ngx_unescape_uri with NGX_UNESCAPE_REDIRECT, as a rewrite's redirect target gets it:
/// `%XX` is decoded when it stands for a printable character above `%`, kept otherwise; from
/// the first `?` (written or decoded) on, the rest is left as it is. A malformed escape is
/// dropped as nginx drops it.
pub fn unescape_redirect(input: &[u8]) -> Vec<u8> {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let ch = input[i];
        i += 1;
        if ch == b'?' {
            out.push(ch);
            out.extend_from_slice(&input[i..]);
            return out;
        }
        if ch != b'%' {
            out.push(ch);
            continue;
        }
        let Some(&first) = input.get(i) else {
            break;
        };
        i += 1;
        let Some(high) = hex(first) else {
            // "the invalid quoted character": the `%` is dropped.
            out.push(first);
            continue;
        };
        let Some(&second) = input.get(i) else {
            break;
        };
        i += 1;
        let Some(low) = hex(second) else {
            continue;
        };
        let decoded = (high << 4) + low;
        if decoded == b'?' && !second.is_ascii_digit() {
            out.push(decoded);
            out.extend_from_slice(&input[i..]);
            return out;
        }
        if decoded > b'%' && decoded < 0x7f {
            out.push(decoded);
        } else {
            out.extend_from_slice(&[b'%', first, second]);
        }
    }
    out
}

/// A regex's named groups with their capture indexes.
fn groups_of(regex: &Regex) -> Vec<(usize, Arc<str>)> {
    regex
        .capture_names()
        .enumerate()
        .filter_map(|(i, name)| name.map(|n| (i, Arc::from(n))))
        .collect()
}

/// The named groups of a location's regex (see [`groups_of`]).
pub fn named_groups(pattern: &str, caseless: bool) -> Vec<(usize, Arc<str>)> {
    build_regex(pattern, caseless)
        .map(|r| groups_of(&r))
        .unwrap_or_default()
}

/// The captures of a regex match, as byte ranges.
pub fn capture_ranges(regex: &Regex, subject: &[u8]) -> Option<Vec<Option<Range<usize>>>> {
    let caps = regex.captures(subject)?;
    Some(caps.iter().map(|m| m.map(|m| m.range())).collect())
}

/// An `if` file test on `path`, as ngx_http_script_file_code answers it: a path that cannot be
/// looked at makes every positive test false and every negative one true.
pub fn file_test(path: &[u8], test: FileTest) -> bool {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
    // nginx opens the file (following links) and looks at what it finds.
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    match test {
        FileTest::File => meta.is_file(),
        FileTest::Dir => meta.is_dir(),
        FileTest::Exists => true,
        FileTest::Executable => meta.permissions().mode() & 0o111 != 0,
    }
}

/// nginx's truth of a value: anything but empty and `0`.
pub fn truthy(value: &[u8]) -> bool {
    !value.is_empty() && value != b"0"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_unescaped_as_nginx_does() {
        let u = |s: &str| String::from_utf8(unescape_redirect(s.as_bytes())).unwrap();
        assert_eq!(u("/a%41b"), "/aAb");
        assert_eq!(u("/a%20b"), "/a%20b");
        assert_eq!(u("/a%25b"), "/a%25b");
        assert_eq!(u("/a%2fb"), "/a/b");
        assert_eq!(u("/a?x=%41"), "/a?x=%41");
        assert_eq!(u("/a%3fx=%41"), "/a?x=%41");
        assert_eq!(u("/a%zb"), "/azb");
        assert_eq!(u("/a%4zb"), "/ab");
        assert_eq!(u("/a%4"), "/a");
    }

    #[test]
    fn arguments_split_at_the_first_question_mark() {
        let t = Template::parse("/x?a=$1&b=?c").unwrap();
        let (uri, args) = split_at_question(t.segments);
        assert_eq!(uri, vec![Segment::Literal("/x".into())]);
        assert_eq!(
            args.unwrap(),
            vec![
                Segment::Literal("a=".into()),
                Segment::Var(Variable::Capture(1)),
                Segment::Literal("&b=?c".into()),
            ]
        );
    }
}

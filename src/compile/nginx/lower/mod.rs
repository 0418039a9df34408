//! Lowering: the statements a load balancer needs, turned into the model; everything else
//! listed in the report with its location and whether leaving it out changes traffic.
//!
//! One file per context: [`main_ctx`] (the main and events contexts), [`http`] (http, server,
//! location and the settings they share), [`upstream`] and [`stream`]. [`support`] is the table
//! of what is supported, which also generates docs/COMPAT.md. Values are checked with nginx's
//! own messages; the first error in file order is returned, as nginx stops there.

mod http;
mod limit;
mod logs;
mod main_ctx;
mod rewrite;
mod stream;
pub mod support;
mod table_vars;
mod upstream;
mod url;
mod values;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::tree::{Statement, Tree};
use crate::compile::diag::Diagnostic;
use crate::compile::{Impact, Options, Report, Support};
use crate::config::template::{Context, Template, TemplateError};
use crate::config::{Appliance, Defined, Origin};

type Result<T> = std::result::Result<T, Diagnostic>;

/// Lowers a parsed tree. The first error in file order is returned, as nginx stops there.
pub fn lower(tree: &Tree, options: &Options) -> Result<(Appliance, Report)> {
    let mut lowering = Lowering::new(options, tree);
    lowering.main(&tree.statements)?;
    lowering.finish()?;
    Ok((lowering.model, lowering.report))
}

/// The state of one lowering: the model being built and the report.
pub(super) struct Lowering<'o> {
    options: &'o Options,
    model: Appliance,
    report: Report,
    /// Variables that directives the appliance does not support define (`geo`, `set`, named
    /// regex captures): using one is not an error, but what uses it is reported.
    foreign_vars: HashSet<String>,
    /// Variables the config's `map` blocks and http `set`s define, wherever they are written
    /// (nginx resolves variables once the whole file is read).
    map_vars: HashSet<String>,
    /// Inside `stream {}`: nginx's stream variables are others than http's, and the names its
    /// own `map`, `geo` and `split_clients` blocks define are `stream_vars`.
    in_stream: bool,
    stream_vars: HashSet<String>,
    /// Where relative paths in the config are resolved (nginx's conf prefix).
    conf_dir: PathBuf,
    /// The first use of a variable nobody defines: nginx finds it only once the whole file is
    /// read, so any other error comes first.
    unknown_variable: Option<Diagnostic>,
    /// Shared memory zones named so far (limit zones and upstream `zone`s).
    shared_zones: Vec<limit::SharedZone>,
    /// The limit zones declared so far: name and key.
    zone_keys: Vec<(String, String)>,
    /// Limit zones left out because their key cannot be computed.
    unusable_zones: Vec<String>,
    /// Charset names as the config first spells each: nginx keeps one spelling per charset
    /// (names compare without case), the first it reads, and writes that one wherever the
    /// charset is named.
    charsets: Vec<String>,
}

impl<'o> Lowering<'o> {
    fn new(options: &'o Options, tree: &Tree) -> Self {
        let conf_dir = options.prefix.clone().unwrap_or_else(|| {
            tree.statements
                .first()
                .map(|s| {
                    Path::new(&*s.origin.file)
                        .parent()
                        .unwrap_or(Path::new("."))
                        .to_path_buf()
                })
                .unwrap_or_else(|| PathBuf::from("."))
        });
        let mut foreign_vars = HashSet::new();
        collect_foreign_vars(&tree.statements, &mut foreign_vars);
        let mut maps = Vec::new();
        collect_maps(&tree.statements, &mut maps);
        let mut sets = Vec::new();
        collect_http_sets(&tree.statements, false, &mut sets);
        // The named groups of regexes the appliance matches become variables when they match.
        let mut groups = HashSet::new();
        collect_http_named_groups(&tree.statements, false, &mut groups);
        for name in &groups {
            foreign_vars.remove(name);
        }
        let map_vars = computable_maps(&maps, &sets, groups, &mut foreign_vars);
        Lowering {
            options,
            model: Appliance::default(),
            report: Report::default(),
            foreign_vars,
            map_vars,
            in_stream: false,
            stream_vars: HashSet::new(),
            conf_dir,
            unknown_variable: None,
            shared_zones: Vec::new(),
            zone_keys: Vec::new(),
            unusable_zones: Vec::new(),
            charsets: Vec::new(),
        }
    }

    /// The error for a statement, at the line nginx names (its terminator) with the statement
    /// underlined.
    fn error(&self, stmt: &Statement, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(message)
            .at(stmt.nginx_origin())
            .with_span(stmt.span.clone())
    }

    /// A warning nginx itself gives for a statement it accepts.
    fn warn(&mut self, stmt: &Statement, message: impl Into<String>) {
        self.report
            .warnings
            .push(Diagnostic::warning(message).at(stmt.nginx_origin()));
    }

    fn origin(&self, stmt: &Statement) -> Option<Origin> {
        Some(stmt.origin.clone())
    }

    fn mapped(&mut self, stmt: &Statement) {
        self.report.mapped(&stmt.name);
    }

    /// Reports a directive that is carried over only in part.
    fn partial(&mut self, stmt: &Statement, impact: Impact, note: impl Into<String>) -> Result<()> {
        if self.options.strict && impact == Impact::ChangesTraffic {
            let note = note.into();
            return Err(self.error(
                stmt,
                format!(
                    "\"{}\" is only partly supported: {note} (--strict)",
                    stmt.name
                ),
            ));
        }
        self.report.add(
            stmt.origin.clone(),
            &stmt.name,
            Support::Partial,
            impact,
            note,
        );
        self.report.mapped(&stmt.name);
        Ok(())
    }

    /// Reports a directive that is not carried over: an error under `--strict`.
    fn unsupported(&mut self, stmt: &Statement) -> Result<()> {
        let (impact, note) = support::unsupported_note(&stmt.name);
        if self.options.strict {
            return Err(self.error(
                stmt,
                format!(
                    "\"{}\" directive is not supported by the appliance ({note}; --strict)",
                    stmt.name
                ),
            ));
        }
        self.report.add(
            stmt.origin.clone(),
            &stmt.name,
            Support::Unsupported,
            impact,
            note,
        );
        Ok(())
    }

    /// Checks the variables of a template as nginx does when it compiles the script. A
    /// variable only an unsupported directive defines makes the template unusable: `Ok(None)`,
    /// reported.
    fn template(&mut self, stmt: &Statement, text: &str) -> Result<Option<String>> {
        let (context, declared) = self.variables();
        match Template::parse_for(context, text, Defined::Names(declared)) {
            Ok(_) => Ok(Some(text.to_string())),
            Err(TemplateError::Unknown(name)) if self.foreign_vars.contains(&name) => {
                self.partial(
                    stmt,
                    Impact::ChangesTraffic,
                    format!("uses ${name}, which a directive the appliance does not support defines; left out"),
                )?;
                Ok(None)
            }
            Err(e @ TemplateError::Unknown(_)) => {
                let error = self.error(stmt, e.to_string());
                self.unknown_variable.get_or_insert(error);
                Ok(None)
            }
            Err(e) => Err(self.error(stmt, e.to_string())),
        }
    }

    /// The variables of the context being lowered: nginx's, and the config's names.
    fn variables(&self) -> (Context, &HashSet<String>) {
        match self.in_stream {
            true => (Context::Stream, &self.stream_vars),
            false => (Context::Http, &self.map_vars),
        }
    }

    /// A path as nginx resolves it: relative to the configuration's directory.
    fn path(&self, text: &str) -> PathBuf {
        let p = Path::new(text);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.conf_dir.join(p)
        }
    }

    fn finish(&mut self) -> Result<()> {
        match self.unknown_variable.take() {
            Some(error) => Err(error),
            None => self.check_shared_zones(),
        }
    }
}

/// Variables that `map`, `geo`, `split_clients`, `set` and friends define, and named captures of
/// regular expressions.
fn collect_foreign_vars(statements: &[Statement], out: &mut HashSet<String>) {
    for s in statements {
        let var_arg = match s.name.as_str() {
            "split_clients" => s.arg(1),
            "geo" | "geoip2" => s.args.last().map(|w| w.value.as_str()),
            "set" | "perl_set" | "js_set" | "auth_request_set" => s.arg(0),
            _ => None,
        };
        if let Some(v) = var_arg.and_then(|v| v.strip_prefix('$')) {
            out.insert(v.to_string());
        }
        for w in &s.args {
            named_captures(&w.value, out);
        }
        if let Some(block) = &s.block {
            collect_foreign_vars(block, out);
        }
    }
}

/// The `map`, `geo` and `split_clients` blocks of the http context.
fn collect_maps<'t>(statements: &'t [Statement], out: &mut Vec<&'t Statement>) {
    for s in statements {
        match s.name.as_str() {
            "http" => collect_maps(s.block.as_deref().unwrap_or_default(), out),
            "map" | "geo" | "split_clients" => out.push(s),
            _ => {}
        }
    }
}

/// The `set`s and `auth_request_set`s of the http context (its servers, locations and `if`
/// blocks).
fn collect_http_sets<'t>(statements: &'t [Statement], in_http: bool, out: &mut Vec<&'t Statement>) {
    for s in statements {
        match s.name.as_str() {
            "http" => collect_http_sets(s.block.as_deref().unwrap_or_default(), true, out),
            "set" | "auth_request_set" if in_http => out.push(s),
            "server" | "location" | "if" if in_http => {
                collect_http_sets(s.block.as_deref().unwrap_or_default(), true, out)
            }
            _ => {}
        }
    }
}

/// The named groups of the regexes of http's `location`s, `rewrite`s and `if`s.
fn collect_http_named_groups(statements: &[Statement], in_http: bool, out: &mut HashSet<String>) {
    for s in statements {
        let in_http = in_http || s.name == "http";
        if in_http && matches!(s.name.as_str(), "location" | "rewrite" | "if") {
            for w in &s.args {
                named_captures(&w.value, out);
            }
        }
        if let Some(block) = &s.block {
            collect_http_named_groups(block, in_http, out);
        }
    }
}

/// The variables of the maps (and geos and split_clients) and `set`s the appliance can
/// evaluate. A map whose source or
/// values use a variable only an unsupported directive defines cannot be (nor a `set` whose
/// value does), and its own variable joins those (so that what uses it is reported, not
/// refused), until no more drop out. A variable some `set` can evaluate stays.
fn computable_maps(
    maps: &[&Statement],
    sets: &[&Statement],
    groups: HashSet<String>,
    foreign_vars: &mut HashSet<String>,
) -> HashSet<String> {
    let map_name = |s: &Statement| {
        let name = match s.name.as_str() {
            "geo" => s.args.last().map(|w| w.value.as_str()),
            _ => s.arg(1),
        };
        name.and_then(|v| v.strip_prefix('$')).map(str::to_string)
    };
    let set_name = |s: &Statement| {
        s.arg(0)
            .and_then(|v| v.strip_prefix('$'))
            .filter(|v| !crate::config::rewrite::settable_builtin(v))
            .map(str::to_string)
    };
    let mut computable: HashSet<String> = maps
        .iter()
        .filter_map(|s| map_name(s))
        .chain(sets.iter().filter_map(|s| set_name(s)))
        .collect();
    computable.extend(groups.iter().cloned());
    for name in &computable {
        foreign_vars.remove(name);
    }
    let definitions = maps
        .iter()
        .map(|s| (*s, map_name(s)))
        .chain(sets.iter().map(|s| (*s, set_name(s))));
    let definitions: Vec<(&Statement, Option<String>)> = definitions.collect();
    loop {
        let uses_foreign = |s: &Statement, computable: &HashSet<String>| {
            let texts: Vec<&str> = if matches!(s.name.as_str(), "set" | "auth_request_set") {
                s.arg(1).into_iter().collect()
            } else if s.name == "geo" || s.name == "split_clients" {
                // Their values are literal text: only the key or address is evaluated.
                s.arg(0).filter(|_| s.args.len() == 2).into_iter().collect()
            } else {
                s.arg(0)
                    .into_iter()
                    .chain(
                        s.block
                            .iter()
                            .flatten()
                            .filter_map(|line| line.args.first().map(|w| w.value.as_str())),
                    )
                    .collect()
            };
            texts.into_iter().any(|text| {
                matches!(
                    Template::parse_in(text, Defined::Names(computable)),
                    Err(TemplateError::Unknown(v)) if foreign_vars.contains(&v)
                )
            })
        };
        // A variable drops out when every definition of it uses a foreign variable.
        let dropped: Vec<String> = computable
            .iter()
            .filter(|name| !groups.contains(*name))
            .filter(|name| {
                definitions
                    .iter()
                    .filter(|(_, n)| n.as_deref() == Some(name.as_str()))
                    .all(|(s, _)| uses_foreign(s, &computable))
            })
            .cloned()
            .collect();
        if dropped.is_empty() {
            return computable;
        }
        for v in dropped {
            computable.remove(&v);
            foreign_vars.insert(v);
        }
    }
}

/// `(?<name>...)`, `(?P<name>...)` and `(?'name'...)` in a regular expression.
fn named_captures(text: &str, out: &mut HashSet<String>) {
    for (i, _) in text.match_indices("(?") {
        let rest = &text[i + 2..];
        let rest = rest.strip_prefix('P').unwrap_or(rest);
        let (open, close) = match rest.chars().next() {
            Some('<') => ('<', '>'),
            Some('\'') => ('\'', '\''),
            _ => continue,
        };
        let body = &rest[open.len_utf8()..];
        if let Some(end) = body.find(close) {
            let name = &body[..end];
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                out.insert(name.to_string());
            }
        }
    }
}

//! A `map` variable, as the data plane evaluates it (see `config::map`): the
//! source is evaluated, then looked up as nginx does: string keys first (without regard to
//! case), then with `hostnames` the longest leading and the longest trailing wildcard, then
//! the regexes in the order written (not for an empty source), else the default.

use std::collections::HashMap;

use regex::bytes::{Regex, RegexBuilder};

use super::vars::{eval, RequestVars};
use crate::compile::diag::Diagnostic;
use crate::config::template::{Context, Template};
use crate::config::{Defined, MapKey, MapVar};

/// One `map`, ready to evaluate.
pub(super) struct Map {
    source: Template,
    hostnames: bool,
    /// Lowercase key to value.
    exact: HashMap<Vec<u8>, usize>,
    /// `*.example.com` (`example.com`, false) and `.example.com` (`example.com`, true).
    leading: Vec<(Vec<u8>, bool, usize)>,
    /// `www.example.*`, as `www.example.`.
    trailing: Vec<(Vec<u8>, usize)>,
    regexes: Vec<(Regex, usize)>,
    values: Vec<Template>,
    default: Option<Template>,
}

impl Map {
    pub(super) fn build(
        m: &MapVar,
        context: Context,
        defined: Defined<'_>,
    ) -> Result<Map, Diagnostic> {
        let at = m.origin.as_ref();
        let template = |text: &str| super::tables::template_in(context, text, defined, at);
        let mut map = Map {
            source: template(&m.source)?,
            hostnames: m.hostnames,
            exact: HashMap::new(),
            leading: Vec::new(),
            trailing: Vec::new(),
            regexes: Vec::new(),
            values: Vec::new(),
            default: m.default.as_deref().map(template).transpose()?,
        };
        for entry in &m.entries {
            let index = map.values.len();
            map.values.push(template(&entry.value)?);
            match entry.key(m.hostnames) {
                MapKey::Exact(key) => {
                    map.exact.entry(key.into_bytes()).or_insert(index);
                }
                MapKey::LeadingWildcard {
                    domain,
                    with_domain,
                } => map.leading.push((domain.into_bytes(), with_domain, index)),
                MapKey::TrailingWildcard(prefix) => map.trailing.push((prefix.into_bytes(), index)),
                MapKey::Regex { pattern, caseless } => {
                    let regex = RegexBuilder::new(pattern)
                        .case_insensitive(caseless)
                        .build()
                        // Validation has compiled it already, with a fuller message.
                        .map_err(|e| Diagnostic::error(e.to_string()).at_opt(at))?;
                    map.regexes.push((regex, index));
                }
            }
        }
        Ok(map)
    }

    pub(super) fn write(&self, vars: &RequestVars<'_>, out: &mut Vec<u8>) {
        let mut source = Vec::new();
        eval(&self.source, vars, &mut source);
        if self.hostnames && source.last() == Some(&b'.') {
            source.pop();
        }
        let lower = source.to_ascii_lowercase();
        let found = self.exact.get(&lower).copied().or_else(|| {
            if !self.hostnames {
                return None;
            }
            self.longest_leading(&lower)
                .or_else(|| self.longest_trailing(&lower))
        });
        if let Some(index) = found {
            return eval(&self.values[index], vars, out);
        }
        if !source.is_empty() {
            for (regex, index) in &self.regexes {
                if let Some(caps) = regex.captures(&source) {
                    let ranges: Vec<_> = caps.iter().map(|m| m.map(|m| m.range())).collect();
                    return eval(
                        &self.values[*index],
                        &vars.with_captures(&source, &ranges),
                        out,
                    );
                }
            }
        }
        if let Some(default) = &self.default {
            eval(default, vars, out);
        }
    }

    /// The most specific `*.domain` or `.domain` that holds `name`.
    fn longest_leading(&self, name: &[u8]) -> Option<usize> {
        self.leading
            .iter()
            .filter(|(domain, with_domain, _)| {
                let sub = name.len() > domain.len() + 1
                    && name.ends_with(domain)
                    && name[name.len() - domain.len() - 1] == b'.';
                sub || (*with_domain && name == domain.as_slice())
            })
            .max_by_key(|(domain, _, _)| domain.len())
            .map(|(_, _, index)| *index)
    }

    /// The most specific `prefix.*` that holds `name`.
    fn longest_trailing(&self, name: &[u8]) -> Option<usize> {
        self.trailing
            .iter()
            .filter(|(prefix, _)| name.len() > prefix.len() && name.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, index)| *index)
    }
}

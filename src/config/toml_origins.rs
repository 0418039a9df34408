//! Gives items read from an appliance.toml the line they were written on.
//!
//! serde does not hand positions to the model types, so this reads the same text a second time
//! with the TOML parser's spans and walks the tables that hold items with an `origin`. Items that
//! already carry one (written by `migrate`, pointing at the nginx.conf or ELB script they came
//! from) keep it.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::origin::Origin;
use super::{line_col, Appliance, Location};
use crate::compile::diag::Diagnostic;

/// Points a diagnostic that names its setting (see [`Diagnostic::key`]) at the place in `text`
/// where that setting is written, rather than at the table that holds it. One whose origin is
/// another file (an item `migrate` wrote, pointing at its nginx.conf line) keeps it.
pub(crate) fn place(mut d: Diagnostic, text: &str, file: &str) -> Diagnostic {
    if d.origin.as_ref().is_some_and(|o| o.file.as_ref() != file) {
        return d;
    }
    if let Some(span) = d.key.as_deref().and_then(|key| locate(text, key)) {
        let (line, column) = line_col(text, span.start);
        d.origin = Some(Origin::new(file, line, column));
        d.span = Some(span.start..span.end.max(span.start + 1));
    }
    d
}

/// The byte range of the value at `key` (`global.worker_threads`, `http.log_format[1].name`) in
/// `text`, when it is written there.
pub(crate) fn locate(text: &str, key: &str) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut found: Option<&Spanned<DeValue<'_>>> = None;
    for step in key.split('.') {
        if let Some(v) = found {
            table = as_table(v)?;
        }
        let (name, index) = match step.split_once('[') {
            Some((name, rest)) => (name, Some(rest.strip_suffix(']')?.parse::<usize>().ok()?)),
            None => (step, None),
        };
        let (_, value) = entry(table, name)?;
        found = Some(match index {
            None => value,
            Some(i) => match value.get_ref() {
                DeValue::Array(a) => a.get(i)?,
                _ => return None,
            },
        });
    }
    found.map(Spanned::span)
}

pub(super) fn fill(model: &mut Appliance, text: &str, file: &str) {
    let Ok(doc) = DeTable::parse(text) else {
        return;
    };
    let at = |span: std::ops::Range<usize>| {
        let (line, column) = line_col(text, span.start);
        Some(Origin::new(file, line, column))
    };
    let root = doc.get_ref();

    if let Some(http) = table(root, "http") {
        for (upstream, item) in model.http.upstreams.iter_mut().zip(items(http, "upstream")) {
            upstream.origin = upstream.origin.take().or_else(|| at(item.span()));
            if let Some(t) = as_table(item) {
                for (server, s) in upstream.servers.iter_mut().zip(items(t, "server")) {
                    server.origin = server.origin.take().or_else(|| at(s.span()));
                }
            }
        }
        fill_certificates(&mut model.http.tls, http, &at);
        for (server, item) in model.http.servers.iter_mut().zip(items(http, "server")) {
            server.origin = server.origin.take().or_else(|| at(item.span()));
            if let Some(t) = as_table(item) {
                fill_locations(&mut server.locations, t, &at);
                fill_certificates(&mut server.tls, t, &at);
            }
        }
    }
    if let Some(stream) = table(root, "stream") {
        for (upstream, item) in model
            .stream
            .upstreams
            .iter_mut()
            .zip(items(stream, "upstream"))
        {
            upstream.origin = upstream.origin.take().or_else(|| at(item.span()));
            if let Some(t) = as_table(item) {
                for (server, s) in upstream.servers.iter_mut().zip(items(t, "server")) {
                    server.origin = server.origin.take().or_else(|| at(s.span()));
                }
            }
        }
        for (server, item) in model.stream.servers.iter_mut().zip(items(stream, "server")) {
            server.origin = server.origin.take().or_else(|| at(item.span()));
            if let Some(t) = as_table(item) {
                fill_certificates(&mut server.tls, t, &at);
            }
        }
    }
    if let (Some(ha), Some((_, v))) = (model.ha.as_mut(), entry(root, "ha")) {
        ha.origin = ha.origin.take().or_else(|| at(v.span()));
    }
    if let (Some(admin), Some((_, v))) = (model.admin.as_mut(), entry(root, "admin")) {
        admin.origin = admin.origin.take().or_else(|| at(v.span()));
    }
}

fn fill_locations(
    locations: &mut [Location],
    parent: &DeTable<'_>,
    at: &dyn Fn(std::ops::Range<usize>) -> Option<Origin>,
) {
    for (location, item) in locations.iter_mut().zip(items(parent, "location")) {
        location.origin = location.origin.take().or_else(|| at(item.span()));
        if let Some(t) = as_table(item) {
            fill_locations(&mut location.locations, t, at);
        }
    }
}

/// Certificate pairs point at their own line: a bad file is reported there.
fn fill_certificates(
    tls: &mut super::Tls,
    parent: &DeTable<'_>,
    at: &dyn Fn(std::ops::Range<usize>) -> Option<Origin>,
) {
    let (Some(certificates), Some(t)) = (tls.certificates.as_mut(), table(parent, "tls")) else {
        return;
    };
    for (c, item) in certificates.iter_mut().zip(items(t, "certificates")) {
        c.origin = c.origin.take().or_else(|| at(item.span()));
    }
}

type Entry<'a, 'i> = (
    &'a Spanned<toml::de::DeString<'i>>,
    &'a Spanned<DeValue<'i>>,
);

fn entry<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> Option<Entry<'a, 'i>> {
    t.iter().find(|(k, _)| k.get_ref().as_ref() == key)
}

fn table<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> Option<&'a DeTable<'i>> {
    entry(t, key).and_then(|(_, v)| as_table(v))
}

fn as_table<'a, 'i>(v: &'a Spanned<DeValue<'i>>) -> Option<&'a DeTable<'i>> {
    match v.get_ref() {
        DeValue::Table(t) => Some(t),
        _ => None,
    }
}

/// The elements of an array of tables, or nothing.
fn items<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> impl Iterator<Item = &'a Spanned<DeValue<'i>>> {
    let array = match entry(t, key).map(|(_, v)| v.get_ref()) {
        Some(DeValue::Array(a)) => Some(a),
        _ => None,
    };
    array.into_iter().flat_map(|a| a.iter())
}

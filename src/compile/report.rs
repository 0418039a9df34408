//! The migration report: every directive or command the compiler did not carry over in full,
//! where it was, and whether leaving it out changes what clients get. Nothing is dropped
//! silently.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::diag::Diagnostic;
use crate::config::Origin;

/// Directives that only restrict who gets a response. Where the appliance does not carry one
/// over (the ones after `ssl_verify_client` anywhere), a config that uses it is refused rather
/// than served open.
pub const GUARDS_ACCESS: &[&str] = &["ssl_verify_client", "ssl_ocsp"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Support {
    /// Carried over in full.
    Mapped,
    /// Carried over, but some of its parameters or behaviour were not.
    Partial,
    /// Not carried over.
    Unsupported,
    /// Not configuration at all (an `echo` in an ELB script, a pasted prompt): skipped.
    Skipped,
}

/// Whether leaving something out changes the traffic (responses, routing, headers) or only the
/// surroundings (logs, buffering, performance tuning).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Impact {
    ChangesTraffic,
    NoTrafficChange,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportItem {
    pub origin: Origin,
    /// The directive's or command's name as written.
    pub name: String,
    pub support: Support,
    pub impact: Impact,
    /// What happened to it, in a few words.
    pub note: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub items: Vec<ReportItem>,
    /// How many directives or commands of each name were carried over in full.
    pub mapped: BTreeMap<String, usize>,
    /// What the compiler changed or guessed while reading the input (typography it normalized,
    /// lines it joined), for the operator to check.
    pub warnings: Vec<Diagnostic>,
}

impl Report {
    pub fn mapped(&mut self, name: &str) {
        *self.mapped.entry(name.to_string()).or_default() += 1;
    }

    pub fn add(
        &mut self,
        origin: Origin,
        name: &str,
        support: Support,
        impact: Impact,
        note: impl Into<String>,
    ) {
        self.items.push(ReportItem {
            origin,
            name: name.to_string(),
            support,
            impact,
            note: note.into(),
        });
    }

    /// Items that were not carried over in full, in file order.
    pub fn not_mapped(&self) -> impl Iterator<Item = &ReportItem> {
        self.items.iter().filter(|i| i.support != Support::Mapped)
    }

    /// The first directive left out that restricts who gets through (client certificates'
    /// OCSP): serving without it would let in clients nginx refuses, so the appliance does
    /// not serve such a config.
    pub fn opens_access(&self) -> Option<&ReportItem> {
        self.not_mapped()
            .find(|i| i.support == Support::Unsupported && GUARDS_ACCESS.contains(&i.name.as_str()))
    }

    /// What `opens_access` found, as the error that stops a start, a reload or `-t`.
    pub fn access_error(&self) -> Option<Diagnostic> {
        let item = self.opens_access()?;
        Some(
            Diagnostic::error(format!(
                "\"{}\" is not supported by the appliance, and leaving it out would let through \
                 clients nginx refuses ({})",
                item.name, item.note
            ))
            .at(item.origin.clone()),
        )
    }

    /// The lines a start logs for what it serves without: every directive left out or carried
    /// over in part that changes traffic, as `-t` lists them.
    pub fn startup_warnings(&self) -> Vec<String> {
        self.not_mapped()
            .filter(|i| i.support != Support::Skipped && i.impact == Impact::ChangesTraffic)
            .map(|i| {
                let what = match i.support {
                    Support::Partial => "is only partly supported",
                    _ => "is not supported",
                };
                format!(
                    "\"{}\" {what} by the appliance ({}) in {}:{}",
                    i.name, i.note, i.origin.file, i.origin.line
                )
            })
            .collect()
    }

    /// True when something was left out that changes traffic.
    pub fn changes_traffic(&self) -> bool {
        self.not_mapped()
            .any(|i| i.impact == Impact::ChangesTraffic && i.support != Support::Skipped)
    }

    /// The human-readable report `migrate` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let total: usize = self.mapped.values().sum();
        let _ = writeln!(out, "Mapped: {total} directives");
        for (name, n) in &self.mapped {
            let _ = writeln!(out, "  {name:<32} {n}");
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(out, "Warnings: {}", self.warnings.len());
            for w in &self.warnings {
                let _ = writeln!(out, "  {w}");
            }
        }
        let mut items: Vec<&ReportItem> = self.not_mapped().collect();
        items.sort_by(|a, b| a.origin.cmp(&b.origin));
        for (title, support) in [
            ("Partially mapped", Support::Partial),
            ("Not mapped", Support::Unsupported),
            ("Skipped (not configuration)", Support::Skipped),
        ] {
            let group: Vec<&&ReportItem> = items.iter().filter(|i| i.support == support).collect();
            if group.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{title}: {}", group.len());
            for item in group {
                let impact = match (support, item.impact) {
                    (Support::Skipped, _) => "",
                    (Support::Unsupported, _) if GUARDS_ACCESS.contains(&item.name.as_str()) => {
                        "  [opens access: the appliance will not serve this config]"
                    }
                    (_, Impact::ChangesTraffic) => "  [changes traffic]",
                    (_, Impact::NoTrafficChange) => "  [no traffic change]",
                };
                let _ = writeln!(
                    out,
                    "  {}: {}: {}{impact}",
                    item.origin, item.name, item.note
                );
            }
        }
        out
    }
}

//! The ELB front end: a legacy `elb-*` / `iam-servercertupload` script to the model.
//!
//! The stages, one module each:
//!
//! - [`words`]: the shell-word lexer (quotes, escapes, continuations, variables, offsets);
//! - [`script`]: simple commands to items: ELB commands, assignments, skipped lines;
//! - [`command`]: the command table and option grammar;
//! - [`semantics`]: the commands applied in script order to per-load-balancer state, with the
//!   ELB API's validation;
//! - [`resolve`]: instance IDs to addresses and certificate ARNs to PEM files (EC2, IAM, or
//!   local files);
//! - [`lower`]: the state to the model.
//!
//! The accepted language is documented in `grammar/elb.ebnf`.

pub mod command;
pub mod lower;
pub mod resolve;
pub mod script;
pub mod security_policy;
pub mod semantics;
pub mod values;
pub mod words;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::diag::{Diagnostic, Sources};
use super::{Compiled, Failed, InputKind, Options, Report};
use crate::config::Origin;

/// The script being compiled: its name in diagnostics, its text, and the directory its relative
/// paths (certificate files) are read from.
#[derive(Clone, Debug)]
pub struct Source {
    pub file: Arc<str>,
    pub text: Arc<str>,
    pub dir: PathBuf,
}

impl Source {
    pub fn new(file: &str, text: &str) -> Source {
        Source {
            file: file.into(),
            text: text.into(),
            dir: Path::new(file)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
    }

    /// file:line:column of a byte offset.
    pub fn origin(&self, offset: usize) -> Origin {
        let (line, column) = crate::config::line_col(&self.text, offset);
        Origin::new(self.file.clone(), line, column)
    }

    pub fn error(&self, message: impl Into<String>, span: Range<usize>) -> Diagnostic {
        Diagnostic::error(message)
            .at(self.origin(span.start))
            .with_span(span)
    }

    pub fn warning(&self, message: impl Into<String>, span: Range<usize>) -> Diagnostic {
        Diagnostic::warning(message)
            .at(self.origin(span.start))
            .with_span(span)
    }
}

/// Compiles an ELB script read from `path`.
pub fn compile(path: &Path, text: &str, options: &Options) -> Result<Compiled, Failed> {
    let name: Arc<str> = path.to_string_lossy().into();
    let mut sources = Sources::default();
    sources.insert(name.clone(), text.into());
    let src = Source::new(&name, text);
    let fail = |d: Diagnostic| Failed {
        diagnostic: Box::new(d),
        sources: sources.clone(),
    };
    let script = script::read(&src).map_err(fail)?;
    let state = semantics::apply(&script, &src, options).map_err(fail)?;
    let needs = lower::needs(&state);
    let resolved = resolve::resolve(&needs, &state, options).map_err(fail)?;
    let (model, mut report) = lower::lower(&state, &resolved).map_err(fail)?;
    report.warnings.extend(script.warnings);
    report.warnings.extend(state.warnings.iter().cloned());
    report.warnings.extend(resolved.warnings.iter().cloned());
    if options.strict {
        strict(&report).map_err(fail)?;
    }
    Ok(Compiled {
        model,
        report,
        sources,
        kind: InputKind::Elb,
    })
}

/// `--strict`: anything left out that changes what clients get is an error.
fn strict(report: &Report) -> Result<(), Diagnostic> {
    use super::{Impact, Support};
    match report
        .items
        .iter()
        .find(|i| i.support == Support::Unsupported && i.impact == Impact::ChangesTraffic)
    {
        Some(i) => Err(
            Diagnostic::error(format!("\"{}\" is not supported ({})", i.name, i.note))
                .at(i.origin.clone()),
        ),
        None => Ok(()),
    }
}

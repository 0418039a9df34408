//! Diagnostics: what is wrong with an input, and where.
//!
//! Every front end and the model's validation report through [`Diagnostic`]. It prints in two
//! forms: nginx's one-liner (`nginx: [emerg] unknown directive "foo" in /etc/nginx/nginx.conf:12`),
//! which scripts and operators grep for, and on a terminal a snippet of the offending line with
//! the span underlined, rendered by miette.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::config::Origin;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// nginx's `[emerg]`: the config is rejected.
    Error,
    /// nginx's `[warn]`: accepted, but the operator should know.
    Warning,
}

impl Severity {
    /// The level word nginx prints in brackets.
    pub fn nginx_level(&self) -> &'static str {
        match self {
            Severity::Error => "emerg",
            Severity::Warning => "warn",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub origin: Option<Origin>,
    /// Byte range of the offending text in the origin's file, for the snippet.
    pub span: Option<Range<usize>>,
    pub help: Option<String>,
    /// The setting at fault as a TOML path (`global.worker_threads`, `http.log_format[1]`), for
    /// settings that carry no origin of their own: loading an appliance.toml turns it into the
    /// line and column where the setting is written.
    pub key: Option<Box<str>>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            origin: None,
            span: None,
            help: None,
            key: None,
        }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }

    pub fn at(mut self, origin: Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    pub fn at_opt(mut self, origin: Option<&Origin>) -> Self {
        self.origin = origin.cloned();
        self
    }

    /// Names the setting at fault (see [`Diagnostic::key`]).
    pub fn about(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into().into_boxed_str());
        self
    }

    pub fn with_span(mut self, span: Range<usize>) -> Self {
        self.span = Some(span);
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// nginx's form: `<program>: [emerg] <message> in <file>:<line>`.
    pub fn one_line(&self, program: &str) -> String {
        let mut s = format!(
            "{program}: [{}] {}",
            self.severity.nginx_level(),
            self.message
        );
        if let Some(o) = &self.origin {
            s.push_str(&format!(" in {}:{}", o.file, o.line));
        }
        s
    }

    /// The rich form: the message, then the source line with the span underlined when the source
    /// is known, then the help. Colours only when `color` is set (a terminal).
    pub fn render(&self, sources: &Sources, color: bool) -> String {
        let source = self
            .origin
            .as_ref()
            .and_then(|o| sources.get(&o.file).map(|text| (o, text)));
        let Some((origin, text)) = source else {
            let mut s = self.one_line("error");
            if let Some(h) = &self.help {
                s.push_str(&format!("\n  help: {h}"));
            }
            return s;
        };
        let span = self.span.clone().unwrap_or_else(|| {
            let start = offset_of(text, origin.line, origin.column);
            start..start
        });
        let report = RichReport {
            diagnostic: self,
            source: miette::NamedSource::new(origin.to_string(), text.to_string()),
            span: miette::SourceSpan::from(span.start..span.end.min(text.len())),
        };
        let theme = if color {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        };
        let mut out = String::new();
        let handler = miette::GraphicalReportHandler::new_themed(theme).with_context_lines(1);
        if handler.render_report(&mut out, &report).is_err() {
            return self.one_line("error");
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(o) = &self.origin {
            write!(f, " in {o}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// The byte offset of a 1-based line and column, clamped to the text.
pub fn offset_of(text: &str, line: u32, column: u32) -> usize {
    let mut offset = 0;
    for _ in 1..line.max(1) {
        match text[offset..].find('\n') {
            Some(i) => offset += i + 1,
            None => return text.len(),
        }
    }
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let col = text[offset..line_end]
        .char_indices()
        .nth(column.saturating_sub(1) as usize)
        .map_or(line_end, |(i, _)| offset + i);
    col.min(text.len())
}

/// The texts of the files a compilation read, by the name diagnostics use for them.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    files: HashMap<Arc<str>, Arc<str>>,
}

impl Sources {
    pub fn insert(&mut self, name: Arc<str>, text: Arc<str>) {
        self.files.insert(name, text);
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.files.get(name).map(|t| &**t)
    }

    /// Every file's name and text, sorted by name.
    pub fn files(&self) -> Vec<(&str, &str)> {
        let mut files: Vec<(&str, &str)> = self.files.iter().map(|(k, v)| (&**k, &**v)).collect();
        files.sort();
        files
    }
}

struct RichReport<'a> {
    diagnostic: &'a Diagnostic,
    source: miette::NamedSource<String>,
    span: miette::SourceSpan,
}

impl fmt::Debug for RichReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.diagnostic, f)
    }
}

impl fmt::Display for RichReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl std::error::Error for RichReport<'_> {}

impl miette::Diagnostic for RichReport<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(
            miette::LabeledSpan::new_with_span(Some("here".to_string()), self.span),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_is_nginx_style() {
        let d = Diagnostic::error("unknown directive \"foo\"").at(Origin::new(
            "/etc/nginx/nginx.conf",
            12,
            5,
        ));
        assert_eq!(
            d.one_line("nginx"),
            "nginx: [emerg] unknown directive \"foo\" in /etc/nginx/nginx.conf:12"
        );
    }

    #[test]
    fn rich_form_shows_the_line() {
        let mut sources = Sources::default();
        sources.insert("a.conf".into(), "events {}\nhttp { foo; }\n".into());
        let d = Diagnostic::error("unknown directive \"foo\"")
            .at(Origin::new("a.conf", 2, 8))
            .with_span(17..20);
        let out = d.render(&sources, false);
        assert!(out.contains("http { foo; }"), "{out}");
        assert!(out.contains("unknown directive"), "{out}");
    }

    #[test]
    fn offsets() {
        let t = "ab\ncdé\nf";
        assert_eq!(offset_of(t, 1, 1), 0);
        assert_eq!(offset_of(t, 2, 3), 5);
        assert_eq!(offset_of(t, 3, 1), 8);
        assert_eq!(offset_of(t, 9, 9), t.len());
    }
}

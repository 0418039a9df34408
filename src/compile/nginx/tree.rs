//! The statement tree: nginx.conf as nginx itself sees it after tokenizing, before any module
//! gives the directives meaning.
//!
//! Includes are already expanded in place (each included statement keeps its own file), so the
//! lowering walks one tree. Every statement knows where it starts (for the TOML comments and the
//! rich snippet) and the line of its terminator (`;` or `{`), which is the line nginx names in
//! its messages.

use std::ops::Range;

use crate::config::Origin;

/// A whole configuration: the main file's statements with includes expanded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub statements: Vec<Statement>,
}

/// One directive: `name arg ...;` or `name arg ... { block }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub name: String,
    pub args: Vec<Word>,
    /// `Some` for block directives (`http { }`), even when the block is empty.
    pub block: Option<Vec<Statement>>,
    /// Where the name starts.
    pub origin: Origin,
    /// The line of the `;` or `{` that ended the statement: nginx reports errors there.
    pub end_line: u32,
    /// Bytes of the statement in its file, from the name to the terminator.
    pub span: Range<usize>,
    /// The `include` statements this one came through, outermost first (empty at top level).
    pub included_from: Vec<Origin>,
}

/// One argument as nginx hands it to a module: quotes removed, escapes resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub value: String,
    /// Whether it was written in quotes (`""` is an empty argument; bare words cannot be).
    pub quoted: bool,
    /// Bytes of the word in its file, quotes included.
    pub span: Range<usize>,
}

impl Statement {
    /// The position nginx names in its messages about this statement.
    pub fn nginx_origin(&self) -> Origin {
        Origin::new(self.origin.file.clone(), self.end_line, 0)
    }

    /// The argument values.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.args.iter().map(|w| w.value.as_str())
    }

    pub fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(|w| w.value.as_str())
    }
}

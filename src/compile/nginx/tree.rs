//! The statement tree: nginx.conf as nginx itself sees it after tokenizing, before any module
//! gives the directives meaning.
//!
//! Includes are already expanded in place (each included statement keeps its own file), so the
//! lowering walks one tree. Every statement knows where it starts (for the TOML comments and the
//! rich snippet) and the line of its terminator (`;` or `{`), which is the line nginx names in
//! its messages.

use std::ops::Range;
use std::path::PathBuf;

use crate::config::Origin;

/// A whole configuration: the main file's statements with includes expanded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub statements: Vec<Statement>,
    /// nginx's prefix (`-p`): where relative paths of logs, pid and modules resolve.
    pub prefix: PathBuf,
    /// nginx's configuration prefix: the main file's directory, where relative `include`s and
    /// certificate paths resolve.
    pub conf_prefix: PathBuf,
}

/// One directive: `name arg ...;` or `name arg ... { block }`.
///
/// Inside the blocks nginx hands to a module's own line parser (`types`, `map`, `geo`,
/// `split_clients`, `charset_map`), a statement is one line of that block: `name` is its first
/// word, and [`Statement::context`] says which block it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub name: String,
    pub args: Vec<Word>,
    /// `Some` for block directives (`http { }`), even when the block is empty. When parsing
    /// stopped at an error inside the block, it holds the statements completed before it.
    pub block: Option<Vec<Statement>>,
    /// Where the name starts.
    pub origin: Origin,
    /// The line of the `;` or `{` that ended the statement: nginx reports errors there.
    pub end_line: u32,
    /// A block's `}` line, where nginx reports what it checks once the block is read (0 for
    /// a statement without a block, or a block cut short).
    pub block_end_line: u32,
    /// Bytes of the statement in its file, from the name to the terminator.
    pub span: Range<usize>,
    /// The `include` statements this one came through, outermost first (empty at top level).
    pub included_from: Vec<Origin>,
    /// The context the statement appeared in, as nginx checked it.
    pub context: Context,
    /// The name's bytes when they are not UTF-8 (`name` then holds U+FFFD in their place).
    pub name_raw: Option<Box<[u8]>>,
}

/// One argument as nginx hands it to a module: quotes removed, escapes resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub value: String,
    /// Whether it was written in quotes (`""` is an empty argument; bare words cannot be).
    pub quoted: bool,
    /// Bytes of the word in its file, quotes included.
    pub span: Range<usize>,
    /// The value's bytes when they are not UTF-8 (a Latin-1 comment or body): `value` then has
    /// U+FFFD in their place, and these are what nginx would use.
    pub raw: Option<Box<[u8]>>,
}

/// Where a statement sits, as nginx distinguishes it when it checks whether a directive is
/// allowed (`NGX_MAIN_CONF`, `NGX_HTTP_SIF_CONF`, ...), plus the blocks whose lines a module
/// parses itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Context {
    Main,
    Events,
    Http,
    /// `server` in `http`.
    Server,
    Location,
    /// `upstream` in `http`.
    Upstream,
    /// `if` directly in a `server`.
    IfInServer,
    /// `if` in a `location` (or in another `if`).
    IfInLocation,
    LimitExcept,
    Stream,
    StreamServer,
    StreamUpstream,
    Mail,
    MailServer,
    /// Lines of `types { }`.
    Types,
    /// Lines of http's `map { }`.
    Map,
    /// Lines of http's `geo { }`.
    Geo,
    SplitClients,
    CharsetMap,
    StreamMap,
    StreamGeo,
    StreamSplitClients,
}

impl Context {
    /// Whether the block's lines belong to a module's own parser rather than being directives.
    pub fn is_custom(self) -> bool {
        matches!(
            self,
            Context::Types
                | Context::Map
                | Context::Geo
                | Context::SplitClients
                | Context::CharsetMap
                | Context::StreamMap
                | Context::StreamGeo
                | Context::StreamSplitClients
        )
    }

    /// nginx's name for the context, as its documentation writes it.
    pub fn describe(self) -> &'static str {
        match self {
            Context::Main => "main",
            Context::Events => "events",
            Context::Http => "http",
            Context::Server => "server",
            Context::Location => "location",
            Context::Upstream => "upstream",
            Context::IfInServer => "if in server",
            Context::IfInLocation => "if in location",
            Context::LimitExcept => "limit_except",
            Context::Stream => "stream",
            Context::StreamServer => "stream server",
            Context::StreamUpstream => "stream upstream",
            Context::Mail => "mail",
            Context::MailServer => "mail server",
            Context::Types => "types",
            Context::Map => "map",
            Context::Geo => "geo",
            Context::SplitClients => "split_clients",
            Context::CharsetMap => "charset_map",
            Context::StreamMap => "stream map",
            Context::StreamGeo => "stream geo",
            Context::StreamSplitClients => "stream split_clients",
        }
    }
}

impl Statement {
    /// The position nginx names in its messages about this statement.
    pub fn nginx_origin(&self) -> Origin {
        Origin::new(self.origin.file.clone(), self.end_line, 0)
    }

    /// Where nginx reports what it checks once the block is read: its `}` (its `{` for a block
    /// cut short).
    pub fn nginx_block_end_origin(&self) -> Origin {
        let line = if self.block_end_line == 0 {
            self.end_line
        } else {
            self.block_end_line
        };
        Origin::new(self.origin.file.clone(), line, 0)
    }

    /// The argument values.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.args.iter().map(|w| w.value.as_str())
    }

    pub fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(|w| w.value.as_str())
    }

    /// Whether this is a line of a module-parsed block (a `map` entry, a `types` line) rather
    /// than a directive.
    pub fn is_block_line(&self) -> bool {
        self.context.is_custom()
    }
}

impl Word {
    /// The exact bytes nginx would use.
    pub fn bytes(&self) -> &[u8] {
        self.raw.as_deref().unwrap_or(self.value.as_bytes())
    }
}

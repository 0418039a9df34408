//! The parse step: files to the statement tree, checked the way nginx's core checks them.
//!
//! This is `ngx_conf_parse` and `ngx_conf_handler` (src/core/ngx_conf_file.c) with the modules'
//! block handlers reduced to what they do to parsing: which context their body is in, which
//! configuration instances they create (for duplicate checks), and for `types`, `map`, `geo`,
//! `split_clients` and `charset_map`, that their lines belong to the module rather than being
//! directives. Every directive is checked for being known, allowed in its context, terminated
//! right and given the right number of arguments; directives handled by nginx's generic slots
//! also get those slots' value and duplicate checks (see slots.rs). What modules check in their
//! own handlers is left to the lowering:
//!
//! - the arguments of every directive with its own handler (`Handler::Custom`): `listen`,
//!   `server_name`, `proxy_pass` URLs, upstream `server` parameters, `location` modifiers and
//!   nesting ("is outside location"), `if` conditions, `return`, `rewrite`, `error_page`,
//!   `map`/`geo` variable names, `limit_except` methods, `user` (getpwnam), ...;
//! - the lines of `types`, `map`, `geo`, `split_clients` and `charset_map` beyond their word
//!   counts (values, CIDRs and ranges, percentages, hex codes, `ranges` coming first);
//! - the post handlers of some generic slots (`Post::Handler`: pool sizes, lowat, http2 sizes,
//!   gzip_window/gzip_hash, userid_*), bitmask "duplicate value" warnings, and path slots'
//!   clashes between directives ("the same path name ... used in");
//! - what nginx checks once a block or the whole file is read: variables ("unknown "x"
//!   variable"), certificates, "no servers are inside upstream", and `load_module`'s file.
//!
//! `include` is expanded where it stands, as nginx does: relative names resolve against the
//! main file's directory, globs expand through glob(3). An include cycle is an error naming the
//! chain (nginx recurses until it runs out of file descriptors).
//!
//! Input is bytes. A word's value becomes a String; bytes that are not UTF-8 become U+FFFD there
//! and the exact bytes are kept beside it ([`Word::raw`]), so nothing is lost. The texts kept
//! for diagnostics have each such byte shown as `?`, so byte offsets still line up.

use std::cell::Cell;
use std::collections::HashSet;
use std::io::Read as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::directives::{self, Block, Directive, Handler, Terminator};
use super::include;
use super::lexer::{self, End, LexError, Lexer, Source, Token};
use super::slots::{self, Fields};
use super::tree::{Context, Statement, Tree, Word};
use crate::compile::diag::{Diagnostic, Sources};
use crate::compile::{describe_io_error, Options};
use crate::config::Origin;

/// Debian's compiled-in prefix (`--prefix=/usr/share/nginx`), used when `-p` is not given.
pub const DEFAULT_PREFIX: &str = "/usr/share/nginx/";

/// How deep blocks and includes may nest. nginx has no limit short of its stack; real configs
/// nest a handful of levels, and a bound keeps hostile input from exhausting ours.
pub const MAX_DEPTH: usize = 100;

/// The name diagnostics and origins use for `-g` directives (nginx says "in command line").
pub const COMMAND_LINE: &str = "command line";

/// The outcome of parsing: the tree of every statement read before the first error (if any),
/// the texts read, and that error.
#[derive(Debug)]
pub struct Parsed {
    pub tree: Tree,
    pub sources: Sources,
    pub error: Option<Diagnostic>,
    /// What nginx would print as `[warn]` (deprecated directives).
    pub warnings: Vec<Diagnostic>,
}

/// Parses a main file and everything it includes, as `nginx -t -c path [-p prefix] [-g ...]`
/// would read it.
///
/// A relative `path` is taken from the working directory, unless `options.prefix` is given, in
/// which case it is relative to the prefix, as in nginx. (nginx without `-p` would look under
/// its compiled-in prefix; a migration tool reads the file the user named.)
pub fn parse_file(path: &Path, options: &Options) -> Parsed {
    let prefix = prefix_of(options);
    let given = include::path_bytes(path);
    let main = if options.prefix.is_some() {
        include::full_name(&prefix, given)
    } else {
        include::c_bytes(given).to_vec()
    };
    let fallback = if options.prefix.is_some() || main.first() == Some(&b'/') {
        prefix.clone()
    } else {
        Vec::new()
    };
    let conf_prefix = include::conf_prefix_of(&main, &fallback);
    let mut parser = Parser::new(prefix, conf_prefix);
    let result = parser.run(options.global_directives.as_deref(), |p, out| {
        p.main_file(&main, out)
    });
    parser.finish(result)
}

/// nginx's prefix: `-p`, else the compiled-in one.
fn prefix_of(options: &Options) -> Vec<u8> {
    include::as_prefix(
        options
            .prefix
            .as_deref()
            .map_or(DEFAULT_PREFIX.as_bytes(), include::path_bytes),
    )
}

/// Parses nginx's `-g` string alone, for a config that is not an nginx.conf: its main-context
/// directives, checked as nginx checks them, with errors "in command line".
pub fn parse_command_line(text: &str, options: &Options) -> Parsed {
    let prefix = prefix_of(options);
    let mut parser = Parser::new(prefix.clone(), prefix);
    let mut statements = Vec::new();
    let error = parser.param(text, &mut statements).err();
    parser.finish((statements, error))
}

/// Parses a text as if it were the main file `name` (includes resolve against `name`'s
/// directory). For tests and tools.
pub fn parse_str(text: &str, name: &str) -> Parsed {
    parse_bytes(text.as_bytes(), name)
}

/// [`parse_str`] for input that need not be UTF-8.
pub fn parse_bytes(text: &[u8], name: &str) -> Parsed {
    let conf_prefix = include::conf_prefix_of(name.as_bytes(), b"");
    let mut parser = Parser::new(DEFAULT_PREFIX.as_bytes().to_vec(), conf_prefix);
    let result = parser.run(None, |p, out| {
        p.file(name.into(), text.to_vec(), None, &Frame::MAIN, out)
    });
    parser.finish(result)
}

/// The configuration a statement's block stands in: its context and the configuration
/// instances a directive there would write to (nginx's main, srv and loc conf arrays), which
/// is what makes a second `gzip on;` a duplicate in one location but not in the next.
#[derive(Clone, Copy, Debug)]
struct Frame {
    context: Context,
    main: u32,
    srv: u32,
    loc: u32,
}

impl Frame {
    const MAIN: Frame = Frame {
        context: Context::Main,
        main: 0,
        srv: 0,
        loc: 0,
    };
}

/// What reading stops at: a `}` closes a block, the end closes a file or the `-g` string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    File,
    Block,
    Param,
}

/// The position and text of the file being read, for building statements and diagnostics.
struct Input<'t> {
    name: Arc<str>,
    bytes: &'t [u8],
    display: Arc<str>,
    /// The last column computed (line start, offset, column), so that statements read in
    /// order cost the characters between them, not the whole line each time (a minified
    /// config is one long line).
    last_column: Cell<(usize, usize, u32)>,
}

impl Input<'_> {
    /// 1-based column of `offset` in characters from the start of its line.
    fn column(&self, line_start: usize, offset: usize) -> u32 {
        let (start, from, col) = self.last_column.get();
        let (from, col) = if start == line_start && from <= offset {
            (from, col)
        } else {
            (line_start, 1)
        };
        let column = self
            .display
            .get(from..offset)
            .map_or(1, |s| col + s.chars().count() as u32);
        self.last_column.set((line_start, offset, column));
        column
    }
}

struct Parser {
    prefix: Vec<u8>,
    conf_prefix: Vec<u8>,
    sources: Sources,
    fields: Fields,
    instances: u32,
    warnings: Vec<Diagnostic>,
    /// The include statements being expanded, outermost first.
    included_from: Vec<Origin>,
    /// The files being read, for cycle detection: canonical path and name.
    open: Vec<(PathBuf, Arc<str>)>,
    seen_events: bool,
    /// nginx's `modules_used`: set once a block of modules has been configured.
    modules_used: bool,
    /// `load_module` files seen, by file name.
    loaded: HashSet<Vec<u8>>,
    /// Blocks and included files open now.
    depth: usize,
    /// The line of the last `}` read, which ends the block just parsed.
    block_end_line: u32,
}

type Result<T> = std::result::Result<T, Diagnostic>;

impl Parser {
    fn new(prefix: Vec<u8>, conf_prefix: Vec<u8>) -> Self {
        Parser {
            prefix,
            conf_prefix,
            sources: Sources::default(),
            fields: Fields::default(),
            instances: 0,
            warnings: Vec::new(),
            included_from: Vec::new(),
            open: Vec::new(),
            seen_events: false,
            modules_used: false,
            loaded: HashSet::new(),
            depth: 0,
            block_end_line: 0,
        }
    }

    /// `-g` first (nginx parses it before the file), then the main file, then the checks
    /// nginx makes once everything is read.
    fn run(
        &mut self,
        global: Option<&str>,
        main: impl FnOnce(&mut Parser, &mut Vec<Statement>) -> Result<()>,
    ) -> (Vec<Statement>, Option<Diagnostic>) {
        let mut statements = Vec::new();
        if let Some(global) = global {
            if let Err(e) = self.param(global, &mut statements) {
                return (statements, Some(e));
            }
        }
        if let Err(e) = main(self, &mut statements) {
            return (statements, Some(e));
        }
        if !self.seen_events {
            let e = Diagnostic::error("no \"events\" section in configuration");
            return (statements, Some(e));
        }
        (statements, None)
    }

    fn finish(self, (statements, error): (Vec<Statement>, Option<Diagnostic>)) -> Parsed {
        Parsed {
            tree: Tree {
                statements,
                prefix: include::to_path(&self.prefix),
                conf_prefix: include::to_path(&self.conf_prefix),
            },
            sources: self.sources,
            error,
            warnings: self.warnings,
        }
    }

    fn new_instance(&mut self) -> u32 {
        self.instances += 1;
        self.instances
    }

    /// The `-g` string: parsed in the main context like a file, but blocks are refused and
    /// errors are "in command line".
    fn param(&mut self, text: &str, out: &mut Vec<Statement>) -> Result<()> {
        let input = Input {
            name: COMMAND_LINE.into(),
            bytes: text.as_bytes(),
            display: text.into(),
            last_column: Cell::new((0, 0, 1)),
        };
        self.sources
            .insert(input.name.clone(), input.display.clone());
        let mut lexer = Lexer::new(input.bytes, Source::Param);
        self.body(&mut lexer, &input, Body::Param, &Frame::MAIN, out)
            .map_err(|mut e| {
                e.message.push_str(" in command line");
                e.origin = None;
                e.span = None;
                e
            })
    }

    fn main_file(&mut self, name: &[u8], out: &mut Vec<Statement>) -> Result<()> {
        let bytes = read_file(name).map_err(Diagnostic::error)?;
        self.file(
            String::from_utf8_lossy(name).into(),
            bytes,
            Some(name),
            &Frame::MAIN,
            out,
        )
    }

    /// Reads one file's statements into `out` (type parse_file).
    fn file(
        &mut self,
        name: Arc<str>,
        bytes: Vec<u8>,
        path: Option<&[u8]>,
        frame: &Frame,
        out: &mut Vec<Statement>,
    ) -> Result<()> {
        // A UTF-8 file is its own display text (one copy, into the Arc); otherwise the bytes
        // are kept for reading and the display text shows `?` for the bad ones.
        let (display, original): (Arc<str>, Option<Vec<u8>>) = match String::from_utf8(bytes) {
            Ok(text) => (text.into(), None),
            Err(e) => {
                let bytes = e.into_bytes();
                (display_text(&bytes).into(), Some(bytes))
            }
        };
        let bytes = original.as_deref().unwrap_or(display.as_bytes());
        self.sources.insert(name.clone(), display.clone());
        let canonical = path.and_then(|p| std::fs::canonicalize(include::to_path(p)).ok());
        if let Some(c) = &canonical {
            self.open.push((c.clone(), name.clone()));
        }
        let input = Input {
            name,
            bytes,
            display: display.clone(),
            last_column: Cell::new((0, 0, 1)),
        };
        let mut lexer = Lexer::new(bytes, Source::File);
        let result = self.body(&mut lexer, &input, Body::File, frame, out);
        if canonical.is_some() {
            self.open.pop();
        }
        result
    }

    /// ngx_conf_parse's loop over one file, block or `-g` string.
    fn body(
        &mut self,
        lexer: &mut Lexer<'_>,
        input: &Input<'_>,
        body: Body,
        frame: &Frame,
        out: &mut Vec<Statement>,
    ) -> Result<()> {
        let mut words: Vec<Token> = Vec::new();
        loop {
            let read = lexer
                .read(&mut words)
                .map_err(|e| self.lex_error(input, e))?;
            match read.end {
                End::BlockEnd if body != Body::Block => {
                    return Err(self.error_at(
                        input,
                        "unexpected \"}\"".into(),
                        read.line,
                        read.line_start,
                        read.at..read.at + 1,
                    ));
                }
                End::BlockEnd => {
                    self.block_end_line = read.line;
                    return Ok(());
                }
                End::Eof if body == Body::Block => {
                    return Err(self.error_at(
                        input,
                        "unexpected end of file, expecting \"}\"".into(),
                        read.line,
                        read.line_start,
                        read.at..read.at,
                    ));
                }
                End::Eof => return Ok(()),
                End::BlockStart if body == Body::Param => {
                    return Err(self.error_at(
                        input,
                        "block directives are not supported in -g option".into(),
                        read.line,
                        read.line_start,
                        read.at..read.at + 1,
                    ));
                }
                End::Semicolon | End::BlockStart => {}
            }
            let statement = self.statement(input, &words, &read, frame.context);
            if frame.context.is_custom() {
                if read.end == End::BlockStart {
                    return Err(self.error_at(
                        input,
                        "unexpected \"{\"".into(),
                        read.line,
                        read.line_start,
                        read.at..read.at + 1,
                    ));
                }
                self.block_line(input, statement, frame, out)?;
            } else {
                self.directive(lexer, input, statement, read.end, frame, out)?;
            }
        }
    }

    /// ngx_conf_handler and what the handler does to parsing.
    fn directive(
        &mut self,
        lexer: &mut Lexer<'_>,
        input: &Input<'_>,
        mut statement: Statement,
        end: End,
        frame: &Frame,
        out: &mut Vec<Statement>,
    ) -> Result<()> {
        let terminator = if end == End::BlockStart {
            Terminator::Brace
        } else {
            Terminator::Semicolon
        };
        let d = directives::resolve(
            &statement.name,
            frame.context,
            statement.args.len(),
            terminator,
        )
        .map_err(|m| self.statement_error(input, &statement, m))?;

        match d.handler {
            Handler::Block(block) => {
                self.deeper(input, &statement)?;
                let inner = self.open_block(input, &statement, d, block, frame)?;
                let mut children = Vec::new();
                let result = self.body(lexer, input, Body::Block, &inner, &mut children);
                self.depth -= 1;
                statement.block = Some(children);
                statement.block_end_line = self.block_end_line;
                out.push(statement);
                result
            }
            _ if d.family == directives::Family::Conf => {
                let name = statement.args[0].bytes().to_vec();
                self.include(input, &statement, &name, true, frame, out)
            }
            _ => {
                if d.name == "load_module" {
                    self.load_module(input, &statement)?;
                }
                let args: Vec<&[u8]> = statement.args.iter().map(Word::bytes).collect();
                let instance = match d.conf {
                    directives::Conf::Module
                    | directives::Conf::HttpMain
                    | directives::Conf::StreamMain
                    | directives::Conf::MailMain => frame.main,
                    directives::Conf::HttpSrv
                    | directives::Conf::StreamSrv
                    | directives::Conf::MailSrv => frame.srv,
                    directives::Conf::HttpLoc => frame.loc,
                };
                match slots::apply(d, &args, instance, &mut self.fields) {
                    Ok(Some(warning)) => {
                        let w = self.statement_error(input, &statement, warning);
                        self.warnings
                            .push(Diagnostic::warning(w.message).at_opt(w.origin.as_ref()));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let message = e.message(&statement.name);
                        return Err(self.statement_error(input, &statement, message));
                    }
                }
                out.push(statement);
                Ok(())
            }
        }
    }

    /// What a block handler does before it parses the body: its own duplicate checks, and the
    /// context and configuration instances of the body.
    fn open_block(
        &mut self,
        input: &Input<'_>,
        statement: &Statement,
        d: &Directive,
        block: Block,
        frame: &Frame,
    ) -> Result<Frame> {
        let mut inner = *frame;
        let context = match block {
            Block::Events | Block::Http | Block::Stream | Block::Mail => {
                if !self.fields.set(0, d.module, d.name) {
                    let message = format!("\"{}\" directive is duplicate", d.name);
                    return Err(self.statement_error(input, statement, message));
                }
                self.modules_used = true;
                let id = self.new_instance();
                inner.main = id;
                inner.srv = self.new_instance();
                inner.loc = self.new_instance();
                match block {
                    Block::Events => {
                        self.seen_events = true;
                        inner.main = id;
                        Context::Events
                    }
                    Block::Http => Context::Http,
                    Block::Stream => Context::Stream,
                    _ => Context::Mail,
                }
            }
            Block::HttpServer | Block::StreamServer | Block::MailServer => {
                inner.srv = self.new_instance();
                inner.loc = self.new_instance();
                match block {
                    Block::HttpServer => Context::Server,
                    Block::StreamServer => Context::StreamServer,
                    _ => Context::MailServer,
                }
            }
            Block::HttpUpstream | Block::StreamUpstream => {
                inner.srv = self.new_instance();
                inner.loc = self.new_instance();
                if block == Block::HttpUpstream {
                    Context::Upstream
                } else {
                    Context::StreamUpstream
                }
            }
            Block::Location => {
                inner.loc = self.new_instance();
                Context::Location
            }
            Block::If => {
                inner.loc = self.new_instance();
                if frame.context == Context::Server {
                    Context::IfInServer
                } else {
                    Context::IfInLocation
                }
            }
            Block::LimitExcept => {
                if !self.fields.set(frame.loc, d.module, d.name) {
                    let message = format!("\"{}\" directive is duplicate", d.name);
                    return Err(self.statement_error(input, statement, message));
                }
                inner.loc = self.new_instance();
                Context::LimitExcept
            }
            Block::Types => Context::Types,
            Block::Map => Context::Map,
            Block::Geo => Context::Geo,
            Block::SplitClients => Context::SplitClients,
            Block::CharsetMap => Context::CharsetMap,
            Block::StreamMap => Context::StreamMap,
            Block::StreamGeo => Context::StreamGeo,
            Block::StreamSplitClients => Context::StreamSplitClients,
        };
        inner.context = context;
        Ok(inner)
    }

    /// ngx_load_module's checks that do not need the module file itself.
    fn load_module(&mut self, input: &Input<'_>, statement: &Statement) -> Result<()> {
        if self.modules_used {
            let message = "\"load_module\" directive is specified too late".to_string();
            return Err(self.statement_error(input, statement, message));
        }
        self.loaded.insert(statement.args[0].bytes().to_vec());
        Ok(())
    }

    /// A line of a block whose module parses its lines itself: recorded, except `include`,
    /// which those modules expand as nginx's include does.
    fn block_line(
        &mut self,
        input: &Input<'_>,
        statement: Statement,
        frame: &Frame,
        out: &mut Vec<Statement>,
    ) -> Result<()> {
        let words = statement.args.len() + 1;
        let first = include::c_bytes(statement.name.as_bytes());
        let is_include = first == b"include";
        match frame.context {
            Context::Types if is_include => {
                if words != 2 {
                    let m = "invalid number of arguments in \"include\" directive".to_string();
                    return Err(self.statement_error(input, &statement, m));
                }
                let name = statement.args[0].bytes().to_vec();
                return self.include(input, &statement, &name, true, frame, out);
            }
            Context::Map | Context::StreamMap => {
                let flag = words == 1 && matches!(first, b"hostnames" | b"volatile");
                if !flag && words != 2 {
                    let m = "invalid number of the map parameters".to_string();
                    return Err(self.statement_error(input, &statement, m));
                }
                if is_include {
                    let name = statement.args[0].bytes().to_vec();
                    return self.include(input, &statement, &name, true, frame, out);
                }
            }
            Context::Geo | Context::StreamGeo => {
                let flag = words == 1
                    && (first == b"ranges"
                        || (first == b"proxy_recursive" && frame.context == Context::Geo));
                if !flag && words != 2 {
                    let m = "invalid number of the geo parameters".to_string();
                    return Err(self.statement_error(input, &statement, m));
                }
                if is_include {
                    // geo includes one file, no glob.
                    let name = statement.args[0].bytes().to_vec();
                    return self.include(input, &statement, &name, false, frame, out);
                }
            }
            Context::CharsetMap if words != 2 => {
                let m = "invalid parameters number".to_string();
                return Err(self.statement_error(input, &statement, m));
            }
            _ => {}
        }
        out.push(statement);
        Ok(())
    }

    /// ngx_conf_include: the named file, or each file the glob matches, read where the
    /// `include` stands.
    fn include(
        &mut self,
        input: &Input<'_>,
        site: &Statement,
        name: &[u8],
        glob: bool,
        frame: &Frame,
        out: &mut Vec<Statement>,
    ) -> Result<()> {
        let full = include::full_name(&self.conf_prefix, name);
        if glob && include::is_glob(&full) {
            let files = include::expand(&full).ok_or_else(|| {
                let m = format!("glob() \"{}\" failed", String::from_utf8_lossy(&full));
                self.statement_error(input, site, m)
            })?;
            for file in files {
                self.include_file(input, site, &file, frame, out)?;
            }
            Ok(())
        } else {
            self.include_file(input, site, &full, frame, out)
        }
    }

    fn include_file(
        &mut self,
        input: &Input<'_>,
        site: &Statement,
        path: &[u8],
        frame: &Frame,
        out: &mut Vec<Statement>,
    ) -> Result<()> {
        let name: Arc<str> = String::from_utf8_lossy(path).into();
        let bytes = read_file(path).map_err(|m| self.statement_error(input, site, m))?;
        if let Ok(canonical) = std::fs::canonicalize(include::to_path(path)) {
            if let Some(first) = self.open.iter().position(|(c, _)| *c == canonical) {
                let mut chain: Vec<String> = self.open[first..]
                    .iter()
                    .map(|(_, n)| format!("\"{n}\""))
                    .collect();
                chain.push(format!("\"{name}\""));
                let m = format!("include cycle: {}", chain.join(" includes "));
                return Err(self.statement_error(input, site, m));
            }
        }
        self.deeper(input, site)?;
        self.included_from.push(site.nginx_origin());
        let result = self.file(name, bytes, Some(path), frame, out);
        self.included_from.pop();
        self.depth -= 1;
        result
    }

    /// Enters a block or an included file, within [`MAX_DEPTH`].
    fn deeper(&mut self, input: &Input<'_>, site: &Statement) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            let message = format!(
                "\"{}\" nests blocks and includes more than {MAX_DEPTH} deep",
                directives::c_str(&site.name)
            );
            return Err(self.statement_error(input, site, message));
        }
        self.depth += 1;
        Ok(())
    }

    /// Builds a statement from one read's words.
    fn statement(
        &self,
        input: &Input<'_>,
        words: &[Token],
        read: &lexer::Read,
        context: Context,
    ) -> Statement {
        let (name, name_raw) = text_of(&input.bytes[words[0].content.clone()]);
        let args = words[1..]
            .iter()
            .map(|t| {
                let (value, raw) = text_of(&input.bytes[t.content.clone()]);
                Word {
                    value,
                    quoted: t.quoted,
                    span: t.span.clone(),
                    raw,
                }
            })
            .collect();
        let first = &words[0];
        let column = input.column(first.line_start, first.span.start);
        Statement {
            name,
            args,
            block: None,
            origin: Origin::new(input.name.clone(), first.line, column),
            end_line: read.line,
            block_end_line: 0,
            span: first.span.start..read.at + 1,
            included_from: self.included_from.clone(),
            context,
            name_raw,
        }
    }

    /// An error about a statement, at the line nginx names (its terminator's).
    fn statement_error(&self, input: &Input<'_>, s: &Statement, message: String) -> Diagnostic {
        let name_span = s.span.start..s.span.start + s.name.len().min(s.span.len());
        let column = if s.origin.line == s.end_line {
            s.origin.column
        } else {
            let end = s.span.end.saturating_sub(1);
            let line_start = input.bytes[..end]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            input.column(line_start, end)
        };
        Diagnostic::error(message)
            .at(Origin::new(input.name.clone(), s.end_line, column))
            .with_span(name_span)
    }

    fn lex_error(&self, input: &Input<'_>, e: LexError) -> Diagnostic {
        self.error_at(input, e.message, e.line, e.line_start, e.span)
    }

    fn error_at(
        &self,
        input: &Input<'_>,
        message: String,
        line: u32,
        line_start: usize,
        span: Range<usize>,
    ) -> Diagnostic {
        let column = input.column(line_start, span.start);
        Diagnostic::error(message)
            .at(Origin::new(input.name.clone(), line, column))
            .with_span(span)
    }
}

/// Reads a whole file, with nginx's messages for what can go wrong.
fn read_file(name: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let shown = String::from_utf8_lossy(name);
    let mut file = std::fs::File::open(include::to_path(name))
        .map_err(|e| format!("open() \"{shown}\" failed ({})", describe_io_error(&e)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("pread() \"{shown}\" failed ({})", describe_io_error(&e)))?;
    Ok(bytes)
}

/// A value as text: UTF-8 as is; otherwise U+FFFD for each bad sequence, with the bytes kept.
fn text_of(bytes: &[u8]) -> (String, Option<Box<[u8]>>) {
    let unescaped = lexer::unescape(bytes);
    match std::str::from_utf8(&unescaped) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(&unescaped).into_owned(),
            Some(unescaped.into_owned().into_boxed_slice()),
        ),
    }
}

/// The text kept for diagnostics: the file with each byte that is not UTF-8 shown as `?`, so
/// offsets into the file are offsets into the text.
fn display_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        out.extend(std::iter::repeat_n('?', chunk.invalid().len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(files: &[(&str, &str)]) -> Dir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let dir = std::env::temp_dir()
                .join(format!("appliance-parse-{}-{nanos}", std::process::id()));
            for (name, text) in files {
                let path = dir.join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            Dir(dir)
        }

        fn parse(&self, main: &str) -> Parsed {
            parse_file(&self.0.join(main), &Options::default())
        }

        fn name(&self, file: &str) -> String {
            self.0.join(file).to_string_lossy().into_owned()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn names(statements: &[Statement]) -> Vec<String> {
        statements.iter().map(|s| s.name.clone()).collect()
    }

    fn error(parsed: &Parsed) -> String {
        let e = parsed.error.as_ref().expect("an error");
        match &e.origin {
            Some(o) => format!("{} @{}", e.message, o.line),
            None => e.message.clone(),
        }
    }

    #[test]
    fn a_tree_with_contexts_positions_and_values() {
        let p = parse_str(
            "events {}\nhttp {\n  server {\n    listen 80;\n    location / { if ($a) { return 200 \"x\\ty\"; } }\n  }\n}\n",
            "/x/nginx.conf",
        );
        assert!(p.error.is_none(), "{:?}", p.error);
        let http = &p.tree.statements[1];
        assert_eq!(
            (http.origin.line, http.origin.column, http.end_line),
            (2, 1, 2)
        );
        let server = &http.block.as_ref().unwrap()[0];
        assert_eq!(server.context, Context::Http);
        let listen = &server.block.as_ref().unwrap()[0];
        assert_eq!((listen.context, listen.origin.column), (Context::Server, 5));
        assert_eq!(listen.span, 32..42, "name to terminator");
        let location = &server.block.as_ref().unwrap()[1];
        let iff = &location.block.as_ref().unwrap()[0];
        let ret = &iff.block.as_ref().unwrap()[0];
        assert_eq!(ret.context, Context::IfInLocation);
        assert_eq!(ret.arg(1), Some("x\ty"));
        assert!(ret.args[1].quoted && ret.args[1].raw.is_none());
        assert_eq!(p.tree.conf_prefix, PathBuf::from("/x/"));
        assert_eq!(p.tree.prefix, PathBuf::from(DEFAULT_PREFIX));
    }

    #[test]
    fn if_in_server_is_its_own_context() {
        let p = parse_str(
            "events {}\nhttp { server { if ($a) { return 404; } } }",
            "n.conf",
        );
        let server = &p.tree.statements[1].block.as_ref().unwrap()[0];
        let ret = &server.block.as_ref().unwrap()[0].block.as_ref().unwrap()[0];
        assert_eq!(ret.context, Context::IfInServer);
    }

    #[test]
    fn custom_blocks_hold_lines() {
        let p = parse_str(
            "events {}\nhttp { types { text/html html htm; } map $a $b { default 0; ~x 1; } }",
            "n.conf",
        );
        assert!(p.error.is_none(), "{:?}", p.error);
        let http = p.tree.statements[1].block.as_ref().unwrap();
        let types = http[0].block.as_ref().unwrap();
        assert_eq!(names(types), ["text/html"]);
        assert!(types[0].is_block_line() && types[0].context == Context::Types);
        let map = http[1].block.as_ref().unwrap();
        assert_eq!(names(map), ["default", "~x"]);
        let p = parse_str("events {}\nhttp { map $a $b { a b c; } }", "n.conf");
        assert_eq!(error(&p), "invalid number of the map parameters @2");
        let p = parse_str("events {}\nhttp { types { a { } } }", "n.conf");
        assert_eq!(error(&p), "unexpected \"{\" @2");
    }

    #[test]
    fn includes_expand_in_place_with_their_chain() {
        let dir = Dir::new(&[
            (
                "nginx.conf",
                "events {}\nhttp {\n include conf.d/*.conf;\n gzip on;\n}\n",
            ),
            ("conf.d/b.conf", "server { listen 2; }\n"),
            ("conf.d/a.conf", "server { include loc.conf; }\n"),
            ("conf.d/.hidden.conf", "nope;\n"),
            ("loc.conf", "location / { }\n"),
        ]);
        let p = dir.parse("nginx.conf");
        assert!(p.error.is_none(), "{:?}", p.error);
        let http = p.tree.statements[1].block.as_ref().unwrap();
        assert_eq!(names(http), ["server", "server", "gzip"]);
        assert_eq!(*http[0].origin.file, dir.name("conf.d/a.conf"), "sorted");
        assert_eq!(http[0].included_from.len(), 1);
        assert_eq!(http[0].included_from[0].line, 3);
        assert!(http[2].included_from.is_empty());
        let location = &http[0].block.as_ref().unwrap()[0];
        assert_eq!(*location.origin.file, dir.name("loc.conf"));
        assert_eq!(location.included_from.len(), 2);
        assert!(p.sources.get(&dir.name("loc.conf")).is_some());
        assert!(p.sources.get(&dir.name("conf.d/.hidden.conf")).is_none());
    }

    #[test]
    fn includes_are_relative_to_the_main_file_not_the_including_one() {
        let dir = Dir::new(&[
            ("nginx.conf", "events {}\ninclude sub/a.conf;\n"),
            ("sub/a.conf", "include b.conf;\n"),
            ("sub/b.conf", "env x;\n"),
        ]);
        let p = dir.parse("nginx.conf");
        let missing = dir.name("b.conf");
        assert_eq!(
            error(&p),
            format!("open() \"{missing}\" failed (2: No such file or directory) @1")
        );
        assert_eq!(
            *p.error.unwrap().origin.unwrap().file,
            dir.name("sub/a.conf")
        );
    }

    #[test]
    fn a_prefix_places_a_relative_main_file() {
        let dir = Dir::new(&[
            ("conf/nginx.conf", "events {}\ninclude x.conf;\n"),
            ("conf/x.conf", ""),
        ]);
        let options = Options {
            prefix: Some(dir.0.clone()),
            ..Options::default()
        };
        let p = parse_file(Path::new("conf/nginx.conf"), &options);
        assert!(p.error.is_none(), "{:?}", p.error);
        assert_eq!(p.tree.conf_prefix, dir.0.join("conf/"));
        assert_eq!(p.tree.prefix, dir.0.join(""));
    }

    #[test]
    fn include_cycles_name_the_chain() {
        let dir = Dir::new(&[
            ("nginx.conf", "events {}\ninclude a.conf;\n"),
            ("a.conf", "include b.conf;\n"),
            ("b.conf", "\ninclude a.conf;\n"),
        ]);
        let p = dir.parse("nginx.conf");
        let (a, b) = (dir.name("a.conf"), dir.name("b.conf"));
        assert_eq!(
            error(&p),
            format!("include cycle: \"{a}\" includes \"{b}\" includes \"{a}\" @2")
        );
    }

    #[test]
    fn a_partial_tree_on_error() {
        let p = parse_str(
            "events {}\nhttp {\n server { listen 1; }\n server { listen 2; nope; }\n}\n",
            "n.conf",
        );
        assert_eq!(error(&p), "unknown directive \"nope\" @4");
        let http = p.tree.statements[1].block.as_ref().unwrap();
        assert_eq!(http.len(), 2);
        assert_eq!(names(http[1].block.as_ref().unwrap()), ["listen"]);
    }

    #[test]
    fn global_directives_come_first_and_fail_in_command_line() {
        let dir = Dir::new(&[("nginx.conf", "events {}\n")]);
        let options = Options {
            global_directives: Some("daemon off; pid /x.pid;".into()),
            ..Options::default()
        };
        let p = parse_file(&dir.0.join("nginx.conf"), &options);
        assert_eq!(names(&p.tree.statements), ["daemon", "pid", "events"]);
        assert_eq!(&*p.tree.statements[0].origin.file, COMMAND_LINE);
        let options = Options {
            global_directives: Some("daemon off".into()),
            ..Options::default()
        };
        let p = parse_file(&dir.0.join("nginx.conf"), &options);
        assert_eq!(
            error(&p),
            "unexpected end of parameter, expecting \";\" in command line"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_kept() {
        let p = parse_bytes(b"events {}\nenv M\xf6lln;\n", "n.conf");
        let env = &p.tree.statements[1];
        assert_eq!(env.arg(0), Some("M\u{fffd}lln"));
        assert_eq!(env.args[0].bytes(), b"M\xf6lln");
        assert_eq!(
            p.sources.get("n.conf").map(|t| t.len()),
            Some(21),
            "offsets line up"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |depth: usize| {
            format!(
                "events {{}}\nhttp {{ server {{\n{}{} }} }}",
                "location / {\n".repeat(depth),
                "}".repeat(depth)
            )
        };
        // Run where tests run: a 2 MiB thread stack, in a debug build.
        let deep = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                (
                    parse_str(&nested(98), "n.conf"),
                    parse_str(&nested(5000), "n.conf"),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(deep.0.error.is_none(), "{:?}", deep.0.error);
        assert_eq!(
            error(&deep.1),
            "\"location\" nests blocks and includes more than 100 deep @101"
        );
    }

    #[test]
    fn no_events_is_found_after_everything() {
        let p = parse_str("daemon off;\n", "n.conf");
        assert_eq!(error(&p), "no \"events\" section in configuration");
        assert_eq!(names(&p.tree.statements), ["daemon"]);
    }
}

//! The tokenizer: nginx 1.22's `ngx_conf_read_token` (src/core/ngx_conf_file.c), byte for byte.
//!
//! One call to [`Lexer::read`] reads what one call of nginx's function reads: the words of one
//! statement up to its `;` or `{`, or a `}`, or the end of the input. The rules, each from that
//! function (grammar/nginx.ebnf writes them out):
//!
//! - Words are separated by space, tab, CR and LF. A statement ends at `;` or `{`; `}` closes a
//!   block and must stand where a word could start.
//! - A bare word ends at whitespace, `;` or `{`, never at `}`, `#`, `"` or `'`: `a}` is one word.
//!   After `$`, any `{` belongs to the word (`${name}`).
//! - `#` starts a comment only where a word could start; quotes only at a word's start. After a
//!   closing quote comes whitespace, `;`, `{` or `)` (which starts the next word), else
//!   `unexpected "x"`.
//! - A backslash takes the next byte into the word, whatever it is, in bare and quoted words
//!   alike. The word's value then has `\"`, `\'` and `\\` unescaped and `\t`, `\r`, `\n` turned
//!   into control characters; any other `\x` stays as written.
//! - nginx reads a file through a 4096-byte buffer, and a word (or comment) that does not fit
//!   in it is an error. Where the buffer's edges fall depends on where earlier words started,
//!   so the lexer keeps nginx's `start` variable and replays the refills exactly.
//!
//! The lexer works on bytes: nginx does not care about encodings, so neither does it. Words are
//! handed out as byte ranges; the parser decides how to turn them into text.

use std::borrow::Cow;
use std::ops::Range;

use nom::bytes::complete::{take_till, take_till1, take_while1};
use nom::IResult;

/// nginx's NGX_CONF_BUFFER.
pub const BUFFER: usize = 4096;

/// How nginx reads the input: a file through its buffer, or the `-g` parameter string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    File,
    /// `-g`: no buffer limit, lines count from 0, and a different end-of-input message.
    Param,
}

/// One word of a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The word in the input, quotes included.
    pub span: Range<usize>,
    /// The bytes between the quotes (the whole word when bare), escapes not yet resolved.
    pub content: Range<usize>,
    pub quoted: bool,
    /// nginx's line number where the word starts.
    pub line: u32,
    /// Offset of the first byte of that line, for columns.
    pub line_start: usize,
}

/// What ended a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// `;`: the words form a simple directive.
    Semicolon,
    /// `{`: the words open a block.
    BlockStart,
    /// `}` with no words before it.
    BlockEnd,
    /// The end of the input with no words pending.
    Eof,
}

/// The result of a read: how it ended, where, and nginx's line at that point (the line its
/// messages about the statement name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read {
    pub end: End,
    /// Offset of the terminator (the input's length at the end).
    pub at: usize,
    pub line: u32,
    pub line_start: usize,
}

/// A tokenizing error, with the line nginx reports and the offending bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexError {
    pub message: String,
    pub line: u32,
    pub span: Range<usize>,
    pub line_start: usize,
}

type NomResult<'a> = IResult<&'a [u8], &'a [u8]>;

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Bytes that need a decision inside a bare word; everything else is just part of it.
fn is_bare_special(b: u8) -> bool {
    is_blank(b) || matches!(b, b';' | b'{' | b'\\' | b'$')
}

fn blanks(input: &[u8]) -> NomResult<'_> {
    take_while1(is_blank)(input)
}

fn to_line_end(input: &[u8]) -> NomResult<'_> {
    take_till(|b| b == b'\n')(input)
}

fn plain_bare(input: &[u8]) -> NomResult<'_> {
    take_till1(is_bare_special)(input)
}

fn plain_quoted(quote: u8) -> impl Fn(&[u8]) -> NomResult<'_> {
    move |input| take_till1(|b| b == quote || b == b'\\')(input)
}

fn count_lf(bytes: &[u8]) -> u32 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u32
}

/// The tokenizer over one input (a file or the `-g` string).
pub struct Lexer<'a> {
    text: &'a [u8],
    source: Source,
    pos: usize,
    /// nginx's line: the line of the next byte to read.
    line: u32,
    line_start: usize,
    /// nginx's `start`: where the word being read began, or the last byte read between words.
    start: usize,
    start_line: u32,
    /// Where nginx's buffer runs out next, forcing a refill.
    buf_end: usize,
    /// The last quoted word's quote and closing offset (nginx's d_quoted/s_quoted): a refill
    /// before that offset fails as a missing closing quote.
    quote: Option<(u8, usize)>,
}

impl<'a> Lexer<'a> {
    pub fn new(text: &'a [u8], source: Source) -> Self {
        Lexer {
            text,
            source,
            pos: 0,
            line: if source == Source::File { 1 } else { 0 },
            line_start: 0,
            start: 0,
            start_line: 1,
            buf_end: text.len().min(BUFFER),
            quote: None,
        }
    }

    pub fn text(&self) -> &'a [u8] {
        self.text
    }

    /// Reads one statement's words into `words` (cleared first).
    pub fn read(&mut self, words: &mut Vec<Token>) -> Result<Read, LexError> {
        words.clear();
        // A new call of nginx's function: `start` is where it begins, and a refill right here
        // keeps nothing.
        self.start = self.pos;
        self.start_line = self.line;
        loop {
            let p = self.pos;
            let Some(&c) = self.text.get(p) else {
                if !words.is_empty() {
                    return Err(self.eof_error());
                }
                self.check_buffer(p)?;
                return Ok(self.read_at(End::Eof, p));
            };
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => self.blank_run()?,
                b';' | b'{' | b'}' => {
                    self.set_start(p, p)?;
                    let end = match c {
                        b';' => End::Semicolon,
                        b'{' => End::BlockStart,
                        _ => End::BlockEnd,
                    };
                    // `;` or `{` need words before them, `}` must have none.
                    if words.is_empty() == (end != End::BlockEnd) {
                        return Err(self.unexpected(p));
                    }
                    self.pos = p + 1;
                    return Ok(self.read_at(end, p));
                }
                b'#' => {
                    self.set_start(p, p)?;
                    let (rest, _) = to_line_end(&self.text[p..]).unwrap_or((&[], &[]));
                    self.pos = self.text.len() - rest.len();
                }
                b'"' | b'\'' => {
                    self.set_start(p, p + 1)?;
                    if let Some(read) = self.quoted(c, words)? {
                        return Ok(read);
                    }
                }
                _ => {
                    self.set_start(p, p)?;
                    if let Some(read) = self.bare(words)? {
                        return Ok(read);
                    }
                }
            }
        }
    }

    /// Whitespace between words: nginx moves `start` to each byte, so a refill during the run
    /// keeps just one byte.
    fn blank_run(&mut self) -> Result<(), LexError> {
        let a = self.pos;
        self.set_start(a, a)?;
        let (rest, run) = blanks(&self.text[a..]).unwrap_or((&self.text[a..], &[]));
        let b = self.text.len() - rest.len();
        if self.source == Source::File {
            while self.buf_end < self.text.len() && self.buf_end > a && self.buf_end <= b {
                self.buf_end = (self.buf_end - 1 + BUFFER).min(self.text.len());
            }
        }
        self.start = b - 1;
        self.advance_lines(a, run);
        self.pos = b;
        Ok(())
    }

    /// A bare word from `self.pos` (its first byte is known not to be blank, `;`, `{`, `}`,
    /// `#` or a quote). Returns the read when the word ended the statement.
    fn bare(&mut self, words: &mut Vec<Token>) -> Result<Option<Read>, LexError> {
        let p = self.pos;
        let (line, line_start) = (self.line, self.line_start);
        let mut q = p;
        let mut variable = false;
        loop {
            let Some(&b) = self.text.get(q) else {
                return Err(self.eof_error());
            };
            if variable && b == b'{' {
                q += 1;
                continue;
            }
            variable = false;
            match b {
                b'\\' if q + 1 >= self.text.len() => return Err(self.eof_error()),
                b'\\' => q += 2,
                b'$' => {
                    variable = true;
                    q += 1;
                }
                b';' | b'{' if q > p => {
                    words.push(Token {
                        span: p..q,
                        content: p..q,
                        quoted: false,
                        line,
                        line_start,
                    });
                    self.consume_to(q);
                    self.check_buffer(q)?;
                    self.pos = q + 1;
                    let end = if b == b';' {
                        End::Semicolon
                    } else {
                        End::BlockStart
                    };
                    return Ok(Some(self.read_at(end, q)));
                }
                _ if is_blank(b) && q > p => {
                    words.push(Token {
                        span: p..q,
                        content: p..q,
                        quoted: false,
                        line,
                        line_start,
                    });
                    // The blank that ended the word was read without moving `start`.
                    self.consume_to(q + 1);
                    return Ok(None);
                }
                _ => {
                    // The first byte, whatever it is, or a run of ordinary bytes.
                    q += match plain_bare(&self.text[q..]) {
                        Ok((_, run)) if q > p => run.len(),
                        _ => 1,
                    };
                }
            }
        }
    }

    /// A quoted word whose opening quote is at `self.pos`.
    fn quoted(&mut self, quote: u8, words: &mut Vec<Token>) -> Result<Option<Read>, LexError> {
        let p = self.pos;
        let (line, line_start) = (self.line, self.line_start);
        let mut q = p + 1;
        let close = loop {
            match self.text.get(q) {
                None => {
                    self.quote = Some((quote, usize::MAX));
                    return Err(self.eof_error());
                }
                Some(&b'\\') if q + 1 >= self.text.len() => {
                    self.quote = Some((quote, usize::MAX));
                    return Err(self.eof_error());
                }
                Some(&b'\\') => q += 2,
                Some(&b) if b == quote => break q,
                Some(_) => {
                    q += plain_quoted(quote)(&self.text[q..]).map_or(1, |(_, run)| run.len());
                }
            }
        };
        self.quote = Some((quote, close));
        words.push(Token {
            span: p..close + 1,
            content: p + 1..close,
            quoted: true,
            line,
            line_start,
        });
        let next = close + 1;
        self.consume_to(next);
        match self.text.get(next) {
            None => Err(self.eof_error()),
            Some(&b) if is_blank(b) => {
                self.consume_to(next + 1);
                Ok(None)
            }
            Some(&b';') | Some(&b'{') => {
                self.check_buffer(next)?;
                self.pos = next + 1;
                let end = if self.text[next] == b';' {
                    End::Semicolon
                } else {
                    End::BlockStart
                };
                Ok(Some(self.read_at(end, next)))
            }
            // `")"` as in `if ($a = "b")`: the parenthesis starts the next word.
            Some(&b')') => {
                self.set_start(next, next)?;
                self.bare(words)
            }
            Some(_) => {
                self.check_buffer(next)?;
                Err(self.unexpected(next))
            }
        }
    }

    /// Moves to `to`, counting the lines of what was passed over.
    fn consume_to(&mut self, to: usize) {
        let from = self.pos;
        let bytes = &self.text[from..to];
        self.advance_lines(from, bytes);
        self.pos = to;
    }

    fn advance_lines(&mut self, from: usize, bytes: &[u8]) {
        let lines = count_lf(bytes);
        if lines > 0 {
            self.line += lines;
            if let Some(i) = bytes.iter().rposition(|&b| b == b'\n') {
                self.line_start = from + i + 1;
            }
        }
    }

    fn read_at(&self, end: End, at: usize) -> Read {
        Read {
            end,
            at,
            line: self.line,
            line_start: self.line_start,
        }
    }

    /// nginx sets `start` while it reads between words; first it may have refilled its buffer
    /// with the old `start`.
    fn set_start(&mut self, at: usize, start: usize) -> Result<(), LexError> {
        self.check_buffer(at)?;
        self.start = start;
        self.start_line = self.line;
        Ok(())
    }

    /// Replays the buffer refills nginx makes before reading the byte at `at`: a refill that
    /// must keep a full buffer's worth from `start` is the "too long parameter" error.
    fn check_buffer(&mut self, at: usize) -> Result<(), LexError> {
        if self.source == Source::Param {
            return Ok(());
        }
        while self.buf_end < self.text.len() && self.buf_end <= at {
            if self.buf_end - self.start == BUFFER {
                return Err(self.too_long());
            }
            self.buf_end = (self.start + BUFFER).min(self.text.len());
        }
        Ok(())
    }

    fn too_long(&self) -> LexError {
        let message = match self.quote {
            // The refill came before the closing quote was read.
            Some((quote, close)) if self.buf_end <= close => format!(
                "too long parameter, probably missing terminating \"{}\" character",
                quote as char
            ),
            _ => {
                let shown = self
                    .text
                    .get(self.start..self.start + 10)
                    .unwrap_or_default();
                format!(
                    "too long parameter \"{}...\" started",
                    String::from_utf8_lossy(shown)
                )
            }
        };
        LexError {
            message,
            line: self.start_line,
            span: self.start..self.buf_end,
            line_start: self.line_start_of(self.start),
        }
    }

    fn line_start_of(&self, offset: usize) -> usize {
        self.text[..offset]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
    }

    /// The input ended inside a statement (or a refill before the end failed first).
    fn eof_error(&mut self) -> LexError {
        let len = self.text.len();
        if let Err(e) = self.check_buffer(len) {
            return e;
        }
        self.consume_to(len);
        let message = match self.source {
            Source::File => "unexpected end of file, expecting \";\" or \"}\"",
            Source::Param => "unexpected end of parameter, expecting \";\"",
        };
        LexError {
            message: message.to_string(),
            line: self.line,
            span: len..len,
            line_start: self.line_start,
        }
    }

    fn unexpected(&mut self, at: usize) -> LexError {
        self.consume_to(at);
        let byte = self.text[at];
        LexError {
            message: format!("unexpected \"{}\"", String::from_utf8_lossy(&[byte])),
            line: self.line,
            span: at..at + 1,
            line_start: self.line_start,
        }
    }
}

/// A word's value as nginx stores it: the escapes resolved the way ngx_conf_read_token copies
/// a word (for bare and quoted words alike).
pub fn unescape(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            match raw.get(i + 1) {
                Some(&c @ (b'"' | b'\'' | b'\\')) => {
                    out.push(c);
                    i += 2;
                    continue;
                }
                Some(b't') => {
                    out.push(b'\t');
                    i += 2;
                    continue;
                }
                Some(b'r') => {
                    out.push(b'\r');
                    i += 2;
                    continue;
                }
                Some(b'n') => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Reads = Vec<(Vec<String>, End)>;

    /// Every read of `text` as (words, end), or the first error as (message, line).
    fn lex(text: &str) -> Result<Reads, (String, u32)> {
        lex_bytes(text.as_bytes(), Source::File)
    }

    fn lex_bytes(text: &[u8], source: Source) -> Result<Reads, (String, u32)> {
        let mut lexer = Lexer::new(text, source);
        let mut words = Vec::new();
        let mut out = Vec::new();
        loop {
            let read = lexer.read(&mut words).map_err(|e| (e.message, e.line))?;
            let values = words
                .iter()
                .map(|t| String::from_utf8_lossy(&unescape(&text[t.content.clone()])).into_owned())
                .collect();
            out.push((values, read.end));
            if read.end == End::Eof {
                return Ok(out);
            }
        }
    }

    fn words(text: &str) -> Vec<Vec<String>> {
        lex(text)
            .unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
            .into_iter()
            .filter(|(w, _)| !w.is_empty())
            .map(|(w, _)| w)
            .collect()
    }

    fn error(text: &str) -> (String, u32) {
        lex(text).expect_err(text)
    }

    fn v(items: &[&[&str]]) -> Vec<Vec<String>> {
        items
            .iter()
            .map(|w| w.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn statements_end_at_semicolon_and_brace() {
        let reads = lex("a b;c {\n}").unwrap();
        let ends: Vec<End> = reads.iter().map(|r| r.1).collect();
        assert_eq!(
            ends,
            [End::Semicolon, End::BlockStart, End::BlockEnd, End::Eof]
        );
        assert_eq!(words("a b;c {\n}"), v(&[&["a", "b"], &["c"]]));
    }

    #[test]
    fn blanks_are_space_tab_cr_lf_only() {
        assert_eq!(words("a\tb\r\nc;"), v(&[&["a", "b", "c"]]));
        assert_eq!(words("a\x0bb\x0cc;"), v(&[&["a\x0bb\x0cc"]]));
    }

    #[test]
    fn close_brace_does_not_end_a_bare_word() {
        assert_eq!(words("return 200 a};"), v(&[&["return", "200", "a}"]]));
        assert_eq!(error("a }"), ("unexpected \"}\"".into(), 1));
    }

    #[test]
    fn comments_only_at_a_word_start() {
        assert_eq!(words("a b#c;"), v(&[&["a", "b#c"]]));
        assert_eq!(words("a # c;\nb;"), v(&[&["a", "b"]]));
        assert_eq!(words("# only\n"), Vec::<Vec<String>>::new());
        assert_eq!(words("#a;{}\"'"), Vec::<Vec<String>>::new());
    }

    #[test]
    fn quotes_only_at_a_word_start() {
        assert_eq!(words("a b\"c\"d;"), v(&[&["a", "b\"c\"d"]]));
        assert_eq!(words("a 'b c' \"d;e\";"), v(&[&["a", "b c", "d;e"]]));
        assert_eq!(words("a \"\";"), v(&[&["a", ""]]));
        assert_eq!(words("a \"{\" '}';"), v(&[&["a", "{", "}"]]));
    }

    #[test]
    fn after_a_closing_quote() {
        assert_eq!(error("a \"b\"c;"), ("unexpected \"c\"".into(), 1));
        assert_eq!(error("a\n'b'\"c\";"), ("unexpected \"\"\"".into(), 2));
        assert_eq!(error("a \"b\"};"), ("unexpected \"}\"".into(), 1));
        assert_eq!(error("a \"b\"#;"), ("unexpected \"#\"".into(), 1));
        assert_eq!(
            words("if ($a = \"b\") {"),
            v(&[&["if", "($a", "=", "b", ")"]])
        );
        assert_eq!(words("a \"b\")c;"), v(&[&["a", "b", ")c"]]));
        assert_eq!(words("a \"b\";c \"d\"{"), v(&[&["a", "b"], &["c", "d"]]));
    }

    #[test]
    fn escapes_resolve_in_every_word() {
        assert_eq!(
            words(r#"a "b\"c" 'd\'e' "f\\g";"#),
            v(&[&["a", "b\"c", "d'e", "f\\g"]])
        );
        assert_eq!(words(r#"a "\t\r\n";"#), v(&[&["a", "\t\r\n"]]));
        assert_eq!(words(r#"a b\nc d\"e;"#), v(&[&["a", "b\nc", "d\"e"]]));
        assert_eq!(words(r#"a "\d\$";"#), v(&[&["a", "\\d\\$"]]));
        // The backslash keeps the next byte in the word, whatever it is.
        assert_eq!(words("a b\\;c\\ d;"), v(&[&["a", "b\\;c\\ d"]]));
        assert_eq!(words("a \\{;"), v(&[&["a", "\\{"]]));
        assert_eq!(words("a \"b\\\"\";"), v(&[&["a", "b\""]]));
    }

    #[test]
    fn dollar_brace_does_not_end_a_word() {
        assert_eq!(words("set $a ${b}c;"), v(&[&["set", "$a", "${b}c"]]));
        assert_eq!(words("a x${{{y;"), v(&[&["a", "x${{{y"]]));
        assert_eq!(words("a $${b;"), v(&[&["a", "$${b"]]));
        // Only right after `$`: otherwise `{` opens a block.
        assert_eq!(
            lex("a $x{").unwrap()[0],
            (vec!["a".to_string(), "$x".to_string()], End::BlockStart)
        );
        assert_eq!(
            lex("a $\\x{").unwrap()[0].1,
            End::BlockStart,
            "a backslash ends the variable"
        );
    }

    #[test]
    fn misplaced_terminators() {
        assert_eq!(error(";"), ("unexpected \";\"".into(), 1));
        assert_eq!(error("\n\n{"), ("unexpected \"{\"".into(), 3));
        assert_eq!(lex("}").unwrap()[0].1, End::BlockEnd);
    }

    #[test]
    fn end_of_input() {
        let eof = "unexpected end of file, expecting \";\" or \"}\"".to_string();
        assert_eq!(error("a"), (eof.clone(), 1));
        assert_eq!(error("a\n"), (eof.clone(), 2));
        assert_eq!(error("a \"b\n\n"), (eof.clone(), 3));
        assert_eq!(error("a \"b\""), (eof.clone(), 1));
        assert_eq!(error("a\\"), (eof.clone(), 1));
        assert_eq!(error("a # comment"), (eof, 1));
        assert_eq!(lex("").unwrap(), vec![(vec![], End::Eof)]);
        assert_eq!(lex("# c").unwrap(), vec![(vec![], End::Eof)]);
        assert_eq!(
            lex_bytes(b"daemon off", Source::Param),
            Err(("unexpected end of parameter, expecting \";\"".into(), 0))
        );
    }

    #[test]
    fn lines_count_every_lf() {
        let mut lexer = Lexer::new(b"a\n\"b\nc\" \\\nd;\ne;", Source::File);
        let mut w = Vec::new();
        let read = lexer.read(&mut w).unwrap();
        assert_eq!(w.iter().map(|t| t.line).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(read.line, 4);
        lexer.read(&mut w).unwrap();
        assert_eq!((w[0].line, w[0].line_start), (5, 13));
        let mut param = Lexer::new(b"a;\nb;", Source::Param);
        param.read(&mut w).unwrap();
        assert_eq!(param.read(&mut w).unwrap().line, 1, "-g lines count from 0");
    }

    #[test]
    fn spans_cover_quotes_and_content_excludes_them() {
        let mut lexer = Lexer::new(b"ab 'cd';", Source::File);
        let mut w = Vec::new();
        lexer.read(&mut w).unwrap();
        assert_eq!((w[1].span.clone(), w[1].content.clone()), (3..7, 4..6));
        assert!(w[1].quoted && !w[0].quoted);
    }

    #[test]
    fn any_byte_may_be_in_a_word() {
        let text = b"a \xff\x00b \"\xfe\";";
        let reads = lex_bytes(text, Source::File).unwrap();
        assert_eq!(reads[0].0.len(), 3);
    }

    #[test]
    fn a_word_longer_than_the_buffer() {
        let long = "x".repeat(5000);
        assert_eq!(
            error(&format!("a\n{long};")),
            ("too long parameter \"xxxxxxxxxx...\" started".into(), 2)
        );
        assert_eq!(
            error(&format!("a \"\n{long}\";")),
            (
                "too long parameter, probably missing terminating \"\"\" character".into(),
                1
            )
        );
        assert_eq!(
            error(&format!("a '{long}")),
            (
                "too long parameter, probably missing terminating \"'\" character".into(),
                1
            )
        );
        assert_eq!(
            error(&format!("# {long}\na;")),
            ("too long parameter \"# xxxxxxxx...\" started".into(), 1)
        );
        // 4095 bytes fit; the end of the input does not save a longer word or comment, as a
        // refill comes first.
        assert!(lex(&format!("a {};", "x".repeat(4095))).is_ok());
        for text in [
            format!("a {}", "x".repeat(5000)),
            format!("# {}", "x".repeat(5000)),
        ] {
            assert!(lex(&text).is_err_and(|e| e.0.contains("too long")));
        }
        // But a word that ends within the last buffer is read whole.
        assert!(lex(&format!("# {}", "x".repeat(4093))).is_ok());
    }

    #[test]
    fn buffer_edges_follow_earlier_words() {
        // A word of 4095 bytes fits wherever it starts; 4096 bytes do not fit once the
        // buffer has to be refilled in the middle of it.
        for lead in [0usize, 1, 100, 4000, 4095, 4096, 8000] {
            let pad = format!("{}a;", " ".repeat(lead));
            let ok = format!("{pad} {};\nb;", "y".repeat(4095));
            assert!(lex(&ok).is_ok(), "lead {lead}");
            let bad = format!("{pad} {};\nb;", "y".repeat(4096));
            assert!(lex(&bad).is_err(), "lead {lead}");
        }
    }

    #[test]
    fn unescape_is_nginx_copy_loop() {
        assert_eq!(&*unescape(br#"a\"b\'c\\d"#), br#"a"b'c\d"#);
        assert_eq!(&*unescape(br"\t\r\n\x"), b"\t\r\n\\x");
        assert_eq!(&*unescape(br"\\n"), br"\n");
        assert!(matches!(unescape(b"plain"), Cow::Borrowed(_)));
    }
}

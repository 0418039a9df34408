//! The shell-word lexer: an ELB script as `sh` would split it into simple commands and words,
//! before any expansion.
//!
//! Scripts come from terminals, wikis and blogs, so the lexer is lenient where a shell would be
//! strict and careful to remember where each character came from: every literal byte of a word
//! keeps its offset in the source, so that a diagnostic about part of an option value
//! (`cert-id=...` inside a quoted `--listener`) can point at exactly that part.
//!
//! What it knows of the shell: blanks, `\` line continuations, `#` comments at a word start,
//! single and double quotes, backslash escapes, `$NAME`, `${NAME}`, `${NAME:-default}`, command
//! substitutions (`` `...` `` and `$(...)`, kept but never run), the separators `;`, `&`, `&&`,
//! `||`, `|`, `(`, `)` and newline, and redirections (dropped with their target). Characters a
//! blog engine substitutes are read as what the author typed: an en- or em-dash at a word start
//! as `--`, curly double quotes as `"`, a curly opening single quote as `'`.

use std::ops::Range;

use nom::branch::alt;
use nom::bytes::complete::{tag, take_till, take_while, take_while1};
use nom::character::complete::{anychar, satisfy};
use nom::combinator::{recognize, value};
use nom::sequence::{delimited, pair};
use nom::{IResult, Parser};

/// A lexed script.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lexed {
    pub commands: Vec<Simple>,
    pub comments: Vec<Comment>,
    pub normalized: Vec<Normalized>,
}

/// One simple command: the words between two separators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Simple {
    pub words: Vec<Word>,
    /// From the first word's start to the last word's end.
    pub span: Range<usize>,
    /// What came before it: a newline, `;`, `&&` ... or the start of the script.
    pub after: Separator,
    /// A word that could not be finished (an unterminated quote): the command ends there.
    pub error: Option<LexError>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Separator {
    Start,
    Newline,
    Semicolon,
    And,
    Or,
    Pipe,
    Background,
    Paren,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexError {
    pub message: String,
    pub span: Range<usize>,
}

/// A `#` comment: where the `#` is, and the text after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    pub span: Range<usize>,
}

/// A typographic character read as the ASCII its author meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Normalized {
    pub span: Range<usize>,
    pub found: char,
    pub read_as: &'static str,
}

/// A word before expansion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub parts: Vec<Part>,
    pub span: Range<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Literal text; `at[i]` is the source offset of `text`'s byte `i`.
    Text {
        text: String,
        at: Vec<usize>,
        quoted: bool,
    },
    /// `$NAME`, `${NAME}` or `${NAME:-default}` (`default` holds the literal default).
    Var {
        name: String,
        span: Range<usize>,
        default: Option<String>,
    },
    /// `` `...` `` or `$(...)`: a command the compiler cannot run.
    Subst { span: Range<usize> },
}

impl Word {
    /// The word's text when it is all literal and unquoted (command names, options).
    pub fn bare(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text {
                text,
                quoted: false,
                ..
            }] => Some(text),
            _ => None,
        }
    }

    /// The literal text the word starts with, before any quote or variable.
    pub fn leading_text(&self) -> &str {
        match self.parts.first() {
            Some(Part::Text {
                text,
                quoted: false,
                ..
            }) => text,
            _ => "",
        }
    }

    /// The word as written, for reports: literal parts and `$NAME` references.
    pub fn display(&self) -> String {
        let mut s = String::new();
        for p in &self.parts {
            match p {
                Part::Text { text, .. } => s.push_str(text),
                Part::Var { name, .. } => {
                    s.push_str("${");
                    s.push_str(name);
                    s.push('}');
                }
                Part::Subst { .. } => s.push_str("`...`"),
            }
        }
        s
    }

    /// The rest of the word after its first `skip` literal bytes (the value of `--opt=value`).
    /// Returns `None` when the first part is not literal text that long.
    pub fn tail(&self, skip: usize) -> Option<Word> {
        let Some(Part::Text { text, at, quoted }) = self.parts.first() else {
            return None;
        };
        if skip > text.len() || !text.is_char_boundary(skip) {
            return None;
        }
        let mut parts = Vec::new();
        if skip < text.len() {
            parts.push(Part::Text {
                text: text[skip..].to_string(),
                at: at[skip..].to_vec(),
                quoted: *quoted,
            });
        }
        parts.extend(self.parts[1..].iter().cloned());
        let start = at.get(skip).copied().unwrap_or(self.span.end);
        Some(Word {
            parts,
            span: start..self.span.end,
        })
    }
}

/// Lexes a whole script.
pub fn lex(src: &str) -> Lexed {
    lex_range(src, 0..src.len())
}

/// Lexes `src[range]` with offsets relative to `src` (used to read the command after a `# `
/// prompt in a pasted root session).
pub fn lex_range(src: &str, range: Range<usize>) -> Lexed {
    let mut lexer = Lexer {
        src: &src[..range.end],
        pos: range.start,
        out: Lexed::default(),
    };
    lexer.run();
    lexer.out
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    out: Lexed,
}

/// Characters that end a bare run of word characters.
fn is_special(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t'
            | '\r'
            | '\n'
            | ';'
            | '&'
            | '|'
            | '('
            | ')'
            | '<'
            | '>'
            | '\''
            | '"'
            | '\\'
            | '$'
            | '`'
    ) || double_quote_like(c)
        || c == '\u{2018}'
}

fn double_quote_like(c: char) -> bool {
    matches!(
        c,
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}'
    )
}

fn dash_like(c: char) -> Option<&'static str> {
    match c {
        '\u{2013}' | '\u{2014}' | '\u{2015}' => Some("--"),
        '\u{2010}' | '\u{2011}' | '\u{2212}' => Some("-"),
        _ => None,
    }
}

fn blanks(i: &str) -> IResult<&str, &str> {
    recognize(nom::multi::many0_count(alt((
        take_while1(|c| c == ' ' || c == '\t' || c == '\r'),
        tag("\\\n"),
        tag("\\\r\n"),
    ))))
    .parse(i)
}

fn separator(i: &str) -> IResult<&str, Separator> {
    alt((
        value(Separator::And, tag("&&")),
        value(Separator::Or, tag("||")),
        value(Separator::Semicolon, tag(";;")),
        value(Separator::Semicolon, tag(";")),
        value(Separator::Pipe, tag("|")),
        value(Separator::Background, tag("&")),
        value(Separator::Newline, tag("\n")),
        value(Separator::Paren, alt((tag("("), tag(")")))),
    ))
    .parse(i)
}

fn redirect(i: &str) -> IResult<&str, &str> {
    recognize(pair(
        alt((
            tag(">>"),
            tag(">&"),
            tag("<<"),
            tag("<&"),
            tag(">"),
            tag("<"),
        )),
        take_while(|c| c == '-'),
    ))
    .parse(i)
}

fn var_name(i: &str) -> IResult<&str, &str> {
    alt((
        recognize(pair(
            satisfy(|c| c.is_ascii_alphabetic() || c == '_'),
            take_while(|c: char| c.is_ascii_alphanumeric() || c == '_'),
        )),
        recognize(satisfy(|c| c.is_ascii_digit() || "@*#?$!-".contains(c))),
    ))
    .parse(i)
}

/// `${NAME}` or `${NAME:-default}` / `${NAME-default}`: the name and the default text.
fn braced_var(i: &str) -> IResult<&str, (&str, Option<&str>)> {
    delimited(
        tag("${"),
        pair(
            var_name,
            nom::combinator::opt(nom::sequence::preceded(
                alt((tag(":-"), tag("-"), tag(":="), tag("="))),
                take_till(|c| c == '}'),
            )),
        ),
        tag("}"),
    )
    .parse(i)
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn advance_to(&mut self, rest: &str) {
        self.pos = self.src.len() - rest.len();
    }

    fn run(&mut self) {
        let mut after = Separator::Start;
        loop {
            self.skip_blanks();
            if self.rest().is_empty() {
                return;
            }
            if let Ok((rest, sep)) = separator(self.rest()) {
                self.advance_to(rest);
                after = sep;
                continue;
            }
            if self.rest().starts_with('#') {
                self.comment();
                continue;
            }
            let command = self.simple(after);
            if let Some(e) = &command.error {
                // Resume on the line after the one the broken word started on: a stray quote
                // in pasted prose must not swallow the commands after it.
                let from = e.span.start;
                self.pos = self.src[from..]
                    .find('\n')
                    .map_or(self.src.len(), |i| from + i);
            }
            self.out.commands.push(command);
        }
    }

    fn skip_blanks(&mut self) {
        if let Ok((rest, _)) = blanks(self.rest()) {
            self.advance_to(rest);
        }
    }

    fn comment(&mut self) {
        let start = self.pos;
        let end = self
            .rest()
            .find('\n')
            .map_or(self.src.len(), |i| self.pos + i);
        self.out.comments.push(Comment { span: start..end });
        self.pos = end;
    }

    fn simple(&mut self, after: Separator) -> Simple {
        let mut words = Vec::new();
        let start = self.pos;
        let mut end = self.pos;
        let mut error = None;
        let mut drop_next = false;
        loop {
            self.skip_blanks();
            let rest = self.rest();
            if rest.is_empty() || separator(rest).is_ok() {
                break;
            }
            if rest.starts_with('#') {
                self.comment();
                break;
            }
            if let Ok((r, _)) = redirect(rest) {
                // A file descriptor number written against the operator (`2>`) belongs to it.
                let fd = words.last().is_some_and(|w: &Word| {
                    w.span.end == self.pos
                        && w.bare()
                            .is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()))
                });
                if fd {
                    words.pop();
                }
                self.advance_to(r);
                drop_next = true;
                continue;
            }
            match self.word() {
                Ok(w) => {
                    end = w.span.end;
                    if drop_next {
                        drop_next = false;
                    } else {
                        words.push(w);
                    }
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        Simple {
            words,
            span: start..end,
            after,
            error,
        }
    }

    /// One word: bare runs, quoted strings, escapes and expansions, up to a blank or separator.
    fn word(&mut self) -> Result<Word, LexError> {
        let start = self.pos;
        let mut builder = WordBuilder::default();
        // A blog's en-dash where the author typed `--`.
        if let Some(c) = self.rest().chars().next() {
            if let Some(read_as) = dash_like(c) {
                let len = c.len_utf8();
                self.note(self.pos..self.pos + len, c, read_as);
                for _ in 0..read_as.len() {
                    builder.literal('-', self.pos, false);
                }
                self.pos += len;
            }
        }
        loop {
            let rest = self.rest();
            let Some(c) = rest.chars().next() else { break };
            if matches!(
                c,
                ' ' | '\t' | '\r' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>'
            ) {
                break;
            }
            match c {
                '\'' | '\u{2018}' => self.single_quoted(&mut builder, c)?,
                '"' => self.double_quoted(&mut builder, c)?,
                c if double_quote_like(c) => self.double_quoted(&mut builder, c)?,
                '\\' => {
                    let mut chars = rest.chars();
                    chars.next();
                    match chars.next() {
                        Some('\n') => self.pos += 2,
                        Some(e) => {
                            builder.text(e, self.pos + 1, false);
                            self.pos += 1 + e.len_utf8();
                        }
                        None => self.pos += 1,
                    }
                }
                '$' | '`' => self.expansion(&mut builder, false)?,
                _ => {
                    let (r, run) = take_while1::<_, _, nom::error::Error<&str>>(|c| !is_special(c))
                        .parse(rest)
                        .unwrap_or((&rest[c.len_utf8()..], &rest[..c.len_utf8()]));
                    let base = self.pos;
                    for (i, ch) in run.char_indices() {
                        builder.text(ch, base + i, false);
                    }
                    self.advance_to(r);
                }
            }
        }
        Ok(builder.finish(start..self.pos))
    }

    fn single_quoted(&mut self, b: &mut WordBuilder, open: char) -> Result<(), LexError> {
        let start = self.pos;
        if open != '\'' {
            self.note(start..start + open.len_utf8(), open, "'");
        }
        self.pos += open.len_utf8();
        b.mark_quoted();
        loop {
            let rest = self.rest();
            let Ok((r, c)) = anychar::<_, nom::error::Error<&str>>(rest) else {
                return Err(LexError {
                    message: format!("unterminated quote {open}"),
                    span: start..start + open.len_utf8(),
                });
            };
            if c == '\'' || (c == '\u{2019}' && open == '\u{2018}') {
                if c != '\'' {
                    self.note(self.pos..self.pos + c.len_utf8(), c, "'");
                }
                self.advance_to(r);
                return Ok(());
            }
            b.text(c, self.pos, true);
            self.advance_to(r);
        }
    }

    fn double_quoted(&mut self, b: &mut WordBuilder, open: char) -> Result<(), LexError> {
        let start = self.pos;
        if open != '"' {
            self.note(start..start + open.len_utf8(), open, "\"");
        }
        self.pos += open.len_utf8();
        b.mark_quoted();
        loop {
            let rest = self.rest();
            let Some(c) = rest.chars().next() else {
                return Err(LexError {
                    message: format!("unterminated quote {open}"),
                    span: start..start + open.len_utf8(),
                });
            };
            match c {
                '"' => {
                    self.pos += 1;
                    return Ok(());
                }
                c if double_quote_like(c) => {
                    self.note(self.pos..self.pos + c.len_utf8(), c, "\"");
                    self.pos += c.len_utf8();
                    return Ok(());
                }
                '\\' => {
                    let next = rest[1..].chars().next();
                    match next {
                        Some('\n') => self.pos += 2,
                        Some(e @ ('$' | '`' | '"' | '\\')) => {
                            b.text(e, self.pos + 1, true);
                            self.pos += 2;
                        }
                        _ => {
                            b.text('\\', self.pos, true);
                            self.pos += 1;
                        }
                    }
                }
                '$' | '`' => self.expansion(b, true)?,
                c => {
                    b.text(c, self.pos, true);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    /// `$NAME`, `${NAME}`, `$(...)` or `` `...` ``; a `$` that starts none of them is literal.
    fn expansion(&mut self, b: &mut WordBuilder, quoted: bool) -> Result<(), LexError> {
        let start = self.pos;
        let rest = self.rest();
        if let Ok((r, (name, default))) = braced_var(rest) {
            self.advance_to(r);
            b.var(name, start..self.pos, default.map(str::to_string));
            return Ok(());
        }
        if rest.starts_with("${") {
            return Err(LexError {
                message: "bad substitution: \"${\" without a matching \"}\"".into(),
                span: start..start + 2,
            });
        }
        if rest.starts_with("$(") || rest.starts_with('`') {
            let end = substitution_end(rest).ok_or_else(|| LexError {
                message: "unterminated command substitution".into(),
                span: start..start + 1,
            })?;
            self.pos += end;
            b.subst(start..self.pos);
            return Ok(());
        }
        if let Ok((r, name)) = var_name(&rest[1..]) {
            self.advance_to(r);
            b.var(name, start..self.pos, None);
            return Ok(());
        }
        b.text('$', start, quoted);
        self.pos += 1;
        Ok(())
    }

    fn note(&mut self, span: Range<usize>, found: char, read_as: &'static str) {
        self.out.normalized.push(Normalized {
            span,
            found,
            read_as,
        });
    }
}

/// The length of `$(...)` (nested parentheses counted) or `` `...` `` at the start of `s`.
fn substitution_end(s: &str) -> Option<usize> {
    if let Some(body) = s.strip_prefix('`') {
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '`' if !escaped => return Some(i + 2),
                _ => escaped = false,
            }
        }
        return None;
    }
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[derive(Default)]
struct WordBuilder {
    parts: Vec<Part>,
    quoted_pending: bool,
}

impl WordBuilder {
    fn mark_quoted(&mut self) {
        // An empty quoted string ("") is still a word; make sure it has a part.
        self.quoted_pending = true;
    }

    fn literal(&mut self, c: char, at: usize, quoted: bool) {
        self.text(c, at, quoted);
    }

    fn text(&mut self, c: char, at: usize, quoted: bool) {
        if let Some(Part::Text {
            text,
            at: offsets,
            quoted: q,
        }) = self.parts.last_mut()
        {
            if *q == quoted {
                for i in 0..c.len_utf8() {
                    offsets.push(at + i);
                }
                text.push(c);
                return;
            }
        }
        self.parts.push(Part::Text {
            text: c.to_string(),
            at: (0..c.len_utf8()).map(|i| at + i).collect(),
            quoted,
        });
    }

    fn var(&mut self, name: &str, span: Range<usize>, default: Option<String>) {
        self.parts.push(Part::Var {
            name: name.to_string(),
            span,
            default,
        });
    }

    fn subst(&mut self, span: Range<usize>) {
        self.parts.push(Part::Subst { span });
    }

    fn finish(mut self, span: Range<usize>) -> Word {
        if self.parts.is_empty() && self.quoted_pending {
            self.parts.push(Part::Text {
                text: String::new(),
                at: Vec::new(),
                quoted: true,
            });
        }
        Word {
            parts: self.parts,
            span,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(src: &str) -> Vec<Vec<String>> {
        lex(src)
            .commands
            .iter()
            .map(|c| c.words.iter().map(Word::display).collect())
            .collect()
    }

    #[test]
    fn splits_commands_at_newlines_and_operators() {
        assert_eq!(
            words("a b\nc; d && e || f | g & h"),
            vec![
                vec!["a", "b"],
                vec!["c"],
                vec!["d"],
                vec!["e"],
                vec!["f"],
                vec!["g"],
                vec!["h"]
            ]
        );
        let l = lex("printf \"x: \" &&  elb-create-lb a");
        assert_eq!(l.commands[1].after, Separator::And);
    }

    #[test]
    fn quotes_escapes_and_continuations() {
        assert_eq!(
            words("elb-x 'a b' \"c d\" e\\ f \\\n  --g=\"h i\""),
            vec![vec!["elb-x", "a b", "c d", "e f", "--g=h i"]]
        );
        assert_eq!(words("x \"a\\\"b\\$c\\q\""), vec![vec!["x", "a\"b$c\\q"]]);
        assert_eq!(words("x ''"), vec![vec!["x", ""]]);
    }

    #[test]
    fn comments_only_at_word_start() {
        let l = lex("a b#c # d e\n# whole line\nf");
        assert_eq!(
            l.commands
                .iter()
                .map(|c| c.words.iter().map(Word::display).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            vec![vec!["a", "b#c"], vec!["f"]]
        );
        assert_eq!(l.comments.len(), 2);
    }

    #[test]
    fn variables_keep_their_place() {
        let l = lex("x ${ELB} $A/b \"$C\" ${D:-dflt} $1");
        let w = &l.commands[0].words;
        assert_eq!(
            w[1].parts,
            vec![Part::Var {
                name: "ELB".into(),
                span: 2..8,
                default: None
            }]
        );
        assert!(matches!(&w[2].parts[1], Part::Text { text, .. } if text == "/b"));
        assert!(matches!(&w[4].parts[0], Part::Var { default: Some(d), .. } if d == "dflt"));
        assert!(matches!(&w[5].parts[0], Part::Var { name, .. } if name == "1"));
        // A lone `$` is literal.
        assert_eq!(words("echo $ x"), vec![vec!["echo", "$", "x"]]);
    }

    #[test]
    fn command_substitutions_are_kept_not_run() {
        let l = lex("ids=`cat hosts.txt | sed -e's% .*%,%'` y=$(a (b) c)");
        let w = &l.commands[0].words;
        assert_eq!(w.len(), 2);
        assert!(matches!(&w[0].parts[1], Part::Subst { span } if span.start == 4));
        assert!(matches!(&w[1].parts[1], Part::Subst { .. }));
    }

    #[test]
    fn offsets_point_into_the_source() {
        let src = "elb-x --listener \"protocol=HTTP, cert-id=abc\"";
        let l = lex(src);
        let Part::Text { text, at, .. } = &l.commands[0].words[2].parts[0] else {
            panic!()
        };
        let i = text.find("abc").unwrap();
        assert_eq!(&src[at[i]..at[i] + 3], "abc");
    }

    #[test]
    fn blog_typography_is_read_as_ascii() {
        let src = "elb-create-lb c2 \u{2013}listener \u{201C}protocol=http, lb-port=80\u{2033} \u{2018}x\u{2019}";
        let l = lex(src);
        assert_eq!(
            words(src),
            vec![vec![
                "elb-create-lb",
                "c2",
                "--listener",
                "protocol=http, lb-port=80",
                "x"
            ]]
        );
        assert_eq!(l.normalized.len(), 5);
        assert_eq!(l.normalized[0].read_as, "--");
        // An apostrophe outside quotes stays a letter.
        assert_eq!(
            words("echo don\u{2019}t"),
            vec![vec!["echo", "don\u{2019}t"]]
        );
    }

    #[test]
    fn redirections_are_dropped() {
        assert_eq!(words("elb-x a > /tmp/out 2>&1"), vec![vec!["elb-x", "a"]]);
    }

    #[test]
    fn an_unterminated_quote_ends_only_its_line() {
        let l = lex("echo \"oops\nelb-create-lb x");
        assert!(l.commands[0].error.is_some());
        assert_eq!(l.commands[1].words[0].display(), "elb-create-lb");
    }
}

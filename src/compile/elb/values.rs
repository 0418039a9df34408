//! Expanding words into values, and reading the values ELB options hold: numbers in a range,
//! comma lists, and `key=value, key=value` lists in any order and spacing. Every piece keeps its
//! place in the source, so that a diagnostic points at the offending part of an option.

use std::collections::HashMap;
use std::ops::Range;

use super::words::{Part, Word};
use super::Source;
use crate::compile::diag::Diagnostic;

/// An expanded word: its text, and for each byte the source range it came from (a variable's
/// bytes all point at the `$NAME` that produced them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    pub text: String,
    at: Vec<Range<usize>>,
    /// The whole word in the source.
    pub span: Range<usize>,
}

impl Value {
    /// The source range of `self.text[range]`.
    pub fn source(&self, range: Range<usize>) -> Range<usize> {
        if range.start >= range.end || range.end > self.at.len() {
            return self
                .at
                .get(range.start)
                .map_or(self.span.clone(), |r| r.start..r.start);
        }
        self.at[range.start].start..self.at[range.end - 1].end
    }

    /// Where the text itself is, inside any quotes.
    pub fn text_span(&self) -> Range<usize> {
        self.source(0..self.text.len())
    }

    /// Pieces separated by commas (and blanks), trimmed, empty ones dropped.
    pub fn list(&self) -> Vec<Piece<'_>> {
        split(&self.text, |c| c == ',' || c.is_whitespace())
            .into_iter()
            .map(|r| Piece {
                text: &self.text[r.clone()],
                span: self.source(r),
            })
            .collect()
    }

    /// `key=value` pairs separated by commas, keys lowercased, blanks around either ignored.
    pub fn pairs(&self, src: &Source, what: &str) -> Result<Vec<Pair<'_>>, Diagnostic> {
        let mut out = Vec::new();
        for range in split(&self.text, |c| c == ',') {
            let item = &self.text[range.clone()];
            let Some(eq) = item.find('=') else {
                return Err(src.error(
                    format!("{what}: \"{item}\" is not key=value"),
                    self.source(range),
                ));
            };
            let key = trim_range(&self.text, range.start..range.start + eq);
            let value = trim_range(&self.text, range.start + eq + 1..range.end);
            out.push(Pair {
                key: self.text[key.clone()].to_ascii_lowercase(),
                key_span: self.source(key),
                value: &self.text[value.clone()],
                span: self.source(value),
            });
        }
        Ok(out)
    }
}

/// A piece of a value and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece<'a> {
    pub text: &'a str,
    pub span: Range<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair<'a> {
    pub key: String,
    pub key_span: Range<usize>,
    pub value: &'a str,
    pub span: Range<usize>,
}

fn trim_range(text: &str, r: Range<usize>) -> Range<usize> {
    let s = &text[r.clone()];
    let start = r.start + (s.len() - s.trim_start().len());
    let end = r.end - (s.len() - s.trim_end().len());
    start..end.max(start)
}

fn split(text: &str, sep: impl Fn(char) -> bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if sep(c) {
            let r = trim_range(text, start..i);
            if !r.is_empty() {
                out.push(r);
            }
            start = i + c.len_utf8();
        }
    }
    let r = trim_range(text, start..text.len());
    if !r.is_empty() {
        out.push(r);
    }
    out
}

/// What a variable holds.
#[derive(Clone, Debug)]
enum Binding {
    Known(String),
    /// Set from a command substitution (`` x=`cat hosts` ``), which the compiler does not run.
    FromCommand(usize),
    /// Its assignment referred to something unset: using it reports that.
    Broken(Box<Diagnostic>),
}

/// Shell variables: `--var` values, which win, then the script's assignments in order.
#[derive(Debug, Default)]
pub struct Env {
    vars: HashMap<String, Binding>,
    fixed: HashMap<String, String>,
}

impl Env {
    pub fn new(vars: &[(String, String)]) -> Env {
        Env {
            vars: HashMap::new(),
            fixed: vars.iter().cloned().collect(),
        }
    }

    /// Records `name=value` from the script. Returns false when `--var` overrides it.
    pub fn assign(&mut self, name: &str, value: &Word, src: &Source) -> bool {
        if self.fixed.contains_key(name) {
            return false;
        }
        let binding = if let Some(Part::Subst { span }) =
            value.parts.iter().find(|p| matches!(p, Part::Subst { .. }))
        {
            Binding::FromCommand(span.start)
        } else {
            match self.expand(value, src) {
                Ok(v) => Binding::Known(v.text),
                Err(d) => Binding::Broken(Box::new(d)),
            }
        };
        self.vars.insert(name.to_string(), binding);
        true
    }

    /// Expands a word: variables replaced, quotes already gone. An unset variable, or one set
    /// by a command the compiler cannot run, is an error at the reference.
    pub fn expand(&self, word: &Word, src: &Source) -> Result<Value, Diagnostic> {
        let mut text = String::new();
        let mut at = Vec::new();
        for part in &word.parts {
            match part {
                Part::Text { text: t, at: a, .. } => {
                    text.push_str(t);
                    at.extend(a.iter().map(|&o| o..o + 1));
                }
                Part::Var {
                    name,
                    span,
                    default,
                } => {
                    let value = self.lookup(name, span, default.as_deref(), src)?;
                    text.push_str(&value);
                    at.extend(std::iter::repeat_n(span.clone(), value.len()));
                }
                Part::Subst { span } => {
                    return Err(src.error(
                        "a command substitution is not run by the compiler: put its result in a variable and pass it with --var NAME=VALUE",
                        span.clone(),
                    ))
                }
            }
        }
        Ok(Value {
            text,
            at,
            span: word.span.clone(),
        })
    }

    fn lookup(
        &self,
        name: &str,
        span: &Range<usize>,
        default: Option<&str>,
        src: &Source,
    ) -> Result<String, Diagnostic> {
        if let Some(v) = self.fixed.get(name) {
            return Ok(v.clone());
        }
        match self.vars.get(name) {
            Some(Binding::Known(v)) => Ok(v.clone()),
            Some(Binding::FromCommand(at)) => Err(src.error(
                format!(
                    "variable \"{name}\" is set by a command substitution in {}, which the compiler does not run: pass --var {name}=VALUE",
                    src.origin(*at)
                ),
                span.clone(),
            )),
            Some(Binding::Broken(d)) => Err((**d).clone()),
            None => match default {
                Some(d) => Ok(d.to_string()),
                None if name.chars().all(|c| c.is_ascii_digit()) => Err(src.error(
                    format!(
                        "positional parameter \"${name}\" is not set: the script expects an argument; pass --var {name}=VALUE"
                    ),
                    span.clone(),
                )),
                None => Err(src.error(
                    format!(
                        "variable \"{name}\" is not set: assign it in the script or pass --var {name}=VALUE"
                    ),
                    span.clone(),
                )),
            },
        }
    }
}

/// An integer option value within ELB's range.
pub fn number_in(
    value: &str,
    span: Range<usize>,
    range: std::ops::RangeInclusive<u64>,
    what: &str,
    unit: &str,
    src: &Source,
) -> Result<u64, Diagnostic> {
    let n: u64 = value.trim().parse().map_err(|_| {
        src.error(
            format!("{what} \"{value}\" is not a whole number"),
            span.clone(),
        )
    })?;
    if !range.contains(&n) {
        return Err(src.error(
            format!(
                "{what} {n} is out of range: ELB accepts {} to {}{unit}",
                range.start(),
                range.end()
            ),
            span,
        ));
    }
    Ok(n)
}

/// `true`/`false` (any case), as the ELB tools read booleans.
pub fn boolean(
    value: &str,
    span: Range<usize>,
    what: &str,
    src: &Source,
) -> Result<bool, Diagnostic> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(src.error(format!("{what} \"{value}\" is not true or false"), span)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::words::lex;
    use super::*;

    fn word(src: &str, i: usize) -> Word {
        lex(src).commands[0].words[i].clone()
    }

    #[test]
    fn expansion_and_its_errors() {
        let text = "x ${ELB}-lb $1 \"$N\" `date`";
        let src = Source::new("t.sh", text);
        let mut env = Env::new(&[("1".into(), "i-1".into())]);
        env.assign("ELB", &word("y=web", 0).tail(2).unwrap(), &src);
        let v = env.expand(&word(text, 1), &src).unwrap();
        assert_eq!(v.text, "web-lb");
        assert_eq!(v.source(0..3), 2..8);
        assert_eq!(v.source(3..6), 8..11);
        assert_eq!(env.expand(&word(text, 2), &src).unwrap().text, "i-1");
        let e = env.expand(&word(text, 3), &src).unwrap_err();
        assert_eq!(
            e.message,
            "variable \"N\" is not set: assign it in the script or pass --var N=VALUE"
        );
        assert_eq!(e.origin.unwrap().to_string(), "t.sh:1:17");
        assert!(env.expand(&word(text, 4), &src).is_err());
    }

    #[test]
    fn variables_set_by_commands_are_named() {
        let text = "ids=`cat hosts.txt`\nx $ids";
        let src = Source::new("t.sh", text);
        let mut env = Env::new(&[]);
        env.assign("ids", &word(text, 0).tail(4).unwrap(), &src);
        let w = lex(text).commands[1].words[1].clone();
        let e = env.expand(&w, &src).unwrap_err();
        assert!(
            e.message.contains("command substitution in t.sh:1:5"),
            "{}",
            e.message
        );
        // --var wins over the script.
        let mut env = Env::new(&[("ids".into(), "i-9".into())]);
        assert!(!env.assign("ids", &word(text, 0).tail(4).unwrap(), &src));
        assert_eq!(env.expand(&w, &src).unwrap().text, "i-9");
    }

    #[test]
    fn pairs_in_any_order_and_spacing() {
        let text = "x \"protocol=HTTP, lb-port=80 ,instance-port= 8080\"";
        let src = Source::new("t.sh", text);
        let v = Env::new(&[]).expand(&word(text, 1), &src).unwrap();
        let p = v.pairs(&src, "listener").unwrap();
        let got: Vec<(&str, &str)> = p.iter().map(|p| (p.key.as_str(), p.value)).collect();
        assert_eq!(
            got,
            [
                ("protocol", "HTTP"),
                ("lb-port", "80"),
                ("instance-port", "8080")
            ]
        );
        assert_eq!(&text[p[2].span.clone()], "8080");
        let bad = Env::new(&[])
            .expand(&word("x \"a=1, b\"", 1), &src)
            .unwrap();
        assert!(bad.pairs(&src, "listener").is_err());
    }

    #[test]
    fn lists_and_numbers() {
        let src = Source::new("t.sh", "");
        let v = Env::new(&[])
            .expand(&word("x i-1,i-2, i-3", 1), &src)
            .unwrap();
        assert_eq!(
            v.list().iter().map(|p| p.text).collect::<Vec<_>>(),
            ["i-1", "i-2"]
        );
        assert_eq!(
            number_in("30", 0..2, 5..=300, "--interval", " seconds", &src),
            Ok(30)
        );
        let e = number_in("1", 0..1, 2..=60, "--timeout", " seconds", &src).unwrap_err();
        assert_eq!(
            e.message,
            "--timeout 1 is out of range: ELB accepts 2 to 60 seconds"
        );
        assert!(number_in("x", 0..1, 2..=60, "--timeout", "", &src).is_err());
    }
}

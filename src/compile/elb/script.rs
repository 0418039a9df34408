//! From simple commands to the script's items: ELB and IAM commands, variable assignments, and
//! everything else, which is skipped and listed.
//!
//! Scripts are read as people pasted them: shell prompts (`$ elb-...`, and `# elb-...` in a
//! pasted terminal session) are removed, `then`/`else`/`do` before a command are dropped (every
//! branch of an `if` is applied, in script order), and an option line that a wiki wrapped
//! without a `\` is joined to the command above it.

use super::command::{self, Command};
use super::words::{self, Lexed, Part, Separator, Simple, Word};
use super::Source;
use crate::compile::diag::Diagnostic;

#[derive(Clone, Debug)]
pub enum Item {
    Command(Command),
    /// `NAME=value` (also after `export`, `readonly`, `local`, `declare`).
    Assign {
        name: String,
        value: Word,
        at: usize,
    },
    /// A line that is not an ELB or IAM command.
    Skipped {
        at: usize,
        name: String,
        note: &'static str,
    },
}

/// The items in script order, and what the reader had to say about the text.
#[derive(Debug, Default)]
pub struct Script {
    pub items: Vec<Item>,
    pub warnings: Vec<Diagnostic>,
}

/// Words that start a shell construct rather than a command.
const CONTROL: &[&str] = &[
    "if", "elif", "fi", "for", "while", "until", "done", "case", "esac", "function", "[", "[[",
    "test", "}", "select", "return", "exit", "set", "shift", "source", ".",
];
/// Words that may stand before a command on the same line.
const LEADERS: &[&str] = &["then", "else", "do", "{", "!", "time", "exec", "command"];
const DECLARE: &[&str] = &["export", "readonly", "local", "declare", "typeset"];

pub fn read(src: &Source) -> Result<Script, Diagnostic> {
    let lexed = words::lex(&src.text);
    let mut script = Script::default();
    normalization_warnings(&lexed, src, &mut script.warnings);
    let transcript = lexed.commands.iter().any(|c| {
        c.words
            .first()
            .and_then(Word::bare)
            .is_some_and(|w| w == "$" || w.starts_with("OK-"))
    });
    let mut simples = lexed.commands;
    for comment in &lexed.comments {
        let body = &src.text[comment.span.start + 1..comment.span.end];
        let command_start = body.len() - body.trim_start().len();
        let first = body.split_whitespace().next().unwrap_or("");
        let names_command = first.starts_with("elb-") || first.starts_with("iam-");
        if !names_command {
            continue;
        }
        if transcript && command_start > 0 {
            // A root prompt in a pasted terminal session, not a comment.
            let from = comment.span.start + 1 + command_start;
            let inner = words::lex_range(&src.text, from..comment.span.end);
            script.warnings.push(src.warning(
                format!(
                    "\"# {first}\" is read as a command after a root prompt: the script is a pasted terminal session"
                ),
                comment.span.start..comment.span.start + 1,
            ));
            simples.extend(inner.commands);
        } else {
            script.items.push(Item::Skipped {
                at: comment.span.start,
                name: first.to_string(),
                note: "commented out",
            });
        }
    }
    simples.sort_by_key(|s| s.span.start);
    let simples = join_wrapped_options(simples, src, &mut script.warnings);
    for simple in simples {
        item(simple, src, &mut script.items)?;
    }
    script.items.sort_by_key(|i| match i {
        Item::Command(c) => c.at,
        Item::Assign { at, .. } | Item::Skipped { at, .. } => *at,
    });
    Ok(script)
}

/// One warning per line for the typography a blog engine substituted.
fn normalization_warnings(lexed: &Lexed, src: &Source, warnings: &mut Vec<Diagnostic>) {
    let mut last_line = 0;
    for n in &lexed.normalized {
        let origin = src.origin(n.span.start);
        if origin.line == last_line {
            continue;
        }
        last_line = origin.line;
        let on_line: Vec<String> = lexed
            .normalized
            .iter()
            .filter(|m| src.origin(m.span.start).line == origin.line)
            .map(|m| format!("\"{}\" as \"{}\"", m.found, m.read_as))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        warnings.push(src.warning(
            format!(
                "typographic characters from a blog engine read as ASCII: {}",
                on_line.join(", ")
            ),
            n.span.clone(),
        ));
    }
}

/// The words of a simple command after prompts and leading keywords.
fn command_words(simple: &Simple) -> &[Word] {
    let mut words = simple.words.as_slice();
    while let Some(first) = words.first() {
        match first.bare() {
            Some("$") => words = &words[1..],
            Some(w) if LEADERS.contains(&w) => words = &words[1..],
            _ => break,
        }
    }
    words
}

fn names_elb_command(simple: &Simple) -> bool {
    command_words(simple)
        .first()
        .and_then(command::command_name)
        .is_some()
}

/// Joins a line that starts with `--option` to the ELB command on the line before it: wikis and
/// blogs wrap long commands without the `\` a shell would need.
fn join_wrapped_options(
    simples: Vec<Simple>,
    src: &Source,
    warnings: &mut Vec<Diagnostic>,
) -> Vec<Simple> {
    let mut out: Vec<Simple> = Vec::with_capacity(simples.len());
    for simple in simples {
        let starts_with_option = simple
            .words
            .first()
            .is_some_and(|w| w.leading_text().starts_with("--"));
        let joinable = starts_with_option
            && simple.after == Separator::Newline
            && out
                .last()
                .is_some_and(|prev| names_elb_command(prev) && prev.error.is_none());
        if let (true, Some(prev)) = (joinable, out.last_mut()) {
            let line = src.origin(simple.span.start).line;
            let prev_line = src.origin(prev.span.end.saturating_sub(1)).line;
            warnings.push(src.warning(
                format!(
                    "line {line} starts with an option: joined to the command on line {prev_line}, which does not end with \"\\\""
                ),
                simple.words[0].span.clone(),
            ));
            prev.span.end = simple.span.end;
            prev.words.extend(simple.words);
            prev.error = simple.error;
            continue;
        }
        out.push(simple);
    }
    out
}

fn assignment(word: &Word) -> Option<(String, Word)> {
    let Some(Part::Text {
        text,
        quoted: false,
        ..
    }) = word.parts.first()
    else {
        return None;
    };
    let eq = text.find('=')?;
    let name = &text[..eq];
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return None;
    }
    let value = word.tail(eq + 1).unwrap_or(Word {
        parts: Vec::new(),
        span: word.span.end..word.span.end,
    });
    Some((name.to_string(), value))
}

fn item(simple: Simple, src: &Source, items: &mut Vec<Item>) -> Result<(), Diagnostic> {
    let mut words = command_words(&simple);
    let Some(first) = words.first() else {
        return Ok(());
    };
    if first.bare().is_some_and(|w| DECLARE.contains(&w)) {
        words = &words[1..];
    }
    // `NAME=value` alone sets a variable; before a command it only sets the command's
    // environment, which does not change how its arguments expand.
    let assigns = words.iter().take_while(|w| assignment(w).is_some()).count();
    if assigns == words.len() {
        for w in words {
            if let Some((name, value)) = assignment(w) {
                items.push(Item::Assign {
                    name,
                    value,
                    at: w.span.start,
                });
            }
        }
        return Ok(());
    }
    let words = &words[assigns..];
    let first = &words[0];
    let Some((name, name_span)) = command::command_name(first) else {
        items.push(Item::Skipped {
            at: first.span.start,
            name: short_display(first),
            note: skip_note(first, simple.error.is_some()),
        });
        return Ok(());
    };
    if let Some(e) = &simple.error {
        return Err(src.error(format!("{name}: {}", e.message), e.span.clone()));
    }
    match command::spec(&name) {
        Some(spec) => {
            let command = command::parse(spec, first, name_span, &words[1..], src)?;
            items.push(Item::Command(command));
        }
        None if name.starts_with("elb-") => {
            let mut d = src.error(format!("unknown ELB command \"{name}\""), name_span);
            if let Some(s) = command::closest(&name) {
                d = d.with_help(format!("did you mean \"{s}\"?"));
                d.message.push_str(&format!("; did you mean \"{s}\"?"));
            }
            return Err(d);
        }
        None => items.push(Item::Skipped {
            at: first.span.start,
            name,
            note: "IAM command that does not configure a load balancer",
        }),
    }
    Ok(())
}

fn short_display(word: &Word) -> String {
    let s = word.display();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

fn skip_note(first: &Word, broken: bool) -> &'static str {
    let text = first.display();
    if broken {
        "not an ELB command, and not valid shell (an unbalanced quote)"
    } else if CONTROL.contains(&text.as_str()) {
        "shell control flow: the commands inside are applied in script order"
    } else if text == "..." {
        "elision"
    } else if text.starts_with("OK-")
        || (text.len() > 1
            && text
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))
    {
        "pasted tool output"
    } else if first.parts.iter().any(|p| matches!(p, Part::Subst { .. })) {
        "a command substitution, which the compiler does not run"
    } else {
        "not an ELB or IAM command"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> Result<Script, Diagnostic> {
        read(&Source::new("t.sh", text))
    }

    fn kinds(s: &Script) -> Vec<String> {
        s.items
            .iter()
            .map(|i| match i {
                Item::Command(c) => c.name().to_string(),
                Item::Assign { name, .. } => format!("{name}="),
                Item::Skipped { name, .. } => format!("skip {name}"),
            })
            .collect()
    }

    #[test]
    fn prompts_keywords_and_other_tools() {
        let s = read_text(
            "if [ -n \"$2\" ]; then elb-delete-lb a\nfi\n  $ elb-delete-lb b\necho hi\nOK-Creating LoadBalancer\nprintf \"x\" && elb-delete-lb c\n",
        )
        .unwrap();
        assert_eq!(
            kinds(&s),
            [
                "skip if",
                "elb-delete-lb",
                "skip fi",
                "elb-delete-lb",
                "skip echo",
                "skip OK-Creating",
                "skip printf",
                "elb-delete-lb"
            ]
        );
    }

    #[test]
    fn assignments() {
        let s = read_text("ELB=web\nexport A=1 B=\"x y\"\nX=1 elb-delete-lb a\n").unwrap();
        assert_eq!(kinds(&s), ["ELB=", "A=", "B=", "elb-delete-lb"]);
    }

    #[test]
    fn wrapped_option_lines_are_joined_and_reported() {
        let s = read_text("elb-delete-lb\n    --lb x\n").unwrap();
        assert_eq!(kinds(&s), ["elb-delete-lb"]);
        let Item::Command(c) = &s.items[0] else {
            panic!()
        };
        assert_eq!(c.lb.as_ref().unwrap().display(), "x");
        assert_eq!(s.warnings.len(), 1);
        assert!(
            s.warnings[0].message.contains("joined"),
            "{}",
            s.warnings[0]
        );
    }

    #[test]
    fn comments_and_root_prompts() {
        let s = read_text("#elb-delete-lb a\n# just words\n").unwrap();
        assert_eq!(kinds(&s), ["skip elb-delete-lb"]);
        let s = read_text("  # elb-delete-lb a\n  OK-Deleting\n").unwrap();
        assert_eq!(kinds(&s), ["elb-delete-lb", "skip OK-Deleting"]);
    }

    #[test]
    fn unknown_commands_suggest_the_real_one() {
        let e = read_text("\t$AWS_ELB_HOME/bin/elb-deregister-instances-with-lb x --instances i-1")
            .unwrap_err();
        assert_eq!(
            e.message,
            "unknown ELB command \"elb-deregister-instances-with-lb\"; did you mean \"elb-deregister-instances-from-lb\"?"
        );
        assert_eq!(e.origin.unwrap().to_string(), "t.sh:1:20");
    }
}

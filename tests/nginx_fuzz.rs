//! Property tests for the parse step: whatever the bytes, it never panics, and everything it
//! reports points at a real place: an error's file is one it read and its line exists in it
//! (nginx counts lines as LFs + 1, so the line after a final LF is real too), and so does
//! every statement of the tree it returns.
//!
//! Inputs: arbitrary bytes; token soups made of the pieces the tokenizer cares about; and the
//! corpus's own configs, mutated (bytes flipped, ranges cut, duplicated or swapped, fragments
//! inserted). Bounded by proptest's case counts (PROPTEST_CASES overrides).

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;

use appliance::compile::diag::Sources;
use appliance::compile::nginx::parse::{parse_bytes, parse_file, Parsed};
use appliance::compile::nginx::tree::Statement;
use appliance::compile::Options;
use proptest::prelude::*;
use support::{copy_tree, corpus_dir, TempDir};

const PIECES: &[&str] = &[
    " ",
    "\n",
    "\t",
    "\r",
    ";",
    "{",
    "}",
    "#",
    "\"",
    "'",
    "\\",
    "$",
    "${",
    ")",
    "(",
    "a",
    "events",
    "http",
    "server",
    "location",
    "include",
    "map",
    "types",
    "geo",
    "if",
    "limit_except",
    "upstream",
    "stream",
    "gzip",
    "on",
    "listen",
    "80",
    "1k",
    "10s",
    "\u{e9}",
    "\u{0}",
    "\u{b}",
    "x}",
    "include nothing/*.conf;",
    "events {}",
    "http { server { location / {",
];

/// Where an included file would be looked for: nowhere, so relative includes fail cleanly.
const NAME: &str = "/nonexistent-appliance-fuzz/nginx.conf";

/// The suite's bound, unless PROPTEST_CASES asks for more (or fewer).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn lines(text: &str) -> u32 {
    text.bytes().filter(|&b| b == b'\n').count() as u32 + 1
}

/// The property: every reported place exists.
fn check(parsed: &Parsed) -> Result<(), TestCaseError> {
    if let Some(e) = &parsed.error {
        match &e.origin {
            Some(o) => {
                let text = parsed.sources.get(&o.file);
                prop_assert!(text.is_some(), "error in a file not read: {e:?}");
                let text = text.unwrap_or_default();
                prop_assert!(
                    o.line >= 1 && o.line <= lines(text),
                    "line out of the file: {e:?}"
                );
                prop_assert!(o.column >= 1, "column 0: {e:?}");
                if let Some(span) = &e.span {
                    prop_assert!(span.start <= span.end && span.end <= text.len(), "{e:?}");
                }
            }
            None => prop_assert!(
                e.message == "no \"events\" section in configuration",
                "an error without a place: {e:?}"
            ),
        }
    }
    check_statements(&parsed.tree.statements, &parsed.sources)
}

fn check_statements(statements: &[Statement], sources: &Sources) -> Result<(), TestCaseError> {
    for s in statements {
        let text = sources.get(&s.origin.file);
        prop_assert!(text.is_some(), "statement from a file not read: {s:?}");
        let text = text.unwrap_or_default();
        let n = lines(text);
        prop_assert!(s.origin.line >= 1 && s.origin.line <= s.end_line && s.end_line <= n);
        prop_assert!(s.span.start < s.span.end && s.span.end <= text.len());
        for w in &s.args {
            prop_assert!(w.span.start <= w.span.end && w.span.end <= s.span.end);
        }
        for o in &s.included_from {
            prop_assert!(sources.get(&o.file).is_some());
        }
        if let Some(block) = &s.block {
            check_statements(block, sources)?;
        }
    }
    Ok(())
}

/// The corpus's configs (large-config aside: it is the benchmark's), copied once.
fn corpus() -> &'static (TempDir, Vec<PathBuf>) {
    static CORPUS: OnceLock<(TempDir, Vec<PathBuf>)> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let tmp = TempDir::new("nginx-fuzz");
        copy_tree(&corpus_dir().join("nginx"), &tmp.path);
        let mut files = Vec::new();
        let mut dirs = vec![tmp.path.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() {
                    dirs.push(path);
                } else if !(name.starts_with("LICENSE")
                    || name.ends_with(".json")
                    || name.ends_with(".bz2")
                    || name.ends_with(".kld"))
                {
                    files.push(path);
                }
            }
        }
        files.sort();
        (tmp, files)
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize, usize),
    Duplicate(usize, usize),
    Insert(usize, &'static str),
    Swap(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        (any::<usize>(), 0usize..64).prop_map(|(at, n)| Mutation::Cut(at, n)),
        (any::<usize>(), 0usize..64).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
        (any::<usize>(), prop::sample::select(PIECES)).prop_map(|(at, p)| Mutation::Insert(at, p)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip(at, b) if !bytes.is_empty() => bytes[at % len] = b,
            Mutation::Cut(at, n) if !bytes.is_empty() => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Duplicate(at, n) if !bytes.is_empty() => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            Mutation::Insert(at, piece) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, piece.bytes());
            }
            Mutation::Swap(a, b) if !bytes.is_empty() => bytes.swap(a % len, b % len),
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
        check(&parse_bytes(&bytes, NAME))?;
    }

    #[test]
    fn token_soups(pieces in prop::collection::vec(prop::sample::select(PIECES), 0..400)) {
        check(&parse_bytes(pieces.concat().as_bytes(), NAME))?;
    }

    #[test]
    fn long_words_and_comments(
        lead in 0usize..5000,
        len in 4000usize..4200,
        kind in 0usize..4,
        tail in prop::collection::vec(prop::sample::select(PIECES), 0..20),
    ) {
        let body = "x".repeat(len);
        let word = match kind {
            0 => body,
            1 => format!("\"{body}\""),
            2 => format!("'{body}"),
            _ => format!("#{body}"),
        };
        let text = format!("events {{}}\n{}env {word}{}", " ".repeat(lead), tail.concat());
        check(&parse_bytes(text.as_bytes(), NAME))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    /// Mutated copies are written beside the original, so their includes still resolve.
    #[test]
    fn mutated_corpus(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let (_tmp, files) = corpus();
        let file = pick.get(files);
        let original = std::fs::read(file).unwrap_or_default();
        let mutant = file.with_extension("mutant");
        std::fs::write(&mutant, mutate(original, &mutations)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let parsed = parse_file(&mutant, &Options::default());
        let _ = std::fs::remove_file(&mutant);
        check(&parsed)?;
    }
}

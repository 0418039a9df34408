//! Our statement tree against crossplane's (`crossplane parse --combine`, the PyPI package the
//! corpus came with), for every corpus config our parse step accepts.
//!
//! crossplane is a second opinion, not the reference: where it reads nginx.conf differently
//! from nginx, the comparison knows the difference by name and checks it is that difference:
//!
//! - ESCAPES: crossplane keeps escapes as written (it only turns `\"` into `"` in quotes);
//!   nginx resolves `\" \' \\ \t \r \n`. We compare our value with crossplane's after nginx's
//!   unescaping.
//! - IF_PARENS: crossplane strips the parentheses off `if` conditions; we keep nginx's words.
//! - START_LINES: crossplane gives the line a statement starts on; that is our
//!   `origin.line` (nginx's messages use the terminator's line, our `end_line`).
//! - BRACE_IN_WORD: crossplane ends a bare word at `}`; nginx does not. A file with such a
//!   word cannot be compared; the test checks that is the only reason.
//! - BLANKS: crossplane splits words at any Unicode space (Python's isspace); nginx only at
//!   space, tab, CR and LF. Same treatment as BRACE_IN_WORD.
//! - DOLLAR_BRACE: after `${` crossplane reads to the next `}` or blank, and then adds the
//!   byte after it to the word whatever it is (`${a} b` is one word); nginx only takes the `{`s
//!   right after `$`. Same treatment as BRACE_IN_WORD.
//! - INCLUDE_FILE_NAMES: after an `include`, crossplane --combine labels the rest of the
//!   including block with the last included file's name (its parser reuses the loop variable
//!   `fname`). A statement's file is compared unless an earlier statement of its block came
//!   through an include.
//! - CROSSPLANE_ERRORS: crossplane's own directive table rejects some statements our parse step
//!   leaves to the lowering (an `if` whose condition is empty parentheses) and drops them from
//!   its tree; nginx rejects those files too. They are not compared, and the test checks which
//!   files they are.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use appliance::compile::diag::Sources;
use appliance::compile::nginx::lexer::unescape;
use appliance::compile::nginx::parse::parse_file;
use appliance::compile::nginx::tree::{Statement, Word};
use appliance::compile::Options;
use serde_json::Value;
use support::{copy_tree, corpus_dir, files_under, large_config, TempDir};

fn crossplane() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/crossplane");
    if venv.exists() {
        return venv;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("crossplane"))
            .find(|p| p.exists())
    });
    on_path.unwrap_or_else(|| {
        panic!("crossplane is not installed: scripts/test-all puts it in .venv (tests/requirements.txt)")
    })
}

/// Why a file was not compared, by deviation name.
#[derive(Debug, PartialEq, Eq)]
enum Skip {
    BraceInWord,
    Blanks,
    DollarBrace,
    CrossplaneErrors(String),
}

#[test]
fn trees_match_crossplane() {
    let crossplane = crossplane();
    let tmp = TempDir::new("nginx-crossplane");
    let root = tmp.path.join("corpus");
    copy_tree(&corpus_dir().join("nginx"), &root);
    // large-config, with its NGINX Plus lines commented out so that it parses to the end.
    let (oss, _) = large_config::oss(&large_config::decompress(&corpus_dir()));
    std::fs::write(root.join("go-crossplane/large-config/nginx-oss.conf"), oss)
        .expect("write large-config");
    let mut files = files_under(&root);
    files.retain(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        !(name.starts_with("LICENSE") || name.ends_with(".json") || name.ends_with(".bz2"))
    });
    files.sort();

    let mut compared = Vec::new();
    let mut skipped = Vec::new();
    let mut failures = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .to_string_lossy()
            .into_owned();
        let parsed = parse_file(file, &Options::default());
        if parsed.error.is_some() {
            continue;
        }
        if let Some(skip) = incomparable(&parsed.tree.statements, &parsed.sources) {
            skipped.push(format!("{rel}: {skip:?}"));
            continue;
        }
        let output = Command::new(&crossplane)
            .arg("parse")
            .arg("--combine")
            .arg(file)
            .output()
            .expect("run crossplane");
        let json: Value = match serde_json::from_slice(&output.stdout) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{rel}: crossplane's output is not JSON ({e})"));
                continue;
            }
        };
        if json["status"] != "ok" {
            let errors: Vec<String> = json["errors"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .map(|e| e["error"].as_str().unwrap_or("?").to_string())
                        .collect()
                })
                .unwrap_or_default();
            // The first is the one that matters; the rest follow from it.
            let first = errors.first().cloned().unwrap_or_default();
            let errors = first.replace(&format!("{}/", root.display()), "");
            skipped.push(format!("{rel}: {:?}", Skip::CrossplaneErrors(errors)));
            continue;
        }
        let theirs = json["config"][0]["parsed"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut problems = Vec::new();
        compare(&parsed.tree.statements, &theirs, "", &mut problems);
        if problems.is_empty() {
            compared.push(rel);
        } else {
            failures.push(format!("{rel}:\n    {}", problems.join("\n    ")));
        }
    }
    println!("equal to crossplane ({}):", compared.len());
    for f in &compared {
        println!("  {f}");
    }
    println!("not comparable ({}):", skipped.len());
    for s in &skipped {
        println!("  {s}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The files crossplane cannot read as nginx does, each for the reason named.
    let expected_skips: Vec<String> = EXPECTED_SKIPS.iter().map(|s| s.to_string()).collect();
    assert_eq!(skipped, expected_skips, "unexpected files left out");
    assert!(
        compared.len() >= 27,
        "only {} files compared",
        compared.len()
    );
}

/// The files left out, and why (see the deviations above).
const EXPECTED_SKIPS: &[&str] = &[
    "crossplane/messy/nginx.conf: DollarBrace",
    "go-crossplane/broken1/nginx.conf: DollarBrace",
    r#"go-crossplane/if-check/nginx.conf: CrossplaneErrors("invalid number of arguments in \"if\" directive in go-crossplane/if-check/nginx.conf:29")"#,
    r#"go-crossplane/if-expr/empty-parens.conf: CrossplaneErrors("invalid number of arguments in \"if\" directive in go-crossplane/if-expr/empty-parens.conf:9")"#,
    r#"go-crossplane/if-expr/empty-spaced-parens.conf: CrossplaneErrors("invalid number of arguments in \"if\" directive in go-crossplane/if-expr/empty-spaced-parens.conf:9")"#,
    "go-crossplane/messy/nginx.conf: DollarBrace",
    "go-crossplane/simple-variable-with-braces/nginx.conf: DollarBrace",
];

/// A reason crossplane's tree cannot match ours, if the statements have one.
fn incomparable(statements: &[Statement], sources: &Sources) -> Option<Skip> {
    for s in statements {
        for word in std::iter::once(s.name.as_str()).chain(s.values()) {
            if word
                .chars()
                .any(|c| c.is_whitespace() && !matches!(c, ' ' | '\t' | '\r' | '\n'))
            {
                return Some(Skip::Blanks);
            }
        }
        // A `}` as written: not escaped (crossplane keeps `\}` together) and not closing a
        // `${` (crossplane reads those to their `}`).
        let text = sources.get(&s.origin.file).unwrap_or_default();
        let brace = |w: &&Word| {
            let raw = text.get(w.span.clone()).unwrap_or_default().as_bytes();
            let mut in_variable = false;
            for i in 0..raw.len() {
                let escaped = i > 0 && raw[i - 1] == b'\\';
                if raw[i] == b'{' && i > 0 && raw[i - 1] == b'$' {
                    in_variable = true;
                } else if raw[i] == b'}' && !escaped {
                    if !in_variable {
                        return !w.quoted;
                    }
                    in_variable = false;
                }
            }
            false
        };
        if s.args.iter().any(|w| brace(&w)) {
            return Some(Skip::BraceInWord);
        }
        if s.args.iter().any(|w| !w.quoted && w.value.contains("${")) {
            return Some(Skip::DollarBrace);
        }
        if let Some(block) = &s.block {
            if let Some(skip) = incomparable(block, sources) {
                return Some(skip);
            }
        }
    }
    None
}

/// Compares statement lists, recursively.
fn compare(ours: &[Statement], theirs: &[Value], path: &str, problems: &mut Vec<String>) {
    let ours: Vec<&Statement> = ours.iter().collect();
    if ours.len() != theirs.len() {
        problems.push(format!(
            "{path}: {} statements here, crossplane has {}: ours {:?}, theirs {:?}",
            ours.len(),
            theirs.len(),
            ours.iter().map(|s| &s.name).collect::<Vec<_>>(),
            theirs
                .iter()
                .map(|t| t["directive"].as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
        ));
        return;
    }
    for (i, (o, t)) in ours.iter().zip(theirs).enumerate() {
        let here = format!("{path}/{}[{i}]", o.name);
        let name = t["directive"].as_str().unwrap_or_default();
        if o.name != name {
            problems.push(format!(
                "{here}: name {:?} vs crossplane's {name:?}",
                o.name
            ));
            continue;
        }
        // START_LINES
        if Some(u64::from(o.origin.line)) != t["line"].as_u64() {
            problems.push(format!(
                "{here}: line {} vs crossplane's {}",
                o.origin.line, t["line"]
            ));
        }
        // INCLUDE_FILE_NAMES
        let after_include = ours[..i]
            .iter()
            .any(|earlier| earlier.included_from.len() > o.included_from.len());
        if let Some(file) = t["file"].as_str() {
            if *o.origin.file != *file && !after_include {
                problems.push(format!(
                    "{here}: file {} vs crossplane's {file}",
                    o.origin.file
                ));
            }
        }
        let mut theirs_args: Vec<String> = t["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        // ESCAPES
        for a in theirs_args.iter_mut() {
            *a = String::from_utf8_lossy(&unescape(a.as_bytes())).into_owned();
        }
        let mut ours_args: Vec<String> = o.values().map(str::to_string).collect();
        // IF_PARENS
        if o.name == "if" {
            strip_if_parens(&mut ours_args);
        }
        if ours_args != theirs_args {
            problems.push(format!(
                "{here}: args {ours_args:?} vs crossplane's {theirs_args:?}"
            ));
        }
        match (&o.block, t.get("block")) {
            (None, None) => {}
            (Some(ours), Some(Value::Array(theirs))) => compare(ours, theirs, &here, problems),
            _ => problems.push(format!("{here}: block on one side only")),
        }
    }
}

/// crossplane's _prepare_if_args.
fn strip_if_parens(args: &mut Vec<String>) {
    let (Some(first), Some(last)) = (args.first(), args.last()) else {
        return;
    };
    if !(first.starts_with('(') && last.ends_with(')')) {
        return;
    }
    args[0] = args[0][1..].trim_start().to_string();
    let n = args.len() - 1;
    let trimmed = args[n][..args[n].len() - 1].trim_end().to_string();
    args[n] = trimmed;
    let start = usize::from(args[0].is_empty());
    let end = args.len() - usize::from(args[n].is_empty());
    *args = args[start..end.max(start)].to_vec();
}

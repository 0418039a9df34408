//! go-crossplane's large-config (35,178 lines, about 2,500 locations), the parser's speed test.
//!
//! It is an NGINX Plus config managed by F5's controller: line 6 loads F5's metrics module and
//! 7,514 lines use directives open-source nginx 1.22 does not have (`f5_metrics*`,
//! `status_zone`, `api`). nginx and we stop at the first of them (line 6 and line 11). For a
//! whole-file comparison and for the benchmark, [`oss`] turns exactly those lines into
//! comments: line numbers stay, and nginx 1.22 accepts the result.
//!
//! Shared by the tests (through `mod support`) and benches/compile.rs (by path).
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;

/// First words of the lines that only NGINX Plus with F5's module understands.
pub const PLUS_ONLY: &[&str] = &[
    "load_module",
    "f5_metrics",
    "f5_metrics_server",
    "f5_metrics_marker",
    "status_zone",
    "api",
];

/// The decompressed file.
pub fn decompress(corpus: &Path) -> Vec<u8> {
    let path = corpus.join("nginx/go-crossplane/large-config/nginx.conf.bz2");
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut text = Vec::new();
    bzip2::read::BzDecoder::new(file)
        .read_to_end(&mut text)
        .unwrap_or_else(|e| panic!("cannot decompress {}: {e}", path.display()));
    text
}

/// The file with its NGINX Plus and F5 lines commented out, and how many there were.
pub fn oss(text: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(text.len() + 16 * 1024);
    let mut changed = 0;
    for line in text.split_inclusive(|&b| b == b'\n') {
        let indent = line
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let rest = &line[indent..];
        let word_len = rest
            .iter()
            .position(|&b| matches!(b, b' ' | b'\t' | b';' | b'\n' | b'{'))
            .unwrap_or(rest.len());
        let word = &rest[..word_len];
        if PLUS_ONLY.iter().any(|p| p.as_bytes() == word) {
            out.extend_from_slice(&line[..indent]);
            out.extend_from_slice(b"# ");
            out.extend_from_slice(rest);
            changed += 1;
        } else {
            out.extend_from_slice(line);
        }
    }
    (out, changed)
}

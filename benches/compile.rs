//! The compiler's speed: parse + lower of go-crossplane's large-config (35,178 lines, about
//! 2,500 locations), in process, many times.
//!
//! The file is an NGINX Plus config; its 7,514 Plus-only lines are commented out first (see
//! tests/support/large_config.rs) so that the whole file is parsed and lowered rather than the
//! first 11 lines. Prints min, median, mean and max; `scripts/bench-compile` compares the
//! median with crossplane on the same file.
//!
//! Environment: BENCH_ITERATIONS (default 200 under `cargo bench`, 3 when `cargo test` runs it
//! as a check), BENCH_DIR (where the file is written; a
//! temporary directory by default, removed at the end).

#[path = "../tests/support/large_config.rs"]
mod large_config;

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use appliance::compile::nginx::{lower, parse};
use appliance::compile::Options;

fn corpus_dir() -> PathBuf {
    [
        std::env::var_os("APPLIANCE_CORPUS").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")),
        Some(PathBuf::from("/work/shared/corpus")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("README.md").is_file())
    .expect("the corpus: set APPLIANCE_CORPUS or put it at ../shared/corpus")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this without it, as a check
    // that large-config still compiles to the end, so a few iterations do.
    let benching = std::env::args().any(|a| a == "--bench");
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if benching { 200 } else { 3 });
    let (dir, temporary) = match std::env::var_os("BENCH_DIR") {
        Some(d) => (PathBuf::from(d), false),
        None => (
            std::env::temp_dir().join(format!("appliance-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    let (text, commented) = large_config::oss(&large_config::decompress(&corpus_dir()));
    let lines = text.iter().filter(|&&b| b == b'\n').count();
    let path = dir.join("large-config.conf");
    std::fs::write(&path, &text).expect("write the config");
    let options = Options::default();

    // The file must compile to the end, or the figures mean nothing.
    let parsed = parse::parse_file(&path, &options);
    if let Some(e) = &parsed.error {
        panic!("large-config does not parse: {e}");
    }
    if let Err(e) = lower::lower(&parsed.tree, &options) {
        panic!("large-config does not lower: {e}");
    }

    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations.min(5) {
        black_box(parse::parse_file(&path, &options));
    }
    for _ in 0..iterations {
        let start = Instant::now();
        let parsed = parse::parse_file(black_box(&path), &options);
        let lowered = lower::lower(&parsed.tree, &options);
        black_box((&parsed, &lowered));
        times.push(start.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "file: {} ({lines} lines, {commented} NGINX Plus lines commented out)",
        path.display()
    );
    println!(
        "parse + lower, {iterations} iterations: min {:.2} ms, median {:.2} ms, mean {:.2} ms, max {:.2} ms",
        ms(times[0]),
        ms(median),
        ms(mean),
        ms(times[times.len() - 1])
    );
    println!("median_ms={:.3}", ms(median));
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

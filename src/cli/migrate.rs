//! `appliance migrate INPUT [-o OUT]`: prints the compiled appliance.toml, each item commented
//! with the line it came from, and a report of what did not map on standard error.

use std::path::Path;
use std::process::ExitCode;

use crate::compile::{render::render_toml, Options};

pub fn run(input: &Path, output: Option<&Path>, options: &Options) -> ExitCode {
    let compiled = match super::compile(input, options) {
        Ok(c) => c,
        Err(failed) => {
            super::print_failure(&failed, "appliance");
            return ExitCode::FAILURE;
        }
    };
    let header = vec![
        format!(
            "appliance.toml compiled from {} by appliance {}",
            input.display(),
            env!("CARGO_PKG_VERSION")
        ),
        "Each item's origin names the line it came from; the report lists what did not map.".into(),
    ];
    let toml = render_toml(&compiled.model, &compiled.sources, &header);
    match output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &toml) {
                eprintln!("appliance: [emerg] cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        None => {
            print!("{toml}");
            // On a terminal the report follows the TOML: a blank line keeps them apart.
            let _ = std::io::Write::flush(&mut std::io::stdout());
            eprintln!();
        }
    }
    eprint!("{}", compiled.report.render());
    ExitCode::SUCCESS
}

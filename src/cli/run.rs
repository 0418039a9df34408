//! `appliance run -c FILE`: serve an nginx.conf, ELB script or appliance.toml in the
//! foreground until a signal says stop. SIGHUP recompiles FILE and swaps it in.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::compile::Options;
use crate::proxy::{self, runtime::Runtime, RunOptions};

pub fn run(path: &Path, options: &Options, run: &RunOptions) -> ExitCode {
    super::init_logging();
    let compiled = match super::compile(path, options) {
        Ok(c) => c,
        Err(failed) => {
            super::print_failure(&failed, "appliance");
            return ExitCode::FAILURE;
        }
    };
    let reload_path: PathBuf = path.to_path_buf();
    let reload_options = options.clone();
    let reload: proxy::signals::Reload = Arc::new(move || {
        let compiled = crate::compile::compile_file(&reload_path, &reload_options)
            .map_err(|f| *f.diagnostic)?;
        Runtime::build(&compiled.model)
    });
    match proxy::serve(&compiled.model, run, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(d) => {
            eprintln!("{}", d.one_line("appliance"));
            ExitCode::FAILURE
        }
    }
}

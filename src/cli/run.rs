//! `appliance run -c FILE`: serve an nginx.conf, ELB script or appliance.toml in the
//! foreground until a signal says stop. SIGHUP recompiles FILE and swaps it in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::compile::Options;
use crate::config::Admin;
use crate::proxy::{logging, signals::Reload, RunOptions};

pub fn run(
    path: &Path,
    options: &Options,
    run: &RunOptions,
    admin: Option<SocketAddr>,
) -> ExitCode {
    let compiled = match super::compile(path, options) {
        Ok(c) => c,
        Err(failed) => {
            super::print_failure(&failed, "appliance");
            return ExitCode::FAILURE;
        }
    };
    let warnings = compiled.report.startup_warnings();
    let mut model = compiled.model;
    // `--admin` adds the admin listener to a config that has none (an nginx.conf).
    let with_admin = move |model: &mut crate::config::Appliance| {
        if let (Some(listen), None) = (admin, &model.admin) {
            model.admin = Some(Admin {
                listen,
                ..Admin::default()
            });
        }
    };
    with_admin(&mut model);
    if let Err(d) = crate::config::validate(&model) {
        eprintln!("{}", d.one_line("appliance"));
        return ExitCode::FAILURE;
    }
    if let Err(m) = logging::init_error_log(model.global.error_log.as_ref()) {
        eprintln!("appliance: [emerg] {m}");
        return ExitCode::FAILURE;
    }
    // What the config asks for that the appliance serves without, where the operator looks.
    for line in warnings {
        tracing::warn!("{line}");
    }
    let reload_path: PathBuf = path.to_path_buf();
    let reload_options = options.clone();
    let reload: Reload = Arc::new(move || {
        let mut model = crate::compile::compile_file(&reload_path, &reload_options)
            .map_err(|f| *f.diagnostic)?
            .model;
        with_admin(&mut model);
        crate::config::validate(&model)?;
        Ok(model)
    });
    let run = RunOptions {
        daemon: model.global.daemon.unwrap_or(false),
        program: "appliance".to_string(),
        ..run.clone()
    };
    match crate::process::run(model, &run, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(d) => {
            eprint!("{}", crate::process::startup_message(&d, &run));
            ExitCode::FAILURE
        }
    }
}

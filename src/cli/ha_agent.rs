//! `appliance ha-agent`: the HA side alone, with an HTTP probe as its self-check. It stands in
//! for `appliance run` in tests and benchmarks until the data plane runs the monitor itself
//! (through `ha::spawn`, with the data plane's own health).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::compile::Options;
use crate::ha::{self, HttpProbe};

pub fn run(config: &Path, probe: &str, status_file: Option<PathBuf>) -> ExitCode {
    let compiled = match super::compile(config, &Options::default()) {
        Ok(c) => c,
        Err(failed) => {
            super::print_failure(&failed, "appliance");
            return ExitCode::FAILURE;
        }
    };
    let Some(ha_config) = compiled.model.ha else {
        eprintln!(
            "appliance: [emerg] {} has no [ha] section",
            config.display()
        );
        return ExitCode::FAILURE;
    };
    let probe = match HttpProbe::new(probe, ha_config.heartbeat_interval.get()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("appliance: [emerg] {e}");
            return ExitCode::FAILURE;
        }
    };
    // As `appliance run` logs (APPLIANCE_LOG or RUST_LOG, default info), without colour
    // codes when standard error is a file: the tests and benchmarks read these logs.
    let filter = std::env::var("APPLIANCE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("appliance: [emerg] cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let handle = match ha::spawn(&ha_config, Arc::new(probe)).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("appliance: [emerg] {e}");
                return ExitCode::FAILURE;
            }
        };
        let board = handle.board();
        let writer = status_file.map(|path| {
            tokio::spawn(async move {
                loop {
                    write_status(&path, &board.to_json());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        });
        wait_for_signal().await;
        handle.shutdown().await;
        if let Some(w) = writer {
            w.abort();
        }
        ExitCode::SUCCESS
    })
}

/// Replaces the file in one step, so a reader never sees half a document.
fn write_status(path: &Path, json: &str) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, json).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

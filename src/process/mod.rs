//! The process around the data plane, run the way operators run nginx: listening sockets bound
//! before anything else (and handed over across upgrades), `daemon on`, the pid file, systemd's
//! readiness protocol, and a graceful stop that waits for requests in flight.

pub mod daemon;
pub mod ha;
pub mod notify;
pub mod pidfile;
pub mod services;
pub mod sockets;
pub mod upgrade;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora::server::{ExecutionPhase, RunArgs};
use pingora::services::background::background_service;

use crate::compile::diag::Diagnostic;
use crate::config::Appliance;
use crate::proxy::runtime::Runtime;
use crate::proxy::signals::{NginxSignals, Reload};
use crate::proxy::{build_server, logging, metrics, Loaded, RunOptions};
use crate::sync::lock;
use pidfile::PidFile;

/// Serves `model` until a signal stops it. Errors before serving are returned (and, under
/// `daemon on`, printed by the waiting parent, which exits 1).
pub fn run(model: Appliance, options: &RunOptions, reload: Reload) -> Result<(), Diagnostic> {
    let runtime = Runtime::build(&model)?;
    let loaded = Loaded::new(model)?;
    let specs = sockets::specs(&loaded.model, &runtime);
    // A process started by a reload or SIGUSR2 is told where its sockets arrive in its
    // environment, even when its command line says `--upgrade`.
    let sock = (options.upgrade && !upgrade::is_successor()).then(|| {
        options
            .upgrade_sock
            .clone()
            .unwrap_or_else(|| "/tmp/pingora_upgrade.sock".into())
    });
    let inherited = upgrade::inherited_sockets(sock.as_deref()).map_err(Diagnostic::error)?;
    let successor = !inherited.is_empty() || upgrade::is_successor();
    let bound = sockets::bind_all(&specs, inherited)?;
    if bound.inherited > 0 {
        tracing::info!(
            "took over {} listening socket(s) from the previous process",
            bound.inherited
        );
    }
    // nginx forks after binding, so a bind error reaches the operator's terminal; a process
    // that takes over from another is a daemon already.
    let parent = if options.daemon && !successor {
        let parent = daemon::daemonize().map_err(Diagnostic::error)?;
        logging::error_log().redirect_stderr();
        Some(parent)
    } else {
        None
    };
    let parent = Arc::new(Mutex::new(parent));
    let pid_file = loaded
        .model
        .global
        .pid
        .clone()
        .or_else(|| options.default_pid_file.clone())
        .map(PidFile::new);
    let started = pid_file
        .as_ref()
        .map_or(Ok(()), |p| p.write_own().map_err(Diagnostic::error))
        .and_then(|()| {
            let parent = parent.clone();
            let on_ready = move || {
                tracing::info!("serving (pid {})", std::process::id());
                notify::ready();
                upgrade::announce_ready();
                if let Some(parent) = lock(&parent).take() {
                    parent.ready();
                }
            };
            build_server(
                loaded,
                runtime,
                sockets::into_raw(bound),
                Box::new(on_ready),
            )
        });
    let (server, plane) = match started {
        Ok(s) => s,
        Err(d) => {
            if let Some(p) = &pid_file {
                p.remove_if_own();
            }
            // Under `daemon on` the parent waiting on the terminal says why and exits 1.
            if let Some(parent) = lock(&parent).take() {
                parent.failed(startup_message(&d, options).trim_end());
                std::process::exit(1);
            }
            return Err(d);
        }
    };
    let mut server = server;
    if let Some(ha) = plane.loaded.load().model.ha.clone() {
        server.add_service(background_service(
            "ha",
            ha::HaService::new(ha, plane.clone()),
        ));
    }
    watch_graceful_stop(&server, plane.loaded.clone(), pid_file.clone());
    let signals = NginxSignals::new(plane, reload, pid_file.clone());
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    finish(pid_file.as_ref());
    Ok(())
}

/// How a startup error is shown: nginx's error log line, or `appliance: [emerg] ...`.
pub fn startup_message(d: &Diagnostic, options: &RunOptions) -> String {
    if !options.nginx_messages {
        return format!("{}\n", d.one_line(&options.program));
    }
    let at = match &d.origin {
        Some(o) if o.line > 0 => format!(" in {}:{}", o.file, o.line),
        _ => String::new(),
    };
    logging::error_line("emerg", &format!("{}{at}", d.message))
}

/// What an exit leaves behind: the access logs written out, the pid file gone (unless a
/// successor wrote its own there).
fn finish(pid_file: Option<&PidFile>) {
    logging::flush_all();
    if let Some(p) = pid_file {
        p.remove_if_own();
    }
    tracing::info!("exit");
}

/// Pingora's graceful stop stops accepting, then waits a fixed grace period. nginx waits for
/// the requests in flight and the stream sessions instead, and exits as soon as they are done,
/// or once `worker_shutdown_timeout` has passed, closing what is left: so does this watcher,
/// with the timeout of the config serving when the stop begins.
fn watch_graceful_stop(
    server: &pingora::server::Server,
    loaded: Arc<ArcSwap<Loaded>>,
    pid_file: Option<PidFile>,
) {
    let mut phases = server.watch_execution_phase();
    let spawned = std::thread::Builder::new()
        .name("graceful-stop".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownGracePeriod) => {
                    let limit = loaded.load().model.global.shutdown_timeout;
                    let deadline = limit.map(|l| Instant::now() + l.get());
                    // First the accept loops end, so that what they accepted last is counted.
                    let loops_end = Instant::now() + Duration::from_secs(2);
                    while crate::proxy::workers::accept_loops_running() > 0
                        && Instant::now() < loops_end
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    while metrics::in_flight() > 0
                        || crate::proxy::edge::awaiting_first_byte() > 0
                        || crate::proxy::stream::open_sessions() > 0
                        || ha::stop_work_pending()
                    {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            tracing::info!("the shutdown timeout passed: closing what is open");
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    finish(pid_file.as_ref());
                    std::process::exit(0);
                }
                Ok(ExecutionPhase::Terminated) => return,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot watch for a graceful stop: {e}");
    }
}

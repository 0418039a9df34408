//! Signals as nginx treats them:
//!
//! - HUP: reload. The new config is compiled, validated and built (DNS included) first; if
//!   that fails the old one keeps serving and the error is logged with its location. If the
//!   listening sockets are the same, the new runtime is swapped in: new requests use it, those
//!   in flight finish on the old one. If they changed, an in-process swap cannot serve them, so
//!   the binary is started again on the same sockets (the ones it keeps are handed over, new
//!   ones bound fresh) and this process stops gracefully once the new one serves: no socket
//!   that stays configured is ever closed. So it is when the worker threads' settings change
//!   (how many, their CPUs, their priority), as the threads live as long as the process.
//! - QUIT: graceful stop (in-flight requests finish); TERM and INT: fast stop.
//! - USR1: reopen the log files.
//! - USR2: binary upgrade: start the binary at the same path on the same sockets and move the
//!   pid file to `<pid>.oldbin`; this process serves on until it gets QUIT.
//! - WINCH: nginx stops its workers; there are none here, so it is ignored.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

use super::runtime::Runtime;
use super::{metrics, DataPlane, Loaded};
use crate::compile::diag::Diagnostic;
use crate::config::Appliance;
use crate::process::{notify, pidfile::PidFile, sockets, upgrade};

/// Compiles the config again, from the same file, for a reload.
pub type Reload = Arc<dyn Fn() -> Result<Appliance, Diagnostic> + Send + Sync>;

pub struct NginxSignals {
    plane: DataPlane,
    reload: Reload,
    pid_file: Option<PidFile>,
    /// A successor has taken over (systemd's MAINPID points at it now).
    handed_over: Arc<AtomicBool>,
}

/// What a reload ended with.
enum Reloaded {
    /// Swapped in, or refused: this process serves on.
    InProcess,
    /// A new process serves the new listeners; this one stops.
    Upgraded,
}

impl NginxSignals {
    pub fn new(plane: DataPlane, reload: Reload, pid_file: Option<PidFile>) -> Self {
        NginxSignals {
            plane,
            reload,
            pid_file,
            handed_over: Arc::new(AtomicBool::new(false)),
        }
    }

    async fn reload(&self) -> Reloaded {
        tracing::info!("signal 1 (SIGHUP) received, reconfiguring");
        notify::reloading();
        let outcome = self.try_reload().await;
        match &outcome {
            Ok(Reloaded::Upgraded) => {
                metrics::metrics()
                    .reloads
                    .with_label_values(&["upgrade"])
                    .inc();
            }
            Ok(Reloaded::InProcess) => {
                metrics::metrics().reloads.with_label_values(&["ok"]).inc();
                notify::reloaded();
            }
            Err(d) => {
                metrics::metrics()
                    .reloads
                    .with_label_values(&["failed"])
                    .inc();
                log_diagnostic(d, "; the running configuration is kept");
                notify::reloaded();
            }
        }
        outcome.unwrap_or(Reloaded::InProcess)
    }

    async fn try_reload(&self) -> Result<Reloaded, Diagnostic> {
        let reload = self.reload.clone();
        let built =
            tokio::task::spawn_blocking(move || -> Result<(Loaded, Runtime), Diagnostic> {
                let model = reload()?;
                let runtime = Runtime::build(&model)?;
                Ok((Loaded::new(model)?, runtime))
            })
            .await
            .map_err(|e| Diagnostic::error(format!("the reload task failed: {e}")))??;
        let (loaded, runtime) = built;
        super::logging::error_log()
            .configure(loaded.model.global.error_log.as_ref())
            .map_err(Diagnostic::error)?;
        let current = self.plane.loaded.load();
        let current_runtime = self.plane.runtime.load();
        let before: Vec<String> = sockets::specs(&current.model, &current_runtime)
            .into_keys()
            .collect();
        let after: Vec<String> = sockets::specs(&loaded.model, &runtime)
            .into_keys()
            .collect();
        if current.model.ha != loaded.model.ha {
            tracing::warn!(
                "reload: the [ha] section changed; the HA monitor keeps its settings until a restart"
            );
        }
        let same_workers =
            current.model.global.worker_settings() == loaded.model.global.worker_settings();
        if before == after
            && same_workers
            && fixed_at_accept(&current_runtime) == fixed_at_accept(&runtime)
        {
            self.plane.apply(loaded, runtime);
            tracing::info!("reconfigured: new requests use the new configuration");
            return Ok(Reloaded::InProcess);
        }
        if same_workers {
            tracing::info!(
                "the listening sockets change ({} -> {}): starting a new process on them",
                before.join(" "),
                after.join(" ")
            );
        } else {
            // nginx starts new worker processes on every reload; here the worker threads last
            // as long as the process, so new ones take a new process.
            tracing::info!(
                "the worker settings change (worker_processes, worker_cpu_affinity or \
                 worker_priority): starting a new process with them"
            );
        }
        let successor = self
            .start_successor()
            .await
            .map_err(|e| Diagnostic::error(format!("the listeners changed and {e}")))?;
        tracing::info!(
            "process {} serves the new configuration; this one stops gracefully",
            successor.pid
        );
        Ok(Reloaded::Upgraded)
    }

    async fn start_successor(&self) -> Result<upgrade::Successor, String> {
        let Some(table) = self.plane.listen_fds() else {
            return Err("the listening sockets are not up yet".into());
        };
        let successor = tokio::task::spawn_blocking(move || upgrade::start_successor(&table))
            .await
            .map_err(|e| format!("the upgrade task failed: {e}"))??;
        self.handed_over.store(true, Ordering::SeqCst);
        Ok(successor)
    }

    /// SIGUSR2: a new binary on the same sockets; this process serves on until QUIT.
    async fn binary_upgrade(&self) {
        tracing::info!("signal 12 (SIGUSR2) received, changing binary");
        if let Some(p) = &self.pid_file {
            if let Err(e) = p.move_to_oldbin() {
                tracing::error!(
                    nginx_level = "alert",
                    "rename() \"{}\" to \"{}\" failed ({}); the binary is not changed",
                    p.path().display(),
                    p.oldbin().display(),
                    crate::compile::describe_io_error(&e)
                );
                return;
            }
        }
        match self.start_successor().await {
            Ok(successor) => {
                tracing::info!(
                    "new binary started as process {}; this one serves until SIGQUIT",
                    successor.pid
                );
                self.watch_successor(successor);
            }
            Err(e) => {
                tracing::error!(nginx_level = "alert", "changing the binary failed: {e}");
                if let Some(p) = &self.pid_file {
                    p.restore_from_oldbin();
                }
            }
        }
    }

    /// When a successor started by SIGUSR2 exits while this process still serves, this one is
    /// the main process again, with its pid file back, as nginx does.
    fn watch_successor(&self, mut successor: upgrade::Successor) {
        let pid_file = self.pid_file.clone();
        let handed_over = self.handed_over.clone();
        let stopping = self.plane.clone();
        tokio::task::spawn_blocking(move || {
            let status = successor.child.wait();
            if !stopping.serving() {
                return;
            }
            tracing::warn!(
                "the new binary (process {}) exited ({}); this process is the main one again",
                successor.pid,
                status.map_or_else(|e| e.to_string(), |s| s.to_string())
            );
            handed_over.store(false, Ordering::SeqCst);
            if let Some(p) = &pid_file {
                p.restore_from_oldbin();
            }
            notify::ready();
        });
    }

    /// A stop begins: keep-alive ends after the current request, `/healthz` fails, and systemd
    /// hears about it unless a successor is the main process now.
    fn begin_stop(&self, how: &str) {
        tracing::info!("{how}");
        super::start_draining();
        self.plane.set_serving(false);
        if !self.handed_over.load(Ordering::SeqCst) {
            notify::stopping();
        }
    }
}

/// Logs a diagnostic as nginx's error log shows one: `[emerg] message in file:line`.
pub fn log_diagnostic(d: &Diagnostic, suffix: &str) {
    let at = d
        .origin
        .as_ref()
        .map(|o| format!(" in {}:{}", o.file, o.line))
        .unwrap_or_default();
    tracing::error!(nginx_level = "emerg", "{}{at}{suffix}", d.message);
}

#[async_trait]
impl ShutdownSignalWatch for NginxSignals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut hup), Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        let (Ok(mut usr1), Ok(mut usr2), Ok(mut winch)) = (
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
            signal(SignalKind::window_change()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    if let Reloaded::Upgraded = self.reload().await {
                        super::start_draining();
                        return ShutdownSignal::GracefulTerminate;
                    }
                }
                _ = quit.recv() => {
                    self.begin_stop("signal 3 (SIGQUIT) received, shutting down gracefully");
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = term.recv() => {
                    self.begin_stop("signal 15 (SIGTERM) received, exiting");
                    return ShutdownSignal::FastShutdown;
                }
                _ = int.recv() => {
                    self.begin_stop("signal 2 (SIGINT) received, exiting");
                    return ShutdownSignal::FastShutdown;
                }
                _ = usr1.recv() => {
                    tracing::info!("signal 10 (SIGUSR1) received, reopening logs");
                    tokio::task::spawn_blocking(super::logging::reopen_all).await.ok();
                }
                _ = usr2.recv() => self.binary_upgrade().await,
                _ = winch.recv() => {
                    tracing::info!(
                        "signal 28 (SIGWINCH) received: there are no worker processes to stop; ignored"
                    );
                }
            }
        }
    }
}

/// What the listening services fix when they are built: per socket, whether connections start
/// with TLS, HTTP/2 or a PROXY header (and the stream server a stream socket leads to). A
/// reload that changes any of them needs new services, so it takes the new-process path.
fn fixed_at_accept(runtime: &Runtime) -> Vec<(String, bool, bool, bool, usize)> {
    let http = runtime.sockets.iter().map(|s| {
        (
            sockets::key(&s.bind),
            s.ssl,
            s.http2,
            s.proxy_protocol,
            usize::MAX,
        )
    });
    let stream = runtime.streams.iter().enumerate().flat_map(|(i, s)| {
        s.listen
            .iter()
            .map(move |l| (sockets::key(&l.address), l.ssl, false, l.proxy_protocol, i))
    });
    http.chain(stream).collect()
}

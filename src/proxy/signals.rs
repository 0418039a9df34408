//! Signals as nginx treats them: HUP reloads the config, QUIT stops gracefully, TERM and INT
//! stop at once. A reload compiles and validates the new config first; if it fails, the old one
//! keeps serving and the error is logged with its location.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

use super::runtime::Runtime;
use super::DataPlane;
use crate::compile::diag::Diagnostic;

/// Compiles the config again, from the same file, for a reload.
pub type Reload = Arc<dyn Fn() -> Result<Runtime, Diagnostic> + Send + Sync>;

pub struct NginxSignals {
    plane: DataPlane,
    reload: Reload,
}

impl NginxSignals {
    pub fn new(plane: DataPlane, reload: Reload) -> Self {
        NginxSignals { plane, reload }
    }

    async fn reload(&self) {
        let reload = self.reload.clone();
        let result = tokio::task::spawn_blocking(move || reload()).await;
        let next = match result {
            Ok(Ok(runtime)) => runtime,
            Ok(Err(d)) => {
                tracing::error!(
                    "{}; the running configuration is kept",
                    d.one_line("appliance")
                );
                return;
            }
            Err(e) => {
                tracing::error!("reload failed: {e}; the running configuration is kept");
                return;
            }
        };
        let current = self.plane.runtime.load();
        let binds = |r: &Runtime| {
            let mut binds: Vec<_> = r.sockets.iter().map(|s| (s.bind.clone(), s.ssl)).collect();
            // Stream listeners too: their TLS and PROXY settings are fixed with the socket.
            binds.extend(r.streams.iter().flat_map(|s| {
                s.listen
                    .iter()
                    .map(|l| (l.address.clone(), l.ssl || l.proxy_protocol))
            }));
            binds
        };
        if binds(&current) != binds(&next) {
            tracing::error!(
                "reload: the listen addresses changed; a reload keeps the sockets it has, so \
                 restart (or upgrade with SIGUSR2) to change them; the running configuration is kept"
            );
            return;
        }
        super::drain::hand_over(&current, &next);
        self.plane.runtime.store(Arc::new(next));
        tracing::info!("reload: new configuration in use");
    }
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
        loop {
            tokio::select! {
                _ = hup.recv() => self.reload().await,
                _ = quit.recv() => return ShutdownSignal::GracefulTerminate,
                _ = term.recv() => return ShutdownSignal::FastShutdown,
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
    }
}

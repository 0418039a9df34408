//! The HA pair's monitor as a service of the process: it starts with the listeners, reads this
//! node's fitness from the data plane at every heartbeat, shows its state under `/status`, and on
//! a graceful stop hands the address to the peer before the process exits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::Ha;
use crate::ha::{self, Fitness};
use crate::proxy::DataPlane;

/// Work a graceful stop must wait for besides requests in flight: an HA hand-over under way.
static STOP_WORK: AtomicUsize = AtomicUsize::new(0);

/// Whether something (the HA hand-over) still has to finish before the process may exit.
pub fn stop_work_pending() -> bool {
    STOP_WORK.load(Ordering::SeqCst) > 0
}

pub struct HaService {
    config: Ha,
    plane: DataPlane,
}

impl HaService {
    pub fn new(config: Ha, plane: DataPlane) -> Self {
        HaService { config, plane }
    }
}

#[async_trait]
impl BackgroundService for HaService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // The monitor starts once the listeners serve: a first self-check before that would
        // put the node in fault and, through the hold-down, delay a take-over for nothing.
        while !self.plane.serving() {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
                _ = shutdown.changed() => return,
            }
        }
        ha::on_transition(|from, to| {
            crate::proxy::metrics::ha_transition(from.as_str(), to.as_str())
        });
        let plane = self.plane.clone();
        let health: Arc<dyn ha::DataPlaneHealth> = Arc::new(move || fitness(&plane));
        // A successor started by SIGUSR2 (or a reload that moves listeners) finds the heartbeat
        // port held by its predecessor until that one exits: it keeps trying meanwhile.
        let mut attempts = 0u32;
        let handle = loop {
            match ha::spawn(&self.config, health.clone()).await {
                Ok(h) => break h,
                Err(e) => {
                    if attempts % 30 == 0 {
                        tracing::error!(
                            "ha: cannot start, so this node does not hold {} yet (retrying every second): {e}",
                            self.config.vip
                        );
                    }
                    attempts += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        tracing::info!(
            "ha: {:?} mode, VIP {}, watching the peer at {}",
            self.config.mode,
            self.config.vip,
            self.config.peer
        );
        let board = handle.board();
        crate::admin::register_status(
            "ha",
            Arc::new(move || serde_json::to_value(&*board.get()).unwrap_or_default()),
        );
        // Counted from here so a stop that begins now waits for the hand-over below.
        STOP_WORK.fetch_add(1, Ordering::SeqCst);
        let _ = shutdown.changed().await;
        tracing::info!("ha: stopping; a master hands the address to its peer first");
        handle.shutdown().await;
        STOP_WORK.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The self-check the HA side asks for at every heartbeat: the node is fit when its listeners
/// serve and every pool that takes traffic has a server it may use. (The admin API's health
/// gates are left out: they include this node's own HA role.)
pub fn fitness(plane: &DataPlane) -> Fitness {
    let reasons = crate::admin::data_plane_problems(plane);
    if reasons.is_empty() {
        Fitness::Fit
    } else {
        Fitness::Unfit(reasons.join("; "))
    }
}

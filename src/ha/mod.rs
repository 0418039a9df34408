//! The HA pair: two appliances that watch each other with their own heartbeat and move a floating
//! address (a secondary private IP with its Elastic IP on EC2, or an address on a local
//! interface) to whichever of them should serve. It replaces keepalived and the seed's
//! `vip_monitor.sh`.
//!
//! - [`state`]: the rules, as a pure function;
//! - [`heartbeat`]: the peer protocol;
//! - [`monitor`]: the loop that feeds the rules and carries out their decisions;
//! - [`ec2`] and [`local`]: the two ways to move the address, behind [`VipBackend`];
//! - [`fitness`]: what the data plane tells us about itself;
//! - [`status`]: what the admin side reads.
//!
//! The data plane starts it with [`spawn`] and keeps the [`HaHandle`].

mod announce;
pub mod ec2;
pub mod fitness;
pub mod heartbeat;
pub mod local;
mod monitor;
#[cfg(test)]
mod sim;
pub mod state;
pub mod status;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use fitness::{DataPlaneHealth, Fitness, HttpProbe};
pub use state::{Holder, State};
pub use status::{Status, StatusBoard};

use crate::aws::AwsError;
use crate::config::{Ha, HaMode};

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("instance metadata (IMDSv2) {path}: {detail}")]
    Imds { path: String, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("netlink {context}: {detail}")]
    Netlink { context: String, detail: String },
    /// This node cannot run the configured mode (e.g. its interface has no subnet).
    #[error("{0}")]
    Setup(String),
    /// The arbiter, read back after a take-over, does not show the address here.
    #[error("take-over did not stick: {0}")]
    NotTaken(String),
}

impl HaError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> HaError {
        HaError::Io {
            context: context.into(),
            source,
        }
    }
}

/// What the arbiter said about the address: the holder for the rules, and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub holder: Holder,
    pub detail: String,
}

/// A way to move the address. Every method is idempotent: claiming an address already held, or
/// releasing one not held, does nothing.
#[async_trait]
pub trait VipBackend: Send {
    /// Asks the arbiter who holds the address. With `liveness`, also find out whether another
    /// holder is alive (in ec2 mode an extra call, so only asked for when the rules need it).
    async fn read(&mut self, liveness: bool) -> Result<Reading, HaError>;
    /// Takes the address and reads ownership back; fails unless the arbiter then shows it here.
    async fn claim(&mut self) -> Result<Reading, HaError>;
    /// Called about once per heartbeat interval while master (local mode renews the address's
    /// lease here).
    async fn keep(&mut self) -> Result<(), HaError>;
    /// Gives the address up if this node holds it.
    async fn release(&mut self) -> Result<(), HaError>;
    /// The node id to use when the config sets none (the instance id, the host name).
    fn default_node_id(&self) -> String;
    /// Whether the arbiter's "a live node holds it" proves that node's agent alive (see
    /// [`state::Settings::live_holder_is_alive_agent`]).
    fn live_holder_is_alive_agent(&self) -> bool;
}

/// Who hears about role changes besides the log (the process's metrics): set once.
type TransitionHook = Box<dyn Fn(State, State) + Send + Sync>;
static TRANSITION_HOOK: std::sync::OnceLock<TransitionHook> = std::sync::OnceLock::new();

/// Calls `hook(from, to)` at every state change of the monitor, from now on. The first hook
/// set stays.
pub fn on_transition(hook: impl Fn(State, State) + Send + Sync + 'static) {
    let _ = TRANSITION_HOOK.set(Box::new(hook));
}

pub(crate) fn notify_transition(from: State, to: State) {
    if let Some(hook) = TRANSITION_HOOK.get() {
        hook(from, to);
    }
}

/// The running HA side. Dropping it leaves the tasks running; call [`HaHandle::shutdown`] to
/// hand the address over and stop.
pub struct HaHandle {
    board: Arc<StatusBoard>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HaHandle {
    /// The current status snapshot.
    pub fn status(&self) -> Arc<Status> {
        self.board.get()
    }

    /// The status board itself, for the admin side to keep.
    pub fn board(&self) -> Arc<StatusBoard> {
        self.board.clone()
    }

    /// Stops the monitor: a master tells its peer it is leaving, waits briefly for the peer to
    /// take over, then releases the address.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Whether the monitor has stopped (it stops only when asked or on a panic).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts the HA side for a validated `[ha]` section: discovers this node (instance metadata in
/// ec2 mode, the interface in local mode), binds the heartbeat socket and runs the monitor on the
/// current tokio runtime. `health` is the data plane's self-check.
pub async fn spawn(ha: &Ha, health: Arc<dyn DataPlaneHealth>) -> Result<HaHandle, HaError> {
    let backend: Box<dyn VipBackend> = match ha.mode {
        HaMode::Ec2 => Box::new(ec2::Ec2Vip::discover(ha).await?),
        HaMode::Local => Box::new(local::LocalVip::open(ha).await?),
    };
    spawn_with_backend(ha, backend, health).await
}

/// [`spawn`] with a back end built by the caller (tests, or an EC2 client with its own
/// credentials).
pub async fn spawn_with_backend(
    ha: &Ha,
    backend: Box<dyn VipBackend>,
    health: Arc<dyn DataPlaneHealth>,
) -> Result<HaHandle, HaError> {
    let (stop, stop_rx) = watch::channel(false);
    let (board, task) = monitor::start(ha, backend, health, stop_rx).await?;
    Ok(HaHandle { board, stop, task })
}

//! What the admin side reads about the pair: one snapshot, replaced whole on every change, that
//! serializes to JSON as it stands.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::state::{Holder, State};
use crate::config::HaMode;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    pub mode: HaMode,
    pub node_id: String,
    pub priority: u8,
    pub vip: IpAddr,
    pub state: State,
    /// The latest self-check; `None` before the first one.
    pub fit: Option<bool>,
    /// Why the self-check fails, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unfit_reason: Option<String>,
    /// When the node entered its current state (ms since the Unix epoch).
    pub since_unix_ms: u64,
    /// Why it did.
    pub reason: String,
    /// What the latest round of the state machine concluded (e.g. "waiting out the hold-down").
    pub decision: String,
    pub transitions: u64,
    pub peer: PeerStatus,
    /// Who held the VIP the last time this node asked the arbiter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vip_holder: Option<HolderStatus>,
    /// The last failure of the back end (EC2 call, netlink, announcement), if any since the
    /// last success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeerStatus {
    pub address: SocketAddr,
    /// Heard within the failure window.
    pub alive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_heard_unix_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fit: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HolderStatus {
    /// `us`, `other`, `nobody` or `unknown`.
    pub holder: &'static str,
    /// What the arbiter said, e.g. `eni-0abc (i-0def), Elastic IP on eni-0abc`.
    pub detail: String,
    pub read_unix_ms: u64,
}

impl HolderStatus {
    pub fn new(holder: Holder, detail: String) -> HolderStatus {
        HolderStatus {
            holder: match holder {
                Holder::Unknown => "unknown",
                Holder::Nobody => "nobody",
                Holder::Us => "us",
                Holder::Other { .. } => "other",
            },
            detail,
            read_unix_ms: unix_ms(SystemTime::now()),
        }
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The shared, always-readable status. Readers get an `Arc` to a consistent snapshot without
/// ever blocking the monitor.
#[derive(Debug)]
pub struct StatusBoard(ArcSwap<Status>);

impl StatusBoard {
    pub fn new(initial: Status) -> Arc<StatusBoard> {
        Arc::new(StatusBoard(ArcSwap::from_pointee(initial)))
    }

    pub fn get(&self) -> Arc<Status> {
        self.0.load_full()
    }

    /// Applies a change to a copy and publishes it (only the monitor writes).
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        let mut next = Status::clone(&self.0.load());
        change(&mut next);
        if next != **self.0.load() {
            self.0.store(Arc::new(next));
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&*self.get()).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

//! The high-availability pair: who watches whom, and which address moves on failover.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::origin::Origin;
use super::units::Duration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ha {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    pub mode: HaMode,
    /// This node's name in heartbeats: it breaks ties between equal priorities, so the two nodes
    /// must differ. By default the instance id (ec2) or the host name (local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// The peer's heartbeat address.
    pub peer: SocketAddr,
    /// Where this node listens for the peer's heartbeats; by default any address, the peer's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    /// Higher wins when both nodes are healthy (1-255).
    #[serde(default = "defaults::priority")]
    pub priority: u8,
    #[serde(default = "defaults::heartbeat_interval")]
    pub heartbeat_interval: Duration,
    /// Missed heartbeats before the peer is declared dead.
    #[serde(default = "defaults::failure_threshold")]
    pub failure_threshold: u32,
    /// Take the address back from a lower-priority master when this node recovers.
    #[serde(default = "defaults::preempt")]
    pub preempt: bool,
    /// How long a node waits after a transition before it may make another one.
    #[serde(default = "defaults::hold_down")]
    pub hold_down: Duration,
    /// How often a master reads back who holds the VIP (the EC2 API, or an ARP / neighbour
    /// probe in local mode), so that it notices another node took it and does not fight.
    #[serde(default = "defaults::ownership_check_interval")]
    pub ownership_check_interval: Duration,
    /// The floating address: a secondary private IP (ec2) or a local address (local).
    pub vip: IpAddr,
    /// Prefix length of the VIP on the interface (local mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip_prefix: Option<u8>,
    /// The Elastic IP to move with the VIP (ec2 mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip_allocation_id: Option<String>,
    /// The interface the VIP is added to (local mode), e.g. `eth0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// A shared secret that authenticates heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Overrides for tests and unusual networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imds_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HaMode {
    /// Move a secondary private IP (and an Elastic IP) through the EC2 API.
    Ec2,
    /// Add the address to a local interface through netlink and announce it.
    Local,
}

mod defaults {
    use super::Duration;
    pub fn priority() -> u8 {
        100
    }
    pub fn heartbeat_interval() -> Duration {
        Duration::from_millis(200)
    }
    pub fn failure_threshold() -> u32 {
        3
    }
    pub fn preempt() -> bool {
        true
    }
    pub fn hold_down() -> Duration {
        Duration::from_secs(2)
    }
    pub fn ownership_check_interval() -> Duration {
        Duration::from_secs(5)
    }
}

//! The local back end: the address goes on an interface of this host through netlink and is
//! announced to the segment; the segment itself is the arbiter (who answers ARP or neighbour
//! solicitations for the address).
//!
//! The address is *leased*: it is added with a lifetime of about the failure window and renewed
//! while this node is master, so that the kernel removes it by itself when the agent dies
//! without releasing it (kill -9, a hung process). A node that still answers for the address
//! therefore has a live agent, which is what lets the peer trust the segment as the arbiter
//! when the heartbeat link is cut.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, CacheInfo};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::Handle;
use tokio::task::JoinHandle;

use super::announce::{self, mac_text, Link, Seen};
use super::state::Holder;
use super::{HaError, Reading, VipBackend};
use crate::config::Ha;

/// How long to listen for an answer to a probe. Neighbours on a segment answer in well under a
/// millisecond; this leaves room for a loaded host without slowing a take-over much.
const PROBE_WAIT: Duration = Duration::from_millis(50);
/// When to repeat the announcement after a take-over, so that a neighbour that missed the first
/// one (or an ARP cache that was mid-update) still learns the new holder.
const ANNOUNCE_AGAIN: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_secs(1),
];

pub struct LocalVip {
    handle: Handle,
    link: Link,
    vip: IpAddr,
    prefix: u8,
    lease_secs: u32,
    repeats: Option<JoinHandle<()>>,
}

fn netlink(context: &str, e: impl std::fmt::Display) -> HaError {
    HaError::Netlink {
        context: context.to_string(),
        detail: e.to_string(),
    }
}

impl LocalVip {
    /// Finds the interface named in `[ha] interface`.
    pub async fn open(ha: &Ha) -> Result<LocalVip, HaError> {
        let name = ha.interface.clone().unwrap_or_default();
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| HaError::io("opening a netlink socket", e))?;
        tokio::spawn(connection);
        let context = format!("looking up interface \"{name}\"");
        let message = handle
            .link()
            .get()
            .match_name(name.clone())
            .execute()
            .try_next()
            .await
            .map_err(|e| netlink(&context, e))?
            .ok_or_else(|| netlink(&context, "no such interface"))?;
        let mac = message
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
                _ => None,
            })
            .ok_or_else(|| netlink(&context, "the interface has no Ethernet address"))?;
        let window = ha.heartbeat_interval.get() * ha.failure_threshold;
        Ok(LocalVip {
            handle,
            link: Link {
                name,
                index: message.header.index,
                mac,
            },
            vip: ha.vip,
            prefix: ha
                .vip_prefix
                .unwrap_or(if ha.vip.is_ipv4() { 32 } else { 128 }),
            lease_secs: lease_secs(window),
            repeats: None,
        })
    }

    /// Whether the address is on the interface now.
    pub async fn holds(&self) -> Result<bool, HaError> {
        let found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.link.index)
            .set_address_filter(self.vip)
            .execute()
            .try_next()
            .await
            .map_err(|e| netlink("reading addresses", e))?;
        Ok(found.is_some())
    }

    /// Adds the address, or renews its lease if it is there.
    async fn lease(&self) -> Result<(), HaError> {
        let mut request = self
            .handle
            .address()
            .add(self.link.index, self.vip, self.prefix)
            .replace();
        let mut lifetime = CacheInfo::default();
        lifetime.ifa_valid = self.lease_secs;
        lifetime.ifa_preferred = self.lease_secs;
        let attributes = &mut request.message_mut().attributes;
        attributes.push(AddressAttribute::CacheInfo(lifetime));
        if self.vip.is_ipv6() {
            // We probed the segment ourselves; the kernel's own duplicate address detection
            // would keep the address unusable for a second.
            attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request.execute().await.map_err(|e| {
            netlink(
                &format!("adding {}/{} to {}", self.vip, self.prefix, self.link.name),
                e,
            )
        })
    }

    async fn remove(&self) -> Result<(), HaError> {
        let mut found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.link.index)
            .set_address_filter(self.vip)
            .execute();
        while let Some(message) = found
            .try_next()
            .await
            .map_err(|e| netlink("reading addresses", e))?
        {
            if let Err(e) = self.handle.address().del(message).execute().await {
                // The lease may have run out between the read and the delete.
                if self.holds().await? {
                    return Err(netlink(
                        &format!("removing {} from {}", self.vip, self.link.name),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn link(&self) -> &Link {
        &self.link
    }
}

/// The address outlives a dead agent by no more than the time its peer needs to notice the
/// death: the failure window, in the whole seconds the kernel counts lifetimes in.
fn lease_secs(window: Duration) -> u32 {
    (window.as_millis().div_ceil(1000) as u32).max(1)
}

#[async_trait]
impl VipBackend for LocalVip {
    async fn read(&mut self, _liveness: bool) -> Result<Reading, HaError> {
        let holds = self.holds().await?;
        let seen = announce::probe(&self.link, self.vip, PROBE_WAIT)
            .await
            .map_err(|e| {
                HaError::io(format!("probing for {} on {}", self.vip, self.link.name), e)
            })?;
        let ours = self.link.mac;
        let (holder, detail) = match (holds, seen) {
            // A prober is no rival for an address we hold: our kernel answers its probe, which
            // tells it the address is taken.
            (true, None | Some(Seen::Prober(_))) => {
                (Holder::Us, format!("on {} here", self.link.name))
            }
            (true, Some(Seen::Holder(m))) => (
                Holder::Other {
                    live: true,
                    we_win: ours > m,
                },
                format!("here and also answered for by {}", mac_text(&m)),
            ),
            (false, Some(Seen::Holder(m))) => (
                Holder::Other {
                    live: true,
                    we_win: false,
                },
                format!("answered for by {}", mac_text(&m)),
            ),
            (false, Some(Seen::Prober(m))) => (
                Holder::Other {
                    live: true,
                    we_win: ours > m,
                },
                format!("{} is probing for it", mac_text(&m)),
            ),
            (false, None) => (Holder::Nobody, "nobody answers for it".to_string()),
        };
        Ok(Reading { holder, detail })
    }

    async fn claim(&mut self) -> Result<Reading, HaError> {
        self.lease().await?;
        let announce_failed =
            |e| HaError::io(format!("announcing {} on {}", self.vip, self.link.name), e);
        announce::announce(&self.link, self.vip)
            .await
            .map_err(announce_failed)?;
        if let Some(old) = self.repeats.take() {
            old.abort();
        }
        let (link, vip) = (self.link.clone(), self.vip);
        self.repeats = Some(tokio::spawn(async move {
            let mut waited = Duration::ZERO;
            for at in ANNOUNCE_AGAIN {
                tokio::time::sleep(at - waited).await;
                waited = at;
                if let Err(e) = announce::announce(&link, vip).await {
                    tracing::warn!("ha: announcing {vip} on {} again failed: {e}", link.name);
                }
            }
        }));
        if !self.holds().await? {
            return Err(HaError::NotTaken(format!(
                "{} is not on {} after adding it",
                self.vip, self.link.name
            )));
        }
        Ok(Reading {
            holder: Holder::Us,
            detail: format!("on {} here", self.link.name),
        })
    }

    async fn keep(&mut self) -> Result<(), HaError> {
        self.lease().await
    }

    async fn release(&mut self) -> Result<(), HaError> {
        if let Some(repeats) = self.repeats.take() {
            repeats.abort();
        }
        self.remove().await
    }

    fn default_node_id(&self) -> String {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| mac_text(&self.link.mac))
    }

    fn live_holder_is_alive_agent(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_covers_the_failure_window_in_whole_seconds() {
        assert_eq!(lease_secs(Duration::from_millis(600)), 1);
        assert_eq!(lease_secs(Duration::from_millis(1000)), 1);
        assert_eq!(lease_secs(Duration::from_millis(1001)), 2);
        assert_eq!(lease_secs(Duration::from_secs(3)), 3);
    }
}

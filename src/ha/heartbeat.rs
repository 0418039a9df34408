//! The peer protocol: one small UDP datagram per heartbeat interval in each direction, saying who
//! the sender is, how it ranks, what state it is in and whether its own data plane is fit to
//! serve. With a shared `secret` each datagram carries an HMAC-SHA256 tag over all of it.
//!
//! Heartbeats are idempotent snapshots, so loss needs no recovery: the next one says the same.
//! Reordering is handled by numbering: a sender stamps each datagram with its start time (the
//! epoch) and a counter, and the receiver keeps only datagrams newer than the newest it has seen.
//! An authenticated datagram captured and replayed later is therefore ignored too.
//!
//! Layout (big-endian), version 1:
//!
//! ```text
//! 0   magic "APHA"        8   epoch (u64, ms since the Unix epoch when the sender started)
//! 4   version = 1         16  sequence (u64)
//! 5   flags: 1 fit,       24  VIP, 16 bytes (IPv4 as ::ffff:a.b.c.d)
//!     2 authenticated,    40  node id length n (1-64), then n bytes of node id
//!     4 hears its peer
//! 6   state: 0 init, 1 backup, 2 master, 3 fault
//! 7   priority            then, if authenticated, 32 bytes of HMAC-SHA256 over all the above
//! ```

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::state::{PeerView, Rank, State};

const MAGIC: &[u8; 4] = b"APHA";
const VERSION: u8 = 1;
const FLAG_FIT: u8 = 1;
const FLAG_AUTHENTICATED: u8 = 2;
const FLAG_HEARS_PEER: u8 = 4;
const HEADER: usize = 41;
const TAG: usize = 32;
pub const MAX_NODE_ID: usize = 64;
/// The largest datagram this protocol produces; receive buffers are this size plus slack so that
/// oversized datagrams are seen as such instead of truncated into something valid-looking.
pub const MAX_DATAGRAM: usize = HEADER + MAX_NODE_ID + TAG;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub node_id: String,
    pub priority: u8,
    pub state: State,
    pub fit: bool,
    /// The sender hears us: without that, the peers cannot settle anything between them.
    pub hears_peer: bool,
    pub epoch: u64,
    pub seq: u64,
    /// The address the sender manages: a peer configured for another VIP is not our peer.
    pub vip: IpAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    #[error("datagram of {0} bytes is not a heartbeat")]
    Malformed(usize),
    #[error("heartbeat protocol version {0} is not supported (this node speaks version 1)")]
    Version(u8),
    #[error("heartbeat carries an unknown state {0}")]
    BadState(u8),
    #[error("heartbeat node id is empty, too long or not text")]
    BadNodeId,
    #[error("heartbeat is not authenticated but this node has a secret")]
    Unauthenticated,
    #[error("heartbeat is authenticated but this node has no secret")]
    UnexpectedAuthentication,
    #[error(
        "heartbeat authentication failed: the peers' secrets differ or the datagram was altered"
    )]
    BadTag,
}

fn state_code(s: State) -> u8 {
    match s {
        State::Init => 0,
        State::Backup => 1,
        State::Master => 2,
        State::Fault => 3,
    }
}

fn state_from(code: u8) -> Result<State, HeartbeatError> {
    Ok(match code {
        0 => State::Init,
        1 => State::Backup,
        2 => State::Master,
        3 => State::Fault,
        other => return Err(HeartbeatError::BadState(other)),
    })
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

impl Heartbeat {
    pub fn encode(&self, secret: Option<&[u8]>) -> Vec<u8> {
        let id = self.node_id.as_bytes();
        let id = &id[..id.len().min(MAX_NODE_ID)];
        let mut out = Vec::with_capacity(MAX_DATAGRAM);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let mut flags = 0;
        if self.fit {
            flags |= FLAG_FIT;
        }
        if secret.is_some() {
            flags |= FLAG_AUTHENTICATED;
        }
        if self.hears_peer {
            flags |= FLAG_HEARS_PEER;
        }
        out.push(flags);
        out.push(state_code(self.state));
        out.push(self.priority);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        let vip = match self.vip {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        out.extend_from_slice(&vip.octets());
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        if let Some(secret) = secret {
            let mut m = mac(secret);
            m.update(&out);
            out.extend_from_slice(&m.finalize().into_bytes());
        }
        out
    }

    /// Parses and authenticates a datagram. `secret` is this node's: when set, only datagrams
    /// tagged with the same secret are accepted; when unset, tagged datagrams are refused, since
    /// a peer with a secret and a node without one are misconfigured.
    pub fn decode(bytes: &[u8], secret: Option<&[u8]>) -> Result<Heartbeat, HeartbeatError> {
        let malformed = || HeartbeatError::Malformed(bytes.len());
        if bytes.len() < HEADER + 1 || &bytes[..4] != MAGIC {
            return Err(malformed());
        }
        if bytes[4] != VERSION {
            return Err(HeartbeatError::Version(bytes[4]));
        }
        let flags = bytes[5];
        let id_len = usize::from(bytes[40]);
        let body = HEADER + id_len;
        let authenticated = flags & FLAG_AUTHENTICATED != 0;
        let expected = body + if authenticated { TAG } else { 0 };
        if bytes.len() != expected {
            return Err(malformed());
        }
        match (authenticated, secret) {
            (false, Some(_)) => return Err(HeartbeatError::Unauthenticated),
            (true, None) => return Err(HeartbeatError::UnexpectedAuthentication),
            (true, Some(secret)) => {
                let mut m = mac(secret);
                m.update(&bytes[..body]);
                m.verify_slice(&bytes[body..])
                    .map_err(|_| HeartbeatError::BadTag)?;
            }
            (false, None) => {}
        }
        let state = state_from(bytes[6])?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let mut vip = [0u8; 16];
        vip.copy_from_slice(&bytes[24..40]);
        let vip = Ipv6Addr::from(vip);
        let vip = match vip.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(vip),
        };
        let node_id = std::str::from_utf8(&bytes[HEADER..body])
            .ok()
            .filter(|id| !id.is_empty() && id.len() <= MAX_NODE_ID)
            .ok_or(HeartbeatError::BadNodeId)?
            .to_string();
        Ok(Heartbeat {
            node_id,
            priority: bytes[7],
            state,
            fit: flags & FLAG_FIT != 0,
            hears_peer: flags & FLAG_HEARS_PEER != 0,
            epoch: u64_at(8),
            seq: u64_at(16),
            vip,
        })
    }
}

/// What one node knows about its peer from the heartbeats it accepted.
#[derive(Clone, Debug)]
pub struct PeerTracker {
    /// How long after the last accepted heartbeat the peer counts as silent.
    window: Duration,
    newest: Option<(u64, u64)>,
    heard_at: Option<Duration>,
    view: Option<PeerView>,
}

/// How long a peer must have been silent before a heartbeat from an *older* epoch is believed:
/// a peer restarted with its clock set back would otherwise be ignored for good.
const EPOCH_RESET_WINDOWS: u32 = 10;

impl PeerTracker {
    pub fn new(window: Duration) -> PeerTracker {
        PeerTracker {
            window,
            newest: None,
            heard_at: None,
            view: None,
        }
    }

    /// Takes a heartbeat received at `now`; returns whether it was newer than all before it
    /// (older ones, reordered or replayed, are dropped).
    pub fn accept(&mut self, hb: &Heartbeat, now: Duration) -> bool {
        let stamp = (hb.epoch, hb.seq);
        let fresh = match self.newest {
            None => true,
            Some(newest) if stamp > newest => true,
            Some((epoch, _)) => {
                hb.epoch < epoch
                    && self
                        .heard_at
                        .is_none_or(|t| now.saturating_sub(t) > self.window * EPOCH_RESET_WINDOWS)
            }
        };
        if fresh {
            self.newest = Some(stamp);
            self.heard_at = Some(now);
            self.view = Some(PeerView {
                rank: Rank {
                    priority: hb.priority,
                    node_id: hb.node_id.clone(),
                },
                state: hb.state,
                fit: hb.fit,
                hears_us: hb.hears_peer,
            });
        }
        fresh
    }

    /// The peer's latest view while it is heard; `None` once it has been silent for the window.
    pub fn view(&self, now: Duration) -> Option<&PeerView> {
        let heard = self.heard_at?;
        (now.saturating_sub(heard) <= self.window)
            .then_some(self.view.as_ref())
            .flatten()
    }

    /// The latest view however old, for the status page.
    pub fn last_view(&self) -> Option<&PeerView> {
        self.view.as_ref()
    }

    pub fn heard_at(&self) -> Option<Duration> {
        self.heard_at
    }

    /// When the peer will count as silent if nothing more arrives.
    pub fn silent_at(&self) -> Option<Duration> {
        self.heard_at.map(|t| t + self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn beat(seq: u64) -> Heartbeat {
        Heartbeat {
            node_id: "lb-1".into(),
            priority: 150,
            state: State::Master,
            fit: true,
            hears_peer: true,
            epoch: 1_700_000_000_000,
            seq,
            vip: "10.0.0.100".parse().unwrap(),
        }
    }

    #[test]
    fn round_trips_with_and_without_a_secret() {
        let b = beat(7);
        assert_eq!(Heartbeat::decode(&b.encode(None), None), Ok(b.clone()));
        let wire = b.encode(Some(b"s3cret"));
        assert_eq!(Heartbeat::decode(&wire, Some(b"s3cret")), Ok(b.clone()));
        let v6 = Heartbeat {
            vip: "fd00::100".parse().unwrap(),
            ..b
        };
        assert_eq!(Heartbeat::decode(&v6.encode(None), None), Ok(v6));
    }

    #[test]
    fn authentication_is_enforced_both_ways() {
        let b = beat(1);
        assert_eq!(
            Heartbeat::decode(&b.encode(Some(b"one")), Some(b"two")),
            Err(HeartbeatError::BadTag)
        );
        assert_eq!(
            Heartbeat::decode(&b.encode(None), Some(b"one")),
            Err(HeartbeatError::Unauthenticated)
        );
        assert_eq!(
            Heartbeat::decode(&b.encode(Some(b"one")), None),
            Err(HeartbeatError::UnexpectedAuthentication)
        );
        // Flipping any bit of an authenticated datagram is caught.
        let wire = b.encode(Some(b"one"));
        for i in 0..wire.len() {
            let mut bad = wire.clone();
            bad[i] ^= 0x10;
            assert!(Heartbeat::decode(&bad, Some(b"one")).is_err(), "byte {i}");
        }
    }

    #[test]
    fn garbage_is_refused_not_misread() {
        assert!(Heartbeat::decode(b"", None).is_err());
        assert!(Heartbeat::decode(b"APHA", None).is_err());
        let mut wire = beat(1).encode(None);
        wire.push(0);
        assert_eq!(
            Heartbeat::decode(&wire, None),
            Err(HeartbeatError::Malformed(wire.len()))
        );
        let mut wire = beat(1).encode(None);
        wire[4] = 9;
        assert_eq!(
            Heartbeat::decode(&wire, None),
            Err(HeartbeatError::Version(9))
        );
        let mut wire = beat(1).encode(None);
        wire[6] = 7;
        assert_eq!(
            Heartbeat::decode(&wire, None),
            Err(HeartbeatError::BadState(7))
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Heartbeat::decode(&bytes, None);
            let _ = Heartbeat::decode(&bytes, Some(b"k"));
        }

        /// Whatever order datagrams arrive in, the tracker ends up with the newest one, and a
        /// datagram it accepts is always newer than everything it accepted before.
        #[test]
        fn reordering_never_goes_back_in_time(order in Just((0..40u64).collect::<Vec<_>>()).prop_shuffle()) {
            let mut t = PeerTracker::new(Duration::from_millis(600));
            let mut newest = None;
            for (i, seq) in order.iter().enumerate() {
                let accepted = t.accept(&beat(*seq), Duration::from_millis(i as u64));
                prop_assert_eq!(accepted, newest.is_none_or(|n| *seq > n));
                if accepted { newest = Some(*seq); }
            }
            prop_assert_eq!(newest, Some(39));
        }
    }

    #[test]
    fn a_peer_is_silent_after_the_window_and_heard_again_after_a_restart() {
        let window = Duration::from_millis(600);
        let mut t = PeerTracker::new(window);
        assert!(t.accept(&beat(5), Duration::from_millis(0)));
        assert!(t.view(Duration::from_millis(600)).is_some());
        assert!(t.view(Duration::from_millis(601)).is_none());
        // A restart: new epoch, counter from zero.
        let mut restarted = beat(0);
        restarted.epoch += 10_000;
        assert!(t.accept(&restarted, Duration::from_millis(900)));
        // A restart with the clock set back is believed only after a long silence.
        let mut behind = beat(0);
        behind.epoch -= 50_000;
        assert!(!t.accept(&behind, Duration::from_millis(1000)));
        assert!(t.accept(&behind, Duration::from_millis(900 + 6001)));
    }
}

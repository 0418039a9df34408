//! The state machine of one node of the pair, as a pure function: what this node knows (its own
//! fitness, what it last heard from the peer, who the arbiter says holds the address, the time)
//! goes in; the next state and what to do about the address come out. No clocks, sockets or
//! clouds in here, so that every rule can be unit- and property-tested.
//!
//! The rules, in short:
//! - a node that fails its self-check holds nothing (`Fault`), at once;
//! - when the peers hear each other, priorities decide (ties by node id); a lower-ranked master
//!   steps down as soon as it hears a higher-ranked one, and a higher-ranked backup takes over a
//!   lower-ranked master only with `preempt`;
//! - when the peer is silent, the arbiter decides: the EC2 API (who the address is assigned to)
//!   or, in local mode, the segment itself (who answers ARP / neighbour solicitations for it). A
//!   node does not take an address that a live node still holds, and a master that finds the
//!   address moved elsewhere steps down instead of fighting for it;
//! - a node becomes master at most once per `hold_down`: steps down are immediate, take-overs
//!   wait. That is what keeps a pair with a flaky link or a flaky data plane from flapping.

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Just started: listening for the peer before deciding anything.
    Init,
    Backup,
    Master,
    /// The self-check fails: this node must not hold the address.
    Fault,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Init => "init",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who wins when both nodes could serve: the higher priority, then the greater node id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rank {
    pub priority: u8,
    pub node_id: String,
}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.priority, &self.node_id).cmp(&(other.priority, &other.node_id))
    }
}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The peer as its latest heartbeat described it. Only given to [`step`] while the peer is
/// heard: a silent peer is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub rank: Rank,
    pub state: State,
    /// The peer's own self-check.
    pub fit: bool,
    /// The peer hears this node. A peer heard only one way cannot coordinate with us (it would
    /// not hear us take over, or step down): the rules treat it as silent and ask the arbiter.
    pub hears_us: bool,
}

impl PeerView {
    fn can_serve(&self) -> bool {
        self.fit && self.state != State::Fault
    }
}

/// Who holds the address, as the arbiter last said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Not read, or the read failed.
    Unknown,
    Nobody,
    Us,
    /// Another node holds it (or, in local mode, is probing for it right now).
    Other {
        /// Evidence that the holder is alive: it answers for the address on the segment (local),
        /// or its instance is running (ec2, read only when it matters).
        live: bool,
        /// The arbiter's tie-break gives the address to us: in local mode, when two nodes both
        /// claim it, the greater hardware address keeps it. Never in ec2 mode: the API's answer
        /// is final.
        we_win: bool,
    },
}

/// The node's configuration, as far as the rules need it.
#[derive(Clone, Debug)]
pub struct Settings {
    pub rank: Rank,
    pub preempt: bool,
    pub hold_down: Duration,
    /// How long a starting node listens for the peer before it decides alone: the time after
    /// which a peer counts as silent.
    pub listen: Duration,
    /// Whether a live holder seen by the arbiter proves that the holder's agent is alive. True
    /// in local mode (the address is leased to its agent for about the failure window, so a
    /// node that still answers for it has a running agent); false in ec2 mode (an instance
    /// runs on whether or not its agent does).
    pub live_holder_is_alive_agent: bool,
}

/// What this node knows at one instant.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// Time since the node started (a monotonic clock).
    pub now: Duration,
    /// The latest self-check; `None` before the first one has finished.
    pub fit: Option<bool>,
    pub peer: Option<&'a PeerView>,
    pub holder: Holder,
}

/// The state carried from one step to the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub state: State,
    /// When the last transition happened.
    pub since: Duration,
    /// The earliest time this node may take the address over: `hold_down` after its last
    /// transition or failed take-over. Leaving `Init` sets no hold-down: a starting node has
    /// nothing to flap from.
    pub hold_until: Duration,
    /// This node stepped down because the arbiter showed the address on another node while the
    /// peer was silent; it does not take the address back until it hears the peer again or the
    /// holder is dead. Cleared whenever the peer is heard.
    pub displaced: bool,
}

impl Machine {
    pub fn new(now: Duration) -> Machine {
        Machine {
            state: State::Init,
            since: now,
            hold_until: now,
            displaced: false,
        }
    }

    /// A take-over was decided but did not happen (the back end failed or the arbiter said no):
    /// stay out of master and let `hold_down` pass before the next attempt.
    pub fn claim_failed(&self, now: Duration, hold_down: Duration) -> Machine {
        let state = match self.state {
            State::Init | State::Master => State::Backup,
            s => s,
        };
        Machine {
            state,
            since: if state == self.state { self.since } else { now },
            hold_until: now + hold_down,
            displaced: self.displaced,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    /// Take the address (after reading the arbiter afresh); commit `next` only if it worked.
    Claim,
    /// Give the address up (if held) and commit `next`.
    Release,
}

/// Why the machine did what it did; shown in logs and in the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    WaitingForSelfCheck,
    ListeningForPeer,
    SelfCheckFailed,
    SelfCheckPassed,
    PeerSilent,
    PeerCannotServe,
    PeerIsMaster,
    PeerOutranksUs,
    WeOutrankPeer,
    Preempting,
    HoldDown,
    HeldByLiveNode,
    Displaced,
    Reclaiming,
    Steady,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::WaitingForSelfCheck => "waiting for the first self-check",
            Reason::ListeningForPeer => "listening for the peer",
            Reason::SelfCheckFailed => "the self-check fails",
            Reason::SelfCheckPassed => "the self-check passes again",
            Reason::PeerSilent => "the peer is silent",
            Reason::PeerCannotServe => "the peer reports that it cannot serve",
            Reason::PeerIsMaster => "the peer is master",
            Reason::PeerOutranksUs => "the peer outranks this node",
            Reason::WeOutrankPeer => "this node outranks the peer",
            Reason::Preempting => "preempting a lower-ranked master",
            Reason::HoldDown => "waiting out the hold-down",
            Reason::HeldByLiveNode => "a live node we cannot hear holds the address",
            Reason::Displaced => "the arbiter shows the address on another node",
            Reason::Reclaiming => {
                "this node is master but the arbiter does not show the address here"
            }
            Reason::Steady => "steady",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub next: Machine,
    pub action: Action,
    pub reason: Reason,
}

/// One step of the machine. Pure: the same inputs give the same decision.
pub fn step(m: &Machine, i: &Inputs<'_>, s: &Settings) -> Decision {
    let peer = i.peer.filter(|p| p.hears_us);
    // Hearing the peer ends a displacement: from here on the heartbeats coordinate.
    let displaced = m.displaced && peer.is_none();
    let stay = |reason| Decision {
        next: Machine {
            displaced,
            ..m.clone()
        },
        action: Action::None,
        reason,
    };
    let go = |state, action, reason, displaced| Decision {
        next: Machine {
            state,
            since: if state == m.state { m.since } else { i.now },
            hold_until: match (m.state, state) {
                (from, to) if from == to => m.hold_until,
                (State::Init, _) => i.now,
                _ => i.now + s.hold_down,
            },
            displaced,
        },
        action,
        reason,
    };
    let claim = |reason| go(State::Master, Action::Claim, reason, false);
    let release = |state, reason| go(state, Action::Release, reason, displaced);

    let Some(fit) = i.fit else {
        return stay(Reason::WaitingForSelfCheck);
    };
    if !fit {
        return match m.state {
            State::Fault => stay(Reason::SelfCheckFailed),
            _ => release(State::Fault, Reason::SelfCheckFailed),
        };
    }
    let outranks = |p: &PeerView| s.rank > p.rank;
    // Whether a silent peer's absence lets us take the address, by the arbiter's last word.
    let held_by_live_node = matches!(
        i.holder,
        Holder::Other {
            live: true,
            we_win: false
        }
    );
    let silent_claim = |reason| {
        if held_by_live_node && (s.live_holder_is_alive_agent || displaced) {
            stay(Reason::HeldByLiveNode)
        } else {
            claim(reason)
        }
    };
    // A peer that is heard but not master may still hold the address (its heartbeat can be
    // older than its last move): in local mode, wait until the segment shows it free.
    let heard_claim = |reason| {
        if held_by_live_node && s.live_holder_is_alive_agent {
            stay(Reason::HeldByLiveNode)
        } else {
            claim(reason)
        }
    };

    match m.state {
        State::Fault => go(
            State::Backup,
            Action::None,
            Reason::SelfCheckPassed,
            displaced,
        ),
        State::Init => match peer {
            Some(p) if p.state == State::Master && p.can_serve() => {
                release(State::Backup, Reason::PeerIsMaster)
            }
            Some(p) if !p.can_serve() => heard_claim(Reason::PeerCannotServe),
            Some(p) if outranks(p) => heard_claim(Reason::WeOutrankPeer),
            Some(_) => release(State::Backup, Reason::PeerOutranksUs),
            None if i.now < m.since + s.listen => stay(Reason::ListeningForPeer),
            None => match silent_claim(Reason::PeerSilent) {
                d if d.action == Action::Claim => d,
                _ => release(State::Backup, Reason::HeldByLiveNode),
            },
        },
        State::Backup => {
            let reason = match peer {
                None => Reason::PeerSilent,
                Some(p) if !p.can_serve() => Reason::PeerCannotServe,
                Some(p) if p.state == State::Master => {
                    if s.preempt && outranks(p) {
                        Reason::Preempting
                    } else {
                        return stay(Reason::PeerIsMaster);
                    }
                }
                Some(p) if outranks(p) => Reason::WeOutrankPeer,
                Some(_) => return stay(Reason::PeerOutranksUs),
            };
            if i.now < m.hold_until {
                return stay(Reason::HoldDown);
            }
            match (peer, reason) {
                (None, _) => silent_claim(reason),
                // Preemption takes the address from the master it hears: the arbiter shows
                // that master, and it steps down when it hears us.
                (Some(_), Reason::Preempting) => claim(reason),
                (Some(_), _) => heard_claim(reason),
            }
        }
        State::Master => {
            let peer_master = peer.filter(|p| p.state == State::Master && p.can_serve());
            if let Some(p) = peer_master {
                if p.rank > s.rank {
                    return release(State::Backup, Reason::PeerOutranksUs);
                }
            }
            match (i.holder, peer) {
                // Moved elsewhere while the peer is silent: do not fight for it.
                (Holder::Other { we_win: false, .. }, None) => {
                    go(State::Backup, Action::Release, Reason::Displaced, true)
                }
                // Not (or no longer) here although the peers agree this node is master: take
                // it again. The peer, if it has it, steps down when it hears us.
                (Holder::Other { we_win: false, .. }, Some(_)) | (Holder::Nobody, _) => {
                    go(State::Master, Action::Claim, Reason::Reclaiming, false)
                }
                _ => stay(Reason::Steady),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn settings(priority: u8, id: &str, preempt: bool, local: bool) -> Settings {
        Settings {
            rank: Rank {
                priority,
                node_id: id.into(),
            },
            preempt,
            hold_down: ms(2000),
            listen: ms(600),
            live_holder_is_alive_agent: local,
        }
    }

    fn peer(priority: u8, id: &str, state: State, fit: bool) -> PeerView {
        PeerView {
            rank: Rank {
                priority,
                node_id: id.into(),
            },
            state,
            fit,
            hears_us: true,
        }
    }

    /// A machine that entered `state` at `since` from a state other than init.
    fn machine(state: State, since: u64) -> Machine {
        Machine {
            state,
            since: ms(since),
            hold_until: ms(since + 2000),
            displaced: false,
        }
    }

    fn at(now: u64, peer: Option<&PeerView>, holder: Holder) -> Inputs<'_> {
        Inputs {
            now: ms(now),
            fit: Some(true),
            peer,
            holder,
        }
    }

    #[test]
    fn a_node_fresh_from_init_may_take_over_at_once() {
        let s = settings(100, "b", true, true);
        let master = peer(200, "a", State::Master, true);
        let d = step(
            &Machine::new(ms(0)),
            &at(100, Some(&master), Holder::Unknown),
            &s,
        );
        assert_eq!(d.next.state, State::Backup);
        // The master dies right away: no hold-down stands between this backup and the address.
        let d2 = step(&d.next, &at(800, None, Holder::Nobody), &s);
        assert_eq!(d2.action, Action::Claim);
        // But a backup that was master (or fault) a moment ago waits.
        let d3 = step(
            &machine(State::Backup, 100),
            &at(800, None, Holder::Nobody),
            &s,
        );
        assert_eq!(d3.reason, Reason::HoldDown);
    }

    #[test]
    fn a_starting_node_listens_then_claims_an_unheld_address() {
        let s = settings(100, "a", true, true);
        let m = Machine::new(ms(0));
        assert_eq!(
            step(&m, &at(100, None, Holder::Nobody), &s).reason,
            Reason::ListeningForPeer
        );
        let d = step(&m, &at(700, None, Holder::Nobody), &s);
        assert_eq!((d.action, d.next.state), (Action::Claim, State::Master));
    }

    #[test]
    fn nothing_happens_before_the_first_self_check() {
        let s = settings(100, "a", true, true);
        let mut i = at(5000, None, Holder::Nobody);
        i.fit = None;
        let d = step(&Machine::new(ms(0)), &i, &s);
        assert_eq!((d.action, d.next.state), (Action::None, State::Init));
    }

    #[test]
    fn an_unfit_master_releases_at_once_even_inside_the_hold_down() {
        let s = settings(100, "a", true, true);
        let m = machine(State::Master, 1000);
        let mut i = at(1001, None, Holder::Us);
        i.fit = Some(false);
        let d = step(&m, &i, &s);
        assert_eq!((d.action, d.next.state), (Action::Release, State::Fault));
    }

    #[test]
    fn a_backup_takes_over_from_a_silent_peer_only_after_the_hold_down() {
        let s = settings(100, "b", true, false);
        let m = machine(State::Backup, 1000);
        assert_eq!(
            step(&m, &at(2500, None, Holder::Nobody), &s).reason,
            Reason::HoldDown
        );
        let d = step(&m, &at(3000, None, Holder::Nobody), &s);
        assert_eq!((d.action, d.reason), (Action::Claim, Reason::PeerSilent));
    }

    #[test]
    fn local_mode_does_not_take_an_address_a_live_node_answers_for() {
        let s = settings(100, "b", true, true);
        let m = machine(State::Backup, 0);
        let held = Holder::Other {
            live: true,
            we_win: false,
        };
        let d = step(&m, &at(10_000, None, held), &s);
        assert_eq!((d.action, d.reason), (Action::None, Reason::HeldByLiveNode));
        // A concurrent prober that loses the tie-break does not stop us.
        let racing = Holder::Other {
            live: true,
            we_win: true,
        };
        assert_eq!(
            step(&m, &at(10_000, None, racing), &s).action,
            Action::Claim
        );
    }

    #[test]
    fn ec2_mode_takes_over_from_a_silent_peer_whose_instance_still_runs() {
        // The agent may be dead on a running instance: the API moves the address anyway.
        let s = settings(100, "b", true, false);
        let held = Holder::Other {
            live: true,
            we_win: false,
        };
        let d = step(&machine(State::Backup, 0), &at(10_000, None, held), &s);
        assert_eq!(d.action, Action::Claim);
    }

    #[test]
    fn ec2_master_displaced_by_the_arbiter_steps_down_and_does_not_fight_back() {
        let s = settings(200, "a", true, false);
        let moved = Holder::Other {
            live: true,
            we_win: false,
        };
        let d = step(&machine(State::Master, 0), &at(10_000, None, moved), &s);
        assert_eq!(
            (d.action, d.next.state, d.reason, d.next.displaced),
            (Action::Release, State::Backup, Reason::Displaced, true)
        );
        // Still silent, the holder's instance runs: no take-back, however long we wait.
        let d2 = step(&d.next, &at(60_000, None, moved), &s);
        assert_eq!(
            (d2.action, d2.reason),
            (Action::None, Reason::HeldByLiveNode)
        );
        // The holder's instance died: take it.
        let dead = Holder::Other {
            live: false,
            we_win: false,
        };
        assert_eq!(
            step(&d.next, &at(60_000, None, dead), &s).action,
            Action::Claim
        );
        // Hearing the peer again ends the displacement.
        let p = peer(100, "b", State::Master, true);
        let d3 = step(&d.next, &at(60_000, Some(&p), moved), &s);
        assert!(!d3.next.displaced);
    }

    #[test]
    fn priorities_decide_between_peers_that_hear_each_other() {
        let hi = settings(200, "a", true, true);
        let lo = settings(100, "b", true, true);
        let m = Machine::new(ms(0));
        let lo_init = peer(100, "b", State::Init, true);
        let hi_init = peer(200, "a", State::Init, true);
        assert_eq!(
            step(&m, &at(50, Some(&lo_init), Holder::Unknown), &hi).action,
            Action::Claim
        );
        let d = step(&m, &at(50, Some(&hi_init), Holder::Unknown), &lo);
        assert_eq!(
            (d.next.state, d.reason),
            (State::Backup, Reason::PeerOutranksUs)
        );
    }

    #[test]
    fn equal_priorities_are_broken_by_node_id() {
        let a = settings(100, "node-a", true, true);
        let b = settings(100, "node-b", true, true);
        let m = Machine::new(ms(0));
        let pa = peer(100, "node-a", State::Init, true);
        let pb = peer(100, "node-b", State::Init, true);
        assert_eq!(
            step(&m, &at(50, Some(&pb), Holder::Unknown), &a).next.state,
            State::Backup
        );
        assert_eq!(
            step(&m, &at(50, Some(&pa), Holder::Unknown), &b).action,
            Action::Claim
        );
    }

    #[test]
    fn preempt_decides_whether_a_returning_higher_node_takes_back() {
        let lo_master = peer(100, "b", State::Master, true);
        let m = machine(State::Backup, 0);
        let with = settings(200, "a", true, true);
        let d = step(&m, &at(5000, Some(&lo_master), Holder::Unknown), &with);
        assert_eq!((d.action, d.reason), (Action::Claim, Reason::Preempting));
        let without = settings(200, "a", false, true);
        let d = step(&m, &at(5000, Some(&lo_master), Holder::Unknown), &without);
        assert_eq!((d.action, d.reason), (Action::None, Reason::PeerIsMaster));
    }

    #[test]
    fn the_lower_of_two_masters_steps_down_at_once() {
        let lo = settings(100, "b", true, true);
        let hi_master = peer(200, "a", State::Master, true);
        let d = step(
            &machine(State::Master, 1000),
            &at(1001, Some(&hi_master), Holder::Us),
            &lo,
        );
        assert_eq!((d.action, d.next.state), (Action::Release, State::Backup));
        let hi = settings(200, "a", true, true);
        let lo_master = peer(100, "b", State::Master, true);
        let d = step(
            &machine(State::Master, 1000),
            &at(1001, Some(&lo_master), Holder::Us),
            &hi,
        );
        assert_eq!(d.action, Action::None);
    }

    #[test]
    fn a_backup_takes_over_from_an_unfit_peer_without_waiting_for_silence() {
        let s = settings(100, "b", false, true);
        let sick = peer(200, "a", State::Fault, false);
        let d = step(
            &machine(State::Backup, 0),
            &at(5000, Some(&sick), Holder::Nobody),
            &s,
        );
        assert_eq!(
            (d.action, d.reason),
            (Action::Claim, Reason::PeerCannotServe)
        );
        // ... but in local mode not while the segment still shows the address held.
        let held = Holder::Other {
            live: true,
            we_win: false,
        };
        let d = step(&machine(State::Backup, 0), &at(5000, Some(&sick), held), &s);
        assert_eq!((d.action, d.reason), (Action::None, Reason::HeldByLiveNode));
        // ec2 mode: the API moves the address whoever holds it.
        let ec2 = settings(100, "b", false, false);
        let d = step(
            &machine(State::Backup, 0),
            &at(5000, Some(&sick), held),
            &ec2,
        );
        assert_eq!(d.action, Action::Claim);
    }

    #[test]
    fn a_peer_heard_only_one_way_counts_as_silent() {
        // We hear a lower-ranked master that does not hear us: preempting it would leave it
        // master too, so the arbiter decides, and it says the address is held.
        let s = settings(200, "a", true, true);
        let mut deaf = peer(100, "b", State::Master, true);
        deaf.hears_us = false;
        let held = Holder::Other {
            live: true,
            we_win: false,
        };
        let d = step(
            &machine(State::Backup, 0),
            &at(10_000, Some(&deaf), held),
            &s,
        );
        assert_eq!((d.action, d.reason), (Action::None, Reason::HeldByLiveNode));
        // A starting node in that position settles as backup instead of listening forever.
        let d = step(&Machine::new(ms(0)), &at(10_000, Some(&deaf), held), &s);
        assert_eq!(
            (d.next.state, d.reason),
            (State::Backup, Reason::HeldByLiveNode)
        );
    }

    #[test]
    fn a_master_takes_again_an_address_it_lost_while_the_peers_agree() {
        let s = settings(200, "a", true, false);
        let lo_backup = peer(100, "b", State::Backup, true);
        let moved = Holder::Other {
            live: true,
            we_win: false,
        };
        let d = step(
            &machine(State::Master, 0),
            &at(10_000, Some(&lo_backup), moved),
            &s,
        );
        assert_eq!(
            (d.action, d.next.state, d.reason),
            (Action::Claim, State::Master, Reason::Reclaiming)
        );
        let d = step(
            &machine(State::Master, 0),
            &at(10_000, None, Holder::Nobody),
            &s,
        );
        assert_eq!(d.action, Action::Claim);
    }

    #[test]
    fn a_failed_claim_restarts_the_hold_down() {
        let s = settings(100, "b", true, false);
        let m = machine(State::Backup, 0).claim_failed(ms(5000), ms(2000));
        assert_eq!(m.state, State::Backup);
        assert_eq!(
            step(&m, &at(6000, None, Holder::Nobody), &s).reason,
            Reason::HoldDown
        );
        assert_eq!(
            step(&m, &at(7000, None, Holder::Nobody), &s).action,
            Action::Claim
        );
    }
}

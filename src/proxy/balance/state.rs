//! What every balancer shares: the mutable per-peer state nginx keeps in
//! `ngx_http_upstream_rr_peer_t`, the two peer lists, and the rules all of them apply the same
//! way (which peer may be used now, when `checked` moves).

use super::attempt::Attempt;
use super::clock::{Secs, LONG_AGO};
use super::pool::PeerInfo;

/// The counters nginx changes while it runs.
#[derive(Clone, Debug)]
pub(super) struct PeerState {
    pub current_weight: i64,
    /// Lowered by failures (`weight / max_fails` each), raised by one each time the peer is
    /// considered, never above `weight`.
    pub effective_weight: i64,
    /// Requests holding the peer now.
    pub conns: u64,
    pub fails: u64,
    /// When the peer last failed.
    pub accessed: Secs,
    /// When the peer last failed or was last given a chance after `fail_timeout`. A success
    /// after a chance (`accessed < checked`) clears `fails`.
    pub checked: Secs,
    /// The active health checker's verdict; false takes the peer out like `down`.
    pub healthy: bool,
    /// Removed by a reload: this (old) pool never hands it out again.
    pub retired: bool,
}

impl PeerState {
    pub fn new(weight: u32) -> Self {
        PeerState {
            current_weight: 0,
            effective_weight: i64::from(weight),
            conns: 0,
            fails: 0,
            accessed: LONG_AGO,
            checked: LONG_AGO,
            healthy: true,
            retired: false,
        }
    }
}

/// Everything behind a pool's mutex.
#[derive(Debug)]
pub(super) struct State {
    pub peers: Vec<PeerState>,
    pub rng: fastrand::Rng,
}

/// One of nginx's `ngx_http_upstream_rr_peers_t`: the primary servers, or the backup ones. Its
/// peers are `start..start + len` of the pool.
#[derive(Clone, Copy, Debug)]
pub(super) struct PeerList {
    pub start: usize,
    pub len: usize,
    /// Sum of all weights, `down` peers included (hashes walk their slots).
    pub total_weight: u64,
    /// Peers not marked `down`: what a request may try.
    pub tries: u32,
    /// One primary peer and no backup: nginx never marks it failed and never retries it.
    pub single: bool,
}

/// One selection in progress: the pool's fixed data, its locked state, and the request.
pub(super) struct Ctx<'a> {
    pub info: &'a [PeerInfo],
    pub primary: PeerList,
    pub backup: Option<PeerList>,
    pub st: &'a mut State,
    pub a: &'a mut Attempt,
    pub now: Secs,
}

impl Ctx<'_> {
    /// The list the request is on (`rrp->peers`).
    pub fn list(&self) -> PeerList {
        match (self.a.on_backup, self.backup) {
            (true, Some(b)) => b,
            _ => self.primary,
        }
    }

    /// `down`, taken out by the active health check, or removed by a reload. Hashes keep such
    /// a peer's slot and step over it.
    pub fn out_of_rotation(&self, g: usize) -> bool {
        let s = &self.st.peers[g];
        self.info[g].down || !s.healthy || s.retired
    }

    /// Failed `max_fails` times and still inside `fail_timeout` of the last failure or chance.
    pub fn failed_recently(&self, g: usize) -> bool {
        let (info, s) = (&self.info[g], &self.st.peers[g]);
        info.max_fails != 0
            && s.fails >= u64::from(info.max_fails)
            && self.now - s.checked <= info.fail_timeout_secs
    }

    pub fn at_max_conns(&self, g: usize) -> bool {
        let max = self.info[g].max_conns;
        max != 0 && self.st.peers[g].conns >= u64::from(max)
    }

    /// Everything but the tried bit that makes nginx pass a peer over.
    pub fn unusable(&self, g: usize) -> bool {
        self.out_of_rotation(g) || self.failed_recently(g) || self.at_max_conns(g)
    }

    /// The peer at index `i` of the current list was tried by this request.
    pub fn tried(&self, i: usize) -> bool {
        self.a.tried.contains(i)
    }

    /// After a selection: a peer whose `fail_timeout` has passed since it was last checked gets
    /// this request as its one chance, and the chance is the new `checked` time.
    pub fn note_chance(&mut self, g: usize) {
        let timeout = self.info[g].fail_timeout_secs;
        let s = &mut self.st.peers[g];
        if self.now - s.checked > timeout {
            s.checked = self.now;
        }
    }

    /// The smooth weighted round robin step over a candidate: nginx repeats these three lines in
    /// every balancer that weighs peers against each other.
    pub fn weigh(&mut self, g: usize) -> i64 {
        let weight = i64::from(self.info[g].weight);
        let s = &mut self.st.peers[g];
        s.current_weight += s.effective_weight;
        let added = s.effective_weight;
        if s.effective_weight < weight {
            s.effective_weight += 1;
        }
        added
    }

    /// Nothing on the primary list: turn to the backup servers, with a fresh tried set, if there
    /// are any and the request has not turned already.
    pub fn switch_to_backup(&mut self) -> bool {
        if self.a.on_backup || self.backup.is_none() {
            return false;
        }
        self.a.on_backup = true;
        self.a.tried.clear();
        true
    }
}

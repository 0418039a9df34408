//! The loop that runs the pair on one node. Four tasks share the work so that no slow step
//! (an EC2 call, a probe) ever delays a heartbeat:
//!
//! - the sender announces this node's state every interval, and at once when it changes;
//! - the receiver checks the peer's datagrams and keeps the newest in a [`PeerTracker`];
//! - the self-check asks the data plane once per interval, and reports it unfit only after
//!   `failure_threshold` failures in a row (one slow probe is not a failure of the node);
//! - the decider feeds what the others know into [`state::step`] whenever something changes or
//!   a deadline passes (peer silence, hold-down, a due ownership check), and carries out the
//!   decision through the [`VipBackend`].

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::fitness::{DataPlaneHealth, Fitness};
use super::heartbeat::{Heartbeat, PeerTracker, MAX_DATAGRAM};
use super::state::{self, Action, Decision, Holder, Inputs, Machine, Rank, Settings, State};
use super::status::{unix_ms, HolderStatus, PeerStatus, Status, StatusBoard};
use super::{HaError, Reading, VipBackend};
use crate::config::{Ha, HaMode};

/// How soon to ask the arbiter again while a take-over is blocked by a live holder.
const BLOCKED_RETRY: Duration = Duration::from_millis(20);

/// What the sender tells the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Advert {
    state: State,
    fit: bool,
    /// The first self-check has finished. Until then the node says nothing: a peer would read
    /// "not fit" as "cannot serve" and act on it.
    known: bool,
}

/// Everything the tasks share about one node.
struct Shared {
    node_id: String,
    priority: u8,
    vip: IpAddr,
    peer: SocketAddr,
    secret: Option<Vec<u8>>,
    interval: Duration,
    start: Instant,
    tracker: Mutex<PeerTracker>,
    heard: Notify,
}

impl Shared {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, PeerTracker> {
        // A panic while holding this lock cannot leave the tracker half-updated in a way that
        // matters: take the data as it is.
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Binds the heartbeat socket, starts the tasks, and returns the status board and the task that
/// ends when `stop` turns true.
pub(super) async fn start(
    ha: &Ha,
    backend: Box<dyn VipBackend>,
    health: Arc<dyn DataPlaneHealth>,
    stop: watch::Receiver<bool>,
) -> Result<(Arc<StatusBoard>, JoinHandle<()>), HaError> {
    let bind = ha.bind.unwrap_or_else(|| {
        let any: IpAddr = if ha.peer.is_ipv4() {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u16; 8])
        };
        SocketAddr::new(any, ha.peer.port())
    });
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|e| HaError::io(format!("binding the heartbeat socket to {bind}"), e))?;
    let socket = Arc::new(socket);
    let node_id = ha
        .node_id
        .clone()
        .unwrap_or_else(|| backend.default_node_id());
    let interval = ha.heartbeat_interval.get();
    let window = interval * ha.failure_threshold;
    let shared = Arc::new(Shared {
        node_id: node_id.clone(),
        priority: ha.priority,
        vip: ha.vip,
        peer: ha.peer,
        secret: ha.secret.as_ref().map(|s| s.as_bytes().to_vec()),
        interval,
        start: Instant::now(),
        tracker: Mutex::new(PeerTracker::new(window)),
        heard: Notify::new(),
    });
    let settings = Settings {
        rank: Rank {
            priority: ha.priority,
            node_id: node_id.clone(),
        },
        preempt: ha.preempt,
        hold_down: ha.hold_down.get(),
        listen: window,
        live_holder_is_alive_agent: backend.live_holder_is_alive_agent(),
    };
    let board = StatusBoard::new(Status {
        mode: ha.mode,
        node_id: node_id.clone(),
        priority: ha.priority,
        vip: ha.vip,
        state: State::Init,
        fit: None,
        unfit_reason: None,
        since_unix_ms: unix_ms(SystemTime::now()),
        reason: state::Reason::ListeningForPeer.to_string(),
        decision: state::Reason::ListeningForPeer.to_string(),
        transitions: 0,
        peer: PeerStatus {
            address: ha.peer,
            alive: false,
            last_heard_unix_ms: None,
            node_id: None,
            priority: None,
            state: None,
            fit: None,
        },
        vip_holder: None,
        last_error: None,
    });
    tracing::info!(
        "ha: node {node_id} (priority {}) managing {} in {:?} mode; heartbeats on {bind} to {}",
        ha.priority,
        ha.vip,
        ha.mode,
        ha.peer
    );

    let (advert_tx, advert_rx) = watch::channel(Advert {
        state: State::Init,
        fit: false,
        known: false,
    });
    let (fit_tx, fit_rx) = watch::channel(None);
    let (quit_tx, quit_rx) = watch::channel(false);
    let helpers = vec![
        tokio::spawn(send_heartbeats(
            shared.clone(),
            socket.clone(),
            advert_rx,
            quit_rx.clone(),
        )),
        tokio::spawn(receive_heartbeats(shared.clone(), socket)),
        tokio::spawn(self_check(
            health,
            interval,
            ha.failure_threshold,
            fit_tx,
            quit_rx,
        )),
    ];
    let decider = Decider {
        shared,
        settings,
        backend,
        board: board.clone(),
        machine: Machine::new(Duration::ZERO),
        holder: Holder::Unknown,
        holder_read_at: None,
        ownership_check: ha.ownership_check_interval.get(),
        // EC2 reads cost API calls: a blocked take-over asks again at most once a second.
        read_spacing: match ha.mode {
            HaMode::Ec2 => Duration::from_secs(1),
            HaMode::Local => Duration::ZERO,
        },
        mode: ha.mode,
        last_keep: None,
        advert: advert_tx,
        fitness: fit_rx,
        warned_same_id: false,
        blocked: false,
    };
    let task = tokio::spawn(async move {
        decider.run(stop).await;
        let _ = quit_tx.send(true);
        for h in helpers {
            // The sender stops by itself once told (after its last datagram); the others wait
            // on sockets and are stopped here.
            if !h.is_finished() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            h.abort();
        }
    });
    Ok((board, task))
}

/// Logs a repeated problem at most once per `every`.
struct Throttle {
    last: Option<Instant>,
    every: Duration,
}

impl Throttle {
    fn new(every: Duration) -> Throttle {
        Throttle { last: None, every }
    }

    fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < self.every) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

async fn send_heartbeats(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    mut advert: watch::Receiver<Advert>,
    mut quit: watch::Receiver<bool>,
) {
    let epoch = unix_ms(SystemTime::now());
    let mut seq = 0u64;
    let mut throttle = Throttle::new(Duration::from_secs(10));
    loop {
        let a = *advert.borrow_and_update();
        if !a.known {
            tokio::select! {
                changed = advert.changed() => if changed.is_err() { return },
                _ = quit.changed() => return,
            }
            continue;
        }
        seq += 1;
        let hears_peer = shared.tracker().view(shared.now()).is_some();
        let beat = Heartbeat {
            node_id: shared.node_id.clone(),
            priority: shared.priority,
            state: a.state,
            fit: a.fit,
            hears_peer,
            epoch,
            seq,
            vip: shared.vip,
        };
        let datagram = beat.encode(shared.secret.as_deref());
        if let Err(e) = socket.send_to(&datagram, shared.peer).await {
            if throttle.ready() {
                tracing::warn!("ha: sending a heartbeat to {} failed: {e}", shared.peer);
            }
        }
        if *quit.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.interval) => {}
            changed = advert.changed() => if changed.is_err() { return },
            _ = quit.changed() => {}
        }
    }
}

async fn receive_heartbeats(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 64];
    let mut throttle = Throttle::new(Duration::from_secs(10));
    let secret = shared.secret.clone();
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                if throttle.ready() {
                    tracing::warn!("ha: receiving heartbeats failed: {e}");
                }
                tokio::time::sleep(shared.interval).await;
                continue;
            }
        };
        if from.ip() != shared.peer.ip() {
            if throttle.ready() {
                tracing::warn!(
                    "ha: ignoring a datagram from {from}: the peer is {}",
                    shared.peer
                );
            }
            continue;
        }
        let beat = match Heartbeat::decode(&buf[..n], secret.as_deref()) {
            Ok(b) => b,
            Err(e) => {
                if throttle.ready() {
                    tracing::warn!("ha: ignoring a datagram from {from}: {e}");
                }
                continue;
            }
        };
        if beat.vip != shared.vip {
            if throttle.ready() {
                tracing::warn!(
                    "ha: ignoring {from}: it manages {} and this node {}",
                    beat.vip,
                    shared.vip
                );
            }
            continue;
        }
        let now = shared.now();
        if shared.tracker().accept(&beat, now) {
            shared.heard.notify_one();
        }
    }
}

async fn self_check(
    health: Arc<dyn DataPlaneHealth>,
    interval: Duration,
    threshold: u32,
    out: watch::Sender<Option<Fitness>>,
    mut quit: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let result = match tokio::time::timeout(interval, health.fitness()).await {
            Ok(f) => f,
            Err(_) => Fitness::Unfit(format!("the self-check took longer than {interval:?}")),
        };
        let first = out.borrow().is_none();
        let publish = match &result {
            Fitness::Fit => {
                failures = 0;
                true
            }
            Fitness::Unfit(_) => {
                failures += 1;
                first || failures >= threshold
            }
        };
        if publish {
            out.send_if_modified(|current| {
                let changed = current.as_ref() != Some(&result);
                *current = Some(result.clone());
                changed
            });
        }
        tokio::select! {
            _ = tokio::time::sleep_until(started + interval) => {}
            _ = quit.changed() => return,
        }
    }
}

struct Decider {
    shared: Arc<Shared>,
    settings: Settings,
    backend: Box<dyn VipBackend>,
    board: Arc<StatusBoard>,
    machine: Machine,
    holder: Holder,
    holder_read_at: Option<Instant>,
    ownership_check: Duration,
    read_spacing: Duration,
    mode: HaMode,
    last_keep: Option<Instant>,
    advert: watch::Sender<Advert>,
    fitness: watch::Receiver<Option<Fitness>>,
    warned_same_id: bool,
    /// The last round wanted the address but the arbiter showed a live holder.
    blocked: bool,
}

impl Decider {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                break;
            }
            self.round().await;
            let wake = self.next_wake();
            let shared = self.shared.clone();
            tokio::select! {
                _ = shared.heard.notified() => {}
                _ = self.fitness.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
                _ = stop.changed() => {}
            }
        }
        self.leave().await;
    }

    fn fit(&self) -> Option<bool> {
        self.fitness.borrow().as_ref().map(Fitness::is_fit)
    }

    async fn round(&mut self) {
        let now = self.shared.now();
        let peer = self.shared.tracker().view(now).cloned();
        if let Some(p) = &peer {
            if p.rank.node_id == self.shared.node_id && !self.warned_same_id {
                tracing::error!(
                    "ha: the peer uses this node's id \"{}\": set distinct [ha] node_id values",
                    p.rank.node_id
                );
                self.warned_same_id = true;
            }
        }
        // A master asks the arbiter now and then whether the address is still its own. In local
        // mode only while the peer is silent: when the peers hear each other, the heartbeats
        // settle it, and a probe would also see the brief overlap of a preemption.
        // In ec2 mode, two masters that hear each other (after a cut heals) read at once, so
        // that the one that stays master notices if the other has the address.
        let read_age = self.holder_read_at.map(|t| t.elapsed());
        let check_due = read_age.is_none_or(|age| age >= self.ownership_check);
        // Only a peer that hears us takes part in the rules (see `PeerView::hears_us`).
        let coordinated = peer.as_ref().filter(|p| p.hears_us);
        let peer_is_master = coordinated.is_some_and(|p| p.state == State::Master);
        let two_masters_due = self.mode == HaMode::Ec2
            && peer_is_master
            && read_age.is_none_or(|age| age >= self.read_spacing);
        if self.machine.state == State::Master
            && (((self.mode == HaMode::Ec2 || coordinated.is_none()) && check_due)
                || two_masters_due)
        {
            self.read_holder(false).await;
        }
        // Out of master, an old reading must not stop a take-over: it only counts while fresh,
        // and a take-over reads again anyway.
        if self.machine.state != State::Master
            && self
                .holder_read_at
                .is_none_or(|t| t.elapsed() >= self.read_spacing)
        {
            self.holder = Holder::Unknown;
        }
        let fit = self.fit();
        let mut decision = self.step(now, fit, peer.as_ref());
        if decision.action == Action::Claim {
            // Read the arbiter afresh before any take-over, and decide again on its answer.
            if self
                .holder_read_at
                .is_none_or(|t| t.elapsed() >= self.read_spacing)
            {
                self.read_holder(self.machine.displaced).await;
            }
            if self.holder == Holder::Unknown {
                self.claim_failed("the arbiter could not be read");
                return;
            }
            decision = self.step(self.shared.now(), fit, peer.as_ref());
        }
        match decision.action {
            Action::None => {
                let changed = decision.next.state != self.machine.state;
                self.commit(decision);
                if !changed && self.machine.state == State::Master {
                    self.keep().await;
                }
            }
            Action::Claim => match self.backend.claim().await {
                Ok(reading) => {
                    if self.machine.state == State::Master {
                        tracing::info!(
                            "ha: master: took {} again: {}",
                            self.shared.vip,
                            decision.reason
                        );
                    }
                    self.set_holder(reading);
                    self.last_keep = Some(Instant::now());
                    self.board.update(|s| s.last_error = None);
                    self.commit(decision);
                }
                Err(e) => {
                    tracing::error!("ha: taking over {} failed: {e}", self.shared.vip);
                    self.holder = Holder::Unknown;
                    self.holder_read_at = None;
                    let text = e.to_string();
                    self.board.update(|s| s.last_error = Some(text));
                    self.claim_failed("the take-over failed");
                }
            },
            Action::Release => {
                if let Err(e) = self.backend.release().await {
                    tracing::error!("ha: releasing {} failed: {e}", self.shared.vip);
                    let text = e.to_string();
                    self.board.update(|s| s.last_error = Some(text));
                }
                self.holder = Holder::Unknown;
                self.holder_read_at = None;
                self.commit(decision);
            }
        }
        self.publish_peer(now, peer.is_some());
    }

    /// A take-over that did not happen: out of master (a master whose re-take failed no longer
    /// holds the address), and a hold-down before the next attempt.
    fn claim_failed(&mut self, why: &str) {
        let from = self.machine.state;
        self.machine = self
            .machine
            .claim_failed(self.shared.now(), self.settings.hold_down);
        let to = self.machine.state;
        let text = format!("{why}; trying again after the hold-down");
        if to != from {
            tracing::info!("ha: {from} -> {to}: {text}");
            super::notify_transition(from, to);
            self.board.update(|s| {
                s.state = to;
                s.reason = text.clone();
                s.since_unix_ms = unix_ms(SystemTime::now());
                s.transitions += 1;
            });
        }
        self.board.update(|s| s.decision = text);
        self.blocked = false;
        self.publish_state();
    }

    fn step(&self, now: Duration, fit: Option<bool>, peer: Option<&state::PeerView>) -> Decision {
        state::step(
            &self.machine,
            &Inputs {
                now,
                fit,
                peer,
                holder: self.holder,
            },
            &self.settings,
        )
    }

    async fn read_holder(&mut self, liveness: bool) {
        match self.backend.read(liveness).await {
            Ok(reading) => self.set_holder(reading),
            Err(e) => {
                tracing::warn!("ha: reading who holds {} failed: {e}", self.shared.vip);
                self.holder = Holder::Unknown;
                self.holder_read_at = Some(Instant::now());
                let text = e.to_string();
                self.board.update(|s| {
                    s.vip_holder = Some(HolderStatus::new(Holder::Unknown, text.clone()));
                    s.last_error = Some(text);
                });
            }
        }
    }

    fn set_holder(&mut self, reading: Reading) {
        tracing::debug!("ha: arbiter: {:?}: {}", reading.holder, reading.detail);
        self.holder = reading.holder;
        self.holder_read_at = Some(Instant::now());
        self.board
            .update(|s| s.vip_holder = Some(HolderStatus::new(reading.holder, reading.detail)));
    }

    async fn keep(&mut self) {
        let due = self
            .last_keep
            .is_none_or(|t| t.elapsed() >= self.shared.interval / 2);
        if !due {
            return;
        }
        self.last_keep = Some(Instant::now());
        if let Err(e) = self.backend.keep().await {
            tracing::error!("ha: keeping {} failed: {e}", self.shared.vip);
            let text = e.to_string();
            self.board.update(|s| s.last_error = Some(text));
        }
    }

    fn commit(&mut self, d: Decision) {
        self.blocked = d.reason == state::Reason::HeldByLiveNode;
        let decided = d.reason.to_string();
        self.board.update(|s| s.decision = decided);
        let from = self.machine.state;
        self.machine = d.next;
        if self.machine.state != from {
            tracing::info!("ha: {from} -> {}: {}", self.machine.state, d.reason);
            super::notify_transition(from, self.machine.state);
            let (to, reason) = (self.machine.state, d.reason.to_string());
            self.board.update(|s| {
                s.state = to;
                s.reason = reason;
                s.since_unix_ms = unix_ms(SystemTime::now());
                s.transitions += 1;
            });
        }
        self.publish_state();
    }

    /// Tells the sender (and so the peer) the committed state and the latest self-check.
    fn publish_state(&self) {
        let advert = Advert {
            state: self.machine.state,
            fit: self.fit() == Some(true),
            known: self.fit().is_some(),
        };
        self.advert.send_if_modified(|a| {
            let changed = *a != advert;
            *a = advert;
            changed
        });
    }

    fn publish_peer(&self, now: Duration, alive: bool) {
        let tracker = self.shared.tracker();
        let view = tracker.last_view().cloned();
        let heard_ms = tracker.heard_at().map(|t| {
            let ago = now.saturating_sub(t);
            unix_ms(SystemTime::now()).saturating_sub(ago.as_millis() as u64)
        });
        drop(tracker);
        let fitness = self.fitness.borrow().clone();
        self.board.update(|s| {
            s.peer.alive = alive;
            s.peer.last_heard_unix_ms = heard_ms;
            if let Some(v) = view {
                s.peer.node_id = Some(v.rank.node_id);
                s.peer.priority = Some(v.rank.priority);
                s.peer.state = Some(v.state);
                s.peer.fit = Some(v.fit);
            }
            s.fit = fitness.as_ref().map(Fitness::is_fit);
            s.unfit_reason = match fitness {
                Some(Fitness::Unfit(r)) => Some(r),
                _ => None,
            };
        });
    }

    /// The next moment something could change without an event: the peer going silent, the
    /// hold-down or the listening period ending, an ownership check falling due, or the
    /// regular tick (which also renews a local lease).
    fn next_wake(&self) -> Instant {
        let start = self.shared.start;
        let now = Instant::now();
        let mut wake = now + self.shared.interval;
        let mut consider = |at: Instant| {
            if at > now && at < wake {
                wake = at;
            }
        };
        if let Some(silent) = self.shared.tracker().silent_at() {
            consider(start + silent + Duration::from_millis(1));
        }
        consider(start + self.machine.hold_until);
        consider(start + self.machine.since + self.settings.listen);
        if let Some(t) = self.holder_read_at {
            consider(t + self.ownership_check);
        }
        // Waiting for a silent peer's address to go: in local mode that happens when its lease
        // runs out, which only another probe can tell, and probes are cheap. (In ec2 mode the
        // read spacing keeps this from calling the API more often.)
        if self.blocked {
            consider(now + BLOCKED_RETRY);
        }
        wake
    }

    /// Stopping hands the address to the peer at once instead of after the failure window.
    /// In ec2 mode the master tells the peer it is leaving and keeps the address until the peer
    /// has it (the API moves it without a gap). In local mode it gives the address up first: the
    /// peer takes an address only once the segment shows it free.
    async fn leave(&mut self) {
        let was_master = self.machine.state == State::Master;
        let now = self.shared.now();
        self.machine = Machine {
            state: State::Fault,
            since: now,
            hold_until: now + self.settings.hold_down,
            displaced: false,
        };
        self.board.update(|s| {
            s.state = State::Fault;
            s.reason = "stopping".to_string();
            s.since_unix_ms = unix_ms(SystemTime::now());
        });
        let release_first = self.settings.live_holder_is_alive_agent;
        if release_first {
            self.release_on_leaving().await;
        }
        self.advert.send_replace(Advert {
            state: State::Fault,
            fit: false,
            known: true,
        });
        if !release_first {
            if was_master {
                let deadline = Instant::now() + self.shared.interval * 3;
                while Instant::now() < deadline {
                    let now = self.shared.now();
                    let peer_master = self
                        .shared
                        .tracker()
                        .view(now)
                        .is_some_and(|p| p.state == State::Master);
                    if peer_master {
                        break;
                    }
                    let _ = tokio::time::timeout_at(deadline, self.shared.heard.notified()).await;
                }
            }
            self.release_on_leaving().await;
        }
        tracing::info!("ha: stopped");
    }

    async fn release_on_leaving(&mut self) {
        if let Err(e) = self.backend.release().await {
            tracing::error!("ha: releasing {} on shutdown failed: {e}", self.shared.vip);
        }
    }
}

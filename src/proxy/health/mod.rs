//! Active health checks with ELB's semantics, feeding the balancers.
//!
//! Every server of a pool with a `health_check` is probed at the target's port on the server's
//! own host (ELB checks the target port of each instance; a unix-socket server is probed on its
//! socket) every `interval`, each check bounded by `timeout`. A server leaves rotation after
//! `unhealthy_threshold` consecutive failed checks and returns after `healthy_threshold`
//! consecutive passes, through [`Pool::set_active_health`](super::balance::Pool::set_active_health);
//! passive health (`max_fails`/`fail_timeout`) stays in the balancer and applies on top.
//!
//! # Starting state
//!
//! Servers start in rotation and are checked at once, as nginx Plus does without `mandatory`.
//! ELB starts a newly registered instance out of service until it passes `healthy_threshold`
//! checks, but with ELB's defaults (10 checks 30 s apart) an appliance that started that way
//! would refuse all traffic for five minutes after every restart. Starting healthy, a dead
//! server costs the first requests a retry (passive health takes it out after `max_fails`) and
//! the checks take it out for good after `unhealthy_threshold` intervals.
//!
//! # Sharing
//!
//! Checks are keyed by what they probe: the address, the `Host` they send and the check's
//! settings. Pools whose checks are identical share one probe, as the listeners of one ELB share
//! its health check. A reload keeps the probes (and their verdicts) that the new config still
//! wants, starts the new ones and stops the rest.

mod probe;
mod verdict;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;
use tokio::task::JoinHandle;

use super::balance::{PeerAddr, PeerId, PeerInfo};
use super::runtime::{Runtime, UpstreamPool};
use crate::config::StatusRange;
use crate::config::{validate::server_address, HealthCheck, HealthProtocol, HealthTarget};
use crate::sync::lock;
pub use verdict::Verdict;

/// How often the checker looks for a reloaded runtime.
const RECONCILE_EVERY: Duration = Duration::from_millis(200);

/// The health checks of a running data plane, and their state for the admin side.
pub struct HealthChecks {
    runtime: Arc<ArcSwap<Runtime>>,
    probes: Mutex<HashMap<ProbeKey, Running>>,
}

struct Running {
    probe: Arc<Probe>,
    task: JoinHandle<()>,
}

/// What one probe checks. Two servers with equal keys share one probe.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ProbeKey {
    addr: PeerAddr,
    /// The `Host` header (and SNI, when it is a name).
    host: String,
    target: HealthTarget,
    interval: Duration,
    timeout: Duration,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    success_codes: Vec<StatusRange>,
}

struct Probe {
    key: ProbeKey,
    verdict: Mutex<Verdict>,
    /// The peers of the current runtime's pools that follow this probe.
    subscribers: Mutex<Vec<(Weak<UpstreamPool>, PeerId)>>,
}

/// One pool's health, for the admin API.
#[derive(Clone, Debug, Serialize)]
pub struct PoolHealth {
    pub pool: String,
    /// The check as ELB writes it: `HTTP:8080/status`.
    pub target: String,
    pub peers: Vec<PeerHealth>,
}

/// One server's health, for the admin API.
#[derive(Clone, Debug, Serialize)]
pub struct PeerHealth {
    /// The `server` as written in the config.
    pub server: String,
    /// The address traffic goes to.
    pub addr: String,
    /// What is probed: `HTTP 10.0.0.1:8080/status`.
    pub probe: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl HealthChecks {
    pub fn new(runtime: Arc<ArcSwap<Runtime>>) -> Self {
        HealthChecks {
            runtime,
            probes: Mutex::new(HashMap::new()),
        }
    }

    /// Every pool with a health check (sorted by name) and each server's verdict. Servers not
    /// checked yet show the starting state: healthy, no checks.
    pub fn status(&self) -> Vec<PoolHealth> {
        let runtime = self.runtime.load_full();
        let probes = self.lock();
        let mut pools: Vec<PoolHealth> = unique_pools(&runtime)
            .filter_map(|pool| {
                let check = pool.health_check.as_ref()?;
                let peers = pool
                    .balancer
                    .peers()
                    .iter()
                    .map(|info| {
                        let key = probe_key(info, check);
                        let verdict = probes
                            .get(&key)
                            .map(|r| r.probe.verdict())
                            .unwrap_or_default();
                        PeerHealth {
                            server: info.server.clone(),
                            addr: info.addr.to_string(),
                            probe: key.describe(),
                            verdict,
                        }
                    })
                    .collect();
                Some(PoolHealth {
                    pool: pool.name.clone(),
                    target: check.target.to_string(),
                    peers,
                })
            })
            .collect();
        pools.sort_by(|a, b| a.pool.cmp(&b.pool));
        pools
    }

    /// Runs the checks until `shutdown` turns true, following reloads of the runtime.
    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        let mut seen: Option<Arc<Runtime>> = None;
        loop {
            let current = self.runtime.load_full();
            // Holding the runtime last reconciled keeps its address from being reused by the
            // next one, so a reload is never mistaken for the same runtime.
            if seen.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &current)) {
                self.reconcile(&current);
                seen = Some(current);
            }
            tokio::select! {
                _ = tokio::time::sleep(RECONCILE_EVERY) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        for (_, running) in self.lock().drain() {
            running.task.abort();
        }
    }

    /// Starts the probes `runtime` needs, stops the others, and points every probe at the
    /// runtime's pools (applying its verdict to them at once).
    fn reconcile(&self, runtime: &Runtime) {
        let mut wanted: HashMap<ProbeKey, Vec<(Weak<UpstreamPool>, PeerId)>> = HashMap::new();
        for pool in unique_pools(runtime) {
            let Some(check) = &pool.health_check else {
                continue;
            };
            for (i, info) in pool.balancer.peers().iter().enumerate() {
                wanted
                    .entry(probe_key(info, check))
                    .or_default()
                    .push((Arc::downgrade(pool), PeerId(i as u32)));
            }
        }
        let mut probes = self.lock();
        probes.retain(|key, running| {
            let keep = wanted.contains_key(key);
            if !keep {
                running.task.abort();
            }
            keep
        });
        for (key, subscribers) in wanted {
            let running = match probes.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let probe = Arc::new(Probe {
                        key: e.key().clone(),
                        verdict: Mutex::new(Verdict::default()),
                        subscribers: Mutex::new(Vec::new()),
                    });
                    let task = tokio::spawn(probe.clone().run());
                    e.insert(Running { probe, task })
                }
            };
            *lock(&running.probe.subscribers) = subscribers;
            running.probe.apply(running.probe.verdict().healthy);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ProbeKey, Running>> {
        lock(&self.probes)
    }
}

impl Probe {
    fn verdict(&self) -> Verdict {
        lock(&self.verdict).clone()
    }

    async fn run(self: Arc<Self>) {
        let prober = match probe::Prober::new(&self.key) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("health check {} cannot run: {e}", self.key.describe());
                return;
            }
        };
        let mut ticks = tokio::time::interval(self.key.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let result = prober.check().await;
            let reason = result.as_ref().err().cloned();
            let (flipped, verdict) = {
                let mut v = lock(&self.verdict);
                let flipped = v.record(
                    result,
                    SystemTime::now(),
                    self.key.healthy_threshold,
                    self.key.unhealthy_threshold,
                );
                (flipped, v.clone())
            };
            self.apply(verdict.healthy);
            match flipped {
                Some(false) => tracing::warn!(
                    "health check {} failed {} times in a row ({}): out of rotation",
                    self.key.describe(),
                    verdict.consecutive_failures,
                    reason.unwrap_or_default()
                ),
                Some(true) => tracing::warn!(
                    "health check {} passed {} times in a row: back in rotation",
                    self.key.describe(),
                    verdict.consecutive_successes
                ),
                None => {}
            }
        }
    }

    fn apply(&self, healthy: bool) {
        for (pool, peer) in lock(&self.subscribers).iter() {
            if let Some(pool) = pool.upgrade() {
                pool.balancer.set_active_health(*peer, healthy);
            }
        }
    }
}

impl ProbeKey {
    /// `HTTP 10.0.0.1:8080/status`, `TCP unix:/run/app.sock`.
    fn describe(&self) -> String {
        let proto = match self.target.protocol {
            HealthProtocol::Http => "HTTP",
            HealthProtocol::Https => "HTTPS",
            HealthProtocol::Tcp => "TCP",
            HealthProtocol::Ssl => "SSL",
        };
        format!(
            "{proto} {}{}",
            self.addr,
            self.target.path.as_deref().unwrap_or("")
        )
    }
}

/// What checking `check` on this server probes: the server's address with the target's port,
/// and a `Host` of the server's host as written with that port (when not the default).
fn probe_key(info: &PeerInfo, check: &HealthCheck) -> ProbeKey {
    let port = check.target.port;
    let addr = match &info.addr {
        PeerAddr::Inet(a) => PeerAddr::Inet(SocketAddr::new(a.ip(), port)),
        PeerAddr::Unix(p) => PeerAddr::Unix(p.clone()),
    };
    let host = match (&info.addr, server_address(&info.server, 80)) {
        (PeerAddr::Unix(_), _) | (_, Err(_)) => "localhost".to_string(),
        (PeerAddr::Inet(_), Ok((host, _))) => {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            let default = match check.target.protocol {
                HealthProtocol::Https | HealthProtocol::Ssl => 443,
                _ => 80,
            };
            if port == default {
                host
            } else {
                format!("{host}:{port}")
            }
        }
    };
    ProbeKey {
        addr,
        host,
        target: check.target.clone(),
        interval: check.interval.get(),
        timeout: check.timeout.get(),
        healthy_threshold: check.healthy_threshold,
        unhealthy_threshold: check.unhealthy_threshold,
        success_codes: check.success_codes.clone(),
    }
}

/// Each pool once (a pool may be reachable under more than one name).
fn unique_pools(runtime: &Runtime) -> impl Iterator<Item = &Arc<UpstreamPool>> {
    let mut seen = std::collections::HashSet::new();
    runtime
        .pools
        .values()
        .filter(move |p| seen.insert(Arc::as_ptr(p)))
}

/// The checks as a Pingora background service, started with the server.
pub struct HealthService(pub Arc<HealthChecks>);

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.run(shutdown).await;
    }
}

#[cfg(test)]
mod tests;

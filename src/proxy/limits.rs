//! Request-rate and connection limits at request time, as ngx_http_limit_req_module and
//! ngx_http_limit_conn_module apply them in nginx's pre-access phase (after the rewrite
//! phase's `return`, before `allow`/`deny`).
//!
//! Rates follow nginx's leaky bucket to the millisecond and the thousandth of a request: each
//! key's `excess` (in thousandths of a request) drains at the zone's rate and grows by one
//! request per request let through; a request finding the excess above `burst` is refused,
//! one finding it above `delay` waits until the excess is back at `delay`. With several
//! zones, every one must let the request through; it waits for the longest of their delays.
//!
//! A zone's state lives as long as some config names it: a reload that keeps a zone's name,
//! key and size keeps its counts, as nginx keeps a shared memory zone across a reload.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::compile::diag::Diagnostic;
use crate::config::template::{Context, Template};
use crate::config::{self, Defined, LogLevel};
use crate::sync::lock;

/// Bytes of zone a request-rate state takes in nginx (a red-black tree node and the state,
/// in the slab allocator's 128-byte class for an IPv4 or IPv6 key).
const REQUEST_STATE_BYTES: u64 = 128;
/// The same for a connection count (the 64-byte class).
const CONNECTION_STATE_BYTES: u64 = 64;
/// nginx refuses to count a key longer than this (and logs it).
const MAX_REQUEST_KEY: usize = 65535;
const MAX_CONNECTION_KEY: usize = 255;

/// The zones of a config, by name.
#[derive(Default)]
pub struct Zones {
    requests: HashMap<String, Arc<RequestZone>>,
    connections: HashMap<String, Arc<ConnectionZone>>,
}

impl Zones {
    /// The zones of `[http]`.
    pub fn build(http: &config::Http, defined: Defined<'_>) -> Result<Zones, Diagnostic> {
        let scope = (Context::Http, defined);
        Zones::of(&http.request_zones, &http.connection_zones, scope)
    }

    /// The connection zones of `[stream]` (its variables are the stream's).
    pub fn of_stream(stream: &config::Stream, defined: Defined<'_>) -> Result<Zones, Diagnostic> {
        Zones::of(&[], &stream.connection_zones, (Context::Stream, defined))
    }

    fn of(
        request_zones: &[config::RequestZone],
        connection_zones: &[config::ConnectionZone],
        (context, defined): (Context, Defined<'_>),
    ) -> Result<Zones, Diagnostic> {
        let key_template = |text: &str, at: Option<&config::Origin>| {
            super::tables::template_in(context, text, defined, at)
        };
        let mut zones = Zones::default();
        for z in request_zones {
            let key = key_template(&z.key, z.origin.as_ref())?;
            let capacity = capacity(z.size.0, REQUEST_STATE_BYTES);
            let state = shared_state(&REQUEST_STATES, &z.name, &z.key, z.size.0, || {
                Mutex::new(LruCache::new(capacity))
            });
            let zone = RequestZone {
                name: z.name.clone(),
                key,
                rate: z.rate.per_kilosecond().max(1),
                state,
            };
            zones.requests.insert(z.name.clone(), Arc::new(zone));
        }
        for z in connection_zones {
            let key = key_template(&z.key, z.origin.as_ref())?;
            let capacity = capacity(z.size.0, CONNECTION_STATE_BYTES).get();
            let state = shared_state(&CONNECTION_STATES, &z.name, &z.key, z.size.0, || {
                Mutex::new(foldhash::HashMap::default())
            });
            let zone = ConnectionZone {
                name: z.name.clone(),
                key,
                capacity,
                state,
            };
            zones.connections.insert(z.name.clone(), Arc::new(zone));
        }
        Ok(zones)
    }

    /// A level's limits (already merged with the outer levels'), or `None` when it has none.
    pub fn limits(&self, l: &config::Limits) -> Option<Arc<Limits>> {
        let requests = l.requests.as_deref().unwrap_or_default();
        let connections = l.connections.as_deref().unwrap_or_default();
        if requests.is_empty() && connections.is_empty() {
            return None;
        }
        let requests = requests
            .iter()
            .filter_map(|r| {
                Some(RequestLimit {
                    zone: self.requests.get(&r.zone)?.clone(),
                    burst: u64::from(r.burst) * 1000,
                    delay: if r.nodelay {
                        u64::MAX
                    } else {
                        u64::from(r.delay) * 1000
                    },
                })
            })
            .collect();
        let connections = connections
            .iter()
            .filter_map(|c| Some((self.connections.get(&c.zone)?.clone(), c.max)))
            .collect();
        let level = l.request_log_level.unwrap_or(LogLevel::Error);
        Some(Arc::new(Limits {
            requests,
            request_status: l.request_status.unwrap_or(503),
            request_log_level: level,
            // nginx logs delays one level below refusals (info stays info).
            delay_log_level: match level {
                LogLevel::Error => LogLevel::Warn,
                LogLevel::Warn => LogLevel::Notice,
                _ => LogLevel::Info,
            },
            request_dry_run: l.request_dry_run.unwrap_or(false),
            connections,
            connection_status: l.connection_status.unwrap_or(503),
            connection_log_level: l.connection_log_level.unwrap_or(LogLevel::Error),
            connection_dry_run: l.connection_dry_run.unwrap_or(false),
        }))
    }
}

fn capacity(size: u64, per_state: u64) -> NonZeroUsize {
    NonZeroUsize::new(usize::try_from(size / per_state).unwrap_or(usize::MAX))
        .unwrap_or(NonZeroUsize::MIN)
}

/// The states of the zones the running configs name: (name, key, size) and the state.
type Registry<T> = Mutex<Vec<(String, String, u64, Weak<T>)>>;

type RequestStates = Mutex<LruCache<Box<[u8]>, RateState>>;
type ConnectionCounts = Mutex<foldhash::HashMap<Box<[u8]>, u32>>;

static REQUEST_STATES: Registry<RequestStates> = Mutex::new(Vec::new());
static CONNECTION_STATES: Registry<ConnectionCounts> = Mutex::new(Vec::new());

/// The state of the zone `name`: the one the running config has when its key and size are the
/// same, else a new one.
fn shared_state<T>(
    registry: &Registry<T>,
    name: &str,
    key: &str,
    size: u64,
    new: impl FnOnce() -> T,
) -> Arc<T> {
    let mut registry = lock(registry);
    registry.retain(|(_, _, _, state)| state.strong_count() > 0);
    let same = registry
        .iter()
        .find(|(n, k, s, _)| n == name && k == key && *s == size)
        .and_then(|(_, _, _, state)| state.upgrade());
    if let Some(state) = same {
        return state;
    }
    let state = Arc::new(new());
    registry.push((name.into(), key.into(), size, Arc::downgrade(&state)));
    state
}

/// Milliseconds on a clock every thread shares (nginx's `ngx_current_msec`).
fn msec(now: Instant) -> i64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    i64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(i64::MAX)
}

/// A `limit_req_zone`.
pub struct RequestZone {
    name: String,
    key: Template,
    /// Requests per 1000 seconds.
    rate: u64,
    state: Arc<RequestStates>,
}

/// One key's bucket (ngx_http_limit_req_node_t).
#[derive(Clone, Copy, Debug)]
struct RateState {
    /// Thousandths of a request over the rate.
    excess: u64,
    /// When `excess` was last brought up to date; `None` for a state made by a request that
    /// has not been let through yet (nginx's `last = 0`, which drains everything).
    last: Option<i64>,
    /// Requests between their look-up and their accounting: such a state is not dropped.
    pending: u32,
}

/// A `limit_conn_zone`.
pub struct ConnectionZone {
    name: String,
    key: Template,
    capacity: usize,
    state: Arc<ConnectionCounts>,
}

struct RequestLimit {
    zone: Arc<RequestZone>,
    /// In thousandths of a request, as nginx keeps them.
    burst: u64,
    delay: u64,
}

/// A location's limits, with its inherited settings.
pub struct Limits {
    requests: Vec<RequestLimit>,
    request_status: u16,
    request_log_level: LogLevel,
    delay_log_level: LogLevel,
    request_dry_run: bool,
    connections: Vec<(Arc<ConnectionZone>, u32)>,
    connection_status: u16,
    connection_log_level: LogLevel,
    connection_dry_run: bool,
}

/// What a request's limits decided, for `$limit_req_status` and `$limit_conn_status` (`None`
/// until they ran, or when every key was empty).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitStatus {
    pub requests: Option<RequestLimitStatus>,
    pub connections: Option<ConnectionLimitStatus>,
}

/// `$limit_req_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestLimitStatus {
    Passed,
    Delayed,
    Rejected,
    DelayedDryRun,
    RejectedDryRun,
}

impl RequestLimitStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RequestLimitStatus::Passed => "PASSED",
            RequestLimitStatus::Delayed => "DELAYED",
            RequestLimitStatus::Rejected => "REJECTED",
            RequestLimitStatus::DelayedDryRun => "DELAYED_DRY_RUN",
            RequestLimitStatus::RejectedDryRun => "REJECTED_DRY_RUN",
        }
    }
}

/// `$limit_conn_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionLimitStatus {
    Passed,
    Rejected,
    RejectedDryRun,
}

impl ConnectionLimitStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectionLimitStatus::Passed => "PASSED",
            ConnectionLimitStatus::Rejected => "REJECTED",
            ConnectionLimitStatus::RejectedDryRun => "REJECTED_DRY_RUN",
        }
    }
}

/// What the request-rate limits decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on now.
    Pass,
    /// Go on after this long.
    Wait(Duration),
    /// Answer with this status.
    Refuse(u16),
}

/// A request in progress, counted in connection zones until it is dropped.
#[derive(Default)]
pub struct Held(smallvec::SmallVec<[HeldPlace; 1]>);

/// A zone and the key a request counts under.
type HeldPlace = (Arc<ConnectionZone>, Box<[u8]>);

impl Drop for Held {
    fn drop(&mut self) {
        for (zone, key) in self.0.drain(..) {
            release(&zone, &key);
        }
    }
}

fn release(zone: &ConnectionZone, key: &[u8]) {
    let mut counts = lock(&zone.state);
    if let Some(count) = counts.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// Writes a limit's log line at a level, with the request's or session's context (see
/// [`error_context`](super::error_context)).
pub type LogLine<'a> = &'a dyn Fn(LogLevel, std::fmt::Arguments<'_>);

impl Limits {
    pub fn has_requests(&self) -> bool {
        !self.requests.is_empty()
    }

    pub fn has_connections(&self) -> bool {
        !self.connections.is_empty()
    }

    /// The request-rate limits for a request whose keys `key_of` gives, at `now`
    /// (ngx_http_limit_req_handler). `None` for the status when no key was counted (all
    /// empty): nginx then leaves `$limit_req_status` unset.
    pub fn check_requests(
        &self,
        mut key_of: impl FnMut(&Template) -> Vec<u8>,
        now: Instant,
        log: LogLine<'_>,
    ) -> (Option<RequestLimitStatus>, Verdict) {
        let now = msec(now);
        let last_index = self.requests.len().saturating_sub(1);
        let dry_run = if self.request_dry_run {
            ", dry run"
        } else {
            ""
        };
        let refused = if self.request_dry_run {
            (Some(RequestLimitStatus::RejectedDryRun), Verdict::Pass)
        } else {
            (
                Some(RequestLimitStatus::Rejected),
                Verdict::Refuse(self.request_status),
            )
        };
        // The zones looked up so far that still wait for their accounting, with their keys.
        let mut pending: Vec<(&RequestLimit, Vec<u8>)> = Vec::new();
        let mut last: Option<(&RequestLimit, u64)> = None;
        for (n, limit) in self.requests.iter().enumerate() {
            let key = key_of(&limit.zone.key);
            if key.is_empty() {
                continue;
            }
            if key.len() > MAX_REQUEST_KEY {
                tracing::error!(
                    "the value of the \"{}\" key is more than 65535 bytes",
                    limit.zone.name
                );
                continue;
            }
            match lookup(limit, &key, now, n == last_index) {
                Lookup::Busy(excess) => {
                    log(
                        self.request_log_level,
                        format_args!(
                            "limiting requests{dry_run}, excess: {} by zone \"{}\"",
                            Thousandths(excess),
                            limit.zone.name
                        ),
                    );
                    unlock(&pending);
                    return refused;
                }
                Lookup::Full => {
                    tracing::error!(
                        "could not allocate node in limit_req zone \"{}\"",
                        limit.zone.name
                    );
                    unlock(&pending);
                    return refused;
                }
                Lookup::Accounted(excess) => last = Some((limit, excess)),
                Lookup::Pending => pending.push((limit, key)),
            }
        }
        if last.is_none() && pending.is_empty() {
            return (None, Verdict::Pass);
        }
        // The longest delay of the zones (ngx_http_limit_req_account), the last one's first.
        let mut longest: Option<(u64, &RequestLimit, u64)> = last.and_then(|(limit, excess)| {
            (excess > limit.delay).then(|| {
                let ms = (excess - limit.delay) * 1000 / limit.zone.rate;
                (ms, limit, excess)
            })
        });
        for (limit, key) in pending.iter().rev() {
            let excess = account(limit, key, now);
            if excess <= limit.delay {
                continue;
            }
            let ms = (excess - limit.delay) * 1000 / limit.zone.rate;
            if longest.is_none_or(|(longest, _, _)| ms > longest) {
                longest = Some((ms, limit, excess));
            }
        }
        let Some((ms, limit, excess)) = longest.filter(|(ms, _, _)| *ms > 0) else {
            return (Some(RequestLimitStatus::Passed), Verdict::Pass);
        };
        log(
            self.delay_log_level,
            format_args!(
                "delaying request{dry_run}, excess: {}, by zone \"{}\"",
                Thousandths(excess),
                limit.zone.name
            ),
        );
        if self.request_dry_run {
            return (Some(RequestLimitStatus::DelayedDryRun), Verdict::Pass);
        }
        (
            Some(RequestLimitStatus::Delayed),
            Verdict::Wait(Duration::from_millis(ms)),
        )
    }

    /// The connection limits for a request whose keys `key_of` gives
    /// (ngx_http_limit_conn_handler): the request counts in each zone until `held` is dropped.
    /// `Err` with the status to answer when a zone is at its limit (nothing is then held).
    pub fn check_connections(
        &self,
        mut key_of: impl FnMut(&Template) -> Vec<u8>,
        held: &mut Held,
        log: LogLine<'_>,
    ) -> (Option<ConnectionLimitStatus>, Result<(), u16>) {
        let mut status = None;
        for (zone, max) in &self.connections {
            let key = key_of(&zone.key);
            if key.is_empty() {
                continue;
            }
            if key.len() > MAX_CONNECTION_KEY {
                tracing::error!(
                    "the value of the \"{}\" key is more than 255 bytes",
                    zone.name
                );
                continue;
            }
            status = Some(ConnectionLimitStatus::Passed);
            let admitted = {
                let mut counts = lock(&zone.state);
                let full = counts.len() >= zone.capacity;
                match counts.get_mut(key.as_slice()) {
                    Some(count) if *count >= *max => Admit::AtLimit,
                    Some(count) => {
                        *count += 1;
                        Admit::Yes
                    }
                    None if full => Admit::NoRoom,
                    None => {
                        counts.insert(key.clone().into_boxed_slice(), 1);
                        Admit::Yes
                    }
                }
            };
            match admitted {
                Admit::Yes => {}
                Admit::AtLimit => log(
                    self.connection_log_level,
                    format_args!(
                        "limiting connections{} by zone \"{}\"",
                        if self.connection_dry_run {
                            ", dry run,"
                        } else {
                            ""
                        },
                        zone.name
                    ),
                ),
                Admit::NoRoom => tracing::error!(
                    "could not allocate node in limit_conn zone \"{}\"",
                    zone.name
                ),
            }
            if admitted != Admit::Yes {
                // What this request took in the zones before is given back.
                *held = Held::default();
                return if self.connection_dry_run {
                    (Some(ConnectionLimitStatus::RejectedDryRun), Ok(()))
                } else {
                    (
                        Some(ConnectionLimitStatus::Rejected),
                        Err(self.connection_status),
                    )
                };
            }
            held.0.push((zone.clone(), key.into_boxed_slice()));
        }
        (status, Ok(()))
    }
}

/// Whether a connection zone counts one more request for a key.
#[derive(PartialEq, Eq)]
enum Admit {
    Yes,
    AtLimit,
    /// A new key, and no room for it.
    NoRoom,
}

/// What looking a key up in a zone found (ngx_http_limit_req_lookup).
enum Lookup {
    /// Over the burst: refused, with the excess it would have had.
    Busy(u64),
    /// The zone has no room for a new key.
    Full,
    /// The last zone: accounted at once, with its new excess.
    Accounted(u64),
    /// An earlier zone: accounted once every zone has let the request through.
    Pending,
}

/// The excess a state has at `now` with one more request (nginx's formula, in thousandths).
fn drained(state: &RateState, rate: u64, now: i64) -> (u64, i64) {
    let Some(last) = state.last else {
        return (0, 0);
    };
    let ms = match now - last {
        ms if ms < -60000 => 1,
        ms if ms < 0 => 0,
        ms => ms,
    };
    let drain = i128::from(rate) * i128::from(ms) / 1000;
    let excess = (i128::from(state.excess) - drain + 1000).max(0);
    (u64::try_from(excess).unwrap_or(u64::MAX), ms)
}

fn lookup(limit: &RequestLimit, key: &[u8], now: i64, account: bool) -> Lookup {
    let zone = &limit.zone;
    let mut states = lock(&zone.state);
    if let Some(state) = states.get_mut(key) {
        let (excess, ms) = drained(state, zone.rate, now);
        if excess > limit.burst {
            return Lookup::Busy(excess);
        }
        if account {
            state.excess = excess;
            if ms != 0 || state.last.is_none() {
                state.last = Some(now);
            }
            return Lookup::Accounted(excess);
        }
        state.pending += 1;
        return Lookup::Pending;
    }
    expire(&mut states, zone.rate, now, false);
    if states.len() >= states.cap().get() {
        expire(&mut states, zone.rate, now, true);
        if states.len() >= states.cap().get() {
            return Lookup::Full;
        }
    }
    let state = if account {
        RateState {
            excess: 0,
            last: Some(now),
            pending: 0,
        }
    } else {
        RateState {
            excess: 0,
            last: None,
            pending: 1,
        }
    };
    states.put(key.into(), state);
    if account {
        Lookup::Accounted(0)
    } else {
        Lookup::Pending
    }
}

/// Brings a pending state up to date once every zone has let the request through; its new
/// excess.
fn account(limit: &RequestLimit, key: &[u8], now: i64) -> u64 {
    let zone = &limit.zone;
    let mut states = lock(&zone.state);
    let Some(state) = states.peek_mut(key) else {
        return 0;
    };
    let (excess, ms) = drained(state, zone.rate, now);
    if ms != 0 || state.last.is_none() {
        state.last = Some(now);
    }
    state.excess = excess;
    state.pending = state.pending.saturating_sub(1);
    excess
}

/// Lets go of the states a refused request had looked up (ngx_http_limit_req_unlock).
fn unlock(pending: &[(&RequestLimit, Vec<u8>)]) {
    for (limit, key) in pending {
        if let Some(state) = lock(&limit.zone.state).peek_mut(key.as_slice()) {
            state.pending = state.pending.saturating_sub(1);
        }
    }
}

/// Drops the least recently used states that have drained and been idle for a minute, at
/// most two (ngx_http_limit_req_expire); with `force`, the least recently used one first
/// whatever its excess.
fn expire(states: &mut LruCache<Box<[u8]>, RateState>, rate: u64, now: i64, force: bool) {
    for n in 0..3 {
        if n == 0 && !force {
            continue;
        }
        let Some((_, state)) = states.peek_lru() else {
            return;
        };
        if state.pending > 0 {
            return;
        }
        if n > 0 {
            let ms = state.last.map_or(i64::MAX, |last| (now - last).abs());
            if ms < 60000 {
                return;
            }
            let drain = i128::from(rate) * i128::from(ms) / 1000;
            if i128::from(state.excess) - drain > 0 {
                return;
            }
        }
        states.pop_lru();
    }
}

/// An excess as nginx logs it: requests, with three decimals.
struct Thousandths(u64);

impl std::fmt::Display for Thousandths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Rate, RequestZone as ZoneModel, Size};

    /// Zones with these names, with a state of their own: zones of the same name, key and
    /// size share their state in a process (as a reload keeps it), so each test names its
    /// own.
    fn zones(rate: &str, zones: &[&str]) -> Zones {
        let http = config::Http {
            request_zones: zones
                .iter()
                .map(|name| ZoneModel {
                    origin: None,
                    name: (*name).into(),
                    key: "$remote_addr".into(),
                    size: Size(1 << 20),
                    rate: rate.parse::<Rate>().unwrap(),
                })
                .collect(),
            ..Default::default()
        };
        Zones::build(&http, Defined::NONE).unwrap()
    }

    fn limit(zone: &str, burst: u32, delay: u32, nodelay: bool) -> config::RequestLimit {
        config::RequestLimit {
            zone: zone.into(),
            burst,
            delay,
            nodelay,
        }
    }

    fn limits(z: &Zones, list: Vec<config::RequestLimit>) -> Arc<Limits> {
        z.limits(&config::Limits {
            requests: Some(list),
            ..Default::default()
        })
        .unwrap()
    }

    fn run(l: &Limits, key: &str, at: Instant) -> (Option<RequestLimitStatus>, Verdict) {
        l.check_requests(|_| key.as_bytes().to_vec(), at, &|_, _| {})
    }

    #[test]
    fn burst_with_nodelay_lets_that_many_through_then_refuses() {
        let z = zones("1r/m", &["nodelay"]);
        let l = limits(&z, vec![limit("nodelay", 3, 0, true)]);
        let t = Instant::now();
        for _ in 0..4 {
            assert_eq!(run(&l, "a", t).1, Verdict::Pass);
        }
        assert_eq!(
            run(&l, "a", t),
            (Some(RequestLimitStatus::Rejected), Verdict::Refuse(503))
        );
        // Another key has its own bucket; an empty key is not counted.
        assert_eq!(run(&l, "b", t).1, Verdict::Pass);
        assert_eq!(run(&l, "", t), (None, Verdict::Pass));
    }

    #[test]
    fn requests_over_the_rate_wait_for_it() {
        let z = zones("10r/s", &["waits"]);
        let l = limits(&z, vec![limit("waits", 5, 0, false)]);
        let t = Instant::now();
        assert_eq!(
            run(&l, "a", t),
            (Some(RequestLimitStatus::Passed), Verdict::Pass)
        );
        // One request over the rate at once: 1000 thousandths at 10 r/s is 100 ms.
        assert_eq!(
            run(&l, "a", t),
            (
                Some(RequestLimitStatus::Delayed),
                Verdict::Wait(Duration::from_millis(100))
            )
        );
        // 50 ms later half a request has drained.
        let later = t + Duration::from_millis(50);
        assert_eq!(
            run(&l, "a", later).1,
            Verdict::Wait(Duration::from_millis(150))
        );
        // After a second, all of it.
        let much_later = t + Duration::from_secs(2);
        assert_eq!(run(&l, "a", much_later).1, Verdict::Pass);
    }

    #[test]
    fn delay_lets_the_first_requests_of_a_burst_through_at_once() {
        let z = zones("1r/s", &["delay"]);
        let l = limits(&z, vec![limit("delay", 4, 2, false)]);
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(run(&l, "a", t).1, Verdict::Pass);
        }
        assert_eq!(run(&l, "a", t).1, Verdict::Wait(Duration::from_secs(1)));
        assert_eq!(run(&l, "a", t).1, Verdict::Wait(Duration::from_secs(2)));
        assert_eq!(run(&l, "a", t).1, Verdict::Refuse(503));
    }

    #[test]
    fn every_zone_must_let_a_request_through_and_a_refusal_counts_in_none() {
        let z = zones("1r/m", &["first", "second"]);
        let l = limits(
            &z,
            vec![limit("first", 5, 0, true), limit("second", 1, 0, true)],
        );
        let t = Instant::now();
        assert_eq!(run(&l, "a", t).1, Verdict::Pass);
        assert_eq!(run(&l, "a", t).1, Verdict::Pass);
        assert_eq!(run(&l, "a", t).1, Verdict::Refuse(503));
        // "first" counted only the two requests "second" let through: 1000 of excess, not 2000.
        let one = z.requests["first"].state.clone();
        let excess = lock(&one).peek(b"a".as_slice()).unwrap().excess;
        assert_eq!(excess, 1000);
    }

    #[test]
    fn connection_limits_hold_until_the_request_ends() {
        let http = config::Http {
            connection_zones: vec![config::ConnectionZone {
                origin: None,
                name: "addr".into(),
                key: "$remote_addr".into(),
                size: Size(1 << 20),
            }],
            ..Default::default()
        };
        let z = Zones::build(&http, Defined::NONE).unwrap();
        let l = z
            .limits(&config::Limits {
                connections: Some(vec![config::ConnectionLimit {
                    zone: "addr".into(),
                    max: 1,
                }]),
                connection_status: Some(429),
                ..Default::default()
            })
            .unwrap();
        let mut first = Held::default();
        let key = |_: &Template| b"a".to_vec();
        assert_eq!(
            l.check_connections(key, &mut first, &|_, _| {}),
            (Some(ConnectionLimitStatus::Passed), Ok(()))
        );
        let mut second = Held::default();
        assert_eq!(
            l.check_connections(key, &mut second, &|_, _| {}),
            (Some(ConnectionLimitStatus::Rejected), Err(429))
        );
        drop(first);
        assert_eq!(l.check_connections(key, &mut second, &|_, _| {}).1, Ok(()));
        drop(second);
        assert!(lock(&z.connections["addr"].state).is_empty());
    }

    #[test]
    fn a_reload_keeps_the_counts_of_an_unchanged_zone() {
        let before = zones("1r/m", &["kept"]);
        let l = limits(&before, vec![limit("kept", 0, 0, true)]);
        assert_eq!(run(&l, "a", Instant::now()).1, Verdict::Pass);
        let after = zones("1r/m", &["kept"]);
        let l = limits(&after, vec![limit("kept", 0, 0, true)]);
        assert_eq!(run(&l, "a", Instant::now()).1, Verdict::Refuse(503));
    }
}

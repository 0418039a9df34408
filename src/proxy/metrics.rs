//! Prometheus metrics: one registry for the process, counted on the request path with the
//! `prometheus` crate's lock-free counters and histograms, and backend state read from the
//! pools at scrape time (so a gauge is never stale).
//!
//! Other parts count their own events through [`metrics()`]: the HA side calls
//! [`ha_transition`] when the node changes state.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use thread_local::ThreadLocal;

use super::runtime::Runtime;

/// Request latencies, in seconds: from a millisecond to a minute.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

pub struct Metrics {
    registry: Registry,
    /// `appliance_http_requests_total{status, upstream}`; `upstream` is `-` for requests the
    /// appliance answered itself.
    pub requests: IntCounterVec,
    /// `appliance_http_request_duration_seconds{upstream}`: first byte read to last byte
    /// written (nginx's `$request_time`).
    pub request_duration: HistogramVec,
    /// `appliance_upstream_response_duration_seconds{upstream}`: per try, as
    /// `$upstream_response_time`.
    pub upstream_response: HistogramVec,
    /// `appliance_upstream_retries_total{upstream}`: tries after the first.
    pub retries: IntCounterVec,
    /// `appliance_reloads_total{result}`: `ok`, `failed`, or `upgrade` (a reload that changed
    /// the listeners and started a new process).
    pub reloads: IntCounterVec,
    /// `appliance_ha_transitions_total{from, to}`.
    pub ha_transitions: IntCounterVec,
    /// `appliance_http_requests_in_flight`: requests begun and not yet logged.
    in_flight: IntGauge,
    backend_up: IntGaugeVec,
    backend_connections: IntGaugeVec,
    backend_fails: IntGaugeVec,
    backend_weight: IntGaugeVec,
    scrape: Mutex<()>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Requests being served now; a graceful stop waits until there are none.
pub fn in_flight() -> i64 {
    IN_FLIGHT.iter().map(|n| n.0.load(Ordering::SeqCst)).sum()
}

/// Requests in flight, counted per thread: every request counts itself in and out, and one
/// counter for the process made the worker threads take turns on its cache line twice per
/// request. Aligned so that two threads' counters never share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct ThreadCount(AtomicI64);

static IN_FLIGHT: LazyLock<ThreadLocal<ThreadCount>> = LazyLock::new(ThreadLocal::new);

/// Held by a request from start to log: counts it in flight.
#[derive(Debug)]
pub struct InFlight(&'static ThreadCount);

impl InFlight {
    pub fn enter() -> InFlight {
        let count = IN_FLIGHT.get_or_default();
        count.0.fetch_add(1, Ordering::SeqCst);
        InFlight(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The thread it was counted on, wherever it ends: the sum stays right.
        self.0 .0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts an HA state change (the HA side calls this).
pub fn ha_transition(from: &str, to: &str) {
    metrics()
        .ha_transitions
        .with_label_values(&[from, to])
        .inc();
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("metric names and labels are constants and valid");
    registry
        .register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .expect("metric names and labels are constants and valid");
    registry
        .register(Box::new(g.clone()))
        .expect("each metric is registered once");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )
    .expect("metric names, labels and buckets are constants and valid");
    registry
        .register(Box::new(h.clone()))
        .expect("each metric is registered once");
    h
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let info = gauge(
            &r,
            "appliance_build_info",
            "The running build (always 1).",
            &["version"],
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let in_flight = IntGauge::new(
            "appliance_http_requests_in_flight",
            "HTTP requests being served now.",
        )
        .expect("the metric name is a valid constant");
        r.register(Box::new(in_flight.clone()))
            .expect("each metric is registered once");
        Metrics {
            in_flight,
            requests: counter(
                &r,
                "appliance_http_requests_total",
                "HTTP requests served, by status and upstream pool.",
                &["status", "upstream"],
            ),
            request_duration: histogram(
                &r,
                "appliance_http_request_duration_seconds",
                "Time from reading the request to sending the last byte of the response.",
                &["upstream"],
            ),
            upstream_response: histogram(
                &r,
                "appliance_upstream_response_duration_seconds",
                "Time an upstream server took to answer, per try.",
                &["upstream"],
            ),
            retries: counter(
                &r,
                "appliance_upstream_retries_total",
                "Requests passed to another upstream server after a failed try.",
                &["upstream"],
            ),
            reloads: counter(
                &r,
                "appliance_reloads_total",
                "Configuration reloads by result: ok, failed, upgrade.",
                &["result"],
            ),
            ha_transitions: counter(
                &r,
                "appliance_ha_transitions_total",
                "HA state changes of this node.",
                &["from", "to"],
            ),
            backend_up: gauge(
                &r,
                "appliance_backend_up",
                "1 when the server may be chosen now (not down, not failed, not unhealthy).",
                &["upstream", "server", "address", "role"],
            ),
            backend_connections: gauge(
                &r,
                "appliance_backend_active_connections",
                "Requests holding the server now.",
                &["upstream", "server", "address"],
            ),
            backend_fails: gauge(
                &r,
                "appliance_backend_fails",
                "Passive failures counted towards max_fails.",
                &["upstream", "server", "address"],
            ),
            backend_weight: gauge(
                &r,
                "appliance_backend_effective_weight",
                "The weight after failures (smooth weighted round robin).",
                &["upstream", "server", "address"],
            ),
            registry: r,
            scrape: Mutex::new(()),
        }
    }

    /// The handles of one upstream pool's series, resolved once: looking a series up by its
    /// labels hashes them and takes a lock, three times per request.
    pub fn for_pool(&self, upstream: &str) -> PoolMetrics {
        PoolMetrics {
            upstream: upstream.to_string(),
            request_duration: self.request_duration.with_label_values(&[upstream]),
            upstream_response: self.upstream_response.with_label_values(&[upstream]),
            retries: self.retries.with_label_values(&[upstream]),
            by_status: OnceLock::new(),
        }
    }

    /// Counts a finished request.
    pub fn observe_request(
        &self,
        status: u16,
        upstream: &str,
        seconds: f64,
        upstream_times: &[std::time::Duration],
        tries: usize,
    ) {
        self.observe_status(status, upstream);
        self.request_duration
            .with_label_values(&[upstream])
            .observe(seconds);
        if !upstream_times.is_empty() {
            let h = self.upstream_response.with_label_values(&[upstream]);
            for t in upstream_times {
                h.observe(t.as_secs_f64());
            }
        }
        if tries > 1 {
            self.retries
                .with_label_values(&[upstream])
                .inc_by((tries - 1) as u64);
        }
    }

    fn observe_status(&self, status: u16, upstream: &str) {
        let buf = itoa_status(status);
        let status = std::str::from_utf8(&buf[..]).unwrap_or("000");
        self.requests.with_label_values(&[status, upstream]).inc();
    }

    /// The text exposition of every metric, backend gauges read from `runtime` now.
    pub fn render(&self, runtime: &Runtime) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.in_flight.set(in_flight());
        self.backend_up.reset();
        self.backend_connections.reset();
        self.backend_fails.reset();
        self.backend_weight.reset();
        let now = Instant::now();
        let mut pools: Vec<_> = runtime.pools.values().collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        pools.dedup_by_key(|p| p.id);
        for pool in pools {
            for peer in pool.balancer.snapshot(now) {
                let addr = peer.addr.to_string();
                let role = if peer.backup { "backup" } else { "primary" };
                let up = !peer.down && peer.healthy && !peer.unavailable;
                self.backend_up
                    .with_label_values(&[&pool.name, &peer.server, &addr, role])
                    .set(i64::from(up));
                let labels = [pool.name.as_str(), peer.server.as_str(), addr.as_str()];
                self.backend_connections
                    .with_label_values(&labels)
                    .set(peer.conns as i64);
                self.backend_fails
                    .with_label_values(&labels)
                    .set(peer.fails as i64);
                self.backend_weight
                    .with_label_values(&labels)
                    .set(peer.effective_weight);
            }
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("encoding metrics failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A status as three ASCII digits without allocating.
/// One upstream pool's request series (see [`Metrics::for_pool`]).
pub struct PoolMetrics {
    upstream: String,
    request_duration: Histogram,
    upstream_response: Histogram,
    retries: IntCounter,
    /// `appliance_http_requests_total` by status 100-599, each made at its first request, so
    /// that only statuses seen are exported; the table itself (8 KB) is made at the pool's first
    /// request, so that a config of many upstreams pays only for those in use.
    by_status: OnceLock<Box<[OnceLock<IntCounter>; 500]>>,
}

impl PoolMetrics {
    /// Counts a finished request, as [`Metrics::observe_request`] does.
    pub fn observe(
        &self,
        status: u16,
        seconds: f64,
        upstream_times: &[std::time::Duration],
        tries: usize,
    ) {
        let m = metrics();
        let by_status = self
            .by_status
            .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        match by_status.get(usize::from(status).wrapping_sub(100)) {
            Some(counter) => counter
                .get_or_init(|| {
                    let buf = itoa_status(status);
                    let status = std::str::from_utf8(&buf[..]).unwrap_or("000");
                    m.requests.with_label_values(&[status, &self.upstream])
                })
                .inc(),
            None => m.observe_status(status, &self.upstream),
        }
        self.request_duration.observe(seconds);
        for t in upstream_times {
            self.upstream_response.observe(t.as_secs_f64());
        }
        if tries > 1 {
            self.retries.inc_by((tries - 1) as u64);
        }
    }
}

fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_status_and_upstream() {
        let m = metrics();
        m.observe_request(
            502,
            "unit-test-pool",
            0.01,
            &[
                std::time::Duration::from_millis(2),
                std::time::Duration::from_millis(3),
            ],
            2,
        );
        let runtime = Runtime::build(&Default::default()).unwrap();
        let text = m.render(&runtime);
        assert!(
            text.contains(
                "appliance_http_requests_total{status=\"502\",upstream=\"unit-test-pool\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("appliance_upstream_retries_total{upstream=\"unit-test-pool\"} 1"));
        assert!(text.contains(
            "appliance_upstream_response_duration_seconds_count{upstream=\"unit-test-pool\"} 2"
        ));
    }
}

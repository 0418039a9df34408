//! Prometheus metrics: one registry for the process. The request path counts into series
//! kept per worker thread ([`request_metrics`](super::request_metrics)) and into a per-thread
//! in-flight count; backend state is read from the pools at scrape time (so a gauge is never
//! stale).
//!
//! Other parts count their own events through [`metrics()`]: the HA side calls
//! [`ha_transition`] when the node changes state.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use thread_local::ThreadLocal;

use super::request_metrics::{self, RequestCollector};
use super::runtime::Runtime;

pub use super::request_metrics::PoolMetrics;

pub struct Metrics {
    registry: Registry,
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

/// The series of the requests the appliance answers itself (`upstream="-"`), looked up once.
static ANSWERED: LazyLock<std::sync::Arc<PoolMetrics>> =
    LazyLock::new(|| request_metrics::for_upstream("-"));

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
        r.register(Box::new(
            RequestCollector::new().expect("the request metrics' names and labels are valid"),
        ))
        .expect("each metric is registered once");
        Metrics {
            in_flight,
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

    /// The series of one upstream pool (shared by every pool of that name, across reloads).
    pub fn for_pool(&self, upstream: &str) -> std::sync::Arc<PoolMetrics> {
        request_metrics::for_upstream(upstream)
    }

    /// Counts a finished request of `upstream` (`-`: answered by the appliance itself).
    pub fn observe_request(
        &self,
        status: u16,
        upstream: &str,
        seconds: f64,
        upstream_times: &[std::time::Duration],
        tries: usize,
    ) {
        if upstream == "-" {
            ANSWERED.observe(status, seconds, upstream_times, tries);
        } else {
            request_metrics::for_upstream(upstream).observe(status, seconds, upstream_times, tries);
        }
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

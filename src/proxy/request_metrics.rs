//! The series every request counts itself in, by `upstream` (a pool's name, or `-` for what the
//! appliance answered itself): `appliance_http_requests_total{status, upstream}`,
//! `appliance_http_request_duration_seconds{upstream}`,
//! `appliance_upstream_response_duration_seconds{upstream}` and
//! `appliance_upstream_retries_total{upstream}`.
//!
//! Why not the `prometheus` crate's own counters and histograms: each observation of theirs is
//! several atomic operations on memory every worker thread shares (a histogram's count, bucket
//! and sum, a counter), about ten per request, with the cache lines moving between the worker
//! threads. Here each thread counts into its own part of a series, under a lock no other thread
//! takes but a scrape, and a scrape adds the parts up: exact at every scrape, as before.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use crate::sync::lock;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use thread_local::ThreadLocal;

/// Request latencies, in seconds: from a millisecond to a minute.
pub const BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const REQUESTS: &str = "appliance_http_requests_total";
const REQUEST_DURATION: &str = "appliance_http_request_duration_seconds";
const UPSTREAM_RESPONSE: &str = "appliance_upstream_response_duration_seconds";
const RETRIES: &str = "appliance_upstream_retries_total";

/// Every series by its `upstream` label, for the life of the process: a reload's new pool of
/// the same name counts on in the same series, as Prometheus expects of a counter.
static SERIES: LazyLock<Mutex<BTreeMap<String, Arc<PoolMetrics>>>> =
    LazyLock::new(Default::default);

/// One `upstream`'s series.
#[derive(Debug)]
pub struct PoolMetrics {
    upstream: String,
    threads: ThreadLocal<ThreadPart>,
}

/// One thread's counts, on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct ThreadPart(Mutex<Counts>);

#[derive(Clone, Debug, Default)]
struct Counts {
    /// By status, in the order first seen: a pool answers few different ones.
    statuses: Vec<(u16, u64)>,
    request: Histogram,
    upstream: Histogram,
    retries: u64,
}

#[derive(Clone, Debug, Default)]
struct Histogram {
    /// Not cumulative: bucket `i` counts what fell above bucket `i - 1` and up to `BUCKETS[i]`.
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn add(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }
}

/// The series of `upstream`, made at its first use (a pool's, when the runtime is built).
pub fn for_upstream(upstream: &str) -> Arc<PoolMetrics> {
    lock(&SERIES)
        .entry(upstream.to_string())
        .or_insert_with(|| {
            Arc::new(PoolMetrics {
                upstream: upstream.to_string(),
                threads: ThreadLocal::new(),
            })
        })
        .clone()
}

impl PoolMetrics {
    /// Counts a finished request: its status, its time (`$request_time`), each try's time
    /// (`$upstream_response_time`) and the tries after the first.
    pub fn observe(&self, status: u16, seconds: f64, upstream_times: &[Duration], tries: usize) {
        let mut counts = lock(&self.threads.get_or_default().0);
        match counts.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => counts.statuses.push((status, 1)),
        }
        counts.request.observe(seconds);
        for t in upstream_times {
            counts.upstream.observe(t.as_secs_f64());
        }
        counts.retries += tries.saturating_sub(1) as u64;
    }

    /// Every thread's counts, added up.
    fn total(&self) -> Counts {
        let mut total = Counts::default();
        for part in self.threads.iter() {
            let counts = lock(&part.0);
            for &(status, n) in &counts.statuses {
                match total.statuses.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, m)) => *m += n,
                    None => total.statuses.push((status, n)),
                }
            }
            total.request.add(&counts.request);
            total.upstream.add(&counts.upstream);
            total.retries += counts.retries;
        }
        total.statuses.sort_unstable();
        total
    }
}

/// Exports the series to the registry's scrape.
pub struct RequestCollector {
    descs: Vec<Desc>,
}

impl RequestCollector {
    pub fn new() -> prometheus::Result<RequestCollector> {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            Desc::new(
                name.into(),
                help.into(),
                labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )
        };
        Ok(RequestCollector {
            descs: vec![
                desc(
                    REQUESTS,
                    "HTTP requests served, by status and upstream pool.",
                    &["status", "upstream"],
                )?,
                desc(
                    REQUEST_DURATION,
                    "Time from reading the request to sending the last byte of the response.",
                    &["upstream"],
                )?,
                desc(
                    UPSTREAM_RESPONSE,
                    "Time an upstream server took to answer, per try.",
                    &["upstream"],
                )?,
                desc(
                    RETRIES,
                    "Requests passed to another upstream server after a failed try.",
                    &["upstream"],
                )?,
            ],
        })
    }
}

impl Collector for RequestCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let series: Vec<Arc<PoolMetrics>> = lock(&SERIES).values().cloned().collect();
        let mut families: Vec<MetricFamily> = self
            .descs
            .iter()
            .zip([
                MetricType::COUNTER,
                MetricType::HISTOGRAM,
                MetricType::HISTOGRAM,
                MetricType::COUNTER,
            ])
            .map(|(desc, kind)| {
                let mut family = MetricFamily::default();
                family.set_name(desc.fq_name.clone());
                family.set_help(desc.help.clone());
                family.set_field_type(kind);
                family
            })
            .collect();
        for pool in &series {
            let total = pool.total();
            let upstream = label("upstream", &pool.upstream);
            for (status, n) in &total.statuses {
                let mut m = counter(*n);
                m.set_label(vec![label("status", &status.to_string()), upstream.clone()]);
                families[0].mut_metric().push(m);
            }
            for (family, histogram) in [(1, &total.request), (2, &total.upstream)] {
                let mut m = proto::Metric::default();
                m.set_label(vec![upstream.clone()]);
                m.set_histogram(to_proto(histogram));
                families[family].mut_metric().push(m);
            }
            let mut m = counter(total.retries);
            m.set_label(vec![upstream]);
            families[3].mut_metric().push(m);
        }
        // A family without a series is not exported (as the crate's own vectors do).
        families.retain(|f| !f.get_metric().is_empty());
        families
    }
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

fn counter(value: u64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    let mut m = proto::Metric::default();
    m.set_counter(c);
    m
}

fn to_proto(h: &Histogram) -> proto::Histogram {
    let mut out = proto::Histogram::default();
    out.set_sample_count(h.count);
    out.set_sample_sum(h.sum);
    let mut cumulative = 0;
    out.set_bucket(
        BUCKETS
            .iter()
            .zip(h.buckets)
            .map(|(bound, n)| {
                cumulative += n;
                let mut b = proto::Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_threads_counts_add_up_at_the_scrape() {
        let pool = for_upstream("request-metrics-test");
        assert!(Arc::ptr_eq(&pool, &for_upstream("request-metrics-test")));
        pool.observe(200, 0.002, &[Duration::from_millis(1)], 1);
        std::thread::scope(|s| {
            s.spawn(|| {
                pool.observe(200, 0.5, &[Duration::from_millis(400)], 1);
                pool.observe(
                    502,
                    2.0,
                    &[Duration::from_millis(900), Duration::from_millis(900)],
                    2,
                );
            });
        });
        let total = pool.total();
        assert_eq!(total.statuses, [(200, 2), (502, 1)]);
        assert_eq!((total.request.count, total.upstream.count), (3, 4));
        assert_eq!(total.retries, 1);
        assert!((total.request.sum - 2.502).abs() < 1e-9);
        let h = to_proto(&total.request);
        let cumulative: Vec<u64> = h
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        // 0.002 <= 0.0025; 0.5 <= 0.5; 2.0 <= 2.5.
        assert_eq!(cumulative[0..2], [0, 1]);
        assert_eq!(cumulative[8], 2);
        assert_eq!(cumulative[10], 3);
        assert_eq!(*cumulative.last().unwrap(), 3);
    }
}

//! ELB's health rule for one probe: a server in service leaves after `unhealthy_threshold`
//! consecutive failed checks and comes back after `healthy_threshold` consecutive passes.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// What the checks have said about one probed address so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// In rotation. A server starts healthy (see the module docs of `health` for why).
    pub healthy: bool,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    /// Checks run since the probe started.
    pub checks: u64,
    /// When the last check ended, in milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check_unix_ms: Option<u64>,
    /// Why the last failed check failed (`HTTP 503`, `timed out after 2s`, a connect error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure_unix_ms: Option<u64>,
    /// When `healthy` last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_unix_ms: Option<u64>,
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict {
            healthy: true,
            consecutive_successes: 0,
            consecutive_failures: 0,
            checks: 0,
            last_check_unix_ms: None,
            last_failure: None,
            last_failure_unix_ms: None,
            since_unix_ms: None,
        }
    }
}

impl Verdict {
    /// Counts one check. Returns the new state when it flipped.
    pub fn record(
        &mut self,
        result: Result<(), String>,
        now: SystemTime,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<bool> {
        let now_ms = unix_ms(now);
        self.checks += 1;
        self.last_check_unix_ms = Some(now_ms);
        let flipped = match result {
            Ok(()) => {
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                self.consecutive_failures = 0;
                !self.healthy && self.consecutive_successes >= healthy_threshold
            }
            Err(reason) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.consecutive_successes = 0;
                self.last_failure = Some(reason);
                self.last_failure_unix_ms = Some(now_ms);
                self.healthy && self.consecutive_failures >= unhealthy_threshold
            }
        };
        if !flipped {
            return None;
        }
        self.healthy = !self.healthy;
        self.since_unix_ms = Some(now_ms);
        Some(self.healthy)
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_count_consecutive_results_only() {
        let now = SystemTime::now();
        let mut v = Verdict::default();
        let fail = || Err("HTTP 503".to_string());
        // unhealthy_threshold 3: two failures, a pass, two failures keep it in.
        for r in [fail(), fail(), Ok(()), fail(), fail()] {
            assert_eq!(v.record(r, now, 2, 3), None);
        }
        assert!(v.healthy);
        assert_eq!(v.record(fail(), now, 2, 3), Some(false));
        assert_eq!(v.last_failure.as_deref(), Some("HTTP 503"));
        assert_eq!(v.consecutive_failures, 3);
        // healthy_threshold 2: a pass, a failure, then two passes.
        assert_eq!(v.record(Ok(()), now, 2, 3), None);
        assert_eq!(v.record(fail(), now, 2, 3), None);
        assert_eq!(v.record(Ok(()), now, 2, 3), None);
        assert_eq!(v.record(Ok(()), now, 2, 3), Some(true));
        assert_eq!((v.checks, v.consecutive_successes), (10, 2));
        assert!(v.since_unix_ms.is_some());
    }
}

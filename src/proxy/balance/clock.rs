//! nginx's passive health works in whole seconds (`ngx_time()`); this turns instants into whole
//! seconds on one grid for the whole process, so that pools built at different times (a reload)
//! compare their times correctly.

use std::sync::OnceLock;
use std::time::Instant;

/// Seconds on the process grid. Signed: an instant taken before the grid was laid down is a
/// negative second, still floored the same way.
pub(super) type Secs = i64;

/// The `accessed`/`checked` time of a peer that never failed: nginx starts them at 0, the Unix
/// epoch, which is further back than any `fail_timeout`.
pub(super) const LONG_AGO: Secs = i64::MIN / 4;

static GRID: OnceLock<Instant> = OnceLock::new();

pub(super) fn secs(now: Instant) -> Secs {
    let origin = *GRID.get_or_init(Instant::now);
    if now >= origin {
        let d = now.duration_since(origin);
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
    } else {
        let d = origin.duration_since(now);
        let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4);
        // Floor, not truncate: 0.5 s before the origin is second -1.
        -(whole + i64::from(d.subsec_nanos() > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn whole_second_offsets_keep_their_distance_on_either_side_of_the_origin() {
        let t0 = Instant::now();
        let base = secs(t0);
        for k in 0..30u64 {
            assert_eq!(secs(t0 + Duration::from_secs(k)) - base, k as i64);
        }
        let early = t0 - Duration::from_millis(1500);
        assert_eq!(secs(early + Duration::from_secs(3)) - secs(early), 3);
    }
}

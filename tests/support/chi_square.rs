//! Pearson's chi-square goodness-of-fit test, for balancers that choose at random.

/// Pearson's chi-square goodness of fit.
pub struct ChiSquare {
    pub statistic: f64,
    pub degrees: usize,
    pub critical: f64,
}

impl ChiSquare {
    pub fn passes(&self) -> bool {
        self.statistic <= self.critical
    }
}

impl std::fmt::Display for ChiSquare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chi-square {:.2} with {} degrees of freedom (critical {:.2} at 0.001): {}",
            self.statistic,
            self.degrees,
            self.critical,
            if self.passes() {
                "fits"
            } else {
                "does not fit"
            }
        )
    }
}

/// Chi-square of `counts` against `shares` (which sum to 1). A category with share 0 must be
/// empty; any count there makes the statistic infinite.
pub fn chi_square(counts: &[usize], shares: &[f64]) -> ChiSquare {
    // Upper 0.001 points of the chi-square distribution, 1 to 10 degrees of freedom.
    const CRITICAL_0_001: [f64; 10] = [
        10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588,
    ];
    let total: usize = counts.iter().sum();
    let mut statistic = 0.0;
    let mut categories = 0;
    for (&count, &share) in counts.iter().zip(shares) {
        let expected = share * total as f64;
        if share <= 0.0 {
            if count > 0 {
                statistic = f64::INFINITY;
            }
            continue;
        }
        categories += 1;
        statistic += (count as f64 - expected).powi(2) / expected;
    }
    if total == 0 {
        statistic = f64::INFINITY;
    }
    let degrees = categories.max(2) - 1;
    assert!(degrees <= 10, "the table stops at 10 degrees of freedom");
    ChiSquare {
        statistic,
        degrees,
        critical: CRITICAL_0_001[degrees - 1],
    }
}

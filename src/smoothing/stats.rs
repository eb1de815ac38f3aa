//! Exact statistics of randomized smoothing (Cohen, Rosenfeld & Kolter 2019).

use statrs::distribution::{Beta, ContinuousCDF, Normal};

/// One-sided Clopper-Pearson lower confidence bound on a binomial proportion: the `alpha`
/// quantile of Beta(nA, n - nA + 1) (0 when nA = 0).
pub fn clopper_pearson_lower(n_a: u64, n: u64, alpha: f64) -> f64 {
    if n_a == 0 {
        return 0.0;
    }
    match Beta::new(n_a as f64, (n - n_a + 1) as f64) {
        Ok(b) => b.inverse_cdf(alpha),
        Err(_) => 0.0,
    }
}

/// The standard normal quantile.
pub fn normal_quantile(p: f64) -> f64 {
    Normal::new(0.0, 1.0).map_or(f64::NAN, |n| n.inverse_cdf(p))
}

/// Two-sided binomial test of `k` successes in `m` trials against p = 1/2 (as
/// `scipy.stats.binomtest(k, m, 0.5).pvalue`, which for p = 1/2 is `2 P(X >= max(k, m-k))`).
pub fn binom_test_half(k: u64, m: u64) -> f64 {
    if m == 0 {
        return 1.0;
    }
    let hi = k.max(m - k);
    if 2 * hi == m {
        return 1.0;
    }
    // P(X >= hi) for X ~ Bin(m, 1/2) is the regularised incomplete beta I_{1/2}(hi, m-hi+1).
    let tail = Beta::new(hi as f64, (m - hi + 1) as f64).map_or(1.0, |b| b.cdf(0.5));
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_test_matches_known_values() {
        // scipy.stats.binomtest(7, 10, 0.5).pvalue = 0.34375; (10, 10): 0.001953125.
        assert!((binom_test_half(7, 10) - 0.34375).abs() < 1e-12);
        assert!((binom_test_half(10, 10) - 0.001953125).abs() < 1e-12);
        assert_eq!(binom_test_half(5, 10), 1.0);
    }
}

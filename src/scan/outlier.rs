//! The outlier test of Neural Cleanse: a label whose smallest trigger is far smaller than the
//! others' is suspicious. With `L` the mask L1 norms, the anomaly index of label `t` is
//! `(median(L) - L_t) / (1.4826 * MAD)`, `MAD = median(|L - median(L)|)` (1.4826 makes the MAD
//! a consistent estimate of a normal standard deviation); a label below the median with an
//! index above the threshold (2 by default) is flagged.

/// Anomaly indices and flags of a set of mask norms.
#[derive(Clone, Debug)]
pub struct Outliers {
    pub median: f64,
    pub mad: f64,
    pub index: Vec<f64>,
    pub flagged: Vec<bool>,
}

/// Median of a non-empty slice (the mean of the two middle values for an even count, as
/// numpy computes it).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// The outlier test over `l1` (one norm per label) with flagging threshold `threshold`.
pub fn test(l1: &[f64], threshold: f64) -> Outliers {
    let med = median(l1);
    let dev: Vec<f64> = l1.iter().map(|&v| (v - med).abs()).collect();
    let mad = median(&dev);
    // A zero MAD (more than half the norms equal) would divide by zero; a floor far below
    // any meaningful spread keeps the indices finite and ordered.
    let scale = 1.4826 * mad.max(1e-9 * med.abs().max(1e-12));
    let index: Vec<f64> = l1.iter().map(|&v| (med - v) / scale).collect();
    let flagged = l1
        .iter()
        .zip(&index)
        .map(|(&v, &a)| v < med && a > threshold)
        .collect();
    Outliers {
        median: med,
        mad,
        index,
        flagged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's seed-0 backdoor norms give its anomaly indices (to its 3 decimals).
    #[test]
    fn matches_the_neural_cleanse_reference_indices() {
        let l1 = [
            11.5415, 12.624, 9.1586, 10.7539, 10.5768, 9.2948, 13.5988, 2.3967, 13.8661, 12.2908,
        ];
        let want = [
            -0.16, -0.598, 0.806, 0.16, 0.231, 0.751, -0.993, 3.546, -1.101, -0.463,
        ];
        let o = test(&l1, 2.0);
        for (a, b) in o.index.iter().zip(want) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
        assert_eq!(
            o.flagged.iter().positions_true(),
            vec![7],
            "only label 7 is flagged"
        );
    }

    #[test]
    fn above_the_median_is_never_flagged_and_equal_norms_stay_finite() {
        let o = test(&[1.0, 1.0, 1.0, 9.0], 2.0);
        assert!(o.index.iter().all(|v| v.is_finite()));
        assert!(!o.flagged[3], "a large mask is not suspicious");
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    trait PositionsTrue {
        fn positions_true(self) -> Vec<usize>;
    }
    impl<'a, I: Iterator<Item = &'a bool>> PositionsTrue for I {
        fn positions_true(self) -> Vec<usize> {
            self.enumerate()
                .filter(|(_, b)| **b)
                .map(|(i, _)| i)
                .collect()
        }
    }
}

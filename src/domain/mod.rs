//! Abstract domains and the floating-point error arithmetic that keeps them sound.
//!
//! Bounds are computed in f64 round-to-nearest and then widened by an explicit error term. Two
//! error sources are covered:
//!
//! 1. **Our own f64 arithmetic.** A sum of `n` products evaluated in f64 differs from its real
//!    value by at most `gamma64(n) * sum |a_i b_i|` (Higham, Accuracy and Stability of
//!    Numerical Algorithms, eq. 3.5), `gamma64(n) = n u64 / (1 - n u64)`, `u64 = 2^-53`. Every
//!    interval kernel bounds that magnitude sum and adds the term, with a few extra units for
//!    the final additions.
//! 2. **The deployed network's arithmetic** ([`FpMode::Deployed`]). The network computes in its
//!    own type (f32 for every VNN-COMP model), in an unknown order, possibly with FMA or
//!    flush-to-zero. The same bound with `u32 = 2^-24` holds for *any* summation order and with
//!    or without FMA; each output element therefore lies within
//!    `gamma32(n + extra) * (sum |W||x| + offset) + (n + extra) * eta` of the real value, where
//!    `extra` and `offset` come from the operator's [`crate::ir::FpModel`] and `eta = 2^-126`
//!    covers underflow (gradual or flushed). This assumes dot products are evaluated as sums of
//!    products (direct, im2col, blocked GEMM) — not Winograd/FFT convolution, which onnxruntime's
//!    CPU provider does not use for these layers.
//!
//! [`FpMode::Real`] keeps only (1): bounds on the real-arithmetic function of the graph, which
//! is what reference implementations in float64 compute.

use crate::ir::DType;
use serde::{Deserialize, Serialize};

/// Which function the bounds enclose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FpMode {
    /// Every output the deployed network can produce in its own precision, any evaluation order.
    Deployed,
    /// The real-arithmetic function of the graph (outward-rounded f64).
    Real,
}

/// Error arithmetic for one graph and mode.
#[derive(Clone, Copy, Debug)]
pub struct Rounding {
    /// Unit roundoff of the deployed arithmetic (0 in real mode).
    pub dep_u: f64,
    /// Absolute underflow error per deployed rounding.
    pub dep_eta: f64,
    /// Largest finite deployed value (beyond it the deployed network may overflow).
    pub max_finite: f64,
    pub mode: FpMode,
}

const U64: f64 = 1.1102230246251565e-16; // 2^-53
const ETA64: f64 = 2.2250738585072014e-308; // 2^-1022

/// `gamma(m) = m u / (1 - m u)`, rounded up; infinite when `m u >= 1/2`.
pub fn gamma(m: usize, u: f64) -> f64 {
    let mu = m as f64 * u;
    if mu >= 0.5 {
        return f64::INFINITY;
    }
    // The two roundings of this expression are relative errors below 2^-52; inflating by
    // 2^-40 and stepping up one ulp covers them.
    (mu / (1.0 - mu) * (1.0 + 1.0 / (1u64 << 40) as f64)).next_up()
}

/// Lanes of the partial sums of [`sum_mag`]: independent sums, so the adds pipeline (and
/// vectorise) instead of waiting on one another.
pub const LANES: usize = 8;

/// `(sum_j t_j, sum_j |t_j|)` over `t_j = f(j)` for `j < n`, with [`LANES`] partial sums
/// (indexed: [`sum_mag2`] and [`sum_mag3`] avoid the index checks where the terms come from
/// slices).
///
/// The order of the additions differs from a left-to-right loop, but the error bound every
/// caller charges for such a sum, `gamma(n) * sum |t_j|`, holds for any order of the `n - 1`
/// additions (Higham, *Accuracy and Stability*, eq. 4.4), so the bounds stay sound; the order
/// depends on `n` alone, so the result is the same on every machine.
#[inline(always)]
pub fn sum_mag(n: usize, mut f: impl FnMut(usize) -> f64) -> (f64, f64) {
    let mut s = [0.0f64; LANES];
    let mut m = [0.0f64; LANES];
    let full = n - n % LANES;
    let mut j = 0;
    while j < full {
        for k in 0..LANES {
            let t = f(j + k);
            s[k] += t;
            m[k] += t.abs();
        }
        j += LANES;
    }
    fold_lanes(s, m, (full..n).map(f))
}

/// [`sum_mag`] over `t_j = f(x_j)` of a slice.
#[inline(always)]
pub fn sum_mag1(x: &[f64], f: impl Fn(f64) -> f64) -> (f64, f64) {
    sum_mag3(x, x, x, |a, _, _| f(a))
}

/// [`sum_mag`] over `t_j = f(x_j, y_j)` of two slices (the shorter one's length).
#[inline(always)]
pub fn sum_mag2(x: &[f64], y: &[f64], f: impl Fn(f64, f64) -> f64) -> (f64, f64) {
    sum_mag3(x, y, y, |a, b, _| f(a, b))
}

/// [`sum_mag`] over `t_j = f(x_j, y_j, z_j)` of three slices (the shortest one's length),
/// written on fixed-size chunks so that no index is checked and the compiler vectorises the
/// lanes; the same order of additions as [`sum_mag`].
#[inline(always)]
pub fn sum_mag3(x: &[f64], y: &[f64], z: &[f64], f: impl Fn(f64, f64, f64) -> f64) -> (f64, f64) {
    let n = x.len().min(y.len()).min(z.len());
    let (xc, xr) = x[..n].as_chunks::<LANES>();
    let (yc, yr) = y[..n].as_chunks::<LANES>();
    let (zc, zr) = z[..n].as_chunks::<LANES>();
    let mut s = [0.0f64; LANES];
    let mut m = [0.0f64; LANES];
    for ((x8, y8), z8) in xc.iter().zip(yc).zip(zc) {
        for k in 0..LANES {
            let t = f(x8[k], y8[k], z8[k]);
            s[k] += t;
            m[k] += t.abs();
        }
    }
    let tail = xr.iter().zip(yr).zip(zr).map(|((&a, &b), &c)| f(a, b, c));
    fold_lanes(s, m, tail)
}

/// The lanes' partial sums added in a fixed order, then the tail's terms.
#[inline(always)]
pub fn fold_lanes(s: [f64; LANES], m: [f64; LANES], tail: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut ss, mut mm) = (0.0, 0.0);
    for k in 0..LANES {
        ss += s[k];
        mm += m[k];
    }
    for t in tail {
        ss += t;
        mm += t.abs();
    }
    (ss, mm)
}

impl Rounding {
    /// Rounding model for a network computing in `dtype`.
    pub fn new(mode: FpMode, dtype: DType) -> Self {
        match mode {
            FpMode::Deployed => Rounding {
                dep_u: dtype.unit_roundoff(),
                dep_eta: dtype.underflow_unit(),
                max_finite: dtype.max_finite(),
                mode,
            },
            FpMode::Real => Rounding {
                dep_u: 0.0,
                dep_eta: 0.0,
                max_finite: f64::INFINITY,
                mode,
            },
        }
    }

    /// Error bound for a result made of `n` summed products plus `extra` deployed roundings,
    /// whose magnitude sum (`sum |a_i b_i|` plus offset) is at most `mag`.
    #[inline]
    pub fn err(&self, n: usize, extra: u32, mag: f64) -> f64 {
        let g = if self.dep_u > 0.0 {
            gamma(n + extra as usize, self.dep_u)
        } else {
            0.0
        } + gamma(n + 4, U64);
        // mag itself carries a relative f64 error below gamma64(n + 2) < 2^-20 for any n we
        // accept; the factor covers it.
        let e = g * mag * (1.0 + 1.0 / (1u64 << 20) as f64)
            + (n + extra as usize + 4) as f64 * (self.dep_eta + ETA64);
        e.next_up()
    }

    /// Widen `[lo, hi]` by `e` with outward rounding, then account for deployed overflow and
    /// NaN: a bound beyond the largest finite value becomes infinite, NaN becomes unbounded.
    #[inline]
    pub fn widen(&self, lo: f64, hi: f64, e: f64) -> (f64, f64) {
        let mut l = (lo - e).next_down();
        let mut h = (hi + e).next_up();
        if l.is_nan() || l < -self.max_finite {
            l = f64::NEG_INFINITY;
        }
        if h.is_nan() || h > self.max_finite {
            h = f64::INFINITY;
        }
        (l, h)
    }
}

/// A batch of boxes: `lo[b * n + i] <= x_i <= hi[b * n + i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Intervals {
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

impl Intervals {
    /// A batch of boxes from bounds.
    pub fn new(lo: Vec<f64>, hi: Vec<f64>) -> Self {
        debug_assert_eq!(lo.len(), hi.len());
        Intervals { lo, hi }
    }

    /// Degenerate boxes (points).
    pub fn point(x: Vec<f64>) -> Self {
        Intervals {
            lo: x.clone(),
            hi: x,
        }
    }

    /// Total elements over the batch.
    pub fn len(&self) -> usize {
        self.lo.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.lo.is_empty()
    }

    /// Whether every bound is finite.
    pub fn is_finite(&self) -> bool {
        self.lo.iter().chain(&self.hi).all(|v| v.is_finite())
    }

    /// Centre and radius with `[c - r, c + r]` containing `[lo, hi]` in exact arithmetic.
    pub fn center_radius(&self) -> (Vec<f64>, Vec<f64>) {
        let c: Vec<f64> = self
            .lo
            .iter()
            .zip(&self.hi)
            .map(|(&l, &h)| 0.5 * l + 0.5 * h)
            .collect();
        let r = self
            .lo
            .iter()
            .zip(&self.hi)
            .zip(&c)
            .map(|((&l, &h), &m)| (h - m).max(m - l).next_up())
            .collect();
        (c, r)
    }

    /// Elementwise upper bound of `|x + shift[feature(i)]|` (batched over `n`-element samples),
    /// rounded up; `shift` of `None` gives [`Intervals::abs_max`].
    pub fn shifted_abs_max(
        &self,
        n: usize,
        shift: Option<&[f64]>,
        feature: impl Fn(usize) -> usize,
    ) -> Vec<f64> {
        let Some(sh) = shift else {
            return self.abs_max();
        };
        self.lo
            .iter()
            .zip(&self.hi)
            .enumerate()
            .map(|(i, (&l, &h))| {
                let s = sh[feature(i % n.max(1))];
                (l + s).abs().max((h + s).abs()).next_up()
            })
            .collect()
    }

    /// Elementwise max(|lo|, |hi|).
    pub fn abs_max(&self) -> Vec<f64> {
        self.lo
            .iter()
            .zip(&self.hi)
            .map(|(l, h)| l.abs().max(h.abs()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_bounds_the_classic_formula() {
        let u = f64::powi(2.0, -24);
        let g = gamma(100, u);
        assert!(g >= 100.0 * u / (1.0 - 100.0 * u));
        assert!(g < 100.0 * u * 1.0001);
        assert!(gamma(1 << 23, u).is_infinite());
    }

    #[test]
    fn center_radius_encloses() {
        let iv = Intervals::new(vec![0.1, -3.0, 1e300], vec![0.7, -2.9, 1.5e300]);
        let (c, r) = iv.center_radius();
        for i in 0..3 {
            assert!(c[i] - r[i] <= iv.lo[i] && c[i] + r[i] >= iv.hi[i]);
        }
    }

    #[test]
    fn widen_maps_overflow_to_infinity() {
        let r = Rounding::new(FpMode::Deployed, DType::F32);
        let (l, h) = r.widen(-1e39, 1.0, 0.0);
        assert_eq!(l, f64::NEG_INFINITY);
        assert!(h > 1.0);
        let (l, h) = r.widen(f64::NAN, f64::NAN, 0.0);
        assert!(l.is_infinite() && h.is_infinite());
    }
}

//! ReLU and LeakyReLU: the piecewise-linear kinks that branch and bound splits and
//! alpha-CROWN optimises.
//!
//! Soundness: ReLU is exact in any arithmetic (a selection of representable values), so its
//! interval is `[max(l, 0), max(u, 0)]`; LeakyReLU's product rounds once. The relaxation lines
//! are those of [`relax::relu`] and [`relax::leaky_relu`] (lower line through the origin with
//! slope in `[leak, 1]`, the chord above), each intercept widened for its own f64 rounding.

use super::{At, Family, Need, Relaxation};
use crate::bounds::alpha::RelaxedPass;
use crate::domain::{Intervals, Rounding};
use crate::eval::Scalar;
use crate::ir::{Node, Rect};
use crate::lp::{LpError, LpNode};
use crate::transformers::backward::{self, Alpha, Back, BackCtx, Support};
use crate::transformers::relax;

/// ReLU (`leak` 0, exact `max(x, 0)`) or LeakyReLU with slope `leak` below 0.
#[derive(Clone, Copy, Debug)]
pub struct ReluLike {
    pub leak: f64,
    /// Plain ReLU: evaluated as `max(x, 0)` (no product, no signed zero), exact in intervals.
    relu: bool,
}

impl ReluLike {
    /// Plain ReLU.
    pub const RELU: ReluLike = ReluLike {
        leak: 0.0,
        relu: true,
    };

    /// LeakyReLU with slope `alpha` for negative inputs.
    pub fn leaky(alpha: f64) -> Self {
        ReluLike {
            leak: alpha,
            relu: false,
        }
    }
}

impl Family for ReluLike {
    fn eval<T: Scalar>(&self, _at: &At, ins: &[&[T]]) -> Vec<T> {
        let x = ins.first().copied().unwrap_or(&[]);
        if self.relu {
            x.iter().map(|&v| v.max(T::ZERO)).collect()
        } else {
            let a = T::from_f64(self.leak);
            x.iter()
                .map(|&v| if v < T::ZERO { v * a } else { v })
                .collect()
        }
    }

    fn eval_in_place<T: Scalar>(&self, _at: &At, x: &mut [T]) -> bool {
        if self.relu {
            x.iter_mut().for_each(|v| *v = v.max(T::ZERO));
        } else {
            let a = T::from_f64(self.leak);
            x.iter_mut().for_each(|v| {
                if *v < T::ZERO {
                    *v = *v * a;
                }
            });
        }
        true
    }

    fn vjp<T: Scalar>(&self, _at: &At, ins: &[&[T]], mut go: Vec<T>) -> Vec<Option<Vec<T>>> {
        let x = ins.first().copied().unwrap_or(&[]);
        let leak = if self.relu {
            T::ZERO
        } else {
            T::from_f64(self.leak)
        };
        // `go` where the input is positive, `go * leak` elsewhere; a select, not a branch, so
        // the loop vectorises.
        for (d, &v) in go.iter_mut().zip(x) {
            let k = if v > T::ZERO { T::ONE } else { leak };
            *d = *d * k;
        }
        vec![Some(go)]
    }

    fn ibp(&self, _at: &At, ins: &[&Intervals], rnd: &Rounding) -> Intervals {
        let x = ins[0];
        if self.relu {
            return Intervals::new(
                x.lo.iter().map(|v| v.max(0.0)).collect(),
                x.hi.iter().map(|v| v.max(0.0)).collect(),
            );
        }
        let a = self.leak;
        let f = |v: f64| if v < 0.0 { a * v } else { v };
        let mut lo = Vec::with_capacity(x.len());
        let mut hi = Vec::with_capacity(x.len());
        for (&l, &h) in x.lo.iter().zip(&x.hi) {
            // Monotone for alpha >= 0; otherwise the extremes include the kink at 0.
            let mut cands = [f(l), f(h), if l < 0.0 && h > 0.0 { 0.0 } else { f(l) }];
            cands.sort_by(f64::total_cmp);
            let mag = a.abs() * l.abs().max(h.abs());
            let (yl, yh) = rnd.widen(cands[0], cands[2], rnd.err(1, 1, mag));
            lo.push(yl);
            hi.push(yh);
        }
        Intervals::new(lo, hi)
    }

    fn needs(&self) -> Need {
        Need::Kink
    }

    fn relaxation(&self, _at: &At, input: &Intervals, _rnd: &Rounding) -> Relaxation {
        let pairs = input.lo.iter().zip(&input.hi);
        Relaxation::Lines(if self.relu {
            pairs
                .map(|(&l, &u)| relax::relu(l, u, relax::adaptive_alpha(l, u)))
                .collect()
        } else {
            let alpha = self.leak;
            pairs
                .map(|(&l, &u)| {
                    let beta = if u > -l { 1.0 } else { alpha };
                    relax::leaky_relu(l, u, alpha, beta)
                })
                .collect()
        })
    }

    fn backward_error(
        &self,
        at: &At,
        bounds: &[Option<Intervals>],
        rnd: &Rounding,
        terms: usize,
    ) -> Option<Vec<f64>> {
        let input = bounds[at.node.inputs[0]].as_ref();
        if self.relu {
            // Exact in the deployed network; our backward step only multiplies by slopes in
            // [0, 1] (sums of at most `terms` of them): the input's magnitudes bound it (its
            // output's are no larger).
            let own = bounds[at.node.output].as_ref()?;
            let m = input.map_or_else(|| own.abs_max(), Intervals::abs_max);
            return Some(backward::movement_error(&m, terms));
        }
        let x = input?;
        let mag: Vec<f64> = x
            .abs_max()
            .iter()
            .map(|m| self.leak.abs() * m + m)
            .collect();
        Some(backward::error_terms(rnd, terms, 1, 1, &mag))
    }

    fn linear_back(&self, _at: &At, _a: &[f64], _support: &[Option<Rect>]) -> Option<Back> {
        None
    }

    fn relaxed_back(
        &self,
        ctx: &BackCtx,
        node: &Node,
        a: &[f64],
        alpha: Alpha,
        support: &[Option<Rect>],
    ) -> Back {
        backward::lines_back(ctx, node, a, alpha, Some(self.leak), support)
    }

    fn back_support(&self, at: &At, out: &[Option<Rect>]) -> Vec<Support> {
        backward::same_support(at, out)
    }

    fn alpha_leak(&self) -> Option<f64> {
        // Optimised slopes need the lower line through the origin between leak and 1.
        (self.leak <= 1.0).then_some(self.leak)
    }

    fn relaxed_forward(
        &self,
        pass: &RelaxedPass,
        at: &At,
        ins: &[&[f64]],
    ) -> (Vec<f64>, Option<Vec<f64>>) {
        pass.through_lines(at, ins)
    }

    fn lp_rows(&self, lp: &mut LpNode) -> Result<(), LpError> {
        // ReLU-like (convex): the triangle, both lower lines through the origin.
        lp.line_rows(self.alpha_leak())
    }
}

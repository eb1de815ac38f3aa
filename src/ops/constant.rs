//! Constants produced inside the graph (a folded subgraph whose value a later node reads).
//!
//! Soundness: the deployed network may hold the constant rounded to its own type, so its
//! interval widens each value by one rounding (`dep_u |v|`); a backward pass turns it into a
//! bias, whose products are covered by the rounding term.

use super::{At, Family};
use crate::domain::{Intervals, Rounding};
use crate::eval::Scalar;
use crate::ir::{Param, Rect};
use crate::lp::{LpError, LpNode};
use crate::transformers::backward::{self, Back, Support};

/// The constant family: the value of a [`crate::ir::Op::Const`].
pub struct Constant<'a>(pub &'a Param);

impl Family for Constant<'_> {
    fn eval<T: Scalar>(&self, at: &At, _ins: &[&[T]]) -> Vec<T> {
        let d = T::param(self.0);
        let mut y = Vec::with_capacity(d.len() * at.batch);
        for _ in 0..at.batch {
            y.extend_from_slice(d);
        }
        y
    }

    fn eval_in_place<T: Scalar>(&self, _at: &At, _x: &mut [T]) -> bool {
        false
    }

    fn vjp<T: Scalar>(&self, _at: &At, _ins: &[&[T]], _go: Vec<T>) -> Vec<Option<Vec<T>>> {
        vec![]
    }

    fn ibp(&self, at: &At, _ins: &[&Intervals], rnd: &Rounding) -> Intervals {
        let p = self.0;
        let mut lo = Vec::with_capacity(p.len() * at.batch);
        let mut hi = Vec::with_capacity(p.len() * at.batch);
        for _ in 0..at.batch {
            for &v in &p.f64 {
                // The deployed constant may have been rounded to its own type.
                let e = rnd.dep_u * v.abs();
                let (l, h) = rnd.widen(v, v, e);
                lo.push(l);
                hi.push(h);
            }
        }
        Intervals::new(lo, hi)
    }

    exactly_linear!();

    fn backward_error(
        &self,
        at: &At,
        _bounds: &[Option<Intervals>],
        rnd: &Rounding,
        terms: usize,
    ) -> Option<Vec<f64>> {
        let g64 = backward::f64_gamma(terms);
        Some(
            (0..at.batch)
                .flat_map(|_| {
                    self.0
                        .f64
                        .iter()
                        .map(|v| ((rnd.dep_u + g64) * v.abs()).next_up())
                })
                .collect(),
        )
    }

    fn linear_back(&self, at: &At, a: &[f64], _support: &[Option<Rect>]) -> Option<Back> {
        let (r, out_n) = (at.batch, at.out_n());
        let (mut bias, mut mag) = (vec![0.0; r], vec![0.0; r]);
        for row in 0..r {
            for (j, &c) in self.0.f64.iter().enumerate() {
                bias[row] += a[row * out_n + j] * c;
                mag[row] += (a[row * out_n + j] * c).abs();
            }
        }
        Some(Back::Linear {
            inputs: vec![],
            bias,
            mag,
        })
    }

    fn back_support(&self, at: &At, out: &[Option<Rect>]) -> Vec<Support> {
        backward::anywhere(at, out)
    }

    fn lp_rows(&self, _lp: &mut LpNode) -> Result<(), LpError> {
        // The output columns carry the constant's bounds; no row needed.
        Ok(())
    }
}

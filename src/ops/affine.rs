//! Elementwise affine maps `y = x * scale + shift` with constants (Add, Sub, Mul, Div by a
//! constant, Neg, BatchNormalization); the simplifier folds most of them into a neighbouring
//! Linear or Conv.
//!
//! Soundness: endpoint arithmetic (the map is monotone per element), widened by
//! `err(1, extra, |scale| |x| + offset)`, the deployed error of a shift and a few scalings.

use super::{At, Family};
use crate::domain::{Intervals, Rounding};
use crate::eval::{Scalar, kernels};
use crate::ir::{Affine, Rect};
use crate::lp::{LpError, LpNode};
use crate::transformers::backward::{self, Back, Support};

impl Family for Affine {
    fn eval<T: Scalar>(&self, _at: &At, ins: &[&[T]]) -> Vec<T> {
        let x = ins.first().copied().unwrap_or(&[]);
        kernels::affine(T::param(&self.scale), T::param(&self.shift), x)
    }

    fn eval_in_place<T: Scalar>(&self, _at: &At, x: &mut [T]) -> bool {
        // The same `v * s + t` per element as `eval`.
        let (s, t) = (T::param(&self.scale), T::param(&self.shift));
        for row in x.chunks_exact_mut(s.len().max(1)) {
            for ((v, &k), &c) in row.iter_mut().zip(s).zip(t) {
                *v = *v * k + c;
            }
        }
        true
    }

    fn vjp<T: Scalar>(&self, _at: &At, _ins: &[&[T]], go: Vec<T>) -> Vec<Option<Vec<T>>> {
        let s = T::param(&self.scale);
        let n = s.len().max(1);
        let mut gi = go;
        for row in gi.chunks_exact_mut(n) {
            row.iter_mut().zip(s).for_each(|(d, &k)| *d = *d * k);
        }
        vec![Some(gi)]
    }

    fn ibp(&self, _at: &At, ins: &[&Intervals], rnd: &Rounding) -> Intervals {
        let (a, x) = (self, ins[0]);
        let n = a.scale.len();
        let mut lo = Vec::with_capacity(x.len());
        let mut hi = Vec::with_capacity(x.len());
        for (idx, (&l, &h)) in x.lo.iter().zip(&x.hi).enumerate() {
            let e = idx % n;
            let (s, t) = (a.scale.f64[e], a.shift.f64[e]);
            let (yl, yh) = if s >= 0.0 {
                (l * s + t, h * s + t)
            } else {
                (h * s + t, l * s + t)
            };
            let mag = s.abs() * l.abs().max(h.abs()) + a.fp.offset[e];
            let (yl, yh) = rnd.widen(yl, yh, rnd.err(1, a.fp.extra_roundings, mag));
            lo.push(yl);
            hi.push(yh);
        }
        Intervals::new(lo, hi)
    }

    exactly_linear!();

    fn backward_error(
        &self,
        at: &At,
        bounds: &[Option<Intervals>],
        rnd: &Rounding,
        terms: usize,
    ) -> Option<Vec<f64>> {
        let a = self;
        let x = bounds[at.node.inputs[0]].as_ref()?;
        let n = a.scale.len();
        let mag: Vec<f64> = x
            .abs_max()
            .iter()
            .enumerate()
            .map(|(i, m)| a.scale.f64[i % n].abs() * m + a.fp.offset[i % n])
            .collect();
        Some(backward::error_terms(
            rnd,
            terms,
            1,
            a.fp.extra_roundings,
            &mag,
        ))
    }

    fn linear_back(&self, at: &At, a: &[f64], _support: &[Option<Rect>]) -> Option<Back> {
        let (af, r) = (self, at.batch);
        let (mut bias, mut mag) = (vec![0.0; r], vec![0.0; r]);
        let n = af.scale.len();
        let mut ain = vec![0.0; a.len()];
        for row in 0..r {
            for j in 0..n {
                let v = a[row * n + j];
                ain[row * n + j] = v * af.scale.f64[j];
                let t = v * af.shift.f64[j];
                bias[row] += t;
                mag[row] += t.abs();
            }
        }
        Some(Back::Linear {
            inputs: vec![Some(ain)],
            bias,
            mag,
        })
    }

    fn back_support(&self, at: &At, out: &[Option<Rect>]) -> Vec<Support> {
        backward::same_support(at, out)
    }

    fn lp_rows(&self, lp: &mut LpNode) -> Result<(), LpError> {
        let (x0, y0) = (lp.col(0), lp.y0);
        for j in 0..lp.out_n() {
            let (s, t) = (self.scale.f64[j], self.shift.f64[j]);
            let ej = lp.err(j);
            lp.add_row(vec![(y0 + j, 1.0), (x0 + j, -s)], t - ej, t + ej)?;
        }
        Ok(())
    }
}

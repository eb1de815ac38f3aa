//! Data movement: Reshape (a view of its input) and Select (every exact index map: Transpose,
//! Slice, Gather with constant indices, Concat, Pad, Split, Tile, Expand, nearest Resize, ...
//! lowered at import to "output element i is element e of input j, or the fill constant").
//!
//! Soundness: both are exact in any arithmetic (they copy representable values), so the
//! interval of an output element is its source's, and a backward step moves each coefficient
//! to its source (a fill constant becomes a bias). Our only rounding is the f64 sum of the
//! coefficients that land on one source, in [`Family::backward_error`].

use super::{At, Family};
use crate::domain::{Intervals, Rounding};
use crate::eval::{Scalar, kernels};
use crate::ir::{Rect, Select};
use crate::lp::{LpError, LpNode};
use crate::transformers::backward::{self, Back, Support};

/// The Reshape family: the same elements under another shape.
pub struct Reshape;

impl Family for Reshape {
    fn eval<T: Scalar>(&self, _at: &At, ins: &[&[T]]) -> Vec<T> {
        ins.first().copied().unwrap_or(&[]).to_vec()
    }

    fn eval_in_place<T: Scalar>(&self, _at: &At, _x: &mut [T]) -> bool {
        // A view: the buffer already holds the output.
        true
    }

    fn vjp<T: Scalar>(&self, _at: &At, _ins: &[&[T]], go: Vec<T>) -> Vec<Option<Vec<T>>> {
        vec![Some(go)]
    }

    fn ibp(&self, _at: &At, ins: &[&Intervals], _rnd: &Rounding) -> Intervals {
        ins[0].clone()
    }

    exactly_linear!();

    fn backward_error(
        &self,
        at: &At,
        bounds: &[Option<Intervals>],
        _rnd: &Rounding,
        terms: usize,
    ) -> Option<Vec<f64>> {
        // Exact in the deployed network; a backward step only moves coefficients.
        backward::own_movement_error(at, bounds, terms)
    }

    fn linear_back(&self, at: &At, a: &[f64], _support: &[Option<Rect>]) -> Option<Back> {
        let r = at.batch;
        Some(Back::Linear {
            inputs: vec![Some(a.to_vec())],
            bias: vec![0.0; r],
            mag: vec![0.0; r],
        })
    }

    fn back_support(&self, at: &At, out: &[Option<Rect>]) -> Vec<Support> {
        // A view: flat indices are unchanged, so a box carries over where the plane does.
        backward::same_support(at, out)
    }

    fn lp_rows(&self, _lp: &mut LpNode) -> Result<(), LpError> {
        // The encoding gives a view its input's columns before asking for rows.
        Ok(())
    }
}

impl Family for Select {
    fn eval<T: Scalar>(&self, at: &At, ins: &[&[T]]) -> Vec<T> {
        let sizes = at.in_sizes();
        let src = kernels::select_sources(&self.map, &sizes);
        kernels::select(&src, T::from_f64(self.fill), ins, &sizes, at.batch)
    }

    fn eval_in_place<T: Scalar>(&self, _at: &At, _x: &mut [T]) -> bool {
        false
    }

    fn vjp<T: Scalar>(&self, at: &At, _ins: &[&[T]], go: Vec<T>) -> Vec<Option<Vec<T>>> {
        let (sizes, out_n) = (at.in_sizes(), at.out_n());
        let src = kernels::select_sources(&self.map, &sizes);
        let mut ins: Vec<Vec<T>> = sizes.iter().map(|&n| vec![T::ZERO; at.batch * n]).collect();
        for b in 0..at.batch {
            for (i, s) in src.iter().enumerate() {
                if let Some((j, e)) = *s {
                    ins[j][b * sizes[j] + e] += go[b * out_n + i];
                }
            }
        }
        ins.into_iter().map(Some).collect()
    }

    fn ibp(&self, at: &At, ins: &[&Intervals], _rnd: &Rounding) -> Intervals {
        let sizes = at.in_sizes();
        let src = kernels::select_sources(&self.map, &sizes);
        let los: Vec<&[f64]> = ins.iter().map(|i| &i.lo[..]).collect();
        let his: Vec<&[f64]> = ins.iter().map(|i| &i.hi[..]).collect();
        Intervals::new(
            kernels::select(&src, self.fill, &los, &sizes, at.batch),
            kernels::select(&src, self.fill, &his, &sizes, at.batch),
        )
    }

    exactly_linear!();

    fn backward_error(
        &self,
        at: &At,
        bounds: &[Option<Intervals>],
        _rnd: &Rounding,
        terms: usize,
    ) -> Option<Vec<f64>> {
        // Exact in the deployed network; a backward step only moves coefficients.
        backward::own_movement_error(at, bounds, terms)
    }

    fn linear_back(&self, at: &At, a: &[f64], _support: &[Option<Rect>]) -> Option<Back> {
        let (r, sizes, out_n) = (at.batch, at.in_sizes(), at.out_n());
        let src = kernels::select_sources(&self.map, &sizes);
        let mut ins: Vec<Vec<f64>> = sizes.iter().map(|&n| vec![0.0; r * n]).collect();
        let (mut bias, mut mag) = (vec![0.0; r], vec![0.0; r]);
        for row in 0..r {
            for (i, s) in src.iter().enumerate() {
                let v = a[row * out_n + i];
                match *s {
                    Some((j, e)) => ins[j][row * sizes[j] + e] += v,
                    None => {
                        bias[row] += v * self.fill;
                        mag[row] += (v * self.fill).abs();
                    }
                }
            }
        }
        Some(Back::Linear {
            inputs: ins.into_iter().map(Some).collect(),
            bias,
            mag,
        })
    }

    fn back_support(&self, at: &At, out: &[Option<Rect>]) -> Vec<Support> {
        backward::anywhere(at, out)
    }

    fn lp_rows(&self, lp: &mut LpNode) -> Result<(), LpError> {
        let sizes = lp.in_sizes();
        let src = kernels::select_sources(&self.map, &sizes);
        let y0 = lp.y0;
        for (j, sj) in src.iter().enumerate() {
            match *sj {
                Some((inp, k)) => {
                    let xc = lp.col(inp) + k;
                    lp.add_row(vec![(y0 + j, 1.0), (xc, -1.0)], 0.0, 0.0)?;
                }
                None => lp.add_row(vec![(y0 + j, 1.0)], self.fill, self.fill)?,
            }
        }
        Ok(())
    }
}

//! MaxPool and AveragePool (1-D and 2-D windows, pads, ceil mode; the global forms are one
//! window over the whole plane).
//!
//! Soundness: a max is exact in any arithmetic, so its interval is the max of the lower and of
//! the upper ends; its backward relaxation is exact when one tap dominates, else `y >= x_best`
//! (the tap with the largest lower bound) and `y <= max upper bound`. An average is a sum of
//! `k` terms and one division: endpoint arithmetic widened by `err(k, 1, mean |x|)`, and
//! exactly linear backward.

use super::{At, Family, Need, Relaxation};
use crate::bounds::alpha::RelaxedPass;
use crate::domain::{Intervals, Rounding};
use crate::eval::{Scalar, kernels};
use crate::ir::{Node, Pool, Rect};
use crate::lp::{LpError, LpNode};
use crate::transformers::backward::{self, Alpha, Back, BackCtx, Support};

/// The max-pool family.
pub struct MaxPool<'a>(pub &'a Pool);

/// The average-pool family.
pub struct AveragePool<'a>(pub &'a Pool);

/// MaxPool relaxation of one window: exact when one input dominates, else `y >= x_best`
/// (largest lower bound) and `y <= max upper bound`.
#[derive(Clone, Debug)]
pub enum PoolRelax {
    Exact(usize),
    Loose { best: usize, upper: f64 },
}

/// Relaxations of every output of a max pool for one domain.
pub fn maxpool_relax(p: &Pool, lo: &[f64], hi: &[f64]) -> Vec<PoolRelax> {
    let mut out = Vec::new();
    kernels::for_each_window(&p.win, p.win.n, |_, taps, _| {
        let best = taps
            .iter()
            .copied()
            .max_by(|&x, &y| lo[x].total_cmp(&lo[y]))
            .unwrap_or(0);
        let upper_others = taps
            .iter()
            .filter(|&&t| t != best)
            .map(|&t| hi[t])
            .fold(f64::NEG_INFINITY, f64::max);
        if lo[best] >= upper_others {
            out.push(PoolRelax::Exact(best));
        } else {
            let upper = taps
                .iter()
                .map(|&t| hi[t])
                .fold(f64::NEG_INFINITY, f64::max);
            out.push(PoolRelax::Loose { best, upper });
        }
    });
    out
}

/// MaxPool relaxations of a node for every domain.
pub fn maxpool_relax_all(p: &Pool, xb: &Intervals, in_n: usize) -> Vec<Vec<PoolRelax>> {
    let domains = xb.lo.len() / in_n.max(1);
    (0..domains)
        .map(|d| {
            maxpool_relax(
                p,
                &xb.lo[d * in_n..(d + 1) * in_n],
                &xb.hi[d * in_n..(d + 1) * in_n],
            )
        })
        .collect()
}

impl Family for MaxPool<'_> {
    fn eval<T: Scalar>(&self, at: &At, ins: &[&[T]]) -> Vec<T> {
        let x = ins.first().copied().unwrap_or(&[]);
        kernels::max_pool(self.0, x, at.batch)
    }

    fn eval_in_place<T: Scalar>(&self, _at: &At, _x: &mut [T]) -> bool {
        false
    }

    fn vjp<T: Scalar>(&self, at: &At, ins: &[&[T]], go: Vec<T>) -> Vec<Option<Vec<T>>> {
        let p = self.0;
        let x = ins.first().copied().unwrap_or(&[]);
        let mut gi = vec![T::ZERO; at.batch * at.in_n(0)];
        // Window taps index the whole batch; output positions run over it in order. The
        // gradient goes to the first maximal tap (a subgradient at ties).
        kernels::for_each_window(&p.win, at.batch * p.win.n, |o, taps, _| {
            let mut best: Option<usize> = None;
            for &t in taps {
                if best.is_none_or(|b| x[t] > x[b]) {
                    best = Some(t);
                }
            }
            if let Some(t) = best {
                gi[t] += go[o];
            }
        });
        vec![Some(gi)]
    }

    fn ibp(&self, at: &At, ins: &[&Intervals], _rnd: &Rounding) -> Intervals {
        let x = ins[0];
        Intervals::new(
            kernels::max_pool(self.0, &x.lo, at.batch),
            kernels::max_pool(self.0, &x.hi, at.batch),
        )
    }

    fn needs(&self) -> Need {
        Need::All
    }

    fn relaxation(&self, at: &At, input: &Intervals, _rnd: &Rounding) -> Relaxation {
        Relaxation::Pool(maxpool_relax_all(self.0, input, at.in_n(0)))
    }

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

    fn linear_back(&self, _at: &At, _a: &[f64], _support: &[Option<Rect>]) -> Option<Back> {
        None
    }

    fn relaxed_back(
        &self,
        ctx: &BackCtx,
        node: &Node,
        a: &[f64],
        _alpha: Alpha,
        _support: &[Option<Rect>],
    ) -> Back {
        let r = ctx.rows.len();
        let out_n = ctx.g.values[node.output].numel();
        let in_n = ctx.g.values[node.inputs[0]].numel();
        let Some(relaxes) = ctx.pools[node.output].as_ref() else {
            return Back::Concretize(Vec::new());
        };
        let mut ain = vec![0.0; r * in_n];
        let (mut bias, mut mag) = (vec![0.0; r], vec![0.0; r]);
        for row in 0..r {
            let rel = &relaxes[ctx.rows[row]];
            for o in 0..out_n {
                let v = a[row * out_n + o];
                match rel[o] {
                    PoolRelax::Exact(t) => ain[row * in_n + t] += v,
                    PoolRelax::Loose { best, upper } => {
                        if v >= 0.0 {
                            ain[row * in_n + best] += v;
                        } else {
                            if !upper.is_finite() {
                                return Back::Concretize(Vec::new());
                            }
                            bias[row] += v * upper;
                            mag[row] += (v * upper).abs();
                        }
                    }
                }
            }
        }
        Back::Linear {
            inputs: vec![Some(ain)],
            bias,
            mag,
        }
    }

    fn alpha_leak(&self) -> Option<f64> {
        None
    }

    fn relaxed_forward(
        &self,
        pass: &RelaxedPass,
        at: &At,
        ins: &[&[f64]],
    ) -> (Vec<f64>, Option<Vec<f64>>) {
        let pools = pass.pools(at.node.output);
        let (in_n, out_n) = (at.in_n(0), at.out_n());
        let r = pass.rows.len();
        let mut y = vec![0.0; r * out_n];
        for row in 0..r {
            let rel = &pools[pass.rows[row]];
            for (o, pr) in rel.iter().enumerate() {
                y[row * out_n + o] = match *pr {
                    PoolRelax::Exact(t) => ins[0][row * in_n + t],
                    PoolRelax::Loose { best, upper } => {
                        if pass.lower_side(row, o, out_n) {
                            ins[0][row * in_n + best]
                        } else {
                            upper
                        }
                    }
                };
            }
        }
        (y, None)
    }

    fn back_support(&self, at: &At, out: &[Option<Rect>]) -> Vec<Support> {
        backward::window_support(at, &self.0.win, out)
    }

    fn lp_rows(&self, lp: &mut LpNode) -> Result<(), LpError> {
        let (x0, y0) = (lp.col(0), lp.y0);
        let pools = lp.pools()?;
        for (j, pr) in pools.into_iter().enumerate() {
            match pr {
                PoolRelax::Exact(t) => lp.add_row(vec![(y0 + j, 1.0), (x0 + t, -1.0)], 0.0, 0.0)?,
                PoolRelax::Loose { best, .. } => {
                    lp.add_row(vec![(y0 + j, 1.0), (x0 + best, -1.0)], 0.0, f64::INFINITY)?
                }
            }
        }
        Ok(())
    }
}

impl Family for AveragePool<'_> {
    fn eval<T: Scalar>(&self, at: &At, ins: &[&[T]]) -> Vec<T> {
        let x = ins.first().copied().unwrap_or(&[]);
        kernels::avg_pool(self.0, x, at.batch)
    }

    fn eval_in_place<T: Scalar>(&self, _at: &At, _x: &mut [T]) -> bool {
        false
    }

    fn vjp<T: Scalar>(&self, at: &At, _ins: &[&[T]], go: Vec<T>) -> Vec<Option<Vec<T>>> {
        let p = self.0;
        let mut gi = vec![T::ZERO; at.batch * at.in_n(0)];
        kernels::for_each_window(&p.win, at.batch * p.win.n, |o, taps, full| {
            let cnt = if p.count_include_pad {
                full
            } else {
                taps.len().max(1)
            };
            let v = go[o] / T::from_f64(cnt as f64);
            for &t in taps {
                gi[t] += v;
            }
        });
        vec![Some(gi)]
    }

    fn ibp(&self, at: &At, ins: &[&Intervals], rnd: &Rounding) -> Intervals {
        let (p, x, batch) = (self.0, ins[0], at.batch);
        let lo = kernels::avg_pool(p, &x.lo, batch);
        let hi = kernels::avg_pool(p, &x.hi, batch);
        let mag = kernels::avg_pool(p, &x.abs_max(), batch);
        let k = p.win.kh * p.win.kw;
        let mut out = Intervals::new(lo, hi);
        for i in 0..out.len() {
            // Sum of k terms, then one division.
            let (l, h) = rnd.widen(out.lo[i], out.hi[i], rnd.err(k, 1, mag[i]));
            out.lo[i] = l;
            out.hi[i] = h;
        }
        out
    }

    exactly_linear!();

    fn backward_error(
        &self,
        at: &At,
        bounds: &[Option<Intervals>],
        rnd: &Rounding,
        terms: usize,
    ) -> Option<Vec<f64>> {
        let p = self.0;
        let x = bounds[at.node.inputs[0]].as_ref()?;
        let mag = kernels::avg_pool(p, &x.abs_max(), at.batch);
        Some(backward::error_terms(
            rnd,
            terms,
            p.win.kh * p.win.kw,
            1,
            &mag,
        ))
    }

    fn linear_back(&self, at: &At, a: &[f64], _support: &[Option<Rect>]) -> Option<Back> {
        let p = self.0;
        let (r, in_n, out_n) = (at.batch, at.in_n(0), at.out_n());
        let mut ain = vec![0.0; r * in_n];
        let win = &p.win;
        for row in 0..r {
            kernels::for_each_window(win, win.n, |o, taps, full| {
                let cnt = if p.count_include_pad {
                    full
                } else {
                    taps.len().max(1)
                };
                let v = a[row * out_n + o] / cnt as f64;
                for &t in taps {
                    ain[row * in_n + t] += v;
                }
            });
        }
        Some(Back::Linear {
            inputs: vec![Some(ain)],
            bias: vec![0.0; r],
            mag: vec![0.0; r],
        })
    }

    fn back_support(&self, at: &At, out: &[Option<Rect>]) -> Vec<Support> {
        backward::window_support(at, &self.0.win, out)
    }

    fn lp_rows(&self, lp: &mut LpNode) -> Result<(), LpError> {
        let p = self.0;
        let (x0, y0) = (lp.col(0), lp.y0);
        let mut rows: Vec<Vec<(usize, f64)>> = Vec::with_capacity(lp.out_n());
        kernels::for_each_window(&p.win, p.win.n, |o, taps, full| {
            let cnt = if p.count_include_pad {
                full
            } else {
                taps.len().max(1)
            } as f64;
            let mut t = vec![(y0 + o, 1.0)];
            t.extend(taps.iter().map(|&k| (x0 + k, -1.0 / cnt)));
            rows.push(t);
        });
        for (j, t) in rows.into_iter().enumerate() {
            let ej = lp.err(j) + 4.0 * f64::EPSILON * t.len() as f64;
            lp.add_row(t, -ej, ej)?;
        }
        Ok(())
    }
}

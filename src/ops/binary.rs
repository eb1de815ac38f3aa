//! Add, Sub, Mul and Div of two network values, with numpy broadcasting (residual blocks,
//! gating, MatMul of two values after lowering).
//!
//! Soundness: interval endpoint arithmetic (all four products or quotients; a divisor range
//! holding 0 gives an unbounded result), widened by one rounding of the result's magnitude.
//! Add and Sub are exactly linear backward; Mul uses the McCormick planes from the operands'
//! intermediate bounds (`z >= ly x + lx y - lx ly` below, `z <= uy x + lx y - lx uy` above);
//! Div has no linear relaxation and is concretised.

use super::{At, Family, Need, Relaxation};
use crate::bounds::alpha::RelaxedPass;
use crate::domain::{Intervals, Rounding};
use crate::eval::{Scalar, kernels};
use crate::ir::{Binary, BinaryKind, Node, Rect};
use crate::lp::{LpError, LpNode};
use crate::transformers::backward::{self, Alpha, Back, BackCtx, Support};

fn idx(map: Option<&[usize]>, i: usize) -> usize {
    map.map_or(i, |m| m[i])
}

impl Family for Binary {
    fn eval<T: Scalar>(&self, at: &At, ins: &[&[T]]) -> Vec<T> {
        let (n, na, nb) = (at.out_n(), at.in_n(0), at.in_n(1));
        let (a, b) = (ins[0], ins[1]);
        let mut y = Vec::with_capacity(n * at.batch);
        for s in 0..at.batch {
            for i in 0..n {
                let va = kernels::bcast(a, self.a_map.as_deref(), na, s, i);
                let vb = kernels::bcast(b, self.b_map.as_deref(), nb, s, i);
                y.push(match self.kind {
                    BinaryKind::Add => va + vb,
                    BinaryKind::Sub => va - vb,
                    BinaryKind::Mul => va * vb,
                    BinaryKind::Div => va / vb,
                });
            }
        }
        y
    }

    fn eval_in_place<T: Scalar>(&self, _at: &At, _x: &mut [T]) -> bool {
        false
    }

    fn vjp<T: Scalar>(&self, at: &At, ins: &[&[T]], go: Vec<T>) -> Vec<Option<Vec<T>>> {
        let (na, nb, out_n, batch) = (at.in_n(0), at.in_n(1), at.out_n(), at.batch);
        let (xa, xb) = (ins[0], ins[1]);
        let mut ga = vec![T::ZERO; batch * na];
        let mut gb = vec![T::ZERO; batch * nb];
        let (am, bm) = (self.a_map.as_deref(), self.b_map.as_deref());
        for s in 0..batch {
            for i in 0..out_n {
                let (ia, ib) = (s * na + idx(am, i), s * nb + idx(bm, i));
                let d = go[s * out_n + i];
                match self.kind {
                    BinaryKind::Add => {
                        ga[ia] += d;
                        gb[ib] += d;
                    }
                    BinaryKind::Sub => {
                        ga[ia] += d;
                        gb[ib] += -d;
                    }
                    BinaryKind::Mul => {
                        ga[ia] += d * xb[ib];
                        gb[ib] += d * xa[ia];
                    }
                    BinaryKind::Div => {
                        let q = d / xb[ib];
                        ga[ia] += q;
                        gb[ib] += -(q * xa[ia] / xb[ib]);
                    }
                }
            }
        }
        vec![Some(ga), Some(gb)]
    }

    fn ibp(&self, at: &At, ins: &[&Intervals], rnd: &Rounding) -> Intervals {
        let (n, na, nb, batch) = (at.out_n(), at.in_n(0), at.in_n(1), at.batch);
        let (a_map, b_map) = (self.a_map.as_deref(), self.b_map.as_deref());
        let (a, b) = (ins[0], ins[1]);
        let mut lo = Vec::with_capacity(n * batch);
        let mut hi = Vec::with_capacity(n * batch);
        for s in 0..batch {
            for i in 0..n {
                let (al, ah) = (
                    kernels::bcast(&a.lo, a_map, na, s, i),
                    kernels::bcast(&a.hi, a_map, na, s, i),
                );
                let (bl, bh) = (
                    kernels::bcast(&b.lo, b_map, nb, s, i),
                    kernels::bcast(&b.hi, b_map, nb, s, i),
                );
                let am = al.abs().max(ah.abs());
                let bm = bl.abs().max(bh.abs());
                let (l, h, mag) = match self.kind {
                    BinaryKind::Add => (al + bl, ah + bh, am + bm),
                    BinaryKind::Sub => (al - bh, ah - bl, am + bm),
                    BinaryKind::Mul => {
                        let p = [al * bl, al * bh, ah * bl, ah * bh];
                        let (mn, mx) = min_max(&p);
                        (mn, mx, am * bm)
                    }
                    BinaryKind::Div => {
                        if bl <= 0.0 && bh >= 0.0 {
                            (f64::NEG_INFINITY, f64::INFINITY, f64::INFINITY)
                        } else {
                            let q = [al / bl, al / bh, ah / bl, ah / bh];
                            let (mn, mx) = min_max(&q);
                            (mn, mx, am / bl.abs().min(bh.abs()))
                        }
                    }
                };
                let (l, h) = rnd.widen(l, h, rnd.err(1, 1, mag));
                lo.push(l);
                hi.push(h);
            }
        }
        Intervals::new(lo, hi)
    }

    fn needs(&self) -> Need {
        match self.kind {
            // Exactly linear: their inputs need no bounds of their own.
            BinaryKind::Add | BinaryKind::Sub => Need::No,
            BinaryKind::Mul | BinaryKind::Div => Need::All,
        }
    }

    fn relaxation(&self, _at: &At, _input: &Intervals, _rnd: &Rounding) -> Relaxation {
        // McCormick planes come from the bounds at each pass.
        Relaxation::None
    }

    fn backward_error(
        &self,
        at: &At,
        bounds: &[Option<Intervals>],
        rnd: &Rounding,
        terms: usize,
    ) -> Option<Vec<f64>> {
        let x = bounds[at.node.inputs[0]].as_ref()?;
        let y = bounds[at.node.inputs[1]].as_ref()?;
        let (na, nb, out_n) = (at.in_n(0), at.in_n(1), at.out_n());
        let (ax, ay) = (x.abs_max(), y.abs_max());
        let mut mag = Vec::with_capacity(out_n * at.batch);
        for d in 0..at.batch {
            for i in 0..out_n {
                let va = kernels::bcast(&ax, self.a_map.as_deref(), na, d, i);
                let vb = kernels::bcast(&ay, self.b_map.as_deref(), nb, d, i);
                mag.push(match self.kind {
                    BinaryKind::Add | BinaryKind::Sub => va + vb,
                    BinaryKind::Mul | BinaryKind::Div => va * vb,
                });
            }
        }
        Some(backward::error_terms(rnd, terms, 1, 1, &mag))
    }

    fn linear_back(&self, at: &At, a: &[f64], _support: &[Option<Rect>]) -> Option<Back> {
        if !matches!(self.kind, BinaryKind::Add | BinaryKind::Sub) {
            return None;
        }
        let (na, nb, out_n, r) = (at.in_n(0), at.in_n(1), at.out_n(), at.batch);
        let mut aa = vec![0.0; r * na];
        let mut ab = vec![0.0; r * nb];
        let (am, bm) = (self.a_map.as_deref(), self.b_map.as_deref());
        let sign = if self.kind == BinaryKind::Sub {
            -1.0
        } else {
            1.0
        };
        for row in 0..r {
            for i in 0..out_n {
                let v = a[row * out_n + i];
                aa[row * na + idx(am, i)] += v;
                ab[row * nb + idx(bm, i)] += sign * v;
            }
        }
        Some(Back::Linear {
            inputs: vec![Some(aa), Some(ab)],
            bias: vec![0.0; r],
            mag: vec![0.0; r],
        })
    }

    fn relaxed_back(
        &self,
        ctx: &BackCtx,
        node: &Node,
        a: &[f64],
        _alpha: Alpha,
        _support: &[Option<Rect>],
    ) -> Back {
        let g = ctx.g;
        let r = ctx.rows.len();
        let out_n = g.values[node.output].numel();
        let (na, nb) = (
            g.values[node.inputs[0]].numel(),
            g.values[node.inputs[1]].numel(),
        );
        let mut aa = vec![0.0; r * na];
        let mut ab = vec![0.0; r * nb];
        let (mut bias, mut mag) = (vec![0.0; r], vec![0.0; r]);
        let (am, bm) = (self.a_map.as_deref(), self.b_map.as_deref());
        if self.kind != BinaryKind::Mul {
            return Back::Concretize(Vec::new());
        }
        // McCormick planes: z >= ly x + lx y - lx ly, z <= uy x + lx y - lx uy.
        let (bx, by) = (ctx.bound(node.inputs[0]), ctx.bound(node.inputs[1]));
        for row in 0..r {
            let d = ctx.rows[row];
            for i in 0..out_n {
                let v = a[row * out_n + i];
                let (ia, ib) = (idx(am, i), idx(bm, i));
                let (lx, ly, uy) = (bx.lo[d * na + ia], by.lo[d * nb + ib], by.hi[d * nb + ib]);
                if !(lx.is_finite() && ly.is_finite() && uy.is_finite()) {
                    return Back::Concretize(Vec::new());
                }
                let (kx, c) = if v >= 0.0 {
                    (ly, -lx * ly)
                } else {
                    (uy, -lx * uy)
                };
                aa[row * na + ia] += v * kx;
                ab[row * nb + ib] += v * lx;
                bias[row] += v * c;
                mag[row] += (v * c).abs();
            }
        }
        Back::Linear {
            inputs: vec![Some(aa), Some(ab)],
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
        match self.kind {
            // The relaxed network is the network itself for exact linear maps.
            BinaryKind::Add | BinaryKind::Sub => (self.eval(at, ins), None),
            BinaryKind::Mul | BinaryKind::Div => {
                // Use the interval end the bound used (concretisation or McCormick constant
                // part); the slope gradient only needs an approximation here.
                let out_n = at.out_n();
                let bd = pass.bound(at.node.output);
                let r = pass.rows.len();
                let mut y = vec![0.0; r * out_n];
                for row in 0..r {
                    let d = pass.rows[row];
                    for j in 0..out_n {
                        y[row * out_n + j] = if pass.lower_side(row, j, out_n) {
                            bd.lo[d * out_n + j]
                        } else {
                            bd.hi[d * out_n + j]
                        };
                    }
                }
                (y, None)
            }
        }
    }

    fn back_support(&self, at: &At, out: &[Option<Rect>]) -> Vec<Support> {
        // Each output element reads the element at its own index of an input without a
        // broadcast map (sums and McCormick planes alike).
        let mut s = backward::same_support(at, out);
        for (si, map) in s.iter_mut().zip([&self.a_map, &self.b_map]) {
            if map.is_some() {
                si.iter_mut().for_each(|r| *r = None);
            }
        }
        s
    }

    fn lp_rows(&self, lp: &mut LpNode) -> Result<(), LpError> {
        let (a0, b0, y0) = (lp.col(0), lp.col(1), lp.y0);
        let (la, ha) = lp.bound(lp.input(0));
        let (lb, hb) = lp.bound(lp.input(1));
        for j in 0..lp.out_n() {
            let (ia, ib) = (idx(self.a_map.as_deref(), j), idx(self.b_map.as_deref(), j));
            let ej = lp.err(j);
            match self.kind {
                BinaryKind::Add | BinaryKind::Sub => {
                    let sgn = if self.kind == BinaryKind::Sub {
                        1.0
                    } else {
                        -1.0
                    };
                    lp.add_row(
                        vec![(y0 + j, 1.0), (a0 + ia, -1.0), (b0 + ib, sgn)],
                        -ej,
                        ej,
                    )?;
                }
                BinaryKind::Mul => {
                    let (lx, ux, ly, uy) = (la[ia], ha[ia], lb[ib], hb[ib]);
                    if [lx, ux, ly, uy].iter().all(|v| v.is_finite()) {
                        // z >= ly x + lx y - lx ly ; z >= uy x + ux y - ux uy
                        // z <= uy x + lx y - lx uy ; z <= ly x + ux y - ux ly
                        let (xa, yb, z) = (a0 + ia, b0 + ib, y0 + j);
                        for (kx, ky, c, lower) in [
                            (ly, lx, -lx * ly, true),
                            (uy, ux, -ux * uy, true),
                            (uy, lx, -lx * uy, false),
                            (ly, ux, -ux * ly, false),
                        ] {
                            let slack = 8.0
                                * f64::EPSILON
                                * (c.abs()
                                    + (kx * lx).abs().max((kx * ux).abs())
                                    + (ky * ly).abs().max((ky * uy).abs()))
                                + ej;
                            let terms = vec![(z, 1.0), (xa, -kx), (yb, -ky)];
                            if lower {
                                lp.add_row(terms, c - slack, f64::INFINITY)?;
                            } else {
                                lp.add_row(terms, f64::NEG_INFINITY, c + slack)?;
                            }
                        }
                    }
                }
                // No linear relaxation: the output columns keep their interval bounds.
                BinaryKind::Div => {}
            }
        }
        Ok(())
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    let mut mn = f64::INFINITY;
    let mut mx = f64::NEG_INFINITY;
    for &x in v {
        if x.is_nan() {
            return (f64::NEG_INFINITY, f64::INFINITY);
        }
        mn = mn.min(x);
        mx = mx.max(x);
    }
    (mn, mx)
}

//! The affine layers: Linear (`y[o,p,i] = sum_k W[p,k] x[o,k,i] + b[p]`, from Gemm and MatMul
//! with a constant operand, with folded elementwise maps) and Conv (1-D and 2-D, groups,
//! strides, pads, dilations).
//!
//! Soundness (see [`crate::ir::FpModel`] and [`crate::domain`]): intervals in centre-radius
//! form `W c +- |W| r`; the error term's magnitude `|W| (|c| + r) + offset` bounds
//! `sum |W_ji| |x_i|` for every `x` in the box plus every folded bias magnitude, so both our
//! f64 rounding and the deployed rounding (any summation order) are covered. A backward step is
//! the transposed layer, exact; its products' rounding is in [`Family::backward_error`].

use super::{At, Family};
use crate::domain::{Intervals, Rounding, sum_mag, sum_mag1, sum_mag2};
use crate::eval::{Scalar, kernels};
use crate::ir::{Conv, Linear, Rect};
use crate::lp::{LpError, LpNode};
use crate::transformers::backward::{self, Back, Support};

/// `sum_k W[p, k] x[o, k, i] (+ b[p])` in f64 on `batch` samples, with `|W|` for `abs` (IBP,
/// the error terms' magnitudes, alpha-CROWN's relaxed forward pass): for `inner == 1` from the
/// cached transposed weights ([`kernels::linear_rows_f64`]), else, and for layers whose
/// transposes would not be worth their memory, [`kernels::linear`]. Every caller's error
/// term holds for any summation order.
fn times_f64(l: &Linear, abs: bool, bias: bool, x: &[f64], batch: usize) -> Vec<f64> {
    let bias = if bias {
        l.bias.as_ref().map(|b| &b.f64[..])
    } else {
        None
    };
    // The transposes double the layer's f64 weights: past 2^22 weights (32 MiB each) the
    // packing GEMM reads the weights in place instead.
    if l.inner != 1 || l.p * l.k > 1 << 22 {
        let w = if abs { &l.weight_abs } else { &l.weight.f64 };
        return kernels::linear(l, w, bias, x, batch);
    }
    let (wt, wat) = l.transposed.get_or_init(|| {
        let t = |w: &[f64]| -> Vec<f64> {
            let mut o = vec![0.0; l.k * l.p];
            for pp in 0..l.p {
                for kk in 0..l.k {
                    o[kk * l.p + pp] = w[pp * l.k + kk];
                }
            }
            o
        };
        (t(&l.weight.f64), t(&l.weight_abs))
    });
    kernels::linear_rows_f64(l, if abs { wat } else { wt }, bias, x, batch)
}

impl Family for Linear {
    fn eval<T: Scalar>(&self, at: &At, ins: &[&[T]]) -> Vec<T> {
        let x = ins.first().copied().unwrap_or(&[]);
        kernels::linear(
            self,
            T::param(&self.weight),
            self.bias.as_ref().map(T::param),
            x,
            at.batch,
        )
    }

    fn eval_in_place<T: Scalar>(&self, _at: &At, _x: &mut [T]) -> bool {
        false
    }

    fn vjp<T: Scalar>(&self, at: &At, _ins: &[&[T]], go: Vec<T>) -> Vec<Option<Vec<T>>> {
        vec![Some(kernels::linear_t(
            self,
            T::param(&self.weight),
            &go,
            at.batch,
        ))]
    }

    fn ibp(&self, at: &At, ins: &[&Intervals], rnd: &Rounding) -> Intervals {
        let l = self;
        let x = ins[0];
        let (n_in, out_n, batch) = (at.in_n(0), at.out_n(), at.batch);
        let mag_in = x.shifted_abs_max(n_in, l.fp.input_shift.as_deref(), |i| l.input_feature(i));
        affine_layer(
            x,
            &mag_in,
            n_in,
            out_n,
            batch,
            rnd,
            l.k,
            l.fp.extra_roundings,
            |v, abs, bias| times_f64(l, abs, bias, v, batch),
            |j| l.fp.offset[(j / l.inner) % l.p],
        )
    }

    exactly_linear!(own_forward);

    fn relaxed_forward(
        &self,
        _pass: &crate::bounds::alpha::RelaxedPass,
        at: &At,
        ins: &[&[f64]],
    ) -> (Vec<f64>, Option<Vec<f64>>) {
        let x = ins.first().copied().unwrap_or(&[]);
        (times_f64(self, false, true, x, at.batch), None)
    }

    fn backward_error(
        &self,
        at: &At,
        bounds: &[Option<Intervals>],
        rnd: &Rounding,
        terms: usize,
    ) -> Option<Vec<f64>> {
        let l = self;
        let x = bounds[at.node.inputs[0]].as_ref()?;
        let (n_in, out_n) = (at.in_n(0), at.out_n());
        let absx = x.shifted_abs_max(n_in, l.fp.input_shift.as_deref(), |i| l.input_feature(i));
        let mag = times_f64(l, true, false, &absx, at.batch);
        let mag: Vec<f64> = mag
            .iter()
            .enumerate()
            .map(|(i, m)| m + l.fp.offset[((i % out_n) / l.inner) % l.p])
            .collect();
        Some(backward::error_terms(
            rnd,
            terms,
            l.k,
            l.fp.extra_roundings,
            &mag,
        ))
    }

    fn linear_back(&self, at: &At, a: &[f64], _support: &[Option<Rect>]) -> Option<Back> {
        let (l, r, out_n) = (self, at.batch, at.out_n());
        let ain = kernels::linear_t(l, &l.weight.f64, a, r);
        let mut bias = vec![0.0; r];
        let mut mag = vec![0.0; r];
        if let Some(b) = &l.bias {
            for row in 0..r {
                let arow = &a[row * out_n..(row + 1) * out_n];
                let (sb, sm) = if l.inner == 1 && l.outer == 1 && b.f64.len() == out_n {
                    sum_mag2(arow, &b.f64, |x, y| x * y)
                } else {
                    sum_mag(out_n, |i| arow[i] * b.f64[(i / l.inner) % l.p])
                };
                bias[row] = sb;
                mag[row] = sm;
            }
        }
        Some(Back::Linear {
            inputs: vec![Some(ain)],
            bias,
            mag,
        })
    }

    fn back_support(&self, at: &At, out: &[Option<Rect>]) -> Vec<Support> {
        backward::anywhere(at, out)
    }

    fn lp_rows(&self, lp: &mut LpNode) -> Result<(), LpError> {
        let l = self;
        let (x0, y0) = (lp.col(0), lp.y0);
        for o in 0..l.outer {
            for p in 0..l.p {
                for i in 0..l.inner {
                    let j = (o * l.p + p) * l.inner + i;
                    let mut terms = vec![(y0 + j, 1.0)];
                    for k in 0..l.k {
                        let w = l.weight.f64[p * l.k + k];
                        if w != 0.0 {
                            terms.push((x0 + (o * l.k + k) * l.inner + i, -w));
                        }
                    }
                    let b = l.bias.as_ref().map_or(0.0, |b| b.f64[p]);
                    let ej = lp.err(j);
                    lp.add_row(terms, b - ej, b + ej)?;
                }
            }
        }
        Ok(())
    }
}

impl Family for Conv {
    fn eval<T: Scalar>(&self, at: &At, ins: &[&[T]]) -> Vec<T> {
        let x = ins.first().copied().unwrap_or(&[]);
        let dense = self.dense.get_or_init(|| kernels::dense_conv_matrix(self));
        if let Some(t) = dense {
            if x.iter().all(|v| v.to_f64().is_finite()) {
                return kernels::conv_dense(
                    self,
                    T::param(t),
                    self.bias.as_ref().map(T::param),
                    x,
                    at.batch,
                );
            }
        }
        kernels::conv(
            self,
            T::param(&self.weight),
            self.bias.as_ref().map(T::param),
            x,
            at.batch,
        )
    }

    fn eval_in_place<T: Scalar>(&self, _at: &At, _x: &mut [T]) -> bool {
        false
    }

    fn vjp<T: Scalar>(&self, at: &At, _ins: &[&[T]], go: Vec<T>) -> Vec<Option<Vec<T>>> {
        vec![Some(kernels::conv_t(
            self,
            T::param(&self.weight),
            &go,
            at.batch,
        ))]
    }

    fn ibp(&self, at: &At, ins: &[&Intervals], rnd: &Rounding) -> Intervals {
        let c = self;
        let x = ins[0];
        let (n_in, out_n, batch) = (at.in_n(0), at.out_n(), at.batch);
        let fan_in = (c.win.c / c.group) * c.win.kh * c.win.kw;
        let ohw = c.win.oh * c.win.ow;
        let mag_in = x.shifted_abs_max(n_in, c.fp.input_shift.as_deref(), |i| c.input_channel(i));
        affine_layer(
            x,
            &mag_in,
            n_in,
            out_n,
            batch,
            rnd,
            fan_in,
            c.fp.extra_roundings,
            |v, abs, bias| {
                let w = if abs { &c.weight_abs } else { &c.weight.f64 };
                kernels::conv(
                    c,
                    w,
                    if bias {
                        c.bias.as_ref().map(|b| &b.f64[..])
                    } else {
                        None
                    },
                    v,
                    batch,
                )
            },
            |j| c.fp.offset[(j / ohw) % c.m],
        )
    }

    exactly_linear!(own_forward);

    fn relaxed_forward(
        &self,
        pass: &crate::bounds::alpha::RelaxedPass,
        at: &At,
        ins: &[&[f64]],
    ) -> (Vec<f64>, Option<Vec<f64>>) {
        let x = ins.first().copied().unwrap_or(&[]);
        match pass.need {
            // Only the rows' boxes are read downstream (see `RelaxedPass::need`).
            Some(need) if backward::output_is_window(at, &self.win) => {
                let bias = self.bias.as_ref().map(|b| &b.f64[..]);
                let y = kernels::conv_boxes(self, &self.weight.f64, bias, x, at.batch, need);
                (y, None)
            }
            _ => (self.eval(at, ins), None),
        }
    }

    fn backward_error(
        &self,
        at: &At,
        bounds: &[Option<Intervals>],
        rnd: &Rounding,
        terms: usize,
    ) -> Option<Vec<f64>> {
        let c = self;
        let x = bounds[at.node.inputs[0]].as_ref()?;
        let (n_in, out_n) = (at.in_n(0), at.out_n());
        let absx = x.shifted_abs_max(n_in, c.fp.input_shift.as_deref(), |i| c.input_channel(i));
        let mag = kernels::conv(c, &c.weight_abs, None, &absx, at.batch);
        let ohw = c.win.oh * c.win.ow;
        let fan = (c.win.c / c.group) * c.win.kh * c.win.kw;
        let mag: Vec<f64> = mag
            .iter()
            .enumerate()
            .map(|(i, m)| m + c.fp.offset[((i % out_n) / ohw) % c.m])
            .collect();
        Some(backward::error_terms(
            rnd,
            terms,
            fan,
            c.fp.extra_roundings,
            &mag,
        ))
    }

    fn linear_back(&self, at: &At, a: &[f64], support: &[Option<Rect>]) -> Option<Back> {
        let (c, r, out_n) = (self, at.batch, at.out_n());
        let ohw = c.win.oh * c.win.ow;
        // The engine's boxes are over the output value's plane; a layout that does not match
        // the window (never seen) falls back to scanning.
        let boxes = backward::output_is_window(at, &c.win).then_some(support);
        let ain = kernels::conv_t_in(c, &c.weight.f64, a, r, boxes);
        let mut bias = vec![0.0; r];
        let mut mag = vec![0.0; r];
        if let Some(b) = &c.bias {
            for row in 0..r {
                let arow = &a[row * out_n..(row + 1) * out_n];
                let rect = boxes.and_then(|s| s.get(row).copied().flatten());
                // Each range lies in one channel's plane (terms outside the box are zero).
                let (sb, sm) = backward::sum_runs(at.g, at.node.output, rect, |rg| {
                    let mut acc = (0.0, 0.0);
                    // A range starts a plane (the whole row) or lies in one.
                    for (i, blk) in arow[rg.clone()].chunks(ohw).enumerate() {
                        let bv = b.f64[(rg.start / ohw + i) % c.m];
                        let (s, m) = sum_mag1(blk, |x| x * bv);
                        acc.0 += s;
                        acc.1 += m;
                    }
                    acc
                });
                bias[row] = sb;
                mag[row] = sm;
            }
        }
        Some(Back::Linear {
            inputs: vec![Some(ain)],
            bias,
            mag,
        })
    }

    fn back_support(&self, at: &At, out: &[Option<Rect>]) -> Vec<Support> {
        backward::window_support(at, &self.win, out)
    }

    fn lp_rows(&self, lp: &mut LpNode) -> Result<(), LpError> {
        let c = self;
        let (x0, y0) = (lp.col(0), lp.y0);
        let wn = &c.win;
        let (cg, mg) = (wn.c / c.group, c.m / c.group);
        let ohw = wn.oh * wn.ow;
        // Explicit taps: for each output, its window's in-bounds inputs.
        for img in 0..wn.n {
            for m in 0..c.m {
                let grp = m / mg;
                for oy in 0..wn.oh {
                    for ox in 0..wn.ow {
                        let j = (img * c.m + m) * ohw + oy * wn.ow + ox;
                        let mut terms = vec![(y0 + j, 1.0)];
                        for ci in 0..cg {
                            let plane = (img * wn.c + grp * cg + ci) * wn.h * wn.w;
                            for (a, b, i) in wn.taps(oy, ox) {
                                let w = c.weight.f64[((m * cg + ci) * wn.kh + a) * wn.kw + b];
                                if w != 0.0 {
                                    terms.push((x0 + plane + i, -w));
                                }
                            }
                        }
                        let bb = c.bias.as_ref().map_or(0.0, |b| b.f64[m]);
                        let ej = lp.err(j);
                        lp.add_row(terms, bb - ej, bb + ej)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Shared Linear/Conv interval step. `apply(v, abs, bias)` runs the layer's kernel on `v` with
/// `|W|` when `abs`, adding the bias when `bias`; `mag_in` bounds `|x|` (shifted per the error
/// model) and `offset(j)` is the error-model offset of per-sample output element `j`.
#[allow(clippy::too_many_arguments)]
fn affine_layer(
    x: &Intervals,
    mag_in: &[f64],
    n_in: usize,
    n_out: usize,
    batch: usize,
    rnd: &Rounding,
    fan_in: usize,
    extra: u32,
    apply: impl Fn(&[f64], bool, bool) -> Vec<f64>,
    offset: impl Fn(usize) -> f64,
) -> Intervals {
    let (c, r) = x.center_radius();
    let yc = apply(&c, false, true);
    let yr = apply(&r, true, false);
    let ym = apply(mag_in, true, false);
    let mut lo = Vec::with_capacity(yc.len());
    let mut hi = Vec::with_capacity(yc.len());
    for b in 0..batch {
        // A sample with an unbounded input has unbounded outputs (the deployed network may
        // produce inf or NaN there).
        let finite = x.lo[b * n_in..(b + 1) * n_in]
            .iter()
            .chain(&x.hi[b * n_in..(b + 1) * n_in])
            .all(|v| v.is_finite());
        for j in 0..n_out {
            let i = b * n_out + j;
            if !finite {
                lo.push(f64::NEG_INFINITY);
                hi.push(f64::INFINITY);
                continue;
            }
            let e = rnd.err(fan_in, extra, ym[i] + offset(j));
            let (l, h) = rnd.widen(yc[i] - yr[i], yc[i] + yr[i], e);
            lo.push(l);
            hi.push(h);
        }
    }
    Intervals::new(lo, hi)
}

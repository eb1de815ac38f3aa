//! Interval bound propagation, one transformer per IR operator family.
//!
//! Soundness argument per family (see [`crate::domain`] for the error terms):
//! * Linear/Conv: centre-radius form `W c +- |W| r`; the error term's magnitude is
//!   `|W| (|c| + r) + offset`, which bounds `sum |W_ji| |x_i|` for every `x` in the box plus
//!   every folded bias magnitude, so both our f64 rounding and the deployed rounding are covered.
//! * Affine, Binary, AveragePool: endpoint arithmetic plus the same kind of term.
//! * Relu, MaxPool, Reshape, Select: exact (monotone selections of representable values).
//! * Elementwise functions: verified extremes over their convexity pieces, widened by the
//!   deployed runtime's allowance ([`crate::ops::elementwise::interval`]).

use crate::domain::{Intervals, Rounding};
use crate::eval::kernels;
use crate::ir::{BinaryKind, Graph, Node, Op};
use crate::ops::elementwise;

/// Apply the interval transformer of `node` to its inputs' intervals (batched).
pub fn transfer(
    g: &Graph,
    node: &Node,
    ins: &[&Intervals],
    batch: usize,
    rnd: &Rounding,
) -> Intervals {
    let empty = Intervals::new(vec![], vec![]);
    let x = ins.first().copied().unwrap_or(&empty);
    let out_n = g.values[node.output].numel();
    match &node.op {
        Op::Const(p) => {
            let mut lo = Vec::with_capacity(p.len() * batch);
            let mut hi = Vec::with_capacity(p.len() * batch);
            for _ in 0..batch {
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
        Op::Linear(l) => {
            let n_in = g.values[node.inputs[0]].numel();
            let mag_in =
                x.shifted_abs_max(n_in, l.fp.input_shift.as_deref(), |i| l.input_feature(i));
            affine_layer(
                x,
                &mag_in,
                n_in,
                out_n,
                batch,
                rnd,
                l.k,
                l.fp.extra_roundings,
                |v, abs, bias| {
                    let w = if abs { &l.weight_abs } else { &l.weight.f64 };
                    kernels::linear(
                        l,
                        w,
                        if bias {
                            l.bias.as_ref().map(|b| &b.f64[..])
                        } else {
                            None
                        },
                        v,
                        batch,
                    )
                },
                |j| l.fp.offset[(j / l.inner) % l.p],
            )
        }
        Op::Conv(c) => {
            let n_in = g.values[node.inputs[0]].numel();
            let fan_in = (c.win.c / c.group) * c.win.kh * c.win.kw;
            let ohw = c.win.oh * c.win.ow;
            let mag_in =
                x.shifted_abs_max(n_in, c.fp.input_shift.as_deref(), |i| c.input_channel(i));
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
        Op::Affine(a) => {
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
        Op::Binary(bn) => binary(
            g,
            node,
            bn.kind,
            bn.a_map.as_deref(),
            bn.b_map.as_deref(),
            ins,
            batch,
            rnd,
        ),
        Op::Relu => Intervals::new(
            x.lo.iter().map(|v| v.max(0.0)).collect(),
            x.hi.iter().map(|v| v.max(0.0)).collect(),
        ),
        Op::LeakyRelu { alpha } => {
            let a = *alpha;
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
        Op::Elementwise(f) => {
            let (lo, hi) =
                x.lo.iter()
                    .zip(&x.hi)
                    .map(|(&l, &h)| elementwise::interval(f, l, h, rnd))
                    .unzip();
            Intervals::new(lo, hi)
        }
        Op::MaxPool(p) => Intervals::new(
            kernels::max_pool(p, &x.lo, batch),
            kernels::max_pool(p, &x.hi, batch),
        ),
        Op::AveragePool(p) => {
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
        Op::Reshape => x.clone(),
        Op::Select(s) => {
            let sizes: Vec<usize> = node.inputs.iter().map(|&v| g.values[v].numel()).collect();
            let src = kernels::select_sources(&s.map, &sizes);
            let los: Vec<&[f64]> = ins.iter().map(|i| &i.lo[..]).collect();
            let his: Vec<&[f64]> = ins.iter().map(|i| &i.hi[..]).collect();
            Intervals::new(
                kernels::select(&src, s.fill, &los, &sizes, batch),
                kernels::select(&src, s.fill, &his, &sizes, batch),
            )
        }
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

#[allow(clippy::too_many_arguments)]
fn binary(
    g: &Graph,
    node: &Node,
    kind: BinaryKind,
    a_map: Option<&[usize]>,
    b_map: Option<&[usize]>,
    ins: &[&Intervals],
    batch: usize,
    rnd: &Rounding,
) -> Intervals {
    let n = g.values[node.output].numel();
    let na = g.values[node.inputs[0]].numel();
    let nb = g.values[node.inputs[1]].numel();
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
            let (l, h, mag) = match kind {
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

//! Backward (CROWN/DeepPoly) linear bound transformers, one per IR operator family.
//!
//! A backward step receives the coefficients `A` of a node's output (rows x elements; each row
//! belongs to one input domain, see [`BackCtx::rows`]) in a lower bound `sum A y + bias`, and
//! returns coefficients on the node's inputs plus a bias such that the bound still holds for
//! every input in the domain's intermediate bounds. Linear maps are exact (the transposed
//! layer); nonlinear ones use the relaxations of [`super::relax`], choosing the lower line
//! where a coefficient is positive and the upper line where it is negative.
//!
//! Rounding (deployed and our own) is *not* handled here: the engine subtracts
//! `|A| . err(node)` for every node, with `err` from [`node_error`].

use super::relax::{self, Lines};
use crate::domain::{Intervals, Rounding, gamma};
use crate::eval::kernels;
use crate::ir::{BinaryKind, Conv, Graph, Linear, Node, Op, Pool};

/// What a backward step needs besides the coefficients.
pub struct BackCtx<'a> {
    pub g: &'a Graph,
    /// Best known bounds of every value, batched over domains `[domains, numel]`.
    pub bounds: &'a [Option<Intervals>],
    /// Domain of each row.
    pub rows: &'a [usize],
    /// Relaxation lines of every activation, by output value (`[domains, numel]`).
    pub lines: &'a [Option<Vec<Lines>>],
    /// MaxPool relaxations, by output value, per domain.
    pub pools: &'a [Option<Vec<Vec<PoolRelax>>>],
}

impl BackCtx<'_> {
    fn bound(&self, v: usize) -> &Intervals {
        self.bounds[v]
            .as_ref()
            .expect("intermediate bounds are computed before any backward pass")
    }
}

/// Result of one backward step.
pub enum Back {
    /// Coefficients per node input (`None`: that input gets no coefficient), the bias added to
    /// each row and the sum of magnitudes of the bias terms (for the final rounding term).
    Linear {
        inputs: Vec<Option<Vec<f64>>>,
        bias: Vec<f64>,
        mag: Vec<f64>,
    },
    /// No linear relaxation: bound the node's output by its interval instead (the
    /// coefficients are handed back).
    Concretize(Vec<f64>),
}

/// Lower slopes chosen per row and element for ReLU-like nodes (alpha-CROWN); `None` uses the
/// adaptive CROWN choice.
pub type Alpha<'a> = Option<&'a [f64]>;

/// Rounding error bound of every element of a node's output, batched over domains, covering
/// the deployed arithmetic and the f64 arithmetic of a backward pass through the node.
/// `terms` bounds the length of any dot product a backward pass computes.
pub fn node_error(
    g: &Graph,
    node: &Node,
    bounds: &[Option<Intervals>],
    domains: usize,
    rnd: &Rounding,
    terms: usize,
) -> Option<Vec<f64>> {
    let out_n = g.values[node.output].numel();
    let input = |i: usize| bounds[node.inputs[i]].as_ref();
    let g64 = gamma(terms + 4, 1.1102230246251565e-16);
    // err(n, extra, mag) covers the deployed arithmetic; g64 * mag our backward products.
    let with = |n: usize, extra: u32, mag: &[f64]| -> Vec<f64> {
        mag.iter()
            .map(|&m| (rnd.err(n, extra, m) + g64 * m).next_up())
            .collect()
    };
    match &node.op {
        Op::Linear(l) => {
            let x = input(0)?;
            let n_in = g.values[node.inputs[0]].numel();
            let absx = x.shifted_abs_max(n_in, l.fp.input_shift.as_deref(), |i| l.input_feature(i));
            let mag = kernels::linear(l, &l.weight_abs, None, &absx, domains);
            let mag: Vec<f64> = mag
                .iter()
                .enumerate()
                .map(|(i, m)| m + l.fp.offset[((i % out_n) / l.inner) % l.p])
                .collect();
            Some(with(l.k, l.fp.extra_roundings, &mag))
        }
        Op::Conv(c) => {
            let x = input(0)?;
            let n_in = g.values[node.inputs[0]].numel();
            let absx = x.shifted_abs_max(n_in, c.fp.input_shift.as_deref(), |i| c.input_channel(i));
            let mag = kernels::conv(c, &c.weight_abs, None, &absx, domains);
            let ohw = c.win.oh * c.win.ow;
            let fan = (c.win.c / c.group) * c.win.kh * c.win.kw;
            let mag: Vec<f64> = mag
                .iter()
                .enumerate()
                .map(|(i, m)| m + c.fp.offset[((i % out_n) / ohw) % c.m])
                .collect();
            Some(with(fan, c.fp.extra_roundings, &mag))
        }
        Op::Affine(a) => {
            let x = input(0)?;
            let n = a.scale.len();
            let mag: Vec<f64> = x
                .abs_max()
                .iter()
                .enumerate()
                .map(|(i, m)| a.scale.f64[i % n].abs() * m + a.fp.offset[i % n])
                .collect();
            Some(with(1, a.fp.extra_roundings, &mag))
        }
        Op::Binary(b) => {
            let (x, y) = (input(0)?, input(1)?);
            let (na, nb) = (
                g.values[node.inputs[0]].numel(),
                g.values[node.inputs[1]].numel(),
            );
            let (ax, ay) = (x.abs_max(), y.abs_max());
            let mut mag = Vec::with_capacity(out_n * domains);
            for d in 0..domains {
                for i in 0..out_n {
                    let va = kernels::bcast(&ax, b.a_map.as_deref(), na, d, i);
                    let vb = kernels::bcast(&ay, b.b_map.as_deref(), nb, d, i);
                    mag.push(match b.kind {
                        BinaryKind::Add | BinaryKind::Sub => va + vb,
                        _ => va * vb,
                    });
                }
            }
            Some(with(1, 1, &mag))
        }
        Op::LeakyRelu { alpha } => {
            let x = input(0)?;
            let mag: Vec<f64> = x.abs_max().iter().map(|m| alpha.abs() * m + m).collect();
            Some(with(1, 1, &mag))
        }
        Op::Relu | Op::MaxPool(_) | Op::Reshape | Op::Select(_) => {
            // Exact in the deployed network; our backward step only multiplies by slopes in
            // [0, 1] or moves coefficients (sums of at most `terms` of them).
            let x = bounds[node.output].as_ref()?;
            let src = input(0).map(|i| i.abs_max());
            let own = x.abs_max();
            // ReLU: the input's magnitudes (its output's are no larger).
            let m: Vec<f64> = if let (Op::Relu, Some(s)) = (&node.op, src) {
                s
            } else {
                own
            };
            Some(m.iter().map(|v| (g64 * v * 2.0).next_up()).collect())
        }
        Op::Elementwise(_) => {
            // The deployed function's own error is in its relaxation lines; our backward step
            // multiplies by the lines' slopes and adds their intercepts: magnitudes of input
            // and output bound it.
            let x = input(0)?;
            let y = bounds[node.output].as_ref()?;
            let m: Vec<f64> = x
                .abs_max()
                .iter()
                .zip(y.abs_max())
                .map(|(v, w)| (g64 * (v + w + 1.0) * 2.0).next_up())
                .collect();
            Some(m)
        }
        Op::AveragePool(p) => {
            let x = input(0)?;
            let mag = kernels::avg_pool(p, &x.abs_max(), domains);
            Some(with(p.win.kh * p.win.kw, 1, &mag))
        }
        Op::Const(p) => Some(
            (0..domains)
                .flat_map(|_| {
                    p.f64
                        .iter()
                        .map(|v| ((rnd.dep_u + g64) * v.abs()).next_up())
                })
                .collect(),
        ),
    }
}

/// One backward step through `node` for coefficients `a` (`rows x out_n`).
pub fn backward(ctx: &BackCtx, node: &Node, a: Vec<f64>, alpha: Alpha) -> Back {
    if matches!(node.op, Op::Reshape) {
        let r = ctx.rows.len();
        return Back::Linear {
            inputs: vec![Some(a)],
            bias: vec![0.0; r],
            mag: vec![0.0; r],
        };
    }
    match step(ctx, node, &a, alpha) {
        Back::Concretize(_) => Back::Concretize(a),
        b => b,
    }
}

fn step(ctx: &BackCtx, node: &Node, a: &[f64], alpha: Alpha) -> Back {
    let g = ctx.g;
    let r = ctx.rows.len();
    let out_n = g.values[node.output].numel();
    debug_assert_eq!(a.len(), r * out_n);
    if let Some(b) = linear_step(g, node, a, r) {
        return b;
    }
    match &node.op {
        Op::Binary(b) => binary_back(ctx, node, b, a, r, out_n),
        Op::Relu | Op::LeakyRelu { .. } | Op::Elementwise(_) => {
            activation_back(ctx, node, a, r, out_n, alpha)
        }
        Op::MaxPool(_) => maxpool_back(ctx, node, a, r, out_n),
        // Exactly linear: handled by `linear_step` above.
        Op::Const(_)
        | Op::Linear(_)
        | Op::Conv(_)
        | Op::Affine(_)
        | Op::AveragePool(_)
        | Op::Reshape
        | Op::Select(_) => Back::Concretize(Vec::new()),
    }
}

/// The backward step of an operator that is exactly linear (needs no bounds): the transposed
/// map and its constant term. `None` for nonlinear operators.
pub fn linear_step(g: &Graph, node: &Node, a: &[f64], r: usize) -> Option<Back> {
    let out_n = g.values[node.output].numel();
    let zeros = || (vec![0.0; r], vec![0.0; r]);
    Some(match &node.op {
        Op::Linear(l) => linear_back(l, a, r, out_n),
        Op::Conv(c) => conv_back(c, a, r, out_n),
        Op::Affine(af) => {
            let (mut bias, mut mag) = zeros();
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
            Back::Linear {
                inputs: vec![Some(ain)],
                bias,
                mag,
            }
        }
        Op::Reshape => Back::Linear {
            inputs: vec![Some(a.to_vec())],
            bias: vec![0.0; r],
            mag: vec![0.0; r],
        },
        Op::Select(s) => {
            let sizes: Vec<usize> = node.inputs.iter().map(|&v| g.values[v].numel()).collect();
            let src = kernels::select_sources(&s.map, &sizes);
            let mut ins: Vec<Vec<f64>> = sizes.iter().map(|&n| vec![0.0; r * n]).collect();
            let (mut bias, mut mag) = zeros();
            for row in 0..r {
                for (i, s_) in src.iter().enumerate() {
                    let v = a[row * out_n + i];
                    match *s_ {
                        Some((j, e)) => ins[j][row * sizes[j] + e] += v,
                        None => {
                            bias[row] += v * s.fill;
                            mag[row] += (v * s.fill).abs();
                        }
                    }
                }
            }
            Back::Linear {
                inputs: ins.into_iter().map(Some).collect(),
                bias,
                mag,
            }
        }
        Op::Const(p) => {
            let (mut bias, mut mag) = zeros();
            for row in 0..r {
                for (j, &c) in p.f64.iter().enumerate() {
                    bias[row] += a[row * out_n + j] * c;
                    mag[row] += (a[row * out_n + j] * c).abs();
                }
            }
            Back::Linear {
                inputs: vec![],
                bias,
                mag,
            }
        }
        Op::Binary(b) if matches!(b.kind, BinaryKind::Add | BinaryKind::Sub) => {
            add_sub_back(g, node, b, a, r, out_n)
        }
        Op::AveragePool(p) => {
            let in_n = g.values[node.inputs[0]].numel();
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
            let (bias, mag) = zeros();
            Back::Linear {
                inputs: vec![Some(ain)],
                bias,
                mag,
            }
        }
        // Nonlinear: need bounds and a relaxation.
        Op::Binary(_) | Op::Relu | Op::LeakyRelu { .. } | Op::Elementwise(_) | Op::MaxPool(_) => {
            return None;
        }
    })
}

fn linear_back(l: &Linear, a: &[f64], r: usize, out_n: usize) -> Back {
    let ain = kernels::linear_t(l, &l.weight.f64, a, r);
    let mut bias = vec![0.0; r];
    let mut mag = vec![0.0; r];
    if let Some(b) = &l.bias {
        for row in 0..r {
            let (mut sb, mut sm) = (0.0, 0.0);
            let arow = &a[row * out_n..(row + 1) * out_n];
            if l.inner == 1 {
                for blk in arow.chunks_exact(l.p) {
                    for (&v, &bv) in blk.iter().zip(&b.f64) {
                        let t = v * bv;
                        sb += t;
                        sm += t.abs();
                    }
                }
            } else {
                for (i, &v) in arow.iter().enumerate() {
                    let t = v * b.f64[(i / l.inner) % l.p];
                    sb += t;
                    sm += t.abs();
                }
            }
            bias[row] = sb;
            mag[row] = sm;
        }
    }
    Back::Linear {
        inputs: vec![Some(ain)],
        bias,
        mag,
    }
}

fn conv_back(c: &Conv, a: &[f64], r: usize, out_n: usize) -> Back {
    let ohw = c.win.oh * c.win.ow;
    let ain = kernels::conv_t(c, &c.weight.f64, a, r);
    let mut bias = vec![0.0; r];
    let mut mag = vec![0.0; r];
    if let Some(b) = &c.bias {
        for row in 0..r {
            let (mut sb, mut sm) = (0.0, 0.0);
            for (i, blk) in a[row * out_n..(row + 1) * out_n]
                .chunks_exact(ohw)
                .enumerate()
            {
                let bv = b.f64[i % c.m];
                for &v in blk {
                    let t = v * bv;
                    sb += t;
                    sm += t.abs();
                }
            }
            bias[row] = sb;
            mag[row] = sm;
        }
    }
    Back::Linear {
        inputs: vec![Some(ain)],
        bias,
        mag,
    }
}

fn add_sub_back(
    g: &Graph,
    node: &Node,
    b: &crate::ir::Binary,
    a: &[f64],
    r: usize,
    out_n: usize,
) -> Back {
    let (na, nb) = (
        g.values[node.inputs[0]].numel(),
        g.values[node.inputs[1]].numel(),
    );
    let mut aa = vec![0.0; r * na];
    let mut ab = vec![0.0; r * nb];
    let idx = |map: Option<&[usize]>, i: usize| map.map_or(i, |m| m[i]);
    let (am, bm) = (b.a_map.as_deref(), b.b_map.as_deref());
    let sign = if b.kind == BinaryKind::Sub { -1.0 } else { 1.0 };
    for row in 0..r {
        for i in 0..out_n {
            let v = a[row * out_n + i];
            aa[row * na + idx(am, i)] += v;
            ab[row * nb + idx(bm, i)] += sign * v;
        }
    }
    Back::Linear {
        inputs: vec![Some(aa), Some(ab)],
        bias: vec![0.0; r],
        mag: vec![0.0; r],
    }
}

fn binary_back(
    ctx: &BackCtx,
    node: &Node,
    b: &crate::ir::Binary,
    a: &[f64],
    r: usize,
    out_n: usize,
) -> Back {
    let g = ctx.g;
    let (na, nb) = (
        g.values[node.inputs[0]].numel(),
        g.values[node.inputs[1]].numel(),
    );
    let mut aa = vec![0.0; r * na];
    let mut ab = vec![0.0; r * nb];
    let (mut bias, mut mag) = (vec![0.0; r], vec![0.0; r]);
    let idx = |map: Option<&[usize]>, i: usize| map.map_or(i, |m| m[i]);
    let (am, bm) = (b.a_map.as_deref(), b.b_map.as_deref());
    if b.kind != BinaryKind::Mul {
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

/// Lines of every element of an activation's input, per domain (adaptive lower slope);
/// `None` for an operator that is not an activation.
pub fn activation_lines(op: &Op, bounds: &Intervals, rnd: &Rounding) -> Option<Vec<Lines>> {
    let each = |f: &dyn Fn(f64, f64) -> Lines| -> Vec<Lines> {
        bounds
            .lo
            .iter()
            .zip(&bounds.hi)
            .map(|(&l, &u)| f(l, u))
            .collect()
    };
    Some(match op {
        Op::Relu => each(&|l, u| relax::relu(l, u, relax::adaptive_alpha(l, u))),
        Op::LeakyRelu { alpha } => each(&|l, u| {
            let beta = if u > -l { 1.0 } else { *alpha };
            relax::leaky_relu(l, u, *alpha, beta)
        }),
        Op::Elementwise(f) => each(&|l, u| crate::ops::elementwise::lines(f, l, u, rnd)),
        Op::Const(_)
        | Op::Linear(_)
        | Op::Conv(_)
        | Op::Affine(_)
        | Op::Binary(_)
        | Op::MaxPool(_)
        | Op::AveragePool(_)
        | Op::Reshape
        | Op::Select(_) => return None,
    })
}

fn activation_back(
    ctx: &BackCtx,
    node: &Node,
    a: &[f64],
    r: usize,
    n: usize,
    alpha: Alpha,
) -> Back {
    let xb = ctx.bound(node.inputs[0]);
    let Some(lines) = ctx.lines[node.output].as_deref() else {
        return Back::Concretize(Vec::new());
    };
    let relu_like = matches!(node.op, Op::Relu | Op::LeakyRelu { .. });
    let leak = if let Op::LeakyRelu { alpha } = node.op {
        alpha
    } else {
        0.0
    };
    let mut ain = vec![0.0; r * n];
    let (mut bias, mut mag) = (vec![0.0; r], vec![0.0; r]);
    for row in 0..r {
        let d = ctx.rows[row];
        let (arow, lrow) = (&a[row * n..(row + 1) * n], &lines[d * n..(d + 1) * n]);
        let out = &mut ain[row * n..(row + 1) * n];
        let (mut sb, mut sm) = (0.0, 0.0);
        match alpha {
            Some(al) if relu_like && leak <= 1.0 => {
                let (lo, hi) = (&xb.lo[d * n..(d + 1) * n], &xb.hi[d * n..(d + 1) * n]);
                let alr = &al[row * n..(row + 1) * n];
                for j in 0..n {
                    let v = arow[j];
                    let ln = &lrow[j];
                    // Optimised slope on the side through the origin (sound anywhere in range).
                    let (k, c) = if v < 0.0 {
                        (ln.ku, ln.bu)
                    } else if relax::unstable(lo[j], hi[j]) {
                        (alr[j].clamp(leak, 1.0), 0.0)
                    } else {
                        (ln.kl, ln.bl)
                    };
                    out[j] = v * k;
                    // 0 * inf (unbounded neuron, zero coefficient) contributes nothing.
                    let t = if v == 0.0 { 0.0 } else { v * c };
                    sb += t;
                    sm += t.abs();
                }
            }
            _ => {
                for j in 0..n {
                    let v = arow[j];
                    let ln = &lrow[j];
                    let (k, c) = if v >= 0.0 {
                        (ln.kl, ln.bl)
                    } else {
                        (ln.ku, ln.bu)
                    };
                    out[j] = v * k;
                    // 0 * inf (unbounded neuron, zero coefficient) contributes nothing.
                    let t = if v == 0.0 { 0.0 } else { v * c };
                    sb += t;
                    sm += t.abs();
                }
            }
        }
        bias[row] = sb;
        mag[row] = sm;
    }
    Back::Linear {
        inputs: vec![Some(ain)],
        bias,
        mag,
    }
}

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

fn maxpool_back(ctx: &BackCtx, node: &Node, a: &[f64], r: usize, out_n: usize) -> Back {
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

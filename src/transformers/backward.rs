//! Backward (CROWN/DeepPoly) linear bound transformers: the engine side. Each operator
//! family's own step lives with it in [`crate::ops`] ([`crate::ops::Family::linear_back`] and
//! [`crate::ops::Family::relaxed_back`]).
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
use crate::domain::{Intervals, LANES, Rounding, fold_lanes, gamma};
use crate::ir::{Graph, Node, Op, Rect, ValueId, Window};
use crate::ops::{At, Family};
use crate::with_family;

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
    pub(crate) fn bound(&self, v: usize) -> &Intervals {
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

/// Per row, a box of a value's plane outside which the row's coefficients are zero (`None`:
/// anywhere). Rows of intermediate bounds start one-hot and stay local through the first
/// layers of a CNN, so the steps along the way touch only their box (cifar_base_kw: a row of
/// the second convolution's bounds covers 128 of the 2,048 elements of the first ReLU).
pub type Support = Vec<Option<Rect>>;

/// Call `f` on each range of flat indices of a row of value `v` that may hold a nonzero under
/// `rect` (the whole row when there is no box or no plane), in increasing order.
#[inline]
pub fn for_runs(
    g: &Graph,
    v: ValueId,
    rect: Option<Rect>,
    mut f: impl FnMut(std::ops::Range<usize>),
) {
    let n = g.values[v].numel();
    match (rect, g.plane(v)) {
        (Some(r), Some(plane)) => r.runs(plane, n).for_each(f),
        _ => f(0..n),
    }
}

/// [`for_runs`] summing `(sum, magnitude)` pairs over the ranges: a sum of the row's terms in
/// another order, which the order-free error bound of every caller covers (the terms left
/// out are zero).
#[inline]
pub fn sum_runs(
    g: &Graph,
    v: ValueId,
    rect: Option<Rect>,
    mut f: impl FnMut(std::ops::Range<usize>) -> (f64, f64),
) -> (f64, f64) {
    let (mut s, mut m) = (0.0, 0.0);
    for_runs(g, v, rect, |rg| {
        let (a, b) = f(rg);
        s += a;
        m += b;
    });
    (s, m)
}

/// The box of each row of a value with `n` elements (`r` rows of `a`) holding its nonzeros,
/// found by scanning; `None` for a value without a plane.
pub fn scan_support(g: &Graph, v: ValueId, a: &[f64], r: usize) -> Support {
    let Some((h, w)) = g.plane(v) else {
        return vec![None; r];
    };
    let n = g.values[v].numel();
    (0..r)
        .map(|row| {
            let a = &a[row * n..(row + 1) * n];
            Some(crate::eval::kernels::support_rect(a, n / (h * w), h, w).unwrap_or_default())
        })
        .collect()
}

/// The rows' boxes of both supports together (`None` where either is).
pub fn union_support(a: &[Option<Rect>], b: &[Option<Rect>]) -> Support {
    a.iter()
        .zip(b)
        .map(|(x, y)| Some((*x)?.union((*y)?)))
        .collect()
}

/// [`crate::ops::Family::back_support`] of a family whose step maps each input element only
/// onto the output element at the same index: an input with the output's plane and size keeps
/// the boxes, any other gets `None`.
pub(crate) fn same_support(at: &At, out: &[Option<Rect>]) -> Vec<Support> {
    let (g, node) = (at.g, at.node);
    let plane = g.plane(node.output);
    node.inputs
        .iter()
        .map(|&i| {
            if plane.is_some() && g.plane(i) == plane && g.values[i].numel() == at.out_n() {
                out.to_vec()
            } else {
                vec![None; out.len()]
            }
        })
        .collect()
}

/// [`crate::ops::Family::back_support`] of a family that reads its input through `win`
/// (convolution, pooling): each output box maps to the input positions its windows read.
pub(crate) fn window_support(at: &At, win: &Window, out: &[Option<Rect>]) -> Vec<Support> {
    let (g, node) = (at.g, at.node);
    let fits = output_is_window(at, win) && g.plane(node.inputs[0]) == Some((win.h, win.w));
    let mut all = anywhere(at, out);
    if fits {
        all[0] = out.iter().map(|r| r.map(|r| win.input_rect(r))).collect();
    }
    all
}

/// Whether the node's output plane is the window's output map, so the rows' boxes of the
/// output (over [`Graph::plane`]) are boxes of the window's positions.
pub(crate) fn output_is_window(at: &At, win: &Window) -> bool {
    at.g.plane(at.node.output) == Some((win.oh, win.ow))
}

/// [`crate::ops::Family::back_support`] of a family that may spread a row anywhere.
pub(crate) fn anywhere(at: &At, out: &[Option<Rect>]) -> Vec<Support> {
    vec![vec![None; out.len()]; at.node.inputs.len()]
}

/// Lower slopes chosen per row and element for ReLU-like nodes (alpha-CROWN); `None` uses the
/// adaptive CROWN choice.
pub type Alpha<'a> = Option<&'a [f64]>;

/// Relative error of a length-`terms` f64 dot product (plus the few operations around it) in a
/// backward pass: `gamma(terms + 4)` for the f64 unit roundoff (Higham, Thm. 3.1).
pub(crate) fn f64_gamma(terms: usize) -> f64 {
    gamma(terms + 4, 1.1102230246251565e-16)
}

/// Error of every element with magnitude bound `mag`: the deployed arithmetic's
/// (`rnd.err(n, extra, m)` for an `n`-term sum with `extra` further roundings) plus our f64
/// backward products' (`f64_gamma(terms) m`), rounded up.
pub(crate) fn error_terms(
    rnd: &Rounding,
    terms: usize,
    n: usize,
    extra: u32,
    mag: &[f64],
) -> Vec<f64> {
    let g64 = f64_gamma(terms);
    mag.iter()
        .map(|&m| (rnd.err(n, extra, m) + g64 * m).next_up())
        .collect()
}

/// Error of an operator that is exact in the deployed network and whose backward step only
/// moves coefficients or multiplies them by slopes in [0, 1] (sums of at most `terms` of
/// them): twice our f64 products' relative error of the magnitudes `m`.
pub(crate) fn movement_error(m: &[f64], terms: usize) -> Vec<f64> {
    let g64 = f64_gamma(terms);
    m.iter().map(|v| (g64 * v * 2.0).next_up()).collect()
}

/// [`movement_error`] of a node's own output magnitudes (`None` before its bounds exist): the
/// term of every family that only copies or selects values (max pooling, data movement).
pub(crate) fn own_movement_error(
    at: &At,
    bounds: &[Option<Intervals>],
    terms: usize,
) -> Option<Vec<f64>> {
    let own = bounds[at.node.output].as_ref()?;
    Some(movement_error(&own.abs_max(), terms))
}

/// Rounding error bound of every element of a node's output, batched over domains, covering
/// the deployed arithmetic and the f64 arithmetic of a backward pass through the node
/// (each family's [`crate::ops::Family::backward_error`]). `terms` bounds the length of any
/// dot product a backward pass computes.
pub fn node_error(
    g: &Graph,
    node: &Node,
    bounds: &[Option<Intervals>],
    domains: usize,
    rnd: &Rounding,
    terms: usize,
) -> Option<Vec<f64>> {
    let at = At {
        g,
        node,
        batch: domains,
    };
    with_family!(&node.op, f => f.backward_error(&at, bounds, rnd, terms))
}

/// One backward step through `node` for coefficients `a` (`rows x out_n`) supported in
/// `support` (one box per row, see [`Support`]).
pub fn backward(
    ctx: &BackCtx,
    node: &Node,
    a: Vec<f64>,
    alpha: Alpha,
    support: &[Option<Rect>],
) -> Back {
    // A view: hand the coefficients through without copying them.
    if matches!(node.op, Op::Reshape) {
        let r = ctx.rows.len();
        return Back::Linear {
            inputs: vec![Some(a)],
            bias: vec![0.0; r],
            mag: vec![0.0; r],
        };
    }
    match step(ctx, node, &a, alpha, support) {
        Back::Concretize(_) => Back::Concretize(a),
        b => b,
    }
}

fn step(ctx: &BackCtx, node: &Node, a: &[f64], alpha: Alpha, support: &[Option<Rect>]) -> Back {
    let at = At {
        g: ctx.g,
        node,
        batch: ctx.rows.len(),
    };
    debug_assert_eq!(a.len(), at.batch * at.out_n());
    with_family!(&node.op, f => match f.linear_back(&at, a, support) {
        Some(b) => b,
        None => f.relaxed_back(ctx, node, a, alpha, support),
    })
}

/// The backward step through relaxation lines (ReLU-like kinks and elementwise functions):
/// the lower line where a coefficient is positive, the upper where negative. `kink` is the
/// leak of a ReLU-like node, whose lower line through the origin alpha-CROWN may choose (any
/// slope in `[leak, 1]` is sound for an unstable neuron). Only each row's `support` is
/// visited: elsewhere its coefficients, and so its terms and outgoing coefficients, are zero.
pub(crate) fn lines_back(
    ctx: &BackCtx,
    node: &Node,
    a: &[f64],
    alpha: Alpha,
    kink: Option<f64>,
    support: &[Option<Rect>],
) -> Back {
    let r = ctx.rows.len();
    let n = ctx.g.values[node.output].numel();
    let xb = ctx.bound(node.inputs[0]);
    let Some(lines) = ctx.lines[node.output].as_deref() else {
        return Back::Concretize(Vec::new());
    };
    let leak = kink.unwrap_or(0.0);
    let optimised = kink.is_some_and(|k| k <= 1.0);
    let mut ain = vec![0.0; r * n];
    let (mut bias, mut mag) = (vec![0.0; r], vec![0.0; r]);
    for row in 0..r {
        let d = ctx.rows[row];
        let (arow, lrow) = (&a[row * n..(row + 1) * n], &lines[d * n..(d + 1) * n]);
        let out = &mut ain[row * n..(row + 1) * n];
        let rect = support.get(row).copied().flatten();
        let (sb, sm) = sum_runs(ctx.g, node.output, rect, |rg| {
            let (ar, lr, o) = (&arow[rg.clone()], &lrow[rg.clone()], &mut out[rg.clone()]);
            match alpha {
                Some(al) if optimised => {
                    let (lo, hi) = (&xb.lo[d * n..(d + 1) * n], &xb.hi[d * n..(d + 1) * n]);
                    let (lo, hi) = (&lo[rg.clone()], &hi[rg.clone()]);
                    let alr = &al[row * n..(row + 1) * n][rg.clone()];
                    line_row(ar, lr, o, |j, v, ln| {
                        // Optimised slope on the side through the origin (sound anywhere in
                        // range).
                        if v < 0.0 {
                            (ln.ku, ln.bu)
                        } else if relax::unstable(lo[j], hi[j]) {
                            (alr[j].clamp(leak, 1.0), 0.0)
                        } else {
                            (ln.kl, ln.bl)
                        }
                    })
                }
                _ => line_row(ar, lr, o, |_, v, ln| {
                    if v >= 0.0 {
                        (ln.kl, ln.bl)
                    } else {
                        (ln.ku, ln.bu)
                    }
                }),
            }
        });
        bias[row] = sb;
        mag[row] = sm;
    }
    Back::Linear {
        inputs: vec![Some(ain)],
        bias,
        mag,
    }
}

/// One row through relaxation lines: `out_j = a_j k_j` and the sum and magnitude of the
/// terms `a_j c_j`, where `line(j, a_j, lines_j)` picks the line `(k_j, c_j)`; in the
/// [`LANES`] partial sums of [`crate::domain::sum_mag`] (sound in any order, same argument).
#[inline(always)]
fn line_row(
    a: &[f64],
    lines: &[Lines],
    out: &mut [f64],
    line: impl Fn(usize, f64, &Lines) -> (f64, f64),
) -> (f64, f64) {
    let step = |j: usize, v: f64, ln: &Lines, o: &mut f64| {
        let (k, c) = line(j, v, ln);
        *o = v * k;
        // 0 * inf (unbounded neuron, zero coefficient) contributes nothing.
        if v == 0.0 { 0.0 } else { v * c }
    };
    let n = a.len().min(lines.len()).min(out.len());
    let (ac, ar) = a[..n].as_chunks::<LANES>();
    let (lc, lr) = lines[..n].as_chunks::<LANES>();
    let (oc, or) = out[..n].as_chunks_mut::<LANES>();
    let mut s = [0.0f64; LANES];
    let mut m = [0.0f64; LANES];
    for (c, ((a8, l8), o8)) in ac.iter().zip(lc).zip(oc).enumerate() {
        for k in 0..LANES {
            let t = step(c * LANES + k, a8[k], &l8[k], &mut o8[k]);
            s[k] += t;
            m[k] += t.abs();
        }
    }
    let base = n - ar.len();
    let tail = ar
        .iter()
        .zip(lr)
        .zip(or.iter_mut())
        .enumerate()
        .map(|(i, ((&v, ln), o))| step(base + i, v, ln, o));
    fold_lanes(s, m, tail)
}

pub use crate::ops::pool::PoolRelax;

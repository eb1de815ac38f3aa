//! Graph simplification for analysis.
//!
//! [`simplify`] folds elementwise affine maps (Sub/Div normalisation, BatchNormalization, bias
//! Adds, Neg) into the neighbouring Linear or Conv, merges consecutive affine maps and
//! consecutive views. Each fold is exact in real arithmetic; what it changes is rounding, and
//! the [`FpModel`] of the merged operator is updated so that its error term still covers the
//! deployed network, which performs every original step in its own precision:
//!
//! * `Affine(k1, O1)` then `Affine(k2, O2)`: the composed error is at most
//!   `gamma(k1 + k2) * (|s1 s2| |x| + |s2| O1 + O2)` because
//!   `gamma(a) + gamma(b) + gamma(a) gamma(b) <= gamma(a + b)` (Higham, Lemma 3.3).
//! * `Affine(kA, OA)` then `Linear(W, kL, OL)`: with `W' = W diag(s)`, the error is at most
//!   `gamma(K + kL + kA) * (sum_k |W'_pk| |x_k| + sum_k |W_pk| OA_k + OL_p)`.
//! * `Linear` then `Affine(s, t)`: `W' = diag(s) W`, offset `|s_p| OL_p + OA_p`, roundings
//!   `kL + kA`.
//!
//! Every offset also bounds the magnitude of the folded bias, which the derivations need.

use super::{Affine, Conv, FpModel, Graph, Linear, Node, Op, Param};
use crate::tensor::numel;

/// Drop nodes the output does not depend on, and values no node uses.
pub fn prune_dead(g: Graph) -> Graph {
    let mut live = vec![false; g.values.len()];
    live[g.output] = true;
    let mut keep = vec![false; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate().rev() {
        if live[n.output] {
            keep[i] = true;
            for &v in &n.inputs {
                live[v] = true;
            }
        }
    }
    live[g.input] = true;
    let mut remap = vec![usize::MAX; g.values.len()];
    let mut values = Vec::new();
    for (i, v) in g.values.into_iter().enumerate() {
        if live[i] {
            remap[i] = values.len();
            values.push(v);
        }
    }
    let nodes = g
        .nodes
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(mut n, _)| {
            n.inputs.iter_mut().for_each(|v| *v = remap[*v]);
            n.output = remap[n.output];
            n
        })
        .collect();
    Graph {
        values,
        nodes,
        input: remap[g.input],
        output: remap[g.output],
        dtype: g.dtype,
    }
}

/// Fold affine maps and views for analysis (see the module documentation).
pub fn simplify(mut g: Graph) -> Graph {
    loop {
        let consumers = g.consumers();
        let producer = producers(&g);
        let mut changed = false;
        for j in 0..g.nodes.len() {
            // Try to fuse node j with the unique producer of its (single) input.
            let Some(&v) = g.nodes[j].inputs.first() else {
                continue;
            };
            if g.nodes[j].inputs.len() != 1 || v == g.output || consumers[v].len() != 1 {
                continue;
            }
            let Some(i) = producer[v] else { continue };
            if try_fuse(&mut g, i, j) {
                changed = true;
                break;
            }
        }
        if !changed {
            break;
        }
    }
    prune_dead(g)
}

fn producers(g: &Graph) -> Vec<Option<usize>> {
    let mut p = vec![None; g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        p[n.output] = Some(i);
    }
    p
}

fn source(a: &Node, b: &Node) -> String {
    format!("{}+{}", a.source_op, b.source_op)
}

/// What an operator is to the fusion pass.
enum FoldRole<'a> {
    Affine(&'a Affine),
    Linear(&'a Linear),
    Conv(&'a Conv),
    /// A view (Reshape): commutes with elementwise affine maps.
    View,
    /// Kept as it is.
    Kept,
}

fn fold_role(op: &Op) -> FoldRole<'_> {
    match op {
        Op::Affine(a) => FoldRole::Affine(a),
        Op::Linear(l) => FoldRole::Linear(l),
        Op::Conv(c) => FoldRole::Conv(c),
        Op::Reshape => FoldRole::View,
        Op::Const(_)
        | Op::Binary(_)
        | Op::Relu
        | Op::LeakyRelu { .. }
        | Op::Elementwise(_)
        | Op::MaxPool(_)
        | Op::AveragePool(_)
        | Op::Select(_) => FoldRole::Kept,
    }
}

/// Fuse producer `i` into consumer `j` (whose only input is `i`'s output, read by `j` alone).
fn try_fuse(g: &mut Graph, i: usize, j: usize) -> bool {
    let (first, second) = (&g.nodes[i], &g.nodes[j]);
    // The fused node reads the producer's input and writes the consumer's output.
    use FoldRole as R;
    let fused: Option<Op> = match (fold_role(&first.op), fold_role(&second.op)) {
        (R::Affine(a), R::Affine(b)) => Some(Op::Affine(compose_affine(a, b))),
        (R::Affine(a), R::Linear(l)) => affine_into_linear(a, l).map(Op::Linear),
        (R::Linear(l), R::Affine(a)) => linear_then_affine(l, a).map(Op::Linear),
        (R::Affine(a), R::Conv(c)) => affine_into_conv(a, c).map(Op::Conv),
        (R::Conv(c), R::Affine(a)) => conv_then_affine(c, a).map(Op::Conv),
        (R::View, R::View) => Some(Op::Reshape),
        (R::Affine(_), R::View) => {
            // Commute the affine map past the view so it can meet a Linear/Conv. Only worth it
            // when the view feeds something it can fold into.
            let out_shape = g.values[second.output].shape.clone();
            let consumers = g.consumers();
            let feeds_fold = consumers[second.output].len() == 1
                && matches!(
                    g.nodes[consumers[second.output][0]].op,
                    Op::Linear(_) | Op::Conv(_) | Op::Affine(_) | Op::Reshape
                )
                && second.output != g.output;
            if !feeds_fold {
                return false;
            }
            let Op::Affine(a) = &first.op else {
                return false;
            };
            let mut a2 = a.clone();
            a2.scale.shape = out_shape.clone();
            a2.shift.shape = out_shape.clone();
            let (x, mid, out) = (first.inputs[0], first.output, second.output);
            g.values[mid].shape = out_shape;
            let view = Node {
                name: second.name.clone(),
                source_op: second.source_op.clone(),
                op: Op::Reshape,
                inputs: vec![x],
                output: mid,
            };
            let aff = Node {
                name: first.name.clone(),
                source_op: first.source_op.clone(),
                op: Op::Affine(a2),
                inputs: vec![mid],
                output: out,
            };
            g.nodes[i] = view;
            g.nodes[j] = aff;
            return true;
        }
        // Every other pair of roles stays as it is: not fusing is always sound (no analysis
        // treats an operator by what its neighbour is). Each operator's role is decided by
        // the exhaustive `fold_role`.
        (R::Affine(_) | R::Linear(_) | R::Conv(_) | R::View | R::Kept, _) => None,
    };
    let Some(op) = fused else {
        return false;
    };
    let name = if matches!(first.op, Op::Affine(_)) && !matches!(second.op, Op::Affine(_)) {
        second.name.clone()
    } else {
        first.name.clone()
    };
    let node = Node {
        name,
        source_op: source(first, second),
        op,
        inputs: first.inputs.clone(),
        output: second.output,
    };
    // The fused node takes the consumer's slot (all of its readers come later); the producer
    // goes, and its output value is dropped by the final pruning.
    g.nodes[j] = node;
    g.nodes.remove(i);
    true
}

fn compose_affine(a: &Affine, b: &Affine) -> Affine {
    let n = a.scale.len();
    let mut scale = vec![0.0; n];
    let mut shift = vec![0.0; n];
    let mut offset = vec![0.0; n];
    for e in 0..n {
        let (s1, t1, s2, t2) = (
            a.scale.f64[e],
            a.shift.f64[e],
            b.scale.f64[e],
            b.shift.f64[e],
        );
        scale[e] = s1 * s2;
        shift[e] = t1 * s2 + t2;
        offset[e] = s2.abs() * a.fp.offset[e] + b.fp.offset[e];
    }
    // A relative map followed by a pure scaling keeps every intermediate proportional to the
    // result, so the composition stays relative.
    let relative = a.fp.relative && b.fp.relative && b.shift.f64.iter().all(|&t| t == 0.0);
    Affine {
        scale: Param::from_f64(b.scale.shape.clone(), scale),
        shift: Param::from_f64(b.shift.shape.clone(), shift),
        fp: FpModel {
            extra_roundings: a.fp.extra_roundings + b.fp.extra_roundings,
            offset,
            relative,
            ..Default::default()
        },
    }
}

/// Per-`k` values of an elementwise tensor viewed as `[outer, k, inner]`, if it is constant
/// along `outer` and `inner`.
fn per_axis(v: &[f64], outer: usize, k: usize, inner: usize) -> Option<Vec<f64>> {
    let per: Vec<f64> = (0..k).map(|kk| v[kk * inner]).collect();
    for o in 0..outer {
        for kk in 0..k {
            for i in 0..inner {
                if v[(o * k + kk) * inner + i] != per[kk] {
                    return None;
                }
            }
        }
    }
    Some(per)
}

/// `Some` when every fused weight is finite: a product that overflowed leaves the layers
/// unfused (the backward kernels skip zero coefficients, which is exact for finite weights).
fn finite(w: &[f64]) -> Option<()> {
    w.iter().all(|v| v.is_finite()).then_some(())
}

fn rebuild_linear(l: &Linear, w: Vec<f64>, bias: Option<Vec<f64>>, fp: FpModel) -> Linear {
    Linear {
        weight_abs: w.iter().map(|v| v.abs()).collect(),
        weight: Param::from_f64(l.weight.shape.clone(), w),
        bias: bias.map(|b| Param::from_f64(vec![l.p], b)),
        fp,
        // New weights: their transposes are built from them, not copied.
        transposed: Default::default(),
        ..l.clone()
    }
}

fn affine_into_linear(a: &Affine, l: &Linear) -> Option<Linear> {
    let s = per_axis(&a.scale.f64, l.outer, l.k, l.inner)?;
    let t = per_axis(&a.shift.f64, l.outer, l.k, l.inner)?;
    let o = per_axis(&a.fp.offset, l.outer, l.k, l.inner)?;
    let (p, k) = (l.p, l.k);
    let w0 = &l.weight.f64;
    let mut w = vec![0.0; p * k];
    let mut bias: Vec<f64> = l.bias.as_ref().map_or(vec![0.0; p], |b| b.f64.clone());
    let mut offset = l.fp.offset.clone();
    // A relative map: the deployed layer multiplies v_k = s_k (x_k + t_k / s_k), so the
    // magnitude term is exactly sum |W'_pk| |x_k + shift_k|.
    if l.fp.input_shift.is_some() {
        // A second folded map would need a magnitude model of the composition; keep it apart.
        return None;
    }
    let relative = a.fp.relative;
    let shift: Vec<f64> = (0..k)
        .map(|kk| if s[kk] != 0.0 { t[kk] / s[kk] } else { 0.0 })
        .collect();
    for pp in 0..p {
        for kk in 0..k {
            let wv = w0[pp * k + kk];
            w[pp * k + kk] = wv * s[kk];
            bias[pp] += wv * t[kk];
            offset[pp] += if !relative {
                wv.abs() * o[kk]
            } else if s[kk] == 0.0 {
                (wv * t[kk]).abs()
            } else {
                0.0
            };
        }
    }
    let has_bias = l.bias.is_some() || t.iter().any(|&v| v != 0.0);
    finite(&w)?;
    Some(rebuild_linear(
        l,
        w,
        has_bias.then_some(bias),
        FpModel {
            extra_roundings: l.fp.extra_roundings + a.fp.extra_roundings,
            offset,
            input_shift: relative.then_some(shift),
            ..Default::default()
        },
    ))
}

fn linear_then_affine(l: &Linear, a: &Affine) -> Option<Linear> {
    // Output viewed as [outer, p, inner].
    let s = per_axis(&a.scale.f64, l.outer, l.p, l.inner)?;
    let t = per_axis(&a.shift.f64, l.outer, l.p, l.inner)?;
    let o = per_axis(&a.fp.offset, l.outer, l.p, l.inner)?;
    let (p, k) = (l.p, l.k);
    let mut w = l.weight.f64.clone();
    let mut bias = vec![0.0; p];
    let mut offset = vec![0.0; p];
    for pp in 0..p {
        for kk in 0..k {
            w[pp * k + kk] *= s[pp];
        }
        let b0 = l.bias.as_ref().map_or(0.0, |b| b.f64[pp]);
        bias[pp] = b0 * s[pp] + t[pp];
        offset[pp] = s[pp].abs() * l.fp.offset[pp] + o[pp];
    }
    let has_bias = l.bias.is_some() || t.iter().any(|&v| v != 0.0);
    finite(&w)?;
    Some(rebuild_linear(
        l,
        w,
        has_bias.then_some(bias),
        FpModel {
            extra_roundings: l.fp.extra_roundings + a.fp.extra_roundings,
            offset,
            input_shift: l.fp.input_shift.clone(),
            ..Default::default()
        },
    ))
}

/// True when no window of the convolution reads a padded position.
fn conv_reads_padding(c: &Conv) -> bool {
    let w = &c.win;
    w.ph > 0
        || w.pw > 0
        || (w.oh - 1) * w.sh + (w.kh - 1) * w.dh >= w.h
        || (w.ow - 1) * w.sw + (w.kw - 1) * w.dw >= w.w
}

fn rebuild_conv(c: &Conv, w: Vec<f64>, bias: Option<Vec<f64>>, fp: FpModel) -> Conv {
    Conv {
        weight_abs: w.iter().map(|v| v.abs()).collect(),
        weight: Param::from_f64(c.weight.shape.clone(), w),
        bias: bias.map(|b| Param::from_f64(vec![c.m], b)),
        fp,
        // New weights: the dense matrix is rebuilt from them, not copied.
        dense: Default::default(),
        ..c.clone()
    }
}

fn affine_into_conv(a: &Affine, c: &Conv) -> Option<Conv> {
    let wn = &c.win;
    let (n, ch, hw) = (wn.n, wn.c, wn.h * wn.w);
    let s = per_axis(&a.scale.f64, n, ch, hw)?;
    let t = per_axis(&a.shift.f64, n, ch, hw)?;
    let o = per_axis(&a.fp.offset, n, ch, hw)?;
    // A shift is exact only if every tap reads a real (shifted) input, never padding.
    if t.iter().any(|&v| v != 0.0) && conv_reads_padding(c) {
        return None;
    }
    let cg = ch / c.group;
    let mg = c.m / c.group;
    let kk = wn.kh * wn.kw;
    let per_m = cg * kk;
    let mut w = c.weight.f64.clone();
    let mut bias: Vec<f64> = c.bias.as_ref().map_or(vec![0.0; c.m], |b| b.f64.clone());
    let mut offset = c.fp.offset.clone();
    // See affine_into_linear; with padding a shift never reaches here (checked above), and a
    // zero scale makes the channel constant.
    if c.fp.input_shift.is_some() {
        return None;
    }
    let relative = a.fp.relative;
    let shift: Vec<f64> = (0..ch)
        .map(|q| if s[q] != 0.0 { t[q] / s[q] } else { 0.0 })
        .collect();
    for m in 0..c.m {
        let g = m / mg;
        for ci in 0..cg {
            let chn = g * cg + ci;
            for q in 0..kk {
                let idx = m * per_m + ci * kk + q;
                let wv = w[idx];
                bias[m] += wv * t[chn];
                offset[m] += if !relative {
                    wv.abs() * o[chn]
                } else if s[chn] == 0.0 {
                    (wv * t[chn]).abs()
                } else {
                    0.0
                };
                w[idx] = wv * s[chn];
            }
        }
    }
    let has_bias = c.bias.is_some() || t.iter().any(|&v| v != 0.0);
    Some(rebuild_conv(
        c,
        w,
        has_bias.then_some(bias),
        FpModel {
            extra_roundings: c.fp.extra_roundings + a.fp.extra_roundings,
            offset,
            input_shift: relative.then_some(shift),
            ..Default::default()
        },
    ))
}

fn conv_then_affine(c: &Conv, a: &Affine) -> Option<Conv> {
    let wn = &c.win;
    let hw = wn.oh * wn.ow;
    let s = per_axis(&a.scale.f64, wn.n, c.m, hw)?;
    let t = per_axis(&a.shift.f64, wn.n, c.m, hw)?;
    let o = per_axis(&a.fp.offset, wn.n, c.m, hw)?;
    let per_m = numel(&c.weight.shape[1..]);
    let mut w = c.weight.f64.clone();
    let mut bias = vec![0.0; c.m];
    let mut offset = vec![0.0; c.m];
    for m in 0..c.m {
        for v in &mut w[m * per_m..(m + 1) * per_m] {
            *v *= s[m];
        }
        bias[m] = c.bias.as_ref().map_or(0.0, |b| b.f64[m]) * s[m] + t[m];
        offset[m] = s[m].abs() * c.fp.offset[m] + o[m];
    }
    let has_bias = c.bias.is_some() || t.iter().any(|&v| v != 0.0);
    Some(rebuild_conv(
        c,
        w,
        has_bias.then_some(bias),
        FpModel {
            extra_roundings: c.fp.extra_roundings + a.fp.extra_roundings,
            offset,
            input_shift: c.fp.input_shift.clone(),
            ..Default::default()
        },
    ))
}

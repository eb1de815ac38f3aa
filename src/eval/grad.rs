//! Reverse mode of the concrete network: vector-Jacobian products batched over samples, in
//! f32 or f64, one arm per IR operator family (no wildcard: a new operator does not compile
//! until it has a gradient here). Linear maps use their transposed matrix products; nonlinear
//! operators use the derivative at the forward value (a subgradient at kinks: ReLU's is 0 at
//! 0, MaxPool's goes to the first maximal tap).
//!
//! PGD (verification), the trigger search and the patch attack of the backdoor scan all take
//! their gradients from [`input_gradient`].

use super::{Scalar, kernels};
use crate::ir::{BinaryKind, Graph, Node, Op, ValueId};

/// Gradient with respect to the network input of `sum_s gv[s] . v(x_s)` for the value `v`,
/// given the forward values of every node for the batch (from [`super::forward_values`]).
pub fn input_gradient<T: Scalar>(
    g: &Graph,
    vals: &[Option<Vec<T>>],
    v: ValueId,
    gv: Vec<T>,
    batch: usize,
) -> Vec<T> {
    let mut grads: Vec<Option<Vec<T>>> = vec![None; g.values.len()];
    grads[v] = Some(gv);
    let last = g
        .nodes
        .iter()
        .position(|n| n.output == v)
        .map_or(0, |l| l + 1);
    for node in g.nodes[..last].iter().rev() {
        let Some(go) = grads[node.output].take() else {
            continue;
        };
        let ins = node_vjp(g, node, vals, go, batch);
        for (&iv, gi) in node.inputs.iter().zip(ins) {
            let Some(gi) = gi else { continue };
            match &mut grads[iv] {
                Some(acc) => acc.iter_mut().zip(&gi).for_each(|(a, &b)| *a += b),
                slot => *slot = Some(gi),
            }
        }
    }
    grads[g.input]
        .take()
        .unwrap_or_else(|| vec![T::ZERO; batch * g.input_numel()])
}

/// Gradients of one node's inputs from its output gradient `go` (`[batch, out_n]`); `None`
/// for an input that receives none.
pub fn node_vjp<T: Scalar>(
    g: &Graph,
    node: &Node,
    vals: &[Option<Vec<T>>],
    go: Vec<T>,
    batch: usize,
) -> Vec<Option<Vec<T>>> {
    let input = |i: usize| vals[node.inputs[i]].as_deref().unwrap_or(&[]);
    let in_n = |i: usize| g.values[node.inputs[i]].numel();
    let out_n = g.values[node.output].numel();
    match &node.op {
        Op::Const(_) => vec![],
        Op::Linear(l) => vec![Some(kernels::linear_t(l, T::param(&l.weight), &go, batch))],
        Op::Conv(c) => vec![Some(kernels::conv_t(c, T::param(&c.weight), &go, batch))],
        Op::Affine(a) => {
            let s = T::param(&a.scale);
            let n = s.len().max(1);
            let mut gi = go;
            for row in gi.chunks_exact_mut(n) {
                row.iter_mut().zip(s).for_each(|(d, &k)| *d = *d * k);
            }
            vec![Some(gi)]
        }
        Op::Binary(b) => {
            let (na, nb) = (in_n(0), in_n(1));
            let (xa, xb) = (input(0), input(1));
            let mut ga = vec![T::ZERO; batch * na];
            let mut gb = vec![T::ZERO; batch * nb];
            let (am, bm) = (b.a_map.as_deref(), b.b_map.as_deref());
            let idx = |m: Option<&[usize]>, i: usize| m.map_or(i, |m| m[i]);
            for s in 0..batch {
                for i in 0..out_n {
                    let (ia, ib) = (s * na + idx(am, i), s * nb + idx(bm, i));
                    let d = go[s * out_n + i];
                    match b.kind {
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
        Op::Relu => vec![Some(leaky(go, input(0), T::ZERO))],
        Op::LeakyRelu { alpha } => vec![Some(leaky(go, input(0), T::from_f64(*alpha)))],
        Op::Elementwise(f) => {
            let x = input(0);
            vec![Some(
                go.iter()
                    .zip(x)
                    .map(|(&d, &v)| d * T::from_f64(f.derivative(v.to_f64())))
                    .collect(),
            )]
        }
        Op::MaxPool(p) => {
            let x = input(0);
            let mut gi = vec![T::ZERO; batch * in_n(0)];
            // Window taps index the whole batch; output positions run over it in order.
            kernels::for_each_window(&p.win, batch * p.win.n, |o, taps, _| {
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
        Op::AveragePool(p) => {
            let mut gi = vec![T::ZERO; batch * in_n(0)];
            kernels::for_each_window(&p.win, batch * p.win.n, |o, taps, full| {
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
        Op::Reshape => vec![Some(go)],
        Op::Select(s) => {
            let sizes: Vec<usize> = node.inputs.iter().map(|&v| g.values[v].numel()).collect();
            let src = kernels::select_sources(&s.map, &sizes);
            let mut ins: Vec<Vec<T>> = sizes.iter().map(|&n| vec![T::ZERO; batch * n]).collect();
            for b in 0..batch {
                for (i, s_) in src.iter().enumerate() {
                    if let Some((j, e)) = *s_ {
                        ins[j][b * sizes[j] + e] += go[b * out_n + i];
                    }
                }
            }
            ins.into_iter().map(Some).collect()
        }
    }
}

/// `go` where the activation input is positive, `go * leak` elsewhere.
fn leaky<T: Scalar>(mut go: Vec<T>, x: &[T], leak: T) -> Vec<T> {
    // A select, not a branch, so the loop vectorises.
    for (d, &v) in go.iter_mut().zip(x) {
        let k = if v > T::ZERO { T::ONE } else { leak };
        *d = *d * k;
    }
    go
}

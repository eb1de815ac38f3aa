//! Reverse-mode gradients (vector-Jacobian products), one per IR operator family, batched over
//! samples. Linear operators share the transposed maps of the CROWN backward transformer;
//! nonlinear ones use their derivative at the forward value (a subgradient at kinks).

use super::backward::{Back, linear_step};
use crate::eval::kernels;
use crate::ir::{BinaryKind, Graph, Op, ValueId};

/// Gradient with respect to the network input of `sum_s gv[s] . v(x_s)` for the value `v`,
/// given the forward values of every node for the batch (from
/// [`crate::eval::forward_values`] in f64).
pub fn input_gradient(
    g: &Graph,
    vals: &[Option<Vec<f64>>],
    v: ValueId,
    gv: Vec<f64>,
    batch: usize,
) -> Vec<f64> {
    let mut grads: Vec<Option<Vec<f64>>> = vec![None; g.values.len()];
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
        let out_n = g.values[node.output].numel();
        let input = |i: usize| vals[node.inputs[i]].as_deref().unwrap_or(&[]);
        let ins: Vec<Option<Vec<f64>>> = match linear_step(g, node, &go, batch) {
            Some(Back::Linear { inputs, .. }) => inputs,
            _ => match &node.op {
                Op::Relu | Op::LeakyRelu { .. } => {
                    let leak = if let Op::LeakyRelu { alpha } = node.op {
                        alpha
                    } else {
                        0.0
                    };
                    let x = input(0);
                    vec![Some(
                        go.iter()
                            .zip(x)
                            .map(|(&d, &xv)| if xv > 0.0 { d } else { d * leak })
                            .collect(),
                    )]
                }
                Op::Sigmoid => {
                    let y = vals[node.output].as_deref().unwrap_or(&[]);
                    vec![Some(
                        go.iter().zip(y).map(|(&d, &s)| d * s * (1.0 - s)).collect(),
                    )]
                }
                Op::Tanh => {
                    let y = vals[node.output].as_deref().unwrap_or(&[]);
                    vec![Some(
                        go.iter().zip(y).map(|(&d, &t)| d * (1.0 - t * t)).collect(),
                    )]
                }
                Op::MaxPool(p) => {
                    let x = input(0);
                    let in_n = g.values[node.inputs[0]].numel();
                    let mut gi = vec![0.0; batch * in_n];
                    for s in 0..batch {
                        let xs = &x[s * in_n..(s + 1) * in_n];
                        kernels::for_each_window(&p.win, p.win.n, |o, taps, _| {
                            if let Some(&t) = taps.iter().max_by(|&&a, &&b| xs[a].total_cmp(&xs[b]))
                            {
                                gi[s * in_n + t] += go[s * out_n + o];
                            }
                        });
                    }
                    vec![Some(gi)]
                }
                Op::Binary(b) => {
                    let (na, nb) = (
                        g.values[node.inputs[0]].numel(),
                        g.values[node.inputs[1]].numel(),
                    );
                    let (xa, xb) = (input(0), input(1));
                    let mut ga = vec![0.0; batch * na];
                    let mut gb = vec![0.0; batch * nb];
                    let (am, bm) = (b.a_map.as_deref(), b.b_map.as_deref());
                    let idx = |m: Option<&[usize]>, i: usize| m.map_or(i, |m| m[i]);
                    for s in 0..batch {
                        for i in 0..out_n {
                            let (ia, ib) = (s * na + idx(am, i), s * nb + idx(bm, i));
                            let d = go[s * out_n + i];
                            let (va, vb) = (xa[ia], xb[ib]);
                            match b.kind {
                                BinaryKind::Mul => {
                                    ga[ia] += d * vb;
                                    gb[ib] += d * va;
                                }
                                BinaryKind::Div => {
                                    ga[ia] += d / vb;
                                    gb[ib] -= d * va / (vb * vb);
                                }
                                _ => {}
                            }
                        }
                    }
                    vec![Some(ga), Some(gb)]
                }
                _ => vec![],
            },
        };
        for (&iv, gi) in node.inputs.iter().zip(ins) {
            let Some(gi) = gi else { continue };
            match &mut grads[iv] {
                Some(acc) => acc.iter_mut().zip(&gi).for_each(|(a, b)| *a += b),
                slot => *slot = Some(gi),
            }
        }
    }
    grads[g.input]
        .take()
        .unwrap_or_else(|| vec![0.0; batch * g.input_numel()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval;
    use crate::onnx::build::{ModelBuilder, attr_int};

    /// The analytic gradient matches central finite differences on a small network.
    #[test]
    fn gradient_matches_finite_differences() {
        let mut b = ModelBuilder::new(&[1, 3], 13);
        let w = b.init(
            &[4, 3],
            &[
                0.5, -1.0, 0.25, 1.5, 0.3, -0.7, -0.2, 0.9, 1.1, 0.4, 0.4, -0.4,
            ],
        );
        let h = b.node("Gemm", &["input", &w], vec![attr_int("transB", 1)]);
        let t = b.node("Tanh", &[&h], vec![]);
        let s = b.node("Sigmoid", &[&h], vec![]);
        let m = b.node("Mul", &[&t, &s], vec![]);
        let r = b.node("Relu", &[&m], vec![]);
        let w2 = b.init(&[2, 4], &[1.0, -2.0, 0.5, 1.0, 0.3, 0.3, -1.0, 2.0]);
        let y = b.node("Gemm", &[&r, &w2], vec![attr_int("transB", 1)]);
        let g = crate::onnx::import(&b.finish(&y), std::path::Path::new(".")).unwrap();
        let x = vec![0.3, -0.8, 0.6];
        let vals = eval::forward_values::<f64>(&g, &x, 1).unwrap();
        let grad = input_gradient(&g, &vals, g.output, vec![1.0, -0.5], 1);
        let f = |x: &[f64]| {
            let y = eval::forward::<f64>(&g, x, 1).unwrap();
            y[0] - 0.5 * y[1]
        };
        for i in 0..3 {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += 1e-6;
            xm[i] -= 1e-6;
            let fd = (f(&xp) - f(&xm)) / 2e-6;
            assert!((fd - grad[i]).abs() < 1e-6, "d/dx{i}: {} vs {fd}", grad[i]);
        }
    }
}

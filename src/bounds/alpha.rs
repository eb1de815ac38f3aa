//! alpha-CROWN: optimise the lower slopes of undecided ReLU-like neurons (one per row and
//! neuron) by projected gradient ascent (Adam) on the CROWN bound.
//!
//! Any slope in `[leak, 1]` gives a sound bound, so the optimiser cannot cost soundness; it
//! starts from CROWN's adaptive slopes and keeps the best bound seen per row, so the result is
//! never looser than CROWN. Deterministic: no randomness, fixed iteration count.
//!
//! Gradient: for fixed choices of relaxation lines (by the sign of each coefficient), the bound
//! is linear in the coefficients reaching each node, and its derivative with respect to the
//! coefficient of a value is that value in the *relaxed network* evaluated at the minimising
//! input vertex. So one backward pass (recording coefficients) and one forward pass of the
//! relaxed network (rows as the batch) give `dL/dalpha[r, j] = max(A[r, j], 0) * x~[r, j]`.

use super::crown::{Alphas, Crown};
use crate::eval;
use crate::ir::{BinaryKind, Op, ValueId};
use crate::transformers::backward::PoolRelax;
use crate::transformers::relax;

/// Settings of the slope optimisation.
#[derive(Clone, Copy, Debug)]
pub struct AlphaConfig {
    pub iterations: usize,
    /// Adam step size.
    pub lr: f64,
    /// Step size decay per iteration.
    pub decay: f64,
    /// Stop iterating past this instant (the best bound so far is kept).
    pub deadline: Option<std::time::Instant>,
}

impl Default for AlphaConfig {
    fn default() -> Self {
        AlphaConfig {
            iterations: 20,
            lr: 0.1,
            decay: 0.98,
            deadline: None,
        }
    }
}

/// Initial slopes: CROWN's adaptive choice for every ReLU-like node reached from `v`.
fn initial_alphas(c: &Crown, rows: &[usize]) -> Alphas {
    let g = c.g;
    g.nodes
        .iter()
        .map(|node| {
            let leak = match node.op {
                Op::Relu => 0.0,
                Op::LeakyRelu { alpha } if alpha <= 1.0 => alpha,
                _ => return None,
            };
            let b = c.bounds[node.inputs[0]].as_ref()?;
            let n = g.values[node.inputs[0]].numel();
            let mut a = Vec::with_capacity(rows.len() * n);
            for &d in rows {
                for j in 0..n {
                    let (l, u) = (b.lo[d * n + j], b.hi[d * n + j]);
                    a.push(if u > -l { 1.0 } else { leak });
                }
            }
            Some(a)
        })
        .collect()
}

/// Optimised lower bounds of `sum_j a0[r][j] v_j` for every row (`rows[r]` is its domain).
/// Never looser than the CROWN bound with adaptive slopes.
pub fn optimize(
    c: &Crown,
    v: ValueId,
    rows: &[usize],
    fill: impl Fn(usize, &mut [f64]),
    cfg: &AlphaConfig,
) -> Vec<f64> {
    let g = c.g;
    let n = g.values[v].numel();
    let r = rows.len();
    let mut a0 = vec![0.0; r * n];
    for row in 0..r {
        fill(row, &mut a0[row * n..(row + 1) * n]);
    }
    let mut alphas = initial_alphas(c, rows);
    let mut best = vec![f64::NEG_INFINITY; r];
    let mut m: Alphas = alphas
        .iter()
        .map(|a| a.as_ref().map(|a| vec![0.0; a.len()]))
        .collect();
    let mut s2: Alphas = m.clone();
    let (b1, b2, eps) = (0.9, 0.999, 1e-8);
    let mut lr = cfg.lr;
    for it in 0..=cfg.iterations {
        let pass = c.pass(
            v,
            a0.clone(),
            rows,
            Some(&alphas),
            super::crown::Record {
                acts: true,
                input: true,
            },
        );
        for (b, &l) in best.iter_mut().zip(&pass.lower) {
            *b = b.max(l);
        }
        if it == cfg.iterations || cfg.deadline.is_some_and(|d| std::time::Instant::now() > d) {
            break;
        }
        let grads = gradients(
            c,
            v,
            rows,
            &alphas,
            &pass.at_activation,
            pass.at_input.as_deref(),
        );
        let t = (it + 1) as i32;
        for (idx, node) in g.nodes.iter().enumerate() {
            let (Some(al), Some(gr), Some(mm), Some(ss)) =
                (&mut alphas[idx], &grads[idx], &mut m[idx], &mut s2[idx])
            else {
                continue;
            };
            let leak = if let Op::LeakyRelu { alpha } = node.op {
                alpha
            } else {
                0.0
            };
            for i in 0..al.len() {
                mm[i] = b1 * mm[i] + (1.0 - b1) * gr[i];
                ss[i] = b2 * ss[i] + (1.0 - b2) * gr[i] * gr[i];
                let mh = mm[i] / (1.0 - f64::powi(b1, t));
                let vh = ss[i] / (1.0 - f64::powi(b2, t));
                // Ascent: the bound is maximised.
                al[i] = (al[i] + lr * mh / (vh.sqrt() + eps)).clamp(leak, 1.0);
            }
        }
        lr *= cfg.decay;
    }
    best
}

/// Gradient of every row's bound with respect to the slopes of every ReLU-like node.
fn gradients(
    c: &Crown,
    v: ValueId,
    rows: &[usize],
    alphas: &Alphas,
    at_act: &[Option<Vec<f64>>],
    at_input: Option<&[f64]>,
) -> Alphas {
    let g = c.g;
    let r = rows.len();
    let ni = g.input_numel();
    let mut grads: Alphas = vec![None; g.nodes.len()];
    let Some(ax) = at_input else { return grads };
    // The minimising vertex of the input box for every row.
    let bx = c.bounds[g.input].as_ref().expect("input bounds");
    let mut x = vec![0.0; r * ni];
    for row in 0..r {
        let d = rows[row];
        for i in 0..ni {
            x[row * ni + i] = if ax[row * ni + i] >= 0.0 {
                bx.lo[d * ni + i]
            } else {
                bx.hi[d * ni + i]
            };
        }
    }
    // Forward pass of the relaxed network with the rows as the batch.
    let last = g.nodes.iter().position(|nd| nd.output == v).unwrap_or(0);
    let mut vals: Vec<Option<Vec<f64>>> = vec![None; g.values.len()];
    vals[g.input] = Some(x);
    for (idx, node) in g.nodes.iter().enumerate().take(last + 1) {
        let ins: Vec<&[f64]> = node
            .inputs
            .iter()
            .map(|&i| vals[i].as_deref().unwrap_or(&[]))
            .collect();
        let out_n = g.values[node.output].numel();
        let coef = at_act[idx].as_deref();
        let sign = |row: usize, j: usize| coef.is_none_or(|a| a[row * out_n + j] >= 0.0);
        let y: Vec<f64> = match &node.op {
            Op::Relu | Op::LeakyRelu { .. } | Op::Sigmoid | Op::Tanh => {
                let xb = c.bounds[node.inputs[0]].as_ref().expect("bounds");
                let lines = c.lines[node.output].as_deref().expect("activation lines");
                let xin = ins[0];
                let al = alphas[idx].as_deref();
                let mut y = vec![0.0; r * out_n];
                let mut gr = al.map(|_| vec![0.0; r * out_n]);
                for row in 0..r {
                    let d = rows[row];
                    for j in 0..out_n {
                        let ln = &lines[d * out_n + j];
                        let xv = xin[row * out_n + j];
                        let (l, u) = (xb.lo[d * out_n + j], xb.hi[d * out_n + j]);
                        y[row * out_n + j] = if sign(row, j) {
                            match al {
                                Some(a) if relax::unstable(l, u) => {
                                    if let (Some(gr), Some(ca)) = (gr.as_mut(), coef) {
                                        gr[row * out_n + j] = ca[row * out_n + j].max(0.0) * xv;
                                    }
                                    a[row * out_n + j] * xv
                                }
                                _ => ln.kl * xv + ln.bl,
                            }
                        } else {
                            ln.ku * xv + ln.bu
                        };
                    }
                }
                grads[idx] = gr;
                y
            }
            Op::MaxPool(_) => {
                let pools = c.pools[node.output].as_ref().expect("pool relaxations");
                let in_n = g.values[node.inputs[0]].numel();
                let mut y = vec![0.0; r * out_n];
                for row in 0..r {
                    let rel = &pools[rows[row]];
                    for (o, pr) in rel.iter().enumerate() {
                        y[row * out_n + o] = match *pr {
                            PoolRelax::Exact(t) => ins[0][row * in_n + t],
                            PoolRelax::Loose { best, upper } => {
                                if sign(row, o) {
                                    ins[0][row * in_n + best]
                                } else {
                                    upper
                                }
                            }
                        };
                    }
                }
                y
            }
            Op::Binary(b) if b.kind == BinaryKind::Mul || b.kind == BinaryKind::Div => {
                // Use the interval end the bound used (concretisation or McCormick constant
                // part); the slope gradient only needs an approximation here.
                let bd = c.bounds[node.output].as_ref().expect("bounds");
                let mut y = vec![0.0; r * out_n];
                for row in 0..r {
                    let d = rows[row];
                    for j in 0..out_n {
                        y[row * out_n + j] = if sign(row, j) {
                            bd.lo[d * out_n + j]
                        } else {
                            bd.hi[d * out_n + j]
                        };
                    }
                }
                y
            }
            _ => eval::run_node::<f64>(g, node, &ins, r),
        };
        vals[node.output] = Some(y);
    }
    grads
}

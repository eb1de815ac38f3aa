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
//!
//! beta-CROWN: on branch-and-bound domains with split constraints `s z_j >= 0`, the same ascent
//! also optimises one Lagrange multiplier `beta >= 0` per split and row (see [`Crown::pass`]);
//! any `beta >= 0` is sound, and `dL/dbeta = -s z~_j` from the same relaxed forward pass.

use super::crown::{Alphas, Betas, Crown};
use crate::eval;
use crate::ir::{BinaryKind, Op, ValueId};
use crate::transformers::backward::PoolRelax;
use crate::transformers::relax;
use rayon::prelude::*;

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
    /// Adam step size of the split multipliers (beta-CROWN).
    pub lr_beta: f64,
}

impl Default for AlphaConfig {
    fn default() -> Self {
        AlphaConfig {
            iterations: 20,
            lr: 0.1,
            decay: 0.98,
            deadline: None,
            lr_beta: 0.05,
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
                // Optimised slopes exist only for ReLU-like kinks (their lower line through the
                // origin); every other operator keeps its CROWN relaxation.
                Op::LeakyRelu { .. }
                | Op::Const(_)
                | Op::Linear(_)
                | Op::Conv(_)
                | Op::Affine(_)
                | Op::Binary(_)
                | Op::Elementwise(_)
                | Op::MaxPool(_)
                | Op::AveragePool(_)
                | Op::Reshape
                | Op::Select(_) => return None,
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
/// Never looser than the CROWN bound with adaptive slopes. Rows are independent, so chunks of
/// them run in parallel.
pub fn optimize(
    c: &Crown,
    v: ValueId,
    rows: &[usize],
    fill: impl Fn(usize, &mut [f64]) + Sync,
    cfg: &AlphaConfig,
) -> Vec<f64> {
    optimize_warm(c, v, rows, fill, cfg, &vec![None; rows.len()]).0
}

/// The parameters that gave one row its best bound: slopes per ReLU-like node (`numel` of its
/// input, `None` for other nodes) and the multipliers of its domain's splits. A child domain
/// starts from its parent's: its bound then starts near the parent's instead of from scratch
/// (the ascent is not monotone, and 20 steps from CROWN's slopes can land far below).
#[derive(Clone, Debug)]
pub struct Warm {
    pub alphas: Vec<Option<Vec<f32>>>,
    pub betas: Vec<f32>,
}

/// [`optimize`] starting each row from `warm[r]` where given (slopes of neurons still
/// undecided; multipliers of the first splits, new splits start at 0). Also returns each row's
/// best parameters, to warm-start its children.
pub fn optimize_warm(
    c: &Crown,
    v: ValueId,
    rows: &[usize],
    fill: impl Fn(usize, &mut [f64]) + Sync,
    cfg: &AlphaConfig,
    warm: &[Option<&Warm>],
) -> (Vec<f64>, Vec<Warm>) {
    // Chunks small enough to use every core, large enough to keep the passes batched.
    let chunk = rows
        .len()
        .div_ceil(rayon::current_num_threads().max(1))
        .clamp(1, 64);
    let parts: Vec<(Vec<f64>, Vec<Warm>)> = (0..rows.len())
        .step_by(chunk)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| {
            let end = (start + chunk).min(rows.len());
            optimize_rows(
                c,
                v,
                &rows[start..end],
                |r, a| fill(start + r, a),
                cfg,
                &warm[start..end],
            )
        })
        .collect();
    let mut lower = Vec::with_capacity(rows.len());
    let mut params = Vec::with_capacity(rows.len());
    for (l, p) in parts {
        lower.extend(l);
        params.extend(p);
    }
    (lower, params)
}

/// One Adam state per parameter vector.
struct Adam {
    m: Vec<f64>,
    s: Vec<f64>,
}

impl Adam {
    fn new(n: usize) -> Self {
        Adam {
            m: vec![0.0; n],
            s: vec![0.0; n],
        }
    }

    /// One ascent step of `x` along `grad` (iteration `t` from 1), projected onto `[lo, hi]`.
    fn step(&mut self, x: &mut [f64], grad: &[f64], lr: f64, t: i32, lo: f64, hi: f64) {
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        for i in 0..x.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * grad[i];
            self.s[i] = b2 * self.s[i] + (1.0 - b2) * grad[i] * grad[i];
            let mh = self.m[i] / (1.0 - f64::powi(b1, t));
            let vh = self.s[i] / (1.0 - f64::powi(b2, t));
            // `max` before `min` maps a NaN step to `lo`.
            x[i] = (x[i] + lr * mh / (vh.sqrt() + eps)).max(lo).min(hi);
        }
    }
}

/// [`optimize_warm`] on one chunk of rows.
fn optimize_rows(
    c: &Crown,
    v: ValueId,
    rows: &[usize],
    fill: impl Fn(usize, &mut [f64]),
    cfg: &AlphaConfig,
    warm: &[Option<&Warm>],
) -> (Vec<f64>, Vec<Warm>) {
    let g = c.g;
    let n = g.values[v].numel();
    let r = rows.len();
    let mut a0 = vec![0.0; r * n];
    for row in 0..r {
        fill(row, &mut a0[row * n..(row + 1) * n]);
    }
    let mut alphas = initial_alphas(c, rows);
    let mut betas: Betas = rows.iter().map(|&d| vec![0.0; c.splits[d].len()]).collect();
    for (row, w) in warm.iter().enumerate() {
        let Some(w) = w else { continue };
        for (al, wa) in alphas.iter_mut().zip(&w.alphas) {
            if let (Some(al), Some(wa)) = (al.as_mut(), wa) {
                let m = wa.len();
                if al.len() == r * m {
                    for (x, &y) in al[row * m..(row + 1) * m].iter_mut().zip(wa) {
                        *x = y as f64;
                    }
                }
            }
        }
        for (b, &y) in betas[row].iter_mut().zip(&w.betas) {
            *b = (y as f64).max(0.0);
        }
    }
    let mut best_params: Vec<Warm> = (0..r)
        .map(|row| snapshot(&alphas, &betas, r, row))
        .collect();
    let mut adam: Vec<Option<Adam>> = alphas
        .iter()
        .map(|a| a.as_ref().map(|a| Adam::new(a.len())))
        .collect();
    // Split multipliers start at 0 (plain alpha-CROWN), one per split of the row's domain.
    let with_betas = rows.iter().any(|&d| !c.splits[d].is_empty());
    let mut beta_adam: Vec<Adam> = betas.iter().map(|b| Adam::new(b.len())).collect();
    let mut best = vec![f64::NEG_INFINITY; r];
    let mut lr = cfg.lr;
    let mut lr_beta = cfg.lr_beta;
    for it in 0..=cfg.iterations {
        let pass = c.pass(
            v,
            a0.clone(),
            rows,
            Some(&alphas),
            with_betas.then_some(&betas),
            super::crown::Record {
                acts: true,
                input: true,
            },
        );
        for (row, (b, &l)) in best.iter_mut().zip(&pass.lower).enumerate() {
            if l > *b {
                *b = l;
                best_params[row] = snapshot(&alphas, &betas, r, row);
            }
        }
        if it == cfg.iterations || cfg.deadline.is_some_and(|d| std::time::Instant::now() > d) {
            break;
        }
        let (grads, beta_grads) = gradients(
            c,
            v,
            rows,
            &alphas,
            &pass.at_activation,
            pass.at_input.as_deref(),
            with_betas,
        );
        let t = (it + 1) as i32;
        for (idx, node) in g.nodes.iter().enumerate() {
            let (Some(al), Some(gr), Some(ad)) = (&mut alphas[idx], &grads[idx], &mut adam[idx])
            else {
                continue;
            };
            let leak = if let Op::LeakyRelu { alpha } = node.op {
                alpha
            } else {
                0.0
            };
            ad.step(al, gr, lr, t, leak, 1.0);
        }
        for ((b, gr), ad) in betas.iter_mut().zip(&beta_grads).zip(&mut beta_adam) {
            ad.step(b, gr, lr_beta, t, 0.0, f64::INFINITY);
        }
        lr *= cfg.decay;
        lr_beta *= cfg.decay;
    }
    (best, best_params)
}

/// Row `row`'s slopes and multipliers (of `r` rows), stored as f32 (they only guide a start).
fn snapshot(alphas: &Alphas, betas: &Betas, r: usize, row: usize) -> Warm {
    Warm {
        alphas: alphas
            .iter()
            .map(|a| {
                a.as_ref().map(|a| {
                    let m = a.len() / r.max(1);
                    a[row * m..(row + 1) * m]
                        .iter()
                        .map(|&x| x as f32)
                        .collect()
                })
            })
            .collect(),
        betas: betas[row].iter().map(|&x| x as f32).collect(),
    }
}

/// Gradient of every row's bound with respect to the slopes of every ReLU-like node, and (with
/// `betas`) to the multipliers of its domain's splits.
fn gradients(
    c: &Crown,
    v: ValueId,
    rows: &[usize],
    alphas: &Alphas,
    at_act: &[Option<Vec<f64>>],
    at_input: Option<&[f64]>,
    betas: bool,
) -> (Alphas, Betas) {
    let g = c.g;
    let r = rows.len();
    let ni = g.input_numel();
    let mut grads: Alphas = vec![None; g.nodes.len()];
    let mut beta_grads: Betas = rows.iter().map(|&d| vec![0.0; c.splits[d].len()]).collect();
    let Some(ax) = at_input else {
        return (grads, beta_grads);
    };
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
            Op::Relu | Op::LeakyRelu { .. } | Op::Elementwise(_) => {
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
            // The relaxed network is the network itself elsewhere: exact linear maps, and the
            // lower/upper McCormick or pooling choices are bounded by the pass, not optimised.
            Op::Const(_)
            | Op::Linear(_)
            | Op::Conv(_)
            | Op::Affine(_)
            | Op::Binary(_)
            | Op::AveragePool(_)
            | Op::Reshape
            | Op::Select(_) => eval::run_node::<f64>(g, node, &ins, r),
        };
        vals[node.output] = Some(y);
    }
    if betas {
        for (row, bg) in beta_grads.iter_mut().enumerate() {
            for (gk, &(sv, j, active)) in bg.iter_mut().zip(&c.splits[rows[row]]) {
                if let Some(z) = vals[sv].as_deref() {
                    let zj = z[row * g.values[sv].numel() + j];
                    *gk = if active { -zj } else { zj };
                }
            }
        }
    }
    (grads, beta_grads)
}

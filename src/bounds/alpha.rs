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
use crate::domain::Intervals;
use crate::ir::ValueId;
use crate::ops::pool::PoolRelax;
use crate::ops::{At, Family};
use crate::transformers::relax;
use crate::with_family;
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

/// The nodes that get optimised slopes in a pass from `v`, with their leak (lowest slope):
/// every ReLU-like node up to `v`'s producer (a pass from an intermediate value never reaches
/// the later ones) whose input has bounds.
pub fn slope_nodes(c: &Crown, v: ValueId) -> Vec<(usize, f64)> {
    let g = c.g;
    let last = g.nodes.iter().position(|nd| nd.output == v);
    g.nodes
        .iter()
        .enumerate()
        .filter(|&(idx, _)| last.is_none_or(|l| idx <= l))
        .filter_map(|(idx, node)| {
            // Optimised slopes exist only for ReLU-like kinks (their lower line through the
            // origin); every other family keeps its CROWN relaxation.
            let leak = with_family!(&node.op, f => f.alpha_leak())?;
            c.bounds[node.inputs[0]].as_ref()?;
            Some((idx, leak))
        })
        .collect()
}

/// Initial slopes: CROWN's adaptive choice for every node of [`slope_nodes`].
fn initial_alphas(c: &Crown, v: ValueId, rows: &[usize]) -> Alphas {
    let g = c.g;
    let mut out: Alphas = vec![None; g.nodes.len()];
    for (idx, leak) in slope_nodes(c, v) {
        let node = &g.nodes[idx];
        let Some(b) = c.bounds[node.inputs[0]].as_ref() else {
            continue;
        };
        let n = g.values[node.inputs[0]].numel();
        let mut a = Vec::with_capacity(rows.len() * n);
        for &d in rows {
            for j in 0..n {
                let (l, u) = (b.lo[d * n + j], b.hi[d * n + j]);
                a.push(if u > -l { 1.0 } else { leak });
            }
        }
        out[idx] = Some(a);
    }
    out
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
    optimize_warm(c, v, rows, fill, cfg, &vec![None; rows.len()], |_, _| false).0
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
/// best parameters, to warm-start its children. A row leaves the ascent once `done(r, bound)`
/// holds for its best bound (a search needs a disjunct refuted, not its bound at its best):
/// the passes then carry only the rows still short of their goal.
pub fn optimize_warm(
    c: &Crown,
    v: ValueId,
    rows: &[usize],
    fill: impl Fn(usize, &mut [f64]) + Sync,
    cfg: &AlphaConfig,
    warm: &[Option<&Warm>],
    done: impl Fn(usize, f64) -> bool + Sync,
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
                |r, l| done(start + r, l),
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
        let (c1, c2) = (1.0 - f64::powi(b1, t), 1.0 - f64::powi(b2, t));
        // Zipped, so the loop runs without index checks (and vectorises).
        for (((x, &g), m), s) in x.iter_mut().zip(grad).zip(&mut self.m).zip(&mut self.s) {
            *m = b1 * *m + (1.0 - b1) * g;
            *s = b2 * *s + (1.0 - b2) * g * g;
            let mh = *m / c1;
            let vh = *s / c2;
            // `max` before `min` maps a NaN step to `lo`.
            *x = (*x + lr * mh / (vh.sqrt() + eps)).max(lo).min(hi);
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
    done: impl Fn(usize, f64) -> bool,
) -> (Vec<f64>, Vec<Warm>) {
    let g = c.g;
    let n = g.values[v].numel();
    let r = rows.len();
    let mut a0 = vec![0.0; r * n];
    for row in 0..r {
        fill(row, &mut a0[row * n..(row + 1) * n]);
    }
    let mut alphas = initial_alphas(c, v, rows);
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
    // The rows still optimised (indices into `rows`), and their domains; every per-row array
    // below holds these rows only, in this order.
    let mut active: Vec<usize> = (0..r).collect();
    let mut act_rows: Vec<usize> = rows.to_vec();
    for it in 0..=cfg.iterations {
        let ra = active.len();
        let pass = c.pass(
            v,
            a0.clone(),
            &act_rows,
            Some(&alphas),
            with_betas.then_some(&betas),
            super::crown::Record {
                acts: true,
                input: true,
            },
        );
        for (i, &l) in pass.lower.iter().enumerate() {
            let row = active[i];
            if l > best[row] {
                best[row] = l;
                best_params[row] = snapshot(&alphas, &betas, ra, i);
            }
        }
        if it == cfg.iterations || cfg.deadline.is_some_and(|d| std::time::Instant::now() > d) {
            break;
        }
        let keep: Vec<usize> = (0..ra)
            .filter(|&i| !done(active[i], best[active[i]]))
            .collect();
        if keep.is_empty() {
            break;
        }
        let (grads, beta_grads) = gradients(c, v, &act_rows, &alphas, &pass, with_betas);
        let t = (it + 1) as i32;
        for (idx, node) in g.nodes.iter().enumerate() {
            let (Some(al), Some(gr), Some(ad)) = (&mut alphas[idx], &grads[idx], &mut adam[idx])
            else {
                continue;
            };
            let leak = with_family!(&node.op, f => f.alpha_leak()).unwrap_or(0.0);
            ad.step(al, gr, lr, t, leak, 1.0);
        }
        for ((b, gr), ad) in betas.iter_mut().zip(&beta_grads).zip(&mut beta_adam) {
            ad.step(b, gr, lr_beta, t, 0.0, f64::INFINITY);
        }
        lr *= cfg.decay;
        lr_beta *= cfg.decay;
        if keep.len() < ra {
            // Rows are independent in every pass, so dropping some leaves the others' ascent
            // as it was.
            keep_rows(&mut a0, ra, &keep);
            for (a, ad) in alphas.iter_mut().zip(&mut adam) {
                if let (Some(a), Some(ad)) = (a.as_mut(), ad.as_mut()) {
                    keep_rows(a, ra, &keep);
                    keep_rows(&mut ad.m, ra, &keep);
                    keep_rows(&mut ad.s, ra, &keep);
                }
            }
            keep_items(&mut betas, &keep);
            keep_items(&mut beta_adam, &keep);
            keep_items(&mut active, &keep);
            keep_items(&mut act_rows, &keep);
        }
    }
    (best, best_params)
}

/// Keep items `keep` (ascending indices) of `x`, in order.
fn keep_items<T>(x: &mut Vec<T>, keep: &[usize]) {
    let mut k = keep.iter().peekable();
    let mut i = 0;
    x.retain(|_| {
        let hit = k.next_if_eq(&&i).is_some();
        i += 1;
        hit
    });
}

/// Keep rows `keep` (ascending) of `x`, which holds `r` rows of equal length.
fn keep_rows(x: &mut Vec<f64>, r: usize, keep: &[usize]) {
    let m = x.len() / r.max(1);
    for (to, &from) in keep.iter().enumerate() {
        if to != from {
            x.copy_within(from * m..(from + 1) * m, to * m);
        }
    }
    x.truncate(keep.len() * m);
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
    pass: &super::crown::Pass,
    betas: bool,
) -> (Alphas, Betas) {
    let (at_act, at_input) = (&pass.at_activation, pass.at_input.as_deref());
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
    // Without row boxes (`CrownConfig::local_rows` off) every value is computed in full.
    let need = c
        .local_rows
        .then(|| forward_need(c, last, rows, alphas, &pass.act_support, betas));
    let mut vals: Vec<Option<Vec<f64>>> = vec![None; g.values.len()];
    vals[g.input] = Some(x);
    for (idx, node) in g.nodes.iter().enumerate().take(last + 1) {
        let need = need.as_ref().map(|n| n[node.output].as_deref());
        if need == Some(None) {
            // Nothing reads this output (e.g. the bounded value itself): every reader, and
            // every node with slopes, has a box.
            continue;
        }
        let ins: Vec<&[f64]> = node
            .inputs
            .iter()
            .map(|&i| vals[i].as_deref().unwrap_or(&[]))
            .collect();
        let pass = RelaxedPass {
            crown: c,
            rows,
            alpha: alphas[idx].as_deref(),
            coef: at_act[idx].as_deref(),
            need: need.flatten(),
        };
        let at = At { g, node, batch: r };
        let (y, gr) = with_family!(&node.op, f => f.relaxed_forward(&pass, &at, &ins));
        grads[idx] = gr;
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

/// Per value up to node `last`, per row, the box of its plane where [`gradients`] reads the
/// relaxed forward pass (`None` for a value nothing reads): each slope's input where the
/// row's coefficient at the node is nonzero, each split's pre-activation (beta-CROWN), and,
/// through every node's [`Family::back_support`] (which holds the inputs an output box reads),
/// what those values read. Outside the boxes the pass may leave values unset: they reach no
/// gradient. The gradients only steer the ascent; every bound comes from a backward pass.
fn forward_need(
    c: &Crown,
    last: usize,
    rows: &[usize],
    alphas: &Alphas,
    act_support: &[Option<crate::transformers::backward::Support>],
    betas: bool,
) -> Vec<Option<crate::transformers::backward::Support>> {
    use crate::ir::Rect;
    use crate::transformers::backward::{Support, union_support};
    let g = c.g;
    let r = rows.len();
    let mut need: Vec<Option<Support>> = vec![None; g.values.len()];
    let add = |need: &mut Vec<Option<Support>>, v: ValueId, s: &[Option<Rect>]| {
        need[v] = Some(match need[v].take() {
            None => s.to_vec(),
            Some(old) => union_support(&old, s),
        });
    };
    if betas {
        for (row, &d) in rows.iter().enumerate() {
            for &(sv, j, _) in &c.splits[d] {
                let mut s: Support = vec![Some(Rect::default()); r];
                s[row] = g.plane(sv).map(|plane| Rect::at(plane, j));
                add(&mut need, sv, &s);
            }
        }
    }
    for idx in (0..=last.min(g.nodes.len().saturating_sub(1))).rev() {
        let node = &g.nodes[idx];
        let at = At { g, node, batch: r };
        let mut out = need[node.output].clone();
        if alphas[idx].is_some() {
            // The slope gradient reads the input where the coefficient is nonzero: in the box
            // the pass recorded with it (anywhere when none was recorded).
            let s = act_support[idx].clone().unwrap_or_else(|| vec![None; r]);
            out = Some(match out {
                None => s,
                Some(o) => union_support(&o, &s),
            });
        }
        let Some(out) = out else { continue };
        let ins = with_family!(&node.op, f => f.back_support(&at, &out));
        for (&i, s) in node.inputs.iter().zip(&ins) {
            add(&mut need, i, s);
        }
        need[node.output] = Some(out);
    }
    need
}

/// One node's view of the relaxed network's forward pass (rows as the batch, each at its
/// minimising input vertex), for [`crate::ops::Family::relaxed_forward`].
pub struct RelaxedPass<'a> {
    pub crown: &'a Crown<'a>,
    /// Domain of each row.
    pub rows: &'a [usize],
    /// The node's optimised slopes (`[rows, numel]`), when it has any.
    pub alpha: Option<&'a [f64]>,
    /// The coefficients that reached the node's output in the backward pass (`[rows, numel]`).
    pub coef: Option<&'a [f64]>,
    /// Per row, a box of the node's output plane outside which no gradient reads the output
    /// (`None` in the list: the whole plane; `None` here: every element is computed). A
    /// family may leave the output there unset.
    pub need: Option<&'a [Option<crate::ir::Rect>]>,
}

impl RelaxedPass<'_> {
    /// Whether the bound used the lower side of element `j` in row `row` (its coefficient is
    /// non-negative, or none was recorded).
    pub fn lower_side(&self, row: usize, j: usize, out_n: usize) -> bool {
        self.coef.is_none_or(|a| a[row * out_n + j] >= 0.0)
    }

    /// Intermediate bounds of value `v` (computed before any pass).
    pub fn bound(&self, v: ValueId) -> &Intervals {
        self.crown.bounds[v].as_ref().expect("bounds")
    }

    /// Max-pool relaxations of value `v`, per domain.
    pub fn pools(&self, v: ValueId) -> &[Vec<PoolRelax>] {
        self.crown.pools[v].as_deref().expect("pool relaxations")
    }

    /// Through relaxation lines: the line the bound used, or the optimised slope of an
    /// unstable kink, whose gradient is the coefficient's positive part times the input.
    pub fn through_lines(&self, at: &At, ins: &[&[f64]]) -> (Vec<f64>, Option<Vec<f64>>) {
        let c = self.crown;
        let node = at.node;
        let r = self.rows.len();
        let out_n = at.out_n();
        let xb = self.bound(node.inputs[0]);
        let lines = c.lines[node.output].as_deref().expect("activation lines");
        let xin = ins[0];
        let al = self.alpha;
        let coef = self.coef;
        let mut y = vec![0.0; r * out_n];
        let mut gr = al.map(|_| vec![0.0; r * out_n]);
        for row in 0..r {
            let d = self.rows[row];
            // Outside the row's box nothing reads the output, and the coefficient is zero
            // there, so the slope gradient is too.
            let rect = self.need.and_then(|s| s.get(row).copied().flatten());
            crate::transformers::backward::for_runs(at.g, node.output, rect, |js| {
                for j in js {
                    let ln = &lines[d * out_n + j];
                    let xv = xin[row * out_n + j];
                    let (l, u) = (xb.lo[d * out_n + j], xb.hi[d * out_n + j]);
                    y[row * out_n + j] = if self.lower_side(row, j, out_n) {
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
            });
        }
        (y, gr)
    }
}

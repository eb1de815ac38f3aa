//! CROWN / DeepPoly: backward linear bound propagation over the IR DAG.
//!
//! [`Crown::new`] computes bounds of every value in topological order: IBP from the best
//! bounds so far, then, for values feeding a nonlinear operator, a backward pass from that value
//! for its undecided elements (both directions in one pass), intersected with IBP (or replacing
//! it when `intersect_ibp` is off, which is plain CROWN). [`Crown::lower_bounds_with`] then bounds
//! any linear objective of any value, e.g. the spec matrix `C y` folded onto the output.
//!
//! With `intersect_ibp` a backward pass also concretises at every activation output it
//! crosses (the live coefficients on their values' interval bounds) and keeps the best bound:
//! every such partial substitution is a valid inequality, and on thin boxes it beats the
//! relaxations further back (ACAS Xu 3_3 prop_2: a row at -0.016 became +0.0012).
//!
//! A pass keeps, per row and live value, a box of the value's spatial plane outside which the
//! row's coefficients are zero ([`Support`]): each family's `back_support` maps the boxes
//! backwards, and the error terms, the relaxation lines, the concretisations and the
//! transposed convolutions visit only the box. An intermediate-bound row starts one-hot and
//! stays local through the first layers of a CNN (cifar_base_kw: 128 of the first ReLU's 2,048
//! elements); a box holds every nonzero, so leaving out the rest drops zero terms only.
//!
//! Soundness: every node contributes `-|A| . err(node)` (deployed rounding plus the f64
//! rounding of the backward products, [`backward::node_error`]); the bias and the final
//! concretisation are sums of at most `terms_total` f64 products whose magnitudes are tracked
//! per row, and the result is lowered by `gamma64(terms_total) * magnitude` and rounded down.

use super::alpha::{self, AlphaConfig};
use crate::domain::{FpMode, Intervals, Rounding, gamma};
use crate::ir::{Graph, Rect, ValueId};
use crate::ops::{At, Family, Need, Relaxation};
use crate::transformers::backward::{self, Back, BackCtx, PoolRelax, Support};
use crate::transformers::ibp;
use crate::transformers::relax;
use crate::transformers::relax::Lines;
use crate::with_family;
use rayon::prelude::*;

/// How intermediate bounds are obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intermediate {
    /// Interval propagation only.
    Ibp,
    /// CROWN for the elements feeding a nonlinearity.
    Crown,
    /// CROWN, then alpha-CROWN (slopes of the earlier ReLUs optimised for each bound, as
    /// alpha-beta-CROWN optimises intermediate bounds) for the ReLU inputs CROWN leaves
    /// unstable.
    Alpha,
}

/// Settings of the CROWN engine.
#[derive(Clone, Copy, Debug)]
pub struct CrownConfig {
    pub mode: FpMode,
    pub intermediate: Intermediate,
    /// Intersect CROWN intermediate bounds with IBP and only tighten elements IBP leaves
    /// undecided, and concretise early at activation outputs (default). Off: plain CROWN,
    /// every element bounded by the full back-substitution alone.
    pub intersect_ibp: bool,
    /// Past this instant, remaining intermediate bounds stay IBP (sound, looser), so a caller
    /// with a time limit gets control back quickly.
    pub deadline: Option<std::time::Instant>,
    /// The slope optimisation of [`Intermediate::Alpha`].
    pub alpha: AlphaConfig,
    /// Past this instant (or `deadline`, the earlier), [`Intermediate::Alpha`] stops: the
    /// node whose optimisation it cut short keeps CROWN's bounds, and so does every later one
    /// ([`Crown::alpha_nodes`] says where it stopped).
    pub alpha_deadline: Option<std::time::Instant>,
    /// [`Intermediate::Alpha`] optimises the bounds of the nodes before this index only, CROWN
    /// bounds the rest: rebuilds the bounds of a run that [`CrownConfig::alpha_deadline`] cut
    /// short, without a clock.
    pub alpha_nodes: usize,
    /// Track each backward row's box of positions ([`Support`], default). Off: every row is
    /// treated as dense; the same bounds up to the order of f64 sums, only slower (to measure
    /// the boxes and to check them).
    pub local_rows: bool,
}

impl Default for CrownConfig {
    fn default() -> Self {
        CrownConfig {
            mode: FpMode::Deployed,
            intermediate: Intermediate::Crown,
            intersect_ibp: true,
            deadline: None,
            alpha: AlphaConfig::default(),
            alpha_deadline: None,
            alpha_nodes: usize::MAX,
            local_rows: true,
        }
    }
}

/// Most rows per backward chunk (chunks run in parallel).
const ROW_CHUNK: usize = 128;

/// Bytes of coefficients one backward chunk may hold over all values it crosses: on CNNs a
/// chunk within the cache beats large GEMMs (`bounds` on cifar_deep_kw: 82 ms with 128 rows,
/// 42 ms with 8), on small MLPs large chunks keep the GEMMs efficient.
const CHUNK_BYTES: usize = 1 << 20;

/// Known bounds and split constraints for a batch of branch-and-bound domains.
pub struct Seeds {
    /// Per value, bounds valid on each domain (`[domains, numel]`), or `None`.
    pub bounds: Vec<Option<Intervals>>,
    /// Split constraints: `(value, domain, element, active)`; active means `>= 0`.
    pub splits: Vec<(ValueId, usize, usize, bool)>,
    /// Nodes before this index keep their seeded bounds without a new CROWN pass.
    pub skip_before: usize,
}

impl Seeds {
    /// Intersect `b` (bounds of value `v` with `n` elements, all domains) with the seeds and
    /// split constraints.
    pub fn apply(&self, v: ValueId, n: usize, b: &mut Intervals) {
        self.apply_bounds(v, b);
        self.apply_splits(v, n, b);
    }

    /// Intersect `b` with the seeded bounds of `v` only.
    fn apply_bounds(&self, v: ValueId, b: &mut Intervals) {
        if let Some(s) = &self.bounds[v] {
            for i in 0..b.lo.len() {
                b.lo[i] = b.lo[i].max(s.lo[i]);
                b.hi[i] = b.hi[i].min(s.hi[i]);
            }
        }
    }

    /// Clamp `b` by the split constraints on `v` only.
    fn apply_splits(&self, v: ValueId, n: usize, b: &mut Intervals) {
        for &(sv, d, j, active) in &self.splits {
            if sv == v {
                clamp_split(b, d * n + j, active);
            }
        }
    }
}

/// Clamp element `i` of `b` to the side of a split: `>= 0` when `active`, else `<= 0`.
fn clamp_split(b: &mut Intervals, i: usize, active: bool) {
    if active {
        b.lo[i] = b.lo[i].max(0.0);
    } else {
        b.hi[i] = b.hi[i].min(0.0);
    }
}

/// A graph with bounds on every value for a batch of input domains.
pub struct Crown<'g> {
    pub g: &'g Graph,
    pub rnd: Rounding,
    pub domains: usize,
    /// Best bounds of every value, `[domains, numel]`.
    pub bounds: Vec<Option<Intervals>>,
    /// Rounding error bound of every value, `[domains, numel]`.
    pub errs: Vec<Option<Vec<f64>>>,
    /// Relaxation lines of every activation output value, `[domains, numel]`.
    pub lines: Vec<Option<Vec<Lines>>>,
    /// MaxPool relaxations by output value, per domain.
    pub pools: Vec<Option<Vec<Vec<PoolRelax>>>>,
    /// Bound on the length of any dot product in a backward step.
    terms: usize,
    /// Bound on the number of f64 terms summed into one row's bound.
    terms_total: usize,
    /// Also concretise at activation outputs (with `intersect_ibp`; plain CROWN does not).
    early: bool,
    /// Slope optimisation for intermediate bounds ([`Intermediate::Alpha`]), if any.
    alpha: Option<AlphaConfig>,
    /// Index of the first node whose bounds [`Intermediate::Alpha`] did not optimise (the
    /// graph's length when it optimised all).
    alpha_stop: usize,
    /// [`CrownConfig::local_rows`].
    pub(crate) local_rows: bool,
    /// Split constraints of each domain, `(value, element, active)`, in the order their
    /// Lagrange multipliers ([`Betas`]) follow.
    pub splits: Vec<Vec<(ValueId, usize, bool)>>,
}

/// `sum |a_j| e_j` over the entries `rg` of a row. Its terms are nonnegative, so the sum is
/// its own magnitude: leaving the magnitude out halves the work (mnistfc 256x6).
#[inline]
fn error_run(a: &[f64], e: &[f64], rg: std::ops::Range<usize>) -> f64 {
    crate::domain::sum_mag2(&a[rg.clone()], &e[rg], |x, y| x.abs() * y).0
}

/// Output of one backward pass.
pub struct Pass {
    /// Sound lower bound of each row's objective: the best of [`Pass::plain`] and the
    /// concretisations at activation outputs along the way.
    pub lower: Vec<f64>,
    /// The bound of the full back-substitution alone (a smoother guide for heuristics).
    pub plain: Vec<f64>,
    /// Coefficients at the output of each activation node (indexed by node), when recorded.
    pub at_activation: Vec<Option<Vec<f64>>>,
    /// Per row, the box of the plane holding those coefficients' nonzeros (see [`Support`]),
    /// recorded with them.
    pub act_support: Vec<Option<Support>>,
    /// Coefficients reaching the network input (`rows x inputs`), when recorded.
    pub at_input: Option<Vec<f64>>,
}

/// What a backward pass keeps besides the bounds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Record {
    /// Coefficients at the output of every nonlinear node.
    pub acts: bool,
    /// Coefficients reaching the network input.
    pub input: bool,
}

/// Lower slopes per activation node (indexed by node), `rows x numel`, for alpha-CROWN.
pub type Alphas = Vec<Option<Vec<f64>>>;

/// Lagrange multipliers (beta-CROWN) per row, one per split constraint of the row's domain in
/// the order of [`Crown::splits`]; each must be `>= 0`.
pub type Betas = Vec<Vec<f64>>;

impl<'g> Crown<'g> {
    /// Bounds of every value of `g` over the input boxes `input` (`domains` of them).
    pub fn new(g: &'g Graph, input: Intervals, domains: usize, cfg: CrownConfig) -> Self {
        Self::build(g, input, domains, cfg, None)
    }

    /// Index of the first node whose intermediate bounds [`Intermediate::Alpha`] did not
    /// optimise ([`CrownConfig::alpha_deadline`], [`CrownConfig::alpha_nodes`]); the graph's
    /// length when it optimised every one it bounded.
    pub fn alpha_nodes(&self) -> usize {
        self.alpha_stop
    }

    /// Like [`Crown::new`], for branch-and-bound subdomains: `seeds` carries bounds known to
    /// hold on every domain (the parent's), intersected into each value, plus per-domain split
    /// constraints on pre-activation values; values produced before node `skip_before` keep
    /// their seed without a new CROWN pass (they cannot have changed).
    pub fn build(
        g: &'g Graph,
        input: Intervals,
        domains: usize,
        cfg: CrownConfig,
        seeds: Option<&Seeds>,
    ) -> Self {
        let rnd = Rounding::new(cfg.mode, g.dtype);
        let max_n = g.values.iter().map(|v| v.numel()).max().unwrap_or(1);
        let terms = 2 * max_n + 16;
        let terms_total = g.values.iter().map(|v| v.numel()).sum::<usize>() * 2 + 64;
        let mut need = vec![Need::No; g.values.len()];
        for n in &g.nodes {
            let nd = with_family!(&n.op, f => f.needs());
            for &v in &n.inputs {
                need[v] = need[v].max(nd);
            }
        }
        let mut c = Crown {
            g,
            rnd,
            domains,
            bounds: vec![None; g.values.len()],
            errs: vec![None; g.values.len()],
            lines: vec![None; g.values.len()],
            pools: vec![None; g.values.len()],
            terms,
            terms_total,
            early: cfg.intersect_ibp,
            alpha: (cfg.intermediate == Intermediate::Alpha).then_some(AlphaConfig {
                deadline: [cfg.alpha_deadline, cfg.deadline]
                    .into_iter()
                    .flatten()
                    .min(),
                ..cfg.alpha
            }),
            alpha_stop: g.nodes.len(),
            splits: vec![Vec::new(); domains],
            local_rows: cfg.local_rows,
        };
        if let Some(sd) = seeds {
            for &(v, d, j, active) in &sd.splits {
                c.splits[d].push((v, j, active));
            }
        }
        c.bounds[g.input] = Some(input);
        for (idx, node) in g.nodes.iter().enumerate() {
            let kept = seeds
                .filter(|sd| idx < sd.skip_before)
                .and_then(|sd| sd.bounds[node.output].as_ref());
            // A kept value's seeded bounds hold on the domain. Before every domain's newest
            // split, IBP from the inputs' seeds would repeat the parent's own intersection; past
            // it (children that keep their parents' bounds) IBP from the clamped neuron could
            // narrow a little, which changed no domain count on the oval21 nets and cost 0.9 s
            // of a 10 s search (cifar_base_kw img8194).
            let ib = if let Some(kb) = kept {
                kb.clone()
            } else {
                let ins: Vec<&Intervals> = node
                    .inputs
                    .iter()
                    .map(|&v| c.bounds[v].as_ref().expect("topological order"))
                    .collect();
                ibp::transfer(g, node, &ins, domains, &rnd)
            };
            let out = node.output;
            // The input bounds are final here: fix the node's relaxation once.
            if let Some(xb) = node.inputs.first().and_then(|&i| c.bounds[i].as_ref()) {
                let at = At {
                    g,
                    node,
                    batch: domains,
                };
                let r = with_family!(&node.op, f => f.relaxation(&at, xb, &c.rnd));
                c.keep_relaxation(out, r);
            }
            let mut ib = ib;
            let on = g.values[out].numel();
            // Split constraints clamp only after the CROWN pass: a split neuron's own bounds
            // on a box smaller than the one it was split on can show its side is empty there.
            if let Some(sd) = seeds {
                sd.apply_bounds(out, &mut ib);
            }
            c.bounds[out] = Some(ib);
            c.errs[out] = backward::node_error(g, node, &c.bounds, domains, &rnd, terms);
            let fresh = seeds.is_none_or(|sd| idx >= sd.skip_before || sd.bounds[out].is_none());
            let in_time = cfg.deadline.is_none_or(|d| std::time::Instant::now() < d);
            // An affine map of the input box: IBP's bounds are its exact image, widened by the
            // same rounding allowance a backward pass charges (and none of the gamma64 terms
            // on top), so CROWN cannot improve on them.
            let first_affine = node.op.is_affine() && node.inputs == [g.input];
            // Slopes stop being optimised here by `alpha_nodes` or in `tighten` by the clock.
            let optimising = c.alpha.is_some();
            if idx >= cfg.alpha_nodes {
                c.alpha = None;
            }
            if cfg.intermediate != Intermediate::Ibp
                && need[out] != Need::No
                && fresh
                && in_time
                && !first_affine
            {
                c.tighten(out, need[out], cfg.intersect_ibp);
            }
            if optimising && c.alpha.is_none() {
                c.alpha_stop = idx;
            }
            if let (Some(sd), Some(b)) = (seeds, c.bounds[out].as_mut()) {
                sd.apply(out, on, b);
            }
        }
        c
    }

    /// A batch of children of this batch's domains, for estimates only: child `i` is domain
    /// `kids[i].0` with the split `kids[i].1` added. Every value keeps its parent's bounds and
    /// error terms, clamped by the new split; only the relaxations reading a split value are
    /// fixed again. No bound is recomputed, so the children's bounds are the parent's (valid on
    /// them, but not those [`Crown::build`] would compute).
    pub fn children(&self, kids: &[(usize, (ValueId, usize, bool))]) -> Crown<'g> {
        let g = self.g;
        let nk = kids.len();
        // Per value, the kids' parents' rows of `x` (`[domains, numel]`).
        fn gather<T: Clone>(x: &[T], n: usize, kids: &[(usize, (ValueId, usize, bool))]) -> Vec<T> {
            kids.iter()
                .flat_map(|&(d, _)| x[d * n..(d + 1) * n].iter().cloned())
                .collect()
        }
        let n = |v: ValueId| g.values[v].numel();
        let mut c = Crown {
            g,
            rnd: self.rnd,
            domains: nk,
            bounds: (self.bounds.iter().enumerate())
                .map(|(v, b)| {
                    let b = b.as_ref()?;
                    Some(Intervals::new(
                        gather(&b.lo, n(v), kids),
                        gather(&b.hi, n(v), kids),
                    ))
                })
                .collect(),
            errs: (self.errs.iter().enumerate())
                .map(|(v, e)| Some(gather(e.as_ref()?, n(v), kids)))
                .collect(),
            lines: (self.lines.iter().enumerate())
                .map(|(v, l)| Some(gather(l.as_ref()?, n(v), kids)))
                .collect(),
            pools: (self.pools.iter())
                .map(|p| Some(gather(p.as_ref()?, 1, kids)))
                .collect(),
            terms: self.terms,
            terms_total: self.terms_total,
            early: self.early,
            alpha: self.alpha,
            alpha_stop: self.alpha_stop,
            local_rows: self.local_rows,
            splits: (kids.iter())
                .map(|&(d, s)| self.splits[d].iter().copied().chain([s]).collect())
                .collect(),
        };
        let mut split_values = Vec::new();
        for (i, &(_, (v, j, active))) in kids.iter().enumerate() {
            if let Some(b) = c.bounds[v].as_mut() {
                clamp_split(b, i * n(v) + j, active);
            }
            if !split_values.contains(&v) {
                split_values.push(v);
            }
        }
        for node in &g.nodes {
            let Some(&x) = node.inputs.first().filter(|x| split_values.contains(x)) else {
                continue;
            };
            if let Some(xb) = c.bounds[x].as_ref() {
                let at = At { g, node, batch: nk };
                let r = with_family!(&node.op, f => f.relaxation(&at, xb, &c.rnd));
                c.keep_relaxation(node.output, r);
            }
        }
        c
    }

    /// Keep `r` as the relaxation of the node whose output is `out`.
    fn keep_relaxation(&mut self, out: ValueId, r: Relaxation) {
        match r {
            Relaxation::None => {}
            Relaxation::Lines(l) => self.lines[out] = Some(l),
            Relaxation::Pool(p) => self.pools[out] = Some(p),
        }
    }

    /// Whether some value's bounds are empty on domain `d` (the domain holds no input, e.g.
    /// contradictory split constraints).
    pub fn infeasible(&self, d: usize) -> bool {
        self.bounds.iter().enumerate().any(|(v, b)| {
            b.as_ref().is_some_and(|b| {
                let n = self.g.values[v].numel();
                (d * n..(d + 1) * n).any(|i| b.lo[i] > b.hi[i])
            })
        })
    }

    /// The bounds of domain `d` alone, for every value (to seed its children).
    pub fn domain_bounds(&self, d: usize) -> Vec<Option<Intervals>> {
        self.bounds
            .iter()
            .enumerate()
            .map(|(v, b)| {
                b.as_ref().map(|b| {
                    let n = self.g.values[v].numel();
                    Intervals::new(
                        b.lo[d * n..(d + 1) * n].to_vec(),
                        b.hi[d * n..(d + 1) * n].to_vec(),
                    )
                })
            })
            .collect()
    }

    /// CROWN bounds for the elements of `v` that need them (the undecided ones; in plain CROWN
    /// all of them unless `v` feeds a kink); intersect or replace.
    fn tighten(&mut self, v: ValueId, need: Need, intersect: bool) {
        let n = self.g.values[v].numel();
        let Some(b) = self.bounds[v].as_ref() else {
            return;
        };
        let mut sel: Vec<(usize, usize)> = Vec::new();
        for d in 0..self.domains {
            for j in 0..n {
                let (l, u) = (b.lo[d * n + j], b.hi[d * n + j]);
                let undecided = match need {
                    Need::Kink => relax::unstable(l, u),
                    _ => u > l,
                };
                // A kink's input IBP already decides keeps IBP's bounds even in plain CROWN
                // (as auto_LiRPA's sparse intermediate bounds do): its relaxation is exact
                // whatever its bounds, so only the unstable ones matter.
                if undecided || (!intersect && need != Need::Kink) {
                    sel.push((d, j));
                }
            }
        }
        if sel.is_empty() {
            return;
        }
        // Two rows per element: +e_j (lower bound) and -e_j (minus the upper bound).
        let rows: Vec<usize> = sel.iter().flat_map(|&(d, _)| [d, d]).collect();
        let fill = |row: usize, a: &mut [f64]| {
            let (_, j) = sel[row / 2];
            a[j] = if row % 2 == 0 { 1.0 } else { -1.0 };
        };
        let mut lower = self.lower_bounds_with(v, &rows, None, fill);
        if let (Some(acfg), Need::Kink) = (self.alpha, need) {
            // The elements CROWN leaves unstable, both rows each: alpha-CROWN starts from
            // CROWN's slopes and keeps each row's best bound, so it never loosens one.
            let again: Vec<usize> = (0..sel.len())
                .filter(|&t| {
                    let (d, j) = sel[t];
                    let (mut l, mut u) = (lower[2 * t], -lower[2 * t + 1]);
                    if intersect {
                        l = l.max(b.lo[d * n + j]);
                        u = u.min(b.hi[d * n + j]);
                    }
                    relax::unstable(l, u)
                })
                .flat_map(|t| [2 * t, 2 * t + 1])
                .collect();
            let past = || {
                acfg.deadline
                    .is_some_and(|d| std::time::Instant::now() >= d)
            };
            let mut stop = past();
            if !stop && !again.is_empty() {
                let rows2: Vec<usize> = again.iter().map(|&k| rows[k]).collect();
                let opt = alpha::optimize(self, v, &rows2, |r, a| fill(again[r], a), &acfg);
                // A check inside that saw the deadline passed may have cut the ascent short,
                // at a step that depends on the clock: those bounds are sound, but nothing
                // without the clock could rebuild them, so this node keeps CROWN's. While
                // the clock still shows time left, every check inside saw some. (The clock is
                // read once here: a second reading could stop after keeping the ascent.)
                stop = past();
                if !stop {
                    for (&k, o) in again.iter().zip(opt) {
                        lower[k] = lower[k].max(o);
                    }
                }
            }
            if stop {
                self.alpha = None;
            }
        }
        let b = self.bounds[v].as_mut().expect("bounds");
        for (t, &(d, j)) in sel.iter().enumerate() {
            let (cl, cu) = (lower[2 * t], -lower[2 * t + 1]);
            let i = d * n + j;
            if intersect {
                b.lo[i] = b.lo[i].max(cl);
                b.hi[i] = b.hi[i].min(cu);
            } else {
                b.lo[i] = cl;
                b.hi[i] = cu;
            }
        }
    }

    /// Sound lower bounds of `sum_j a0[r][j] * v_j` for every row `r` of domain `rows[r]`;
    /// `fill(r, row_slice)` writes row `r`'s coefficients. Rows run in parallel chunks.
    pub fn lower_bounds_with(
        &self,
        v: ValueId,
        rows: &[usize],
        alphas: Option<&Alphas>,
        fill: impl Fn(usize, &mut [f64]) + Sync,
    ) -> Vec<f64> {
        self.passes(v, rows, alphas, fill, Record::default()).lower
    }

    /// [`Crown::lower_bounds_with`] keeping what `rec` asks for (rows in order).
    pub fn passes(
        &self,
        v: ValueId,
        rows: &[usize],
        alphas: Option<&Alphas>,
        fill: impl Fn(usize, &mut [f64]) + Sync,
        rec: Record,
    ) -> Pass {
        let n = self.g.values[v].numel();
        let rc = self.row_chunk(v);
        let chunks: Vec<Pass> = (0..rows.len())
            .step_by(rc)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|start| {
                let end = (start + rc).min(rows.len());
                let mut a0 = vec![0.0; (end - start) * n];
                for r in start..end {
                    fill(r, &mut a0[(r - start) * n..(r - start + 1) * n]);
                }
                let al: Option<Alphas> = alphas.map(|als| {
                    als.iter()
                        .enumerate()
                        .map(|(i, a)| {
                            a.as_ref().map(|a| {
                                let m = self.g.values[self.g.nodes[i].output].numel();
                                a[start * m..end * m].to_vec()
                            })
                        })
                        .collect()
                });
                self.pass(v, a0, &rows[start..end], al.as_ref(), None, rec)
            })
            .collect();
        let mut out = Pass {
            lower: Vec::with_capacity(rows.len()),
            plain: Vec::with_capacity(rows.len()),
            at_activation: vec![None; self.g.nodes.len()],
            act_support: vec![None; self.g.nodes.len()],
            at_input: None,
        };
        for p in chunks {
            out.lower.extend(p.lower);
            out.plain.extend(p.plain);
            for (acc, a) in out.at_activation.iter_mut().zip(p.at_activation) {
                if let Some(a) = a {
                    acc.get_or_insert_with(Vec::new).extend(a);
                }
            }
            for (acc, s) in out.act_support.iter_mut().zip(p.act_support) {
                if let Some(s) = s {
                    acc.get_or_insert_with(Vec::new).extend(s);
                }
            }
            if let Some(a) = p.at_input {
                out.at_input.get_or_insert_with(Vec::new).extend(a);
            }
        }
        out
    }

    /// Rows per chunk of a pass from `v`: as many as fit in [`CHUNK_BYTES`] of coefficients,
    /// at most [`ROW_CHUNK`]. It depends on the graph alone, not on the thread count, so that a
    /// row's chunk (hence its GEMMs' summation order) is the same on every machine.
    fn row_chunk(&self, v: ValueId) -> usize {
        let per_row: usize = self
            .g
            .nodes
            .iter()
            .take_while(|nd| nd.output != v)
            .map(|nd| self.g.values[nd.output].numel())
            .sum::<usize>()
            + self.g.values[v].numel()
            + self.g.input_numel();
        (CHUNK_BYTES / (8 * per_row.max(1))).clamp(4, ROW_CHUNK)
    }

    /// One backward pass from value `v` with coefficients `a0` (`rows x numel(v)`).
    ///
    /// With `betas`, each split constraint `s z_j >= 0` of a row's domain (`s = +1` active,
    /// `-1` inactive) adds `-beta s z_j` to the objective where the pass reaches `z`. On the
    /// domain that term is `<= 0`, so a lower bound of the sum over the relaxation bounds the
    /// objective there (weak duality); the split thus constrains the input, not only its own
    /// neuron's relaxation.
    pub fn pass(
        &self,
        v: ValueId,
        a0: Vec<f64>,
        rows: &[usize],
        alphas: Option<&Alphas>,
        betas: Option<&Betas>,
        rec: Record,
    ) -> Pass {
        let g = self.g;
        let r = rows.len();
        let ctx = BackCtx {
            g,
            bounds: &self.bounds,
            rows,
            lines: &self.lines,
            pools: &self.pools,
        };
        let mut coef: Vec<Option<Vec<f64>>> = vec![None; g.values.len()];
        // Where each live coefficient set can be nonzero, per row (see `Support`): every
        // step below visits only that.
        let mut sup: Vec<Support> = vec![Vec::new(); g.values.len()];
        // Without local rows every box is `None` (anywhere), which every step accepts.
        let keep = |s: Support| {
            if self.local_rows {
                s
            } else {
                vec![None; s.len()]
            }
        };
        sup[v] = keep(backward::scan_support(g, v, &a0, r));
        coef[v] = Some(a0);
        let mut bias = vec![0.0; r];
        let mut mag = vec![0.0; r];
        let mut at_activation = vec![None; g.nodes.len()];
        let mut act_support = vec![None; g.nodes.len()];
        let mut early = vec![f64::NEG_INFINITY; r];
        let last = g.nodes.iter().position(|n| n.output == v);
        for (idx, node) in g
            .nodes
            .iter()
            .enumerate()
            .take(last.map_or(0, |l| l + 1))
            .rev()
        {
            let out = node.output;
            let n = g.values[out].numel();
            if self.early && node.op.is_activation() && coef[out].is_some() {
                // Concretising here, on the activation's interval bounds, is as sound as
                // going on: on thin boxes it can beat the relaxations below it.
                self.concretize_early(&coef, &sup, &bias, &mag, rows, &mut early);
            }
            if let Some(bs) = betas {
                self.inject_betas(out, n, rows, bs, &mut coef[out], &mut sup[out]);
            }
            let Some(a) = coef[out].take() else { continue };
            let s_out = std::mem::take(&mut sup[out]);
            if let Some(e) = &self.errs[out] {
                for row in 0..r {
                    let d = rows[row];
                    let (ar, er) = (&a[row * n..(row + 1) * n], &e[d * n..(d + 1) * n]);
                    let mut s = 0.0;
                    backward::for_runs(g, out, s_out[row], |rg| s += error_run(ar, er, rg));
                    bias[row] -= s;
                    mag[row] += s;
                }
            }
            // The nonlinear families' relaxed forward pass reads the coefficients.
            if rec.acts && with_family!(&node.op, f => f.needs()) != Need::No {
                at_activation[idx] = Some(a.clone());
                act_support[idx] = Some(s_out.clone());
            }
            let al = alphas.and_then(|al| al[idx].as_deref());
            match backward::backward(&ctx, node, a, al, &s_out) {
                Back::Linear {
                    inputs,
                    bias: b,
                    mag: m,
                } => {
                    for row in 0..r {
                        bias[row] += b[row];
                        mag[row] += m[row];
                    }
                    let at = At { g, node, batch: r };
                    let in_sup = with_family!(&node.op, f => f.back_support(&at, &s_out));
                    for ((&iv, ai), si) in node.inputs.iter().zip(inputs).zip(in_sup) {
                        let si = keep(si);
                        let Some(ai) = ai else { continue };
                        match &mut coef[iv] {
                            Some(acc) => {
                                acc.iter_mut().zip(&ai).for_each(|(x, y)| *x += y);
                                sup[iv] = backward::union_support(&sup[iv], &si);
                            }
                            slot => {
                                *slot = Some(ai);
                                sup[iv] = si;
                            }
                        }
                    }
                }
                Back::Concretize(a) => {
                    let bd = self.bounds[out].as_ref().expect("bounds");
                    for row in 0..r {
                        let d = rows[row];
                        let (s, m) = self.concretize_row(out, &a, bd, row, d, s_out[row]);
                        bias[row] += s;
                        mag[row] += m;
                    }
                }
            }
        }
        let at_input = coef[g.input].take();
        let s_in = std::mem::take(&mut sup[g.input]);
        let bx = self.bounds[g.input].as_ref().expect("input bounds");
        let plain: Vec<f64> = (0..r)
            .map(|row| {
                let d = rows[row];
                let (s, m) = match &at_input {
                    Some(a) => self.concretize_row(g.input, a, bx, row, d, s_in[row]),
                    None => (0.0, 0.0),
                };
                self.safe_total(bias[row] + s, mag[row] + m)
            })
            .collect();
        Pass {
            lower: plain.iter().zip(&early).map(|(p, e)| p.max(*e)).collect(),
            plain,
            at_activation,
            act_support,
            at_input: if rec.input { at_input } else { None },
        }
    }

    /// [`concretize`] of row `row` (domain `d`) of the coefficients `a` of value `v` on its
    /// bounds `b`, over the row's box `rect` (the terms outside it are zero).
    fn concretize_row(
        &self,
        v: ValueId,
        a: &[f64],
        b: &Intervals,
        row: usize,
        d: usize,
        rect: Option<Rect>,
    ) -> (f64, f64) {
        let n = self.g.values[v].numel();
        let (a, lo, hi) = (
            &a[row * n..(row + 1) * n],
            &b.lo[d * n..(d + 1) * n],
            &b.hi[d * n..(d + 1) * n],
        );
        backward::sum_runs(self.g, v, rect, |rg| {
            concretize(&a[rg.clone()], &lo[rg.clone()], &hi[rg])
        })
    }

    /// Add each row's split terms on value `out` (`n` elements) to its coefficients.
    fn inject_betas(
        &self,
        out: ValueId,
        n: usize,
        rows: &[usize],
        betas: &Betas,
        coef: &mut Option<Vec<f64>>,
        sup: &mut Support,
    ) {
        for (row, &d) in rows.iter().enumerate() {
            for (&(sv, j, active), &b) in self.splits[d].iter().zip(&betas[row]) {
                if sv != out || b == 0.0 {
                    continue;
                }
                if coef.is_none() {
                    // Nothing reached `out` yet: every row starts empty.
                    let empty = self.local_rows.then_some(Rect::default());
                    *sup = vec![empty; rows.len()];
                }
                let a = coef.get_or_insert_with(|| vec![0.0; rows.len() * n]);
                a[row * n + j] += if active { -b } else { b };
                sup[row] = sup[row].and_then(|r| Some(r.union(Rect::at(self.g.plane(out)?, j))));
            }
        }
    }

    /// Raise `early[row]` to the bound got by concretising every live coefficient set
    /// `coef` on its value's bounds, with the same rounding allowance as the final bound.
    fn concretize_early(
        &self,
        coef: &[Option<Vec<f64>>],
        sup: &[Support],
        bias: &[f64],
        mag: &[f64],
        rows: &[usize],
        early: &mut [f64],
    ) {
        for (row, &d) in rows.iter().enumerate() {
            let (mut total, mut m) = (bias[row], mag[row]);
            for (v, a) in coef.iter().enumerate() {
                let Some(a) = a else { continue };
                let Some(b) = self.bounds[v].as_ref() else {
                    return;
                };
                let rect = sup[v].get(row).copied().flatten();
                let (s, sm) = self.concretize_row(v, a, b, row, d, rect);
                total += s;
                m += sm;
            }
            early[row] = early[row].max(self.safe_total(total, m));
        }
    }

    /// A row's bound from its f64 sum `total` of terms with magnitudes summing to `mag`:
    /// lowered by `gamma64(terms_total)` times the magnitudes (the sum's own included) and
    /// rounded down; `-inf` if it is NaN.
    fn safe_total(&self, total: f64, mag: f64) -> f64 {
        let g64 = gamma(self.terms_total, 1.1102230246251565e-16);
        let lb = (total - g64 * (mag + total.abs())).next_down();
        if lb.is_nan() { f64::NEG_INFINITY } else { lb }
    }

    /// Terms bound used by backward steps (for tests and diagnostics).
    pub fn terms(&self) -> usize {
        self.terms
    }
}

/// `min over [lo, hi] of a . x` (computed in f64) and the sum of the magnitudes of its terms.
pub fn concretize(a: &[f64], lo: &[f64], hi: &[f64]) -> (f64, f64) {
    crate::domain::sum_mag3(a, lo, hi, |c, l, h| {
        // For `l <= h`, rounding is monotone, so the smaller product is the rounded `c l`
        // when `c > 0` and `c h` when `c < 0`: the term a branch would pick, without the
        // branch. A zero coefficient contributes nothing, even on an unbounded element
        // (`min` drops one NaN from `0 * inf`; the guard catches both).
        let t = (c * l).min(c * h);
        if c == 0.0 { 0.0 } else { t }
    })
}

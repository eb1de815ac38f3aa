//! Complete verification by branch and bound: what input splitting ([`input`]) and ReLU
//! splitting ([`relu`]) share lives here (domains' rows, the refutation of disjuncts, the
//! batched CROWN/alpha-CROWN bounding, counterexample checks).
//!
//! * **Input splitting** (few input dimensions, e.g. ACAS Xu): a domain is a sub-box; the
//!   candidates are the five dimensions with the largest influence `sum_rows |A_x[r, i]| *
//!   width_i` (the CROWN coefficients reaching the input) plus relative width; each one's
//!   two children are bounded, and the split whose children come closest to a proof is kept
//!   when it gains clearly over the best-scored dimension (a one-step lookahead). Children
//!   start from the parent's bounds of every value; open conjunctions are also refuted by a
//!   combined row ([`combine`]); the hardest open boxes are sampled for counterexamples.
//!   alpha-beta-CROWN's smart-branching rule ([`InputBranching::Sb`]: the dimension with the
//!   largest `|A_x| * width / 2` plus margin, no children bounded) is the alternative; on
//!   ACAS Xu its proof trees had 2.3-158x the lookahead's nodes and it proved 161 instead of
//!   184 of 186 at a tenth of the limits (README, input splitting), so the lookahead is the
//!   default.
//! * **ReLU splitting** (many inputs): a domain is a set of split constraints `z_j >= 0` /
//!   `z_j <= 0` on undecided pre-activations, enforced by clamping their bounds, which is sound
//!   because every bound computed on the whole box holds on the subset the constraints carve
//!   out; children inherit the parent's bounds, and recompute those after their newest split
//!   only where the first batches showed that this narrows them (`Gain` in [`relu`]). The
//!   neuron split is chosen by filtered smart branching ([`branch`]): BaBSR's score (the slack
//!   the upper relaxation line adds to the bound, `max(-A_j, 0) * (-u l/(u-l))`) picks three
//!   candidates, and a one-step bound of both children of each picks among them; a child of
//!   the chosen split that bound already refutes is a leaf, not bounded again.
//!   The final bound is beta-CROWN: alpha-CROWN plus one Lagrange multiplier per split (see
//!   [`Crown::pass`]), so the splits also constrain the input instead of only their own
//!   neurons' relaxations. Children start the ascent from their parent's best slopes and
//!   multipliers. Without both, mnistfc 256x2 prop_10 (eps 0.05) ended `unknown` after
//!   reaching leaves; with them it is proved in 83 domains. The root starts from the region's
//!   alpha-CROWN intermediate bounds, optimised as far as their share of the time allowed and
//!   CROWN's from there on ([`super::root_bounds`]).
//!
//! Each iteration bounds a batch of domains together (CROWN, then alpha-CROWN on what is still
//! open), drops refuted ones, checks candidate points (box centres, the CROWN minimisers and,
//! under input splitting, the combined rows' least safe points),
//! and splits the rest. The order is depth-first, deterministic for a given input, and the
//! number of open domains is capped.

mod branch;
mod input;
mod relu;

pub(crate) use input::bound_boxes;
pub(crate) use relu::lp_refutes_domain;

use super::attack::{self, to_f32_inside};
use super::combine;
use super::{Counterexample, VerifyOptions};
use crate::bounds::alpha;
use crate::bounds::crown::{Crown, CrownConfig, Record, Seeds};
use crate::domain::{Intervals, gamma};
use crate::ir::ValueId;
use crate::network::Network;
use crate::spec::Region;
use crate::transformers::relax;
use std::sync::Arc;
use std::time::Instant;

/// Result of branch and bound on one region.
#[derive(Debug)]
pub enum BabOutcome {
    /// Every domain refuted, with the search tree as proof material
    /// ([`crate::verify::proof`]) where it could be encoded.
    Verified(Option<crate::verify::proof::Material>),
    Falsified(Counterexample),
    Unknown,
    Timeout,
}

/// Counters for reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct BabStats {
    pub domains: usize,
    /// Of `domains`, the children of ReLU splits that the branching's one-step bound already
    /// refuted (proved leaves, not bounded again).
    pub fsb_closed: usize,
    pub iterations: usize,
    pub max_open: usize,
}

impl BabStats {
    /// Add the counters of another search (of another region, or an earlier search).
    pub fn add(&mut self, o: &BabStats) {
        self.domains += o.domains;
        self.fsb_closed += o.fsb_closed;
        self.iterations += o.iterations;
        self.max_open = self.max_open.max(o.max_open);
    }
}

/// Settings of branch and bound.
#[derive(Clone, Copy, Debug)]
pub struct BabConfig {
    /// Domains bounded together per iteration (ReLU splitting); input splitting splits a
    /// quarter as many boxes per iteration, bounding every candidate's children.
    pub batch: usize,
    /// Cap on open domains; beyond it the search gives up with `unknown`.
    pub max_open: usize,
    /// Networks with at most this many inputs use input splitting.
    pub input_split_dims: usize,
    /// Input splitting: candidate dimensions bounded before choosing a split (1 = no
    /// lookahead, the best-scored dimension).
    pub lookahead: usize,
    /// ReLU splitting: BaBSR's best neurons re-scored by filtered smart branching before a
    /// split (1 = BaBSR's choice alone).
    pub fsb: usize,
    /// Input splitting: how the split dimension is chosen.
    pub input_branching: InputBranching,
}

/// Input splitting's rule for the dimension to split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InputBranching {
    /// Bound both children of the `lookahead` best-scored dimensions and keep the split
    /// whose children come closest to a proof (when it gains clearly over the first).
    #[default]
    Lookahead,
    /// alpha-beta-CROWN's smart branching ("sb"): the dimension with the largest
    /// `max_rows (max(|A_x|, 1e-3) * width / 2 + margin)`, no children bounded to choose.
    Sb,
}

impl Default for BabConfig {
    fn default() -> Self {
        BabConfig {
            batch: 64,
            max_open: 200_000,
            input_split_dims: 16,
            lookahead: 5,
            fsb: 3,
            input_branching: InputBranching::Lookahead,
        }
    }
}

/// Objective rows of a batch: for each domain, every constraint of every open disjunct.
/// Returns the rows' domains and owners `(domain, disjunct, constraint)`.
fn rows_for(region: &Region, opens: &[&[usize]]) -> (Vec<usize>, Vec<(usize, usize, usize)>) {
    let mut doms = Vec::new();
    let mut owner = Vec::new();
    for (b, open) in opens.iter().enumerate() {
        for &k in open.iter() {
            for ci in 0..region.disjuncts[k].len() {
                doms.push(b);
                owner.push((b, k, ci));
            }
        }
    }
    (doms, owner)
}

/// Disjuncts each domain still has open after the lower bounds `lower` of the rows.
fn still_open(
    region: &Region,
    opens: &[&[usize]],
    owner: &[(usize, usize, usize)],
    lower: &[f64],
) -> Vec<Vec<usize>> {
    let mut refuted: Vec<Vec<usize>> = vec![Vec::new(); opens.len()];
    for (row, &(b, k, ci)) in owner.iter().enumerate() {
        let c = &region.disjuncts[k][ci];
        if super::refuted(c, lower[row]) && !refuted[b].contains(&k) {
            refuted[b].push(k);
        }
    }
    opens
        .iter()
        .zip(refuted)
        .map(|(open, rf)| open.iter().copied().filter(|k| !rf.contains(k)).collect())
        .collect()
}

/// Best slope and multiplier parameters of a domain's rows, by `(disjunct, constraint)`.
type RowWarm = Vec<((usize, usize), alpha::Warm)>;

/// Output of [`bound_batch`].
pub(crate) struct Bounded {
    /// Disjuncts still open per domain.
    pub(crate) open: Vec<Vec<usize>>,
    /// The CROWN pass (its `lower` raised by alpha/beta-CROWN where it ran).
    pass: crate::bounds::crown::Pass,
    /// Owner `(domain, disjunct, constraint)` of each row.
    owner: Vec<(usize, usize, usize)>,
    /// Each domain's optimised row parameters (empty where alpha-CROWN did not run).
    warm: Vec<RowWarm>,
}

/// Bound a batch: CROWN rows (recording what `rec` asks), then alpha-CROWN (beta-CROWN on
/// domains with splits) on rows whose disjunct is still open, each row starting from
/// `warm[domain]`'s parameters for it where given (`warm` may be empty).
pub(crate) fn bound_batch(
    c: &Crown,
    region: &Region,
    opens: &[&[usize]],
    opts: &VerifyOptions,
    rec: Record,
    deadline: Option<Instant>,
    warm: &[&RowWarm],
) -> Bounded {
    let g = c.g;
    let (doms, owner) = rows_for(region, opens);
    let fill = |r: usize, a: &mut [f64]| fill_row(region, &owner, r, a);
    let mut pass = c.passes(g.output, &doms, None, fill, rec);
    let mut open = still_open(region, opens, &owner, &pass.lower);
    let mut params: Vec<RowWarm> = vec![Vec::new(); opens.len()];
    if opts.method == crate::bounds::Method::AlphaCrown && open.iter().any(|o| !o.is_empty()) {
        // Optimise only the rows of disjuncts still open.
        let sel: Vec<usize> = (0..owner.len())
            .filter(|&r| open[owner[r].0].contains(&owner[r].1))
            .collect();
        let sdoms: Vec<usize> = sel.iter().map(|&r| doms[r]).collect();
        let acfg = alpha::AlphaConfig {
            deadline,
            ..opts.alpha
        };
        let start: Vec<Option<&alpha::Warm>> = sel
            .iter()
            .map(|&r| {
                let (b, k, ci) = owner[r];
                let w = warm.get(b)?;
                w.iter().find(|e| e.0 == (k, ci)).map(|e| &e.1)
            })
            .collect();
        // A row whose bound refutes its constraint needs no further steps.
        let refutes = |r: usize, l: f64| {
            let (_, k, ci) = owner[sel[r]];
            super::refuted(&region.disjuncts[k][ci], l)
        };
        let (opt, best) = alpha::optimize_warm(
            c,
            g.output,
            &sdoms,
            |r, a| fill(sel[r], a),
            &acfg,
            &start,
            refutes,
        );
        for ((&r, l), p) in sel.iter().zip(opt).zip(best) {
            pass.lower[r] = pass.lower[r].max(l);
            let (b, k, ci) = owner[r];
            params[b].push(((k, ci), p));
        }
        open = still_open(region, opens, &owner, &pass.lower);
    }
    Bounded {
        open,
        pass,
        owner,
        warm: params,
    }
}

/// Run branch and bound on `region` for the disjuncts `open`; `root` holds bounds of every
/// value known to hold on the whole region (e.g. from LP tightening), or `None`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    net: &Network,
    region: &Region,
    ri: usize,
    open: Vec<usize>,
    root: Option<Vec<Option<Intervals>>>,
    opts: &VerifyOptions,
    cfg: &BabConfig,
    deadline: Option<Instant>,
) -> (BabOutcome, BabStats) {
    let s = Search {
        net,
        region,
        ri,
        opts,
        cfg,
        deadline,
    };
    if net.analysis.input_numel() <= cfg.input_split_dims {
        input::input_split(&s, open)
    } else {
        relu::relu_split(&s, open, root)
    }
}

impl Search<'_> {
    /// The start of every iteration of both searches: stop on the deadline (`timeout`) or when
    /// too many domains are open (`unknown`), else count the iteration.
    fn next_iteration(&self, open: usize, stats: &mut BabStats) -> Option<BabOutcome> {
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            return Some(BabOutcome::Timeout);
        }
        if open > self.cfg.max_open {
            return Some(BabOutcome::Unknown);
        }
        stats.max_open = stats.max_open.max(open);
        stats.iterations += 1;
        None
    }
}

/// The spec row of `owner[r]`'s constraint, added into `a` (the objective of a CROWN pass).
fn fill_row(region: &Region, owner: &[(usize, usize, usize)], r: usize, a: &mut [f64]) {
    let (_, k, ci) = owner[r];
    for &(j, v) in &region.disjuncts[k][ci].coeffs {
        a[j] += v;
    }
}

/// What a search of one region works with.
#[derive(Clone, Copy)]
struct Search<'a> {
    net: &'a Network,
    region: &'a Region,
    /// Index of the region in its spec (counterexamples name it).
    ri: usize,
    opts: &'a VerifyOptions,
    cfg: &'a BabConfig,
    deadline: Option<Instant>,
}

pub(crate) fn crown_cfg(opts: &VerifyOptions, deadline: Option<Instant>) -> CrownConfig {
    CrownConfig {
        mode: opts.fp_mode,
        deadline,
        ..CrownConfig::default()
    }
}

/// Per value, the bounds of several single domains laid out as one batch (`None` where any
/// domain lacks them).
pub(crate) fn concat_bounds(per: &[&Vec<Option<Intervals>>]) -> Vec<Option<Intervals>> {
    let nv = per.first().map_or(0, |p| p.len());
    (0..nv)
        .map(|v| {
            let parts: Option<Vec<&Intervals>> = per.iter().map(|p| p[v].as_ref()).collect();
            parts.map(|ps| {
                Intervals::new(
                    ps.iter().flat_map(|b| b.lo.iter().copied()).collect(),
                    ps.iter().flat_map(|b| b.hi.iter().copied()).collect(),
                )
            })
        })
        .collect()
}

/// Evaluate candidate points (concatenated) and return the first checked counterexample.
fn check_points(net: &Network, region: &Region, ri: usize, xs: &[f32]) -> Option<Counterexample> {
    let ni = net.exec.input_numel();
    let n = xs.len() / ni.max(1);
    if n == 0 {
        return None;
    }
    let no = net.exec.output_numel();
    let ys = crate::eval::forward_par::<f32>(&net.exec, xs, n, 256).ok()?;
    (0..n).find_map(|s| {
        let y: Vec<f64> = ys[s * no..(s + 1) * no].iter().map(|&v| v as f64).collect();
        region.violated_by(&y)?;
        attack::check_candidate(net, region, ri, &xs[s * ni..(s + 1) * ni])
    })
}

//! Verification of a VNN-LIB property: one verdict type, rendered as VNN-COMP words.
//!
//! Incomplete verification runs the bound methods in order of cost: IBP, then CROWN with the
//! spec folded into the backward pass, then alpha-CROWN on the constraints still open. An
//! unsafe disjunct (a conjunction of `c y <= d`) is refuted when the lower bound of some `c y`
//! exceeds `d`; the property is `unsat` when every disjunct of every region is refuted.
//! Falsification ([`attack`]) runs first cheaply (random points) and again with gradients on
//! whatever the bounds leave open; a `sat` always carries a re-checked counterexample.
//!
//! Complete verification then goes region by region: branch and bound ([`bab`]), which for
//! networks that branch on ReLUs starts from the region's alpha-CROWN intermediate bounds
//! ([`root_bounds`]). The LP stage ([`lp_stage`]) that ran before it is kept only to check
//! proofs of earlier versions that started from its bounds.

pub mod attack;
pub mod bab;
pub mod combine;
pub mod files;
pub mod proof;

use crate::bounds::{self, Method, Objective, alpha, crown, linear_min};
use crate::domain::{FpMode, Intervals};
use crate::network::Network;
use crate::spec::{Constraint, Region, Spec, SpecError};
use serde::Serialize;
use std::time::{Duration, Instant};

/// A checked counterexample: an input inside the spec's region whose output (as computed by
/// the concrete evaluator) satisfies an unsafe disjunct.
#[derive(Clone, Debug, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Counterexample {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub region: usize,
    pub disjunct: usize,
    /// The violation holds for every float32 evaluation order (not only the evaluator's).
    pub robust: bool,
}

/// Outcome of a verification.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// The unsafe set is unreachable (`unsat`).
    Verified,
    /// A checked counterexample reaches the unsafe set (`sat`).
    Falsified(Counterexample),
    /// Neither proved nor falsified.
    Unknown,
    /// The time limit ran out.
    Timeout,
    /// The analysis could not run.
    Error(String),
}

impl Verdict {
    /// VNN-COMP result word.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Verified => "unsat",
            Verdict::Falsified(_) => "sat",
            Verdict::Unknown => "unknown",
            Verdict::Timeout => "timeout",
            Verdict::Error(_) => "error",
        }
    }

    /// Process exit code: 0 verified, 1 falsified, 3 unknown or timeout, 2 error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Verified => 0,
            Verdict::Falsified(_) => 1,
            Verdict::Unknown | Verdict::Timeout => 3,
            Verdict::Error(_) => 2,
        }
    }
}

/// Settings of a verification run.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    pub timeout: Option<Duration>,
    pub fp_mode: FpMode,
    /// Strongest bound method to try.
    pub method: Method,
    pub alpha: alpha::AlphaConfig,
    /// Falsification settings; `None` disables attacks.
    pub attack: Option<attack::AttackConfig>,
    /// Branch-and-bound settings; `None` stops after incomplete methods.
    pub bab: Option<bab::BabConfig>,
    /// LP within these limits on ReLU-splitting domains with nothing left to split (and the
    /// LP stage of proofs of earlier versions); `None` skips it.
    pub lp: Option<crate::lp::LpLimits>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            timeout: None,
            fp_mode: FpMode::Deployed,
            method: Method::AlphaCrown,
            alpha: alpha::AlphaConfig::default(),
            attack: Some(attack::AttackConfig::default()),
            bab: Some(bab::BabConfig::default()),
            lp: Some(crate::lp::LpLimits::default()),
        }
    }
}

impl VerifyOptions {
    /// Bounds only, up to `method`: no attack, no LP stage, no branch and bound.
    pub fn incomplete(method: Method) -> Self {
        VerifyOptions {
            method,
            attack: None,
            bab: None,
            lp: None,
            ..VerifyOptions::default()
        }
    }
}

/// Verdict with the evidence gathered.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub verdict: Verdict,
    /// Strongest method that was needed (or the last one tried).
    pub method: &'static str,
    pub regions: usize,
    pub regions_proved: usize,
    pub disjuncts: usize,
    pub disjuncts_proved: usize,
    /// Disjuncts refuted by each method, in order IBP, CROWN, alpha-CROWN, LP (no longer run
    /// before branch and bound: 0, kept so the JSON keeps its shape).
    pub proved_by: [usize; 4],
    /// Regions settled by branch and bound, and its counters.
    pub bab_regions: usize,
    pub bab: bab::BabStats,
    /// Proof material of the regions input splitting proved ([`proof`]).
    pub proofs: Vec<proof::RegionProof>,
    pub elapsed: Duration,
}

/// Whether the output box `[lo, hi]` provably avoids the conjunction.
pub fn box_refutes(conj: &[Constraint], lo: &[f64], hi: &[f64]) -> bool {
    conj.iter()
        .any(|c| refuted(c, linear_min(&c.coeffs, lo, hi)))
}

/// Whether a lower bound of `c y` refutes `c y <= rhs` (`<` when strict).
pub(crate) fn refuted(c: &Constraint, lower: f64) -> bool {
    if c.strict {
        lower >= c.rhs
    } else {
        lower > c.rhs
    }
}

/// Regions bounded together as one batch of domains.
const REGION_BATCH: usize = 64;

/// Open disjuncts of a batch: `(region in batch, disjunct index)`.
type Open = Vec<(usize, usize)>;

/// Verify `spec` on `net` by incomplete methods up to `opts.method`.
pub fn verify(net: &Network, spec: &Spec, opts: &VerifyOptions) -> Result<VerifyReport, SpecError> {
    let start = Instant::now();
    let g = &net.analysis;
    spec.check_against(g.input_numel(), g.output_numel())?;
    let mut report = VerifyReport {
        verdict: Verdict::Unknown,
        method: "ibp",
        regions: spec.regions.len(),
        regions_proved: 0,
        disjuncts: spec.disjunct_count(),
        disjuncts_proved: 0,
        proved_by: [0; 4],
        bab_regions: 0,
        bab: bab::BabStats::default(),
        proofs: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let timed_out = || opts.timeout.is_some_and(|t| start.elapsed() > t);
    let deadline = opts.timeout.map(|t| start + t);
    let finish = |mut report: VerifyReport, v: Verdict| {
        report.verdict = v;
        report.elapsed = start.elapsed();
        Ok(report)
    };
    if let Some(cfg) = &opts.attack {
        if let Some(cex) = attack::random_search(net, &spec.regions, cfg, deadline) {
            report.method = "attack";
            return finish(report, Verdict::Falsified(cex));
        }
    }
    let mut open_all: Vec<(usize, Vec<usize>)> = Vec::new();
    // PGD starts `(disjunct, point)` of each region from its bounds (see [`attack::pgd`]).
    let mut pgd_starts: Vec<Vec<(usize, Vec<f64>)>> = vec![Vec::new(); spec.regions.len()];
    for (ci, chunk) in spec.regions.chunks(REGION_BATCH).enumerate() {
        if timed_out() {
            return finish(report, Verdict::Timeout);
        }
        let (open, starts) = prove_batch(net, chunk, opts, &mut report, &timed_out);
        for (b, k, x) in starts {
            pgd_starts[ci * REGION_BATCH + b].push((k, x));
        }
        let mut per_region: Vec<Vec<usize>> = vec![Vec::new(); chunk.len()];
        for &(b, k) in &open {
            per_region[b].push(k);
        }
        for (b, ks) in per_region.into_iter().enumerate() {
            if ks.is_empty() {
                report.regions_proved += 1;
            } else {
                open_all.push((ci * REGION_BATCH + b, ks));
            }
        }
    }
    if open_all.is_empty() {
        return finish(report, Verdict::Verified);
    }
    if let Some(cfg) = &opts.attack {
        for (ri, ks) in &open_all {
            let (region, starts) = (&spec.regions[*ri], &pgd_starts[*ri]);
            if let Some(cex) = attack::pgd(net, region, *ri, ks, starts, cfg, deadline) {
                report.method = "attack";
                return finish(report, Verdict::Falsified(cex));
            }
        }
    }
    let Some(bcfg) = &opts.bab else {
        let v = if timed_out() {
            Verdict::Timeout
        } else {
            Verdict::Unknown
        };
        return finish(report, v);
    };
    // ReLU splitting starts each region from alpha-CROWN intermediate bounds where they come
    // in time; input splitting (few inputs, e.g. ACAS Xu) bounds boxes, not ReLUs.
    let relu_split = opts.method == Method::AlphaCrown && g.input_numel() > bcfg.input_split_dims;
    let mut undecided = None;
    for (ri, ks) in open_all {
        let region = &spec.regions[ri];
        let root = if relu_split {
            root_bounds(net, region, opts, deadline, None)
        } else {
            None
        };
        // The proof names where the search started (see `RegionProof::lp_layers` and
        // `RegionProof::alpha_nodes`).
        let (lp_layers, alpha_nodes) = (
            root.as_ref().map(|_| 0),
            root.as_ref().and_then(|r| r.alpha_nodes),
        );
        let root = root.map(|r| r.bounds);
        let (out, st) = bab::run(net, region, ri, ks.clone(), root, opts, bcfg, deadline);
        report.bab.add(&st);
        match out {
            bab::BabOutcome::Verified(tree) => {
                record_search_proof(&mut report, ri, ks, tree, lp_layers, alpha_nodes);
            }
            bab::BabOutcome::Falsified(cex) => {
                report.method = "bab";
                return finish(report, Verdict::Falsified(cex));
            }
            bab::BabOutcome::Timeout => {
                report.method = "bab";
                return finish(report, Verdict::Timeout);
            }
            bab::BabOutcome::Unknown => undecided = Some(Verdict::Unknown),
        }
    }
    report.method = "bab";
    finish(report, undecided.unwrap_or(Verdict::Verified))
}

/// Share of the time left that the root's alpha-CROWN optimisation may take (see
/// [`root_bounds`]). It takes 0.4-1.5 s on mnistfc and oval21 (limits of 30-75 s), 7-9 s on
/// cifar10_resnet resnet_2b and 36 s on resnet_4b (one thread; 30 s limits). With a tenth,
/// cut short on both resnets, prop_10, prop_22 and prop_47 of resnet_2b timed out; with 0.3
/// they are proved in 20-25 s, from the full root. Half proved no more of the 11 open
/// resnet instances.
const ROOT_SHARE: f64 = 0.3;

/// Bounds the ReLU-splitting search starts from.
pub(crate) struct Root {
    /// Bounds of every value on the region.
    pub(crate) bounds: Vec<Option<Intervals>>,
    /// The first node whose intermediate bounds alpha-CROWN did not optimise (CROWN's from
    /// there on), when it stopped before the end ([`crown::Crown::alpha_nodes`]).
    pub(crate) alpha_nodes: Option<usize>,
}

/// Bounds of every value on `region` with alpha-CROWN intermediate bounds (each unstable
/// ReLU input's bounds optimised for itself), to start ReLU splitting from. With a
/// `deadline`, the optimisation stops at [`ROOT_SHARE`] of the time left, and the node it was
/// optimising when it stopped and every later one keep CROWN's bounds; `alpha_nodes` (for a
/// proof checker) rebuilds such bounds without a clock. `None` (start from CROWN's) when
/// not even CROWN's bounds finish before `deadline`.
///
/// Measured against the LP stage that ran here before (layer-wise LP tightening from these
/// bounds, then LP on the open constraints, a third of the time): its LPs narrowed the
/// unstable neurons by 0.0-0.1 % on mnistfc, oval21 and cifar10_resnet instances and proved
/// no constraint, while the search from these bounds proved the same instances 1.2-16x
/// sooner (mnistfc 256x6 prop_7_0.03 30.4 -> 1.9 s, oval21 cifar_base_kw img8717 32.7 -> 4.6
/// s).
pub(crate) fn root_bounds(
    net: &Network,
    region: &Region,
    opts: &VerifyOptions,
    deadline: Option<Instant>,
    alpha_nodes: Option<usize>,
) -> Option<Root> {
    let g = &net.analysis;
    let cap = deadline.map(|d| {
        let now = Instant::now();
        now + d.saturating_duration_since(now).mul_f64(ROOT_SHARE)
    });
    let input = Intervals::new(region.lower.clone(), region.upper.clone());
    let cfg = crown::CrownConfig {
        alpha_deadline: cap,
        alpha_nodes: alpha_nodes.unwrap_or(usize::MAX),
        ..root_config(opts, deadline)
    };
    let c = crown::Crown::new(g, input, 1, cfg);
    // Past `deadline` later values kept IBP's bounds, which nothing rebuilds. Before it,
    // every check inside saw time left, so only `alpha_deadline` cut anything short, and
    // `alpha_nodes` names where.
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return None;
    }
    let k = c.alpha_nodes();
    Some(Root {
        bounds: c.domain_bounds(0),
        alpha_nodes: (k < g.nodes.len()).then_some(k),
    })
}

/// Settings of the root's bounds (and of the LP stage's, which started from them).
fn root_config(opts: &VerifyOptions, deadline: Option<Instant>) -> crown::CrownConfig {
    crown::CrownConfig {
        mode: opts.fp_mode,
        deadline,
        intermediate: crown::Intermediate::Alpha,
        alpha: opts.alpha,
        ..Default::default()
    }
}

/// Count a region branch and bound proved and keep its proof material.
fn record_search_proof(
    report: &mut VerifyReport,
    region: usize,
    disjuncts: Vec<usize>,
    tree: Option<proof::Material>,
    lp_layers: Option<usize>,
    alpha_nodes: Option<usize>,
) {
    report.bab_regions += 1;
    report.regions_proved += 1;
    if let Some(m) = tree {
        report.proofs.push(proof::RegionProof {
            region,
            disjuncts,
            branching: m.branching,
            lp_layers,
            alpha_nodes,
            nodes: m.nodes,
            tree: proof::to_hex(&m.bytes),
        });
    }
}

/// Result of [`lp_stage`] on one region.
pub(crate) struct LpStage {
    /// Disjuncts still open.
    pub(crate) left: Vec<usize>,
    /// Bounds of every value after LP tightening (sound on the region), to seed branch and
    /// bound; `None` when the network is too large for the limits.
    pub(crate) bounds: Option<Vec<Option<Intervals>>>,
    /// Layers LP tightening finished (the rest kept their CROWN bounds).
    pub(crate) layers: usize,
}

/// LP stage on one region: layer-wise LP tightening of the undecided neurons from the root's
/// bounds ([`root_config`]), then LP on the constraints of the open disjuncts. All disjuncts
/// stay open when the network is too large for the limits or the solver fails; the layers
/// tightened before a time limit are kept. `verify` no longer runs it (see [`root_bounds`]);
/// the proof checker does, for proofs of earlier versions whose search started from it.
pub(crate) fn lp_stage(
    net: &Network,
    region: &Region,
    open: &[usize],
    opts: &VerifyOptions,
    limits: &crate::lp::LpLimits,
    deadline: Option<Instant>,
    layers: Option<usize>,
) -> LpStage {
    let g = &net.analysis;
    let cfg = root_config(opts, deadline);
    let input = Intervals::new(region.lower.clone(), region.upper.clone());
    let Ok((c, layers)) = crate::lp::tighten_layers(g, input, cfg, limits, layers) else {
        return LpStage {
            left: open.to_vec(),
            bounds: None,
            layers: 0,
        };
    };
    let run = || -> Result<Vec<usize>, crate::lp::LpError> {
        let enc = crate::lp::Encoding::new(&c, 0, limits.max_nnz)?;
        let owner: Vec<(usize, usize)> = open
            .iter()
            .flat_map(|&k| (0..region.disjuncts[k].len()).map(move |ci| (k, ci)))
            .collect();
        let objs: Vec<Vec<(usize, f64)>> = owner
            .iter()
            .map(|&(k, ci)| region.disjuncts[k][ci].coeffs.clone())
            .collect();
        let res = enc.lower_bounds(g.output, &objs, deadline)?;
        let mut refuted_k: Vec<usize> = Vec::new();
        for (t, &(k, ci)) in owner.iter().enumerate() {
            if refuted(&region.disjuncts[k][ci], res[t].safe) && !refuted_k.contains(&k) {
                refuted_k.push(k);
            }
        }
        Ok(open
            .iter()
            .copied()
            .filter(|k| !refuted_k.contains(k))
            .collect())
    };
    let left = run().unwrap_or_else(|_| open.to_vec());
    let bounds = Some(c.domain_bounds(0));
    LpStage {
        left,
        bounds,
        layers,
    }
}

/// Run IBP, CROWN and alpha-CROWN on a batch of regions; returns the disjuncts left open
/// `(region, disjunct)` and, per constraint of theirs, the box corner where its CROWN linear
/// lower bound is least `(region, disjunct, corner)`: PGD starts.
fn prove_batch(
    net: &Network,
    regions: &[Region],
    opts: &VerifyOptions,
    report: &mut VerifyReport,
    timed_out: &dyn Fn() -> bool,
) -> (Open, Vec<(usize, usize, Vec<f64>)>) {
    let g = &net.analysis;
    let no = g.output_numel();
    let nb = regions.len();
    let input = Intervals::new(
        regions
            .iter()
            .flat_map(|r| r.lower.iter().copied())
            .collect(),
        regions
            .iter()
            .flat_map(|r| r.upper.iter().copied())
            .collect(),
    );
    // IBP.
    let out = bounds::ibp(g, input.clone(), nb, opts.fp_mode);
    let mut open: Open = Vec::new();
    for (b, r) in regions.iter().enumerate() {
        let (l, h) = (&out.lo[b * no..(b + 1) * no], &out.hi[b * no..(b + 1) * no]);
        for (k, d) in r.disjuncts.iter().enumerate() {
            if box_refutes(d, l, h) {
                report.proved_by[0] += 1;
                report.disjuncts_proved += 1;
            } else {
                open.push((b, k));
            }
        }
    }
    if open.is_empty() || opts.method == Method::Ibp || timed_out() {
        return (open, Vec::new());
    }
    // CROWN with the spec rows folded in.
    report.method = "crown";
    let cfg = crown::CrownConfig {
        mode: opts.fp_mode,
        ..Default::default()
    };
    let c = crown::Crown::new(g, input, nb, cfg);
    let rows_of = |open: &Open| -> (Vec<Objective>, Vec<(usize, usize, usize)>) {
        let mut objs = Vec::new();
        let mut owner = Vec::new();
        for &(b, k) in open {
            for (ci, con) in regions[b].disjuncts[k].iter().enumerate() {
                objs.push(Objective {
                    domain: b,
                    coeffs: con.coeffs.clone(),
                });
                owner.push((b, k, ci));
            }
        }
        (objs, owner)
    };
    let settle = |open: &Open,
                  owner: &[(usize, usize, usize)],
                  lower: &[f64],
                  report: &mut VerifyReport,
                  stage: usize|
     -> Open {
        let mut refuted_set = std::collections::HashSet::new();
        for (row, &(b, k, ci)) in owner.iter().enumerate() {
            if refuted(&regions[b].disjuncts[k][ci], lower[row]) {
                refuted_set.insert((b, k));
            }
        }
        report.proved_by[stage] += refuted_set.len();
        report.disjuncts_proved += refuted_set.len();
        open.iter()
            .copied()
            .filter(|bk| !refuted_set.contains(bk))
            .collect()
    };
    let (objs, owner) = rows_of(&open);
    let rows: Vec<usize> = objs.iter().map(|o| o.domain).collect();
    let fill = |objs: &[Objective]| {
        let objs = objs.to_vec();
        move |r: usize, a: &mut [f64]| {
            for &(j, v) in &objs[r].coeffs {
                a[j] += v;
            }
        }
    };
    // The pass keeps the rows' input coefficients for the PGD starts below.
    let rec = crown::Record {
        acts: false,
        input: opts.attack.is_some(),
    };
    let crown_pass = c.passes(g.output, &rows, None, fill(&objs), rec);
    let crown_owner = owner;
    let open = settle(&open, &crown_owner, &crown_pass.lower, report, 1);
    let open = if open.is_empty() || opts.method == Method::Crown || timed_out() {
        open
    } else {
        // alpha-CROWN on the constraints still open.
        report.method = "alpha-crown";
        let (objs, owner) = rows_of(&open);
        let rows: Vec<usize> = objs.iter().map(|o| o.domain).collect();
        let lower = alpha::optimize(&c, g.output, &rows, fill(&objs), &opts.alpha);
        settle(&open, &owner, &lower, report, 2)
    };
    // Where CROWN's linear lower bound of each constraint still open is least: PGD starts.
    let mut starts = Vec::new();
    if let Some(ax) = &crown_pass.at_input {
        let ni = g.input_numel();
        for (r, &(b, k, _)) in crown_owner.iter().enumerate() {
            if open.contains(&(b, k)) {
                let reg = &regions[b];
                let x = attack::minimiser_corner(&ax[r * ni..(r + 1) * ni], &reg.lower, &reg.upper);
                starts.push((b, k, x));
            }
        }
    }
    (open, starts)
}

//! Certified patch bound: how much can any `k x k` stamp achieve on the unmodified model?
//!
//! For a correctly classified input `x` of class `c`, a patch position and a target `t != c`,
//! the region is "the `k x k` patch pixels (all channels) free in the valid input range, every
//! other pixel fixed at `x`". CROWN (then alpha-CROWN on what CROWN leaves open) gives a lower
//! bound of `y_c - y_t` over the region, sound for the float32 network as deployed (see
//! [`crate::bounds`]). When it is `> 0`, no patch content at that position makes `t` win for
//! `x`: the input is *immune to t* there (*immune* when immune to every target).
//!
//! A stamp for target `t` succeeds on `x` only if `y_t >= y_c` on the stamped input, so at a
//! position its success rate over the population `P_t` (correctly classified inputs of a class
//! other than `t`) is at most the fraction of `P_t` not immune to `t` there; the maximum over
//! the scanned positions, `certified_asr_bound`, is a proved upper bound on the attack success
//! rate of any `k x k` stamp at a scanned position on this data.
//!
//! Two searches make the bound's gap visible, both *empirical* and both re-checked by the
//! concrete evaluator: PGD inside each region the bound leaves open (a concrete patch that
//! flips one input to `t`, `flipping_patches_found`), and one shared patch per target at its
//! worst positions (`empirical_stamp_asr`, a lower bound on what the best stamp achieves).

use super::{Layout, Progress, ScanConfig, ScanData, ScanError, argmax, predict};
use crate::bounds::{self, BoundOptions, Method, Objective};
use crate::domain::Intervals;
use crate::eval::{self, grad};
use crate::spec::{Constraint, Region};
use crate::verify::attack::{Rng, check_candidate};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Regions bounded together in one CROWN batch (fixed, so results do not depend on threads).
const DOMAIN_CHUNK: usize = 32;
/// Regions attacked together in one PGD batch.
const ATTACK_CHUNK: usize = 256;
/// Regions searched for a flipping patch per patch size, lowest lower bound first.
const MAX_SEARCHED: usize = 50_000;
/// Positions per target at which a shared stamp is searched.
const STAMP_POSITIONS: usize = 3;
/// Steps of the shared-stamp search.
const STAMP_STEPS: usize = 60;
/// Flipping patches kept as examples per target.
const MAX_EXAMPLES: usize = 5;

/// The bound and the searches for one patch size and target.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct PatchEntry {
    pub k: usize,
    pub target: usize,
    /// Proved: no `k x k` stamp at a scanned position reaches a higher attack success rate on
    /// the population.
    pub certified_asr_bound: f64,
    /// Fraction of (input, position) pairs of the population certified immune to the target.
    pub immune_fraction: f64,
    /// (input, position) pairs for which a concrete patch making the target win was found.
    pub flipping_patches_found: usize,
    /// Regions the search tried (those the bound left open, up to a cap).
    pub searched: usize,
    /// Inputs the rates are taken over: correctly classified, of a class other than `target`.
    pub population: usize,
    /// Top-left `[row, col]` of the position where the bound is largest.
    pub worst_position: Option<[usize; 2]>,
    /// Empirical: success rate of the best shared stamp found (at one of the positions with
    /// the largest bound), measured by the deployed evaluator on the population.
    pub empirical_stamp_asr: f64,
    pub stamp_position: Option<[usize; 2]>,
    /// The proved statement, in words.
    pub claim: String,
    /// A few of the flipping patches found.
    pub examples: Vec<FlipExample>,
}

/// A concrete patch that makes `target` win for one input (re-checked by the evaluator).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct FlipExample {
    pub input: usize,
    pub row: usize,
    pub col: usize,
    /// Patch values, `[channel][row][col]` order.
    pub patch: Vec<f32>,
}

/// Per patch size: what was scanned and how much of it is immune to every target.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct PatchSummary {
    pub k: usize,
    pub stride: usize,
    /// Scanned positions (top-left corners).
    pub positions: usize,
    /// Correctly classified inputs.
    pub inputs: usize,
    pub targets: Vec<usize>,
    /// Smallest fraction, over the positions, of inputs immune to every target.
    pub immune_fraction_all_targets: f64,
    /// Bound rows (input, position, target) and how many of them alpha-CROWN settled after
    /// CROWN left them open.
    pub rows: usize,
    pub rows_proved: usize,
    pub rows_proved_by_alpha: usize,
    pub method: String,
}

/// Top-left corners scanned for patch size `k`.
pub fn positions(layout: &Layout, k: usize, stride: usize) -> Vec<(usize, usize)> {
    let rows = (0..=layout.height - k).step_by(stride);
    rows.flat_map(|r| (0..=layout.width - k).step_by(stride).map(move |c| (r, c)))
        .collect()
}

/// Flat input indices of the patch at `(row, col)` (every channel).
pub fn patch_indices(layout: &Layout, k: usize, (row, col): (usize, usize)) -> Vec<usize> {
    let mut v = Vec::with_capacity(k * k * layout.channels);
    for c in 0..layout.channels {
        for r in row..row + k {
            for q in col..col + k {
                v.push(layout.index(c, r * layout.width + q));
            }
        }
    }
    v
}

/// Whether a lower bound of `y_c - y_t` proves immunity (a NaN bound proves nothing).
fn proved(lower: f64) -> bool {
    lower > 0.0
}

/// The region of one (input, position): patch free in `range`, the rest fixed.
fn region_box(x: &[f32], idx: &[usize], (lo, hi): (f64, f64)) -> (Vec<f64>, Vec<f64>) {
    let mut l: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut h = l.clone();
    for &i in idx {
        l[i] = lo;
        h[i] = hi;
    }
    (l, h)
}

/// "Every other class scores below `t`": the unsafe set whose witness is a flip to `t`.
fn flip_region(lo: Vec<f64>, hi: Vec<f64>, t: usize, classes: usize) -> Region {
    let conj = (0..classes)
        .filter(|&j| j != t)
        .map(|j| Constraint {
            coeffs: vec![(j, 1.0), (t, -1.0)],
            rhs: 0.0,
            strict: true,
        })
        .collect();
    Region {
        lower: lo,
        upper: hi,
        input_constraints: vec![],
        disjuncts: vec![conj],
    }
}

/// Lower bounds of `y_c - y_t` for every (input, position, target) of one chunk of regions.
/// Returns `(bounds per region and class, rows proved by alpha-CROWN)`; classes not bounded
/// (the input's own, targets not asked for) hold `+inf`.
fn bound_chunk(
    d: &ScanData,
    cfg: &ScanConfig,
    regions: &[(usize, (usize, usize))],
    k: usize,
    targets: &[usize],
) -> (Vec<f64>, usize) {
    let g = &d.net.analysis;
    let classes = d.classes;
    let boxes = |rs: &[(usize, (usize, usize))]| {
        let (mut lo, mut hi) = (Vec::new(), Vec::new());
        for &(i, pos) in rs {
            let (l, h) = region_box(d.data.item(i), &patch_indices(&d.layout, k, pos), cfg.range);
            lo.extend(l);
            hi.extend(h);
        }
        Intervals::new(lo, hi)
    };
    let mut objs = Vec::new();
    let mut slot = Vec::new();
    for (r, &(i, _)) in regions.iter().enumerate() {
        let c = d.labels[i];
        for &t in targets.iter().filter(|&&t| t != c) {
            objs.push(Objective {
                domain: r,
                coeffs: vec![(c, 1.0), (t, -1.0)],
            });
            slot.push(r * classes + t);
        }
    }
    let mut out = vec![f64::INFINITY; regions.len() * classes];
    let crown = BoundOptions {
        method: Method::Crown,
        ..BoundOptions::default()
    };
    let lb = bounds::objective_lower(g, boxes(regions), regions.len(), &objs, &crown);
    for (&s, &l) in slot.iter().zip(&lb) {
        out[s] = l;
    }
    let mut by_alpha = 0;
    if cfg.method == Method::AlphaCrown {
        // alpha-CROWN only on the regions with a row CROWN left open, only on those rows.
        let open: Vec<usize> = (0..objs.len()).filter(|&o| !proved(lb[o])).collect();
        if !open.is_empty() {
            let mut sub: Vec<usize> = open.iter().map(|&o| objs[o].domain).collect();
            sub.dedup();
            let sub_regions: Vec<_> = sub.iter().map(|&r| regions[r]).collect();
            let sub_objs: Vec<Objective> = open
                .iter()
                .map(|&o| Objective {
                    domain: sub.binary_search(&objs[o].domain).unwrap_or(0),
                    coeffs: objs[o].coeffs.clone(),
                })
                .collect();
            let alpha = BoundOptions {
                method: Method::AlphaCrown,
                ..BoundOptions::default()
            };
            let la = bounds::objective_lower(g, boxes(&sub_regions), sub.len(), &sub_objs, &alpha);
            for (&o, &l) in open.iter().zip(&la) {
                let s = slot[o];
                if l > out[s] {
                    if proved(l) {
                        by_alpha += 1;
                    }
                    out[s] = l;
                }
            }
        }
    }
    (out, by_alpha)
}

/// Lower bounds of `y_c - y_t` for every correctly classified input, scanned position and
/// target (`+inf` where not bounded: the input's own class, targets not asked for).
#[derive(Clone, Debug)]
pub struct PatchBounds {
    pub k: usize,
    /// Top-left corners of the scanned positions.
    pub positions: Vec<(usize, usize)>,
    /// Data indices of the correctly classified inputs.
    pub population: Vec<usize>,
    pub targets: Vec<usize>,
    pub classes: usize,
    /// `[population, positions, classes]`.
    pub lower: Vec<f64>,
    /// Rows CROWN left open that alpha-CROWN proved.
    pub rows_proved_by_alpha: usize,
}

impl PatchBounds {
    /// Lower bound of `y_c - y_t` for population member `pi` at position `q`.
    pub fn at(&self, pi: usize, q: usize, t: usize) -> f64 {
        self.lower[(pi * self.positions.len() + q) * self.classes + t]
    }

    /// Whether member `pi` is certified immune to target `t` at position `q`.
    pub fn immune_to(&self, pi: usize, q: usize, t: usize) -> bool {
        proved(self.at(pi, q, t))
    }
}

/// Bound every (correctly classified input, position, target) for patch size `k`.
pub fn bound_all(d: &ScanData, k: usize, cfg: &ScanConfig, progress: &dyn Progress) -> PatchBounds {
    let pos = positions(&d.layout, k, cfg.stride);
    let targets: Vec<usize> = cfg
        .targets
        .clone()
        .unwrap_or_else(|| (0..d.classes).collect());
    let pop: Vec<usize> = (0..d.data.items)
        .filter(|&i| d.predictions[i] == d.labels[i])
        .collect();
    let regions: Vec<(usize, (usize, usize))> = pop
        .iter()
        .flat_map(|&i| pos.iter().map(move |&p| (i, p)))
        .collect();
    progress.stage(&format!("patch bound k={k}"), regions.len() as u64);
    let parts: Vec<(Vec<f64>, usize)> = regions
        .par_chunks(DOMAIN_CHUNK)
        .map(|ch| {
            let r = bound_chunk(d, cfg, ch, k, &targets);
            progress.inc(ch.len() as u64);
            r
        })
        .collect();
    PatchBounds {
        k,
        positions: pos,
        population: pop,
        targets,
        classes: d.classes,
        rows_proved_by_alpha: parts.iter().map(|p| p.1).sum(),
        lower: parts.into_iter().flat_map(|p| p.0).collect(),
    }
}

/// The certified bound, the searches and the summary for patch size `k`.
pub fn certify(
    d: &ScanData,
    k: usize,
    cfg: &ScanConfig,
    progress: &dyn Progress,
) -> Result<(Vec<PatchEntry>, PatchSummary), ScanError> {
    let pb = bound_all(d, k, cfg, progress);
    let (pos, pop, targets) = (&pb.positions, &pb.population, &pb.targets);
    let npos = pos.len();
    let at = |pi: usize, q: usize, t: usize| pb.at(pi, q, t);
    let (mut rows, mut rows_proved) = (0, 0);
    for (pi, &i) in pop.iter().enumerate() {
        for q in 0..npos {
            for &t in targets.iter().filter(|&&t| t != d.labels[i]) {
                rows += 1;
                rows_proved += usize::from(proved(at(pi, q, t)));
            }
        }
    }
    let immune_all = (0..npos)
        .map(|q| {
            let n = (0..pop.len())
                .filter(|&pi| targets.iter().all(|&t| proved(at(pi, q, t))))
                .count();
            n as f64 / pop.len().max(1) as f64
        })
        .fold(1.0f64, f64::min);

    // Search concrete flips in the open regions, lowest bound first.
    let mut open: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (pi, &i) in pop.iter().enumerate() {
        for q in 0..npos {
            for &t in targets.iter().filter(|&&t| t != d.labels[i]) {
                let l = at(pi, q, t);
                if !proved(l) {
                    open.push((l, pi, q, t));
                }
            }
        }
    }
    open.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then((a.1, a.2, a.3).cmp(&(b.1, b.2, b.3)))
    });
    open.truncate(MAX_SEARCHED);
    let searched_per_target = |t: usize| open.iter().filter(|o| o.3 == t).count();
    let jobs: Vec<(usize, (usize, usize), usize)> = open
        .iter()
        .map(|&(_, pi, q, t)| (pop[pi], pos[q], t))
        .collect();
    progress.stage(&format!("patch search k={k}"), jobs.len() as u64);
    let found: Vec<Option<FlipExample>> = jobs
        .par_chunks(ATTACK_CHUNK)
        .enumerate()
        .map(|(ci, ch)| {
            let r = attack_chunk(d, cfg, k, ch, ci);
            progress.inc(ch.len() as u64);
            r
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();

    let mut entries = Vec::new();
    for &t in targets {
        let pop_t: Vec<usize> = (0..pop.len())
            .filter(|&pi| d.labels[pop[pi]] != t)
            .collect();
        let open_at: Vec<usize> = (0..npos)
            .map(|q| pop_t.iter().filter(|&&pi| !proved(at(pi, q, t))).count())
            .collect();
        let worst = (0..npos).max_by(|&a, &b| open_at[a].cmp(&open_at[b]).then(b.cmp(&a)));
        let n_t = pop_t.len().max(1) as f64;
        let bound = worst.map_or(0.0, |q| open_at[q] as f64 / n_t);
        let immune = if npos == 0 || pop_t.is_empty() {
            1.0
        } else {
            1.0 - open_at.iter().sum::<usize>() as f64 / (n_t * npos as f64)
        };
        let mut examples = Vec::new();
        let mut flips = 0;
        for (j, f) in found.iter().enumerate() {
            let Some(f) = f else { continue };
            if jobs[j].2 != t {
                continue;
            }
            flips += 1;
            if examples.len() < MAX_EXAMPLES {
                examples.push(f.clone());
            }
        }
        // The stamp search at the positions with the largest bound.
        let mut order: Vec<usize> = (0..npos).filter(|&q| open_at[q] > 0).collect();
        order.sort_by(|&a, &b| open_at[b].cmp(&open_at[a]).then(a.cmp(&b)));
        order.truncate(STAMP_POSITIONS);
        let members: Vec<usize> = pop_t.iter().map(|&pi| pop[pi]).collect();
        let mut best_stamp = (0.0, None);
        for &q in &order {
            let asr = shared_stamp(d, cfg, k, pos[q], t, &members)?;
            if asr > best_stamp.0 {
                best_stamp = (asr, Some([pos[q].0, pos[q].1]));
            }
        }
        if best_stamp.0 > bound {
            return Err(ScanError::Soundness(format!(
                "a shared {k}x{k} stamp reached {} on target {t}, above the certified bound {bound}",
                best_stamp.0
            )));
        }
        entries.push(PatchEntry {
            k,
            target: t,
            certified_asr_bound: bound,
            immune_fraction: immune,
            flipping_patches_found: flips,
            searched: searched_per_target(t),
            population: pop_t.len(),
            worst_position: worst.filter(|&q| open_at[q] > 0).map(|q| [pos[q].0, pos[q].1]),
            empirical_stamp_asr: best_stamp.0,
            stamp_position: best_stamp.1,
            claim: format!(
                "No {k} x {k} stamp at a scanned position can reach a higher attack success rate on this data than {bound} (target {t}; {npos} positions at stride {}; {} correctly classified inputs of other classes).",
                cfg.stride,
                pop_t.len()
            ),
            examples,
        });
    }
    let summary = PatchSummary {
        k,
        stride: cfg.stride,
        positions: npos,
        inputs: pop.len(),
        targets: targets.clone(),
        immune_fraction_all_targets: immune_all,
        rows,
        rows_proved,
        rows_proved_by_alpha: pb.rows_proved_by_alpha,
        method: cfg.method.name().to_string(),
    };
    Ok((entries, summary))
}

/// One signed-gradient ascent step size schedule shared by both searches.
fn step_size(step: usize) -> f64 {
    (0.25 * 0.88f64.powi(step as i32)).max(0.01)
}

/// Hinge loss gradient pushing `t` above every other class by a small margin: returns the
/// output gradient of `sum_j max(0, y_j - y_t + kappa)` (to be *descended*).
fn hinge_grad(ys: &[f32], t: usize, out: &mut [f32]) {
    out.fill(0.0);
    let kappa = 1e-3 * (1.0 + ys[t].abs());
    for (j, &v) in ys.iter().enumerate() {
        if j != t && v - ys[t] + kappa > 0.0 {
            out[j] += 1.0;
            out[t] -= 1.0;
        }
    }
}

/// PGD inside each region of a chunk; a patch that makes the target win is re-checked by
/// [`check_candidate`] (float32 input inside the region, float32 and float64 evaluation
/// agreeing beyond their disagreement).
fn attack_chunk(
    d: &ScanData,
    cfg: &ScanConfig,
    k: usize,
    jobs: &[(usize, (usize, usize), usize)],
    chunk_index: usize,
) -> Result<Vec<Option<FlipExample>>, ScanError> {
    let g = &d.net.analysis;
    let (dim, classes) = (d.layout.numel(), d.classes);
    let (lo, hi) = cfg.range;
    let n = jobs.len();
    let idx: Vec<Vec<usize>> = jobs
        .iter()
        .map(|&(_, p, _)| patch_indices(&d.layout, k, p))
        .collect();
    let mut rng = Rng::new(cfg.seed ^ 0x9A7C_0000 ^ k as u64, chunk_index as u64);
    let mut x: Vec<f32> = Vec::with_capacity(n * dim);
    for (j, &(i, _, _)) in jobs.iter().enumerate() {
        let start = x.len();
        x.extend_from_slice(d.data.item(i));
        for &e in &idx[j] {
            x[start + e] = (lo + (hi - lo) * rng.unit()) as f32;
        }
    }
    let mut done: Vec<Option<FlipExample>> = vec![None; n];
    let mut gy = vec![0f32; n * classes];
    for step in 0..=cfg.patch_attack_steps {
        let vals = eval::forward_values::<f32>(g, &x, n)?;
        let y = vals[g.output].as_deref().unwrap_or(&[]);
        for (j, &(i, p, t)) in jobs.iter().enumerate() {
            let ys = &y[j * classes..(j + 1) * classes];
            if done[j].is_none() && argmax(ys) == t {
                let xs = &x[j * dim..(j + 1) * dim];
                let (l, h) = region_box(d.data.item(i), &idx[j], cfg.range);
                let region = flip_region(l, h, t, classes);
                if check_candidate(d.net, &region, 0, xs).is_some() {
                    done[j] = Some(FlipExample {
                        input: i,
                        row: p.0,
                        col: p.1,
                        patch: idx[j].iter().map(|&e| xs[e]).collect(),
                    });
                }
            }
            hinge_grad(ys, t, &mut gy[j * classes..(j + 1) * classes]);
        }
        if step == cfg.patch_attack_steps || done.iter().all(Option::is_some) {
            break;
        }
        let gx = grad::input_gradient(g, &vals, g.output, gy.clone(), n);
        let eta = (step_size(step) * (hi - lo)) as f32;
        for j in 0..n {
            if done[j].is_some() {
                continue;
            }
            for &e in &idx[j] {
                let v = &mut x[j * dim + e];
                let s = gx[j * dim + e];
                if s != 0.0 {
                    *v = (*v - eta * s.signum()).clamp(lo as f32, hi as f32);
                }
            }
        }
    }
    Ok(done)
}

/// Search one patch content at `pos` that flips as many of `members` to `t` as possible;
/// returns its success rate under the deployed evaluator.
fn shared_stamp(
    d: &ScanData,
    cfg: &ScanConfig,
    k: usize,
    pos: (usize, usize),
    t: usize,
    members: &[usize],
) -> Result<f64, ScanError> {
    if members.is_empty() {
        return Ok(0.0);
    }
    let g = &d.net.analysis;
    let (dim, classes, n) = (d.layout.numel(), d.classes, members.len());
    let (lo, hi) = cfg.range;
    let idx = patch_indices(&d.layout, k, pos);
    let mut patch: Vec<f32> = vec![((lo + hi) * 0.5) as f32; idx.len()];
    let mut base: Vec<f32> = Vec::with_capacity(n * dim);
    for &i in members {
        base.extend_from_slice(d.data.item(i));
    }
    let apply = |patch: &[f32], x: &mut Vec<f32>| {
        x.clone_from(&base);
        for s in 0..n {
            for (&e, &v) in idx.iter().zip(patch) {
                x[s * dim + e] = v;
            }
        }
    };
    let chunk = super::items_per_pass(g, n);
    let mut x = Vec::new();
    let mut best = 0.0f64;
    let mut gsum = vec![0f64; idx.len()];
    for step in 0..STAMP_STEPS {
        apply(&patch, &mut x);
        gsum.fill(0.0);
        for c0 in (0..n).step_by(chunk) {
            let m = chunk.min(n - c0);
            let xc = &x[c0 * dim..(c0 + m) * dim];
            let vals = eval::forward_values::<f32>(g, xc, m)?;
            let y = vals[g.output].as_deref().unwrap_or(&[]);
            let mut gy = vec![0f32; m * classes];
            for s in 0..m {
                let r = s * classes..(s + 1) * classes;
                hinge_grad(&y[r.clone()], t, &mut gy[r]);
            }
            let gx = grad::input_gradient(g, &vals, g.output, gy, m);
            for s in 0..m {
                for (acc, &e) in gsum.iter_mut().zip(&idx) {
                    *acc += gx[s * dim + e] as f64;
                }
            }
        }
        let eta = (step_size(step / 2) * (hi - lo)) as f32;
        for (pm, &s) in patch.iter_mut().zip(&gsum) {
            if s != 0.0 {
                *pm = (*pm - eta * s.signum() as f32).clamp(lo as f32, hi as f32);
            }
        }
        // Measure every few steps (and at the end) with the deployed evaluator.
        if step % 10 == 9 || step + 1 == STAMP_STEPS {
            apply(&patch, &mut x);
            let pred = predict(&d.net.exec, &x, n)?;
            let asr = pred.iter().filter(|&&p| p == t).count() as f64 / n as f64;
            best = best.max(asr);
        }
    }
    // The corners of the range often win for small patches (a saturated stamp).
    for v in [lo as f32, hi as f32] {
        apply(&vec![v; idx.len()], &mut x);
        let pred = predict(&d.net.exec, &x, n)?;
        best = best.max(pred.iter().filter(|&&p| p == t).count() as f64 / n as f64);
    }
    Ok(best)
}

//! ReLU splitting: a domain is a set of split constraints on undecided pre-activations,
//! bounded by beta-CROWN from its parent's bounds and optimised parameters.

use super::*;
use crate::verify::proof::relu::{End, Recorder, Refutation, encode_params};
use std::time::Duration;

struct ReluDomain {
    /// Node of the recorded tree (proof material).
    id: usize,
    /// Split constraints `(value, element, active)`, newest last.
    splits: Vec<(ValueId, usize, bool)>,
    open: Vec<usize>,
    /// The parent's bounds of every value (valid on this domain).
    seeds: Arc<Vec<Option<Intervals>>>,
    /// The parent's optimised slopes and multipliers per row (warm start; empty at the root).
    warm: Arc<RowWarm>,
}

/// Share of the search's time that its PGD rounds may take. Every 8th iteration before it,
/// a round took 36 % of a 30 s search on cifar10_resnet resnet_2b prop_22 (54 rounds of 0.18
/// s) and 6 % on mnistfc 256x4 prop_0_0.05, where they found nothing.
const ATTACK_SHARE: f64 = 0.1;

#[allow(clippy::too_many_arguments)]
pub(super) fn relu_split(
    s: &Search,
    open: Vec<usize>,
    root: Option<Vec<Option<Intervals>>>,
) -> (BabOutcome, BabStats) {
    let Search {
        net,
        region,
        ri,
        opts,
        cfg,
        deadline,
    } = *s;
    let g = &net.analysis;
    let mut stats = BabStats::default();
    // Position of each value's producer, to know which bounds a split can change.
    let mut producer = vec![0usize; g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        producer[n.output] = i;
    }
    let relu_inputs = crate::verify::proof::relu::relu_inputs(g);
    let mut tree = Recorder::default();
    let root_seeds: Arc<Vec<Option<Intervals>>> =
        Arc::new(root.unwrap_or_else(|| vec![None; g.values.len()]));
    // Work per domain grows with the squared layer width; keep a batch near a fixed budget so
    // time limits are checked often.
    let width = relu_inputs
        .iter()
        .map(|&(_, v)| g.values[v].numel())
        .max()
        .unwrap_or(1);
    // 16 domains at width 256: smaller batches left the backward products too thin to
    // amortise packing (mnistfc 256x4: 38% more domains per second than 4). At least 4: on
    // CNNs the width overstates a domain's cost (intermediate rows stay spatially local), and
    // resnet_2b bounded 47% more domains per second with 4 than with 1.
    let relu_batch =
        (cfg.batch * 128 * 128 / (width * width).max(1)).clamp(4.min(cfg.batch), cfg.batch);
    // Whether children recompute the bounds of the values after their newest split (see
    // `Gain`); decided on the first batches of the search and kept.
    let mut gain = Gain::default();
    let mut stack = vec![ReluDomain {
        id: tree.add(),
        splits: Vec::new(),
        open,
        seeds: root_seeds,
        warm: Arc::new(Vec::new()),
    }];
    let mut attack_round = 0u64;
    let (search_start, mut attack_time) = (Instant::now(), Duration::ZERO);
    // PGD starts of the next attack round: the latest batch's CROWN minimisers (beta-CROWN's
    // corners of split domains, which the split constraints moved).
    let mut starts: Vec<(usize, Vec<f64>)> = Vec::new();
    while !stack.is_empty() {
        if let Some(stop) = s.next_iteration(stack.len(), &mut stats) {
            return (stop, stats);
        }
        // Every few iterations, attack again with a fresh seed, within [`ATTACK_SHARE`] of
        // the search's time. Rounds keep their order and seeds, so a counterexample found is
        // the same whenever its round runs.
        let attack_due =
            attack_time.as_secs_f64() <= ATTACK_SHARE * search_start.elapsed().as_secs_f64();
        if stats.iterations % 8 == 0 && attack_due {
            if let Some(acfg) = &opts.attack {
                attack_round += 1;
                let a = attack::AttackConfig {
                    seed: acfg.seed.wrapping_add(attack_round),
                    ..*acfg
                };
                let ks: Vec<usize> = stack.last().map(|d| d.open.clone()).unwrap_or_default();
                let t0 = Instant::now();
                let found = attack::pgd(net, region, ri, &ks, &starts, &a, deadline);
                attack_time += t0.elapsed();
                if let Some(cex) = found {
                    return (BabOutcome::Falsified(cex), stats);
                }
            }
        }
        let take = relu_batch.min(stack.len());
        let batch: Vec<ReluDomain> = stack.split_off(stack.len() - take);
        stats.domains += batch.len();
        let nb = batch.len();
        let ni = g.input_numel();
        let input = Intervals::new(
            (0..nb).flat_map(|_| region.lower.iter().copied()).collect(),
            (0..nb).flat_map(|_| region.upper.iter().copied()).collect(),
        );
        // Seeds: the parents' bounds stacked per value, the splits, and the earliest split.
        let seed_bounds = concat_bounds(&batch.iter().map(|d| &*d.seeds).collect::<Vec<_>>());
        let splits: Vec<(ValueId, usize, usize, bool)> = batch
            .iter()
            .enumerate()
            .flat_map(|(b, d)| d.splits.iter().map(move |&(v, j, a)| (v, b, j, a)))
            .collect();
        let recompute = gain.recompute();
        let skip_before = batch
            .iter()
            .map(|d| {
                d.splits.last().map_or(0, |&(v, _, _)| {
                    if recompute {
                        producer[v] + 1
                    } else {
                        g.nodes.len()
                    }
                })
            })
            .min()
            .unwrap_or(0);
        let seeds = Seeds {
            bounds: seed_bounds,
            splits,
            skip_before,
        };
        let c = Crown::build(g, input, nb, crown_cfg(opts, deadline), Some(&seeds));
        if skip_before < g.nodes.len() && batch.iter().all(|d| !d.splits.is_empty()) {
            gain.observe(&c, &seeds, &batch, &relu_inputs);
        }
        let opens: Vec<&[usize]> = batch.iter().map(|d| &d.open[..]).collect();
        let warm_in: Vec<&RowWarm> = batch.iter().map(|d| &*d.warm).collect();
        let Bounded {
            mut open,
            pass,
            owner,
            mut warm,
        } = bound_batch(
            &c,
            region,
            &opens,
            opts,
            Record {
                acts: true,
                input: true,
            },
            deadline,
            &warm_in,
        );
        let infeasible: Vec<bool> = (0..nb).map(|b| c.infeasible(b)).collect();
        for (b, o) in open.iter_mut().enumerate() {
            if infeasible[b] {
                o.clear();
            }
        }
        // Candidates: the CROWN minimiser of each open row.
        if let Some(ax) = &pass.at_input {
            let mut cands = Vec::new();
            starts.clear();
            for (r, &(b, k, _)) in owner.iter().enumerate() {
                if open[b].contains(&k) {
                    let x = attack::minimiser_corner(
                        &ax[r * ni..(r + 1) * ni],
                        &region.lower,
                        &region.upper,
                    );
                    cands.extend(
                        x.iter()
                            .enumerate()
                            .map(|(i, &v)| to_f32_inside(v, region.lower[i], region.upper[i])),
                    );
                    if starts.len() < MAX_STARTS {
                        starts.push((k, x));
                    }
                }
            }
            if let Some(cex) = check_points(net, region, ri, &cands) {
                return (BabOutcome::Falsified(cex), stats);
            }
        }
        // Split candidates of each domain still open, best BaBSR score first; with more than
        // one, FSB re-scores them by a one-step bound of their children. That bound keeps
        // every later value's bounds, so it models children that keep their parents' bounds;
        // where children recompute them it misjudged (mnistfc 256x4 prop_11_0.05: 285 domains
        // against BaBSR's 167) and BaBSR chooses alone. Either way the chosen split's two
        // children get that one-step bound, and a child it refutes is a proved leaf, not
        // bounded again (see [`branch`]): where children recompute, that was 27 % of the
        // domains of mnistfc 256x4 prop_14_0.05 (the same 8,801-domain tree; `verify`, one
        // thread, beside the previous binary in two runs: 37.4 -> 35.8 s, 41.0 -> 38.9 s).
        // (As `gain` stands after this batch: its children are bounded the way it says.)
        let top_k = if gain.recompute() { 1 } else { cfg.fsb.max(1) };
        let split_cands: Vec<Vec<branch::Candidate>> = (0..nb)
            .map(|b| {
                if infeasible[b] || open[b].is_empty() {
                    return Vec::new();
                }
                branch::babsr(&c, &pass, &owner, &open[b], b, &relu_inputs, top_k)
            })
            .collect();
        let mut choice: Vec<branch::Choice> =
            std::iter::repeat_with(Default::default).take(nb).collect();
        {
            let picks: Vec<branch::Pick> = (0..nb)
                .filter(|&b| !split_cands[b].is_empty())
                .map(|b| branch::Pick {
                    b,
                    open: &open[b],
                    warm: &warm[b],
                    cands: split_cands[b].iter().map(|&(_, _, v, j)| (v, j)).collect(),
                })
                .collect();
            for (p, ch) in picks.iter().zip(branch::fsb(&c, region, &picks, deadline)) {
                choice[p.b] = ch;
            }
        }
        for (b, d) in batch.into_iter().enumerate() {
            let node = &mut tree.nodes[d.id];
            node.skip = skip_before;
            if infeasible[b] {
                node.end = End::Infeasible;
                continue;
            }
            // What this domain refuted, with the parameters of each refuting bound.
            for &k in d.open.iter().filter(|k| !open[b].contains(k)) {
                let row = owner.iter().enumerate().find(|&(r, &(rb, rk, ci))| {
                    rb == b
                        && rk == k
                        && crate::verify::refuted(&region.disjuncts[k][ci], pass.lower[r])
                });
                if let Some((_, &(_, _, ci))) = row {
                    let params = warm[b]
                        .iter()
                        .find(|e| e.0 == (k, ci))
                        .map(|e| encode_params(&c, b, &e.1));
                    node.refuted.push(Refutation { k, ci, params });
                }
            }
            if open[b].is_empty() {
                node.end = End::Closed;
                continue;
            }
            let best = split_cands[b].get(choice[b].index).copied();
            let Some((_, layer, v, j)) = best else {
                // Nothing left to split: CROWN bounds the domain's linear network over the
                // whole box, ignoring the split constraints. The LP of the domain holds them
                // as column bounds (the clamped pre-activation intervals), so it may still
                // refute the open disjuncts; otherwise give up on this region.
                if lp_refutes_domain(&c, b, region, &open[b], opts, deadline) {
                    tree.nodes[d.id].end = End::Lp;
                    continue;
                }
                return (BabOutcome::Unknown, stats);
            };
            let seeds = Arc::new(c.domain_bounds(b));
            let kid_warm = Arc::new(std::mem::take(&mut warm[b]));
            let kids = [tree.add(), tree.add()];
            tree.nodes[d.id].end = End::Split {
                layer,
                elem: j,
                kids,
            };
            for (t, active) in [false, true].into_iter().enumerate() {
                // A child the one-step bound already refutes is a leaf. It keeps its parent's
                // bounds (nothing recomputed, `skip` past the graph), as that bound assumed,
                // whether or not its siblings recompute theirs.
                if let Some(refs) = choice[b].closed[t].take() {
                    let node = &mut tree.nodes[kids[t]];
                    node.skip = g.nodes.len();
                    node.refuted = refs;
                    node.end = End::Closed;
                    stats.domains += 1;
                    stats.fsb_closed += 1;
                    continue;
                }
                let mut splits = d.splits.clone();
                splits.push((v, j, active));
                stack.push(ReluDomain {
                    id: kids[t],
                    splits,
                    open: open[b].clone(),
                    seeds: seeds.clone(),
                    warm: kid_warm.clone(),
                });
            }
        }
    }
    (BabOutcome::Verified(tree.finish()), stats)
}

/// Whether the LP relaxation of domain `b` of `c` (triangle relaxation, split constraints as
/// column bounds) refutes every disjunct in `open`, by safe dual bounds, or is provably empty.
/// An LP error (size limit, time limit) refutes nothing.
pub(crate) fn lp_refutes_domain(
    c: &Crown,
    b: usize,
    region: &Region,
    open: &[usize],
    opts: &VerifyOptions,
    deadline: Option<Instant>,
) -> bool {
    let Some(limits) = &opts.lp else {
        return false;
    };
    let Ok(enc) = crate::lp::Encoding::new(c, b, limits.max_nnz) else {
        return false;
    };
    // At most a quarter of the time left: a large LP must not eat the whole budget.
    let deadline = deadline.map(|d| {
        let now = Instant::now();
        now + d.saturating_duration_since(now) / 4
    });
    // Contradictory splits leave an empty domain, which refutes everything.
    if enc.provably_empty(deadline) {
        return true;
    }
    open.iter().all(|&k| {
        let conj = &region.disjuncts[k];
        let objs: Vec<Vec<(usize, f64)>> = conj.iter().map(|ct| ct.coeffs.clone()).collect();
        enc.lower_bounds(c.g.output, &objs, deadline)
            .is_ok_and(|res| {
                conj.iter()
                    .zip(&res)
                    .any(|(ct, r)| crate::verify::refuted(ct, r.safe))
            })
    })
}

/// PGD starts kept from a batch for the next attack round (each costs one more PGD sample).
const MAX_STARTS: usize = 16;

/// Batches of children that recompute their intermediate bounds before [`Gain`] decides.
const GAIN_PROBE: usize = 8;

/// Least mean narrowing (see [`Gain`]) for children to keep recomputing their bounds.
const MIN_GAIN: f64 = 0.005;

/// Whether recomputing a child's intermediate bounds pays. A child's bounds of the values after
/// its newest split are recomputed by CROWN from the parent's; where that narrows nothing, the
/// child keeps its parent's bounds (clamped by the split; its multiplier still carries the
/// split into the final bound, as alpha-beta-CROWN's children do), which saved about 40 % of
/// the search's time on oval21 cifar_base_kw. The first [`GAIN_PROBE`] batches of children
/// measure the mean narrowing of the ReLU inputs undecided in the parents, over the ReLU
/// layers from the batch's earliest newest split on (that split's own layer is not recomputed
/// and counts 0; the split neurons themselves are left out): 1 for one decided,
/// `1 - new width / old width` else. On mnistfc 256x4 prop_8_0.03 recomputing decides
/// 2-3 % of them and narrows the rest by 1.5-8 %, and keeping the parents' bounds costs 5.4x
/// the domains; on the oval21 CNNs it narrows them by under 0.1 %, with the same domains either
/// way. It reads bounds only, so the choice is the same on every run.
#[derive(Default)]
struct Gain {
    batches: usize,
    sum: f64,
    count: usize,
}

impl Gain {
    /// Whether children recompute their bounds: while probing, and after if it paid.
    fn recompute(&self) -> bool {
        self.batches < GAIN_PROBE || self.sum >= MIN_GAIN * self.count as f64
    }

    /// Add one batch: `c` bounded it from the parents' bounds in `seeds`.
    fn observe(
        &mut self,
        c: &Crown,
        seeds: &Seeds,
        batch: &[ReluDomain],
        relu_inputs: &[(usize, ValueId)],
    ) {
        if self.batches >= GAIN_PROBE {
            return;
        }
        self.batches += 1;
        for &(node, v) in relu_inputs {
            if node < seeds.skip_before {
                continue;
            }
            let (Some(old), Some(new)) = (seeds.bounds[v].as_ref(), c.bounds[v].as_ref()) else {
                continue;
            };
            let n = old.lo.len() / batch.len().max(1);
            for (b, d) in batch.iter().enumerate() {
                let split = d.splits.last().filter(|s| s.0 == v).map(|s| s.1);
                for j in (0..n).filter(|&j| Some(j) != split) {
                    let i = b * n + j;
                    if !relax::unstable(old.lo[i], old.hi[i]) {
                        continue;
                    }
                    self.count += 1;
                    self.sum += if relax::unstable(new.lo[i], new.hi[i]) {
                        (1.0 - (new.hi[i] - new.lo[i]) / (old.hi[i] - old.lo[i])).max(0.0)
                    } else {
                        1.0
                    };
                }
            }
        }
    }
}

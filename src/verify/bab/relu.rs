//! ReLU splitting: a domain is a set of split constraints on undecided pre-activations,
//! bounded by beta-CROWN from its parent's bounds and optimised parameters.

use super::*;
use crate::verify::proof::relu::{End, Recorder, Refutation, encode_params};

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
    let mut stack = vec![ReluDomain {
        id: tree.add(),
        splits: Vec::new(),
        open,
        seeds: root_seeds,
        warm: Arc::new(Vec::new()),
    }];
    let mut attack_round = 0u64;
    while !stack.is_empty() {
        if let Some(stop) = s.next_iteration(stack.len(), &mut stats) {
            return (stop, stats);
        }
        // Every few iterations, attack again with a fresh seed.
        if stats.iterations % 8 == 0 {
            if let Some(acfg) = &opts.attack {
                attack_round += 1;
                let a = attack::AttackConfig {
                    seed: acfg.seed.wrapping_add(attack_round),
                    ..*acfg
                };
                let ks: Vec<usize> = stack.last().map(|d| d.open.clone()).unwrap_or_default();
                if let Some(cex) = attack::pgd(net, region, ri, &ks, &a, deadline) {
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
        let skip_before = batch
            .iter()
            .map(|d| d.splits.last().map_or(0, |&(v, _, _)| producer[v] + 1))
            .min()
            .unwrap_or(0);
        let seeds = Seeds {
            bounds: seed_bounds,
            splits,
            skip_before,
        };
        let c = Crown::build(g, input, nb, crown_cfg(opts, deadline), Some(&seeds));
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
            for (r, &(b, k, _)) in owner.iter().enumerate() {
                if open[b].contains(&k) {
                    cands.extend((0..ni).map(|i| {
                        let v = if ax[r * ni + i] >= 0.0 {
                            region.lower[i]
                        } else {
                            region.upper[i]
                        };
                        to_f32_inside(v, region.lower[i], region.upper[i])
                    }));
                }
            }
            if let Some(cex) = check_points(net, region, ri, &cands) {
                return (BabOutcome::Falsified(cex), stats);
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
            let best = choose_split(
                &c,
                b,
                region,
                &owner,
                &open[b],
                &pass,
                &relu_inputs,
                &warm[b],
                cfg,
            );
            let Some((layer, v, j)) = best else {
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

/// The ReLU split of domain `b` of `c`: the BaBSR-style score ranks the undecided ReLUs (the
/// slack the upper relaxation line adds to each open row's bound, `max(-A_j, 0) * (-u l /
/// (u - l))`, plus a small share of the lower side's), then, with `cfg.fsb_candidates > 1`,
/// filtered smart branching re-scores the best few by bounding both children of each
/// ([`Crown::children`]: every other bound fixed, the domain's optimised slopes and
/// multipliers, no ascent) and keeps the one whose worse child comes closest to refuting its
/// open disjuncts. Only the choice of split depends on it, never a bound. Returns `(ReLU
/// layer, its input, element)`, or `None` when nothing is left to split.
#[allow(clippy::too_many_arguments)]
fn choose_split(
    c: &Crown,
    b: usize,
    region: &Region,
    owner: &[(usize, usize, usize)],
    open: &[usize],
    pass: &crate::bounds::crown::Pass,
    relu_inputs: &[(usize, ValueId)],
    warm: &RowWarm,
    cfg: &BabConfig,
) -> Option<(usize, ValueId, usize)> {
    let g = c.g;
    // (score, ReLU layer, its input, element), best first.
    let mut ranked: Vec<(f64, usize, ValueId, usize)> = Vec::new();
    let keep = cfg.fsb_candidates.max(1);
    for (layer, &(ni_node, v)) in relu_inputs.iter().enumerate() {
        let Some(acts) = pass.at_activation[ni_node].as_ref() else {
            continue;
        };
        let bd = c.bounds[v].as_ref().expect("bounds");
        let n = g.values[v].numel();
        for j in 0..n {
            let (l, u) = (bd.lo[b * n + j], bd.hi[b * n + j]);
            if !relax::unstable(l, u) {
                continue;
            }
            let mut s = 0.0;
            for (r, &(rb, k, _)) in owner.iter().enumerate() {
                if rb == b && open.contains(&k) {
                    let a = acts[r * n + j];
                    s += (-a).max(0.0) * (-u * l / (u - l)) + a.max(0.0) * 1e-3 * (u.min(-l));
                }
            }
            // Strictly better only: ties keep the earlier neuron, as a single best would.
            let at = ranked.partition_point(|e| e.0 >= s);
            if at < keep {
                ranked.insert(at, (s, layer, v, j));
                ranked.truncate(keep);
            }
        }
    }
    let first = ranked.first().map(|&(_, layer, v, j)| (layer, v, j))?;
    if ranked.len() < 2 {
        return Some(first);
    }
    // Both children of every candidate, bounded on the open disjuncts' rows.
    let picks: Vec<(usize, ValueId, usize, bool)> = ranked
        .iter()
        .flat_map(|&(_, _, v, j)| [(b, v, j, false), (b, v, j, true)])
        .collect();
    let kids = c.children(&picks);
    let rows_of: Vec<(usize, usize)> = open
        .iter()
        .flat_map(|&k| (0..region.disjuncts[k].len()).map(move |ci| (k, ci)))
        .collect();
    let per = rows_of.len();
    let rows: Vec<usize> = (0..picks.len())
        .flat_map(|i| std::iter::repeat_n(i, per))
        .collect();
    let start: Vec<Option<&alpha::Warm>> = (0..rows.len())
        .map(|r| {
            let key = rows_of[r % per];
            warm.iter().find(|e| e.0 == key).map(|e| &e.1)
        })
        .collect();
    let once = alpha::AlphaConfig {
        iterations: 0,
        ..alpha::AlphaConfig::default()
    };
    let fill = |r: usize, a: &mut [f64]| {
        let (k, ci) = rows_of[r % per];
        for &(j, x) in &region.disjuncts[k][ci].coeffs {
            a[j] += x;
        }
    };
    let (lower, _) =
        alpha::optimize_warm(&kids, g.output, &rows, fill, &once, &start, |_, _| false);
    // A child's shortfall: over its open disjuncts, how far the best constraint's bound is
    // from refuting it (0 once refuted); a candidate is as good as its worse child.
    let shortfall = |child: usize| -> f64 {
        open.iter()
            .map(|&k| {
                let best = rows_of
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.0 == k)
                    .map(|(t, &(_, ci))| {
                        let ct = &region.disjuncts[k][ci];
                        let l = lower[child * per + t];
                        if crate::verify::refuted(ct, l) {
                            0.0
                        } else {
                            l - ct.rhs
                        }
                    })
                    .fold(f64::NEG_INFINITY, f64::max);
                best.min(0.0)
            })
            .sum()
    };
    let mut choice = first;
    let mut top = f64::NEG_INFINITY;
    for (t, &(_, layer, v, j)) in ranked.iter().enumerate() {
        let s = shortfall(2 * t).min(shortfall(2 * t + 1));
        // NaN (an unbounded child) never wins.
        if s > top {
            top = s;
            choice = (layer, v, j);
        }
    }
    Some(choice)
}

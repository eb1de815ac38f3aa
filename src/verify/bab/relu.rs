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
            // BaBSR-style score over the undecided ReLUs.
            // (score, ReLU layer, its input, element)
            let mut best: Option<(f64, usize, ValueId, usize)> = None;
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
                        if rb == b && open[b].contains(&k) {
                            let a = acts[r * n + j];
                            s += (-a).max(0.0) * (-u * l / (u - l))
                                + a.max(0.0) * 1e-3 * (u.min(-l));
                        }
                    }
                    if best.is_none_or(|(bs, ..)| s > bs) {
                        best = Some((s, layer, v, j));
                    }
                }
            }
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

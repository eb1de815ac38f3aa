//! Input splitting: a domain is a sub-box of the region, split at the midpoint of the input
//! dimension whose children come closest to a proof, among those with the largest influence
//! on the open rows (a lookahead), or by alpha-beta-CROWN's smart-branching score alone
//! ([`InputBranching::Sb`]); open conjunctions are also refuted by a combined row, and the
//! hardest open boxes are sampled.

use super::*;

/// Input splitting keeps each open domain's bounds (to seed its children) while fewer than
/// this many domains are open.
const SEEDED_OPEN: usize = 20_000;

/// Input splitting splits `batch / SPLIT_PARENTS_DIV` boxes per iteration (each with every
/// lookahead candidate's two children bounded).
const SPLIT_PARENTS_DIV: usize = 4;

/// Gain in the children's summed margins, as a fraction of the parent's, below which the
/// lookahead's choice is not trusted over the best-scored dimension.
const SIGNIFICANT_GAIN: f64 = 0.5;

/// Input splitting attacks the hardest open boxes after every `ATTACK_EVERY * batch`
/// domains bounded.
const ATTACK_EVERY: usize = 4;

/// Random points checked per attack round of input splitting.
const SAMPLES_PER_ROUND: usize = 1024;

struct BoxDomain {
    /// Node of the search tree (proof material).
    id: usize,
    lo: Vec<f64>,
    hi: Vec<f64>,
    open: Vec<usize>,
    /// Influence `sum |A_x| * width` of each input on the open rows, from its own bounding.
    smear: Vec<f64>,
    /// Smart-branching score of each input (see [`InputBranching::Sb`]), from its own
    /// bounding; empty before the first.
    sb: Vec<f64>,
    /// Proof margin from its own bounding (negative: how far from refuted).
    margin: f64,
    /// Bounds of every value from its own bounding (valid on its sub-boxes).
    bounds: Option<Arc<Vec<Option<Intervals>>>>,
}

/// Proof margin of each domain: per open disjunct the best `lower - rhs` over its constraints
/// (positive refutes it); the domain's margin is the smallest, `+inf` when nothing is open.
/// `extra` adds margins `(domain, disjunct, margin)` from combined rows.
fn margins(
    region: &Region,
    nb: usize,
    owner: &[(usize, usize, usize)],
    lower: &[f64],
    extra: &[(usize, usize, f64)],
) -> Vec<f64> {
    let mut per: Vec<Vec<(usize, f64)>> = vec![Vec::new(); nb];
    let rows = owner
        .iter()
        .enumerate()
        .map(|(row, &(b, k, ci))| (b, k, lower[row] - region.disjuncts[k][ci].rhs));
    for (b, k, m) in rows.chain(extra.iter().copied()) {
        match per[b].iter_mut().find(|e| e.0 == k) {
            Some(e) => e.1 = e.1.max(m),
            None => per[b].push((k, m)),
        }
    }
    per.iter()
        .map(|ks| ks.iter().map(|e| e.1).fold(f64::INFINITY, f64::min))
        .collect()
}

/// A combined row `sum_j lambda_j c_j y > rhs` of one domain's open conjunction
/// (see [`combine`]).
pub(crate) struct CombinedRow {
    dom: usize,
    disjunct: usize,
    coeffs: Vec<(usize, f64)>,
    /// Upper bound of the combined row over the disjunct's unsafe outputs.
    rhs: f64,
    /// The linear bounds' least safe point of the domain.
    x: Vec<f64>,
}

/// Combined rows for the open conjunctions (two or more constraints) of each domain, from the
/// CROWN rows `owner`/`lower` with input coefficients `ax`; `boxes` are the domains' input
/// boxes and `c` their bounds.
///
/// Soundness of the threshold: the combined coefficients `w` are the f64 sums of
/// `lambda_j c_j`, off from the exact sums by at most `gamma_m * sum_j lambda_j |c_j|` per
/// output; on an unsafe output `y` (with `|y_i| <= M_i` from the domain's output bounds)
/// `w . y <= sum_j lambda_j d_j + sum_i err_i M_i`, and the f64 sum of `lambda_j d_j` is
/// widened by its own `gamma_m` error before rounding up.
fn combined_rows(
    region: &Region,
    boxes: &[(&[f64], &[f64])],
    owner: &[(usize, usize, usize)],
    lower: &[f64],
    ax: &[f64],
    open: &[Vec<usize>],
    c: &Crown,
) -> Vec<CombinedRow> {
    let Some(ob) = c.bounds[c.g.output].as_ref() else {
        return Vec::new();
    };
    let no = c.g.values[c.g.output].numel();
    let mut out = Vec::new();
    if ax.is_empty() {
        return out;
    }
    let ni = boxes.first().map_or(0, |b| b.0.len());
    // `rows_for` lays out each (domain, disjunct)'s constraint rows consecutively.
    let mut start = 0;
    while start < owner.len() {
        let (b, k, _) = owner[start];
        let end = start
            + owner[start..]
                .iter()
                .take_while(|o| (o.0, o.1) == (b, k))
                .count();
        let rs: Vec<usize> = (start..end).collect();
        start = end;
        let conj = &region.disjuncts[k];
        if conj.len() < 2 || rs.len() != conj.len() || !open[b].contains(&k) {
            continue;
        }
        let (lo, hi) = boxes[b];
        let rows: Vec<&[f64]> = rs.iter().map(|&r| &ax[r * ni..(r + 1) * ni]).collect();
        let e: Vec<f64> = rs
            .iter()
            .zip(&rows)
            .map(|(&r, a)| {
                let ci = owner[r].2;
                lower[r] - crate::bounds::crown::concretize(a, lo, hi).0 - conj[ci].rhs
            })
            .collect();
        if e.iter().any(|v| !v.is_finite()) {
            continue;
        }
        let comb = combine::choose(&rows, &e, lo, hi, 48);
        let gm = gamma(conj.len() + 1, 1.1102230246251565e-16);
        let mut w = vec![0.0; no];
        let mut wabs = vec![0.0; no];
        let (mut rhs, mut rabs) = (0.0, 0.0);
        for (&r, &l) in rs.iter().zip(&comb.lambda) {
            let con = &conj[owner[r].2];
            for &(j, v) in &con.coeffs {
                w[j] += l * v;
                wabs[j] += (l * v).abs();
            }
            rhs += l * con.rhs;
            rabs += (l * con.rhs).abs();
        }
        let mut slack = gm * rabs;
        for j in 0..no {
            if wabs[j] > 0.0 {
                let m = ob.lo[b * no + j].abs().max(ob.hi[b * no + j].abs());
                slack += gm * wabs[j] * m;
            }
        }
        let rhs = (rhs + slack * (1.0 + 4.0 * f64::EPSILON))
            .next_up()
            .next_up();
        if !rhs.is_finite() {
            continue;
        }
        let coeffs = (0..no)
            .filter(|&j| w[j] != 0.0)
            .map(|j| (j, w[j]))
            .collect();
        out.push(CombinedRow {
            dom: b,
            disjunct: k,
            coeffs,
            rhs,
            x: comb.x,
        });
    }
    out
}

/// Whether dimension `i` of the box has a midpoint strictly inside at f64 resolution.
fn splittable(d: &BoxDomain, i: usize) -> bool {
    let mid = 0.5 * d.lo[i] + 0.5 * d.hi[i];
    mid > d.lo[i] && mid < d.hi[i]
}

/// Candidate split dimensions of a box: the top `k` by influence `|A_x| * width` plus relative
/// width (both normalised), so a dimension the coefficients ignore but that still has width
/// is considered too.
fn split_candidates(d: &BoxDomain, region: &Region, k: usize) -> Vec<usize> {
    let ni = d.lo.len();
    let rel: Vec<f64> = (0..ni)
        .map(|i| (d.hi[i] - d.lo[i]) / (region.upper[i] - region.lower[i]).max(f64::MIN_POSITIVE))
        .collect();
    let (ssum, rsum) = (d.smear.iter().sum::<f64>(), rel.iter().sum::<f64>());
    // A dimension already split far below the widest one cannot change a bound much, and
    // comparing children would let rounding noise in its bound pick it forever.
    let widest = rel.iter().copied().fold(0.0, f64::max);
    let mut dims: Vec<usize> = (0..ni)
        .filter(|&i| splittable(d, i) && rel[i] >= 1e-3 * widest)
        .collect();
    let score = |i: usize| {
        (if ssum > 0.0 { d.smear[i] / ssum } else { 0.0 })
            + if rsum > 0.0 { rel[i] / rsum } else { 0.0 }
    };
    dims.sort_by(|&x, &y| score(y).total_cmp(&score(x)));
    dims.truncate(k.max(1));
    dims
}

/// The dimension smart branching splits: the largest score among those that can be split
/// at f64 resolution; the widest relative to the region before the box has scores.
fn sb_candidate(d: &BoxDomain, region: &Region) -> Vec<usize> {
    let ni = d.lo.len();
    let score = |i: usize| {
        if d.sb.len() == ni {
            d.sb[i]
        } else {
            (d.hi[i] - d.lo[i]) / (region.upper[i] - region.lower[i]).max(f64::MIN_POSITIVE)
        }
    };
    (0..ni)
        .filter(|&i| splittable(d, i))
        .max_by(|&x, &y| score(x).total_cmp(&score(y)))
        .into_iter()
        .collect()
}

/// Smart-branching scores of every input of each box: per row `r` of the box's open
/// disjuncts, `max(|A_x[r, i]|, 1e-3) * width_i / 2 + (lower_r - rhs_r)`, the largest over
/// the rows (alpha-beta-CROWN's `sb` rule: the row closest to a proof decides).
fn sb_scores(
    region: &Region,
    kids: &[(usize, usize, BoxDomain)],
    owner: &[(usize, usize, usize)],
    lower: &[f64],
    ax: &[f64],
    open_of: &[&[usize]],
) -> Vec<Vec<f64>> {
    if ax.is_empty() {
        return vec![Vec::new(); kids.len()];
    }
    let ni = kids.first().map_or(0, |k| k.2.lo.len());
    let mut out = vec![vec![f64::NEG_INFINITY; ni]; kids.len()];
    for (r, &(q, k, ci)) in owner.iter().enumerate() {
        if !open_of[q].contains(&k) {
            continue;
        }
        let m = lower[r] - region.disjuncts[k][ci].rhs;
        let d = &kids[q].2;
        for i in 0..ni {
            let v = ax[r * ni + i].abs().max(1e-3) * (d.hi[i] - d.lo[i]) / 2.0 + m;
            out[q][i] = out[q][i].max(v);
        }
    }
    out
}

pub(super) fn input_split(s: &Search, open: Vec<usize>) -> (BabOutcome, BabStats) {
    let Search {
        net,
        region,
        ri,
        opts,
        cfg,
        deadline,
    } = *s;
    let g = &net.analysis;
    let ni = g.input_numel();
    let mut stats = BabStats::default();
    // Domains on the stack have been bounded and leave `open` disjuncts.
    // The search tree: per node, the dimension it was split on, its two children, and
    // whether they were bounded with its bounds as seeds.
    let mut tree: Vec<Option<(usize, usize, usize, bool)>> = vec![None];
    let mut stack = vec![BoxDomain {
        id: 0,
        lo: region.lower.clone(),
        hi: region.upper.clone(),
        open,
        smear: vec![0.0; ni],
        sb: Vec::new(),
        margin: f64::NEG_INFINITY,
        bounds: None,
    }];
    let mut attack_round = 0u64;
    let mut next_attack = 0;
    while !stack.is_empty() {
        if let Some(stop) = s.next_iteration(stack.len(), &mut stats) {
            return (stop, stats);
        }
        // Periodically attack inside the open domains furthest from a proof: once per
        // `ATTACK_EVERY` batches' worth of domains bounded (iterations bound more domains as
        // the lookahead widens; per iteration, a sat robot instance of reach_prob_density
        // went from 0.7 to 9.7 s).
        if let (Some(acfg), true) = (&opts.attack, stats.domains >= next_attack) {
            next_attack = stats.domains + ATTACK_EVERY * cfg.batch.max(1);
            attack_round += 1;
            if let Some(cex) = attack_boxes(net, region, ri, &stack, acfg, attack_round, deadline) {
                return (BabOutcome::Falsified(cex), stats);
            }
        }
        let sb = cfg.input_branching == InputBranching::Sb;
        let k = cfg.lookahead.clamp(1, ni.max(1));
        // Smart branching bounds two children per parent, the lookahead two per candidate.
        let parents = if sb {
            cfg.batch / 2
        } else {
            cfg.batch / SPLIT_PARENTS_DIV
        };
        let take = parents.max(1).min(stack.len());
        let batch: Vec<BoxDomain> = stack.split_off(stack.len() - take);
        // Children of every candidate dimension: (parent, dim, box).
        let mut kids: Vec<(usize, usize, BoxDomain)> = Vec::new();
        for (b, d) in batch.iter().enumerate() {
            let cands = if sb {
                sb_candidate(d, region)
            } else {
                split_candidates(d, region, k)
            };
            if cands.is_empty() {
                // This box cannot be split at f64 resolution: it stays open, so nothing is
                // proved (dropping it would claim its part of the region unchecked).
                return (BabOutcome::Unknown, stats);
            }
            for i in cands {
                let mid = 0.5 * d.lo[i] + 0.5 * d.hi[i];
                let (mut hi1, mut lo2) = (d.hi.clone(), d.lo.clone());
                hi1[i] = mid;
                lo2[i] = mid;
                kids.push((
                    b,
                    i,
                    BoxDomain {
                        id: 0,
                        lo: d.lo.clone(),
                        hi: hi1,
                        open: d.open.clone(),
                        smear: vec![0.0; ni],
                        sb: Vec::new(),
                        margin: d.margin,
                        bounds: d.bounds.clone(),
                    },
                ));
                kids.push((
                    b,
                    i,
                    BoxDomain {
                        id: 0,
                        lo: lo2,
                        hi: d.hi.clone(),
                        open: d.open.clone(),
                        smear: vec![0.0; ni],
                        sb: Vec::new(),
                        margin: d.margin,
                        bounds: d.bounds.clone(),
                    },
                ));
            }
        }
        if kids.is_empty() {
            // Nothing can be split at f64 resolution.
            return (BabOutcome::Unknown, stats);
        }
        stats.domains += kids.len();
        let input = Intervals::new(
            kids.iter().flat_map(|q| q.2.lo.iter().copied()).collect(),
            kids.iter().flat_map(|q| q.2.hi.iter().copied()).collect(),
        );
        // A child lies inside its parent, so the parent's bounds of every value hold on it:
        // seeding them keeps a child's intermediate bounds at least as tight (CROWN alone on
        // a smaller box can come out looser at some neurons).
        let parent_bounds: Option<Vec<&Vec<Option<Intervals>>>> =
            kids.iter().map(|q| q.2.bounds.as_deref()).collect();
        let seeds = parent_bounds.map(|pb| Seeds {
            bounds: concat_bounds(&pb),
            splits: Vec::new(),
            skip_before: 0,
        });
        let c = Crown::build(
            g,
            input,
            kids.len(),
            crown_cfg(opts, deadline),
            seeds.as_ref(),
        );
        let opens: Vec<&[usize]> = kids.iter().map(|q| &q.2.open[..]).collect();
        let boxes: Vec<(&[f64], &[f64])> =
            kids.iter().map(|q| (&q.2.lo[..], &q.2.hi[..])).collect();
        let BoxPass {
            owner,
            pass,
            open: open_kids,
            combos,
            cpass,
        } = bound_boxes(&c, region, &boxes, &opens);
        let ax = pass.at_input.as_deref().unwrap_or(&[]);
        let extra_of = |l: &[f64]| -> Vec<(usize, usize, f64)> {
            combos
                .iter()
                .zip(l)
                .map(|(cr, &l)| (cr.dom, cr.disjunct, l - cr.rhs))
                .collect()
        };
        // Margins for the heuristics come from the full back-substitution only: the early
        // concretisations prove boxes but jump between boxes, which misleads split choices.
        let marg = margins(
            region,
            kids.len(),
            &owner,
            &pass.plain,
            &extra_of(&cpass.plain),
        );
        // Per parent, the candidate that proves the most children, then whose children are
        // together closest to a proof. A child's margin is at least its parent's (the
        // parent's bounds hold on it too): without that floor, a split whose one child came
        // out looser (CROWN is not monotone in the box) lost to splits of dimensions that
        // change nothing, and the search narrowed those to f64 resolution.
        let value = |q: usize| {
            let proved =
                open_kids[q].is_empty() as u8 as f64 + open_kids[q + 1].is_empty() as u8 as f64;
            let m = |q: usize| marg[q].max(kids[q].2.margin).min(0.0).max(-1e11);
            proved * 1e12 + m(q) + m(q + 1)
        };
        // Per parent: the best candidate, and the first (the best-scored dimension).
        let mut chosen: Vec<Option<(usize, f64)>> = vec![None; batch.len()];
        let mut first: Vec<Option<(usize, f64)>> = vec![None; batch.len()];
        for q in (0..kids.len()).step_by(2) {
            let (b, i) = (kids[q].0, kids[q].1);
            let v = value(q);
            first[b].get_or_insert((i, v));
            if chosen[b].is_none_or(|(_, w)| v > w) {
                chosen[b] = Some((i, v));
            }
        }
        // The children's margins are a one-step view: where no candidate proves a child or
        // gains at least [`SIGNIFICANT_GAIN`] of the parent's margin, the best-scored
        // dimension is split (on reach_prob_density's robot a margin-only choice kept
        // splitting dimensions that move no bound, and proofs of 5 s timed out).
        for (b, d) in batch.iter().enumerate() {
            let mp = d.margin.min(0.0).max(-1e11);
            if let (Some((_, w)), Some(f)) = (chosen[b], first[b]) {
                // `w < 1e11`: no child proved (each proved child adds 1e12).
                if w < 1e11 && mp > -1e11 && w - 2.0 * mp < SIGNIFICANT_GAIN * mp.abs() {
                    chosen[b] = Some(f);
                }
            }
        }
        let keep: Vec<usize> = (0..kids.len())
            .filter(|&q| chosen[kids[q].0].is_some_and(|(i, _)| i == kids[q].1))
            .collect();
        // Record the chosen split of every parent: its kept children are consecutive.
        for pair in keep.chunks(2) {
            if let [q1, q2] = *pair {
                let (id1, id2) = (tree.len(), tree.len() + 1);
                tree.push(None);
                tree.push(None);
                // Whether the children were bounded with seeds (all of a batch are, or none).
                tree[batch[kids[q1].0].id] = Some((kids[q1].1, id1, id2, seeds.is_some()));
                kids[q1].2.id = id1;
                kids[q2].2.id = id2;
            }
        }
        let mut open_now: Vec<Vec<usize>> = keep.iter().map(|&q| open_kids[q].clone()).collect();
        // The kept children's bounds of every value, copied once: they seed the alpha-CROWN
        // pass below and, later, the children's own children.
        let own: Vec<Arc<Vec<Option<Intervals>>>> =
            keep.iter().map(|&q| Arc::new(c.domain_bounds(q))).collect();
        if opts.method == crate::bounds::Method::AlphaCrown
            && open_now.iter().any(|o| !o.is_empty())
        {
            let sub_in = Intervals::new(
                keep.iter()
                    .flat_map(|&q| kids[q].2.lo.iter().copied())
                    .collect(),
                keep.iter()
                    .flat_map(|&q| kids[q].2.hi.iter().copied())
                    .collect(),
            );
            // The kept children's bounds are final already: no second CROWN pass per value.
            let reuse = Seeds {
                bounds: concat_bounds(&own.iter().map(|b| &**b).collect::<Vec<_>>()),
                splits: Vec::new(),
                skip_before: g.nodes.len(),
            };
            let sub = Crown::build(
                g,
                sub_in,
                keep.len(),
                crown_cfg(opts, deadline),
                Some(&reuse),
            );
            let so: Vec<&[usize]> = open_now.iter().map(|o| &o[..]).collect();
            open_now = bound_batch(&sub, region, &so, opts, Record::default(), deadline, &[]).open;
        }
        // Candidates (centres, CROWN minimisers and the combinations' least safe points) of
        // every child bounded, kept or not (the lookahead's other children point at where
        // the margin is worst: on ACAS Xu 1_9 prop_7 they hold the counterexample), and
        // smear of the kept children.
        let mut open_of: Vec<&[usize]> = open_kids.iter().map(|o| &o[..]).collect();
        for (t, &q) in keep.iter().enumerate() {
            open_of[q] = &open_now[t];
        }
        let mut cands: Vec<f32> = Vec::new();
        for (q, &open_q) in open_of.iter().enumerate() {
            if open_q.is_empty() {
                continue;
            }
            let d = &kids[q].2;
            cands.extend(
                (0..ni).map(|i| to_f32_inside(0.5 * d.lo[i] + 0.5 * d.hi[i], d.lo[i], d.hi[i])),
            );
            for (r, &(rb, kd, _)) in owner.iter().enumerate() {
                if rb == q && open_q.contains(&kd) && !ax.is_empty() {
                    cands.extend((0..ni).map(|i| {
                        to_f32_inside(
                            if ax[r * ni + i] >= 0.0 {
                                d.lo[i]
                            } else {
                                d.hi[i]
                            },
                            d.lo[i],
                            d.hi[i],
                        )
                    }));
                }
            }
            for cr in combos.iter().filter(|cr| cr.dom == q) {
                cands.extend((0..ni).map(|i| to_f32_inside(cr.x[i], d.lo[i], d.hi[i])));
            }
        }
        if let Some(cex) = check_points(net, region, ri, &cands) {
            return (BabOutcome::Falsified(cex), stats);
        }
        let mut smear: Vec<Vec<f64>> = vec![vec![0.0; ni]; kids.len()];
        if !ax.is_empty() {
            for (r, &(q, _, _)) in owner.iter().enumerate() {
                let d = &kids[q].2;
                for i in 0..ni {
                    smear[q][i] += ax[r * ni + i].abs() * (d.hi[i] - d.lo[i]);
                }
            }
        }
        let mut sbs = if sb {
            sb_scores(region, &kids, &owner, &pass.plain, ax, &open_of)
        } else {
            vec![Vec::new(); kids.len()]
        };
        let mut slots: Vec<Option<BoxDomain>> = kids.into_iter().map(|q| Some(q.2)).collect();
        for (t, &q) in keep.iter().enumerate() {
            if open_now[t].is_empty() {
                continue;
            }
            if let Some(mut d) = slots[q].take() {
                d.open = std::mem::take(&mut open_now[t]);
                d.smear = std::mem::take(&mut smear[q]);
                d.sb = std::mem::take(&mut sbs[q]);
                d.margin = marg[q];
                // Seeds cost a copy of every value's bounds per open domain: bounded memory
                // beats tightness once the stack is large.
                d.bounds = (stack.len() < SEEDED_OPEN).then(|| own[t].clone());
                stack.push(d);
            }
        }
    }
    (
        BabOutcome::Verified(crate::verify::proof::encode_tree(&tree).map(|bytes| {
            crate::verify::proof::Material {
                branching: crate::verify::proof::Branching::Input,
                nodes: bytes.len(),
                bytes,
            }
        })),
        stats,
    )
}

/// The CROWN bounding of a batch of boxes, as input splitting does it and its proof checker
/// repeats it.
pub(crate) struct BoxPass {
    /// Owner `(domain, disjunct, constraint)` of each row of `pass`.
    pub(crate) owner: Vec<(usize, usize, usize)>,
    /// The spec rows (input coefficients recorded).
    pub(crate) pass: crate::bounds::crown::Pass,
    /// Disjuncts still open per box, after the rows and the combined rows.
    pub(crate) open: Vec<Vec<usize>>,
    pub(crate) combos: Vec<CombinedRow>,
    /// The combined rows' pass.
    pub(crate) cpass: crate::bounds::crown::Pass,
}

/// Bound the open disjuncts `opens` of the boxes `boxes` (the domains of `c`): every
/// constraint's row, then one combined row per conjunction still open, chosen on the rows'
/// linear bounds and bounded on the same relaxation.
pub(crate) fn bound_boxes(
    c: &Crown,
    region: &Region,
    boxes: &[(&[f64], &[f64])],
    opens: &[&[usize]],
) -> BoxPass {
    let g = c.g;
    let (doms, owner) = rows_for(region, opens);
    let fill = |r: usize, a: &mut [f64]| fill_row(region, &owner, r, a);
    let pass = c.passes(
        g.output,
        &doms,
        None,
        fill,
        Record {
            acts: false,
            input: true,
        },
    );
    let ax = pass.at_input.as_deref().unwrap_or(&[]);
    let mut open = still_open(region, opens, &owner, &pass.lower);
    // The combinations are chosen on the linear bounds `ax`, which the plain bounds match.
    let combos = combined_rows(region, boxes, &owner, &pass.plain, ax, &open, c);
    let cpass = c.passes(
        g.output,
        &combos.iter().map(|cr| cr.dom).collect::<Vec<_>>(),
        None,
        |r, a| {
            for &(j, v) in &combos[r].coeffs {
                a[j] += v;
            }
        },
        Record::default(),
    );
    for (cr, &l) in combos.iter().zip(&cpass.lower) {
        if l - cr.rhs > 0.0 {
            open[cr.dom].retain(|&o| o != cr.disjunct);
        }
    }
    BoxPass {
        owner,
        pass,
        open,
        combos,
        cpass,
    }
}

/// One attack round of input splitting on the open boxes `stack` (not empty): PGD in the box
/// furthest from a proof, uniform samples in the four furthest (a violation region can be too
/// shallow for gradients, e.g. ACAS Xu 5_3 prop_2: depth 1e-4, about 1e-6 of the box, yet fill
/// a fair part of a small open box).
fn attack_boxes(
    net: &Network,
    region: &Region,
    ri: usize,
    stack: &[BoxDomain],
    acfg: &attack::AttackConfig,
    attack_round: u64,
    deadline: Option<Instant>,
) -> Option<Counterexample> {
    let ni = region.lower.len();
    let mut order: Vec<usize> = (0..stack.len()).collect();
    order.sort_by(|&x, &y| stack[x].margin.total_cmp(&stack[y].margin));
    // PGD in the worst box, every other round in the largest too and every eighth round
    // in the whole region: a shallow violation need not sit in the box furthest from a
    // proof, and PGD does best with room to move (ACAS Xu 1_9 prop_7: violations only
    // within 0.2% of one face, 3 in 4 M uniform samples).
    let rel_volume = |d: &BoxDomain| -> f64 {
        (0..ni)
            .map(|i| {
                let w = (region.upper[i] - region.lower[i]).max(f64::MIN_POSITIVE);
                ((d.hi[i] - d.lo[i]) / w).max(f64::MIN_POSITIVE).ln()
            })
            .sum()
    };
    let largest = (0..stack.len())
        .max_by(|&x, &y| rel_volume(&stack[x]).total_cmp(&rel_volume(&stack[y])))
        .unwrap_or(order[0]);
    let mut targets = vec![(
        &stack[order[0]].lo,
        &stack[order[0]].hi,
        &stack[order[0]].open,
    )];
    if attack_round % 2 == 0 && largest != order[0] {
        targets.push((&stack[largest].lo, &stack[largest].hi, &stack[largest].open));
    }
    if attack_round % 8 == 0 {
        targets.push((&region.lower, &region.upper, &stack[order[0]].open));
    }
    for (t, (lo, hi, open)) in targets.into_iter().enumerate() {
        let sub = Region {
            lower: lo.clone(),
            upper: hi.clone(),
            input_constraints: region.input_constraints.clone(),
            disjuncts: region.disjuncts.clone(),
        };
        let a = attack::AttackConfig {
            seed: acfg.seed.wrapping_add(attack_round).wrapping_add(t as u64),
            steps: 20,
            restarts: 4,
            ..*acfg
        };
        if let Some(cex) = attack::pgd(net, &sub, ri, open, &[], &a, deadline) {
            return Some(cex);
        }
    }
    let mut rng = attack::Rng::new(acfg.seed, attack_round);
    let mut xs: Vec<f32> = Vec::with_capacity(SAMPLES_PER_ROUND * ni);
    let hardest = &order[..order.len().min(4)];
    for t in 0..SAMPLES_PER_ROUND {
        let d = &stack[hardest[t % hardest.len()]];
        xs.extend((0..ni).map(|i| {
            let v = d.lo[i] + rng.unit() * (d.hi[i] - d.lo[i]);
            to_f32_inside(v, d.lo[i], d.hi[i])
        }));
    }
    check_points(net, region, ri, &xs)
}

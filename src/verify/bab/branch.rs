//! Which undecided ReLU a ReLU-splitting domain splits on.
//!
//! * **BaBSR** ([`babsr`]): every undecided neuron scored by the slack its upper relaxation line
//!   adds to the open rows' bounds, `max(-A_j, 0) * (-u l/(u-l))` (plus a small share of its
//!   distance to stability where the coefficient is positive), from the coefficients of the
//!   domain's own pass.
//! * **Filtered smart branching** ([`fsb`], FSB, after alpha-beta-CROWN's): BaBSR's best few
//!   neurons are re-scored by a one-step bound of both children of each: the domain's bounds of
//!   every value kept (none recomputed), the candidate's input clamped to one side, and one
//!   backward pass per open row with the domain's optimised slopes and multipliers (the new
//!   split's at 0). The candidate whose two children together fall least short of refuting
//!   their open disjuncts is split (the worse child alone preferred two middling children to a
//!   split that closes one child at once). It models children that keep their parents'
//!   bounds, and is used only where they do (see `Gain` in [`super::relu`]).
//!
//! The chosen split's children get that one-step bound even where BaBSR chooses alone (one
//! candidate), and a child whose bound already refutes every open disjunct is a proved leaf,
//! not bounded again: the bound is sound on the child (its parent's bounds of every value hold
//! there, the split only clamps, any slopes in range and multipliers `>= 0` are sound), and
//! the leaf records the refuting parameters and that nothing was recomputed, so the proof
//! checker rebuilds the same child and evaluates them. Where one child of most splits closes
//! at once that is about 40 % of the domains (oval21 cifar_base_kw img8717: 121 of 285).
//!
//! Otherwise the choice only steers the search: every other domain is still bounded and
//! refuted on its own, and the proof checker replays the recorded splits whatever chose them.

use super::*;
use crate::verify::proof::relu::{Refutation, encode_params};

/// A split candidate: `(score, ReLU layer, its input value, element)`.
pub(super) type Candidate = (f64, usize, ValueId, usize);

/// The `k` undecided ReLUs of domain `b` with the highest BaBSR scores, best first (ties keep
/// the earlier neuron). `acts` of the pass are the coefficients reaching each ReLU output;
/// `relu_inputs` lists `(ReLU node, its input)` per layer.
pub(super) fn babsr(
    c: &Crown,
    pass: &crate::bounds::crown::Pass,
    owner: &[(usize, usize, usize)],
    open: &[usize],
    b: usize,
    relu_inputs: &[(usize, ValueId)],
    k: usize,
) -> Vec<Candidate> {
    let g = c.g;
    let mut top: Vec<Candidate> = Vec::with_capacity(k + 1);
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
            for (r, &(rb, kk, _)) in owner.iter().enumerate() {
                if rb == b && open.contains(&kk) {
                    let a = acts[r * n + j];
                    s += (-a).max(0.0) * (-u * l / (u - l)) + a.max(0.0) * 1e-3 * (u.min(-l));
                }
            }
            if top.len() < k || top.last().is_some_and(|t| s > t.0) {
                let at = top.iter().position(|t| t.0 < s).unwrap_or(top.len());
                top.insert(at, (s, layer, v, j));
                top.truncate(k);
            }
        }
    }
    top
}

/// One domain's candidates for [`fsb`].
pub(super) struct Pick<'a> {
    /// The domain's index in the batch `c` bounded.
    pub(super) b: usize,
    /// Its open disjuncts.
    pub(super) open: &'a [usize],
    /// Its optimised parameters per row.
    pub(super) warm: &'a RowWarm,
    /// Candidate neurons `(value, element)`, best BaBSR score first.
    pub(super) cands: Vec<(ValueId, usize)>,
}

/// What [`fsb`] chose for one pick.
#[derive(Default)]
pub(super) struct Choice {
    /// Index of the chosen candidate.
    pub(super) index: usize,
    /// Per child of the chosen split (inactive, active): the refutation of every open
    /// disjunct by its one-step bound, where that bound refutes them all.
    pub(super) closed: [Option<Vec<Refutation>>; 2],
}

/// For each pick, the candidate whose children's one-step bounds together fall least short of
/// refuting (see the module notes; 0, BaBSR's choice, on ties and when the deadline has
/// passed), and which of its children those bounds already close.
pub(super) fn fsb(
    c: &Crown,
    region: &Region,
    picks: &[Pick],
    deadline: Option<Instant>,
) -> Vec<Choice> {
    let g = c.g;
    if picks.is_empty() || deadline.is_some_and(|d| Instant::now() > d) {
        return picks.iter().map(|_| Choice::default()).collect();
    }
    // One child per candidate and side.
    let mut of = Vec::new();
    let mut kids = Vec::new();
    for (e, p) in picks.iter().enumerate() {
        for (i, &(v, j)) in p.cands.iter().enumerate() {
            for active in [false, true] {
                kids.push((p.b, (v, j, active)));
                of.push((e, i));
            }
        }
    }
    let np = of.len();
    let kids = c.children(&kids);
    let mut rows = Vec::new();
    let mut row_of = Vec::new();
    let mut warm = Vec::new();
    // First row of each child.
    let mut first = Vec::with_capacity(np);
    for (d, &(e, _)) in of.iter().enumerate() {
        let p = &picks[e];
        first.push(rows.len());
        for &k in p.open {
            for ci in 0..region.disjuncts[k].len() {
                rows.push(d);
                row_of.push((d, k, ci));
                warm.push(p.warm.iter().find(|w| w.0 == (k, ci)).map(|w| &w.1));
            }
        }
    }
    // No ascent: one pass per row from the given parameters (as the proof checker evaluates
    // stored ones).
    let once = alpha::AlphaConfig {
        iterations: 0,
        ..alpha::AlphaConfig::default()
    };
    let fill = |r: usize, a: &mut [f64]| fill_row(region, &row_of, r, a);
    let (lower, params) =
        alpha::optimize_warm(&kids, g.output, &rows, fill, &once, &warm, |_, _| false);
    // A child's shortfall: over its open disjuncts, how far the best constraint of each is from
    // being refuted (0 once refuted; an empty child is refuted).
    let mut short = vec![0.0f64; np];
    let empty: Vec<bool> = (0..np).map(|d| kids.infeasible(d)).collect();
    let mut r = 0;
    for (d, &(e, _)) in of.iter().enumerate() {
        for &k in picks[e].open {
            let m = region.disjuncts[k]
                .iter()
                .map(|ct| {
                    let l = lower[r];
                    r += 1;
                    l - ct.rhs
                })
                .fold(f64::NEG_INFINITY, f64::max);
            if !empty[d] {
                short[d] += m.min(0.0);
            }
        }
    }
    // Per pick, the chosen candidate and the first of its two children (`None`: no score
    // beat -inf, BaBSR's choice kept).
    let mut choice: Vec<(usize, Option<usize>)> = vec![(0, None); picks.len()];
    let mut top: Vec<f64> = vec![f64::NEG_INFINITY; picks.len()];
    for pair in (0..np).step_by(2) {
        let (e, i) = of[pair];
        let s = short[pair] + short[pair + 1];
        if s > top[e] {
            top[e] = s;
            choice[e] = (i, Some(pair));
        }
    }
    // A child of the chosen split whose one-step bound refutes every open disjunct is a
    // proved leaf (module notes). An empty child is left to the search, whose rebuilt bounds
    // show it.
    let closes = |d: usize| -> Option<Vec<Refutation>> {
        if empty[d] {
            return None;
        }
        let (e, _) = of[d];
        let mut r = first[d];
        let mut refs = Vec::new();
        for &k in picks[e].open {
            let n = region.disjuncts[k].len();
            let ci = (0..n)
                .find(|&ci| crate::verify::refuted(&region.disjuncts[k][ci], lower[r + ci]))?;
            refs.push(Refutation {
                k,
                ci,
                params: Some(encode_params(&kids, d, &params[r + ci])),
            });
            r += n;
        }
        Some(refs)
    };
    choice
        .into_iter()
        .map(|(index, pair)| Choice {
            index,
            closed: pair.map_or([None, None], |d| [closes(d), closes(d + 1)]),
        })
        .collect()
}

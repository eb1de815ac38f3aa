//! Property test: beta-CROWN (alpha-CROWN with split multipliers) on a branch-and-bound
//! domain of random ReLU networks. A few undecided ReLUs get random split constraints; the
//! optimised lower bound of each objective must not exceed its value at any float32 sample of
//! the box whose pre-activations satisfy the splits (the domain's points).

mod common;

use common::netgen::{self, Rng};
use ferrocert::bounds::alpha::{self, AlphaConfig};
use ferrocert::bounds::crown::{Crown, CrownConfig, Record, Seeds};
use ferrocert::domain::Intervals;
use ferrocert::eval;
use ferrocert::ir::{Op, passes};
use ferrocert::transformers::relax;
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Domains with split constraints that were bounded, and samples checked inside them: a run
/// where no domain has a split or no sample lands in one checks nothing, so the test requires
/// both.
static DOMAINS: AtomicUsize = AtomicUsize::new(0);
static CHECKED: AtomicUsize = AtomicUsize::new(0);

fn check(kinds: &[u8], seed: u64, eps_pick: usize, nsplits: usize) -> Result<(), TestCaseError> {
    let (model, desc) = netgen::random_model(kinds, false, seed);
    let g = passes::simplify(netgen::import(&model));
    let mut r = Rng(seed ^ 0xbe7a);
    let (ni, no) = (g.input_numel(), g.output_numel());
    let eps = [0.05, 0.3, 1.0][eps_pick % 3];
    let c: Vec<f64> = (0..ni).map(|_| r.range(-1.0, 1.0) as f32 as f64).collect();
    let lo: Vec<f64> = c.iter().map(|v| v - eps).collect();
    let hi: Vec<f64> = c.iter().map(|v| v + eps).collect();
    let input = Intervals::new(lo.clone(), hi.clone());
    // Undecided ReLU inputs on the whole box; split a random few of them.
    let root = Crown::new(&g, input.clone(), 1, CrownConfig::default());
    let mut unstable = Vec::new();
    for node in g.nodes.iter().filter(|n| matches!(n.op, Op::Relu)) {
        let v = node.inputs[0];
        let b = root.bounds[v].as_ref().expect("bounds");
        for j in 0..g.values[v].numel() {
            if relax::unstable(b.lo[j], b.hi[j]) {
                unstable.push((v, j));
            }
        }
    }
    if unstable.is_empty() {
        return Ok(());
    }
    let splits: Vec<_> = (0..nsplits)
        .map(|_| {
            let (v, j) = unstable[r.int(0, unstable.len() - 1)];
            (v, 0, j, r.unit() < 0.5)
        })
        .collect();
    let seeds = Seeds {
        bounds: vec![None; g.values.len()],
        splits: splits.clone(),
        skip_before: 0,
    };
    let c = Crown::build(&g, input, 1, CrownConfig::default(), Some(&seeds));
    if c.infeasible(0) {
        return Ok(());
    }
    let objs: Vec<Vec<f64>> = (0..6)
        .map(|_| (0..no).map(|_| r.range(-1.0, 1.0)).collect())
        .collect();
    let cfg = AlphaConfig {
        iterations: 15,
        lr_beta: 0.5,
        ..Default::default()
    };
    let lower = alpha::optimize(
        &c,
        g.output,
        &vec![0; objs.len()],
        |k, a| a.copy_from_slice(&objs[k]),
        &cfg,
    );
    // Rows leaving the ascent once their goal is met (here: every even row, at once) leave
    // the other rows' bounds bit for bit as they were, and keep their own first bound.
    let (early, _) = alpha::optimize_warm(
        &c,
        g.output,
        &vec![0; objs.len()],
        |k, a| a.copy_from_slice(&objs[k]),
        &cfg,
        &vec![None; objs.len()],
        |k, _| k % 2 == 0,
    );
    for k in 0..objs.len() {
        if k % 2 == 1 {
            prop_assert_eq!(early[k].to_bits(), lower[k].to_bits(), "row {}", k);
        } else {
            prop_assert!(
                early[k] <= lower[k],
                "row {k}: {} above {}",
                early[k],
                lower[k]
            );
        }
    }
    // Any multipliers >= 0 are sound, not only the optimised ones: large random ones too.
    let rows = vec![0; objs.len()];
    let betas: Vec<Vec<f64>> = rows
        .iter()
        .map(|_| splits.iter().map(|_| r.range(0.0, 3.0)).collect())
        .collect();
    let a0: Vec<f64> = objs.concat();
    let fixed = c
        .pass(g.output, a0, &rows, None, Some(&betas), Record::default())
        .lower;
    DOMAINS.fetch_add(1, Ordering::SeqCst);
    let n = 10_000;
    let xs = common::sample_box(&lo, &hi, n, &mut r);
    let vals = eval::forward_values::<f32>(&g, &xs, n).unwrap();
    let y = vals[g.output].as_ref().expect("output");
    for s in 0..n {
        let holds = splits.iter().all(|&(v, _, j, active)| {
            let z = vals[v].as_ref().expect("pre-activation")[s * g.values[v].numel() + j];
            if active { z >= 0.0 } else { z <= 0.0 }
        });
        if !holds {
            continue;
        }
        CHECKED.fetch_add(1, Ordering::SeqCst);
        for (k, o) in objs.iter().enumerate() {
            let val: f64 = (0..no).map(|j| o[j] * y[s * no + j] as f64).sum();
            for (name, b) in [
                ("optimised", lower[k]),
                ("stopped early", early[k]),
                ("random betas", fixed[k]),
            ] {
                prop_assert!(
                    b <= val + 1e-12 * (1.0 + val.abs()),
                    "{desc}\neps {eps} splits {splits:?}: objective {k} {name} bound {b} above sample {val}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn beta_crown_bounds_contain_the_domain() {
    netgen::run_dense_relu_cases(48, 1usize..5, check);
    let (domains, checked) = (
        DOMAINS.load(Ordering::SeqCst),
        CHECKED.load(Ordering::SeqCst),
    );
    eprintln!("{domains} split domains bounded, {checked} samples checked inside them");
    assert!(
        domains >= 8 && checked >= 20_000,
        "too little was checked: {domains} domains, {checked} samples"
    );
}

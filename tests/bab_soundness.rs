//! Property test: complete verification by input splitting (with combined rows for
//! conjunctions, candidate points and sampling) on random small ReLU networks and random
//! conjunctive unsafe sets. An `unsat` must survive 20,000 float32 samples of the box; a `sat`
//! must carry a counterexample inside the box whose float32 output satisfies the conjunction.
//! The thresholds are drawn from the sampled outputs so that both verdicts occur. Half the
//! cases choose split dimensions by the lookahead, half by smart branching.

mod common;

use common::netgen::{self, Rng};
use ferrocert::eval;
use ferrocert::network::Network;
use ferrocert::onnx::build::to_bytes;
use ferrocert::spec::{Constraint, Region, Spec};
use ferrocert::verify::bab::{BabConfig, InputBranching};
use ferrocert::verify::{self, Verdict, VerifyOptions};
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Cases verified (networks with at least two outputs), and how many ended `unsat` / `sat`. A test where every run ends unknown checks nothing, so the proptest below
/// requires a third of them to be decided (typically two thirds are).
static CASES: AtomicUsize = AtomicUsize::new(0);
static DECIDED: AtomicUsize = AtomicUsize::new(0);

fn check(kinds: &[u8], seed: u64, eps_pick: usize, quantile: usize) -> Result<(), TestCaseError> {
    let (model, desc) = netgen::random_model(kinds, false, seed);
    let d = common::scratch("bab_soundness");
    let p = d.join(format!("m{seed}_{}.onnx", kinds.len()));
    std::fs::write(&p, to_bytes(&model)).unwrap();
    let net = Network::load(&p).unwrap();
    let (ni, no) = (net.exec.input_numel(), net.exec.output_numel());
    if no < 2 {
        return Ok(());
    }
    CASES.fetch_add(1, Ordering::SeqCst);
    let mut r = Rng(seed ^ 0xbab);
    let eps = [0.05, 0.3, 1.0][eps_pick % 3];
    let c: Vec<f64> = (0..ni).map(|_| r.range(-1.0, 1.0) as f32 as f64).collect();
    let lo: Vec<f64> = c.iter().map(|v| v - eps).collect();
    let hi: Vec<f64> = c.iter().map(|v| v + eps).collect();
    let n = 20_000;
    let xs = common::sample_box(&lo, &hi, n, &mut r);
    let ys = eval::forward_par::<f32>(&net.exec, &xs, n, 512).unwrap();
    // Two or three random rows c y <= d, each d at a low quantile of its sampled values, so
    // the conjunction is rare or empty.
    let m = 2 + (seed as usize % 2);
    let mut conj = Vec::new();
    for _ in 0..m {
        let coeffs: Vec<(usize, f64)> = (0..no)
            .map(|j| (j, r.range(-1.0, 1.0) as f32 as f64))
            .collect();
        let mut vals: Vec<f64> = (0..n)
            .map(|s| coeffs.iter().map(|&(j, a)| a * ys[s * no + j] as f64).sum())
            .collect();
        vals.sort_by(f64::total_cmp);
        let q = [0.0, 0.02, 0.2][quantile % 3];
        let rhs = vals[((n - 1) as f64 * q) as usize];
        conj.push(Constraint {
            coeffs,
            rhs,
            strict: false,
        });
    }
    let region = Region {
        lower: lo.clone(),
        upper: hi.clone(),
        input_constraints: vec![],
        disjuncts: vec![conj.clone()],
    };
    let spec = Spec {
        num_inputs: ni,
        num_outputs: no,
        regions: vec![region.clone()],
    };
    // Both input-splitting rules, by seed: the proof is the tree, whichever rule chose it.
    let input_branching = if (seed / 2) % 2 == 0 {
        InputBranching::Lookahead
    } else {
        InputBranching::Sb
    };
    let opts = VerifyOptions {
        timeout: Some(Duration::from_secs(5)),
        bab: Some(BabConfig {
            input_branching,
            ..BabConfig::default()
        }),
        ..Default::default()
    };
    let rep = verify::verify(&net, &spec, &opts).unwrap();
    if matches!(rep.verdict, Verdict::Verified | Verdict::Falsified(_)) {
        DECIDED.fetch_add(1, Ordering::SeqCst);
    }
    match &rep.verdict {
        Verdict::Verified => {
            for s in 0..n {
                let y: Vec<f64> = ys[s * no..(s + 1) * no].iter().map(|&v| v as f64).collect();
                prop_assert!(
                    region.violated_by(&y).is_none(),
                    "unsat, yet sample {s} violates: {desc}"
                );
            }
        }
        Verdict::Falsified(cex) => {
            prop_assert!(region.contains(&cex.x), "cex outside the box: {desc}");
            let x32: Vec<f32> = cex.x.iter().map(|&v| v as f32).collect();
            let y = eval::forward::<f32>(&net.exec, &x32, 1).unwrap();
            let y: Vec<f64> = y.iter().map(|&v| v as f64).collect();
            prop_assert!(
                region.violated_by(&y).is_some(),
                "cex does not violate: {desc}"
            );
        }
        // Undecided within the budget: nothing to check here (counted above).
        Verdict::Unknown | Verdict::Timeout | Verdict::Error(_) => {}
    }
    Ok(())
}

#[test]
fn input_splitting_on_conjunctions_is_sound() {
    netgen::run_dense_relu_cases(48, 0usize..3, check);
    let (cases, decided) = (CASES.load(Ordering::SeqCst), DECIDED.load(Ordering::SeqCst));
    eprintln!("{decided} of {cases} cases decided");
    assert!(
        decided * 3 >= cases,
        "only {decided} of {cases} cases were decided: the test checked too little"
    );
}

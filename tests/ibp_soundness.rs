//! Property tests: IBP bounds contain every sampled output of random networks of random
//! shapes, evaluated in float32 exactly as deployed (>= 10^4 samples per case).

mod common;

use common::netgen::{self, Rng};
use ferrocert::domain::{FpMode, Intervals};
use ferrocert::ir::passes;
use ferrocert::{bounds, eval};
use proptest::prelude::*;

fn check(kinds: &[u8], conv: bool, seed: u64, eps_pick: usize) -> Result<(), TestCaseError> {
    let (model, desc) = netgen::random_model(kinds, conv, seed);
    let exec = netgen::import(&model);
    let analysis = passes::simplify(exec.clone());
    let mut r = Rng(seed ^ 0xABCDEF);
    let ni = exec.input_numel();
    let eps = [0.0, 1e-3, 0.1, 1.0][eps_pick % 4];
    let c: Vec<f64> = (0..ni).map(|_| r.range(-1.0, 1.0) as f32 as f64).collect();
    let lo: Vec<f64> = c.iter().map(|v| v - eps).collect();
    let hi: Vec<f64> = c.iter().map(|v| v + eps).collect();
    let n = if eps == 0.0 { 1 } else { 10_000 };
    let xs = common::sample_box(&lo, &hi, n, &mut r);
    let ys = eval::forward_par::<f32>(&exec, &xs, n, 512).unwrap();
    let no = exec.output_numel();
    for (mode, g) in [(FpMode::Deployed, &analysis), (FpMode::Deployed, &exec)] {
        let out = bounds::ibp(g, Intervals::new(lo.clone(), hi.clone()), 1, mode);
        for s in 0..n {
            for j in 0..no {
                let y = ys[s * no + j] as f64;
                prop_assert!(
                    out.lo[j] <= y && y <= out.hi[j],
                    "{desc}\neps {eps}: f32 output {j} = {y} outside [{}, {}]",
                    out.lo[j],
                    out.hi[j]
                );
            }
        }
    }
    // Real mode encloses the real-arithmetic function; the f64 evaluation is within its own
    // tiny rounding of it.
    let x64: Vec<f64> = xs.iter().map(|&v| v as f64).collect();
    let y64 = eval::forward_par::<f64>(&exec, &x64, n, 512).unwrap();
    let out = bounds::ibp(&analysis, Intervals::new(lo, hi), 1, FpMode::Real);
    for s in 0..n {
        for j in 0..no {
            let y = y64[s * no + j];
            let tol = 1e-9 * (1.0 + y.abs());
            prop_assert!(
                out.lo[j] <= y + tol && y - tol <= out.hi[j],
                "{desc}\nreal mode: {y} outside [{}, {}]",
                out.lo[j],
                out.hi[j]
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn ibp_contains_samples_of_random_mlps(kinds in prop::collection::vec(0u8..netgen::KINDS as u8, 1..7), seed in any::<u64>(), eps in 0usize..4) {
        check(&kinds, false, seed, eps)?;
    }

    #[test]
    fn ibp_contains_samples_of_random_cnns(kinds in prop::collection::vec(0u8..netgen::KINDS as u8, 1..6), seed in any::<u64>(), eps in 0usize..4) {
        check(&kinds, true, seed, eps)?;
    }
}

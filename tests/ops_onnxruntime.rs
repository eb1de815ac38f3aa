//! Every operator variant against onnxruntime (fixtures from scripts/make_op_fixtures.sh): the
//! evaluator reproduces its outputs, and IBP on the point box contains them (a check of the
//! floating-point error model against a real runtime), and contains sampled outputs nearby.

mod common;

use ferrocert::domain::{FpMode, Intervals};
use ferrocert::network::Network;
use ferrocert::{bounds, eval};
use serde_json::Value;

#[test]
fn every_operator_fixture_matches_onnxruntime() {
    let dir = common::repo("tests/data/ops");
    let fixtures = common::files_with_ext(&dir, "json");
    assert!(fixtures.len() >= 30, "only {} fixtures", fixtures.len());
    let mut rng = common::netgen::Rng(99);
    let mut worst = 0.0f64;
    for f in &fixtures {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let name = v["model"].as_str().unwrap();
        let net = Network::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        for case in v["cases"].as_array().unwrap() {
            let x = common::f64s(&case["input"]);
            let y_ort = common::f64s(&case["output"]);
            assert_eq!(net.exec.output_numel(), y_ort.len(), "{name}: output size");
            let x32: Vec<f32> = x.iter().map(|&a| a as f32).collect();
            let y32 = eval::forward::<f32>(&net.exec, &x32, 1).unwrap();
            let y64 = eval::forward::<f64>(&net.exec, &x, 1).unwrap();
            let ya = eval::forward::<f32>(&net.analysis, &x32, 1).unwrap();
            for j in 0..y_ort.len() {
                let tol = 1e-5 * (1.0 + y_ort[j].abs());
                let d = (y32[j] as f64 - y_ort[j]).abs();
                worst = worst.max(d / (1.0 + y_ort[j].abs()));
                assert!(
                    d <= tol,
                    "{name} out {j}: f32 {} vs onnxruntime {}",
                    y32[j],
                    y_ort[j]
                );
                assert!(
                    (y64[j] - y_ort[j]).abs() <= tol,
                    "{name} out {j}: f64 {} vs {}",
                    y64[j],
                    y_ort[j]
                );
                assert!(
                    (ya[j] as f64 - y_ort[j]).abs() <= tol,
                    "{name} out {j}: analysis graph {} vs {}",
                    ya[j],
                    y_ort[j]
                );
            }
            // onnxruntime's own float32 result is one deployed evaluation: it must lie in the
            // deployed-mode bounds of the point box, for both graphs.
            for g in [&net.exec, &net.analysis] {
                let out = bounds::ibp(g, Intervals::point(x.clone()), 1, FpMode::Deployed);
                for j in 0..y_ort.len() {
                    assert!(
                        out.lo[j] <= y_ort[j] && y_ort[j] <= out.hi[j],
                        "{name} out {j}: onnxruntime {} outside point IBP [{}, {}]",
                        y_ort[j],
                        out.lo[j],
                        out.hi[j]
                    );
                }
            }
            // A small box around the input: sampled float32 outputs inside deployed IBP.
            let lo: Vec<f64> = x.iter().map(|a| a - 0.05).collect();
            let hi: Vec<f64> = x.iter().map(|a| a + 0.05).collect();
            let n = 10_000;
            let xs = common::sample_box(&lo, &hi, n, &mut rng);
            let ys = eval::forward_par::<f32>(&net.exec, &xs, n, 1024).unwrap();
            let out = bounds::ibp(&net.analysis, Intervals::new(lo, hi), 1, FpMode::Deployed);
            let no = y_ort.len();
            for s in 0..n {
                for j in 0..no {
                    let y = ys[s * no + j] as f64;
                    assert!(
                        out.lo[j] <= y && y <= out.hi[j],
                        "{name}: sample output {j} = {y} outside [{}, {}]",
                        out.lo[j],
                        out.hi[j]
                    );
                }
            }
        }
    }
    eprintln!(
        "{} operator fixtures; worst relative difference to onnxruntime {worst:.2e}",
        fixtures.len()
    );
}

/// The deployed-arithmetic allowance of every transcendental function stays well above the
/// largest difference to onnxruntime measured on 10^6 samples per function
/// (`tests/data/allowances.json`, from scripts/measure_allowances.py): at least 4x.
#[test]
fn declared_allowances_stay_well_above_measured_runtime_errors() {
    use ferrocert::ops::Func;
    use ferrocert::ops::elementwise as ew;
    let text = std::fs::read_to_string(common::repo("tests/data/allowances.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let measured = v["functions"].as_object().unwrap();
    for (name, m) in measured {
        let f = Func::by_name(name).unwrap_or_else(|| panic!("{name}: no such function"));
        let a = f.allowance();
        let abs = m["max_abs_err_where_abs_f_le_1"].as_f64().unwrap();
        let rel = m["max_rel_err_where_abs_f_gt_1"].as_f64().unwrap();
        assert!(abs > 0.0, "{name}: nothing measured");
        // |f| <= 1: the allowance is at least its absolute part; |f| > 1: its relative part.
        assert!(
            a.abs >= 4.0 * abs,
            "{name}: abs allowance {} vs measured {abs}",
            a.abs
        );
        assert!(
            a.rel >= 4.0 * rel,
            "{name}: rel allowance {} vs measured {rel}",
            a.rel
        );
    }
    // Every transcendental function without parameters was measured (Pow's error is that
    // of exp and log; HardSwish is basic arithmetic).
    for d in ew::DEFS {
        let transcendental = d.allowance.abs == ew::TRANSCENDENTAL.abs && d.value_f32.is_none()
            || [
                "Sigmoid",
                "Tanh",
                "Exp",
                "Log",
                "Sqrt",
                "Reciprocal",
                "Sin",
                "Cos",
            ]
            .contains(&d.name);
        if transcendental {
            assert!(
                measured.contains_key(d.name),
                "{} has no measurement",
                d.name
            );
        }
    }
    assert!(v["samples_per_function"].as_u64().unwrap() >= 1_000_000);
}

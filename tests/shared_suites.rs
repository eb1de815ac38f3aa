//! Every shared benchmark network and spec: loading, parsing, counterexample replay through the
//! concrete evaluator, and IBP containment of sampled outputs.

mod common;

use ferrocert::domain::{FpMode, Intervals};
use ferrocert::network::Network;
use ferrocert::{bounds, eval, report, spec};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// Files the repository bundles so a fresh clone tests without `../shared`, and the shared
/// originals they copy (path under `../shared/benchmarks`).
const BUNDLED_COPIES: &[(&str, &str)] = &[
    ("models/digits_mlp.onnx", "digits/onnx/digits_mlp.onnx"),
    (
        "models/digits_mlp.onnx",
        "digits/onnx/digits_mlp_clean.onnx",
    ),
    ("models/digits_cnn.onnx", "digits/onnx/digits_cnn.onnx"),
    (
        "models/digits_mlp_noise.onnx",
        "digits/onnx/digits_mlp_noise.onnx",
    ),
    (
        "models/digits_mlp_backdoor.onnx",
        "digits/onnx/digits_mlp_backdoor.onnx",
    ),
    ("models/toy_mlp.onnx", "digits/onnx/toy_mlp.onnx"),
    (
        "models/data/test_images_all.npy",
        "digits/test_images_all.npy",
    ),
    (
        "models/data/test_labels_all.npy",
        "digits/test_labels_all.npy",
    ),
    (
        "tests/data/digits/test_images.npy",
        "digits/test_images.npy",
    ),
    (
        "tests/data/digits/test_labels.npy",
        "digits/test_labels.npy",
    ),
    ("tests/data/digits/test_set.json", "digits/test_set.json"),
    (
        "tests/data/digits/bounds_reference.jsonl",
        "digits/reference/bounds.jsonl",
    ),
    (
        "tests/data/digits/smoothing_reference.json",
        "digits/reference/smoothing.json",
    ),
    (
        "tests/data/digits/neural_cleanse_reference.json",
        "digits/reference/neural_cleanse.json",
    ),
];

#[test]
fn bundled_copies_are_byte_identical_to_the_shared_originals() {
    let Some(shared) = common::shared_benchmarks() else {
        return;
    };
    for (local, original) in BUNDLED_COPIES {
        let a = std::fs::read(common::repo(local)).unwrap_or_else(|e| panic!("{local}: {e}"));
        let b = std::fs::read(shared.join(original)).unwrap_or_else(|e| panic!("{original}: {e}"));
        assert!(
            a == b,
            "{local} differs from ../shared/benchmarks/{original}"
        );
    }
}

#[test]
fn every_shared_onnx_model_loads() {
    let Some(shared) = common::shared_benchmarks() else {
        return;
    };
    let models = common::files_with_ext(&shared, "onnx");
    assert!(models.len() >= 30, "found only {} models", models.len());
    for m in &models {
        let net = Network::load(m).unwrap_or_else(|e| panic!("{}: {e}", m.display()));
        assert!(net.analysis.output_numel() > 0);
    }
}

#[test]
fn every_shared_vnnlib_parses() {
    let Some(shared) = common::shared_benchmarks() else {
        return;
    };
    let specs = common::files_with_ext(&shared, "vnnlib");
    assert!(specs.len() >= 500, "found only {} specs", specs.len());
    let t = Instant::now();
    let (mut bytes, mut most_regions, mut most_disjuncts) = (0, 0, 0);
    for s in &specs {
        bytes += std::fs::metadata(s).unwrap().len();
        let sp = spec::parse_file(s).unwrap_or_else(|e| panic!("{}: {e}", s.display()));
        assert!(!sp.regions.is_empty(), "{}", s.display());
        most_regions = most_regions.max(sp.regions.len());
        most_disjuncts = most_disjuncts.max(sp.disjunct_count());
    }
    eprintln!(
        "parsed {} specs ({} MB) in {:?}; at most {most_regions} input regions and \
         {most_disjuncts} output disjuncts in one spec",
        specs.len(),
        bytes / 1_000_000,
        t.elapsed()
    );
}

/// (onnx, vnnlib, expected, counterexample path) of every instance of a suite.
fn expected_rows(suite: &Path) -> Vec<(String, String, String, Option<String>)> {
    let Ok(text) = std::fs::read_to_string(suite.join("expected.csv")) else {
        return vec![];
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n);
    let (e, c) = (col("expected").unwrap(), col("counterexample"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let cex = c
                .and_then(|c| f.get(c))
                .filter(|s| !s.is_empty())
                .map(|s| s.to_string());
            (f[0].to_string(), f[1].to_string(), f[e].to_string(), cex)
        })
        .collect()
}

fn stem(p: &str) -> String {
    Path::new(p)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn every_shared_counterexample_replays_in_the_evaluator() {
    let Some(shared) = common::shared_benchmarks() else {
        return;
    };
    let mut checked = 0;
    let mut worst = 0.0f64;
    for suite in std::fs::read_dir(&shared)
        .unwrap()
        .flatten()
        .map(|e| e.path())
    {
        let mut nets: HashMap<String, Network> = HashMap::new();
        for (onnx, vnnlib, expected, cex) in expected_rows(&suite) {
            if expected != "sat" {
                continue;
            }
            let cex_path = match cex {
                Some(c) => suite.join(c),
                None => suite.join(format!(
                    "counterexamples/{}__{}.counterexample",
                    stem(&onnx),
                    stem(&vnnlib)
                )),
            };
            let Ok(text) = std::fs::read_to_string(&cex_path) else {
                panic!("missing counterexample {}", cex_path.display())
            };
            let (x, y_ref) = report::parse_counterexample(&text).expect("parsable counterexample");
            let net = nets
                .entry(onnx.clone())
                .or_insert_with(|| Network::load(&suite.join(&onnx)).unwrap());
            let sp = spec::parse_file(&suite.join(&vnnlib)).unwrap();
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let y: Vec<f64> = eval::forward::<f32>(&net.exec, &x32, 1)
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .collect();
            assert_eq!(y.len(), y_ref.len());
            for (a, b) in y.iter().zip(&y_ref) {
                let rel = (a - b).abs() / (1.0 + b.abs());
                worst = worst.max(rel);
                assert!(rel < 1e-5, "{} {}: {a} vs onnxruntime {b}", onnx, vnnlib);
            }
            // The box holds X as written; the network (like onnxruntime) sees X cast to f32.
            let hit = sp
                .regions
                .iter()
                .any(|r| r.contains(&x) && r.violated_by(&y).is_some());
            assert!(
                hit,
                "{} {}: counterexample does not violate the property in our evaluator",
                onnx, vnnlib
            );
            checked += 1;
        }
    }
    eprintln!("replayed {checked} counterexamples; worst relative output difference {worst:.2e}");
    assert!(checked >= 100, "only {checked} counterexamples found");
}

#[test]
fn ibp_contains_sampled_outputs_on_every_shared_network() {
    let Some(shared) = common::shared_benchmarks() else {
        return;
    };
    let mut rng = common::netgen::Rng(42);
    let mut cases = 0;
    for suite in std::fs::read_dir(&shared)
        .unwrap()
        .flatten()
        .map(|e| e.path())
    {
        let Ok(text) = std::fs::read_to_string(suite.join("instances.csv")) else {
            continue;
        };
        // First instance of every network in the suite.
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() < 3 || !seen.insert(f[0].to_string()) {
                continue;
            }
            let net = Network::load(&suite.join(f[0])).unwrap();
            let sp = spec::parse_file(&suite.join(f[1])).unwrap();
            let r = &sp.regions[0];
            let no = net.analysis.output_numel();
            let out = bounds::ibp(
                &net.analysis,
                Intervals::new(r.lower.clone(), r.upper.clone()),
                1,
                FpMode::Deployed,
            );
            let n = 10_000;
            let xs = common::sample_box(&r.lower, &r.upper, n, &mut rng);
            let ys = eval::forward_par::<f32>(&net.exec, &xs, n, 256).unwrap();
            for s in 0..n {
                for j in 0..no {
                    let y = ys[s * no + j] as f64;
                    assert!(
                        out.lo[j] <= y && y <= out.hi[j],
                        "{} {}: output {j} = {y} outside IBP [{}, {}]",
                        f[0],
                        f[1],
                        out.lo[j],
                        out.hi[j]
                    );
                }
            }
            cases += 1;
        }
    }
    eprintln!("IBP containment checked on {cases} networks");
    assert!(cases >= 20);
}

//! Randomized smoothing against the reference run in `tests/data/digits/smoothing_reference.json`
//! (a copy of `../shared/benchmarks/digits/reference/smoothing.json`: scipy statistics and a
//! numpy + onnxruntime CERTIFY run on digits_mlp_noise).

mod common;

use ferrocert::data::npy;
use ferrocert::network::Network;
use ferrocert::smoothing::{self, Dataset, Mode, SmoothConfig, stats};
use serde_json::Value;

fn reference() -> Value {
    let p = common::repo("tests/data/digits/smoothing_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn repo(p: &str) -> String {
    common::repo(p).to_string_lossy().into_owned()
}

#[test]
fn clopper_pearson_and_normal_quantile_match_scipy() {
    for r in reference()["clopper_pearson_reference"].as_array().unwrap() {
        let (na, n, alpha) = (
            r["nA"].as_u64().unwrap(),
            r["n"].as_u64().unwrap(),
            r["alpha"].as_f64().unwrap(),
        );
        let p = stats::clopper_pearson_lower(na, n, alpha);
        let want = r["pA_lower"].as_f64().unwrap();
        assert!(
            (p - want).abs() <= 1e-9,
            "CP({na}, {n}, {alpha}) = {p}, scipy {want}"
        );
        assert_eq!(p < 0.5, r["abstain"].as_bool().unwrap());
        if let Some(rad) = r["radius_sigma_0_25"].as_f64() {
            let ours = 0.25 * stats::normal_quantile(p);
            assert!((ours - rad).abs() <= 1e-9, "radius {ours} vs {rad}");
        }
    }
    // A few textbook quantiles.
    assert!((stats::normal_quantile(0.975) - 1.959963984540054).abs() < 1e-12);
    assert!((stats::normal_quantile(0.5)).abs() < 1e-15);
}

fn digits_data(labels: bool) -> Dataset {
    let x = npy::read(&common::repo("tests/data/digits/test_images.npy")).unwrap();
    let y = npy::read(&common::repo("tests/data/digits/test_labels.npy")).unwrap();
    Dataset::new(&x, labels.then_some(&y), 1.0, &[1, 64], 10).unwrap()
}

fn certify(seed: u64, batch: usize) -> Vec<smoothing::InputResult> {
    let net = Network::load(&common::repo("models/digits_mlp_noise.onnx")).unwrap();
    let cfg = SmoothConfig {
        sigma: 0.25,
        n0: 100,
        n: 10_000,
        alpha: 0.001,
        batch,
        seed,
        mode: Mode::Certify,
    };
    smoothing::smooth_dataset(&net.exec, &digits_data(true), &cfg, &|_| {}).unwrap()
}

/// The bar: certified accuracy within 0.04 of the reference at every reported radius,
/// and the mean radius of correct images within 0.02, for three fixed seeds.
#[test]
fn certified_accuracy_matches_the_reference_run() {
    let r = reference();
    let want = r["certified_accuracy_at_radius"].as_object().unwrap();
    let want_mean = r["summary"]["mean_radius_correct"].as_f64().unwrap();
    for seed in 0..3 {
        let res = certify(seed, 2048);
        let s = smoothing::summarize(&res, Mode::Certify);
        for (k, v) in want {
            let rad: f64 = k.parse().unwrap();
            let got = s
                .certified_accuracy
                .iter()
                .find(|p| (p.radius - rad).abs() < 1e-12)
                .unwrap()
                .accuracy;
            let v = v.as_f64().unwrap();
            assert!(
                (got - v).abs() <= 0.04 + 1e-9,
                "seed {seed}: certified accuracy at {rad}: {got}, reference {v}"
            );
        }
        let m = s.mean_radius_correct.unwrap();
        assert!(
            (m - want_mean).abs() <= 0.02,
            "seed {seed}: mean radius {m} vs {want_mean}"
        );
        // No radius beyond what the Clopper-Pearson bound of its own count allows.
        for x in &res {
            let p = stats::clopper_pearson_lower(x.n_a, 10_000, 0.001);
            assert_eq!(x.p_a_lower, Some(p));
            match x.radius {
                Some(rad) => {
                    assert!(p >= 0.5 && x.prediction.is_some());
                    assert!(rad <= 0.25 * stats::normal_quantile(p), "input {}", x.index);
                }
                None => assert!(p < 0.5 && x.prediction.is_none()),
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_batch_or_threads() {
    let a = certify(5, 256);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let b = pool.install(|| certify(5, 777));
    let c = certify(5, 8192);
    let key = |v: &[smoothing::InputResult]| serde_json::to_string(v).unwrap();
    assert_eq!(key(&a), key(&b));
    assert_eq!(key(&a), key(&c));
    let d = certify(6, 256);
    assert_ne!(key(&a), key(&d), "another seed must give other counts");
}

#[test]
fn cli_json_contract_and_identical_output_across_jobs_and_batch() {
    let args = |jobs: &str, batch: &str| {
        vec![
            "smooth".to_string(),
            repo("models/digits_mlp_noise.onnx"),
            "--data".into(),
            repo("tests/data/digits/test_images.npy"),
            "--labels".into(),
            repo("tests/data/digits/test_labels.npy"),
            "--sigma".into(),
            "0.25".into(),
            "--n".into(),
            "2000".into(),
            "--count".into(),
            "12".into(),
            "--seed".into(),
            "3".into(),
            "--jobs".into(),
            jobs.into(),
            "--batch".into(),
            batch.into(),
            "--json".into(),
        ]
    };
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        common::ferrocert(&refs)
    };
    let (code, out1, err) = run(args("1", "300"));
    assert_eq!(code, 0, "{err}");
    let (code, out2, _) = run(args("2", "4096"));
    assert_eq!(code, 0);
    assert_eq!(out1, out2, "stdout must not depend on --jobs or --batch");
    let v: Value = serde_json::from_str(&out1).unwrap();
    assert_eq!(v["model_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(v["data_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(v["parameters"]["sigma"], 0.25);
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.len(), 12);
    for (i, r) in res.iter().enumerate() {
        assert_eq!(r["index"], i);
        for k in ["prediction", "n_a", "p_a_lower", "radius", "correct"] {
            assert!(r.get(k).is_some(), "result lacks {k}: {r}");
        }
        assert_eq!(r["prediction"].is_null(), r["radius"].is_null());
    }
    let s = &v["summary"];
    for k in [
        "clean_accuracy",
        "abstain_rate",
        "certified_accuracy",
        "mean_radius_correct",
    ] {
        assert!(s.get(k).is_some(), "summary lacks {k}");
    }
    assert!(s["certified_accuracy_at_radius"]["0.5"].is_number());
    // The text report carries the same verdicts.
    let mut a = args("2", "2048");
    a.pop();
    let (code, text, _) = run(a);
    assert_eq!(code, 0);
    assert!(text.contains("certified accuracy at radius 0.25"), "{text}");
}

#[test]
fn predict_mode_agrees_with_labels_on_clean_images() {
    let net = Network::load(&common::repo("models/digits_mlp_noise.onnx")).unwrap();
    let cfg = SmoothConfig {
        sigma: 0.25,
        n0: 0,
        n: 2000,
        alpha: 0.001,
        batch: 1024,
        seed: 1,
        mode: Mode::Predict,
    };
    let res = smoothing::smooth_dataset(&net.exec, &digits_data(true), &cfg, &|_| {}).unwrap();
    let s = smoothing::summarize(&res, Mode::Predict);
    assert!(s.clean_accuracy.unwrap() >= 0.9, "{s:?}");
    for r in &res {
        assert!(r.radius.is_none() && r.p_value.is_some());
        if r.prediction.is_some() {
            assert!(r.p_value.unwrap() <= 0.001);
        }
    }
}

#[test]
fn bad_smoothing_input_is_a_clear_error_with_exit_2() {
    let dir = std::env::temp_dir().join(format!("ferrocert-smooth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrong_shape = dir.join("wrong_shape.npy");
    std::fs::write(&wrong_shape, npy::write_f32(&[3, 63], &[0.5; 189])).unwrap();
    let nan = dir.join("nan.npy");
    let mut v = vec![0.5f32; 128];
    v[70] = f32::NAN;
    std::fs::write(&nan, npy::write_f32(&[2, 64], &v)).unwrap();
    let truncated = dir.join("truncated.npy");
    let bytes = npy::write_f32(&[2, 64], &[0.5; 128]);
    std::fs::write(&truncated, &bytes[..bytes.len() - 9]).unwrap();
    let bad_labels = dir.join("labels.npy");
    std::fs::write(&bad_labels, npy::write_f32(&[2], &[3.0, 12.0])).unwrap();
    let good = dir.join("good.npy");
    std::fs::write(&good, npy::write_f32(&[2, 64], &[0.5; 128])).unwrap();
    let model = repo("models/digits_mlp_noise.onnx");
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![s(&wrong_shape), "--sigma".into(), "0.25".into()],
            "does not match the model input",
        ),
        (vec![s(&nan), "--sigma".into(), "0.25".into()], "non-finite"),
        (
            vec![s(&truncated), "--sigma".into(), "0.25".into()],
            "needs",
        ),
        (vec![s(&good), "--sigma".into(), "0".into()], "--sigma"),
        (vec![s(&good), "--sigma".into(), "-1".into()], "--sigma"),
        (
            vec![
                s(&good),
                "--sigma".into(),
                "0.25".into(),
                "--n0".into(),
                "500".into(),
                "--n".into(),
                "100".into(),
            ],
            "--n0",
        ),
        (
            vec![
                s(&good),
                "--sigma".into(),
                "0.25".into(),
                "--alpha".into(),
                "1".into(),
            ],
            "--alpha",
        ),
        (
            vec![
                s(&good),
                "--sigma".into(),
                "0.25".into(),
                "--alpha".into(),
                "0".into(),
            ],
            "--alpha",
        ),
        (
            vec![
                s(&good),
                "--sigma".into(),
                "0.25".into(),
                "--labels".into(),
                s(&bad_labels),
            ],
            "label",
        ),
        (
            vec![s(&dir.join("missing.npy")), "--sigma".into(), "0.25".into()],
            "missing.npy",
        ),
    ];
    for (extra, needle) in cases {
        let mut a = vec!["smooth".to_string(), model.clone(), "--data".into()];
        a.extend(extra);
        if !a.iter().any(|x| x == "--n") {
            a.extend(["--n".to_string(), "100".to_string()]);
        }
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, _, err) = common::ferrocert(&refs);
        assert_eq!(code, 2, "{a:?}: {err}");
        assert!(
            err.contains(needle),
            "{a:?}: stderr lacks '{needle}': {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

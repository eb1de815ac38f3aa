//! The CLI contract: subcommands, JSON keys, VNN-COMP words and exit codes.

mod common;

use serde_json::Value;

fn repo(p: &str) -> String {
    common::repo(p).to_string_lossy().into_owned()
}

#[test]
fn inspect_json_reports_identity_shapes_and_parameters() {
    let m = repo("models/digits_mlp.onnx");
    let (code, out, err) = common::ferrocert(&["inspect", &m, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["sha256"],
        ferrocert::onnx::sha256_file(common::repo("models/digits_mlp.onnx").as_path()).unwrap()
    );
    assert_eq!(v["input"]["shape"], serde_json::json!([1, 64]));
    assert_eq!(v["output"]["shape"], serde_json::json!([1, 10]));
    assert_eq!(
        v["parameters"],
        64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10 + 2
    );
    assert_eq!(v["onnx_ops"]["Gemm"], 3);
    let (code, text, _) = common::ferrocert(&["inspect", &m]);
    assert_eq!(code, 0);
    assert!(
        text.contains("sha256:") && text.contains("Gemm x3"),
        "{text}"
    );
}

#[test]
fn bounds_json_has_the_contract_keys() {
    let (code, out, err) = common::ferrocert(&[
        "bounds",
        &repo("models/digits_cnn.onnx"),
        &repo("specs/digits/prop_0_0.01.vnnlib"),
        "--method",
        "ibp",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    for k in [
        "lower",
        "upper",
        "method",
        "model_sha256",
        "spec_sha256",
        "elapsed_s",
    ] {
        assert!(v.get(k).is_some(), "missing key {k}");
    }
    assert_eq!(v["method"], "ibp");
    let (lo, hi) = (
        v["lower"].as_array().unwrap(),
        v["upper"].as_array().unwrap(),
    );
    assert_eq!(lo.len(), 10);
    for (l, h) in lo.iter().zip(hi) {
        assert!(l.as_f64().unwrap() <= h.as_f64().unwrap());
    }
    assert_eq!(v["spec_sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn bounds_over_several_regions_reports_each_and_their_union() {
    let d = common::scratch("cli_regions");
    let spec = d.join("two.vnnlib");
    std::fs::write(
        &spec,
        "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n\
         (assert (or (and (>= X_0 -1) (<= X_0 -0.5)) (and (>= X_0 0.5) (<= X_0 1))))\n(assert (<= Y_0 -1))\n",
    )
    .unwrap();
    let (code, out, err) = common::ferrocert(&[
        "bounds",
        &repo("models/test_nano.onnx"),
        spec.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let regions = v["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2);
    let l0 = regions[0]["lower"][0].as_f64().unwrap();
    let l1 = regions[1]["lower"][0].as_f64().unwrap();
    assert_eq!(v["lower"][0].as_f64().unwrap(), l0.min(l1));
}

#[test]
fn verify_words_exit_codes_and_result_file() {
    let d = common::scratch("cli_verify");
    let rf = d.join("result.txt");
    // IBP proves digits_cnn prop_0 at eps 0.01.
    let (code, out, err) = common::ferrocert(&[
        "verify",
        &repo("models/digits_cnn.onnx"),
        &repo("specs/digits/prop_0_0.01.vnnlib"),
        "--timeout",
        "30",
        "--result-file",
        rf.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().next(), Some("unsat"));
    assert_eq!(
        std::fs::read_to_string(&rf).unwrap().lines().next(),
        Some("unsat")
    );
    // A known sat instance (Marabou's verdict): sat, exit 1, a counterexample inside the box
    // in the result file.
    let (code, out, _) = common::ferrocert(&[
        "verify",
        &repo("models/digits_mlp.onnx"),
        &repo("specs/digits/prop_9_0.05.vnnlib"),
        "--result-file",
        rf.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.lines().next(), Some("sat"));
    let (x, _) = ferrocert::report::parse_counterexample(&std::fs::read_to_string(&rf).unwrap())
        .expect("a counterexample in the result file");
    let spec =
        ferrocert::spec::parse_file(&common::repo("specs/digits/prop_9_0.05.vnnlib")).unwrap();
    assert!(
        spec.regions[0].contains(&x),
        "counterexample outside the box"
    );
    // With IBP as the strongest method and no search it is not proved (never unsat): exit 3.
    let (code, out, _) = common::ferrocert(&[
        "verify",
        &repo("models/digits_mlp.onnx"),
        &repo("specs/digits/prop_12_0.02.vnnlib"),
        "--method",
        "ibp",
        "--timeout",
        "0.001",
    ]);
    assert_ne!(out.lines().next(), Some("unsat"), "{out}");
    assert!(code == 3, "exit {code}: {out}");
    // An error still writes the result file.
    let (code, _, _) = common::ferrocert(&[
        "verify",
        &repo("models/digits_mlp.onnx"),
        "/nonexistent.vnnlib",
        "--result-file",
        rf.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert_eq!(
        std::fs::read_to_string(&rf).unwrap().lines().next(),
        Some("error")
    );
}

#[test]
fn run_on_the_bundled_instances_is_resumable_and_never_wrong() {
    let d = common::scratch("cli_run");
    let out_csv = d.join("results.csv");
    let inst = repo("specs/instances.csv");
    let (code, out, err) = common::ferrocert(&[
        "run",
        &inst,
        "--out",
        out_csv.to_str().unwrap(),
        "--jobs",
        "2",
        "--timeout-scale",
        "0.1",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("wrong 0"), "{out}");
    let rows = std::fs::read_to_string(&out_csv).unwrap();
    assert_eq!(rows.lines().next(), Some("onnx,vnnlib,result,time_s"));
    let n = rows.lines().count();
    assert_eq!(
        n,
        1 + std::fs::read_to_string(&inst).unwrap().lines().count()
    );
    // A second run skips every row already present.
    let (code, _, _) = common::ferrocert(&["run", &inst, "--out", out_csv.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read_to_string(&out_csv).unwrap().lines().count(),
        n
    );
}

#[test]
fn help_is_available_for_every_subcommand() {
    // Every subcommand the top-level help lists (so a new one cannot be skipped).
    let (code, top, _) = common::ferrocert(&["--help"]);
    assert_eq!(code, 0);
    let subs: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|s| s != "help")
        .collect();
    for want in [
        "certify", "replay", "merge", "keygen", "schema", "inspect", "bounds", "verify", "run",
        "smooth", "scan",
    ] {
        assert!(
            subs.iter().any(|s| s == want),
            "{want} missing from --help: {top}"
        );
    }
    for sub in &subs {
        let (code, out, _) = common::ferrocert(&[sub, "--help"]);
        assert_eq!(code, 0, "{sub} --help");
        assert!(out.contains("Usage"), "{sub}: {out}");
    }
    let (_, scan, _) = common::ferrocert(&["scan", "--help"]);
    assert!(scan.contains("Exit code 0: no label flagged"), "{scan}");
}

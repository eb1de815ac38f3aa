//! Evidence an auditor can re-check: `certify --sign` then `replay` on a copy of the bundled
//! models. A fresh report replays with exit 0; one changed byte in a model, spec or data file
//! makes replay exit 1 naming the file; a tampered counterexample in report.json is caught; a
//! signed directory verifies, with our checker and with the minisign tool when installed, and
//! one changed byte in any output file breaks it; a second run with another thread count
//! writes the same report.json; shards 1/3, 2/3 and 3/3 merged equal the single run in every
//! format.

use ferrocert::certify::sign;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrocert"))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run ferrocert");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// A scratch copy of one model, its data and two specs, with a configuration that has specs,
/// robustness with attacks that succeed (counterexamples), and the scan.
fn workspace(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrocert-replay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("specs")).expect("mkdir");
    for f in [
        "digits_mlp.onnx",
        "data/test_images_all.npy",
        "data/test_labels_all.npy",
    ] {
        let to = dir.join(Path::new(f).file_name().expect("name"));
        std::fs::copy(repo(&format!("models/{f}")), to).expect("copy");
    }
    for f in ["prop_0_0.01.vnnlib", "prop_0_0.05.vnnlib"] {
        std::fs::copy(
            repo(&format!("specs/digits/{f}")),
            dir.join("specs").join(f),
        )
        .expect("copy");
    }
    std::fs::write(
        dir.join("ferrocert.toml"),
        r#"[settings]
seed = 3

[gate]
allow_unknown = true

[[model]]
name = "mlp"
path = "digits_mlp.onnx"
image_shape = [8, 8]
range = [0.0, 1.0]
data = { inputs = "test_images_all.npy", labels = "test_labels_all.npy" }
specs = { files = ["specs/prop_0_*.vnnlib"], timeout = 10 }
robustness = { radii = [0.05], count = 12, timeout = 2 }
scan = { patch = [2] }
"#,
    )
    .expect("config");
    dir
}

fn certify(dir: &Path, out: &str, extra: &[&str]) -> i32 {
    let (code, stdout, stderr) = run(bin()
        .args(["certify", "--config", "ferrocert.toml", "--out", out])
        .args(extra)
        .current_dir(dir));
    assert!(
        code == 0 || code == 1,
        "certify failed ({code}): {stdout}\n{stderr}"
    );
    code
}

fn replay(dir: &Path, args: &[&str]) -> (i32, String) {
    let (code, stdout, stderr) = run(bin().arg("replay").args(args).current_dir(dir));
    (code, format!("{stdout}{stderr}"))
}

fn flip_last_byte(p: &Path) {
    let mut b = std::fs::read(p).expect("read");
    let last = b.len() - 1;
    b[last] ^= 0x01;
    std::fs::write(p, b).expect("write");
}

#[test]
fn replay_agrees_on_a_fresh_report_and_names_every_change() {
    let w = workspace("changes");
    let (code, out, err) = run(bin().args(["keygen", "k"]).current_dir(&w));
    assert_eq!(code, 0, "{out}{err}");
    certify(&w, "rep", &["--sign", "k.key", "--jobs", "2"]);
    let report = std::fs::read_to_string(w.join("rep/report.json")).expect("report");
    let doc: serde_json::Value = serde_json::from_str(&report).expect("json");
    // The provenance names every input with its hash; the counterexamples exist.
    let inputs = doc["provenance"]["inputs"].as_array().expect("inputs");
    assert_eq!(
        inputs.len(),
        6,
        "config, model, 2 specs, data, labels: {inputs:?}"
    );
    assert!(
        report.contains("\"counterexamples\""),
        "no counterexample to tamper with"
    );
    assert!(
        doc["compliance"]["items"]
            .as_array()
            .is_some_and(|a| a.len() == 7)
    );

    // Same configuration, another thread count: the same report.json.
    certify(&w, "rep1", &["--jobs", "1"]);
    let again = std::fs::read_to_string(w.join("rep1/report.json")).expect("report");
    assert!(
        again == report,
        "report.json differs between --jobs 2 and --jobs 1"
    );

    let (code, out) = replay(&w, &["no-such-dir"]);
    assert_eq!(code, 2, "an unreadable report is an error: {out}");
    let (code, out) = replay(&w, &["rep", "--pubkey", "k.pub"]);
    assert_eq!(code, 0, "fresh report must replay: {out}");
    assert!(out.contains("AGREES"), "{out}");
    let checks = doc["summary"]["checks"].as_u64().expect("checks");
    assert!(
        out.contains(&format!("checks re-run: {checks} of {checks} agree")),
        "{out}"
    );

    // A tampered counterexample (its input moved to the box's centre) is caught.
    let mut t: serde_json::Value = doc.clone();
    let rob = t["models"][0]["checks"]
        .as_array_mut()
        .expect("checks")
        .iter_mut()
        .find(|c| c["kind"] == "robustness")
        .expect("robustness check");
    let inp = rob["evidence"]["per_input"]
        .as_array_mut()
        .expect("per input")
        .iter_mut()
        .find(|i| {
            i["counterexamples"]
                .as_array()
                .is_some_and(|c| !c.is_empty())
        })
        .expect("an attacked input");
    let x = inp["counterexamples"][0]["counterexample"]["x"]
        .as_array_mut()
        .expect("x");
    for v in x.iter_mut() {
        *v = serde_json::json!(0.0);
    }
    std::fs::create_dir_all(w.join("tampered")).expect("mkdir");
    std::fs::write(
        w.join("tampered/report.json"),
        serde_json::to_string_pretty(&t).expect("json"),
    )
    .expect("write");
    let (code, out) = replay(&w, &["tampered", "--sample", "1"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DISAGREES: counterexample mlp/robustness:linf=0.05"),
        "{out}"
    );

    // One changed byte in a model, a spec or a data file: exit 1, naming the file.
    for f in [
        "digits_mlp.onnx",
        "specs/prop_0_0.05.vnnlib",
        "test_labels_all.npy",
    ] {
        let p = w.join(f);
        let orig = std::fs::read(&p).expect("read");
        flip_last_byte(&p);
        let (code, out) = replay(&w, &["rep"]);
        std::fs::write(&p, orig).expect("restore");
        assert_eq!(code, 1, "{f}: {out}");
        assert!(
            out.contains("changed input") && out.contains(f),
            "{f}: {out}"
        );
    }
    let _ = std::fs::remove_dir_all(&w);
}

#[test]
fn a_signed_report_verifies_and_any_changed_byte_breaks_it() {
    let w = workspace("sign");
    assert_eq!(run(bin().args(["keygen", "k"]).current_dir(&w)).0, 0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(w.join("k.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the secret key is readable by others: {mode:o}"
        );
    }
    // keygen never overwrites a key.
    assert_eq!(run(bin().args(["keygen", "k"]).current_dir(&w)).0, 2);
    certify(&w, "rep", &["--sign", "k.key"]);
    let dir = w.join("rep");
    let outputs: Vec<String> = ferrocert::report::render::FILES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let check = sign::verify_dir(&dir, Some(&w.join("k.pub")), &outputs).expect("signed");
    assert!(check.ok && check.signature_valid, "{check:?}");
    // The reference tool agrees, when it is installed (scripts/install-deps.sh --test).
    match Command::new("minisign")
        .args(["-Vm", "MANIFEST.sha256", "-p", "../k.pub"])
        .current_dir(&dir)
        .output()
    {
        Ok(o) => assert!(
            o.status.success(),
            "minisign: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(_) => eprintln!("SKIPPED minisign cross-check: minisign is not installed"),
    }
    // Another key does not verify it.
    assert_eq!(run(bin().args(["keygen", "other"]).current_dir(&w)).0, 0);
    let c = sign::verify_dir(&dir, Some(&w.join("other.pub")), &outputs).expect("signed");
    assert!(!c.ok && !c.signature_valid, "{c:?}");
    let mut all = outputs.clone();
    all.push(sign::MANIFEST.to_string());
    for f in &all {
        let p = dir.join(f);
        let orig = std::fs::read(&p).expect("read");
        flip_last_byte(&p);
        let c = sign::verify_dir(&dir, Some(&w.join("k.pub")), &outputs).expect("signed");
        std::fs::write(&p, orig).expect("restore");
        assert!(!c.ok, "{f} changed but the signature check passed: {c:?}");
        if f != sign::MANIFEST {
            assert_eq!(c.changed_files, vec![f.clone()], "{c:?}");
        } else {
            assert!(!c.signature_valid, "{c:?}");
        }
    }
    // And the command says so.
    let p = dir.join("report.html");
    flip_last_byte(&p);
    let (code, out) = replay(&w, &["rep", "--pubkey", "k.pub", "--sample", "1"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("report.html"), "{out}");
    let _ = std::fs::remove_dir_all(&w);
}

#[test]
fn shards_merged_equal_the_single_run_in_every_format() {
    let w = workspace("shards");
    certify(&w, "single", &[]);
    for k in 1..=3 {
        certify(&w, &format!("s{k}"), &["--shard", &format!("{k}/3")]);
        let info = std::fs::read_to_string(w.join(format!("s{k}/shard.json"))).expect("shard.json");
        assert!(info.contains(&format!("\"k\": {k}")), "{info}");
    }
    let (code, out, err) = run(bin()
        .args(["merge", "s1", "s2", "s3", "--out", "merged"])
        .current_dir(&w));
    assert!(code == 0 || code == 1, "merge: {out}{err}");
    for f in [
        "report.json",
        "report.html",
        "report.md",
        "junit.xml",
        "results.sarif",
    ] {
        let a = std::fs::read(w.join("single").join(f)).expect("single");
        let b = std::fs::read(w.join("merged").join(f)).expect("merged");
        assert!(
            a == b,
            "{f} of the merged shards differs from the single run's"
        );
    }
    // Every unit ran in exactly one shard.
    let units: Vec<String> = (1..=3)
        .flat_map(|k| {
            let v: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(w.join(format!("s{k}/shard.json"))).expect("read"),
            )
            .expect("json");
            v["units"]
                .as_array()
                .expect("units")
                .iter()
                .map(|u| u.as_str().expect("str").to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut sorted = units.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), units.len(), "a unit ran twice: {units:?}");
    assert_eq!(units.len(), 4, "2 specs, 1 radius, 1 scan: {units:?}");
    // A missing or repeated shard is an error, not a partial report.
    for dirs in [&["s1", "s2"][..], &["s1", "s2", "s2", "s3"][..]] {
        let (code, out, err) = run(bin()
            .arg("merge")
            .args(dirs)
            .args(["--out", "bad"])
            .current_dir(&w));
        assert_eq!(code, 2, "{dirs:?}: {out}{err}");
        assert!(err.contains("missing") || err.contains("twice"), "{err}");
    }
    let (code, _, err) = run(bin()
        .args([
            "certify",
            "--config",
            "ferrocert.toml",
            "--shard",
            "4/3",
            "--out",
            "x",
        ])
        .current_dir(&w));
    assert_eq!(code, 2, "{err}");
    let _ = std::fs::remove_dir_all(&w);
}

/// A stand-in for Slurm's `sbatch`: runs an array job's tasks one after another with
/// `SLURM_ARRAY_TASK_ID` set, and a dependent job right away (its dependency has ended). Like
/// `sbatch`, the submission succeeds whatever the job's exit status; the files tell.
const SBATCH_STUB: &str = r#"#!/usr/bin/env bash
set -e
array=""; wrap=""
for a in "$@"; do
  case "$a" in
    --array=*) array="${a#--array=}" ;;
    --wrap=*) wrap="${a#--wrap=}" ;;
  esac
done
if [ -n "$array" ]; then
  for i in $(seq "${array%-*}" "${array#*-}"); do SLURM_ARRAY_TASK_ID=$i bash -c "$wrap" || true; done
else
  bash -c "$wrap" || true
fi
echo 42
"#;

#[test]
fn the_slurm_example_runs_and_merges_to_the_single_run() {
    let w = workspace("slurm");
    let stub = w.join("stub");
    std::fs::create_dir_all(&stub).expect("mkdir");
    std::fs::write(stub.join("sbatch"), SBATCH_STUB).expect("stub");
    let (code, _, _) = run(Command::new("chmod")
        .args(["+x", "stub/sbatch"])
        .current_dir(&w));
    assert_eq!(code, 0);
    let path = format!(
        "{}:{}",
        stub.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (code, out, err) = run(Command::new("bash")
        .arg(repo("examples/ci/slurm-array.sh"))
        .env("PATH", path)
        .env("N", "2")
        .env("BIN", env!("CARGO_BIN_EXE_ferrocert"))
        .env("CONFIG", "ferrocert.toml")
        .current_dir(&w));
    assert_eq!(code, 0, "{out}{err}");
    certify(&w, "single", &[]);
    for f in [
        "report.json",
        "report.md",
        "junit.xml",
        "results.sarif",
        "report.html",
    ] {
        let a = std::fs::read(w.join("single").join(f)).expect("single");
        let b = std::fs::read(w.join("slurm-reports/merged").join(f)).unwrap_or_default();
        assert!(
            a == b,
            "{f}: the Slurm example's merged report differs from the single run's"
        );
    }
    let _ = std::fs::remove_dir_all(&w);
}

/// A fresh directory with a configuration of one model (a bundled file) and two specs.
fn proof_config(tag: &str, name: &str, model: &str, specs: [&str; 2]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrocert-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("ferrocert.toml"),
        format!(
            r#"[[model]]
name = "{name}"
path = "{}"
specs = {{ files = ["{}", "{}"], timeout = 60 }}
"#,
            repo(model).display(),
            repo(specs[0]).display(),
            repo(specs[1]).display()
        ),
    )
    .expect("config");
    dir
}

#[test]
fn proof_material_of_input_splitting_checks_and_a_cut_tree_does_not() {
    let dir = proof_config(
        "proofs",
        "acas",
        "models/ACASXU_run2a_1_1_batch_2000.onnx",
        ["specs/acasxu/prop_1.vnnlib", "specs/acasxu/prop_2.vnnlib"],
    );
    assert_eq!(certify(&dir, "rep", &[]), 0);
    let (code, out) = replay(&dir, &["rep", "--check-proofs"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("proofs checked: 2 of 2"), "{out}");
    // Both were proved by input splitting, so nothing needed a re-run.
    assert!(out.contains("checks re-run: 0 of 0"), "{out}");
    // The tree cut down to its root: the checker finds the open node.
    let text = std::fs::read_to_string(dir.join("rep/report.json")).expect("report");
    let mut doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    let c = &mut doc["models"][0]["checks"][1]["evidence"]["proof"][0];
    assert!(c["nodes"].as_u64().is_some_and(|n| n > 1), "{c}");
    c["tree"] = serde_json::json!("ff");
    std::fs::create_dir_all(dir.join("cut")).expect("mkdir");
    std::fs::write(dir.join("cut/report.json"), doc.to_string()).expect("write");
    let (code, out) = replay(&dir, &["cut", "--check-proofs"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("DISAGREES: proof of acas/spec:"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn proof_material_of_relu_splitting_checks_and_a_tampered_one_does_not() {
    // digits_mlp at radii where it needs ReLU splitting (scripts/make_proof_fixtures.py).
    let dir = proof_config(
        "relu-proofs",
        "mlp",
        "models/digits_mlp.onnx",
        [
            "tests/data/proofs/digits_prop_10_0.08.vnnlib",
            "tests/data/proofs/digits_prop_11_0.09.vnnlib",
        ],
    );
    assert_eq!(certify(&dir, "rep", &["--jobs", "2"]), 0);
    assert_eq!(certify(&dir, "rep1", &["--jobs", "1"]), 0);
    let text = std::fs::read_to_string(dir.join("rep/report.json")).expect("report");
    // The trees and their stored parameters do not depend on the thread count.
    let one = std::fs::read_to_string(dir.join("rep1/report.json")).expect("report");
    assert!(
        text == one,
        "report.json differs between --jobs 2 and --jobs 1"
    );
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    for i in 0..2 {
        let p = &doc["models"][0]["checks"][i]["evidence"]["proof"][0];
        assert_eq!(p["branching"], "relu", "{p}");
        assert!(p["nodes"].as_u64().is_some_and(|n| n > 10), "{p}");
    }
    let (code, out) = replay(&dir, &["rep", "--check-proofs"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("proofs checked: 2 of 2"), "{out}");
    assert!(out.contains("checks re-run: 0 of 0"), "{out}");
    // Tampered material: the root closed with nothing refuted (`00 00 01`: skip 0, no
    // refutation, closed); the refutations of the first split's children dropped; a split
    // on a neuron that does not exist.
    let tree = doc["models"][0]["checks"][0]["evidence"]["proof"][0]["tree"]
        .as_str()
        .expect("tree")
        .to_string();
    let cases = [
        ("closed", "000001".to_string(), "are left open"),
        (
            "bogus",
            "000000".to_string() + "00ff7f" + "000001000001",
            "no ReLU input",
        ),
        ("cut", tree[..tree.len() - 2].to_string(), "ends early"),
    ];
    for (name, t, want) in cases {
        let mut d = doc.clone();
        d["models"][0]["checks"][0]["evidence"]["proof"][0]["tree"] = serde_json::json!(t);
        std::fs::create_dir_all(dir.join(name)).expect("mkdir");
        std::fs::write(dir.join(name).join("report.json"), d.to_string()).expect("write");
        let (code, out) = replay(&dir, &[name, "--check-proofs"]);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(
            out.contains("DISAGREES: proof of mlp/spec:"),
            "{name}: {out}"
        );
        assert!(out.contains(want), "{name}: {out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_evidence_input_is_a_clear_error_with_exit_2() {
    let w = workspace("bad");
    std::fs::write(w.join("bad.key"), "not a key\n").expect("write");
    std::fs::create_dir_all(w.join("empty")).expect("mkdir");
    std::fs::write(w.join("empty/report.json"), "{").expect("write");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "certify",
                "--config",
                "ferrocert.toml",
                "--sign",
                "bad.key",
                "--out",
                "o1",
            ],
            "not a usable minisign secret key",
        ),
        (
            vec![
                "certify",
                "--config",
                "ferrocert.toml",
                "--sign",
                "nope.key",
                "--out",
                "o2",
            ],
            "no such key file",
        ),
        (
            vec![
                "certify",
                "--config",
                "ferrocert.toml",
                "--shard",
                "abc",
                "--out",
                "o3",
            ],
            "expected K/N",
        ),
        (vec!["replay", "empty"], "EOF while parsing"),
        (
            vec!["replay", "empty", "--pubkey", "nope.pub"],
            "no such file",
        ),
        (vec!["replay", "empty", "--sample", "0"], "at least 1"),
        (vec!["merge", "empty", "--out", "o4"], "shard.json"),
    ];
    for (args, needle) in cases {
        let (code, out, err) = run(bin().args(&args).current_dir(&w));
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // A bad key is refused before any analysis runs: no report was written.
    assert!(!w.join("o1").exists() && !w.join("o2").exists());
    let _ = std::fs::remove_dir_all(&w);
}

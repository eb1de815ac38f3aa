//! `ferrocert run` end to end on the shared `test` suite and samples of acasxu and digits,
//! checking every verdict against `expected.csv`. The full suites run through the bench
//! command documented in the README, not here.

mod common;

use std::fmt::Write as _;

#[test]
fn run_on_test_suite_and_samples_is_never_wrong() {
    let Some(shared) = common::shared_benchmarks() else {
        return;
    };
    let d = common::scratch("run_suites");
    let (mut inst, mut exp) = (
        String::new(),
        String::from("onnx,vnnlib,timeout,expected\n"),
    );
    let mut total = 0;
    for (suite, every) in [("test", 1), ("digits", 8), ("acasxu", 16)] {
        let s = shared.join(suite);
        let text = std::fs::read_to_string(s.join("expected.csv")).unwrap();
        for (i, line) in text.lines().skip(1).enumerate() {
            if i % every != 0 {
                continue;
            }
            let f: Vec<&str> = line.split(',').collect();
            let (onnx, vnnlib) = (s.join(f[0]), s.join(f[1]));
            let (o, v) = (onnx.display(), vnnlib.display());
            writeln!(inst, "{o},{v},{}", f[2]).unwrap();
            writeln!(exp, "{o},{v},{},{}", f[2], f[3]).unwrap();
            total += 1;
        }
    }
    std::fs::write(d.join("instances.csv"), inst).unwrap();
    std::fs::write(d.join("expected.csv"), exp).unwrap();
    let out = d.join("results.csv");
    let (code, stdout, stderr) = common::ferrocert(&[
        "run",
        d.join("instances.csv").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--timeout-scale",
        "0.1",
    ]);
    eprintln!("{stdout}");
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("wrong 0"), "{stdout}");
    let correct: usize = stdout
        .split("correct ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        correct * 10 >= total * 8,
        "only {correct} of {total} correct:\n{stdout}"
    );
}

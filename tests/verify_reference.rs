//! Verification verdicts against the shared ground truth.

mod common;

use ferrocert::commands::verify_files;
use ferrocert::verify::{Verdict, VerifyOptions};

/// Rows of `reference/properties.csv` as maps from column to value.
fn properties(path: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

#[test]
fn ibp_proves_exactly_the_reference_ibp_set_on_digits_and_is_never_wrong() {
    let Some(shared) = common::shared_benchmarks() else {
        return;
    };
    let d = shared.join("digits");
    let (mut proved, mut expected_proved) = (0, 0);
    for row in properties(&d.join("reference/properties.csv")) {
        let (run, _) = verify_files(
            &d.join(&row["onnx"]),
            &d.join(&row["vnnlib"]),
            &VerifyOptions::default(),
        );
        let ref_ibp = row["ibp_verified"] == "1";
        expected_proved += ref_ibp as usize;
        match run.verdict {
            Verdict::Verified => {
                assert_eq!(
                    row["expected"], "unsat",
                    "{} {}: wrong unsat",
                    row["onnx"], row["vnnlib"]
                );
                proved += 1;
            }
            Verdict::Unknown => assert!(
                !ref_ibp,
                "{} {}: reference IBP proves it",
                row["onnx"], row["vnnlib"]
            ),
            ref v => panic!(
                "{} {}: unexpected verdict {}",
                row["onnx"],
                row["vnnlib"],
                v.word()
            ),
        }
    }
    eprintln!("IBP proved {proved} digits instances (reference IBP: {expected_proved})");
    assert_eq!(proved, expected_proved);
}

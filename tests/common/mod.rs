//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod netgen;

use std::path::{Path, PathBuf};

/// `../shared/benchmarks` beside the checkout, if present.
pub fn shared_benchmarks() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/benchmarks");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "\n*** SKIPPED: ../shared/benchmarks is not present; tests over the shared suites did not run ***\n"
        );
        None
    }
}

/// Path inside the repository.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every file under `dir` (recursively) with extension `ext`, sorted.
pub fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Read a JSON Lines file.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// A JSON array of numbers as f64.
pub fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Run the ferrocert binary; returns (exit code, stdout, stderr).
pub fn ferrocert(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrocert"))
        .args(args)
        .output()
        .expect("run ferrocert");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `n` float32 points inside `[lo, hi]`: every third a random vertex, the rest uniform; each
/// value rounded to a float32 that stays inside the box.
pub fn sample_box(lo: &[f64], hi: &[f64], n: usize, r: &mut netgen::Rng) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * lo.len());
    for s in 0..n {
        for (l, h) in lo.iter().zip(hi) {
            let v = match s % 3 {
                0 => {
                    if r.unit() < 0.5 {
                        *l
                    } else {
                        *h
                    }
                }
                _ => r.range(*l, *h),
            };
            let mut f = v as f32;
            if (f as f64) < *l {
                f = f.next_up();
            }
            if (f as f64) > *h {
                f = f.next_down();
            }
            out.push(f);
        }
    }
    out
}

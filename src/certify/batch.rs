//! Batch scheduling: many verification jobs over a few dedicated worker threads, each with
//! its own rayon pool; and VNN-COMP `instances.csv` / `expected.csv` files with a summary.
//! `run` and `certify` both schedule through [`run_queue`].

use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use thiserror::Error;

/// Errors of batch files.
#[derive(Debug, Error)]
pub enum BatchError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Format {
        path: String,
        line: usize,
        msg: String,
    },
}

/// Run jobs `0..n` on `workers` dedicated threads pulling from a shared counter; each worker
/// has its own rayon pool of `threads` threads for the parallelism inside one job. Returns the
/// results in job order.
///
/// Why not rayon tasks: a thread blocked in an inner join can pick up a whole other job and
/// stretch that job's time limit, and with one shared pool one job's queued work can starve
/// another's behind it. With dedicated workers a job's time budget is its own.
pub fn run_queue<T: Send>(
    n: usize,
    workers: usize,
    threads: usize,
    job: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, T)>> = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1).min(n.max(1)) {
            scope.spawn(|| {
                let Ok(pool) = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads.max(1))
                    .build()
                else {
                    return;
                };
                pool.install(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= n {
                            break;
                        }
                        let r = job(i);
                        if let Ok(mut v) = results.lock() {
                            v.push((i, r));
                        }
                    }
                })
            });
        }
    });
    let mut v = results.into_inner().unwrap_or_default();
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, r)| r).collect()
}

/// One benchmark instance.
#[derive(Clone, Debug)]
pub struct Instance {
    pub onnx: String,
    pub vnnlib: String,
    pub timeout: f64,
}

/// Read an instances file; a first line whose timeout is not a number is a header.
pub fn read_instances(path: &Path) -> Result<Vec<Instance>, BatchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BatchError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 3 {
            return Err(BatchError::Format {
                path: path.display().to_string(),
                line: i + 1,
                msg: "expected onnx,vnnlib,timeout".into(),
            });
        }
        match f[2].parse::<f64>() {
            Ok(t) if t > 0.0 && t.is_finite() => out.push(Instance {
                onnx: f[0].to_string(),
                vnnlib: f[1].to_string(),
                timeout: t,
            }),
            _ if i == 0 => continue,
            _ => {
                return Err(BatchError::Format {
                    path: path.display().to_string(),
                    line: i + 1,
                    msg: format!("timeout '{}' is not a positive number", f[2]),
                });
            }
        }
    }
    Ok(out)
}

/// Expected verdicts from an `expected.csv` (`onnx,vnnlib,...,expected,...` with a header).
pub fn read_expected(path: &Path) -> Option<HashMap<(String, String), String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split(',').map(str::trim).collect();
    let col = header.iter().position(|h| *h == "expected")?;
    Some(
        lines
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').map(str::trim).collect();
                Some((
                    (f.first()?.to_string(), f.get(1)?.to_string()),
                    f.get(col)?.to_string(),
                ))
            })
            .collect(),
    )
}

/// Counts of a finished run (what `run --json` prints).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    #[serde(skip)]
    pub text: String,
    pub instances: usize,
    /// Instances per VNN-COMP word.
    pub results: BTreeMap<String, usize>,
    pub total_time_s: f64,
    /// Against `expected.csv`, when one sits beside the instances file.
    pub correct: usize,
    pub wrong: usize,
    pub unsolved: usize,
    pub solved_without_reference: usize,
    pub wrong_instances: Vec<String>,
}

/// Count the results of `instances` (each once) against `expected`.
pub fn summarize(
    instances: &[Instance],
    results: &HashMap<(String, String), (String, f64)>,
    expected: Option<&HashMap<(String, String), String>>,
) -> Summary {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut total_time = 0.0;
    let (mut correct, mut wrong, mut unsolved, mut no_ref) = (0, 0, 0, 0);
    let mut wrong_list = Vec::new();
    let mut seen = HashSet::new();
    for inst in instances {
        let key = (inst.onnx.clone(), inst.vnnlib.clone());
        if !seen.insert(key.clone()) {
            continue;
        }
        let Some((word, t)) = results.get(&key) else {
            continue;
        };
        *counts.entry(word.clone()).or_default() += 1;
        total_time += t;
        let solved = word == "sat" || word == "unsat";
        if let Some(exp) = expected.and_then(|e| e.get(&key)) {
            if !solved {
                unsolved += 1;
            } else if exp != "sat" && exp != "unsat" {
                no_ref += 1;
            } else if exp != word {
                wrong += 1;
                wrong_list.push(format!("{} {} -> {word}, expected {exp}", key.0, key.1));
            } else {
                correct += 1;
            }
        }
    }
    let mut text = format!("instances: {}\n", seen.len());
    for (w, c) in &counts {
        text.push_str(&format!("  {w}: {c}\n"));
    }
    text.push_str(&format!("total time: {total_time:.2} s\n"));
    if expected.is_some() {
        text.push_str(&format!(
            "against expected.csv: correct {correct}, wrong {wrong}, unsolved {unsolved}, solved without reference answer {no_ref}\n"
        ));
        for w in &wrong_list {
            text.push_str(&format!("  WRONG: {w}\n"));
        }
    }
    Summary {
        text,
        instances: seen.len(),
        results: counts,
        total_time_s: total_time,
        correct,
        wrong,
        unsolved,
        solved_without_reference: no_ref,
        wrong_instances: wrong_list,
    }
}

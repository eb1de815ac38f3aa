//! `ferrocert run`: a VNN-COMP `instances.csv` in parallel, resumable, with a summary against
//! `expected.csv` when one sits beside it.

use super::{Error, FpModeArg, verify_files};
use crate::report;
use crate::verify::{Verdict, VerifyOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Arguments of `ferrocert run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// VNN-COMP instances file: `onnx,vnnlib,timeout` per line, paths relative to the file.
    pub instances: PathBuf,
    /// Instances verified at the same time (default: number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Multiply every instance's timeout by this factor.
    #[arg(long, default_value_t = 1.0)]
    pub timeout_scale: f64,
    /// Results CSV (`onnx,vnnlib,result,time_s`); rows already present are skipped.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write each instance's VNN-COMP result file (with counterexamples) into this folder.
    #[arg(long)]
    pub result_dir: Option<PathBuf>,
    /// Floating-point semantics the proofs cover.
    #[arg(long, value_enum, default_value = "deployed")]
    pub fp_mode: FpModeArg,
    /// Strongest bound method to try.
    #[arg(long, value_enum, default_value = "alpha-crown")]
    pub method: crate::bounds::Method,
}

/// One benchmark instance.
#[derive(Clone, Debug)]
pub struct Instance {
    pub onnx: String,
    pub vnnlib: String,
    pub timeout: f64,
}

/// Read an instances file; a first line whose timeout is not a number is a header.
pub fn read_instances(path: &Path) -> Result<Vec<Instance>, Error> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 3 {
            return Err(Error::Usage(format!(
                "{}:{}: expected onnx,vnnlib,timeout",
                path.display(),
                i + 1
            )));
        }
        match f[2].parse::<f64>() {
            Ok(t) if t > 0.0 && t.is_finite() => out.push(Instance {
                onnx: f[0].to_string(),
                vnnlib: f[1].to_string(),
                timeout: t,
            }),
            _ if i == 0 => continue,
            _ => {
                return Err(Error::Usage(format!(
                    "{}:{}: timeout '{}' is not a positive number",
                    path.display(),
                    i + 1,
                    f[2]
                )));
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

fn read_done(out: &Path) -> HashMap<(String, String), (String, f64)> {
    let Ok(text) = std::fs::read_to_string(out) else {
        return HashMap::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let t = f.get(3)?.trim().parse().ok()?;
            Some((
                (f[0].to_string(), f.get(1)?.to_string()),
                (f.get(2)?.to_string(), t),
            ))
        })
        .collect()
}

/// Run `run`. Exit code 1 when a verdict contradicts `expected.csv`, else 0.
pub fn run(a: &RunArgs, out: &mut dyn Write) -> Result<i32, Error> {
    if !(a.timeout_scale > 0.0 && a.timeout_scale.is_finite()) {
        return Err(Error::Usage(format!(
            "--timeout-scale must be positive, got {}",
            a.timeout_scale
        )));
    }
    let instances = read_instances(&a.instances)?;
    let base = a.instances.parent().unwrap_or(Path::new(".")).to_path_buf();
    let done = read_done(&a.out);
    let pending: Vec<&Instance> = instances
        .iter()
        .filter(|i| !done.contains_key(&(i.onnx.clone(), i.vnnlib.clone())))
        .collect();
    let fresh = !a.out.exists();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.out)
        .map_err(|e| Error::Io(format!("{}: {e}", a.out.display())))?;
    let file = Mutex::new(file);
    if fresh {
        writeln!(
            file.lock().map_err(|_| Error::Io("lock".into()))?,
            "onnx,vnnlib,result,time_s"
        )
        .map_err(|e| Error::Io(format!("{}: {e}", a.out.display())))?;
    }
    if let Some(d) = &a.result_dir {
        std::fs::create_dir_all(d).map_err(|e| Error::Io(format!("{}: {e}", d.display())))?;
    }
    let jobs = a.jobs.unwrap_or_else(rayon::current_num_threads).max(1);
    let bar = ProgressBar::new(pending.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let fp_mode = a.fp_mode.into();
    // Instances run on dedicated worker threads pulling from a shared counter; rayon serves
    // only the parallelism inside one instance. (Running instances as rayon tasks lets a
    // thread blocked in an inner join pick up a whole other instance, stretching time limits.)
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Mutex<Vec<((String, String), (String, f64))>> = Mutex::new(Vec::new());
    // Each worker has its own rayon pool: with a shared pool, one instance's queued work can
    // starve another's behind it and stretch its time limit.
    let per_job = (rayon::current_num_threads() / jobs).max(1);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(pending.len().max(1)) {
            scope.spawn(|| {
                let Ok(pool) = rayon::ThreadPoolBuilder::new().num_threads(per_job).build() else {
                    return;
                };
                pool.install(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(inst) = pending.get(i) else { break };
                        let opts = VerifyOptions {
                            timeout: Some(Duration::from_secs_f64(inst.timeout * a.timeout_scale)),
                            fp_mode,
                            method: a.method,
                            ..VerifyOptions::default()
                        };
                        let (run, _) =
                            verify_files(&base.join(&inst.onnx), &base.join(&inst.vnnlib), &opts);
                        let word = run.verdict.word().to_string();
                        let secs = run.elapsed.as_secs_f64();
                        if let Some(d) = &a.result_dir {
                            let name =
                                format!("{}__{}.result", stem(&inst.onnx), stem(&inst.vnnlib));
                            let _ = report::write_vnncomp_result(&d.join(name), &run.verdict);
                        }
                        if let Verdict::Error(msg) = &run.verdict {
                            bar.println(format!("error: {} {}: {msg}", inst.onnx, inst.vnnlib));
                        }
                        if let Ok(mut f) = file.lock() {
                            let _ =
                                writeln!(f, "{},{},{},{:.4}", inst.onnx, inst.vnnlib, word, secs);
                            let _ = f.flush();
                        }
                        bar.inc(1);
                        bar.set_message(format!("{} {}", word, stem(&inst.vnnlib)));
                        if let Ok(mut r) = results.lock() {
                            r.push(((inst.onnx.clone(), inst.vnnlib.clone()), (word, secs)));
                        }
                    }
                })
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    bar.finish_and_clear();
    let mut all = done;
    all.extend(results);
    let expected = read_expected(&base.join("expected.csv"));
    let s = summarize(&instances, &all, expected.as_ref());
    out.write_all(s.text.as_bytes())
        .map_err(|e| Error::Io(format!("stdout: {e}")))?;
    Ok(if s.wrong > 0 { 1 } else { 0 })
}

fn stem(p: &str) -> String {
    Path::new(p)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.to_string())
}

/// Counts of a finished run.
pub struct Summary {
    pub text: String,
    pub correct: usize,
    pub wrong: usize,
    pub unsolved: usize,
}

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
                wrong_list.push(format!(
                    "  WRONG: {} {} -> {word}, expected {exp}",
                    key.0, key.1
                ));
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
            text.push_str(w);
            text.push('\n');
        }
    }
    Summary {
        text,
        correct,
        wrong,
        unsolved,
    }
}

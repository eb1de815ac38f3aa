//! `ferrocert run`: a VNN-COMP `instances.csv` in parallel, resumable, with a summary against
//! `expected.csv` when one sits beside it.

use super::{Error, FpModeArg};
use crate::certify::batch::{self, Instance, read_expected, read_instances, summarize};
use crate::report;
use crate::verify::bab::{BabConfig, InputBranching};
use crate::verify::files::verify_files;
use crate::verify::{Verdict, VerifyOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
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
    /// Input splitting's rule for the dimension to split (networks with few inputs).
    #[arg(long, value_enum, default_value = "lookahead")]
    pub input_branching: InputBranching,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
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
    let instances = read_instances(&a.instances).map_err(|e| Error::Usage(e.to_string()))?;
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
    let per_job = (rayon::current_num_threads() / jobs).max(1);
    let results = batch::run_queue(pending.len(), jobs, per_job, |i| {
        let inst = pending[i];
        let opts = VerifyOptions {
            timeout: Some(Duration::from_secs_f64(inst.timeout * a.timeout_scale)),
            fp_mode,
            method: a.method,
            bab: Some(BabConfig {
                input_branching: a.input_branching,
                ..BabConfig::default()
            }),
            ..VerifyOptions::default()
        };
        let (run, _) = verify_files(&base.join(&inst.onnx), &base.join(&inst.vnnlib), &opts);
        let word = run.verdict.word().to_string();
        let secs = run.elapsed.as_secs_f64();
        if let Some(d) = &a.result_dir {
            let name = format!("{}__{}.result", stem(&inst.onnx), stem(&inst.vnnlib));
            let _ = report::write_vnncomp_result(&d.join(name), &run.verdict);
        }
        if let Verdict::Error(msg) = &run.verdict {
            bar.println(format!("error: {} {}: {msg}", inst.onnx, inst.vnnlib));
        }
        // Rows are appended as instances finish, so an interrupted run resumes.
        if let Ok(mut f) = file.lock() {
            let _ = writeln!(f, "{},{},{},{:.4}", inst.onnx, inst.vnnlib, word, secs);
            let _ = f.flush();
        }
        bar.inc(1);
        bar.set_message(format!("{} {}", word, stem(&inst.vnnlib)));
        ((inst.onnx.clone(), inst.vnnlib.clone()), (word, secs))
    });
    bar.finish_and_clear();
    let mut all = done;
    all.extend(results);
    let expected = read_expected(&base.join("expected.csv"));
    let s = summarize(&instances, &all, expected.as_ref());
    let text = if a.json {
        let doc = RunDocument {
            header: report::Header::new("run"),
            instances_file: a.instances.display().to_string(),
            expected_file: expected
                .is_some()
                .then(|| base.join("expected.csv").display().to_string()),
            summary: &s,
        };
        format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).map_err(|e| Error::Io(e.to_string()))?
        )
    } else {
        s.text.clone()
    };
    out.write_all(text.as_bytes())
        .map_err(|e| Error::Io(format!("stdout: {e}")))?;
    Ok(if s.wrong > 0 { 1 } else { 0 })
}

/// What `run --json` prints.
#[derive(serde::Serialize)]
struct RunDocument<'a> {
    #[serde(flatten)]
    header: report::Header,
    instances_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_file: Option<String>,
    #[serde(flatten)]
    summary: &'a batch::Summary,
}

fn stem(p: &str) -> String {
    Path::new(p)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.to_string())
}

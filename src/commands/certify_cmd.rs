//! `ferrocert certify`: every model of a configuration through its checks and gate, with the
//! five report formats written to a directory; and `ferrocert schema`.

use super::{Error, StageBar};
use crate::certify::{self, config, plan};
use crate::report::model::{Outcome, Report, report_schema};
use crate::report::render;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The configuration `certify` uses without `--config`.
pub const DEFAULT_CONFIG: &str = "specs/ferrocert.toml";

/// Arguments of `ferrocert certify`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit code 0: every model passes its gate; 1: a model fails it (stdout \
says which checks and why); 2: error (a bad configuration, a missing file, a spec or data set \
that does not fit its model), with the file and line on stderr.\n\nWrites report.json (the \
typed report; byte-identical for the same configuration), timings.json, report.html, \
report.md, junit.xml and results.sarif. The gate is fail-safe: an unknown, a timeout or an \
error fails it unless the configuration allows it."
)]
pub struct CertifyArgs {
    /// Configuration (TOML; paths inside are relative to it). Default: specs/ferrocert.toml,
    /// the bundled models and their data.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory for the reports.
    #[arg(long, default_value = "ferrocert-report")]
    pub out: PathBuf,
    /// Worker threads (default: number of CPUs; does not change report.json).
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// The summary printed on stdout: the verdict, each model, and every failing condition.
pub fn summary(r: &Report, out_dir: &Path) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ferrocert certify: gate {} ({} of {} models pass; config {})",
        if r.verdict == Outcome::Pass {
            "PASSED"
        } else {
            "FAILED"
        },
        r.summary.models_passed,
        r.summary.models,
        r.config.path
    );
    let width = r.models.iter().map(|m| m.name.len()).max().unwrap_or(0);
    for m in &r.models {
        let _ = writeln!(
            s,
            "  {}  {:<width$}  {} checks",
            if m.verdict == Outcome::Pass {
                "PASS"
            } else {
                "FAIL"
            },
            m.name,
            m.checks.len()
        );
        for f in &m.failures {
            let _ = writeln!(s, "        {f}");
        }
    }
    let _ = writeln!(
        s,
        "reports in {}: {}",
        out_dir.display(),
        render::FILES.join(", ")
    );
    s
}

/// Run `certify`.
pub fn certify(a: &CertifyArgs, out: &mut dyn Write) -> Result<i32, Error> {
    if a.jobs == Some(0) {
        return Err(Error::Usage("--jobs must be at least 1".into()));
    }
    let path = a
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    if a.config.is_none() && !path.is_file() {
        return Err(Error::Usage(format!(
            "no --config given and {DEFAULT_CONFIG} not found (run from the project root, or pass --config FILE)"
        )));
    }
    let loaded = config::load(&path)?;
    let plan = plan::prepare(&loaded)?;
    let jobs = a.jobs.unwrap_or_else(rayon::current_num_threads).max(1);
    let progress = StageBar::new();
    let (report, timings) = certify::run(&plan, jobs, &progress);
    progress.0.finish_and_clear();
    render::write_all(&a.out, &report, &timings)
        .map_err(|e| Error::Io(format!("{}: {e}", a.out.display())))?;
    eprintln!(
        "certified {} models in {:.2} s ({jobs} threads; {})",
        report.models.len(),
        timings.total_s,
        progress.timings()
    );
    out.write_all(summary(&report, &a.out).as_bytes())
        .map_err(|e| Error::Io(format!("stdout: {e}")))?;
    Ok(if report.verdict == Outcome::Pass {
        0
    } else {
        1
    })
}

/// Arguments of `ferrocert schema`.
#[derive(clap::Args, Debug)]
pub struct SchemaArgs {}

/// Print the JSON Schema of `report.json`.
pub fn schema(_: &SchemaArgs, out: &mut dyn Write) -> Result<i32, Error> {
    let s = serde_json::to_string_pretty(&report_schema()).map_err(|e| Error::Io(e.to_string()))?;
    writeln!(out, "{s}").map_err(|e| Error::Io(format!("stdout: {e}")))?;
    Ok(0)
}

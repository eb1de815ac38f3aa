//! `certify`: one configuration, every model's checks, the gate, and the typed report.
//!
//! [`config`] reads `ferrocert.toml`; [`plan`] loads and validates everything it names before
//! any analysis runs; [`checks`] runs the checks (verification jobs through [`batch`]'s
//! queue, then smoothing and the scan); [`gate`] judges them, fail-safe. The result is one
//! [`Report`] (byte-stable for a given configuration) and separate [`Timings`].

pub mod batch;
pub mod checks;
pub mod config;
pub mod gate;
pub mod plan;

use crate::progress::Progress;
use crate::report::model::{ModelReport, Outcome, REPORT_VERSION, Report, RunSummary, ToolInfo};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

/// How long each part of a run took (kept out of the report so that stays byte-stable).
#[derive(Clone, Debug, Serialize)]
pub struct Timings {
    /// Start of the run, seconds since the Unix epoch.
    pub started_unix_s: f64,
    pub total_s: f64,
    pub jobs: usize,
    pub models: Vec<ModelTimings>,
}

/// Seconds per check of one model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelTimings {
    pub name: String,
    pub checks: BTreeMap<String, f64>,
}

/// The plain statement of what a model's checks leave out.
fn not_covered(m: &plan::ModelPlan, plan: &plan::Plan) -> Vec<String> {
    let mut v = Vec::new();
    let fp = match plan.fp_mode {
        crate::domain::FpMode::Deployed => {
            "float32 evaluation as deployed (any summation order, with or without FMA); runtimes that deviate from IEEE float32 arithmetic beyond that error model are not covered"
        }
        crate::domain::FpMode::Real => {
            "real arithmetic only: the proofs do not cover float32 rounding of the deployed network"
        }
    };
    v.push(format!("Proofs hold for {fp}."));
    if m.specs.is_empty() {
        v.push("No VNN-LIB property was checked.".into());
    } else {
        v.push(format!(
            "Only the {} listed VNN-LIB properties were verified; other input regions are not covered.",
            m.specs.len()
        ));
    }
    let items = |c: Option<usize>| {
        let n = m.data.as_ref().map_or(0, |d| d.set.items);
        c.map_or(n, |c| c.min(n))
    };
    match &m.robustness {
        Some(r) => v.push(format!(
            "Local robustness was checked only in the L-inf norm, only at radii {:?}, only around the first {} inputs of the data; other norms, radii and inputs are not certified.",
            r.radii,
            items(r.count)
        )),
        None => v.push("Local robustness was not checked.".into()),
    }
    match &m.smoothing {
        Some(s) => v.push(format!(
            "Randomized smoothing certifies the smoothed classifier (sigma {}), not the base model, with probability at least {} per input over the noise, on the first {} inputs.",
            s.cfg.sigma,
            1.0 - s.cfg.alpha,
            items(s.count)
        )),
        None => v.push("Randomized smoothing was not run.".into()),
    }
    match &m.scan {
        Some(s) => v.push(format!(
            "The trigger search is empirical (no flagged label does not prove the absence of a backdoor); the patch bound covers only square stamps of size {:?} at the scanned positions (stride {}) on the first {} inputs, and no other trigger shapes or blended triggers.",
            s.cfg.patch_sizes,
            s.cfg.stride,
            items(s.count)
        )),
        None => v.push("No backdoor scan was run.".into()),
    }
    v
}

/// Run every check of `plan` on `jobs` threads and judge each model against its gate.
pub fn run(plan: &plan::Plan, jobs: usize, progress: &dyn Progress) -> (Report, Timings) {
    let started_unix_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let start = Instant::now();
    let results = checks::run_all(plan, jobs, progress);
    let mut models = Vec::new();
    let mut times = Vec::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (m, mut mc) in plan.models.iter().zip(results) {
        let (verdict, failures) = gate::judge(&m.gate, &mut mc.checks);
        for c in &mc.checks {
            *outcomes.entry(c.outcome.name().to_string()).or_default() += 1;
        }
        times.push(ModelTimings {
            name: m.name.clone(),
            checks: mc
                .checks
                .iter()
                .map(|c| c.id.clone())
                .zip(mc.seconds.iter().copied())
                .collect(),
        });
        models.push(ModelReport {
            name: m.name.clone(),
            model: m.file.clone(),
            input_shape: m.net.exec.input_shape().to_vec(),
            output_shape: m.net.exec.output_shape().to_vec(),
            parameters: m.net.onnx_params,
            verdict,
            failures,
            checks: mc.checks,
            not_covered: not_covered(m, plan),
        });
    }
    let failed = models.iter().filter(|m| m.verdict == Outcome::Fail).count();
    let report = Report {
        report_version: REPORT_VERSION,
        tool: ToolInfo::this(),
        config: plan.config.clone(),
        resolved_config: plan.resolved.clone(),
        verdict: if failed == 0 {
            Outcome::Pass
        } else {
            Outcome::Fail
        },
        summary: RunSummary {
            models: models.len(),
            models_passed: models.len() - failed,
            models_failed: failed,
            checks: models.iter().map(|m| m.checks.len()).sum(),
            outcomes,
        },
        models,
    };
    let timings = Timings {
        started_unix_s,
        total_s: start.elapsed().as_secs_f64(),
        jobs,
        models: times,
    };
    (report, timings)
}

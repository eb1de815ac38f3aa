//! `certify`: one configuration, every model's checks, the gate, and the typed report.
//!
//! [`config`] reads `ferrocert.toml`; [`plan`] loads and validates everything it names before
//! any analysis runs; [`checks`] runs the checks (verification jobs through [`batch`]'s
//! queue, then smoothing and the scan); [`gate`] judges them, fail-safe. The result is one
//! [`Report`] (byte-stable for a given configuration) and separate [`Timings`].

pub mod batch;
pub mod checks;
pub mod compliance;
pub mod config;
pub mod gate;
pub mod plan;
pub mod replay;
pub mod shard;
pub mod sign;

use crate::progress::Progress;
use crate::report::model::{
    Evidence, InputFile, MethodInfo, ModelReport, Outcome, Provenance, REPORT_VERSION, Report,
    RunSummary, ToolInfo,
};
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
    pub machine: Machine,
    pub models: Vec<ModelTimings>,
}

/// Facts of the machine a run used (kept out of the byte-stable report).
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub os: String,
    pub arch: String,
    /// Worker threads.
    pub threads: usize,
    /// CPU features detected at run time; the GEMM kernels of the concrete evaluator pick
    /// their code path from them.
    pub cpu_features: Vec<String>,
    /// Whether the CPU has fused multiply-add (see the report's `gemm_kernel` for what the
    /// kernels ran; every proof covers evaluation with and without FMA).
    pub fma: bool,
    /// The command line of the run.
    pub command_line: Vec<String>,
}

impl Machine {
    /// This machine, running `threads` workers.
    pub fn this(threads: usize) -> Self {
        #[allow(unused_mut)]
        let mut cpu_features: Vec<String> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            macro_rules! detect {
                ($($f:tt),*) => {
                    $(if std::arch::is_x86_feature_detected!($f) {
                        cpu_features.push($f.to_string());
                    })*
                };
            }
            detect!("sse4.1", "avx", "avx2", "fma", "avx512f");
        }
        #[cfg(target_arch = "aarch64")]
        cpu_features.push("neon".to_string());
        let fma = cpu_features.iter().any(|f| f == "fma" || f == "neon");
        Machine {
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            threads,
            cpu_features,
            fma,
            command_line: std::env::args().collect(),
        }
    }
}

/// Every input file of a plan with its role, sorted and without repeats.
pub fn input_files(plan: &plan::Plan) -> Vec<InputFile> {
    let f = |role: &str, r: &crate::report::model::FileRef| InputFile {
        role: role.into(),
        path: r.path.clone(),
        sha256: r.sha256.clone(),
    };
    let mut v = vec![f("config", &plan.config)];
    for m in &plan.models {
        v.push(f("model", &m.file));
        v.extend(m.specs.iter().map(|s| f("spec", &s.file)));
        if let Some(d) = &m.data {
            v.push(f("data", &d.inputs));
            v.extend(d.labels.iter().map(|l| f("labels", l)));
        }
    }
    v.sort();
    v.dedup();
    v
}

/// The provenance section of a plan's report.
pub fn provenance(plan: &plan::Plan) -> Provenance {
    Provenance {
        tool_version: crate::report::TOOL_VERSION.into(),
        git_commit: crate::report::GIT_COMMIT.into(),
        fp_mode: match plan.fp_mode {
            crate::domain::FpMode::Deployed => "deployed",
            crate::domain::FpMode::Real => "real",
        }
        .into(),
        seed: plan.seed,
        gemm_kernel: crate::eval::kernels::gemm_kernel().into(),
        inputs: input_files(plan),
        replay_command: "ferrocert replay <directory of this report.json>".into(),
        rerun_command: format!("ferrocert certify --config {}", plan.config.path),
        machine_facts: "timings.json".into(),
    }
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
    assemble(
        plan,
        results,
        started_unix_s,
        start.elapsed().as_secs_f64(),
        jobs,
    )
}

/// The report and timings of a plan's checks (each model's in the order the run produces
/// them): methods, gate, provenance and the compliance mapping. `run` and `merge` share it,
/// so a merged report is the single run's.
pub fn assemble(
    plan: &plan::Plan,
    results: Vec<checks::ModelChecks>,
    started_unix_s: f64,
    total_s: f64,
    jobs: usize,
) -> (Report, Timings) {
    let mut models = Vec::new();
    let mut times = Vec::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (m, mut mc) in plan.models.iter().zip(results) {
        for c in &mut mc.checks {
            let alpha = match &c.evidence {
                Evidence::Smoothing(s) => Some(s.alpha),
                _ => None,
            };
            c.method = MethodInfo::of(c.kind, plan.fp_mode, alpha);
        }
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
    let provenance = provenance(plan);
    let compliance = compliance::build(&models, &provenance);
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
        provenance,
        compliance,
        models,
    };
    let timings = Timings {
        started_unix_s,
        total_s,
        jobs,
        machine: Machine::this(jobs),
        models: times,
    };
    (report, timings)
}

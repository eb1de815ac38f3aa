//! The typed report: one [`Report`] per `certify` run (per model: identity, checks, gate
//! verdict; per check: kind, parameters, outcome, evidence). Every renderer reads this and
//! nothing else, and the subcommands' `--json` documents use the same evidence types.
//!
//! Byte-stable: nothing here depends on timing or thread count (timings go to a separate
//! file), maps are ordered, and a timed-out search records no work counters.

use crate::certify::config::Config;
use crate::scan::patch::{PatchEntry, PatchSummary};
use crate::scan::{LabelResult, Layout};
use crate::smoothing::{InputResult, RadiusAccuracy};
use crate::verify::Counterexample;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the report layout (`report.json` and the JSON Schema shipped with it).
pub const REPORT_VERSION: u32 = 1;

/// A file the run read, by path and content hash.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct FileRef {
    pub path: String,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// The tool that wrote the report.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
}

impl ToolInfo {
    /// This build of ferrocert.
    pub fn this() -> Self {
        ToolInfo {
            name: "ferrocert".into(),
            version: super::TOOL_VERSION.into(),
        }
    }
}

/// Outcome of one check against the gate.
#[derive(
    Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every gate condition on the check holds.
    Pass,
    /// A gate condition is violated (with the evidence that shows it).
    Fail,
    /// Not settled: a timeout, `unknown`, or a threshold between what was proved and what an
    /// attack reached. Fails the gate unless the configuration allows it.
    Unknown,
    /// The check could not run. Fails the gate unless the configuration allows it.
    Error,
    /// Reported, no gate condition applies.
    Info,
}

impl Outcome {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Unknown => "unknown",
            Outcome::Error => "error",
            Outcome::Info => "info",
        }
    }
}

/// What kind of property a check covers (one SARIF rule and one JUnit class per kind).
#[derive(
    Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// A VNN-LIB property, verified by the complete verifier.
    Spec,
    /// L-inf local robustness of data points (certified accuracy, accuracy under attack).
    Robustness,
    /// Randomized-smoothing certified accuracy (L2).
    Smoothing,
    /// Neural Cleanse trigger search and outlier test.
    TriggerScan,
    /// Certified bound on the attack success rate of `k x k` patch stamps.
    PatchBound,
}

impl CheckKind {
    /// Every kind, in rule order.
    pub const ALL: [CheckKind; 5] = [
        CheckKind::Spec,
        CheckKind::Robustness,
        CheckKind::Smoothing,
        CheckKind::TriggerScan,
        CheckKind::PatchBound,
    ];

    /// Kebab-case name (SARIF rule id suffix, JUnit class name).
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Spec => "spec",
            CheckKind::Robustness => "robustness",
            CheckKind::Smoothing => "smoothing",
            CheckKind::TriggerScan => "trigger-scan",
            CheckKind::PatchBound => "patch-bound",
        }
    }

    /// One-line description of what the kind checks.
    pub fn description(self) -> &'static str {
        match self {
            CheckKind::Spec => {
                "VNN-LIB property verified by the complete verifier (sound for float32 as deployed)"
            }
            CheckKind::Robustness => {
                "L-inf local robustness of labelled inputs: certified accuracy (proved lower bound) and accuracy under attack (upper bound)"
            }
            CheckKind::Smoothing => {
                "Randomized-smoothing certified accuracy at L2 radii (statistical, confidence 1 - alpha)"
            }
            CheckKind::TriggerScan => {
                "Backdoor trigger search with the Neural Cleanse outlier test (empirical)"
            }
            CheckKind::PatchBound => {
                "Certified upper bound on the attack success rate of any k x k patch stamp (proof)"
            }
        }
    }

    /// The class of method behind the kind's claims.
    pub fn method_class(self) -> MethodClass {
        match self {
            CheckKind::Spec | CheckKind::Robustness | CheckKind::PatchBound => MethodClass::Proof,
            CheckKind::Smoothing => MethodClass::Statistical,
            CheckKind::TriggerScan => MethodClass::Empirical,
        }
    }
}

/// How strong a claim is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MethodClass {
    /// Sound bound propagation / complete search: holds for every input in the region.
    Proof,
    /// Holds with probability at least `1 - alpha` over the sampling noise.
    Statistical,
    /// Observed by search; its absence proves nothing.
    Empirical,
}

impl MethodClass {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            MethodClass::Proof => "proof",
            MethodClass::Statistical => "statistical",
            MethodClass::Empirical => "empirical",
        }
    }
}

/// The method behind a check's claims, described as ISO/IEC 24029-2 (formal methods) and
/// 24029-1 (statistical and empirical methods) classify them.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct MethodInfo {
    pub class: MethodClass,
    /// `complete` (a formal method that decides the property given time: the search returns
    /// a proof or a counterexample), `incomplete` (sound bounds that may fail to decide),
    /// `statistical` or `empirical`.
    pub completeness: String,
    /// The arithmetic a proof holds in: `float32-deployed` (every float32 evaluation order,
    /// with or without FMA), `real`, or `sampled` (statements about evaluated samples).
    pub arithmetic: String,
    /// The same inputs, configuration and seed give the same result.
    pub deterministic: bool,
    /// Confidence `1 - alpha` of a statistical claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// The claim in one sentence.
    pub statement: String,
}

impl MethodInfo {
    /// The method of a check of `kind` under floating-point mode `fp` (`alpha`: the
    /// smoothing's error probability).
    pub fn of(kind: CheckKind, fp: crate::domain::FpMode, alpha: Option<f64>) -> Self {
        let arithmetic = match fp {
            crate::domain::FpMode::Deployed => "float32-deployed",
            crate::domain::FpMode::Real => "real",
        };
        let (completeness, arithmetic, confidence, statement) = match kind {
            CheckKind::Spec | CheckKind::Robustness => (
                "complete",
                arithmetic,
                None,
                "unsat: no input of the region reaches the unsafe set (bound propagation and branch and bound); sat: a counterexample re-checked by the concrete evaluator; unknown or timeout: nothing is claimed",
            ),
            CheckKind::PatchBound => (
                "incomplete",
                arithmetic,
                None,
                "an upper bound on the attack success rate of every k x k stamp at the scanned positions (CROWN and alpha-CROWN); the bound may be loose, never low",
            ),
            CheckKind::Smoothing => (
                "statistical",
                "sampled",
                alpha.map(|a| 1.0 - a),
                "the smoothed classifier's prediction is constant within the certified L2 radius, with probability at least 1 - alpha over the sampling noise (Cohen et al. CERTIFY)",
            ),
            CheckKind::TriggerScan => (
                "empirical",
                "sampled",
                None,
                "triggers found by optimisation and an outlier test; a label not flagged proves nothing",
            ),
        };
        MethodInfo {
            class: kind.method_class(),
            completeness: completeness.into(),
            arithmetic: arithmetic.into(),
            deterministic: true,
            confidence,
            statement: statement.into(),
        }
    }
}

/// Every file a run read, with the facts that make it re-checkable.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Provenance {
    pub tool_version: String,
    /// Git commit the tool was built from (`unknown` outside a checkout; `-dirty` when the
    /// tree had uncommitted changes).
    pub git_commit: String,
    /// Floating-point mode of every proof (`deployed`: float32 as deployed; `real`).
    pub fp_mode: String,
    /// Seed of every randomised step (attacks, smoothing noise, trigger search).
    pub seed: u64,
    /// The GEMM kernel family the evaluator and the bound engines ran (`avx512`, `avx2+fma`,
    /// `avx`, `sse2`, `neon`): it fixes the last bits of every computed value, so report.json is
    /// byte-identical between runs with the same family (any machine, any thread count);
    /// with another, recorded values may differ in their last bits, and every bound and
    /// verdict stays sound.
    pub gemm_kernel: String,
    /// Every input file, by role (`config`, `model`, `spec`, `data`, `labels`), sorted and
    /// without repeats.
    pub inputs: Vec<InputFile>,
    /// Re-checks this report directory: hashes, counterexamples, verdicts.
    pub replay_command: String,
    /// Runs the same configuration again.
    pub rerun_command: String,
    /// Facts of the machine (threads, OS, CPU features, start time, command line) are in
    /// `timings.json`, so that this file is the same on every machine.
    pub machine_facts: String,
}

/// One input file of a run.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
pub struct InputFile {
    pub role: String,
    pub path: String,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// Results mapped to the clauses of regulations and frameworks that ask for them. Facts and
/// limits only: no conformity is claimed.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Compliance {
    pub disclaimer: String,
    pub items: Vec<ComplianceItem>,
}

/// One clause and what this run contributes to it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ComplianceItem {
    /// `EU AI Act` or `NIST AI RMF 1.0`.
    pub framework: String,
    /// E.g. `Art. 15(4)` or `MEASURE 2.7`.
    pub clause: String,
    /// What the clause asks for, in a few words.
    pub topic: String,
    /// `evidence` when a check of this run bears on it, `none in this run` otherwise.
    pub status: String,
    /// The checks (`model/check-id`) that bear on it.
    pub checks: Vec<String>,
    /// What they show, one fact per line.
    pub facts: Vec<String>,
    /// What they do not show.
    pub limits: Vec<String>,
}

/// One gate condition applied to a check.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Condition {
    /// The condition in words, e.g. `certified accuracy at radius 0.01 >= 0.9`.
    pub condition: String,
    pub outcome: Outcome,
    /// The measured value it was compared with, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Why it came out that way.
    pub detail: String,
}

impl Condition {
    /// `condition [outcome]: detail`, as every text format shows it.
    pub fn line(&self) -> String {
        format!(
            "{} [{}]: {}",
            self.condition,
            self.outcome.name(),
            self.detail
        )
    }
}

/// One check of one model.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Check {
    /// Stable identifier within the model, e.g. `spec:digits/prop_0_0.01.vnnlib`.
    pub id: String,
    pub kind: CheckKind,
    pub method_class: MethodClass,
    /// The method behind the claims, in the terms of ISO/IEC 24029-2.
    pub method: MethodInfo,
    pub outcome: Outcome,
    /// One line for people.
    pub summary: String,
    pub conditions: Vec<Condition>,
    pub evidence: Evidence,
}

/// What a check found, by kind.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Evidence {
    Spec(SpecEvidence),
    Robustness(RobustnessEvidence),
    Smoothing(SmoothingEvidence),
    TriggerScan(TriggerEvidence),
    PatchBound(PatchEvidence),
    /// The check could not run.
    Error {
        message: String,
    },
}

/// Counters of a verification (the same object `verify --json` prints).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct SpecEvidence {
    pub spec: FileRef,
    /// Line of the first assertion on the outputs (the property itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property_line: Option<usize>,
    /// VNN-COMP word: `unsat` (verified), `sat`, `unknown`, `timeout` or `error`.
    pub result: String,
    /// The stage that settled it (`attack`, `ibp`, `crown`, `alpha-crown`, `lp`, `bab`).
    pub stage: String,
    /// The time budget (none: unlimited).
    pub timeout_s: Option<f64>,
    pub regions: usize,
    pub regions_proved: usize,
    pub disjuncts: usize,
    pub disjuncts_proved: usize,
    /// Disjuncts refuted by IBP, CROWN, alpha-CROWN and LP.
    pub proved_by: [usize; 4],
    /// Branch-and-bound work (absent after a timeout, where it depends on the machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bab: Option<BabCounts>,
    /// A checked counterexample (`sat` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterexample: Option<Counterexample>,
    /// Proof material of the regions input splitting proved (`unsat` only), which
    /// `replay --check-proofs` re-bounds instead of searching again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proof: Vec<crate::verify::proof::RegionProof>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SpecEvidence {
    /// The evidence of one verification of `spec` with a budget of `timeout_s`.
    pub fn new(
        spec: FileRef,
        property_line: Option<usize>,
        run: &crate::verify::files::VerifyRun,
        timeout_s: Option<f64>,
    ) -> Self {
        use crate::verify::Verdict;
        let r = run.report.as_ref();
        let timed_out = matches!(run.verdict, Verdict::Timeout);
        SpecEvidence {
            spec,
            property_line,
            result: run.verdict.word().into(),
            stage: r.map_or("none", |r| r.method).into(),
            timeout_s,
            regions: r.map_or(0, |r| r.regions),
            regions_proved: r.map_or(0, |r| r.regions_proved),
            disjuncts: r.map_or(0, |r| r.disjuncts),
            disjuncts_proved: r.map_or(0, |r| r.disjuncts_proved),
            proved_by: r.map_or([0; 4], |r| r.proved_by),
            bab: r.filter(|_| !timed_out).map(|r| BabCounts {
                regions: r.bab_regions,
                domains: r.bab.domains,
                fsb_closed: r.bab.fsb_closed,
                iterations: r.bab.iterations,
                max_open: r.bab.max_open,
            }),
            counterexample: match &run.verdict {
                Verdict::Falsified(c) => Some(c.clone()),
                _ => None,
            },
            proof: match (&run.verdict, r) {
                (Verdict::Verified, Some(r)) => r.proofs.clone(),
                _ => Vec::new(),
            },
            error: match &run.verdict {
                Verdict::Error(m) => Some(m.clone()),
                _ => None,
            },
        }
    }
}

/// Branch-and-bound counters.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct BabCounts {
    pub regions: usize,
    pub domains: usize,
    /// Of `domains`, children of ReLU splits that the branching's one-step bound already
    /// refuted (proved leaves, not bounded again).
    #[serde(default)]
    pub fsb_closed: usize,
    pub iterations: usize,
    pub max_open: usize,
}

/// A labelled data set as used by a check.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct DataRef {
    pub inputs: FileRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<FileRef>,
    pub scale: f64,
    /// Items used (the first ones of the file).
    pub items: usize,
}

/// L-inf robustness of labelled inputs.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RobustnessEvidence {
    pub data: DataRef,
    /// Valid input range the boxes are clipped to.
    pub range: [f64; 2],
    pub timeout_s: f64,
    pub per_radius: Vec<RadiusRobustness>,
    pub per_input: Vec<InputRobustness>,
}

/// Robustness figures at one radius (fractions of all inputs unless stated).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RadiusRobustness {
    pub radius: f64,
    /// Correctly classified and proved robust (`unsat`).
    pub certified: usize,
    /// Correctly classified, and a checked adversarial example exists (`sat`).
    pub attacked: usize,
    /// Correctly classified, neither proved nor attacked within the budget.
    pub open: usize,
    /// Misclassified without perturbation.
    pub misclassified: usize,
    /// Lower bound of the robust accuracy: `certified / inputs`.
    pub certified_accuracy: f64,
    /// Upper bound of the robust accuracy: `(correct - attacked) / inputs`.
    pub accuracy_under_attack: f64,
    /// `attacked / correct`.
    pub attack_success_rate: f64,
}

/// One input across the radii.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct InputRobustness {
    pub index: usize,
    pub label: usize,
    pub prediction: usize,
    /// VNN-COMP word per radius.
    pub results: Vec<String>,
    /// CROWN lower bound of `min_j (y_label - y_j)` over the box, per radius (`> 0`: proved by
    /// the bound alone; null when unbounded).
    pub margin_lower_bound: Vec<Option<f64>>,
    /// Checked adversarial examples, per radius where one was found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counterexamples: Vec<RadiusCounterexample>,
}

/// A checked adversarial example at a radius.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RadiusCounterexample {
    pub radius: f64,
    pub counterexample: Counterexample,
}

/// Randomized smoothing of labelled inputs.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct SmoothingEvidence {
    pub data: DataRef,
    pub sigma: f64,
    pub n0: u64,
    pub n: u64,
    pub alpha: f64,
    pub seed: u64,
    /// Certified accuracy at the configured L2 radii.
    pub certified_accuracy: Vec<RadiusAccuracy>,
    pub clean_accuracy: Option<f64>,
    pub abstain_rate: f64,
    pub results: Vec<InputResult>,
}

/// The trigger search and outlier test.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct TriggerEvidence {
    pub data: DataRef,
    pub layout: Layout,
    pub steps: usize,
    pub seed: u64,
    pub anomaly_threshold: f64,
    pub labels: Vec<LabelResult>,
    pub flagged_labels: Vec<usize>,
    pub median_mask_l1: f64,
    pub mad_mask_l1: f64,
    /// Each label's mask, one value per pixel position (row-major), for pictures.
    pub masks: Vec<Vec<f32>>,
}

/// The certified patch bound for one size.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct PatchEvidence {
    pub data: DataRef,
    pub summary: PatchSummary,
    pub targets: Vec<PatchEntry>,
}

/// One model's checks and gate verdict.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ModelReport {
    pub name: String,
    pub model: FileRef,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub parameters: usize,
    /// `pass` or `fail`.
    pub verdict: Outcome,
    /// Why the gate failed, one line per failing condition.
    pub failures: Vec<String>,
    pub checks: Vec<Check>,
    /// What the checks do not cover (a report never claims more than was checked).
    pub not_covered: Vec<String>,
}

/// Counts over all models.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RunSummary {
    pub models: usize,
    pub models_passed: usize,
    pub models_failed: usize,
    pub checks: usize,
    /// Checks per outcome name.
    pub outcomes: std::collections::BTreeMap<String, usize>,
}

/// The whole `certify` report.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    pub report_version: u32,
    pub tool: ToolInfo,
    /// The configuration file and the configuration as resolved (paths, globs, defaults).
    pub config: FileRef,
    pub resolved_config: Config,
    /// `pass` when every model passes its gate, else `fail`.
    pub verdict: Outcome,
    pub summary: RunSummary,
    pub provenance: Provenance,
    pub compliance: Compliance,
    pub models: Vec<ModelReport>,
}

/// The JSON Schema of [`Report`] (what `ferrocert schema` prints and `schemas/` ships).
pub fn report_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Report)).unwrap_or_default()
}

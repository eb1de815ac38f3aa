//! `replay`: an auditor's re-check of a `certify` report directory. It recomputes the hash of
//! every input the report names (and refuses to go on when one changed, naming it), checks
//! the manifest signature when there is one, re-checks every counterexample with the concrete
//! evaluator (the point is inside its region and the network's float32 output there violates
//! the property, and equals the recorded output), and re-runs the verdicts (all of them, or a
//! sample chosen by a seed) comparing each check's outcome and evidence with the report's.

use super::config::{self, ConfigError};
use super::plan::{self, Plan};
use super::sign::{self, SignatureCheck};
use crate::onnx::sha256_file;
use crate::progress::Progress;
use crate::report::model::{Check, Evidence, FileRef, ModelReport, Provenance};
use crate::spec::Region;
use crate::verify::Counterexample;
use crate::verify::attack::{Rng, check_candidate};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors that stop a replay before it can judge anything (exit code 2).
#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("{path}: {message}")]
    Report { path: String, message: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Settings of a replay.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// Re-run only this many checks, chosen by `seed` (all when `None`).
    pub sample: Option<usize>,
    pub seed: u64,
    pub jobs: usize,
    /// The signer's public key (default: `signer.pub` in the directory, integrity only).
    pub pubkey: Option<PathBuf>,
    /// Check the proof material of `unsat` specs instead of searching again.
    pub check_proofs: bool,
}

/// One spec's proof material checked.
#[derive(Clone, Debug, Serialize)]
pub struct ProofCheck {
    pub model: String,
    pub check: String,
    pub regions: usize,
    /// Search-tree nodes bounded.
    pub nodes: usize,
    pub ok: bool,
    pub seconds: f64,
    /// The check's time in the original run (its timings.json), when known.
    pub original_seconds: Option<f64>,
    /// Of `seconds`, the time spent running the LP stage again (ReLU splitting that started
    /// from its bounds: the tree's root).
    pub lp_stage_seconds: f64,
    /// Of `seconds`, the time spent rebuilding the alpha-CROWN bounds of the region that
    /// ReLU splitting started from (the tree's root).
    pub root_seconds: f64,
    /// Refutations whose stored parameters did not refute by themselves and were optimised
    /// again from them (ReLU splitting).
    pub reoptimized: usize,
    pub detail: String,
}

/// One input file re-hashed.
#[derive(Clone, Debug, Serialize)]
pub struct HashCheck {
    pub role: String,
    pub path: String,
    pub expected: String,
    /// `None` when the file cannot be read.
    pub actual: Option<String>,
    pub ok: bool,
}

/// One counterexample re-checked.
#[derive(Clone, Debug, Serialize)]
pub struct CounterexampleCheck {
    pub model: String,
    pub check: String,
    /// Which counterexample of the check (`region r` or `input i at radius r`).
    pub which: String,
    pub ok: bool,
    pub detail: String,
}

/// One check re-run.
#[derive(Clone, Debug, Serialize)]
pub struct VerdictCheck {
    pub model: String,
    pub check: String,
    pub original: String,
    pub replayed: String,
    /// Outcome and evidence equal.
    pub agree: bool,
}

/// What a replay found.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub directory: String,
    /// Everything agrees (the exit code is 0 exactly then).
    pub agree: bool,
    pub signature: Option<SignatureCheck>,
    pub hashes: Vec<HashCheck>,
    pub counterexamples: Vec<CounterexampleCheck>,
    /// Proof material checked (`--check-proofs`); these checks are not re-run.
    pub proofs: Vec<ProofCheck>,
    /// Checks re-run (a sample when `sampled` is set).
    pub verdicts: Vec<VerdictCheck>,
    pub sampled: Option<usize>,
    pub checks_in_report: usize,
    /// One line per disagreement.
    pub problems: Vec<String>,
}

/// What a replay reads of `report.json`.
#[derive(serde::Deserialize)]
struct Recorded {
    config: FileRef,
    provenance: Provenance,
    models: Vec<ModelReport>,
}

/// Replay the report in `dir`.
pub fn replay(
    dir: &Path,
    opts: &ReplayOptions,
    progress: &dyn Progress,
) -> Result<ReplayReport, ReplayError> {
    let rp = dir.join("report.json");
    let bad = |m: String| ReplayError::Report {
        path: rp.display().to_string(),
        message: m,
    };
    let text = std::fs::read_to_string(&rp).map_err(|e| bad(e.to_string()))?;
    // The resolved configuration is read again from the configuration file (its hash is
    // checked below); the rest of the report is read as written.
    let report: Recorded = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let outputs: Vec<String> = crate::report::render::FILES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut out = ReplayReport {
        directory: dir.display().to_string(),
        agree: false,
        signature: sign::verify_dir(dir, opts.pubkey.as_deref(), &outputs),
        hashes: Vec::new(),
        counterexamples: Vec::new(),
        proofs: Vec::new(),
        verdicts: Vec::new(),
        sampled: opts.sample,
        checks_in_report: report.models.iter().map(|m| m.checks.len()).sum(),
        problems: Vec::new(),
    };
    if let Some(s) = &out.signature
        && !s.ok
    {
        out.problems.push(format!("signature: {}", s.detail));
    }
    for f in &report.provenance.inputs {
        let actual = sha256_file(Path::new(&f.path)).ok();
        let ok = actual.as_deref() == Some(f.sha256.as_str());
        if !ok {
            out.problems.push(match &actual {
                Some(_) => format!("changed input: {} {}", f.role, f.path),
                None => format!("missing input: {} {}", f.role, f.path),
            });
        }
        out.hashes.push(HashCheck {
            role: f.role.clone(),
            path: f.path.clone(),
            expected: f.sha256.clone(),
            actual,
            ok,
        });
    }
    if out.hashes.iter().any(|h| !h.ok) {
        // Refuse to judge results against inputs that are not the ones the report names.
        return Ok(out);
    }
    let loaded = config::load(Path::new(&report.config.path))?;
    let plan = plan::prepare(&loaded)?;
    recheck_counterexamples(&report, &plan, &mut out);
    let proved = if opts.check_proofs {
        check_proofs(dir, &report, &plan, &mut out)
    } else {
        BTreeSet::new()
    };
    rerun(&report, plan, opts, &proved, progress, &mut out);
    out.agree = out.problems.is_empty();
    Ok(out)
}

/// Check the proof material of every `unsat` spec that has some; returns the checks whose
/// proofs were checked (they need no re-run).
fn check_proofs(
    dir: &Path,
    report: &Recorded,
    plan: &Plan,
    out: &mut ReplayReport,
) -> BTreeSet<(String, String)> {
    let times: serde_json::Value = std::fs::read_to_string(dir.join("timings.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let original = |model: &str, id: &str| -> Option<f64> {
        times["models"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == model)?["checks"][id]
            .as_f64()
    };
    let mut done = BTreeSet::new();
    for m in &report.models {
        let Some(mp) = plan.models.iter().find(|p| p.name == m.name) else {
            continue;
        };
        for c in &m.checks {
            let Evidence::Spec(ev) = &c.evidence else {
                continue;
            };
            if ev.result != "unsat" || ev.proof.is_empty() {
                continue;
            }
            let Some(sp) = mp.specs.iter().find(|s| s.file.path == ev.spec.path) else {
                continue;
            };
            // Regions proved before the search have no tree: they are re-run instead.
            if ev.proof.len() != sp.spec.regions.len() {
                continue;
            }
            let opts = super::checks::options(plan, sp.timeout_s);
            let start = std::time::Instant::now();
            let mut nodes = 0;
            let (mut lp_s, mut root_s, mut reopt) = (0.0, 0.0, 0);
            let mut detail = String::from("every node of every region's tree checks");
            let mut ok = true;
            for rp in &ev.proof {
                let res = sp
                    .spec
                    .regions
                    .get(rp.region)
                    .ok_or_else(|| "its region does not exist".to_string())
                    .and_then(|region| crate::verify::proof::check(&mp.net, region, rp, &opts));
                match res {
                    Ok(st) => {
                        nodes += st.nodes;
                        lp_s += st.lp_stage_s;
                        root_s += st.root_s;
                        reopt += st.reoptimized;
                    }
                    Err(e) => {
                        ok = false;
                        detail = format!("region {}: {e}", rp.region);
                        break;
                    }
                }
            }
            if !ok {
                out.problems
                    .push(format!("proof of {}/{}: {detail}", m.name, c.id));
            }
            out.proofs.push(ProofCheck {
                model: m.name.clone(),
                check: c.id.clone(),
                regions: ev.proof.len(),
                nodes,
                ok,
                seconds: start.elapsed().as_secs_f64(),
                original_seconds: original(&m.name, &c.id),
                lp_stage_seconds: lp_s,
                root_seconds: root_s,
                reoptimized: reopt,
                detail,
            });
            done.insert((m.name.clone(), c.id.clone()));
        }
    }
    done
}

/// Re-check every counterexample of the report with the concrete evaluator.
fn recheck_counterexamples(report: &Recorded, plan: &Plan, out: &mut ReplayReport) {
    for m in &report.models {
        let Some(mp) = plan.models.iter().find(|p| p.name == m.name) else {
            out.problems.push(format!(
                "model {} of the report is not in its configuration",
                m.name
            ));
            continue;
        };
        for c in &m.checks {
            let mut one =
                |which: String, region: Option<&Region>, ri: usize, cex: &Counterexample| {
                    let detail = match region {
                        None => Err("its region does not exist".to_string()),
                        Some(region) => recheck(&mp.net, region, ri, cex),
                    };
                    let ok = detail.is_ok();
                    let detail = detail.unwrap_or_else(|e| e);
                    if !ok {
                        out.problems.push(format!(
                            "counterexample {}/{} {which}: {detail}",
                            m.name, c.id
                        ));
                    }
                    out.counterexamples.push(CounterexampleCheck {
                        model: m.name.clone(),
                        check: c.id.clone(),
                        which,
                        ok,
                        detail,
                    });
                };
            match &c.evidence {
                Evidence::Spec(ev) => {
                    let Some(cex) = &ev.counterexample else {
                        continue;
                    };
                    let sp = mp.specs.iter().find(|s| s.file.path == ev.spec.path);
                    let region = sp.and_then(|s| s.spec.regions.get(cex.region));
                    one(format!("region {}", cex.region), region, cex.region, cex);
                }
                Evidence::Robustness(ev) => {
                    let Some(d) = &mp.data else { continue };
                    let classes = mp.net.exec.output_numel();
                    for inp in &ev.per_input {
                        for rc in &inp.counterexamples {
                            let region = (inp.index < d.set.items).then(|| {
                                super::checks::robustness_region(
                                    d.set.item(inp.index),
                                    rc.radius,
                                    mp.range,
                                    inp.label,
                                    classes,
                                )
                            });
                            one(
                                format!("input {} at radius {}", inp.index, rc.radius),
                                region.as_ref(),
                                0,
                                &rc.counterexample,
                            );
                        }
                    }
                }
                Evidence::Smoothing(_)
                | Evidence::TriggerScan(_)
                | Evidence::PatchBound(_)
                | Evidence::Error { .. } => {}
            }
        }
    }
}

/// A recorded counterexample is valid when the evaluator accepts its point for the region
/// and computes the recorded output there (to float32 rounding, which may differ in the last
/// bits between machines with and without FMA).
fn recheck(
    net: &crate::network::Network,
    region: &Region,
    ri: usize,
    cex: &Counterexample,
) -> Result<String, String> {
    if cex.x.len() != net.exec.input_numel() {
        return Err(format!(
            "its input has {} values, the network takes {}",
            cex.x.len(),
            net.exec.input_numel()
        ));
    }
    let x32: Vec<f32> = cex.x.iter().map(|&v| v as f32).collect();
    let Some(c) = check_candidate(net, region, ri, &x32) else {
        return Err("the evaluator finds no violation of the property at its input".into());
    };
    if c.y.len() != cex.y.len() {
        return Err("its recorded output has the wrong length".into());
    }
    let worst =
        c.y.iter()
            .zip(&cex.y)
            .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
            .fold(0.0, f64::max);
    if worst.is_nan() || worst > 1e-5 {
        return Err(format!(
            "the evaluator's output differs from the recorded one (relative {worst:.3e})"
        ));
    }
    Ok(format!(
        "violates disjunct {} (recorded output reproduced to {worst:.1e})",
        c.disjunct
    ))
}

/// Re-run the checks (a sample of them, when asked) and compare them with the report's.
fn rerun(
    report: &Recorded,
    mut plan: Plan,
    opts: &ReplayOptions,
    proved: &BTreeSet<(String, String)>,
    progress: &dyn Progress,
    out: &mut ReplayReport,
) {
    let mut all: Vec<(String, String)> = report
        .models
        .iter()
        .flat_map(|m| m.checks.iter().map(|c| (m.name.clone(), c.id.clone())))
        .filter(|k| !proved.contains(k))
        .collect();
    if all.is_empty() {
        return;
    }
    if let Some(n) = opts.sample
        && n < all.len()
    {
        // A seeded Fisher-Yates prefix: the same seed picks the same checks.
        let mut rng = Rng::new(opts.seed, 0x7265706c6179);
        for i in 0..n {
            let j = i + (rng.next_u64() % (all.len() - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(n);
        all.sort();
    }
    let chosen: BTreeSet<(String, String)> = all.into_iter().collect();
    // Keep only what the chosen checks need (each check's result depends on its own unit).
    super::shard::restrict(&mut plan, &|m, id| {
        chosen.iter().any(|(name, cid)| name == m && cid == id)
    });
    let (again, _) = super::run(&plan, opts.jobs.max(1), progress);
    for (name, id) in &chosen {
        let find = |models: &[ModelReport]| -> Option<Check> {
            models
                .iter()
                .find(|m| &m.name == name)
                .and_then(|m| m.checks.iter().find(|c| &c.id == id))
                .cloned()
        };
        let (Some(a), b) = (find(&report.models), find(&again.models)) else {
            continue;
        };
        let agree = b
            .as_ref()
            .is_some_and(|b| serde_json::to_value(&a).ok() == serde_json::to_value(b).ok());
        let replayed = b
            .as_ref()
            .map_or("missing".to_string(), |b| b.outcome.name().to_string());
        if !agree {
            out.problems.push(format!(
                "check {name}/{id}: reported {}, re-run {replayed}{}",
                a.outcome.name(),
                if b.as_ref().is_some_and(|b| b.outcome == a.outcome) {
                    " (evidence differs)"
                } else {
                    ""
                }
            ));
        }
        out.verdicts.push(VerdictCheck {
            model: name.clone(),
            check: id.clone(),
            original: a.outcome.name().into(),
            replayed,
            agree,
        });
    }
}

//! Running a plan's checks. Verification jobs (every spec, every input at every radius, of
//! every model) go through the batch queue on dedicated workers, so each job's time budget is
//! its own; smoothing and the scan then run per model on the whole pool. Every result is
//! deterministic for a given configuration (no timing enters it), except that a job near its
//! time budget may end differently on a slower machine.

use super::batch::run_queue;
use super::plan::{ModelPlan, Plan};
use crate::bounds::{self, BoundOptions, Method, Objective};
use crate::domain::Intervals;
use crate::progress::{Prefixed, Progress};
use crate::report::model::{
    Check, CheckKind, DataRef, Evidence, InputRobustness, PatchEvidence, RadiusCounterexample,
    RadiusRobustness, RobustnessEvidence, SmoothingEvidence, SpecEvidence, TriggerEvidence,
};
use crate::scan::{self, ScanData};
use crate::smoothing::{self, RadiusAccuracy};
use crate::spec::{Constraint, Region, Spec};
use crate::verify::files::VerifyRun;
use crate::verify::{Counterexample, Verdict, VerifyOptions};
use std::time::{Duration, Instant};

/// One verification job.
#[derive(Clone, Copy, Debug)]
enum Job {
    /// Model, spec.
    Spec(usize, usize),
    /// Model, radius index, item.
    Robust(usize, usize, usize),
}

/// What a verification job found.
struct JobOut {
    word: String,
    counterexample: Option<Counterexample>,
    /// The spec's evidence (spec jobs).
    spec: Option<SpecEvidence>,
    /// CROWN lower bound of the robustness margin (robustness jobs).
    margin: f64,
    seconds: f64,
}

/// Checks of one model with the seconds each took.
pub struct ModelChecks {
    pub checks: Vec<Check>,
    pub seconds: Vec<f64>,
}

/// "No other class reaches the label": the unsafe set `y_j >= y_label` for some `j`.
pub fn robustness_region(
    x: &[f32],
    r: f64,
    (lo, hi): (f64, f64),
    label: usize,
    classes: usize,
) -> Region {
    let lower = x.iter().map(|&v| (v as f64 - r).max(lo)).collect();
    let upper = x.iter().map(|&v| (v as f64 + r).min(hi)).collect();
    let disjuncts = (0..classes)
        .filter(|&j| j != label)
        .map(|j| {
            vec![Constraint {
                coeffs: vec![(label, 1.0), (j, -1.0)],
                rhs: 0.0,
                strict: false,
            }]
        })
        .collect();
    Region {
        lower,
        upper,
        input_constraints: vec![],
        disjuncts,
    }
}

pub(crate) fn options(plan: &Plan, timeout_s: f64) -> VerifyOptions {
    VerifyOptions {
        timeout: Some(Duration::from_secs_f64(timeout_s)),
        fp_mode: plan.fp_mode,
        method: plan.method,
        attack: Some(crate::verify::attack::AttackConfig {
            seed: plan.seed,
            ..Default::default()
        }),
        ..VerifyOptions::default()
    }
}

fn run_job(plan: &Plan, job: Job) -> JobOut {
    let start = Instant::now();
    match job {
        Job::Spec(mi, si) => {
            let m = &plan.models[mi];
            let sp = &m.specs[si];
            let run = VerifyRun::of(&m.net, &sp.spec, &sp.path, &options(plan, sp.timeout_s));
            let ev = SpecEvidence::new(sp.file.clone(), sp.property_line, &run, Some(sp.timeout_s));
            JobOut {
                word: run.verdict.word().into(),
                counterexample: ev.counterexample.clone(),
                spec: Some(ev),
                margin: f64::NAN,
                seconds: start.elapsed().as_secs_f64(),
            }
        }
        Job::Robust(mi, ri, i) => {
            let m = &plan.models[mi];
            let (Some(rp), Some(d)) = (&m.robustness, &m.data) else {
                return JobOut {
                    word: "error".into(),
                    counterexample: None,
                    spec: None,
                    margin: f64::NAN,
                    seconds: 0.0,
                };
            };
            let r = rp.radii[ri];
            let label = d.set.labels.as_ref().map_or(0, |l| l[i]);
            let classes = m.net.exec.output_numel();
            let region = robustness_region(d.set.item(i), r, m.range, label, classes);
            let objs: Vec<Objective> = (0..classes)
                .filter(|&j| j != label)
                .map(|j| Objective {
                    domain: 0,
                    coeffs: vec![(label, 1.0), (j, -1.0)],
                })
                .collect();
            let crown = BoundOptions {
                method: Method::Crown,
                mode: plan.fp_mode,
                ..BoundOptions::default()
            };
            let input = Intervals::new(region.lower.clone(), region.upper.clone());
            let margin = bounds::objective_lower(&m.net.analysis, input, 1, &objs, &crown)
                .into_iter()
                .fold(f64::INFINITY, f64::min);
            let spec = Spec {
                num_inputs: d.set.dim,
                num_outputs: classes,
                regions: vec![region],
            };
            let path = std::path::Path::new(&d.inputs.path);
            let run = VerifyRun::of(&m.net, &spec, path, &options(plan, rp.timeout_s));
            JobOut {
                word: run.verdict.word().into(),
                counterexample: match run.verdict {
                    Verdict::Falsified(c) => Some(c),
                    _ => None,
                },
                spec: None,
                margin,
                seconds: start.elapsed().as_secs_f64(),
            }
        }
    }
}

/// Run every check of the plan; `jobs` worker threads.
pub fn run_all(plan: &Plan, jobs: usize, progress: &dyn Progress) -> Vec<ModelChecks> {
    let mut list = Vec::new();
    for (mi, m) in plan.models.iter().enumerate() {
        list.extend((0..m.specs.len()).map(|si| Job::Spec(mi, si)));
        if let (Some(rp), Some(d)) = (&m.robustness, &m.data) {
            let n = rp.count.map_or(d.set.items, |c| c.min(d.set.items));
            for ri in 0..rp.radii.len() {
                list.extend((0..n).map(|i| Job::Robust(mi, ri, i)));
            }
        }
    }
    progress.stage("verification", list.len() as u64);
    let outs = run_queue(list.len(), jobs, 1, |k| {
        let o = run_job(plan, list[k]);
        progress.inc(1);
        o
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build();
    plan.models
        .iter()
        .enumerate()
        .map(|(mi, m)| {
            let mut mc = ModelChecks {
                checks: Vec::new(),
                seconds: Vec::new(),
            };
            let mine: Vec<(Job, &JobOut)> = list
                .iter()
                .zip(&outs)
                .filter(|(j, _)| matches!(j, Job::Spec(a, _) | Job::Robust(a, _, _) if *a == mi))
                .map(|(j, o)| (*j, o))
                .collect();
            spec_checks(m, &mine, &mut mc);
            robustness_checks(m, &mine, &mut mc);
            let pfx = Prefixed {
                prefix: m.name.clone(),
                inner: progress,
            };
            let mut later = || {
                smoothing_check(m, &pfx, &mut mc);
                scan_checks(m, &pfx, &mut mc);
            };
            match &pool {
                Ok(p) => p.install(later),
                Err(_) => later(),
            }
            mc
        })
        .collect()
}

fn check(id: String, kind: CheckKind, summary: String, evidence: Evidence) -> Check {
    Check {
        id,
        kind,
        method_class: kind.method_class(),
        // Refined with the run's floating-point mode and confidence by `certify::run`.
        method: crate::report::model::MethodInfo::of(kind, crate::domain::FpMode::Deployed, None),
        outcome: crate::report::model::Outcome::Info,
        summary,
        conditions: vec![],
        evidence,
    }
}

fn spec_checks(m: &ModelPlan, mine: &[(Job, &JobOut)], mc: &mut ModelChecks) {
    for (job, out) in mine {
        let Job::Spec(_, si) = *job else { continue };
        let sp = &m.specs[si];
        let Some(ev) = out.spec.clone() else { continue };
        let summary = match ev.result.as_str() {
            "unsat" => format!("verified by {}", ev.stage),
            "sat" => "violated: a checked counterexample exists".to_string(),
            "timeout" => format!("not settled within {} s", sp.timeout_s),
            "error" => format!("could not run: {}", ev.error.clone().unwrap_or_default()),
            _ => "not settled (unknown)".to_string(),
        };
        mc.checks.push(check(
            format!("spec:{}", sp.path.display()),
            CheckKind::Spec,
            summary,
            Evidence::Spec(ev),
        ));
        mc.seconds.push(out.seconds);
    }
}

fn robustness_checks(m: &ModelPlan, mine: &[(Job, &JobOut)], mc: &mut ModelChecks) {
    let (Some(rp), Some(d)) = (&m.robustness, &m.data) else {
        return;
    };
    let n = rp.count.map_or(d.set.items, |c| c.min(d.set.items));
    let (_, data_ref) = d.take(Some(n));
    let labels: Vec<usize> = (0..n)
        .map(|i| d.set.labels.as_ref().map_or(0, |l| l[i]))
        .collect();
    let pred = scan::predict(&m.net.exec, &d.set.x[..n * d.set.dim], n).unwrap_or_default();
    for (ri, &r) in rp.radii.iter().enumerate() {
        let mut rows: Vec<Option<&JobOut>> = vec![None; n];
        for (job, out) in mine {
            if let Job::Robust(_, jr, i) = *job
                && jr == ri
            {
                rows[i] = Some(out);
            }
        }
        let (mut certified, mut attacked, mut open, mut wrong) = (0, 0, 0, 0);
        let mut per_input = Vec::with_capacity(n);
        let mut secs = 0.0;
        for i in 0..n {
            let o = rows[i];
            let word = o.map_or("error".to_string(), |o| o.word.clone());
            secs += o.map_or(0.0, |o| o.seconds);
            let correct = pred.get(i) == Some(&labels[i]);
            match (correct, word.as_str()) {
                (false, _) => wrong += 1,
                (true, "unsat") => certified += 1,
                (true, "sat") => attacked += 1,
                _ => open += 1,
            }
            per_input.push(InputRobustness {
                index: i,
                label: labels[i],
                prediction: pred.get(i).copied().unwrap_or(0),
                results: vec![word],
                margin_lower_bound: vec![o.map(|o| o.margin).filter(|m| m.is_finite())],
                counterexamples: o
                    .and_then(|o| o.counterexample.clone())
                    .map(|c| RadiusCounterexample {
                        radius: r,
                        counterexample: c,
                    })
                    .into_iter()
                    .collect(),
            });
        }
        let nf = n.max(1) as f64;
        let correct = certified + attacked + open;
        let stats = RadiusRobustness {
            radius: r,
            certified,
            attacked,
            open,
            misclassified: wrong,
            certified_accuracy: certified as f64 / nf,
            accuracy_under_attack: (correct - attacked) as f64 / nf,
            attack_success_rate: attacked as f64 / correct.max(1) as f64,
        };
        let summary = format!(
            "radius {r}: certified accuracy {:.4} (proved), accuracy under attack {:.4}, {open} of {n} open",
            stats.certified_accuracy, stats.accuracy_under_attack
        );
        mc.checks.push(check(
            format!("robustness:linf={r}"),
            CheckKind::Robustness,
            summary,
            Evidence::Robustness(RobustnessEvidence {
                data: data_ref.clone(),
                range: [m.range.0, m.range.1],
                timeout_s: rp.timeout_s,
                per_radius: vec![stats],
                per_input,
            }),
        ));
        mc.seconds.push(secs);
    }
}

fn error_check(id: String, kind: CheckKind, message: String) -> Check {
    check(
        id,
        kind,
        format!("could not run: {message}"),
        Evidence::Error { message },
    )
}

fn smoothing_check(m: &ModelPlan, progress: &dyn Progress, mc: &mut ModelChecks) {
    let (Some(sp), Some(d)) = (&m.smoothing, &m.data) else {
        return;
    };
    let start = Instant::now();
    let (set, data_ref) = d.take(sp.count);
    let per = sp.cfg.n0 + sp.cfg.n;
    progress.stage("smoothing", per * set.items as u64);
    let inc = |k: u64| progress.inc(k);
    let id = format!("smoothing:l2:sigma={}", sp.cfg.sigma);
    let c = match smoothing::smooth_dataset(&m.net.exec, &set, &sp.cfg, &inc) {
        Err(e) => error_check(id, CheckKind::Smoothing, e.to_string()),
        Ok(results) => {
            let n = results.len().max(1) as f64;
            let certified_accuracy: Vec<RadiusAccuracy> = sp
                .radii
                .iter()
                .map(|&radius| RadiusAccuracy {
                    radius,
                    accuracy: results
                        .iter()
                        .filter(|r| {
                            r.correct == Some(true) && r.radius.is_some_and(|x| x >= radius)
                        })
                        .count() as f64
                        / n,
                })
                .collect();
            let s = smoothing::summarize(&results, sp.cfg.mode);
            let summary = format!(
                "certified accuracy {} (L2 radius: accuracy; statistical, alpha {})",
                certified_accuracy
                    .iter()
                    .map(|p| format!("{}: {:.4}", p.radius, p.accuracy))
                    .collect::<Vec<_>>()
                    .join(", "),
                sp.cfg.alpha
            );
            check(
                id,
                CheckKind::Smoothing,
                summary,
                Evidence::Smoothing(SmoothingEvidence {
                    data: data_ref,
                    sigma: sp.cfg.sigma,
                    n0: sp.cfg.n0,
                    n: sp.cfg.n,
                    alpha: sp.cfg.alpha,
                    seed: sp.cfg.seed,
                    certified_accuracy,
                    clean_accuracy: s.clean_accuracy,
                    abstain_rate: s.abstain_rate,
                    results,
                }),
            )
        }
    };
    mc.checks.push(c);
    mc.seconds.push(start.elapsed().as_secs_f64());
}

fn scan_checks(m: &ModelPlan, progress: &dyn Progress, mc: &mut ModelChecks) {
    let (Some(sp), Some(d)) = (&m.scan, &m.data) else {
        return;
    };
    let start = Instant::now();
    let (set, data_ref): (_, DataRef) = d.take(sp.count);
    let res = ScanData::new(&m.net, &set, m.image_shape, &sp.cfg)
        .and_then(|sd| scan::scan(&sd, &sp.cfg, progress));
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            mc.checks.push(error_check(
                "scan:triggers".into(),
                CheckKind::TriggerScan,
                e.to_string(),
            ));
            mc.seconds.push(start.elapsed().as_secs_f64());
            return;
        }
    };
    let flagged: Vec<String> = res.flagged_labels.iter().map(|t| t.to_string()).collect();
    let summary = if flagged.is_empty() {
        format!(
            "no label flagged (largest anomaly index {:.2})",
            res.labels
                .iter()
                .map(|l| l.anomaly_index)
                .fold(f64::MIN, f64::max)
        )
    } else {
        format!(
            "label(s) {} flagged as backdoor target(s)",
            flagged.join(", ")
        )
    };
    mc.checks.push(check(
        "scan:triggers".into(),
        CheckKind::TriggerScan,
        summary,
        Evidence::TriggerScan(TriggerEvidence {
            data: data_ref.clone(),
            layout: res.layout.clone(),
            steps: sp.cfg.steps,
            seed: sp.cfg.seed,
            anomaly_threshold: sp.cfg.anomaly_threshold,
            masks: res.labels.iter().map(|l| l.trigger.mask.clone()).collect(),
            labels: res.labels.clone(),
            flagged_labels: res.flagged_labels.clone(),
            median_mask_l1: res.median_mask_l1,
            mad_mask_l1: res.mad_mask_l1,
        }),
    ));
    mc.seconds.push(start.elapsed().as_secs_f64());
    for summary in &res.patch_summary {
        let targets: Vec<_> = res
            .patch
            .iter()
            .filter(|e| e.k == summary.k)
            .cloned()
            .collect();
        let worst = targets
            .iter()
            .map(|e| e.certified_asr_bound)
            .fold(0.0f64, f64::max);
        mc.checks.push(check(
            format!("scan:patch:k={}", summary.k),
            CheckKind::PatchBound,
            format!(
                "no {k} x {k} stamp at a scanned position can reach a higher attack success rate on this data than {worst:.4} (worst target)",
                k = summary.k
            ),
            Evidence::PatchBound(PatchEvidence {
                data: data_ref.clone(),
                summary: summary.clone(),
                targets,
            }),
        ));
        mc.seconds.push(0.0);
    }
}

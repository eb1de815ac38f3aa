//! The gate: each check's conditions judged from its evidence, then the model's verdict.
//!
//! Fail-safe. A condition is `pass` only when the evidence proves it (or, for an empirical or
//! statistical check, when the method's own claim meets it); `fail` when the evidence refutes
//! it; `unknown` when neither (a timeout, or a threshold between what was proved and what an
//! attack reached). A model fails on any `fail`, on any `unknown` unless `allow_unknown`, and
//! on any `error` unless `allow_errors`.

use super::config::Gate;
use crate::report::model::{Check, Condition, Evidence, Outcome};

fn cond(condition: String, outcome: Outcome, value: Option<f64>, detail: String) -> Condition {
    Condition {
        condition,
        outcome,
        value,
        detail,
    }
}

/// The conditions of `gate` that apply to `c`.
fn conditions(gate: &Gate, c: &Check) -> Vec<Condition> {
    let mut out = Vec::new();
    match &c.evidence {
        Evidence::Error { message } => {
            out.push(cond(
                "the check runs".into(),
                Outcome::Error,
                None,
                message.clone(),
            ));
        }
        Evidence::Spec(e) if gate.specs_verified => {
            let (o, detail) = match e.result.as_str() {
                "unsat" => (Outcome::Pass, format!("verified (unsat) by {}", e.stage)),
                "sat" => (
                    Outcome::Fail,
                    "violated (sat): the report carries the checked counterexample".into(),
                ),
                "error" => (Outcome::Error, e.error.clone().unwrap_or_default()),
                "timeout" => (
                    Outcome::Unknown,
                    format!(
                        "not settled within the budget of {} s",
                        e.timeout_s.unwrap_or(0.0)
                    ),
                ),
                _ => (
                    Outcome::Unknown,
                    "neither proved nor refuted (unknown)".into(),
                ),
            };
            out.push(cond("the property is verified".into(), o, None, detail));
        }
        Evidence::Robustness(e) => {
            let Some(s) = e.per_radius.first() else {
                return out;
            };
            for t in gate
                .certified_accuracy
                .iter()
                .filter(|t| t.radius == s.radius)
            {
                let (o, detail) = if s.certified_accuracy >= t.min {
                    (Outcome::Pass, format!("proved {:.4}", s.certified_accuracy))
                } else if s.accuracy_under_attack < t.min {
                    (
                        Outcome::Fail,
                        format!(
                            "proved {:.4}, and attacks bring the accuracy down to {:.4}",
                            s.certified_accuracy, s.accuracy_under_attack
                        ),
                    )
                } else {
                    (
                        Outcome::Unknown,
                        format!(
                            "proved only {:.4}; attacks leave {:.4}: {} inputs open",
                            s.certified_accuracy, s.accuracy_under_attack, s.open
                        ),
                    )
                };
                out.push(cond(
                    format!(
                        "certified accuracy at L-inf radius {} >= {}",
                        t.radius, t.min
                    ),
                    o,
                    Some(s.certified_accuracy),
                    detail,
                ));
            }
            for t in gate
                .accuracy_under_attack
                .iter()
                .filter(|t| t.radius == s.radius)
            {
                let ok = s.accuracy_under_attack >= t.min;
                out.push(cond(
                    format!(
                        "accuracy under attack at L-inf radius {} >= {}",
                        t.radius, t.min
                    ),
                    if ok { Outcome::Pass } else { Outcome::Fail },
                    Some(s.accuracy_under_attack),
                    format!(
                        "{:.4} after attacks ({} of {} correct inputs attacked)",
                        s.accuracy_under_attack,
                        s.attacked,
                        s.certified + s.attacked + s.open
                    ),
                ));
            }
        }
        Evidence::Smoothing(e) => {
            for t in &gate.smoothing_certified_accuracy {
                let v = e
                    .certified_accuracy
                    .iter()
                    .find(|p| p.radius == t.radius)
                    .map(|p| p.accuracy);
                let (o, detail) = match v {
                    Some(a) if a >= t.min => (
                        Outcome::Pass,
                        format!(
                            "{a:.4} (each radius holds with probability >= {})",
                            1.0 - e.alpha
                        ),
                    ),
                    Some(a) => (Outcome::Fail, format!("{a:.4}")),
                    None => (Outcome::Error, "radius not evaluated".into()),
                };
                out.push(cond(
                    format!(
                        "smoothed certified accuracy at L2 radius {} >= {}",
                        t.radius, t.min
                    ),
                    o,
                    v,
                    detail,
                ));
            }
        }
        Evidence::TriggerScan(e) if gate.no_flagged_labels => {
            let detail = if e.flagged_labels.is_empty() {
                "no label's trigger mask is an outlier".to_string()
            } else {
                e.flagged_labels
                    .iter()
                    .map(|&t| {
                        let l = &e.labels[t];
                        format!(
                            "label {t} flagged as a backdoor target (mask L1 {:.2} against a median of {:.2}, anomaly index {:.2} > {})",
                            l.mask_l1, e.median_mask_l1, l.anomaly_index, e.anomaly_threshold
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            out.push(cond(
                "no label flagged by the trigger search".into(),
                if e.flagged_labels.is_empty() {
                    Outcome::Pass
                } else {
                    Outcome::Fail
                },
                Some(e.flagged_labels.len() as f64),
                detail,
            ));
        }
        Evidence::PatchBound(e) => {
            for t in gate.max_certified_asr.iter().filter(|t| t.k == e.summary.k) {
                let worst = e
                    .targets
                    .iter()
                    .max_by(|a, b| a.certified_asr_bound.total_cmp(&b.certified_asr_bound));
                let bound = worst.map_or(0.0, |w| w.certified_asr_bound);
                let over: Vec<_> = e
                    .targets
                    .iter()
                    .filter(|x| x.certified_asr_bound > t.max)
                    .collect();
                let refuted: Vec<_> = over
                    .iter()
                    .filter(|x| x.empirical_stamp_asr > t.max)
                    .collect();
                let (o, detail) = if over.is_empty() {
                    (Outcome::Pass, format!("proved: no target above {bound:.4}"))
                } else if let Some(x) = refuted.first() {
                    (
                        Outcome::Fail,
                        format!(
                            "target {}: a {k} x {k} stamp at {:?} reaches {:.4} (certified bound {:.4})",
                            x.target,
                            x.stamp_position.unwrap_or_default(),
                            x.empirical_stamp_asr,
                            x.certified_asr_bound,
                            k = t.k
                        ),
                    )
                } else {
                    let x = over[0];
                    (
                        Outcome::Unknown,
                        format!(
                            "target {}: certified bound {:.4} above the limit, best stamp found {:.4}",
                            x.target, x.certified_asr_bound, x.empirical_stamp_asr
                        ),
                    )
                };
                out.push(cond(
                    format!(
                        "certified attack success rate of any {k} x {k} stamp <= {}",
                        t.max,
                        k = t.k
                    ),
                    o,
                    Some(bound),
                    detail,
                ));
            }
        }
        Evidence::Spec(_) | Evidence::TriggerScan(_) => {}
    }
    out
}

/// Judge every check of a model against its gate; returns the model's verdict and one line
/// per failing condition.
pub fn judge(gate: &Gate, checks: &mut [Check]) -> (Outcome, Vec<String>) {
    let mut failures = Vec::new();
    for c in checks.iter_mut() {
        c.conditions = conditions(gate, c);
        c.outcome = c
            .conditions
            .iter()
            .map(|k| k.outcome)
            .max_by_key(|o| match o {
                Outcome::Info => 0,
                Outcome::Pass => 1,
                Outcome::Unknown => 2,
                Outcome::Error => 3,
                Outcome::Fail => 4,
            })
            .unwrap_or(Outcome::Info);
        for k in &c.conditions {
            let fails = match k.outcome {
                Outcome::Fail => true,
                Outcome::Unknown => !gate.allow_unknown,
                Outcome::Error => !gate.allow_errors,
                Outcome::Pass | Outcome::Info => false,
            };
            if fails {
                failures.push(format!("{}: {}", c.id, k.line()));
            }
        }
    }
    let verdict = if failures.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail
    };
    (verdict, failures)
}

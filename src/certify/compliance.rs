//! The compliance section: each check's results mapped to the clauses of the EU AI Act
//! (Regulation (EU) 2024/1689, Art. 15) and the NIST AI RMF 1.0 (MEASURE 2.1, 2.5, 2.7, 2.13)
//! that ask for such evidence. It states what was measured and what that does not show; it
//! never claims conformity, which depends on the whole system and its documentation.

use crate::report::model::{
    CheckKind, Compliance, ComplianceItem, Evidence, MethodClass, ModelReport, Provenance,
};

const DISCLAIMER: &str = "This section maps the results of this run to clauses that ask for such evidence. It states facts and their limits. It does not claim conformity with the EU AI Act (Regulation (EU) 2024/1689) or the NIST AI Risk Management Framework 1.0: conformity depends on the whole system, its intended purpose, its data and its documentation, none of which this tool assesses.";

/// A clause and the checks of the kinds that bear on it.
struct Clause {
    framework: &'static str,
    clause: &'static str,
    topic: &'static str,
    kinds: &'static [CheckKind],
    limits: &'static [&'static str],
}

const ALL: &[CheckKind] = &CheckKind::ALL;

const CLAUSES: &[Clause] = &[
    Clause {
        framework: "EU AI Act",
        clause: "Art. 15(3)",
        topic: "levels of accuracy and the relevant accuracy metrics, declared",
        kinds: &[CheckKind::Robustness, CheckKind::Smoothing],
        limits: &[
            "Accuracy is measured on the configured data only; it says nothing of data from another distribution.",
        ],
    },
    Clause {
        framework: "EU AI Act",
        clause: "Art. 15(4)",
        topic: "robustness: resilience to errors and inconsistencies of the inputs",
        kinds: &[CheckKind::Spec, CheckKind::Robustness, CheckKind::Smoothing],
        limits: &[
            "Proofs cover only the listed properties, norms and radii around the listed inputs; smoothing certifies the smoothed classifier, not the base model.",
        ],
    },
    Clause {
        framework: "EU AI Act",
        clause: "Art. 15(5)",
        topic: "resilience to adversarial examples (model evasion) and data poisoning",
        kinds: &[
            CheckKind::Robustness,
            CheckKind::Spec,
            CheckKind::TriggerScan,
            CheckKind::PatchBound,
        ],
        limits: &[
            "Attacks and the trigger search are empirical: finding nothing proves nothing. The patch bound covers square stamps at the scanned positions only.",
        ],
    },
    Clause {
        framework: "NIST AI RMF 1.0",
        clause: "MEASURE 2.1",
        topic: "test sets, metrics and details of the tools used during TEVV, documented",
        kinds: ALL,
        limits: &[
            "The facts of the machine (threads, CPU features, operating system, start time) are in timings.json.",
        ],
    },
    Clause {
        framework: "NIST AI RMF 1.0",
        clause: "MEASURE 2.5",
        topic: "validity and reliability demonstrated, limits of generalisation documented",
        kinds: ALL,
        limits: &["Each model's not_covered list states what its checks leave out."],
    },
    Clause {
        framework: "NIST AI RMF 1.0",
        clause: "MEASURE 2.7",
        topic: "security and resilience evaluated and documented",
        kinds: &[
            CheckKind::Spec,
            CheckKind::Robustness,
            CheckKind::TriggerScan,
            CheckKind::PatchBound,
        ],
        limits: &[
            "Only the threat models above (L-inf perturbations, listed properties, patch triggers) were evaluated.",
        ],
    },
    Clause {
        framework: "NIST AI RMF 1.0",
        clause: "MEASURE 2.13",
        topic: "effectiveness of the TEVV metrics and processes evaluated and documented",
        kinds: ALL,
        limits: &[
            "The effectiveness of the empirical searches (attacks, trigger search) is not measured by this run.",
        ],
    },
];

/// Facts one check contributes to a clause.
fn facts(clause: &str, model: &str, kind: CheckKind, ev: &Evidence) -> Vec<String> {
    match (clause, ev) {
        ("Art. 15(3)", Evidence::Robustness(r)) => r
            .per_radius
            .first()
            .map(|s| {
                let n = s.certified + s.attacked + s.open + s.misclassified;
                format!(
                    "{model}: clean accuracy {:.4} on the first {n} inputs of {}",
                    (n - s.misclassified) as f64 / n.max(1) as f64,
                    r.data.inputs.path
                )
            })
            .into_iter()
            .collect(),
        ("Art. 15(3)", Evidence::Smoothing(s)) => s
            .clean_accuracy
            .map(|a| {
                format!(
                    "{model}: accuracy of the smoothed classifier (sigma {}) {a:.4} on {} inputs",
                    s.sigma, s.data.items
                )
            })
            .into_iter()
            .collect(),
        ("Art. 15(3)", _) => vec![],
        (_, Evidence::Spec(s)) => vec![format!(
            "{model}: property {} is {} ({})",
            s.spec.path, s.result, s.stage
        )],
        (_, Evidence::Robustness(r)) => r
            .per_radius
            .iter()
            .map(|s| {
                format!(
                    "{model}: L-inf radius {}: certified accuracy {:.4} (proof), accuracy under attack {:.4}, attack success rate {:.4}",
                    s.radius, s.certified_accuracy, s.accuracy_under_attack, s.attack_success_rate
                )
            })
            .collect(),
        (_, Evidence::Smoothing(s)) => s
            .certified_accuracy
            .iter()
            .map(|a| {
                format!(
                    "{model}: smoothed certified accuracy {:.4} at L2 radius {} (confidence {})",
                    a.accuracy,
                    a.radius,
                    1.0 - s.alpha
                )
            })
            .collect(),
        (_, Evidence::TriggerScan(t)) => vec![if t.flagged_labels.is_empty() {
            format!("{model}: trigger search flagged no label (empirical)")
        } else {
            format!(
                "{model}: trigger search flagged labels {:?} (empirical)",
                t.flagged_labels
            )
        }],
        (_, Evidence::PatchBound(p)) => p
            .targets
            .iter()
            .map(|e| {
                format!(
                    "{model}: no {k}x{k} stamp makes target {} win on more than {:.4} of the inputs (proof)",
                    e.target,
                    e.certified_asr_bound,
                    k = e.k
                )
            })
            .collect(),
        (_, Evidence::Error { message }) => {
            vec![format!("{model}: a {} check could not run: {message}", kind.name())]
        }
    }
}

/// The compliance section of a run.
pub fn build(models: &[ModelReport], prov: &Provenance) -> Compliance {
    let items = CLAUSES
        .iter()
        .map(|cl| {
            let mut checks = Vec::new();
            let mut fs = Vec::new();
            for m in models {
                for c in m.checks.iter().filter(|c| cl.kinds.contains(&c.kind)) {
                    checks.push(format!("{}/{}", m.name, c.id));
                    if cl.kinds.len() < ALL.len() {
                        fs.extend(facts(cl.clause, &m.name, c.kind, &c.evidence));
                    }
                }
            }
            match cl.clause {
                "MEASURE 2.1" => fs.push(format!(
                    "{} input files identified by SHA-256; ferrocert {} (commit {}), floating-point mode {}, seed {}, GEMM kernels {}",
                    prov.inputs.len(),
                    prov.tool_version,
                    prov.git_commit,
                    prov.fp_mode,
                    prov.seed,
                    prov.gemm_kernel
                )),
                "MEASURE 2.5" => {
                    for class in [
                        MethodClass::Proof,
                        MethodClass::Statistical,
                        MethodClass::Empirical,
                    ] {
                        let all: Vec<_> = models
                            .iter()
                            .flat_map(|m| &m.checks)
                            .filter(|c| c.method_class == class)
                            .collect();
                        if !all.is_empty() {
                            let passed = all
                                .iter()
                                .filter(|c| c.outcome == crate::report::model::Outcome::Pass)
                                .count();
                            fs.push(format!(
                                "{} {} checks, {passed} passed their gate conditions",
                                all.len(),
                                class.name()
                            ));
                        }
                    }
                }
                "MEASURE 2.13" => fs.push(format!(
                    "every counterexample was re-checked by the concrete evaluator; `{}` recomputes every hash, re-checks every counterexample and re-runs the verdicts",
                    prov.replay_command
                )),
                _ => {}
            }
            // One robustness check per radius states the same clean accuracy: say it once.
            let mut seen = std::collections::HashSet::new();
            fs.retain(|f| seen.insert(f.clone()));
            ComplianceItem {
                framework: cl.framework.into(),
                clause: cl.clause.into(),
                topic: cl.topic.into(),
                status: if checks.is_empty() {
                    "none in this run".into()
                } else {
                    "evidence".into()
                },
                checks,
                facts: fs,
                limits: cl.limits.iter().map(|s| s.to_string()).collect(),
            }
        })
        .collect();
    Compliance {
        disclaimer: DISCLAIMER.into(),
        items,
    }
}

//! Markdown renderer: `report.md`, short enough for a pull-request comment. The verdict and
//! why first, then per model the checks, the robustness and patch-bound figures, and what was
//! not covered.

use crate::report::model::{Evidence, ModelReport, Outcome, Report};
use std::fmt::Write as _;

fn verdict(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "**PASS**",
        Outcome::Fail => "**FAIL**",
        Outcome::Unknown => "unknown",
        Outcome::Error => "**ERROR**",
        Outcome::Info => "info",
    }
}

/// Escape the characters that break a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn model_section(s: &mut String, m: &ModelReport) {
    let _ = writeln!(s, "\n### {} — {}\n", m.name, verdict(m.verdict));
    let _ = writeln!(
        s,
        "`{}` (sha256 `{}`), input {:?}, output {:?}, {} parameters.\n",
        m.model.path,
        &m.model.sha256[..m.model.sha256.len().min(16)],
        m.input_shape,
        m.output_shape,
        m.parameters
    );
    if !m.failures.is_empty() {
        let _ = writeln!(s, "Gate failures:\n");
        for f in &m.failures {
            let _ = writeln!(s, "- {}", cell(f));
        }
        s.push('\n');
    }
    let _ = writeln!(s, "| check | kind | method | outcome | summary |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    // Specs are many: passing ones are counted in one row.
    let passing_specs = m
        .checks
        .iter()
        .filter(|c| matches!(c.evidence, Evidence::Spec(_)) && c.outcome == Outcome::Pass)
        .count();
    if passing_specs > 0 {
        let _ = writeln!(
            s,
            "| {passing_specs} specs | spec | proof | **PASS** | every one verified (unsat) |"
        );
    }
    for c in &m.checks {
        if matches!(c.evidence, Evidence::Spec(_)) && c.outcome == Outcome::Pass {
            continue;
        }
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} |",
            cell(&c.id),
            c.kind.name(),
            format!("{} ({})", c.method_class.name(), c.method.completeness),
            verdict(c.outcome),
            cell(&c.summary)
        );
    }
    let rob: Vec<_> = m
        .checks
        .iter()
        .filter_map(|c| match &c.evidence {
            Evidence::Robustness(e) => e.per_radius.first().map(|r| (r, e.data.items)),
            _ => None,
        })
        .collect();
    if !rob.is_empty() {
        let _ = writeln!(
            s,
            "\n| L-inf radius | certified accuracy (proved) | accuracy under attack | attack success rate | open |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|");
        for (r, n) in rob {
            let _ = writeln!(
                s,
                "| {} | {:.4} | {:.4} | {:.4} | {} of {n} |",
                r.radius,
                r.certified_accuracy,
                r.accuracy_under_attack,
                r.attack_success_rate,
                r.open
            );
        }
    }
    for c in &m.checks {
        if let Evidence::PatchBound(e) = &c.evidence {
            let k = e.summary.k;
            let _ = writeln!(
                s,
                "\n| target | certified ASR bound, {k}x{k} (proved) | best stamp found (empirical) | worst position |"
            );
            let _ = writeln!(s, "|---|---|---|---|");
            for t in &e.targets {
                let _ = writeln!(
                    s,
                    "| {} | {:.4} | {:.4} | {} |",
                    t.target,
                    t.certified_asr_bound,
                    t.empirical_stamp_asr,
                    t.worst_position
                        .map_or("-".to_string(), |p| format!("({}, {})", p[0], p[1]))
                );
            }
        }
        if let Evidence::Smoothing(e) = &c.evidence {
            let pts: Vec<String> = e
                .certified_accuracy
                .iter()
                .map(|p| format!("{}: {:.4}", p.radius, p.accuracy))
                .collect();
            let _ = writeln!(
                s,
                "\nSmoothed certified accuracy (sigma {}, n {}, alpha {}) at L2 radius: {}.",
                e.sigma,
                e.n,
                e.alpha,
                pts.join(", ")
            );
        }
    }
    let _ = writeln!(s, "\nNot covered:\n");
    for n in &m.not_covered {
        let _ = writeln!(s, "- {n}");
    }
}

fn provenance_section(s: &mut String, r: &Report) {
    let p = &r.provenance;
    let _ = writeln!(s, "\n### Provenance\n");
    let _ = writeln!(
        s,
        "ferrocert {} (commit `{}`), floating-point mode `{}`, seed {}, GEMM kernels `{}`. Re-check: `{}`; run again: `{}`. Machine facts: `{}`.\n",
        p.tool_version,
        p.git_commit,
        p.fp_mode,
        p.seed,
        p.gemm_kernel,
        p.replay_command,
        p.rerun_command,
        p.machine_facts
    );
    let _ = writeln!(s, "| role | file | sha256 |");
    let _ = writeln!(s, "|---|---|---|");
    for f in &p.inputs {
        let _ = writeln!(s, "| {} | `{}` | `{}` |", f.role, cell(&f.path), f.sha256);
    }
}

fn compliance_section(s: &mut String, r: &Report) {
    let c = &r.compliance;
    let _ = writeln!(s, "\n### Compliance mapping\n\n{}\n", c.disclaimer);
    let _ = writeln!(
        s,
        "| framework | clause | topic | this run | facts | limits |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for i in &c.items {
        let mut facts: Vec<String> = i.facts.iter().take(4).map(|f| cell(f)).collect();
        if i.facts.len() > 4 {
            facts.push(format!("... {} more in report.json", i.facts.len() - 4));
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} ({} checks) | {} | {} |",
            i.framework,
            i.clause,
            cell(&i.topic),
            i.status,
            i.checks.len(),
            facts.join("<br>"),
            cell(&i.limits.join(" "))
        );
    }
}

/// `report.md`.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## ferrocert certify: {} ({} of {} models pass)\n",
        verdict(r.verdict),
        r.summary.models_passed,
        r.summary.models
    );
    let _ = writeln!(s, "| model | verdict | checks | failing conditions |");
    let _ = writeln!(s, "|---|---|---|---|");
    for m in &r.models {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            m.name,
            verdict(m.verdict),
            m.checks.len(),
            m.failures.len()
        );
    }
    for m in &r.models {
        model_section(&mut s, m);
    }
    provenance_section(&mut s, r);
    compliance_section(&mut s, r);
    let _ = writeln!(
        s,
        "\n<sub>ferrocert {} · config `{}` (sha256 `{}`) · report version {}</sub>",
        r.tool.version,
        r.config.path,
        &r.config.sha256[..r.config.sha256.len().min(16)],
        r.report_version
    );
    s
}

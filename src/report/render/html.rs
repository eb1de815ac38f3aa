//! HTML renderer: `report.html`, one self-contained page (inline CSS and SVG, no script, no
//! network access). Per model: the verdict and why, the checks, and plots: certified
//! accuracy and accuracy under attack against the L-inf radius, the CROWN margin bounds per
//! input, smoothed certified accuracy against the L2 radius, the trigger masks with their
//! norms, and the certified patch bounds against the best stamps found.

use super::svg::{self, Series, esc};
use crate::report::model::{Evidence, ModelReport, Outcome, Report};
use std::fmt::Write as _;

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;color:#222;line-height:1.4}\
h1{font-size:22px}h2{font-size:19px;margin-top:34px;border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}\
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f5f5f5}\
.pass{color:#0a7a2f;font-weight:700}.fail{color:#c01c28;font-weight:700}.unknown{color:#b36b00;font-weight:700}.error{color:#c01c28;font-weight:700}.info{color:#555}\
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:700}.badge.pass{background:#0a7a2f;color:#fff}.badge.fail{background:#c01c28;color:#fff}\
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots svg{border:1px solid #eee}.masks{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-end}\
code{font-size:12px;background:#f6f6f6;padding:1px 3px}ul{margin:4px 0}small{color:#666}";

fn badge(o: Outcome) -> String {
    format!(r#"<span class="badge {0}">{0}</span>"#, o.name())
}

fn outcome(o: Outcome) -> String {
    format!(r#"<span class="{0}">{0}</span>"#, o.name())
}

fn plots(s: &mut String, m: &ModelReport) {
    let mut charts = Vec::new();
    // Robustness against the L-inf radius, and the margin bounds per input.
    let mut rob: Vec<_> = m
        .checks
        .iter()
        .filter_map(|c| match &c.evidence {
            Evidence::Robustness(e) => Some(e),
            _ => None,
        })
        .collect();
    rob.sort_by(|a, b| {
        let ra = a.per_radius.first().map_or(0.0, |r| r.radius);
        let rb = b.per_radius.first().map_or(0.0, |r| r.radius);
        ra.total_cmp(&rb)
    });
    if !rob.is_empty() {
        let pts = |f: &dyn Fn(&crate::report::model::RadiusRobustness) -> f64| -> Vec<(f64, f64)> {
            rob.iter()
                .filter_map(|e| e.per_radius.first())
                .map(|r| (r.radius, f(r)))
                .collect()
        };
        charts.push(svg::line_chart(
            "L-inf robustness",
            "L-inf radius",
            "accuracy",
            &[
                Series {
                    name: "certified accuracy (proved lower bound)".into(),
                    color: "#0a7a2f",
                    points: pts(&|r| r.certified_accuracy),
                    dashed: false,
                },
                Series {
                    name: "accuracy under attack (upper bound)".into(),
                    color: "#c01c28",
                    points: pts(&|r| r.accuracy_under_attack),
                    dashed: true,
                },
            ],
            1.0,
        ));
        let columns: Vec<(String, Vec<(f64, &'static str)>)> = rob
            .iter()
            .map(|e| {
                let r = e.per_radius.first().map_or(0.0, |r| r.radius);
                let pts = e
                    .per_input
                    .iter()
                    .map(|i| {
                        let color = match i.results.first().map(String::as_str) {
                            Some("unsat") => "#0a7a2f",
                            Some("sat") => "#c01c28",
                            _ => "#888",
                        };
                        (
                            i.margin_lower_bound
                                .first()
                                .copied()
                                .flatten()
                                .unwrap_or(f64::NAN),
                            color,
                        )
                    })
                    .collect();
                (format!("r = {r}"), pts)
            })
            .collect();
        charts.push(svg::strip_chart(
            "CROWN bound of the margin per input",
            "margin lower bound",
            &columns,
            &[
                ("verified (unsat)", "#0a7a2f"),
                ("attacked (sat) or misclassified", "#c01c28"),
                ("open", "#888"),
            ],
        ));
    }
    for c in &m.checks {
        if let Evidence::Smoothing(e) = &c.evidence {
            charts.push(svg::line_chart(
                &format!("Randomized smoothing, sigma {}", e.sigma),
                "L2 radius",
                "certified accuracy",
                &[Series {
                    name: format!("certified accuracy (confidence {})", 1.0 - e.alpha),
                    color: "#1c5fc0",
                    points: e
                        .certified_accuracy
                        .iter()
                        .map(|p| (p.radius, p.accuracy))
                        .collect(),
                    dashed: false,
                }],
                1.0,
            ));
        }
        if let Evidence::TriggerScan(e) = &c.evidence {
            let labels: Vec<String> = e.labels.iter().map(|l| l.label.to_string()).collect();
            let l1: Vec<f64> = e.labels.iter().map(|l| l.mask_l1).collect();
            let top = l1.iter().copied().fold(1.0f64, f64::max);
            charts.push(svg::bar_chart(
                "Reverse-engineered trigger size (mask L1) per label",
                "mask L1",
                &labels,
                &[("mask L1", "#1c5fc0", l1)],
                top,
                Some((e.median_mask_l1, "median")),
            ));
        }
        if let Evidence::PatchBound(e) = &c.evidence {
            let labels: Vec<String> = e.targets.iter().map(|t| t.target.to_string()).collect();
            charts.push(svg::bar_chart(
                &format!(
                    "{k} x {k} patch stamps: attack success rate per target",
                    k = e.summary.k
                ),
                "attack success rate",
                &labels,
                &[
                    (
                        "certified upper bound",
                        "#c01c28",
                        e.targets.iter().map(|t| t.certified_asr_bound).collect(),
                    ),
                    (
                        "best stamp found",
                        "#f0a030",
                        e.targets.iter().map(|t| t.empirical_stamp_asr).collect(),
                    ),
                ],
                1.0,
                None,
            ));
        }
    }
    if !charts.is_empty() {
        s.push_str(r#"<div class="plots">"#);
        for c in charts {
            s.push_str(&c);
        }
        s.push_str("</div>");
    }
    for c in &m.checks {
        if let Evidence::TriggerScan(e) = &c.evidence {
            let _ = write!(
                s,
                "<h3>Trigger masks (white = part of the trigger; flagged labels framed red)</h3><div class=\"masks\">"
            );
            let cell = (64.0 / e.layout.width.max(e.layout.height).max(1) as f64).clamp(2.0, 12.0);
            for (l, mask) in e.labels.iter().zip(&e.masks) {
                let cap = format!("{} ({:.2})", l.label, l.mask_l1);
                s.push_str(&svg::heatmap(mask, e.layout.width, cell, &cap, l.flagged));
            }
            s.push_str("</div>");
        }
    }
}

fn model_section(s: &mut String, m: &ModelReport) {
    let _ = write!(
        s,
        "<h2 id=\"{id}\">{name} {b}</h2><p><code>{p}</code> sha256 <code>{sha}</code> · input {i:?} · output {o:?} · {n} parameters</p>",
        id = esc(&m.name),
        name = esc(&m.name),
        b = badge(m.verdict),
        p = esc(&m.model.path),
        sha = esc(&m.model.sha256),
        i = m.input_shape,
        o = m.output_shape,
        n = m.parameters
    );
    if !m.failures.is_empty() {
        s.push_str("<h3>Why the gate failed</h3><ul>");
        for f in &m.failures {
            let _ = write!(s, "<li class=\"fail\">{}</li>", esc(f));
        }
        s.push_str("</ul>");
    }
    plots(s, m);
    s.push_str("<h3>Checks</h3><table><tr><th>check</th><th>kind</th><th>method</th><th>outcome</th><th>summary</th><th>conditions</th></tr>");
    for c in &m.checks {
        let conds: Vec<String> = c
            .conditions
            .iter()
            .map(|k| {
                format!(
                    "{} [{}]: {}",
                    esc(&k.condition),
                    outcome(k.outcome),
                    esc(&k.detail)
                )
            })
            .collect();
        let _ = write!(
            s,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.id),
            c.kind.name(),
            format!(
                "<span title=\"{}\">{} ({}, {})</span>",
                esc(&c.method.statement),
                c.method_class.name(),
                esc(&c.method.completeness),
                esc(&c.method.arithmetic)
            ),
            outcome(c.outcome),
            esc(&c.summary),
            conds.join("<br>")
        );
    }
    s.push_str("</table><h3>Not covered</h3><ul>");
    for n in &m.not_covered {
        let _ = write!(s, "<li>{}</li>", esc(n));
    }
    s.push_str("</ul>");
}

fn provenance_section(s: &mut String, r: &Report) {
    let p = &r.provenance;
    let _ = write!(
        s,
        "<h2 id=\"provenance\">Provenance</h2><p>ferrocert {} (commit <code>{}</code>) · floating-point mode <code>{}</code> · seed {} · GEMM kernels <code>{}</code> · re-check: <code>{}</code> · run again: <code>{}</code> · machine facts: <code>{}</code></p><table><tr><th>role</th><th>file</th><th>sha256</th></tr>",
        esc(&p.tool_version),
        esc(&p.git_commit),
        esc(&p.fp_mode),
        p.seed,
        esc(&p.gemm_kernel),
        esc(&p.replay_command),
        esc(&p.rerun_command),
        esc(&p.machine_facts)
    );
    for f in &p.inputs {
        let _ = write!(
            s,
            "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
            esc(&f.role),
            esc(&f.path),
            esc(&f.sha256)
        );
    }
    s.push_str("</table>");
}

fn compliance_section(s: &mut String, r: &Report) {
    let c = &r.compliance;
    let _ = write!(
        s,
        "<h2 id=\"compliance\">Compliance mapping</h2><p>{}</p><table><tr><th>framework</th><th>clause</th><th>topic</th><th>this run</th><th>facts</th><th>limits</th></tr>",
        esc(&c.disclaimer)
    );
    for i in &c.items {
        let facts: Vec<String> = i.facts.iter().map(|f| esc(f)).collect();
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ({} checks)</td><td>{}</td><td>{}</td></tr>",
            esc(&i.framework),
            esc(&i.clause),
            esc(&i.topic),
            esc(&i.status),
            i.checks.len(),
            facts.join("<br>"),
            esc(&i.limits.join(" "))
        );
    }
    s.push_str("</table>");
}

/// `report.html`.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ferrocert certify: {v}</title><style>{STYLE}</style></head><body>",
        v = r.verdict.name()
    );
    let _ = write!(
        s,
        "<h1>ferrocert certify {b}</h1><p>{p} of {n} models pass their gate · {c} checks · config <code>{cfg}</code> (sha256 <code>{sha}</code>) · ferrocert {ver}</p>",
        b = badge(r.verdict),
        p = r.summary.models_passed,
        n = r.summary.models,
        c = r.summary.checks,
        cfg = esc(&r.config.path),
        sha = esc(&r.config.sha256),
        ver = esc(&r.tool.version)
    );
    s.push_str(
        "<table><tr><th>model</th><th>verdict</th><th>checks</th><th>failing conditions</th></tr>",
    );
    for m in &r.models {
        let _ = write!(
            s,
            "<tr><td><a href=\"#{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            outcome(m.verdict),
            m.checks.len(),
            m.failures.len(),
            id = esc(&m.name)
        );
    }
    s.push_str("</table>");
    for m in &r.models {
        model_section(&mut s, m);
    }
    provenance_section(&mut s, r);
    compliance_section(&mut s, r);
    s.push_str("<p><small>Proof: sound bound propagation or complete search. Statistical: holds with the stated confidence over the sampling noise. Empirical: found by search; its absence proves nothing.</small></p></body></html>\n");
    s
}

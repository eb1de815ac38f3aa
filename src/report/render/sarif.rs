//! SARIF 2.1.0 renderer (serde-sarif): one rule per check kind, one result per check.
//! Level `error` for a failed check or one that could not run, `warning` for an unknown,
//! `note` for a pass or an ungated check. Locations point at the spec file and the line of
//! its property, or at the model file; `partialFingerprints` hash the model and the property,
//! so the same alert deduplicates across runs.

use crate::onnx::sha256_hex;
use crate::report::model::{Check, CheckKind, Evidence, ModelReport, Outcome, Report};
use serde_sarif::sarif::{
    ArtifactLocation, Location, Message, MultiformatMessageString, PhysicalLocation, PropertyBag,
    Region, ReportingConfiguration, ReportingDescriptor, Result as SResult, ResultKind,
    ResultLevel, Run, Sarif, Tool, ToolComponent,
};
use std::collections::BTreeMap;

/// URI of the SARIF 2.1.0 schema.
pub const SCHEMA_URI: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

fn rule_id(k: CheckKind) -> String {
    format!("ferrocert/{}", k.name())
}

fn rules() -> Vec<ReportingDescriptor> {
    CheckKind::ALL
        .iter()
        .map(|&k| {
            let mut props = BTreeMap::new();
            props.insert(
                "method_class".to_string(),
                serde_json::to_value(k.method_class()).unwrap_or_default(),
            );
            ReportingDescriptor::builder()
                .id(rule_id(k))
                .name(k.name().to_string())
                .short_description(
                    MultiformatMessageString::builder()
                        .text(k.description())
                        .build(),
                )
                .default_configuration(
                    ReportingConfiguration::builder()
                        .level(serde_json::json!("error"))
                        .build(),
                )
                .properties(PropertyBag::builder().additional_properties(props).build())
                .build()
        })
        .collect()
}

/// The property a fingerprint identifies: the spec's content, or the check's id.
fn property_key(c: &Check) -> String {
    match &c.evidence {
        Evidence::Spec(e) => format!("spec:{}", e.spec.sha256),
        _ => c.id.clone(),
    }
}

fn location(m: &ModelReport, c: &Check) -> Location {
    let (uri, line) = match &c.evidence {
        Evidence::Spec(e) => (e.spec.path.clone(), e.property_line),
        _ => (m.model.path.clone(), None),
    };
    let art = ArtifactLocation::builder().uri(uri).build();
    let phys = match line {
        Some(l) => PhysicalLocation::builder()
            .artifact_location(art)
            .region(Region::builder().start_line(l as i64).build())
            .build(),
        None => PhysicalLocation::builder().artifact_location(art).build(),
    };
    Location::builder().physical_location(phys).build()
}

fn result(m: &ModelReport, c: &Check) -> SResult {
    let (level, kind) = match c.outcome {
        Outcome::Fail => (ResultLevel::Error, ResultKind::Fail),
        Outcome::Error => (ResultLevel::Error, ResultKind::Fail),
        Outcome::Unknown => (ResultLevel::Warning, ResultKind::Open),
        Outcome::Pass => (ResultLevel::Note, ResultKind::Pass),
        Outcome::Info => (ResultLevel::Note, ResultKind::Informational),
    };
    let mut text = format!(
        "{} ({}): {} [{}]",
        m.name,
        c.id,
        c.summary,
        c.outcome.name()
    );
    for k in &c.conditions {
        text.push_str("; ");
        text.push_str(&k.line());
    }
    let fp = sha256_hex(format!("{}:{}", m.model.sha256, property_key(c)).as_bytes());
    let mut fps = BTreeMap::new();
    fps.insert("ferrocertProperty/v1".to_string(), fp);
    let rule_index = CheckKind::ALL
        .iter()
        .position(|&k| k == c.kind)
        .unwrap_or(0) as i64;
    SResult::builder()
        .rule_id(rule_id(c.kind))
        .rule_index(rule_index)
        .level(level)
        .kind(kind)
        .message(Message::builder().text(text).build())
        .locations(vec![location(m, c)])
        .partial_fingerprints(fps)
        .build()
}

/// `results.sarif`.
pub fn render(r: &Report) -> String {
    let driver = ToolComponent::builder()
        .name("ferrocert")
        .version(r.tool.version.clone())
        .rules(rules())
        .build();
    let results: Vec<SResult> = r
        .models
        .iter()
        .flat_map(|m| m.checks.iter().map(move |c| result(m, c)))
        .collect();
    // The report's provenance (commit, seed, kernels, every input's hash) travels with the
    // alerts, so a code-scanning view can trace each one to what was checked.
    let mut props = BTreeMap::new();
    props.insert(
        "ferrocert_provenance".to_string(),
        serde_json::to_value(&r.provenance).unwrap_or_default(),
    );
    let run = Run::builder()
        .tool(Tool::builder().driver(driver).build())
        .results(results)
        .properties(PropertyBag::builder().additional_properties(props).build())
        .build();
    let doc = Sarif::builder()
        .schema(SCHEMA_URI)
        .version(serde_json::json!("2.1.0"))
        .runs(vec![run])
        .build();
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

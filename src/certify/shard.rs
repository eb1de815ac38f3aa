//! Scale-out on existing schedulers: `certify --shard K/N` runs a deterministic slice of a
//! configuration's checks, `merge` combines the shards' directories into the report the single
//! run writes, byte for byte.
//!
//! The unit of work is what one check needs: a spec, a robustness radius (all its inputs), a
//! model's smoothing, a model's scan (its trigger search and every patch size, which share one
//! run). Units are ordered by expected cost (their time budget, or a throughput estimate),
//! ties broken by a stable hash of model and check, and each goes to the least-loaded shard:
//! the same slices on every machine, balanced by cost. A check's result depends only on its
//! own unit (every job has its own budget and seed), so the merged checks equal the single
//! run's, and the gate and the report are assembled from them exactly as the single run does.

use super::Timings;
use super::checks::ModelChecks;
use super::config::{self, ConfigError};
use super::plan::{self, ModelPlan, Plan};
use crate::report::model::{Check, FileRef, ModelReport, Report};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use thiserror::Error;

/// The shard file every shard directory carries.
pub const SHARD_FILE: &str = "shard.json";

/// Errors of sharding and merging (exit code 2).
#[derive(Debug, Error)]
pub enum ShardError {
    #[error("--shard {0}: expected K/N with 1 <= K <= N")]
    Spec(String),
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot merge: {0}")]
    Mismatch(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Shard `k` (1-based) of `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub k: usize,
    pub n: usize,
}

impl std::str::FromStr for Shard {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<Self, ShardError> {
        let bad = || ShardError::Spec(s.to_string());
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n): (usize, usize) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if k == 0 || n == 0 || k > n || n > 100_000 {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }
}

/// What a shard directory records of itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardInfo {
    pub shard: Shard,
    /// The configuration every shard of the run must share.
    pub config: FileRef,
    /// The units this shard ran, as `model/unit`.
    pub units: Vec<String>,
}

/// One unit of work.
#[derive(Clone, Debug)]
pub struct Unit {
    pub model: String,
    /// `spec:<path>`, `robustness:linf=<r>`, `smoothing:` or `scan:`.
    pub key: String,
    /// Expected seconds (a budget or an estimate; only the order matters).
    pub cost: f64,
}

impl Unit {
    /// Whether check `id` of this unit's model belongs to it.
    pub fn owns(&self, id: &str) -> bool {
        if self.key.ends_with(':') {
            id.starts_with(&self.key)
        } else {
            id == self.key
        }
    }
}

/// Every unit of a plan, in the plan's order.
pub fn units(plan: &Plan) -> Vec<Unit> {
    let mut v = Vec::new();
    for m in &plan.models {
        let u = |key: String, cost: f64| Unit {
            model: m.name.clone(),
            key,
            cost,
        };
        let items = m.data.as_ref().map_or(0, |d| d.set.items);
        for s in &m.specs {
            v.push(u(format!("spec:{}", s.path.display()), s.timeout_s));
        }
        if let Some(r) = &m.robustness {
            let n = r.count.map_or(items, |c| c.min(items));
            for rad in &r.radii {
                v.push(u(format!("robustness:linf={rad}"), n as f64 * r.timeout_s));
            }
        }
        if let Some(s) = &m.smoothing {
            let n = s.count.map_or(items, |c| c.min(items));
            // About 2 million noisy samples a second.
            v.push(u(
                "smoothing:".into(),
                n as f64 * (s.cfg.n0 + s.cfg.n) as f64 / 2e6,
            ));
        }
        if let Some(s) = &m.scan {
            let n = s.count.map_or(items, |c| c.min(items));
            v.push(u(
                "scan:".into(),
                1.0 + n as f64 * (s.cfg.steps as f64 + 50.0 * s.cfg.patch_sizes.len() as f64) / 1e5,
            ));
        }
    }
    v
}

fn stable_hash(model: &str, key: &str) -> u64 {
    let h = Sha256::digest(format!("{model}\u{0}{key}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_le_bytes(b)
}

/// The shard (0-based) of every unit: largest expected cost first, each to the least-loaded
/// shard (lowest index on ties); equal costs ordered by the stable hash.
pub fn assign(units: &[Unit], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by(|&a, &b| {
        units[b]
            .cost
            .total_cmp(&units[a].cost)
            .then_with(|| {
                stable_hash(&units[a].model, &units[a].key)
                    .cmp(&stable_hash(&units[b].model, &units[b].key))
            })
            .then_with(|| a.cmp(&b))
    });
    let mut load = vec![0.0f64; n.max(1)];
    let mut out = vec![0; units.len()];
    for i in order {
        let s = (0..load.len())
            .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
            .unwrap_or(0);
        load[s] += units[i].cost.max(0.0) + 1e-3;
        out[i] = s;
    }
    out
}

/// Keep only the work of the checks `keep(model, check id)` selects (a model with none goes).
pub fn restrict(plan: &mut Plan, keep: &dyn Fn(&str, &str) -> bool) {
    plan.models
        .retain(|m| canonical_ids(m).iter().any(|id| keep(&m.name, id)));
    for m in &mut plan.models {
        let name = m.name.clone();
        m.specs
            .retain(|s| keep(&name, &format!("spec:{}", s.path.display())));
        if let Some(r) = &mut m.robustness {
            r.radii
                .retain(|rad| keep(&name, &format!("robustness:linf={rad}")));
        }
        if m.robustness.as_ref().is_some_and(|r| r.radii.is_empty()) {
            m.robustness = None;
        }
        let ids = canonical_ids(m);
        if !ids
            .iter()
            .any(|id| id.starts_with("smoothing:") && keep(&name, id))
        {
            m.smoothing = None;
        }
        if !ids
            .iter()
            .any(|id| id.starts_with("scan:") && keep(&name, id))
        {
            m.scan = None;
        }
    }
}

/// The ids of a model's checks in the order the single run reports them.
pub fn canonical_ids(m: &ModelPlan) -> Vec<String> {
    let mut v: Vec<String> = m
        .specs
        .iter()
        .map(|s| format!("spec:{}", s.path.display()))
        .collect();
    if let Some(r) = &m.robustness {
        v.extend(r.radii.iter().map(|rad| format!("robustness:linf={rad}")));
    }
    if let Some(s) = &m.smoothing {
        v.push(format!("smoothing:l2:sigma={}", s.cfg.sigma));
    }
    if let Some(s) = &m.scan {
        v.push("scan:triggers".into());
        v.extend(
            s.cfg
                .patch_sizes
                .iter()
                .map(|k| format!("scan:patch:k={k}")),
        );
    }
    v
}

/// Restrict `plan` to shard `s` and describe it.
pub fn slice(plan: &mut Plan, s: Shard) -> ShardInfo {
    let us = units(plan);
    let owner = assign(&us, s.n);
    let mine: Vec<Unit> = us
        .into_iter()
        .zip(owner)
        .filter(|(_, o)| *o == s.k - 1)
        .map(|(u, _)| u)
        .collect();
    restrict(plan, &|model, id| {
        mine.iter().any(|u| u.model == model && u.owns(id))
    });
    ShardInfo {
        shard: s,
        config: plan.config.clone(),
        units: mine
            .iter()
            .map(|u| format!("{}/{}", u.model, u.key))
            .collect(),
    }
}

/// What merging reads of a shard's `report.json`.
#[derive(Deserialize)]
struct Recorded {
    config: FileRef,
    models: Vec<ModelReport>,
}

#[derive(Deserialize)]
struct RecordedTimings {
    #[serde(default)]
    started_unix_s: f64,
    #[serde(default)]
    total_s: f64,
    #[serde(default)]
    models: Vec<RecordedModelTimings>,
}

#[derive(Deserialize)]
struct RecordedModelTimings {
    name: String,
    checks: std::collections::BTreeMap<String, f64>,
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<T, ShardError> {
    let bad = |m: String| ShardError::Read {
        path: p.display().to_string(),
        message: m,
    };
    let text = std::fs::read_to_string(p).map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
}

/// Merge the shard directories `dirs` (every shard of one run, each once) into the report
/// and timings of the single run.
pub fn merge(dirs: &[&Path], jobs: usize) -> Result<(Report, Timings), ShardError> {
    let mut infos = Vec::new();
    let mut checks: Vec<(String, Check)> = Vec::new();
    let mut seconds: std::collections::BTreeMap<(String, String), f64> = Default::default();
    let (mut started, mut total) = (f64::INFINITY, 0.0f64);
    for d in dirs {
        let info: ShardInfo = read_json(&d.join(SHARD_FILE))?;
        let rec: Recorded = read_json(&d.join("report.json"))?;
        if rec.config != info.config {
            return Err(ShardError::Mismatch(format!(
                "{}: report.json and {SHARD_FILE} name different configurations",
                d.display()
            )));
        }
        if let Ok(t) = read_json::<RecordedTimings>(&d.join("timings.json")) {
            started = started.min(t.started_unix_s);
            total = total.max(t.total_s);
            for m in t.models {
                for (id, s) in m.checks {
                    seconds.insert((m.name.clone(), id), s);
                }
            }
        }
        for m in rec.models {
            checks.extend(m.checks.into_iter().map(|c| (m.name.clone(), c)));
        }
        infos.push(info);
    }
    let Some(first) = infos.first() else {
        return Err(ShardError::Mismatch("no shard directory given".into()));
    };
    let n = first.shard.n;
    let mut seen = vec![false; n];
    for i in &infos {
        if i.config != first.config || i.shard.n != n {
            return Err(ShardError::Mismatch(format!(
                "shard {}/{} is of another run (configuration {} {}, {} shards)",
                i.shard.k, i.shard.n, i.config.path, i.config.sha256, i.shard.n
            )));
        }
        if std::mem::replace(&mut seen[i.shard.k - 1], true) {
            return Err(ShardError::Mismatch(format!(
                "shard {}/{n} is given twice",
                i.shard.k
            )));
        }
    }
    let missing: Vec<String> = (0..n)
        .filter(|&k| !seen[k])
        .map(|k| format!("{}/{n}", k + 1))
        .collect();
    if !missing.is_empty() {
        return Err(ShardError::Mismatch(format!(
            "shards {} are missing",
            missing.join(", ")
        )));
    }
    let loaded = config::load(Path::new(&first.config.path))?;
    let plan = plan::prepare(&loaded)?;
    if plan.config != first.config {
        return Err(ShardError::Mismatch(format!(
            "{} changed since the shards ran (its SHA-256 differs)",
            first.config.path
        )));
    }
    let mut results = Vec::new();
    for m in &plan.models {
        let mut out = ModelChecks {
            checks: Vec::new(),
            seconds: Vec::new(),
        };
        for id in canonical_ids(m) {
            let found: Vec<&Check> = checks
                .iter()
                .filter(|(name, c)| *name == m.name && c.id == id)
                .map(|(_, c)| c)
                .collect();
            match found.as_slice() {
                [c] => {
                    out.checks.push((*c).clone());
                    out.seconds.push(
                        seconds
                            .get(&(m.name.clone(), id.clone()))
                            .copied()
                            .unwrap_or(0.0),
                    );
                }
                [] if id.starts_with("scan:patch:")
                    && out.checks.iter().any(|c| {
                        c.id == "scan:triggers"
                            && matches!(c.evidence, crate::report::model::Evidence::Error { .. })
                    }) =>
                {
                    // A scan that could not run reports only its error.
                }
                [] => {
                    return Err(ShardError::Mismatch(format!(
                        "no shard holds check {}/{id}",
                        m.name
                    )));
                }
                _ => {
                    return Err(ShardError::Mismatch(format!(
                        "check {}/{id} is in more than one shard",
                        m.name
                    )));
                }
            }
        }
        results.push(out);
    }
    let started = if started.is_finite() { started } else { 0.0 };
    Ok(super::assemble(&plan, results, started, total, jobs))
}

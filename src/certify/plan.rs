//! Turning a configuration into a plan: every model loaded, every data file read and checked
//! against its model, every spec parsed and checked, every parameter validated, before any
//! analysis runs. Each error names the configuration file and the line of the value at fault
//! (and, for a spec, the spec file).

use super::config::{ConfigError, Gate, Loaded, ModelConfig};
use crate::data::{Dataset, npy};
use crate::network::Network;
use crate::onnx::sha256_file;
use crate::report::model::{DataRef, FileRef};
use crate::scan::{ScanConfig, ScanData};
use crate::smoothing::{Mode, SmoothConfig};
use crate::spec::Spec;
use crate::verify::files;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A validated configuration, ready to run.
pub struct Plan {
    pub config: FileRef,
    /// The configuration with paths resolved and spec globs expanded.
    pub resolved: super::config::Config,
    pub models: Vec<ModelPlan>,
    pub seed: u64,
    pub fp_mode: crate::domain::FpMode,
    pub method: crate::bounds::Method,
}

/// One model's loaded inputs and settings.
pub struct ModelPlan {
    pub name: String,
    pub net: Network,
    pub file: FileRef,
    pub range: (f64, f64),
    pub image_shape: Option<(usize, usize, usize)>,
    pub data: Option<DataPlan>,
    pub specs: Vec<SpecPlan>,
    pub robustness: Option<RobustnessPlan>,
    pub smoothing: Option<SmoothingPlan>,
    pub scan: Option<ScanPlan>,
    pub gate: Gate,
}

/// A checked data set.
pub struct DataPlan {
    pub set: Dataset,
    pub inputs: FileRef,
    pub labels: Option<FileRef>,
    pub scale: f64,
}

impl DataPlan {
    /// The data's first `count` items (all when `None`) and their reference.
    pub fn take(&self, count: Option<usize>) -> (Dataset, DataRef) {
        let mut d = self.set.clone();
        if let Some(c) = count {
            d.truncate(c);
        }
        let r = DataRef {
            inputs: self.inputs.clone(),
            labels: self.labels.clone(),
            scale: self.scale,
            items: d.items,
        };
        (d, r)
    }
}

/// A parsed spec.
pub struct SpecPlan {
    /// The path as resolved (relative to the working directory when the config's was).
    pub path: PathBuf,
    pub file: FileRef,
    pub spec: Spec,
    pub property_line: Option<usize>,
    pub timeout_s: f64,
}

/// L-inf robustness settings.
pub struct RobustnessPlan {
    pub radii: Vec<f64>,
    pub count: Option<usize>,
    pub timeout_s: f64,
}

/// Smoothing settings.
pub struct SmoothingPlan {
    pub cfg: SmoothConfig,
    pub count: Option<usize>,
    /// L2 radii to report (the configured ones and those the gate asks about).
    pub radii: Vec<f64>,
}

/// Scan settings.
pub struct ScanPlan {
    pub cfg: ScanConfig,
    pub count: Option<usize>,
}

fn file_ref(path: &Path) -> Result<FileRef, std::io::Error> {
    Ok(FileRef {
        path: path.display().to_string(),
        sha256: sha256_file(path)?,
    })
}

/// Validate a loaded configuration and load everything it names.
pub fn prepare(l: &Loaded) -> Result<Plan, ConfigError> {
    let cfg = &l.config;
    if cfg.models.is_empty() {
        return Err(l.error_at(0..0, "the configuration lists no [[model]]"));
    }
    let config = file_ref(&l.path).map_err(|source| ConfigError::Io {
        path: l.path.display().to_string(),
        source,
    })?;
    let mut resolved = cfg.clone();
    let mut names = HashSet::new();
    let mut models = Vec::new();
    for (mi, m) in cfg.models.iter().enumerate() {
        if !names.insert(m.name.get_ref().clone()) {
            return Err(l.error_at(
                m.name.span(),
                format!("duplicate model name {:?}", m.name.get_ref()),
            ));
        }
        let plan = prepare_model(l, m, cfg.settings.seed, &mut resolved.models[mi])?;
        models.push(plan);
    }
    Ok(Plan {
        config,
        resolved,
        models,
        seed: cfg.settings.seed,
        fp_mode: cfg.settings.fp_mode,
        method: cfg.settings.method,
    })
}

fn positive(l: &Loaded, v: &Spanned<f64>, what: &str) -> Result<f64, ConfigError> {
    let x = *v.get_ref();
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(l.error_at(
            v.span(),
            format!("{what} must be a positive number, got {x}"),
        ))
    }
}

fn prepare_model(
    l: &Loaded,
    m: &ModelConfig,
    seed: u64,
    resolved: &mut ModelConfig,
) -> Result<ModelPlan, ConfigError> {
    let name = m.name.get_ref().clone();
    let path = l.resolve(m.path.get_ref());
    resolved.path = Spanned::new(m.path.span(), path.display().to_string());
    if !path.is_file() {
        return Err(l.error_at(
            m.path.span(),
            format!("model file {} not found", path.display()),
        ));
    }
    let net = files::load_network(&path).map_err(|e| l.error_at(m.path.span(), e.to_string()))?;
    let file = file_ref(&path).map_err(|e| l.error_at(m.path.span(), e.to_string()))?;
    let [lo, hi] = *m.range.get_ref();
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(l.error_at(
            m.range.span(),
            format!("range must be [lo, hi] with lo < hi, got [{lo}, {hi}]"),
        ));
    }
    let image_shape = match m.image_shape.as_deref() {
        None => None,
        Some([h, w]) => Some((*h, *w, 1)),
        Some([h, w, c]) => Some((*h, *w, *c)),
        Some(other) => {
            return Err(l.error_at(
                m.name.span(),
                format!("model {name}: image_shape must be [H, W] or [H, W, C], got {other:?}"),
            ));
        }
    };
    let gate = m.gate.clone().unwrap_or_else(|| l.config.gate.clone());
    resolved.gate = Some(gate.clone());
    let at_model = |msg: String| l.error_at(m.name.span(), format!("model {name}: {msg}"));

    // Data: read, check against the model and the valid range.
    let data = match &m.data {
        None => None,
        Some(d) => {
            let inputs = l.resolve(d.inputs.get_ref());
            let read = |p: &Path, span| npy::read(p).map_err(|e| l.error_at(span, e.to_string()));
            let x = read(&inputs, d.inputs.span())?;
            let (labels_path, y) = match &d.labels {
                Some(lp) => {
                    let p = l.resolve(lp.get_ref());
                    let y = read(&p, lp.span())?;
                    (Some((p, lp.span())), Some(y))
                }
                None => (None, None),
            };
            let mut set = Dataset::new(
                &x,
                y.as_ref(),
                d.scale,
                net.exec.input_shape(),
                net.exec.output_numel(),
            )
            .map_err(|e| l.error_at(d.inputs.span(), format!("{}: {e}", inputs.display())))?;
            // Without labels the model's own predictions stand in (robustness then measures
            // stability, and accuracies are 1 at radius 0).
            if set.labels.is_none() {
                let pred = crate::scan::predict(&net.exec, &set.x, set.items)
                    .map_err(|e| l.error_at(d.inputs.span(), e.to_string()))?;
                set.labels = Some(pred);
            }
            if let Some((k, &v)) = set
                .x
                .iter()
                .enumerate()
                .find(|(_, v)| !((**v as f64) >= lo && (**v as f64) <= hi))
            {
                return Err(l.error_at(d.inputs.span(), format!(
                    "{}: item {} holds {v} at position {}, outside the model's range [{lo}, {hi}] (set range = [lo, hi])",
                    inputs.display(), k / set.dim, k % set.dim
                )));
            }
            let mut rd = d.clone();
            rd.inputs = Spanned::new(d.inputs.span(), inputs.display().to_string());
            let labels = match &labels_path {
                Some((p, span)) => {
                    rd.labels = Some(Spanned::new(span.clone(), p.display().to_string()));
                    Some(file_ref(p).map_err(|e| l.error_at(span.clone(), e.to_string()))?)
                }
                None => None,
            };
            resolved.data = Some(rd);
            Some(DataPlan {
                inputs: file_ref(&inputs)
                    .map_err(|e| l.error_at(d.inputs.span(), e.to_string()))?,
                labels,
                scale: d.scale,
                set,
            })
        }
    };
    let need_data = |what: &str| -> Result<(), ConfigError> {
        if data.is_none() {
            Err(at_model(format!(
                "[model.{what}] needs a [model.data] table"
            )))
        } else {
            Ok(())
        }
    };

    // Specs: globs expanded (sorted), each parsed and checked against the model.
    let mut specs = Vec::new();
    if let Some(sc) = &m.specs {
        let timeout_s = positive(l, &sc.timeout, "timeout")?;
        let mut resolved_files = Vec::new();
        for f in &sc.files {
            let pattern = l.resolve(f.get_ref());
            let pat = pattern.display().to_string();
            let mut matched: Vec<PathBuf> = glob::glob(&pat)
                .map_err(|e| l.error_at(f.span(), format!("bad pattern {pat}: {e}")))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            matched.sort();
            if matched.is_empty() {
                return Err(l.error_at(f.span(), format!("{pat} matches no file")));
            }
            for p in matched {
                let p = super::config::normalize(&p);
                let spec = files::load_spec_for(&p, &net)
                    .map_err(|e| l.error_at(f.span(), format!("spec {e}")))?;
                let text =
                    std::fs::read_to_string(&p).map_err(|e| l.error_at(f.span(), e.to_string()))?;
                resolved_files.push(Spanned::new(f.span(), p.display().to_string()));
                specs.push(SpecPlan {
                    file: file_ref(&p).map_err(|e| l.error_at(f.span(), e.to_string()))?,
                    property_line: crate::spec::property_line(&text),
                    path: p,
                    spec,
                    timeout_s,
                });
            }
        }
        if let Some(rs) = resolved.specs.as_mut() {
            rs.files = resolved_files;
        }
    }

    let robustness = match &m.robustness {
        None => None,
        Some(r) => {
            need_data("robustness")?;
            let timeout_s = positive(l, &r.timeout, "timeout")?;
            let mut radii = Vec::new();
            for rv in &r.radii {
                let v = *rv.get_ref();
                if !(v.is_finite() && v > 0.0 && v < hi - lo) {
                    return Err(l.error_at(rv.span(), format!(
                        "radius {v} outside the data's range: an L-inf radius must lie in (0, {}) for inputs in [{lo}, {hi}]",
                        hi - lo
                    )));
                }
                radii.push(v);
            }
            if radii.is_empty() {
                return Err(at_model(
                    "[model.robustness] needs at least one radius".into(),
                ));
            }
            Some(RobustnessPlan {
                radii,
                count: r.count,
                timeout_s,
            })
        }
    };

    let smoothing = match &m.smoothing {
        None => None,
        Some(s) => {
            need_data("smoothing")?;
            let cfg = SmoothConfig {
                sigma: *s.sigma.get_ref(),
                n0: s.n0,
                n: s.n,
                alpha: s.alpha,
                batch: 2048,
                seed,
                mode: Mode::Certify,
            };
            cfg.validate()
                .map_err(|e| l.error_at(s.sigma.span(), e.to_string()))?;
            if net.exec.output_numel() < 2 {
                return Err(at_model(
                    "smoothing needs a classifier with at least 2 classes".into(),
                ));
            }
            let mut radii = s.radii.clone();
            radii.extend(gate.smoothing_certified_accuracy.iter().map(|t| t.radius));
            radii.sort_by(f64::total_cmp);
            radii.dedup();
            if let Some(r) = radii.iter().find(|r| !(r.is_finite() && **r >= 0.0)) {
                return Err(at_model(format!("smoothing radius {r} must be >= 0")));
            }
            Some(SmoothingPlan {
                cfg,
                count: s.count,
                radii,
            })
        }
    };

    let scan = match &m.scan {
        None => None,
        Some(s) => {
            need_data("scan")?;
            let cfg = ScanConfig {
                steps: s.steps,
                seed,
                patch_sizes: s.patch.clone(),
                stride: s.stride,
                range: (lo, hi),
                patch_explicit: true,
                ..ScanConfig::default()
            };
            // The scan's own checks (classifier, classes, layout, patch sizes) up front.
            if let Some(d) = &data {
                let (set, _) = d.take(s.count);
                ScanData::new(&net, &set, image_shape, &cfg)
                    .map_err(|e| at_model(e.to_string()))?;
            }
            Some(ScanPlan {
                cfg,
                count: s.count,
            })
        }
    };

    // Every gate condition must have a check to judge.
    for t in &gate.certified_accuracy {
        if !robustness
            .as_ref()
            .is_some_and(|r| r.radii.contains(&t.radius))
        {
            return Err(at_model(format!(
                "the gate asks for certified accuracy at radius {}, which [model.robustness] does not check",
                t.radius
            )));
        }
    }
    for t in &gate.accuracy_under_attack {
        if !robustness
            .as_ref()
            .is_some_and(|r| r.radii.contains(&t.radius))
        {
            return Err(at_model(format!(
                "the gate asks for accuracy under attack at radius {}, which [model.robustness] does not check",
                t.radius
            )));
        }
    }
    if !gate.smoothing_certified_accuracy.is_empty() && smoothing.is_none() {
        return Err(at_model(
            "the gate asks for smoothed certified accuracy but there is no [model.smoothing]"
                .into(),
        ));
    }
    for t in &gate.max_certified_asr {
        if !scan
            .as_ref()
            .is_some_and(|s| s.cfg.patch_sizes.contains(&t.k))
        {
            return Err(at_model(format!(
                "the gate bounds the certified attack success rate for k = {}, which [model.scan] does not bound (patch = [...])",
                t.k
            )));
        }
    }
    for t in gate
        .certified_accuracy
        .iter()
        .chain(&gate.accuracy_under_attack)
        .chain(&gate.smoothing_certified_accuracy)
    {
        if !(0.0..=1.0).contains(&t.min) {
            return Err(at_model(format!(
                "gate threshold min = {} must lie in [0, 1]",
                t.min
            )));
        }
    }
    if let Some(t) = gate
        .max_certified_asr
        .iter()
        .find(|t| !(0.0..=1.0).contains(&t.max))
    {
        return Err(at_model(format!(
            "gate threshold max = {} must lie in [0, 1]",
            t.max
        )));
    }
    Ok(ModelPlan {
        name,
        net,
        file,
        range: (lo, hi),
        image_shape,
        data,
        specs,
        robustness,
        smoothing,
        scan,
        gate,
    })
}

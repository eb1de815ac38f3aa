//! The `certify` configuration (`ferrocert.toml`): what to check per model and the gate.
//!
//! Parsed with serde + toml, every table `deny_unknown_fields`, so a typo is an error with its
//! line and column. Paths are relative to the configuration file; spec globs are expanded and
//! sorted. Values that need a semantic check keep their source span, so a bad radius or a
//! missing model file is reported at its line too. The resolved configuration is echoed into
//! the report.

use crate::bounds::Method;
use crate::domain::FpMode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};
use thiserror::Error;
use toml::Spanned;

/// Errors of the configuration, each naming the file (and line and column where known).
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// Syntax and schema errors: toml's message carries the line, column and source line.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// A value that parsed but cannot be used.
    #[error("{path}:{line}:{col}: {message}")]
    Invalid {
        path: String,
        line: usize,
        col: usize,
        message: String,
    },
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Settings shared by every model.
    #[serde(default)]
    pub settings: Settings,
    /// The gate of every model that has none of its own.
    #[serde(default)]
    pub gate: Gate,
    /// The models to certify, in report order.
    #[serde(rename = "model")]
    pub models: Vec<ModelConfig>,
}

/// Settings shared by every model.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Seed of every randomised step (attacks, smoothing noise, trigger search).
    #[serde(default)]
    pub seed: u64,
    /// Floating-point semantics the proofs cover.
    #[serde(default = "default_fp_mode")]
    pub fp_mode: FpMode,
    /// Strongest bound method of the verifier and the patch bound.
    #[serde(default = "default_method")]
    pub method: Method,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            seed: 0,
            fp_mode: default_fp_mode(),
            method: default_method(),
        }
    }
}

fn default_fp_mode() -> FpMode {
    FpMode::Deployed
}
fn default_method() -> Method {
    Method::AlphaCrown
}

/// One model and its checks.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name in the reports (unique).
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// ONNX file.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// Image layout `[H, W]` or `[H, W, C]` of a flat input (the scan's masks and patches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_shape: Option<Vec<usize>>,
    /// Valid range `[lo, hi]` of every input value (default `[0, 1]`).
    #[serde(default = "default_range")]
    #[schemars(with = "[f64; 2]")]
    pub range: Spanned<[f64; 2]>,
    /// Labelled inputs for robustness, smoothing and the scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specs: Option<SpecsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robustness: Option<RobustnessConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothing: Option<SmoothingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanConfigToml>,
    /// This model's gate (replaces the top-level one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
}

fn default_range() -> Spanned<[f64; 2]> {
    Spanned::new(0..0, [0.0, 1.0])
}

/// A `.npy` data set.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Inputs `[N, ...]`.
    #[schemars(with = "String")]
    pub inputs: Spanned<String>,
    /// Integer labels `[N]` (without them the model's predictions stand in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub labels: Option<Spanned<String>>,
    /// Factor applied to every value first (e.g. 1/255 for u8 images).
    #[serde(default = "one")]
    pub scale: f64,
}

fn one() -> f64 {
    1.0
}

/// VNN-LIB properties; each passes when verified (`unsat`).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecsConfig {
    /// Files or glob patterns; in the resolved configuration, the files they matched.
    #[schemars(with = "Vec<String>")]
    pub files: Vec<Spanned<String>>,
    /// Time budget per property, seconds.
    #[serde(default = "default_spec_timeout")]
    #[schemars(with = "f64")]
    pub timeout: Spanned<f64>,
}

fn default_spec_timeout() -> Spanned<f64> {
    Spanned::new(0..0, 60.0)
}

/// L-inf local robustness of the data's first `count` inputs.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RobustnessConfig {
    /// L-inf radii (in input units; boxes are clipped to the valid range).
    #[schemars(with = "Vec<f64>")]
    pub radii: Vec<Spanned<f64>>,
    /// Inputs checked (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Time budget of the complete verifier per input and radius, seconds.
    #[serde(default = "default_input_timeout")]
    #[schemars(with = "f64")]
    pub timeout: Spanned<f64>,
}

fn default_input_timeout() -> Spanned<f64> {
    Spanned::new(0..0, 10.0)
}

/// Randomized smoothing (Cohen et al. 2019) of the data's first `count` inputs.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmoothingConfig {
    #[schemars(with = "f64")]
    pub sigma: Spanned<f64>,
    #[serde(default = "default_n0")]
    pub n0: u64,
    #[serde(default = "default_n")]
    pub n: u64,
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// L2 radii at which certified accuracy is reported.
    #[serde(default = "default_l2_radii")]
    pub radii: Vec<f64>,
}

fn default_n0() -> u64 {
    100
}
fn default_n() -> u64 {
    10_000
}
fn default_alpha() -> f64 {
    0.001
}
fn default_l2_radii() -> Vec<f64> {
    vec![0.0, 0.25, 0.5, 0.75]
}

/// The backdoor scan (trigger search and certified patch bound).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanConfigToml {
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Patch sizes of the certified bound.
    #[serde(default = "default_patch")]
    pub patch: Vec<usize>,
    #[serde(default = "one_usize")]
    pub stride: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
}

fn default_steps() -> usize {
    600
}
fn default_patch() -> Vec<usize> {
    vec![2]
}
fn one_usize() -> usize {
    1
}

/// A lower threshold at a radius.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AtRadius {
    pub radius: f64,
    pub min: f64,
}

/// An upper threshold on the certified attack success rate of `k x k` stamps.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsrLimit {
    pub k: usize,
    pub max: f64,
}

/// The conditions a model must meet. Fail-safe: an unknown, a timeout or an error fails the
/// gate unless `allow_unknown` / `allow_errors` say otherwise.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// Every spec must be verified (`unsat`).
    #[serde(default = "yes")]
    pub specs_verified: bool,
    /// Certified accuracy (lower bound) at least `min` at `radius`.
    #[serde(default)]
    pub certified_accuracy: Vec<AtRadius>,
    /// Accuracy under attack (upper bound) at least `min` at `radius`.
    #[serde(default)]
    pub accuracy_under_attack: Vec<AtRadius>,
    /// Smoothed certified accuracy at least `min` at L2 `radius`.
    #[serde(default)]
    pub smoothing_certified_accuracy: Vec<AtRadius>,
    /// No label flagged by the trigger search.
    #[serde(default = "yes")]
    pub no_flagged_labels: bool,
    /// `certified_asr_bound` of every target at most `max` for patch size `k`.
    #[serde(default)]
    pub max_certified_asr: Vec<AsrLimit>,
    /// An inconclusive check (unknown, timeout, a threshold between the proved and the
    /// attacked value) does not fail the gate.
    #[serde(default)]
    pub allow_unknown: bool,
    /// A check that could not run does not fail the gate.
    #[serde(default)]
    pub allow_errors: bool,
}

fn yes() -> bool {
    true
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            specs_verified: true,
            certified_accuracy: vec![],
            accuracy_under_attack: vec![],
            smoothing_certified_accuracy: vec![],
            no_flagged_labels: true,
            max_certified_asr: vec![],
            allow_unknown: false,
            allow_errors: false,
        }
    }
}

/// A parsed configuration with its source, for errors at a span.
pub struct Loaded {
    pub path: PathBuf,
    pub text: String,
    pub config: Config,
}

impl Loaded {
    /// `path:line:col: message` at byte span `span` (the file alone when the span is empty,
    /// i.e. a default value).
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, col) = line_col(&self.text, span.start);
        ConfigError::Invalid {
            path: self.path.display().to_string(),
            line,
            col,
            message: message.into(),
        }
    }

    /// A path of the configuration, relative to its folder, lexically normalised.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let base = self.path.parent().unwrap_or(Path::new(""));
        normalize(&base.join(p))
    }
}

/// 1-based line and column of byte offset `at`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(at, |i| at - i - 1) + 1;
    (line, col)
}

/// Remove `.` and `a/..` pairs without touching the file system (paths in reports stay as the
/// user wrote them, relative when they were).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    out.iter().map(|c| c.as_os_str()).collect()
}

/// Read and parse a configuration file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    Ok(Loaded {
        path: path.to_path_buf(),
        text,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_columns_and_normalised_paths() {
        assert_eq!(line_col("ab\ncd\nef", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
        assert_eq!(
            normalize(Path::new("specs/../models/./a.onnx")),
            PathBuf::from("models/a.onnx")
        );
        assert_eq!(normalize(Path::new("../x/../y")), PathBuf::from("../y"));
    }

    #[test]
    fn a_typo_is_an_error_with_its_line() {
        let text = "[[model]]\nname = \"m\"\npath = \"m.onnx\"\nrobustnes = 1\n";
        let e = toml::from_str::<Config>(text).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("robustnes"), "{e}");
    }
}

//! Backdoor scan of a classifier: reverse-engineered triggers with an outlier test (Neural
//! Cleanse, Wang et al. 2019) and a certified bound on what any small patch can achieve.
//!
//! * [`trigger`]: for every label, the smallest mask and pattern that flip the clean inputs to
//!   it (Adam on tanh-parameterised mask and pattern, adaptive L1 weight). *Empirical.*
//! * [`outlier`]: the anomaly index of each label's mask L1 (median absolute deviation); a
//!   label far below the others is flagged. *Empirical.*
//! * [`patch`]: for patch size `k` at every scanned position, CROWN/alpha-CROWN bounds of
//!   `y_c - y_t` over every patch content on the unmodified model, giving a **proved** upper
//!   bound on the attack success rate of any `k x k` stamp there; plus a PGD search for
//!   concrete flipping patches, each re-checked by the concrete evaluator.
//!
//! Everything is deterministic for a given seed: labels, positions and inputs are processed
//! in fixed chunks whose results do not depend on the thread count.

pub mod outlier;
pub mod patch;
pub mod trigger;

use crate::bounds::Method;
use crate::data::{DataError, Dataset};
use crate::eval::{self, EvalError};
use crate::network::Network;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors of the scan (bad parameters, data or model), all exit code 2.
#[derive(Debug, Error)]
pub enum ScanError {
    #[error("invalid parameter: {0}")]
    Parameter(String),
    #[error(
        "the model output has shape {0:?}; the scan needs a classifier with one vector of class scores"
    )]
    NotClassifier(Vec<usize>),
    #[error("the model has {0} classes; the outlier test needs at least 3")]
    TooFewClasses(usize),
    #[error("{0}")]
    Layout(String),
    #[error("patch size {k} does not fit the {h}x{w} image")]
    PatchTooLarge { k: usize, h: usize, w: usize },
    #[error(
        "data item {index} has value {value} at position {position}, outside the valid input range [{lo}, {hi}] (set it with --range LO,HI)"
    )]
    OutOfRange {
        index: usize,
        position: usize,
        value: f64,
        lo: f64,
        hi: f64,
    },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// A checked flipping patch where the bound claimed immunity: a bug, never a result.
    #[error("internal soundness check failed: {0}")]
    Soundness(String),
}

/// Where each pixel position and channel of an image lies in the model's flat input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Layout {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    /// `chw` (channels first, from an `[N, C, H, W]` input), `hwc` (`--image-shape` on a flat
    /// input) or `flat` (no image layout: one mask entry per input element).
    pub order: LayoutOrder,
}

/// Memory order of a [`Layout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LayoutOrder {
    Chw,
    Hwc,
    Flat,
}

impl LayoutOrder {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            LayoutOrder::Chw => "chw",
            LayoutOrder::Hwc => "hwc",
            LayoutOrder::Flat => "flat",
        }
    }
}

impl Layout {
    /// The layout of a model input: `[1, C, H, W]` is an image; otherwise `image_shape`
    /// `(H, W, C)` must give one (its product equal to the input size), or the input is flat.
    pub fn for_input(
        input_shape: &[usize],
        image_shape: Option<(usize, usize, usize)>,
    ) -> Result<Self, ScanError> {
        let numel: usize = input_shape.iter().product();
        if let Some((h, w, c)) = image_shape {
            if h == 0
                || w == 0
                || c == 0
                || h.checked_mul(w).and_then(|p| p.checked_mul(c)) != Some(numel)
            {
                return Err(ScanError::Layout(format!(
                    "--image-shape {h},{w},{c} holds {} values, the model input {input_shape:?} has {numel}",
                    h.saturating_mul(w).saturating_mul(c)
                )));
            }
            // An [N, C, H, W] input keeps its own order; --image-shape must agree with it.
            if let [1, ci, hi, wi] = *input_shape {
                if (ci, hi, wi) != (c, h, w) {
                    return Err(ScanError::Layout(format!(
                        "--image-shape {h},{w},{c} contradicts the model input {input_shape:?} (channels {ci}, height {hi}, width {wi})"
                    )));
                }
                return Ok(Layout::chw(c, h, w));
            }
            return Ok(Layout {
                height: h,
                width: w,
                channels: c,
                order: LayoutOrder::Hwc,
            });
        }
        match *input_shape {
            [1, c, h, w] if c > 0 && h > 0 && w > 0 => Ok(Layout::chw(c, h, w)),
            _ => Ok(Layout {
                height: 1,
                width: numel,
                channels: 1,
                order: LayoutOrder::Flat,
            }),
        }
    }

    fn chw(c: usize, h: usize, w: usize) -> Self {
        Layout {
            height: h,
            width: w,
            channels: c,
            order: LayoutOrder::Chw,
        }
    }

    /// Pixel positions (mask entries).
    pub fn positions(&self) -> usize {
        self.height * self.width
    }

    /// Input elements.
    pub fn numel(&self) -> usize {
        self.positions() * self.channels
    }

    /// Flat input index of channel `c` at pixel position `pos` (`row * width + col`).
    pub fn index(&self, c: usize, pos: usize) -> usize {
        match self.order {
            LayoutOrder::Chw => c * self.positions() + pos,
            LayoutOrder::Hwc | LayoutOrder::Flat => pos * self.channels + c,
        }
    }

    /// The pixel position of flat input index `i`.
    pub fn position_of(&self, i: usize) -> usize {
        match self.order {
            LayoutOrder::Chw => i % self.positions(),
            LayoutOrder::Hwc | LayoutOrder::Flat => i / self.channels,
        }
    }

    /// Whether masks and patches have an image geometry.
    pub fn is_image(&self) -> bool {
        self.order != LayoutOrder::Flat
    }
}

/// Settings of a scan.
#[derive(Clone, Debug, Serialize)]
pub struct ScanConfig {
    /// Adam steps per label of the trigger search.
    pub steps: usize,
    pub seed: u64,
    /// Adam learning rate.
    pub lr: f64,
    /// Initial weight of the mask's L1 norm in the loss.
    pub init_lambda: f64,
    /// The weight is multiplied (success) or divided (failure) by this factor ...
    pub lambda_factor: f64,
    /// ... every this many steps.
    pub lambda_every: usize,
    /// Attack success rate a trigger must reach to count.
    pub target_asr: f64,
    /// Periods of `lambda_every` steps without a 1 % smaller mask after which a label's
    /// search stops (0: run every step).
    pub early_stop_patience: usize,
    /// Anomaly index above which a label (with a mask L1 below the median) is flagged.
    pub anomaly_threshold: f64,
    /// Patch sizes of the certified bound (empty: no patch bound).
    pub patch_sizes: Vec<usize>,
    /// Targets of the patch bound (`None`: every class).
    pub targets: Option<Vec<usize>>,
    /// Step between scanned patch positions (rows and columns).
    pub stride: usize,
    /// Valid range of every input value: the pattern and the patch contents range over it.
    pub range: (f64, f64),
    /// Strongest bound method of the patch bound (CROWN first, alpha-CROWN on what is left).
    pub method: Method,
    /// PGD steps of the search for flipping patches.
    pub patch_attack_steps: usize,
    /// The patch sizes were asked for explicitly: on a flat input without an image layout
    /// that is an error instead of a note in `not_checked`.
    #[serde(skip)]
    pub patch_explicit: bool,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            steps: 600,
            seed: 0,
            lr: 0.1,
            init_lambda: 0.01,
            lambda_factor: 1.5,
            lambda_every: 10,
            target_asr: 0.99,
            early_stop_patience: 10,
            anomaly_threshold: 2.0,
            patch_sizes: vec![2, 3],
            targets: None,
            stride: 1,
            range: (0.0, 1.0),
            method: Method::AlphaCrown,
            patch_attack_steps: 30,
            patch_explicit: false,
        }
    }
}

impl ScanConfig {
    /// Reject parameters the scan is not defined for.
    pub fn validate(&self) -> Result<(), ScanError> {
        let p = |m: String| Err(ScanError::Parameter(m));
        let (lo, hi) = self.range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return p(format!(
                "--range must be two finite numbers LO < HI, got {lo},{hi}"
            ));
        }
        if self.steps == 0 || self.steps > 1_000_000 {
            return p(format!(
                "--steps must lie in 1..=1000000, got {}",
                self.steps
            ));
        }
        if !(self.target_asr > 0.0 && self.target_asr <= 1.0) {
            return p(format!(
                "--target-asr must lie in (0, 1], got {}",
                self.target_asr
            ));
        }
        if !(self.anomaly_threshold.is_finite() && self.anomaly_threshold > 0.0) {
            return p(format!(
                "--anomaly-threshold must be a positive number, got {}",
                self.anomaly_threshold
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return p(format!("learning rate must be positive, got {}", self.lr));
        }
        if !(self.lambda_factor.is_finite() && self.lambda_factor >= 1.0) || self.lambda_every == 0
        {
            return p("the lambda schedule needs a factor >= 1 and a period >= 1".into());
        }
        if self.stride == 0 {
            return p("--stride must be at least 1".into());
        }
        if self.patch_sizes.contains(&0) {
            return p("--patch sizes must be at least 1".into());
        }
        Ok(())
    }
}

/// The checked inputs of a scan: data, labels (given, or the model's own predictions) and the
/// model's predictions in float32 as deployed.
pub struct ScanData<'a> {
    pub net: &'a Network,
    pub layout: Layout,
    pub data: &'a Dataset,
    pub classes: usize,
    /// Label of each item: the given label, or the prediction when no labels were given.
    pub labels: Vec<usize>,
    /// Deployed float32 prediction of each clean item.
    pub predictions: Vec<usize>,
}

/// Index of the largest score (the first on ties, like `argmax`).
pub fn argmax<T: PartialOrd + Copy>(y: &[T]) -> usize {
    let mut best = 0;
    for (j, &v) in y.iter().enumerate() {
        if v > y[best] {
            best = j;
        }
    }
    best
}

impl<'a> ScanData<'a> {
    /// Check the model (a classifier with at least 3 classes), the data's range and the image
    /// layout, and evaluate the clean predictions.
    pub fn new(
        net: &'a Network,
        data: &'a Dataset,
        image_shape: Option<(usize, usize, usize)>,
        cfg: &ScanConfig,
    ) -> Result<Self, ScanError> {
        cfg.validate()?;
        let out_shape = net.exec.output_shape().to_vec();
        if out_shape.iter().filter(|&&d| d != 1).count() > 1 {
            return Err(ScanError::NotClassifier(out_shape));
        }
        let classes = net.exec.output_numel();
        if classes < 3 {
            return Err(ScanError::TooFewClasses(classes));
        }
        if data.dim != net.exec.input_numel() {
            return Err(DataError::Shape {
                shape: vec![data.items, data.dim],
                input: net.exec.input_shape().to_vec(),
                expected: net.exec.input_numel(),
            }
            .into());
        }
        let layout = Layout::for_input(net.exec.input_shape(), image_shape)?;
        if !cfg.patch_sizes.is_empty() && !layout.is_image() && cfg.patch_explicit {
            return Err(ScanError::Layout(format!(
                "the certified patch bound needs an image layout, and the model input {:?} is flat: give it with --image-shape H,W[,C]",
                net.exec.input_shape()
            )));
        }
        if layout.is_image() {
            if let Some(&k) = cfg
                .patch_sizes
                .iter()
                .find(|&&k| k > layout.height || k > layout.width)
            {
                return Err(ScanError::PatchTooLarge {
                    k,
                    h: layout.height,
                    w: layout.width,
                });
            }
            // Refuse a patch bound that would not fit before the trigger search runs.
            for &k in &cfg.patch_sizes {
                let pos = patch::positions(&layout, k, cfg.stride).len();
                let rows = data.items.saturating_mul(pos).saturating_mul(classes);
                if rows > MAX_PATCH_ROWS {
                    return Err(ScanError::Parameter(format!(
                        "the patch bound for k = {k} would need {rows} bound rows ({} inputs x {pos} positions x {classes} classes, limit {MAX_PATCH_ROWS}); use --stride, --count or fewer --patch sizes",
                        data.items
                    )));
                }
            }
        }
        let (lo, hi) = cfg.range;
        for (k, &v) in data.x.iter().enumerate() {
            let v = v as f64;
            if v < lo || v > hi {
                return Err(ScanError::OutOfRange {
                    index: k / data.dim,
                    position: k % data.dim,
                    value: v,
                    lo,
                    hi,
                });
            }
        }
        if let Some(&t) = cfg.targets.iter().flatten().find(|&&t| t >= classes) {
            return Err(ScanError::Parameter(format!(
                "--target {t} is not a class of this model (0..{classes})"
            )));
        }
        let predictions = predict(&net.exec, &data.x, data.items)?;
        let labels = data.labels.clone().unwrap_or_else(|| predictions.clone());
        Ok(ScanData {
            net,
            layout,
            data,
            classes,
            labels,
            predictions,
        })
    }

    /// Fraction of items whose deployed prediction equals the label.
    pub fn clean_accuracy(&self) -> f64 {
        let ok = self
            .labels
            .iter()
            .zip(&self.predictions)
            .filter(|(a, b)| a == b)
            .count();
        ok as f64 / self.data.items.max(1) as f64
    }
}

/// Items per forward pass of the concrete evaluator.
const EVAL_CHUNK: usize = 512;

/// Bytes of activations one forward-and-backward pass of the searches may keep.
const PASS_BUDGET: usize = 256 << 20;

/// Items per forward-and-backward pass of `g` (at most `n`): as many as keep every value of
/// the graph (in float32, plus its gradient) within [`PASS_BUDGET`], at most 512, at least 1.
/// Fixed by the graph and `n` alone, so results do not depend on the machine.
pub fn items_per_pass(g: &crate::ir::Graph, n: usize) -> usize {
    let per_item: usize = g.values.iter().map(|v| v.numel()).sum::<usize>().max(1) * 8;
    (PASS_BUDGET / per_item).clamp(1, 512).min(n.max(1))
}

/// Upper limit on bound rows (inputs x positions x classes) of one patch size: the lower
/// bounds alone take 8 bytes each.
pub const MAX_PATCH_ROWS: usize = 1 << 27;

/// Deployed float32 predictions of `n` items.
pub fn predict(g: &crate::ir::Graph, x: &[f32], n: usize) -> Result<Vec<usize>, ScanError> {
    let classes = g.output_numel();
    let y = eval::forward_par::<f32>(g, x, n, EVAL_CHUNK)?;
    Ok(y.par_chunks(classes.max(1)).map(argmax).collect())
}

/// Everything a scan found, ready to serialise.
#[derive(Clone, Debug, Serialize)]
pub struct ScanResult {
    pub layout: Layout,
    pub inputs: usize,
    pub classes: usize,
    /// Deployed accuracy on the clean inputs (against the labels, or 1 without labels).
    pub clean_accuracy: f64,
    pub labels: Vec<LabelResult>,
    pub flagged_labels: Vec<usize>,
    pub median_mask_l1: f64,
    pub mad_mask_l1: f64,
    pub patch: Vec<patch::PatchEntry>,
    pub patch_summary: Vec<patch::PatchSummary>,
    /// What was not checked (e.g. the patch bound without an image layout).
    pub not_checked: Vec<String>,
}

/// Per-label outcome of the trigger search and the outlier test.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct LabelResult {
    pub label: usize,
    /// L1 norm of the smallest mask that reached the target attack success rate (of the last
    /// mask when none did).
    pub mask_l1: f64,
    /// Success rate of the recovered trigger on all clean inputs, deployed float32 evaluation.
    pub attack_success_rate: f64,
    pub anomaly_index: f64,
    pub flagged: bool,
    /// Whether the search reached the target attack success rate.
    pub reached_target_asr: bool,
    /// Adam steps the search ran for this label.
    pub steps: usize,
    /// The mask's largest entries (up to 8), largest first: where the trigger sits.
    pub mask_top: Vec<MaskEntry>,
    /// The recovered mask, one value per pixel position (row-major), and the pattern in the
    /// model's input layout.
    #[serde(skip)]
    pub trigger: trigger::Trigger,
}

/// One mask entry at a pixel position.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct MaskEntry {
    pub row: usize,
    pub col: usize,
    pub value: f32,
}

/// The `n` largest mask entries, largest first (ties by position).
pub fn mask_top(layout: &Layout, mask: &[f32], n: usize) -> Vec<MaskEntry> {
    let mut order: Vec<usize> = (0..mask.len()).collect();
    order.sort_by(|&a, &b| mask[b].total_cmp(&mask[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(n)
        .map(|p| MaskEntry {
            row: p / layout.width,
            col: p % layout.width,
            value: mask[p],
        })
        .collect()
}

pub use crate::progress::{NoProgress, Progress};

/// Run the trigger search on every label, the outlier test, and the patch bound for every
/// configured size (on the current rayon pool).
pub fn scan(
    d: &ScanData,
    cfg: &ScanConfig,
    progress: &dyn Progress,
) -> Result<ScanResult, ScanError> {
    progress.stage("trigger search", (d.classes * cfg.steps) as u64);
    let triggers: Vec<trigger::Trigger> = (0..d.classes)
        .into_par_iter()
        .map(|t| trigger::reverse_engineer(d, t, cfg, progress))
        .collect::<Result<_, _>>()?;
    let l1: Vec<f64> = triggers.iter().map(|t| t.mask_l1).collect();
    let out = outlier::test(&l1, cfg.anomaly_threshold);
    let labels: Vec<LabelResult> = triggers
        .into_iter()
        .enumerate()
        .map(|(t, tr)| LabelResult {
            label: t,
            mask_l1: tr.mask_l1,
            attack_success_rate: tr.attack_success_rate,
            anomaly_index: out.index[t],
            flagged: out.flagged[t],
            reached_target_asr: tr.reached,
            steps: tr.steps,
            mask_top: mask_top(&d.layout, &tr.mask, 8),
            trigger: tr,
        })
        .collect();
    let flagged_labels = (0..d.classes).filter(|&t| out.flagged[t]).collect();
    let mut not_checked = Vec::new();
    let (mut entries, mut summaries) = (Vec::new(), Vec::new());
    if !cfg.patch_sizes.is_empty() {
        if d.layout.is_image() {
            for &k in &cfg.patch_sizes {
                let (e, s) = patch::certify(d, k, cfg, progress)?;
                entries.extend(e);
                summaries.push(s);
            }
        } else {
            not_checked.push(
                "certified patch bound: the input is flat; give its image layout with --image-shape H,W[,C]".into(),
            );
        }
    }
    Ok(ScanResult {
        layout: d.layout.clone(),
        inputs: d.data.items,
        classes: d.classes,
        clean_accuracy: d.clean_accuracy(),
        labels,
        flagged_labels,
        median_mask_l1: out.median,
        mad_mask_l1: out.mad,
        patch: entries,
        patch_summary: summaries,
        not_checked,
    })
}

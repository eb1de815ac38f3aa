//! Randomized smoothing: certified L2 robustness radii by Monte Carlo (Cohen et al. 2019).
//!
//! Gaussian noise `N(0, sigma^2 I)` is added in the model's input space (no clipping) and the
//! noisy inputs go through the concrete evaluator in float32, many samples per matrix product.
//! Noise comes in fixed blocks of [`NOISE_BLOCK`] samples; block `b` of phase `p` (selection or
//! estimation) for input `i` has its own generator stream keyed by `(seed, i, p, b)`, and each
//! sample's class depends only on its own row of the batch, so the counts do not depend on the
//! batch size or the number of threads.

pub mod rng;
pub mod stats;

pub use crate::data::{DataError, Dataset};
use crate::eval::{self, EvalError};
use crate::ir::Graph;
use rayon::prelude::*;
use rng::{WyRand, Ziggurat};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Samples per noise stream block.
pub const NOISE_BLOCK: usize = 256;

/// Errors of the smoothing layer (bad parameters or data).
#[derive(Debug, Error)]
pub enum SmoothError {
    #[error("invalid parameter: {0}")]
    Parameter(String),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("the model has {0} output(s); smoothing needs a classifier with at least 2 classes")]
    NotClassifier(usize),
    #[error(transparent)]
    Eval(#[from] EvalError),
}

/// CERTIFY (radius) or PREDICT (hypothesis test) mode.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Certify,
    Predict,
}

/// Parameters of a smoothing run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SmoothConfig {
    pub sigma: f64,
    pub n0: u64,
    pub n: u64,
    pub alpha: f64,
    /// Samples per forward pass (rounded up to whole noise blocks); does not change results.
    #[serde(skip)]
    pub batch: usize,
    pub seed: u64,
    pub mode: Mode,
}

impl SmoothConfig {
    /// Reject parameters the statistics are not defined for.
    pub fn validate(&self) -> Result<(), SmoothError> {
        let p = |m: String| Err(SmoothError::Parameter(m));
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return p(format!(
                "--sigma must be a positive finite number, got {}",
                self.sigma
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return p(format!("--alpha must lie in (0, 1), got {}", self.alpha));
        }
        if self.n == 0 {
            return p("--n must be at least 1".into());
        }
        if self.mode == Mode::Certify && self.n0 == 0 {
            return p("--n0 must be at least 1".into());
        }
        if self.n0 > self.n {
            return p(format!(
                "--n0 ({}) must not exceed --n ({})",
                self.n0, self.n
            ));
        }
        // A count of samples per input beyond 2^40 would take days; refuse it as a typo.
        if self.n > 1 << 40 {
            return p(format!("--n {} is absurdly large (limit 2^40)", self.n));
        }
        if self.batch == 0 {
            return p("--batch must be at least 1".into());
        }
        Ok(())
    }
}

/// Outcome for one input.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct InputResult {
    pub index: usize,
    /// Predicted class, `None` when abstaining.
    pub prediction: Option<usize>,
    /// Count of the selected class among the `n` estimation samples.
    pub n_a: u64,
    /// Clopper-Pearson lower bound of the selected class's probability (certify mode).
    pub p_a_lower: Option<f64>,
    /// Certified L2 radius, `None` when abstaining (certify mode).
    pub radius: Option<f64>,
    /// Two-sided binomial test p-value of the top two classes (predict mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The label, when labels are given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<usize>,
    /// Whether the prediction equals the label (when labels are given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
}

/// Class counts of `n` noisy copies of `x` (phase `phase`, input `index`); `progress` is told
/// how many samples each finished forward pass covered.
#[allow(clippy::too_many_arguments)]
pub fn sample_counts(
    g: &Graph,
    zig: &Ziggurat,
    x: &[f32],
    n: u64,
    index: usize,
    phase: u64,
    cfg: &SmoothConfig,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<u64>, SmoothError> {
    let d = x.len();
    let classes = g.output_numel();
    let n = n as usize;
    let blocks = n.div_ceil(NOISE_BLOCK);
    let per_batch = cfg.batch.div_ceil(NOISE_BLOCK).max(1);
    let sigma = cfg.sigma as f32;
    let groups: Vec<(usize, usize)> = (0..blocks)
        .step_by(per_batch)
        .map(|b| (b, (b + per_batch).min(blocks)))
        .collect();
    groups
        .par_iter()
        .map(|&(b0, b1)| {
            let first = b0 * NOISE_BLOCK;
            let count = (b1 * NOISE_BLOCK).min(n) - first;
            let mut buf = vec![0f32; count * d];
            for b in b0..b1 {
                let start = (b * NOISE_BLOCK - first) * d;
                let len = NOISE_BLOCK.min(n - b * NOISE_BLOCK) * d;
                let mut rng = WyRand::stream(cfg.seed, index as u64, phase, b as u64);
                zig.fill(&mut rng, sigma, &mut buf[start..start + len]);
            }
            for row in buf.chunks_exact_mut(d.max(1)) {
                for (v, &xi) in row.iter_mut().zip(x) {
                    *v += xi;
                }
            }
            let y = eval::forward::<f32>(g, &buf, count)?;
            let mut counts = vec![0u64; classes];
            for row in y.chunks_exact(classes) {
                counts[argmax(row)] += 1;
            }
            progress(count as u64);
            Ok(counts)
        })
        .try_reduce(
            || vec![0u64; classes],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                Ok(a)
            },
        )
}

/// Index of the largest value, the first one on ties (as numpy's argmax); NaN counts as largest.
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if v[best].is_nan() {
            break;
        }
        if x > v[best] || x.is_nan() {
            best = i;
        }
    }
    best
}

/// Class with the highest count (lowest index on ties), its count and the runner-up's count.
fn top_two(counts: &[u64]) -> (usize, u64, u64) {
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
    let a = order.first().copied().unwrap_or(0);
    let second = order.get(1).map_or(0, |&i| counts[i]);
    (a, counts.get(a).copied().unwrap_or(0), second)
}

/// CERTIFY or PREDICT one input.
pub fn smooth_one(
    g: &Graph,
    zig: &Ziggurat,
    x: &[f32],
    index: usize,
    label: Option<usize>,
    cfg: &SmoothConfig,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<InputResult, SmoothError> {
    let mut r = InputResult {
        index,
        prediction: None,
        n_a: 0,
        p_a_lower: None,
        radius: None,
        p_value: None,
        label,
        correct: None,
    };
    match cfg.mode {
        Mode::Certify => {
            let sel = sample_counts(g, zig, x, cfg.n0, index, 0, cfg, progress)?;
            let (c_a, _, _) = top_two(&sel);
            let est = sample_counts(g, zig, x, cfg.n, index, 1, cfg, progress)?;
            r.n_a = est[c_a];
            let p = stats::clopper_pearson_lower(r.n_a, cfg.n, cfg.alpha);
            r.p_a_lower = Some(p);
            if p >= 0.5 {
                r.prediction = Some(c_a);
                r.radius = Some(cfg.sigma * stats::normal_quantile(p));
            }
        }
        Mode::Predict => {
            let counts = sample_counts(g, zig, x, cfg.n, index, 1, cfg, progress)?;
            let (c_a, n_a, n_b) = top_two(&counts);
            let pv = stats::binom_test_half(n_a, n_a + n_b);
            r.n_a = n_a;
            r.p_value = Some(pv);
            r.prediction = (pv <= cfg.alpha).then_some(c_a);
        }
    }
    if let Some(l) = label {
        r.correct = Some(r.prediction == Some(l));
    }
    Ok(r)
}

/// Smooth every item of `data` in input order; items and sample batches run in parallel on
/// the current rayon pool.
pub fn smooth_dataset(
    g: &Graph,
    data: &Dataset,
    cfg: &SmoothConfig,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<InputResult>, SmoothError> {
    cfg.validate()?;
    let classes = g.output_numel();
    if classes < 2 {
        return Err(SmoothError::NotClassifier(classes));
    }
    if data.dim != g.input_numel() {
        return Err(DataError::Shape {
            shape: vec![data.items, data.dim],
            input: g.input_shape().to_vec(),
            expected: g.input_numel(),
        }
        .into());
    }
    let zig = Ziggurat::new();
    (0..data.items)
        .into_par_iter()
        .map(|i| {
            let label = data.labels.as_ref().map(|l| l[i]);
            smooth_one(g, &zig, data.item(i), i, label, cfg, progress)
        })
        .collect()
}

/// Aggregate figures of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub inputs: usize,
    /// Fraction of inputs the smoothed classifier gets right (abstaining counts as wrong).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_accuracy: Option<f64>,
    /// Fraction of inputs predicted correctly with a certified radius of at least `radius`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certified_accuracy: Vec<RadiusAccuracy>,
    pub abstain_rate: f64,
    /// Mean certified radius over the correctly predicted inputs (certify mode, labels given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_radius_correct: Option<f64>,
    /// Mean certified radius over the non-abstaining inputs (certify mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_radius: Option<f64>,
}

/// One point of the certified-accuracy curve.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RadiusAccuracy {
    pub radius: f64,
    pub accuracy: f64,
}

/// Summarise results (labels needed for accuracies): certified accuracy at radii 0, 0.25,
/// 0.5, ... up to the largest radius reached (at least 1.0).
pub fn summarize(results: &[InputResult], mode: Mode) -> Summary {
    let n = results.len().max(1) as f64;
    let labelled = !results.is_empty() && results.iter().all(|r| r.correct.is_some());
    let abstain_rate = results.iter().filter(|r| r.prediction.is_none()).count() as f64 / n;
    let correct: Vec<&InputResult> = results.iter().filter(|r| r.correct == Some(true)).collect();
    let clean_accuracy = labelled.then(|| correct.len() as f64 / n);
    let mut certified_accuracy = Vec::new();
    let mut mean_radius_correct = None;
    let mut mean_radius = None;
    if mode == Mode::Certify {
        let radii: Vec<f64> = results.iter().filter_map(|r| r.radius).collect();
        if !radii.is_empty() {
            mean_radius = Some(radii.iter().sum::<f64>() / radii.len() as f64);
        }
        if labelled {
            let max_r = correct.iter().filter_map(|r| r.radius).fold(0.0, f64::max);
            let top = ((max_r / 0.25).floor() as usize).max(4);
            for k in 0..=top {
                let radius = k as f64 * 0.25;
                let c = correct
                    .iter()
                    .filter(|r| r.radius.is_some_and(|x| x >= radius))
                    .count();
                certified_accuracy.push(RadiusAccuracy {
                    radius,
                    accuracy: c as f64 / n,
                });
            }
            if !correct.is_empty() {
                mean_radius_correct = Some(
                    correct.iter().filter_map(|r| r.radius).sum::<f64>() / correct.len() as f64,
                );
            }
        }
    }
    Summary {
        inputs: results.len(),
        clean_accuracy,
        certified_accuracy,
        abstain_rate,
        mean_radius_correct,
        mean_radius,
    }
}

//! `ferrocert smooth`: randomized-smoothing certification of every item of a `.npy` data set.

use super::{Error, file_sha as sha, load_network, read_npy};
use crate::report::Header;
use crate::smoothing::{self, Dataset, Mode, SmoothConfig, SmoothError};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `ferrocert smooth`.
#[derive(clap::Args, Debug)]
pub struct SmoothArgs {
    /// ONNX classifier (one output vector of class scores).
    pub model: PathBuf,
    /// Inputs as a `.npy` array of shape [N, ...] (f32, f64 or integer dtypes), N items each
    /// holding as many values as the model input.
    #[arg(long)]
    pub data: PathBuf,
    /// Labels as a `.npy` integer array of shape [N]; enables accuracies in the summary.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Standard deviation of the Gaussian noise, in the model's input space.
    #[arg(long)]
    pub sigma: f64,
    /// Selection samples (CERTIFY guesses the class from these).
    #[arg(long, default_value_t = 100)]
    pub n0: u64,
    /// Estimation samples per input.
    #[arg(long, default_value_t = 100_000)]
    pub n: u64,
    /// Failure probability of the certificate (CERTIFY) or level of the test (PREDICT).
    #[arg(long, default_value_t = 0.001)]
    pub alpha: f64,
    /// Noisy samples per forward pass (does not change the results).
    #[arg(long, default_value_t = 2048)]
    pub batch: usize,
    /// Random seed; the noise of input i depends only on (seed, i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CERTIFY: prediction with a certified L2 radius; PREDICT: prediction by a binomial test.
    #[arg(long, value_enum, default_value = "certify")]
    pub mode: Mode,
    /// Multiply every data value by this factor first (e.g. 0.00392156862745098 = 1/255 for u8
    /// images stored as 0..255).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Smooth only the first COUNT items.
    #[arg(long)]
    pub count: Option<usize>,
    /// Worker threads (default: number of CPUs; does not change the results).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn smooth_err(e: SmoothError) -> Error {
    Error::Usage(e.to_string())
}

/// What `smooth --json` prints.
#[derive(Serialize)]
struct SmoothDocument<'a> {
    #[serde(flatten)]
    header: Header,
    model: String,
    model_sha256: String,
    data: String,
    data_sha256: String,
    labels: Option<String>,
    labels_sha256: Option<String>,
    parameters: SmoothParameters,
    results: &'a [smoothing::InputResult],
    summary: SummaryDocument<'a>,
}

/// The parameters echoed in `smooth --json`.
#[derive(Serialize)]
struct SmoothParameters {
    sigma: f64,
    n0: u64,
    n: u64,
    alpha: f64,
    seed: u64,
    mode: Mode,
    scale: f64,
    count: usize,
    noise: &'static str,
}

/// The summary with the certified accuracy also keyed by radius.
#[derive(Serialize)]
struct SummaryDocument<'a> {
    #[serde(flatten)]
    summary: &'a smoothing::Summary,
    certified_accuracy_at_radius: std::collections::BTreeMap<String, f64>,
}

/// Run `smooth`.
pub fn smooth(a: &SmoothArgs, out: &mut dyn Write) -> Result<i32, Error> {
    let cfg = SmoothConfig {
        sigma: a.sigma,
        n0: a.n0,
        n: a.n,
        alpha: a.alpha,
        batch: a.batch,
        seed: a.seed,
        mode: a.mode,
    };
    // Parameters first: a typo must not wait for a model to load.
    cfg.validate().map_err(smooth_err)?;
    if a.jobs == Some(0) {
        return Err(Error::Usage("--jobs must be at least 1".into()));
    }
    let net = load_network(&a.model)?;
    let g = &net.exec;
    let data = read_npy(&a.data)?;
    let labels = a.labels.as_deref().map(read_npy).transpose()?;
    let mut ds = Dataset::new(
        &data,
        labels.as_ref(),
        a.scale,
        g.input_shape(),
        g.output_numel(),
    )
    .map_err(|e| Error::Usage(format!("{}: {e}", a.data.display())))?;
    if let Some(c) = a.count {
        ds.truncate(c);
    }
    if data.integer && a.scale == 1.0 {
        eprintln!(
            "note: {} holds integers ({}) used as they are; pass --scale for 0..255 images",
            a.data.display(),
            data.dtype
        );
    }
    let per_item = if a.mode == Mode::Certify {
        a.n0 + a.n
    } else {
        a.n
    };
    let total = per_item.saturating_mul(ds.items as u64);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {percent}% {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let jobs = a.jobs.unwrap_or_else(rayon::current_num_threads).max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| Error::Io(format!("thread pool: {e}")))?;
    let start = Instant::now();
    let progress = |k: u64| bar.inc(k);
    let results = pool
        .install(|| smoothing::smooth_dataset(g, &ds, &cfg, &progress))
        .map_err(smooth_err)?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    // Timing goes to stderr so that stdout depends only on the inputs and the seed.
    eprintln!(
        "smoothed {} inputs, {} noisy samples in {:.2} s ({:.0} samples/s, {jobs} threads)",
        ds.items,
        total,
        secs,
        total as f64 / secs.max(1e-9)
    );
    let summary = smoothing::summarize(&results, a.mode);
    if a.json {
        let doc = SmoothDocument {
            header: Header::new("smooth"),
            model: a.model.display().to_string(),
            model_sha256: net.sha256.clone(),
            data: a.data.display().to_string(),
            data_sha256: sha(&a.data)?,
            labels: a.labels.as_ref().map(|p| p.display().to_string()),
            labels_sha256: a.labels.as_deref().map(sha).transpose()?,
            parameters: SmoothParameters {
                sigma: a.sigma,
                n0: a.n0,
                n: a.n,
                alpha: a.alpha,
                seed: a.seed,
                mode: a.mode,
                scale: a.scale,
                count: ds.items,
                noise: "N(0, sigma^2 I) in the model input space, not clipped; wyrand + ziggurat, streams keyed by (seed, index, phase, block)",
            },
            results: &results,
            summary: SummaryDocument {
                certified_accuracy_at_radius: summary
                    .certified_accuracy
                    .iter()
                    .map(|p| (format!("{}", p.radius), p.accuracy))
                    .collect(),
                summary: &summary,
            },
        };
        let doc = serde_json::to_string_pretty(&doc).map_err(|e| Error::Io(e.to_string()))?;
        writeln!(out, "{doc}").map_err(|e| Error::Io(format!("stdout: {e}")))?;
        return Ok(0);
    }
    let mut t = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(t, "model:  {} (sha256 {})", a.model.display(), net.sha256);
    let _ = writeln!(
        t,
        "mode {:?}, sigma {}, n0 {}, n {}, alpha {}, seed {}",
        a.mode, a.sigma, a.n0, a.n, a.alpha, a.seed
    );
    let _ = writeln!(
        t,
        "{:>6} {:>10} {:>8} {:>10} {:>8} {:>6} {:>8}",
        "index", "prediction", "n_a", "p_a_lower", "radius", "label", "correct"
    );
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for r in &results {
        let _ = writeln!(
            t,
            "{:>6} {:>10} {:>8} {:>10} {:>8} {:>6} {:>8}",
            r.index,
            r.prediction.map_or("abstain".into(), |p| p.to_string()),
            r.n_a,
            opt(r.p_a_lower.map(|p| format!("{p:.6}"))),
            opt(r.radius.map(|p| format!("{p:.4}"))),
            opt(r.label.map(|l| l.to_string())),
            opt(r.correct.map(|c| c.to_string())),
        );
    }
    let _ = writeln!(
        t,
        "inputs: {}, abstain rate {:.4}",
        summary.inputs, summary.abstain_rate
    );
    if let Some(acc) = summary.clean_accuracy {
        let _ = writeln!(t, "smoothed-classifier accuracy: {acc:.4}");
    }
    for p in &summary.certified_accuracy {
        let _ = writeln!(
            t,
            "certified accuracy at radius {:.2}: {:.4}",
            p.radius, p.accuracy
        );
    }
    if let Some(m) = summary.mean_radius_correct {
        let _ = writeln!(t, "mean certified radius of correct inputs: {m:.4}");
    }
    out.write_all(t.as_bytes())
        .map_err(|e| Error::Io(format!("stdout: {e}")))?;
    Ok(0)
}

//! `ferrocert scan`: backdoor scan of a classifier (trigger search, outlier test, certified
//! patch bound).

use super::{Error, StageBar, file_sha as sha, load_network, read_npy};
use crate::bounds::Method;
use crate::data::Dataset;
use crate::report::{Header, png};
use crate::scan::{self, ScanConfig, ScanData, ScanResult};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `ferrocert scan`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit code 0: no label flagged; 1: a label is flagged as a likely \
backdoor target; 2: error.\n\nThe trigger search and the outlier test are empirical (a flagged \
label is strong evidence, an unflagged scan is no proof). The patch bound is a proof for the \
float32 network as deployed: no k x k stamp at a scanned position can reach a higher attack \
success rate on this data than its certified_asr_bound."
)]
pub struct ScanArgs {
    /// ONNX classifier (one output vector of class scores).
    pub model: PathBuf,
    /// Clean inputs as a `.npy` array of shape [N, ...], each item as many values as the model
    /// input, inside the valid range (--range).
    #[arg(long)]
    pub data: PathBuf,
    /// Labels as a `.npy` integer array of shape [N]; without it the model's own predictions
    /// count as labels.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Adam steps per label of the trigger search.
    #[arg(long, default_value_t = 600)]
    pub steps: usize,
    /// Random seed; the same seed gives the same report for any --jobs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write the masks, triggers and stamped inputs as PNG files, and scan.json, here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Patch sizes of the certified bound (default 2 and 3).
    #[arg(long = "patch", value_name = "K", num_args = 1..)]
    pub patch: Vec<usize>,
    /// Skip the certified patch bound.
    #[arg(long, conflicts_with = "patch")]
    pub no_patch: bool,
    /// Targets of the patch bound (default: every class).
    #[arg(long = "target", value_name = "T", num_args = 1..)]
    pub target: Vec<usize>,
    /// Image layout H,W[,C] of a flat input (channels last), e.g. 8,8 for the 64 values of an
    /// 8x8 grey image. An [N, C, H, W] input needs none.
    #[arg(long, value_parser = parse_image_shape)]
    pub image_shape: Option<(usize, usize, usize)>,
    /// Valid range LO,HI of every input value (patterns and patch contents range over it).
    #[arg(long, value_parser = parse_range, default_value = "0,1", allow_hyphen_values = true)]
    pub range: (f64, f64),
    /// Step between scanned patch positions.
    #[arg(long, default_value_t = 1)]
    pub stride: usize,
    /// Strongest bound method of the patch bound (CROWN runs first).
    #[arg(long, value_enum, default_value = "alpha-crown")]
    pub method: Method,
    /// Stop a label's search after this many periods of 10 steps without a 1 % smaller mask
    /// (0: always run --steps).
    #[arg(long, default_value_t = 10)]
    pub early_stop_patience: usize,
    /// Attack success rate a reverse-engineered trigger must reach.
    #[arg(long, default_value_t = 0.99)]
    pub target_asr: f64,
    /// Anomaly index above which a label is flagged.
    #[arg(long, default_value_t = 2.0)]
    pub anomaly_threshold: f64,
    /// Multiply every data value by this factor first (e.g. 1/255 for u8 images).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Use only the first COUNT items.
    #[arg(long)]
    pub count: Option<usize>,
    /// Worker threads (default: number of CPUs; does not change the results).
    #[arg(long)]
    pub jobs: Option<usize>,
}

fn parse_image_shape(s: &str) -> Result<(usize, usize, usize), String> {
    let v: Result<Vec<usize>, _> = s.split(',').map(|p| p.trim().parse::<usize>()).collect();
    match v.map_err(|e| format!("{s:?}: {e}"))?.as_slice() {
        [h, w] => Ok((*h, *w, 1)),
        [h, w, c] => Ok((*h, *w, *c)),
        _ => Err(format!("{s:?}: expected H,W or H,W,C")),
    }
}

fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let v: Result<Vec<f64>, _> = s.split(',').map(|p| p.trim().parse::<f64>()).collect();
    match v.map_err(|e| format!("{s:?}: {e}"))?.as_slice() {
        [lo, hi] => Ok((*lo, *hi)),
        _ => Err(format!("{s:?}: expected LO,HI")),
    }
}

/// The scan's settings from the arguments.
pub fn config(a: &ScanArgs) -> ScanConfig {
    let mut cfg = ScanConfig {
        steps: a.steps,
        seed: a.seed,
        target_asr: a.target_asr,
        early_stop_patience: a.early_stop_patience,
        anomaly_threshold: a.anomaly_threshold,
        stride: a.stride,
        range: a.range,
        method: a.method,
        targets: (!a.target.is_empty()).then(|| a.target.clone()),
        ..ScanConfig::default()
    };
    if a.no_patch {
        cfg.patch_sizes.clear();
    } else if !a.patch.is_empty() {
        cfg.patch_sizes = a.patch.clone();
        cfg.patch_explicit = true;
    }
    cfg
}

/// Run `scan`.
pub fn scan(a: &ScanArgs, out: &mut dyn Write) -> Result<i32, Error> {
    let cfg = config(a);
    cfg.validate().map_err(|e| Error::Usage(e.to_string()))?;
    if a.jobs == Some(0) {
        return Err(Error::Usage("--jobs must be at least 1".into()));
    }
    let net = load_network(&a.model)?;
    let data = read_npy(&a.data)?;
    let labels = a.labels.as_deref().map(read_npy).transpose()?;
    let mut ds = Dataset::new(
        &data,
        labels.as_ref(),
        a.scale,
        net.exec.input_shape(),
        net.exec.output_numel(),
    )
    .map_err(|e| Error::Usage(format!("{}: {e}", a.data.display())))?;
    if let Some(c) = a.count {
        ds.truncate(c);
    }
    let sd = ScanData::new(&net, &ds, a.image_shape, &cfg)
        .map_err(|e| Error::Usage(format!("{}: {e}", a.model.display())))?;
    let jobs = a.jobs.unwrap_or_else(rayon::current_num_threads).max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| Error::Io(format!("thread pool: {e}")))?;
    let progress = StageBar::new();
    let start = Instant::now();
    let res = pool
        .install(|| scan::scan(&sd, &cfg, &progress))
        .map_err(|e| Error::Usage(e.to_string()))?;
    progress.0.finish_and_clear();
    // Timing goes to stderr so that stdout depends only on the inputs and the seed.
    eprintln!(
        "scanned {} labels over {} inputs in {:.2} s ({jobs} threads; {})",
        res.classes,
        res.inputs,
        start.elapsed().as_secs_f64(),
        progress.timings()
    );
    let mut images = Vec::new();
    if let Some(dir) = a.out.as_ref().filter(|_| res.layout.is_image()) {
        images = png::write_scan_images(dir, &res, ds.item(0), cfg.range)
            .map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
    }
    let doc = ScanDocument {
        header: Header::new("scan"),
        model: a.model.display().to_string(),
        model_sha256: net.sha256.clone(),
        data_file: a.data.display().to_string(),
        data_sha256: sha(&a.data)?,
        labels_file: a.labels.as_ref().map(|p| p.display().to_string()),
        labels_sha256: a.labels.as_deref().map(sha).transpose()?,
        seed: a.seed,
        data_scale: a.scale,
        parameters: &cfg,
        method_class: ScanMethods {
            trigger_search: "empirical (Neural Cleanse optimisation; a small mask shows a trigger exists, none found proves nothing)",
            outlier_test: "empirical (median absolute deviation of the mask norms)",
            patch_bound: "proof (CROWN/alpha-CROWN, sound for the float32 network as deployed, any evaluation order)",
            patch_search: "empirical (PGD; every flipping patch re-checked by the concrete evaluator)",
        },
        result: &res,
        images: images.clone(),
    };
    let doc = serde_json::to_string_pretty(&doc).map_err(|e| Error::Io(e.to_string()))?;
    let text = format!("{doc}\n");
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(dir.join("scan.json"), &text))
            .map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
    }
    if a.json {
        out.write_all(text.as_bytes())
            .map_err(|e| Error::Io(format!("stdout: {e}")))?;
    } else {
        out.write_all(render_text(a, &net.sha256, &cfg, &res, &images).as_bytes())
            .map_err(|e| Error::Io(format!("stdout: {e}")))?;
    }
    Ok(if res.flagged_labels.is_empty() { 0 } else { 1 })
}

/// What `scan --json` prints: the header, identities, parameters, and the result's fields.
#[derive(Serialize)]
struct ScanDocument<'a> {
    #[serde(flatten)]
    header: Header,
    model: String,
    model_sha256: String,
    data_file: String,
    data_sha256: String,
    labels_file: Option<String>,
    labels_sha256: Option<String>,
    seed: u64,
    data_scale: f64,
    parameters: &'a ScanConfig,
    method_class: ScanMethods,
    #[serde(flatten)]
    result: &'a ScanResult,
    images: Vec<String>,
}

/// Which of the scan's results is a proof and which is empirical.
#[derive(Serialize)]
struct ScanMethods {
    trigger_search: &'static str,
    outlier_test: &'static str,
    patch_bound: &'static str,
    patch_search: &'static str,
}

fn render_text(
    a: &ScanArgs,
    sha: &str,
    cfg: &ScanConfig,
    r: &ScanResult,
    images: &[String],
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "model:  {} (sha256 {sha})", a.model.display());
    let l = &r.layout;
    let _ = writeln!(
        s,
        "data:   {} inputs, {} classes, clean accuracy {:.4}; layout {}x{}x{} ({}), range [{}, {}]",
        r.inputs,
        r.classes,
        r.clean_accuracy,
        l.height,
        l.width,
        l.channels,
        l.order.name(),
        cfg.range.0,
        cfg.range.1
    );
    let _ = writeln!(
        s,
        "\ntrigger search (Neural Cleanse, {} Adam steps per label, seed {}; empirical):",
        cfg.steps, cfg.seed
    );
    let _ = writeln!(
        s,
        "{:>6} {:>9} {:>8} {:>8} {:>8}",
        "label", "mask_l1", "asr", "anomaly", "flagged"
    );
    for lr in &r.labels {
        let _ = writeln!(
            s,
            "{:>6} {:>9.4} {:>8.4} {:>8.3} {:>8}{}",
            lr.label,
            lr.mask_l1,
            lr.attack_success_rate,
            lr.anomaly_index,
            if lr.flagged { "yes" } else { "" },
            if lr.reached_target_asr {
                ""
            } else {
                "  (target rate not reached)"
            }
        );
    }
    let flagged: Vec<String> = r.flagged_labels.iter().map(|t| t.to_string()).collect();
    let _ = writeln!(
        s,
        "flagged labels (anomaly index > {}): {}",
        cfg.anomaly_threshold,
        if flagged.is_empty() {
            "none".into()
        } else {
            flagged.join(", ")
        }
    );
    for sm in &r.patch_summary {
        let _ = writeln!(
            s,
            "\ncertified patch bound, k = {} ({} positions, stride {}, {} correctly classified inputs, {}; proof for float32 as deployed):",
            sm.k, sm.positions, sm.stride, sm.inputs, sm.method
        );
        let _ = writeln!(
            s,
            "{:>6} {:>10} {:>8} {:>8} {:>10} {:>10}",
            "target", "asr_bound", "immune", "flips", "stamp_asr", "worst_at"
        );
        for e in r.patch.iter().filter(|e| e.k == sm.k) {
            let _ = writeln!(
                s,
                "{:>6} {:>10.4} {:>8.4} {:>8} {:>10.4} {:>10}",
                e.target,
                e.certified_asr_bound,
                e.immune_fraction,
                e.flipping_patches_found,
                e.empirical_stamp_asr,
                e.worst_position
                    .map_or("-".into(), |p| format!("({},{})", p[0], p[1]))
            );
        }
        let _ = writeln!(
            s,
            "immune to every target at the worst position: {:.4} of the inputs",
            sm.immune_fraction_all_targets
        );
        let _ = writeln!(
            s,
            "No {k} x {k} stamp at a scanned position can reach a higher attack success rate on this data than its asr_bound (per target, over the correctly classified inputs of other classes).",
            k = sm.k
        );
    }
    for n in &r.not_checked {
        let _ = writeln!(s, "not checked: {n}");
    }
    if let Some(dir) = &a.out {
        let _ = writeln!(
            s,
            "\nwrote {} images and scan.json to {}",
            images.len(),
            dir.display()
        );
    }
    s
}

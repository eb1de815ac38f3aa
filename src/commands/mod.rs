//! The CLI subcommands as library functions: each takes its parsed arguments and a writer for
//! stdout, and returns the process exit code. `src/main.rs` only parses and dispatches.

pub mod batch_cmd;
pub mod certify_cmd;
pub mod scan_cmd;
pub mod smooth_cmd;

pub use batch_cmd::{RunArgs, run};
pub use certify_cmd::{
    CertifyArgs, KeygenArgs, MergeArgs, ReplayArgs, SchemaArgs, certify, keygen, merge, replay_cmd,
    schema,
};
pub use scan_cmd::{ScanArgs, scan};
pub use smooth_cmd::{SmoothArgs, smooth};

use crate::bounds::{self, Method};
use crate::domain::{FpMode, Intervals};
use crate::network::Network;
use crate::onnx::sha256_file;
use crate::report::model::{FileRef, SpecEvidence};
use crate::report::{self, SCHEMA_VERSION, TOOL_VERSION};
use crate::spec::Spec;
use crate::verify::VerifyOptions;
use crate::verify::files::{self, FileError};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors of the command layer (all map to exit code 2).
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Config(#[from] crate::certify::config::ConfigError),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// Process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        2
    }
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::Io(format!("{what}: {e}"))
}

/// Load a network, naming the file in any error.
pub fn load_network(path: &Path) -> Result<Network, Error> {
    Ok(files::load_network(path)?)
}

/// Load a spec and check it against the network's input and output sizes.
fn load_spec_for(path: &Path, net: &Network) -> Result<Spec, Error> {
    Ok(files::load_spec_for(path, net)?)
}

/// SHA-256 of a file, naming the file in any error.
pub(crate) fn file_sha(path: &Path) -> Result<String, Error> {
    sha256_file(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

/// Read a `.npy` array (the error names the file).
pub(crate) fn read_npy(path: &Path) -> Result<crate::data::npy::Array, Error> {
    crate::data::npy::read(path).map_err(|e| Error::Io(e.to_string()))
}

/// One progress bar on stderr, restarted per stage (hidden when stderr is not a terminal);
/// remembers when each stage started, for the timing line.
pub(crate) struct StageBar(
    indicatif::ProgressBar,
    std::sync::Mutex<Vec<(String, std::time::Instant)>>,
);

impl StageBar {
    /// A hidden-off-terminal bar with a stage name.
    pub(crate) fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:<30} [{bar:30}] {pos}/{len} {elapsed} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        StageBar(bar, Default::default())
    }

    /// `name seconds` of every stage so far.
    pub(crate) fn timings(&self) -> String {
        let st = self.1.lock().map(|v| v.clone()).unwrap_or_default();
        let now = std::time::Instant::now();
        st.iter()
            .enumerate()
            .map(|(i, (n, t))| {
                let end = st.get(i + 1).map_or(now, |x| x.1);
                format!("{n} {:.2} s", (end - *t).as_secs_f64())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl crate::progress::Progress for StageBar {
    fn stage(&self, name: &str, total: u64) {
        if let Ok(mut v) = self.1.lock() {
            v.push((name.to_string(), std::time::Instant::now()));
        }
        self.0.reset();
        self.0.set_length(total);
        self.0.set_message(name.to_string());
    }
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
}

fn write_out(out: &mut dyn Write, s: &str) -> Result<(), Error> {
    out.write_all(s.as_bytes()).map_err(|e| io_err("stdout", e))
}

/// `ferrocert inspect`: operators, shapes, parameter count and SHA-256 of a model.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// ONNX model to describe.
    pub model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Run `inspect`.
pub fn inspect(a: &InspectArgs, out: &mut dyn Write) -> Result<i32, Error> {
    let net = load_network(&a.model)?;
    let g = &net.analysis;
    let e = &net.exec;
    if a.json {
        let nodes: Vec<_> = g
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "name": n.name,
                    "op": n.op.family(),
                    "source_op": n.source_op,
                    "shape": g.values[n.output].shape,
                    "parameters": n.op.param_count(),
                })
            })
            .collect();
        let ops: serde_json::Map<String, serde_json::Value> = net
            .onnx_ops
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let doc = json!({
            "schema_version": SCHEMA_VERSION,
            "tool_version": TOOL_VERSION,
            "model": a.model.display().to_string(),
            "sha256": net.sha256,
            "size_bytes": net.size_bytes,
            "opset": net.opset,
            "dtype": e.dtype,
            "input": {"name": e.values[e.input].name, "shape": e.input_shape()},
            "output": {"name": e.values[e.output].name, "shape": e.output_shape()},
            "parameters": net.onnx_params,
            "onnx_ops": ops,
            "activations": g.activation_count(),
            "analysis_nodes": nodes,
        });
        write_out(out, &format!("{doc:#}\n"))?;
        return Ok(0);
    }
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(s, "model:      {}", a.model.display());
    let _ = writeln!(s, "sha256:     {}", net.sha256);
    let _ = writeln!(
        s,
        "size:       {} bytes, opset {}, {:?}",
        net.size_bytes, net.opset, e.dtype
    );
    let _ = writeln!(
        s,
        "input:      {} {:?}",
        e.values[e.input].name,
        e.input_shape()
    );
    let _ = writeln!(
        s,
        "output:     {} {:?}",
        e.values[e.output].name,
        e.output_shape()
    );
    let _ = writeln!(s, "parameters: {}", net.onnx_params);
    let ops: Vec<String> = net
        .onnx_ops
        .iter()
        .map(|(k, v)| format!("{k} x{v}"))
        .collect();
    let _ = writeln!(s, "operators:  {}", ops.join(", "));
    let _ = writeln!(
        s,
        "analysis graph ({} nodes, {} activations):",
        g.nodes.len(),
        g.activation_count()
    );
    for n in &g.nodes {
        let _ = writeln!(
            s,
            "  {:<11} {:<28} {:<18} {}",
            n.op.family(),
            n.name,
            format!("{:?}", g.values[n.output].shape),
            n.source_op
        );
    }
    write_out(out, &s)?;
    Ok(0)
}

/// `ferrocert bounds`: bounds of every network output over the spec's input regions.
#[derive(clap::Args, Debug)]
pub struct BoundsArgs {
    /// ONNX model.
    pub model: PathBuf,
    /// VNN-LIB specification whose input regions are bounded.
    pub spec: PathBuf,
    /// Bounding method.
    #[arg(long, value_enum, default_value = "ibp")]
    pub method: Method,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Plain CROWN: do not intersect CROWN bounds with IBP (intermediate and final).
    #[arg(long)]
    pub no_ibp_intersection: bool,
    /// Adam iterations of alpha-CROWN.
    #[arg(long, default_value_t = 20)]
    pub alpha_iterations: usize,
    /// Enclose every output the deployed network can compute in its own floating-point type
    /// (`deployed`, default), or only the real-arithmetic function (`real`).
    #[arg(long, value_enum, default_value = "deployed")]
    pub fp_mode: FpModeArg,
}

/// CLI spelling of [`FpMode`].
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FpModeArg {
    Deployed,
    Real,
}

impl From<FpModeArg> for FpMode {
    fn from(a: FpModeArg) -> Self {
        match a {
            FpModeArg::Deployed => FpMode::Deployed,
            FpModeArg::Real => FpMode::Real,
        }
    }
}

/// Run `bounds`.
pub fn bounds(a: &BoundsArgs, out: &mut dyn Write) -> Result<i32, Error> {
    let start = Instant::now();
    let net = load_network(&a.model)?;
    let spec = load_spec_for(&a.spec, &net)?;
    let spec_sha = sha256_file(&a.spec).map_err(|e| io_err(&a.spec.display().to_string(), e))?;
    let g = &net.analysis;
    let (ni, no) = (g.input_numel(), g.output_numel());
    let nr = spec.regions.len();
    let lo: Vec<f64> = spec
        .regions
        .iter()
        .flat_map(|r| r.lower.iter().copied())
        .collect();
    let hi: Vec<f64> = spec
        .regions
        .iter()
        .flat_map(|r| r.upper.iter().copied())
        .collect();
    debug_assert_eq!(lo.len(), nr * ni);
    let mode: FpMode = a.fp_mode.into();
    let opts = bounds::BoundOptions {
        method: a.method,
        mode,
        intersect_ibp: !a.no_ibp_intersection,
        alpha: bounds::alpha::AlphaConfig {
            iterations: a.alpha_iterations,
            ..Default::default()
        },
    };
    let res = bounds::output_bounds(g, Intervals::new(lo, hi), nr, &opts);
    let per_region: Vec<(&[f64], &[f64])> = (0..nr)
        .map(|r| (&res.lo[r * no..(r + 1) * no], &res.hi[r * no..(r + 1) * no]))
        .collect();
    // The union over regions.
    let mut lower = vec![f64::INFINITY; no];
    let mut upper = vec![f64::NEG_INFINITY; no];
    for (l, h) in &per_region {
        for j in 0..no {
            lower[j] = lower[j].min(l[j]);
            upper[j] = upper[j].max(h[j]);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if a.json {
        let regions: Vec<_> = per_region
            .iter()
            .map(|(l, h)| json!({"lower": l, "upper": h}))
            .collect();
        let doc = json!({
            "schema_version": SCHEMA_VERSION,
            "tool_version": TOOL_VERSION,
            "method": a.method.name(),
            "fp_mode": mode,
            "model": a.model.display().to_string(),
            "model_sha256": net.sha256,
            "spec": a.spec.display().to_string(),
            "spec_sha256": spec_sha,
            "lower": lower,
            "upper": upper,
            "regions": regions,
            "elapsed_s": elapsed,
        });
        write_out(out, &format!("{doc}\n"))?;
    } else {
        let mut s = format!(
            "{} bounds ({:?} floating point) over {} region(s), {:.3} s\n",
            a.method.name(),
            mode,
            nr,
            elapsed
        );
        for j in 0..no {
            s.push_str(&format!("Y_{j}: [{:.9e}, {:.9e}]\n", lower[j], upper[j]));
        }
        write_out(out, &s)?;
    }
    Ok(0)
}

/// `ferrocert verify`: prove or refute a VNN-LIB property.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// ONNX model.
    pub model: PathBuf,
    /// VNN-LIB specification (the unsafe set).
    pub spec: PathBuf,
    /// Time limit in seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Also write the VNN-COMP result file here.
    #[arg(long)]
    pub result_file: Option<PathBuf>,
    /// Floating-point semantics the proof covers (see `bounds --help`).
    #[arg(long, value_enum, default_value = "deployed")]
    pub fp_mode: FpModeArg,
    /// Strongest bound method to try (each cheaper one runs first).
    #[arg(long, value_enum, default_value = "alpha-crown")]
    pub method: Method,
    /// Input splitting's rule for the dimension to split (networks with few inputs).
    #[arg(long, value_enum, default_value = "lookahead")]
    pub input_branching: crate::verify::bab::InputBranching,
    /// Print one JSON object (the same evidence `certify` reports) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `verify --json` prints: the header, the model, and the evidence `certify` records.
#[derive(serde::Serialize)]
struct VerifyDocument {
    #[serde(flatten)]
    header: report::Header,
    model: FileRef,
    fp_mode: FpMode,
    method: Method,
    elapsed_s: f64,
    #[serde(flatten)]
    evidence: SpecEvidence,
}

/// Run `verify`: the VNN-COMP word on the first line of stdout (and of the result file).
pub fn verify_cmd(a: &VerifyArgs, out: &mut dyn Write) -> Result<i32, Error> {
    if let Some(t) = a.timeout {
        if !(t > 0.0 && t.is_finite()) {
            return Err(Error::Usage(format!(
                "--timeout must be a positive number of seconds, got {t}"
            )));
        }
    }
    let opts = VerifyOptions {
        timeout: a.timeout.map(Duration::from_secs_f64),
        fp_mode: a.fp_mode.into(),
        method: a.method,
        bab: Some(crate::verify::bab::BabConfig {
            input_branching: a.input_branching,
            ..crate::verify::bab::BabConfig::default()
        }),
        ..VerifyOptions::default()
    };
    let (run, err) = files::verify_files(&a.model, &a.spec, &opts);
    if let Some(path) = &a.result_file {
        report::write_vnncomp_result(path, &run.verdict)
            .map_err(|e| io_err(&path.display().to_string(), e))?;
    }
    if let Some(e) = err {
        return Err(e.into());
    }
    if a.json {
        let text = std::fs::read_to_string(&a.spec).unwrap_or_default();
        let doc = VerifyDocument {
            header: report::Header::new("verify"),
            model: FileRef {
                path: a.model.display().to_string(),
                sha256: file_sha(&a.model)?,
            },
            fp_mode: opts.fp_mode,
            method: a.method,
            elapsed_s: run.elapsed.as_secs_f64(),
            evidence: SpecEvidence::new(
                FileRef {
                    path: a.spec.display().to_string(),
                    sha256: file_sha(&a.spec)?,
                },
                crate::spec::property_line(&text),
                &run,
                a.timeout,
            ),
        };
        let s = serde_json::to_string_pretty(&doc).map_err(|e| Error::Io(e.to_string()))?;
        write_out(out, &format!("{s}\n"))?;
        return Ok(run.verdict.exit_code());
    }
    let mut s = report::vnncomp_result(&run.verdict);
    if let Some(r) = &run.report {
        s.push_str(&format!(
            "method: {}; regions proved {}/{}; disjuncts proved {}/{} (ibp {}, crown {}, alpha-crown {}, lp {}); branch and bound: {} regions, {} domains, {} iterations, at most {} open; {:.3} s\n",
            r.method,
            r.regions_proved,
            r.regions,
            r.disjuncts_proved,
            r.disjuncts,
            r.proved_by[0],
            r.proved_by[1],
            r.proved_by[2],
            r.proved_by[3],
            r.bab_regions,
            r.bab.domains,
            r.bab.iterations,
            r.bab.max_open,
            run.elapsed.as_secs_f64()
        ));
    }
    write_out(out, &s)?;
    Ok(run.verdict.exit_code())
}

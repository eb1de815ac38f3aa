//! `ferrocert certify`: every model of a configuration through its checks and gate, with the
//! five report formats written to a directory; and `ferrocert schema`.

use super::{Error, StageBar};
use crate::certify::replay::{self, ReplayOptions};
use crate::certify::{self, config, plan, shard, sign};
use crate::report::model::{Outcome, Report, report_schema};
use crate::report::render;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The configuration `certify` uses without `--config`.
pub const DEFAULT_CONFIG: &str = "specs/ferrocert.toml";

/// Arguments of `ferrocert certify`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit code 0: every model passes its gate; 1: a model fails it (stdout \
says which checks and why); 2: error (a bad configuration, a missing file, a spec or data set \
that does not fit its model), with the file and line on stderr.\n\nWrites report.json (the \
typed report; byte-identical for the same configuration), timings.json, report.html, \
report.md, junit.xml and results.sarif. The gate is fail-safe: an unknown, a timeout or an \
error fails it unless the configuration allows it."
)]
pub struct CertifyArgs {
    /// Configuration (TOML; paths inside are relative to it). Default: specs/ferrocert.toml,
    /// the bundled models and their data.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory for the reports.
    #[arg(long, default_value = "ferrocert-report")]
    pub out: PathBuf,
    /// Worker threads (default: number of CPUs; does not change report.json).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Sign the report directory with this minisign secret key (from `ferrocert keygen` or
    /// `minisign -G`; an encrypted key reads its password from FERROCERT_KEY_PASSWORD):
    /// writes MANIFEST.sha256 (every output file's SHA-256), MANIFEST.sha256.minisig and
    /// signer.pub. Verify with `ferrocert replay DIR --pubkey KEY.pub` or
    /// `minisign -Vm DIR/MANIFEST.sha256 -p KEY.pub && (cd DIR && sha256sum -c MANIFEST.sha256)`.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
    /// Run only slice K of N (1-based) of the configuration's checks, a deterministic split
    /// balanced by expected cost; `ferrocert merge` combines the N directories into the single
    /// run's report (e.g. `--shard $((JOB_COMPLETION_INDEX + 1))/N` in a Kubernetes Indexed Job).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
}

/// The summary printed on stdout: the verdict, each model, and every failing condition.
pub fn summary(r: &Report, out_dir: &Path) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ferrocert certify: gate {} ({} of {} models pass; config {})",
        if r.verdict == Outcome::Pass {
            "PASSED"
        } else {
            "FAILED"
        },
        r.summary.models_passed,
        r.summary.models,
        r.config.path
    );
    let width = r.models.iter().map(|m| m.name.len()).max().unwrap_or(0);
    for m in &r.models {
        let _ = writeln!(
            s,
            "  {}  {:<width$}  {} checks",
            if m.verdict == Outcome::Pass {
                "PASS"
            } else {
                "FAIL"
            },
            m.name,
            m.checks.len()
        );
        for f in &m.failures {
            let _ = writeln!(s, "        {f}");
        }
    }
    let _ = writeln!(
        s,
        "reports in {}: {}",
        out_dir.display(),
        render::FILES.join(", ")
    );
    s
}

/// The `--sign` key, loaded before any analysis so a bad key fails at once.
fn signing_key(path: Option<&Path>) -> Result<Option<sign::SigningKey>, Error> {
    path.map(|k| {
        if !k.is_file() {
            return Err(Error::Usage(format!(
                "--sign {}: no such key file (make one with `ferrocert keygen`)",
                k.display()
            )));
        }
        sign::SigningKey::load(k).map_err(|e| Error::Usage(e.to_string()))
    })
    .transpose()
}

/// Sign the report files of `dir` when a key was given.
fn sign_reports(dir: &Path, key: Option<&sign::SigningKey>) -> Result<(), Error> {
    let Some(key) = key else { return Ok(()) };
    let files: Vec<String> = render::FILES.iter().map(|s| s.to_string()).collect();
    sign::sign_dir(dir, &files, key).map_err(|e| Error::Io(e.to_string()))
}

/// Run `certify`.
pub fn certify(a: &CertifyArgs, out: &mut dyn Write) -> Result<i32, Error> {
    if a.jobs == Some(0) {
        return Err(Error::Usage("--jobs must be at least 1".into()));
    }
    let path = a
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    if a.config.is_none() && !path.is_file() {
        return Err(Error::Usage(format!(
            "no --config given and {DEFAULT_CONFIG} not found (run from the project root, or pass --config FILE)"
        )));
    }
    let key = signing_key(a.sign.as_deref())?;
    let loaded = config::load(&path)?;
    let shard = a
        .shard
        .as_deref()
        .map(str::parse::<shard::Shard>)
        .transpose()
        .map_err(|e| Error::Usage(e.to_string()))?;
    let mut plan = plan::prepare(&loaded)?;
    let info = shard.map(|s| shard::slice(&mut plan, s));
    let jobs = a.jobs.unwrap_or_else(rayon::current_num_threads).max(1);
    let progress = StageBar::new();
    let (report, timings) = certify::run(&plan, jobs, &progress);
    progress.0.finish_and_clear();
    render::write_all(&a.out, &report, &timings)
        .map_err(|e| Error::Io(format!("{}: {e}", a.out.display())))?;
    if let Some(info) = &info {
        let p = a.out.join(shard::SHARD_FILE);
        let text = serde_json::to_string_pretty(info).map_err(|e| Error::Io(e.to_string()))?;
        std::fs::write(&p, text + "\n").map_err(|e| Error::Io(format!("{}: {e}", p.display())))?;
    }
    sign_reports(&a.out, key.as_ref())?;
    eprintln!(
        "certified {} models in {:.2} s ({jobs} threads; {})",
        report.models.len(),
        timings.total_s,
        progress.timings()
    );
    out.write_all(summary(&report, &a.out).as_bytes())
        .map_err(|e| Error::Io(format!("stdout: {e}")))?;
    Ok(if report.verdict == Outcome::Pass {
        0
    } else {
        1
    })
}

/// Arguments of `ferrocert replay`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit code 0: every input hash, the signature (when present), every \
counterexample and every re-run check agree with the report; 1: something disagrees (each \
disagreement is named on stdout); 2: the report or its configuration cannot be read.\n\n\
Run it from the directory `certify` ran in: the report's paths are relative to it."
)]
pub struct ReplayArgs {
    /// A directory written by `ferrocert certify`.
    pub dir: PathBuf,
    /// Re-run only N checks, chosen by --seed (default: every check).
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// Seed of the sample (default: the report's seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The signer's minisign public key. Without it a signed directory is checked against its
    /// own signer.pub, which shows integrity but not who signed.
    #[arg(long, value_name = "KEY.pub")]
    pub pubkey: Option<PathBuf>,
    /// Worker threads of the re-run (default: number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Check the proof material of `unsat` specs instead of searching again (input splitting's
    /// tree: each node bounded once; ReLU splitting's: each node's bounds rebuilt and each
    /// stored bound evaluated once, from the root bounds it started from); specs without
    /// material are re-run.
    #[arg(long)]
    pub check_proofs: bool,
    /// Print the replay report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `replay`.
pub fn replay_cmd(a: &ReplayArgs, out: &mut dyn Write) -> Result<i32, Error> {
    if a.jobs == Some(0) {
        return Err(Error::Usage("--jobs must be at least 1".into()));
    }
    if a.sample == Some(0) {
        return Err(Error::Usage("--sample must be at least 1".into()));
    }
    if let Some(k) = &a.pubkey
        && !k.is_file()
    {
        return Err(Error::Usage(format!(
            "--pubkey {}: no such file",
            k.display()
        )));
    }
    let seed = match a.seed {
        Some(s) => s,
        None => report_seed(&a.dir).unwrap_or(0),
    };
    let opts = ReplayOptions {
        sample: a.sample,
        seed,
        jobs: a.jobs.unwrap_or_else(rayon::current_num_threads).max(1),
        pubkey: a.pubkey.clone(),
        check_proofs: a.check_proofs,
    };
    let progress = StageBar::new();
    let r = replay::replay(&a.dir, &opts, &progress).map_err(|e| Error::Io(e.to_string()))?;
    progress.0.finish_and_clear();
    let text = if a.json {
        serde_json::to_string_pretty(&r).map_err(|e| Error::Io(e.to_string()))? + "\n"
    } else {
        replay_summary(&r)
    };
    out.write_all(text.as_bytes())
        .map_err(|e| Error::Io(format!("stdout: {e}")))?;
    Ok(if r.agree { 0 } else { 1 })
}

fn report_seed(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("report.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["provenance"]["seed"].as_u64()
}

/// The replay's verdict and every disagreement, for people.
pub fn replay_summary(r: &replay::ReplayReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ferrocert replay {}: {}",
        r.directory,
        if r.agree { "AGREES" } else { "DISAGREES" }
    );
    if let Some(sig) = &r.signature {
        let _ = writeln!(
            s,
            "  signature ({}{}): {}",
            sig.key,
            if sig.key_from_directory {
                ", the directory's own key: integrity only"
            } else {
                ""
            },
            sig.detail
        );
    }
    let ok = |v: &[bool]| v.iter().filter(|&&b| b).count();
    let _ = writeln!(
        s,
        "  input hashes: {} of {} match",
        ok(&r.hashes.iter().map(|h| h.ok).collect::<Vec<_>>()),
        r.hashes.len()
    );
    let _ = writeln!(
        s,
        "  counterexamples re-checked: {} of {} valid",
        ok(&r.counterexamples.iter().map(|c| c.ok).collect::<Vec<_>>()),
        r.counterexamples.len()
    );
    let _ = writeln!(
        s,
        "  checks re-run: {} of {} agree ({} in the report{})",
        ok(&r.verdicts.iter().map(|v| v.agree).collect::<Vec<_>>()),
        r.verdicts.len(),
        r.checks_in_report,
        r.sampled
            .map_or(String::new(), |n| format!(", sample of {n}"))
    );
    if !r.proofs.is_empty() {
        // The root's bounds: alpha-CROWN's, or the LP stage's in proofs of earlier versions.
        let (t, o, root): (f64, f64, f64) =
            r.proofs.iter().fold((0.0, 0.0, 0.0), |(t, o, root), p| {
                (
                    t + p.seconds,
                    o + p.original_seconds.unwrap_or(0.0),
                    root + p.lp_stage_seconds + p.root_seconds,
                )
            });
        let rebuilt = if root > 0.0 {
            format!(" ({root:.2} s of it rebuilding the bounds the searches started from)")
        } else {
            String::new()
        };
        let reopt: usize = r.proofs.iter().map(|p| p.reoptimized).sum();
        let reopt = if reopt > 0 {
            format!("; {reopt} stored bounds optimised again")
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  proofs checked: {} of {} ({} tree nodes bounded) in {t:.2} s{rebuilt}, against {o:.2} s for the original checks{reopt}",
            ok(&r.proofs.iter().map(|p| p.ok).collect::<Vec<_>>()),
            r.proofs.len(),
            r.proofs.iter().map(|p| p.nodes).sum::<usize>()
        );
    }
    for p in &r.problems {
        let _ = writeln!(s, "  DISAGREES: {p}");
    }
    s
}

/// Arguments of `ferrocert merge`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit code as `certify`: 0 when every model passes its gate, 1 when one fails, \
2 on an error (a shard missing, given twice or of another run; a configuration changed since). \
Run it where the shards ran: the reports' paths are relative to it."
)]
pub struct MergeArgs {
    /// The shard directories (`certify --shard K/N --out DIR`), every K of one N once.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Directory of the merged reports.
    #[arg(long)]
    pub out: PathBuf,
    /// Sign the merged directory (as `certify --sign`).
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
}

/// Run `merge`.
pub fn merge(a: &MergeArgs, out: &mut dyn Write) -> Result<i32, Error> {
    let key = signing_key(a.sign.as_deref())?;
    let dirs: Vec<&Path> = a.dirs.iter().map(PathBuf::as_path).collect();
    let jobs = rayon::current_num_threads().max(1);
    let (report, timings) = shard::merge(&dirs, jobs).map_err(|e| Error::Io(e.to_string()))?;
    render::write_all(&a.out, &report, &timings)
        .map_err(|e| Error::Io(format!("{}: {e}", a.out.display())))?;
    sign_reports(&a.out, key.as_ref())?;
    out.write_all(summary(&report, &a.out).as_bytes())
        .map_err(|e| Error::Io(format!("stdout: {e}")))?;
    Ok(if report.verdict == Outcome::Pass {
        0
    } else {
        1
    })
}

/// Arguments of `ferrocert keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Writes PREFIX.key (secret, unencrypted: keep it in your CI's secret store) and
    /// PREFIX.pub (minisign format; `minisign -G` makes an encrypted one instead).
    #[arg(default_value = "ferrocert")]
    pub prefix: PathBuf,
}

/// Run `keygen`.
pub fn keygen(a: &KeygenArgs, out: &mut dyn Write) -> Result<i32, Error> {
    let (sk, pk) = sign::keygen(&a.prefix).map_err(|e| Error::Io(e.to_string()))?;
    writeln!(
        out,
        "secret key: {}\npublic key: {}",
        sk.display(),
        pk.display()
    )
    .map_err(|e| Error::Io(format!("stdout: {e}")))?;
    Ok(0)
}

/// Arguments of `ferrocert schema`.
#[derive(clap::Args, Debug)]
pub struct SchemaArgs {}

/// Print the JSON Schema of `report.json`.
pub fn schema(_: &SchemaArgs, out: &mut dyn Write) -> Result<i32, Error> {
    let s = serde_json::to_string_pretty(&report_schema()).map_err(|e| Error::Io(e.to_string()))?;
    writeln!(out, "{s}").map_err(|e| Error::Io(format!("stdout: {e}")))?;
    Ok(0)
}

//! `ferrocert` command line: parse arguments, call the library, map the outcome to an exit code
//! (0 verified/success, 1 falsified or findings, 2 error, 3 unknown or timeout).

use clap::{Parser, Subcommand};
use ferrocert::commands::{
    self, BoundsArgs, CertifyArgs, InspectArgs, KeygenArgs, MergeArgs, ReplayArgs, RunArgs,
    ScanArgs, SchemaArgs, SmoothArgs, VerifyArgs,
};

/// Sound verification and certification of neural networks (ONNX + VNN-LIB).
#[derive(Parser)]
#[command(name = "ferrocert", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Certify every model of a configuration (specs, robustness, smoothing, backdoor scan),
    /// decide the gate and write the reports; exit 1 when the gate fails.
    Certify(CertifyArgs),
    /// Re-check a certify report directory: input hashes, signature, counterexamples, and the
    /// verdicts re-run (all or a seeded sample); exit 0 only when everything agrees.
    Replay(ReplayArgs),
    /// Merge the directories of `certify --shard K/N` runs into the single run's reports.
    Merge(MergeArgs),
    /// Make a minisign key pair for `certify --sign`.
    Keygen(KeygenArgs),
    /// Describe a model: operators, shapes, parameter count, SHA-256.
    Inspect(InspectArgs),
    /// Bound every network output over the input regions of a VNN-LIB spec.
    Bounds(BoundsArgs),
    /// Prove (unsat, exit 0) or refute (sat, exit 1) a VNN-LIB property; exit 3 if unknown.
    Verify(VerifyArgs),
    /// Run every instance of a VNN-COMP instances.csv and summarise against expected.csv.
    Run(RunArgs),
    /// Certify L2 robustness radii of a classifier by randomized smoothing (Cohen et al. 2019).
    Smooth(SmoothArgs),
    /// Scan a classifier for backdoor triggers (Neural Cleanse) and bound what any k x k patch
    /// stamp can achieve (certified); exit 1 when a label is flagged.
    Scan(ScanArgs),
    /// Print the JSON Schema of certify's report.json.
    Schema(SchemaArgs),
}

fn main() {
    ferrocert::alloc::tune();
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    let res: anyhow::Result<i32> = match &cli.command {
        Command::Certify(a) => commands::certify(a, &mut stdout).map_err(Into::into),
        Command::Replay(a) => commands::replay_cmd(a, &mut stdout).map_err(Into::into),
        Command::Merge(a) => commands::merge(a, &mut stdout).map_err(Into::into),
        Command::Keygen(a) => commands::keygen(a, &mut stdout).map_err(Into::into),
        Command::Schema(a) => commands::schema(a, &mut stdout).map_err(Into::into),
        Command::Inspect(a) => commands::inspect(a, &mut stdout).map_err(Into::into),
        Command::Bounds(a) => commands::bounds(a, &mut stdout).map_err(Into::into),
        Command::Verify(a) => commands::verify_cmd(a, &mut stdout).map_err(Into::into),
        Command::Run(a) => commands::run(a, &mut stdout).map_err(Into::into),
        Command::Smooth(a) => commands::smooth(a, &mut stdout).map_err(Into::into),
        Command::Scan(a) => commands::scan(a, &mut stdout).map_err(Into::into),
    };
    let code = match res {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    };
    std::process::exit(code);
}

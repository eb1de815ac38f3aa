//! Verification from files: load a model and a VNN-LIB spec (naming the file in any error),
//! check them against each other and verify. Shared by `verify`, `run` and `certify`.

use super::{Verdict, VerifyOptions, VerifyReport};
use crate::network::Network;
use crate::onnx::ImportError;
use crate::spec::{self, Spec, SpecError};
use std::path::Path;
use std::time::{Duration, Instant};
use thiserror::Error;

/// A model or spec that could not be used, naming its file (`file:line:col` for syntax).
#[derive(Debug, Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Model { path: String, source: ImportError },
    #[error("{path}:{source}")]
    SpecSyntax { path: String, source: SpecError },
    #[error("{path}: {source}")]
    Spec { path: String, source: SpecError },
}

/// Load a network, naming the file in any error.
pub fn load_network(path: &Path) -> Result<Network, FileError> {
    Network::load(path).map_err(|source| FileError::Model {
        path: path.display().to_string(),
        source,
    })
}

/// Parse a specification, naming the file in any error (`file:line:col: message`).
pub fn load_spec(path: &Path) -> Result<Spec, FileError> {
    let path_s = path.display().to_string();
    spec::parse_file(path).map_err(|source| match source {
        SpecError::Syntax { .. } => FileError::SpecSyntax {
            path: path_s,
            source,
        },
        _ => FileError::Spec {
            path: path_s,
            source,
        },
    })
}

/// Load a spec and check it against the network's input and output sizes.
pub fn load_spec_for(path: &Path, net: &Network) -> Result<Spec, FileError> {
    let s = load_spec(path)?;
    s.check_against(net.analysis.input_numel(), net.analysis.output_numel())
        .map_err(|source| FileError::Spec {
            path: path.display().to_string(),
            source,
        })?;
    Ok(s)
}

/// Result of one verification with timing.
pub struct VerifyRun {
    pub verdict: Verdict,
    pub report: Option<VerifyReport>,
    pub elapsed: Duration,
}

impl VerifyRun {
    /// Verify an already loaded model and spec; a failure becomes `Verdict::Error`.
    pub fn of(net: &Network, spec: &Spec, spec_path: &Path, opts: &VerifyOptions) -> Self {
        let start = Instant::now();
        match super::verify(net, spec, opts) {
            Ok(r) => VerifyRun {
                verdict: r.verdict.clone(),
                report: Some(r),
                elapsed: start.elapsed(),
            },
            Err(source) => VerifyRun {
                verdict: Verdict::Error(
                    FileError::Spec {
                        path: spec_path.display().to_string(),
                        source,
                    }
                    .to_string(),
                ),
                report: None,
                elapsed: start.elapsed(),
            },
        }
    }
}

/// Load, parse and verify; any failure becomes `Verdict::Error` (and is returned too).
pub fn verify_files(
    model: &Path,
    spec_path: &Path,
    opts: &VerifyOptions,
) -> (VerifyRun, Option<FileError>) {
    let start = Instant::now();
    let loaded = load_network(model).and_then(|net| {
        let spec = load_spec_for(spec_path, &net)?;
        Ok((net, spec))
    });
    match loaded {
        Ok((net, spec)) => {
            let mut run = VerifyRun::of(&net, &spec, spec_path, opts);
            run.elapsed = start.elapsed();
            (run, None)
        }
        Err(e) => (
            VerifyRun {
                verdict: Verdict::Error(e.to_string()),
                report: None,
                elapsed: start.elapsed(),
            },
            Some(e),
        ),
    }
}

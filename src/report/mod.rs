//! Reports: the typed [`model::Report`] every analysis fills, and one renderer per output
//! format under [`render`] (JSON, JUnit, SARIF, Markdown, HTML, PNG, VNN-COMP result files).

pub mod model;
pub mod render;

pub use render::png;
pub use render::vnncomp::{parse_counterexample, vnncomp_result, write_vnncomp_result};

/// Version of this tool, recorded in every report.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Git commit this binary was built from (`unknown` outside a checkout, `-dirty` with
/// uncommitted changes); see `build.rs`.
pub const GIT_COMMIT: &str = env!("FERROCERT_GIT_COMMIT");

/// Version of the JSON report layout.
pub const SCHEMA_VERSION: u32 = 1;

/// The fields every subcommand's `--json` document starts with.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Header {
    pub schema_version: u32,
    pub tool_version: &'static str,
    pub command: &'static str,
}

impl Header {
    /// The header of `command`'s document.
    pub fn new(command: &'static str) -> Self {
        Header {
            schema_version: SCHEMA_VERSION,
            tool_version: TOOL_VERSION,
            command,
        }
    }
}

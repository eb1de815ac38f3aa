//! One renderer per output format, each reading only the typed report.

pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod png;
pub mod sarif;
pub mod svg;
pub mod vnncomp;

use crate::certify::Timings;
use crate::report::model::Report;
use std::path::Path;

/// The files `certify` writes, in order.
pub const FILES: [&str; 6] = [
    "report.json",
    "timings.json",
    "report.html",
    "report.md",
    "junit.xml",
    "results.sarif",
];

/// Write every format into `dir` (created if needed).
pub fn write_all(dir: &Path, r: &Report, t: &Timings) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let texts = [
        json::report(r),
        json::timings(t),
        html::render(r),
        markdown::render(r),
        // Without times, so junit.xml is byte-stable too (they are in timings.json).
        junit::render(r, None),
        sarif::render(r),
    ];
    for (name, text) in FILES.iter().zip(texts) {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

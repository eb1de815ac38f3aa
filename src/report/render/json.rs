//! JSON renderer: `report.json` (the typed report, pretty-printed; byte-stable for a given
//! configuration) and `timings.json`.

use crate::certify::Timings;
use crate::report::model::Report;

/// `report.json`.
pub fn report(r: &Report) -> String {
    let mut s = serde_json::to_string_pretty(r).unwrap_or_default();
    s.push('\n');
    s
}

/// `timings.json`.
pub fn timings(t: &Timings) -> String {
    let mut s = serde_json::to_string_pretty(t).unwrap_or_default();
    s.push('\n');
    s
}

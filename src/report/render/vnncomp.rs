//! VNN-COMP result files: the verdict word, and for `sat` the assignment `((X_0 v) ... (Y_m v))`.

use crate::verify::Verdict;
use std::fmt::Write as _;
use std::path::Path;

/// VNN-COMP result text: the word on the first line; for `sat` the assignment
/// `((X_0 v) ... (Y_m v))` follows, one pair per line, values printed as shortest round-trip
/// decimals.
pub fn vnncomp_result(v: &Verdict) -> String {
    let mut s = format!("{}\n", v.word());
    if let Verdict::Falsified(cex) = v {
        let pairs: Vec<String> = cex
            .x
            .iter()
            .enumerate()
            .map(|(i, x)| format!("(X_{i} {x:?})"))
            .chain(
                cex.y
                    .iter()
                    .enumerate()
                    .map(|(j, y)| format!("(Y_{j} {y:?})")),
            )
            .collect();
        let _ = write!(s, "({})\n", pairs.join("\n "));
    }
    s
}

/// Write a VNN-COMP result file.
pub fn write_vnncomp_result(path: &Path, v: &Verdict) -> std::io::Result<()> {
    std::fs::write(path, vnncomp_result(v))
}

/// Values of a VNN-COMP result file's assignment: `(X values, Y values)` in index order.
/// Returns `None` unless the first word is `sat` and every `X_i`/`Y_j` from 0 up is present.
pub fn parse_counterexample(text: &str) -> Option<(Vec<f64>, Vec<f64>)> {
    let mut words = text.split_whitespace();
    if words.next()? != "sat" {
        return None;
    }
    let rest: String = words.collect::<Vec<_>>().join(" ");
    let cleaned = rest.replace(['(', ')'], " ");
    let toks: Vec<&str> = cleaned.split_whitespace().collect();
    let mut xs: Vec<Option<f64>> = Vec::new();
    let mut ys: Vec<Option<f64>> = Vec::new();
    for pair in toks.chunks(2) {
        let [name, val] = pair else { return None };
        let v: f64 = val.parse().ok()?;
        let (table, idx) = if let Some(i) = name.strip_prefix("X_") {
            (&mut xs, i)
        } else if let Some(i) = name.strip_prefix("Y_") {
            (&mut ys, i)
        } else {
            return None;
        };
        let i: usize = idx.parse().ok()?;
        if i >= crate::tensor::MAX_ELEMENTS {
            return None;
        }
        if table.len() <= i {
            table.resize(i + 1, None);
        }
        table[i] = Some(v);
    }
    let xs: Option<Vec<f64>> = xs.into_iter().collect();
    let ys: Option<Vec<f64>> = ys.into_iter().collect();
    Some((xs?, ys?))
}

//! Bound engines: drive the per-operator transformers over a graph.

pub mod crown;

use crate::domain::{FpMode, Intervals, Rounding};
use crate::ir::Graph;
use crate::transformers::ibp;
use serde::Serialize;

/// Bounding method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Interval bound propagation.
    Ibp,
}

impl Method {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Ibp => "ibp",
        }
    }
}

/// Interval bounds of every value of `g` for a batch of input boxes (`None` for values not
/// computed). Used by engines that need intermediate bounds.
pub fn ibp_all(g: &Graph, input: Intervals, batch: usize, mode: FpMode) -> Vec<Option<Intervals>> {
    propagate(g, input, batch, mode, true)
}

/// Interval bounds of the output of `g` for a batch of input boxes.
pub fn ibp(g: &Graph, input: Intervals, batch: usize, mode: FpMode) -> Intervals {
    let mut vals = propagate(g, input, batch, mode, false);
    vals[g.output]
        .take()
        .unwrap_or_else(|| Intervals::new(vec![], vec![]))
}

/// Run the IBP transformers in topological order; unless `keep_all`, free each value after its
/// last use.
fn propagate(
    g: &Graph,
    input: Intervals,
    batch: usize,
    mode: FpMode,
    keep_all: bool,
) -> Vec<Option<Intervals>> {
    let rnd = Rounding::new(mode, g.dtype);
    let last = g.last_use();
    let mut vals: Vec<Option<Intervals>> = vec![None; g.values.len()];
    vals[g.input] = Some(input);
    for (i, node) in g.nodes.iter().enumerate() {
        let out = {
            let ins: Vec<&Intervals> = node
                .inputs
                .iter()
                .map(|&v| vals[v].as_ref().expect("topological order"))
                .collect();
            ibp::transfer(g, node, &ins, batch, &rnd)
        };
        if !keep_all {
            for &v in &node.inputs {
                if last[v] == i && v != g.output {
                    vals[v] = None;
                }
            }
        }
        vals[node.output] = Some(out);
    }
    vals
}

/// Sound lower bound of `sum c_i y_i` over the box `[lo, hi]` (`-inf` if unbounded).
pub fn linear_min(coeffs: &[(usize, f64)], lo: &[f64], hi: &[f64]) -> f64 {
    let mut s = 0.0;
    let mut mag = 0.0;
    for &(i, c) in coeffs {
        let t = if c >= 0.0 { c * lo[i] } else { c * hi[i] };
        s += t;
        mag += t.abs();
    }
    if s.is_nan() {
        return f64::NEG_INFINITY;
    }
    // f64 rounding of the products and the sum: gamma64(n + 1) * sum |terms|.
    let n = coeffs.len() as f64 + 1.0;
    let err = n * f64::EPSILON * mag;
    (s - err).next_down()
}

//! Bound engines: drive the per-operator transformers over a graph.

pub mod alpha;
pub mod crown;

use crate::domain::{FpMode, Intervals, Rounding};
use crate::ir::Graph;
use crate::transformers::ibp;
use serde::Serialize;

/// Bounding method.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Interval bound propagation.
    Ibp,
    /// Backward linear relaxation (CROWN/DeepPoly) with CROWN intermediate bounds.
    Crown,
    /// CROWN with optimised lower ReLU slopes.
    AlphaCrown,
}

impl Method {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Ibp => "ibp",
            Method::Crown => "crown",
            Method::AlphaCrown => "alpha-crown",
        }
    }
}

/// Settings shared by the bound methods.
#[derive(Clone, Copy, Debug)]
pub struct BoundOptions {
    pub method: Method,
    pub mode: FpMode,
    /// Intersect CROWN bounds with IBP (intermediate and final); off gives plain CROWN.
    pub intersect_ibp: bool,
    pub alpha: alpha::AlphaConfig,
}

impl Default for BoundOptions {
    fn default() -> Self {
        BoundOptions {
            method: Method::AlphaCrown,
            mode: FpMode::Deployed,
            intersect_ibp: true,
            alpha: alpha::AlphaConfig::default(),
        }
    }
}

/// A linear objective `sum c_j y_j` over the graph output, for one input domain.
#[derive(Clone, Debug)]
pub struct Objective {
    pub domain: usize,
    pub coeffs: Vec<(usize, f64)>,
}

/// Sound lower bounds of each objective over its domain's input box (`input` holds `domains`
/// boxes). The spec matrix is folded into the backward pass (CROWN starts from it), which is
/// much tighter than combining output intervals.
pub fn objective_lower(
    g: &Graph,
    input: Intervals,
    domains: usize,
    objs: &[Objective],
    opts: &BoundOptions,
) -> Vec<f64> {
    let no = g.output_numel();
    let box_lower = |out: &Intervals| -> Vec<f64> {
        objs.iter()
            .map(|o| {
                let d = o.domain;
                linear_min(
                    &o.coeffs,
                    &out.lo[d * no..(d + 1) * no],
                    &out.hi[d * no..(d + 1) * no],
                )
            })
            .collect()
    };
    if opts.method == Method::Ibp {
        return box_lower(&ibp(g, input, domains, opts.mode));
    }
    let cfg = crown::CrownConfig {
        mode: opts.mode,
        intermediate: if opts.method == Method::AlphaCrown {
            crown::Intermediate::Alpha
        } else {
            crown::Intermediate::Crown
        },
        intersect_ibp: opts.intersect_ibp,
        deadline: None,
        alpha: opts.alpha,
        ..Default::default()
    };
    let c = crown::Crown::new(g, input, domains, cfg);
    let rows: Vec<usize> = objs.iter().map(|o| o.domain).collect();
    let fill = |r: usize, a: &mut [f64]| {
        for &(j, v) in &objs[r].coeffs {
            a[j] += v;
        }
    };
    let mut lower = c.lower_bounds_with(g.output, &rows, None, fill);
    if opts.method == Method::AlphaCrown {
        let opt = alpha::optimize(&c, g.output, &rows, fill, &opts.alpha);
        for (l, o) in lower.iter_mut().zip(opt) {
            *l = l.max(o);
        }
    }
    if opts.intersect_ibp {
        if let Some(out) = c.bounds[g.output].as_ref() {
            for (l, b) in lower.iter_mut().zip(box_lower(out)) {
                *l = l.max(b);
            }
        }
    }
    lower
}

/// Bounds of every output element for each domain, `[domains, outputs]`.
pub fn output_bounds(
    g: &Graph,
    input: Intervals,
    domains: usize,
    opts: &BoundOptions,
) -> Intervals {
    let no = g.output_numel();
    if opts.method == Method::Ibp {
        return ibp(g, input, domains, opts.mode);
    }
    let objs: Vec<Objective> = (0..domains)
        .flat_map(|d| (0..no).flat_map(move |j| [(d, j, 1.0), (d, j, -1.0)]))
        .map(|(domain, j, s)| Objective {
            domain,
            coeffs: vec![(j, s)],
        })
        .collect();
    let l = objective_lower(g, input, domains, &objs, opts);
    let lo = (0..domains * no).map(|i| l[2 * i]).collect();
    let hi = (0..domains * no).map(|i| -l[2 * i + 1]).collect();
    Intervals::new(lo, hi)
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

//! VNN-LIB specifications: input regions and the output property in disjunctive normal form.
//!
//! The subset VNN-COMP uses: `declare-const` of `X_i`/`Y_j` reals, `assert` over `and`, `or`,
//! `<=`, `>=`, `<`, `>`, `=` with linear terms (`+`, `-`, `*` by a constant), comments. The
//! conjunction of all asserts is expanded to DNF; each disjunct must bound every input
//! variable (a box) and may constrain outputs. Disjuncts with the same box are grouped into one
//! [`Region`], whose `disjuncts` describe the unsafe output set: the property is violated
//! (`sat`) iff some input in some region maps to an output satisfying one of its disjuncts.

mod parse;

pub use parse::parse_bytes;

use std::collections::HashMap;
use std::path::Path;
use thiserror::Error;

pub use parse::parse_str;

/// Errors of VNN-LIB parsing and checking.
#[derive(Debug, Error)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{line}:{col}: {msg}")]
    Syntax {
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("the specification has {spec} input variables, the network {network} inputs")]
    InputCount { spec: usize, network: usize },
    #[error("the specification has {spec} output variables, the network {network} outputs")]
    OutputCount { spec: usize, network: usize },
    #[error("the specification's disjunctive normal form exceeds {0} disjuncts")]
    TooLarge(usize),
    #[error(
        "the specification's disjunctive normal form would hold more than {0} atom occurrences \
         (nested disjunctions multiply; write the disjuncts out, or split the spec into files)"
    )]
    DnfTooLarge(usize),
    #[error("disjunct {disjunct}: {msg}")]
    Region { disjunct: usize, msg: String },
}

/// `sum_j coeffs[j].1 * Y[coeffs[j].0] <= rhs` (`<` when `strict`), or over `X` for
/// [`Region::input_constraints`].
#[derive(Clone, Debug, PartialEq)]
pub struct Constraint {
    pub coeffs: Vec<(usize, f64)>,
    pub rhs: f64,
    pub strict: bool,
}

impl Constraint {
    /// Whether the point `v` satisfies the constraint, evaluated exactly enough to decide: the
    /// sum is computed in f64 and the decision is refused (false) when it is within the sum's
    /// rounding error of the threshold.
    pub fn holds_at(&self, v: &[f64]) -> bool {
        let mut s = 0.0;
        let mut mag = 0.0;
        for &(i, c) in &self.coeffs {
            s += c * v[i];
            mag += (c * v[i]).abs();
        }
        let err = (self.coeffs.len() as f64 + 1.0) * f64::EPSILON * (mag + self.rhs.abs());
        if self.strict {
            s + err < self.rhs
        } else {
            s + err <= self.rhs
        }
    }
}

/// One input box with the output disjuncts that are unsafe on it.
#[derive(Clone, Debug)]
pub struct Region {
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    /// Input constraints that are not exactly representable as box bounds (non-unit
    /// coefficients or strict inequalities); the box over-approximates them.
    pub input_constraints: Vec<Constraint>,
    /// Unsafe set: any of these conjunctions (an empty conjunction is always true).
    pub disjuncts: Vec<Vec<Constraint>>,
}

impl Region {
    /// Whether `x` lies in the region exactly (box and extra input constraints).
    pub fn contains(&self, x: &[f64]) -> bool {
        x.len() == self.lower.len()
            && x.iter()
                .zip(self.lower.iter().zip(&self.upper))
                .all(|(v, (l, u))| l <= v && v <= u)
            && self.input_constraints.iter().all(|c| c.holds_at(x))
    }

    /// Index of a disjunct of the unsafe set that `y` satisfies.
    pub fn violated_by(&self, y: &[f64]) -> Option<usize> {
        self.disjuncts
            .iter()
            .position(|conj| conj.iter().all(|c| c.holds_at(y)))
    }
}

/// 1-based line where the first `assert` mentioning an output variable `Y_j` starts: where
/// the property itself is stated (reports point there).
pub fn property_line(text: &str) -> Option<usize> {
    let mut assert_line = None;
    for (i, line) in text.lines().enumerate() {
        let code = line.split(';').next().unwrap_or("");
        if code.contains("(assert") {
            assert_line = Some(i + 1);
        }
        if code.contains("Y_") && assert_line.is_some() {
            return assert_line;
        }
    }
    None
}

/// A parsed specification.
#[derive(Clone, Debug)]
pub struct Spec {
    pub num_inputs: usize,
    pub num_outputs: usize,
    pub regions: Vec<Region>,
}

/// Upper limit on DNF disjuncts, so a pathological nesting is an error, not an OOM.
pub const MAX_DISJUNCTS: usize = 1 << 20;

impl Spec {
    /// Check the variable counts against a network's input and output sizes.
    pub fn check_against(&self, inputs: usize, outputs: usize) -> Result<(), SpecError> {
        if self.num_inputs != inputs {
            return Err(SpecError::InputCount {
                spec: self.num_inputs,
                network: inputs,
            });
        }
        if self.num_outputs != outputs {
            return Err(SpecError::OutputCount {
                spec: self.num_outputs,
                network: outputs,
            });
        }
        Ok(())
    }

    /// Total output disjuncts over all regions.
    pub fn disjunct_count(&self) -> usize {
        self.regions.iter().map(|r| r.disjuncts.len()).sum()
    }
}

/// Parse a VNN-LIB file.
pub fn parse_file(path: &Path) -> Result<Spec, SpecError> {
    let text = std::fs::read(path).map_err(|source| SpecError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse::parse_bytes(&text)
}

/// Group DNF disjuncts (each a list of input and output constraints) by input box.
pub(crate) fn build_regions(
    num_inputs: usize,
    terms: Vec<(Vec<Constraint>, Vec<Constraint>)>,
) -> Result<Vec<Region>, SpecError> {
    let mut regions: Vec<Region> = Vec::new();
    let mut index: HashMap<Vec<u64>, usize> = HashMap::new();
    for (t, (xs, ys)) in terms.into_iter().enumerate() {
        let mut lower = vec![f64::NEG_INFINITY; num_inputs];
        let mut upper = vec![f64::INFINITY; num_inputs];
        let mut extra = Vec::new();
        for c in xs {
            let [(i, a)] = c.coeffs[..] else {
                return Err(SpecError::Region {
                    disjunct: t,
                    msg: "an input constraint involves several variables; only box bounds on single inputs are supported".into(),
                });
            };
            if a == 0.0 {
                continue;
            }
            let q = c.rhs / a;
            // Bound exactly when the division is exact (unit coefficients), else round outward
            // so the box contains the true half-space slice and keep the constraint for exact
            // membership tests.
            let exact = (a == 1.0 || a == -1.0) && !c.strict;
            if a > 0.0 {
                upper[i] = upper[i].min(if exact { q } else { q.next_up() });
            } else {
                lower[i] = lower[i].max(if exact { q } else { q.next_down() });
            }
            if !exact {
                extra.push(c);
            }
        }
        if let Some(i) = (0..num_inputs).find(|&i| !lower[i].is_finite() || !upper[i].is_finite()) {
            return Err(SpecError::Region {
                disjunct: t,
                msg: format!("input X_{i} is not bounded on both sides"),
            });
        }
        if (0..num_inputs).any(|i| lower[i] > upper[i]) {
            continue; // empty box: contributes nothing
        }
        let key: Vec<u64> = lower
            .iter()
            .chain(&upper)
            .map(|v| v.to_bits())
            .chain(extra.iter().flat_map(|c| {
                c.coeffs
                    .iter()
                    .flat_map(|&(i, a)| [i as u64, a.to_bits()])
                    .chain([c.rhs.to_bits(), c.strict as u64])
            }))
            .collect();
        let r = *index.entry(key).or_insert_with(|| {
            regions.push(Region {
                lower,
                upper,
                input_constraints: extra,
                disjuncts: Vec::new(),
            });
            regions.len() - 1
        });
        if !regions[r].disjuncts.contains(&ys) {
            regions[r].disjuncts.push(ys);
        }
    }
    Ok(regions)
}

//! Verification of a VNN-LIB property: one verdict type, rendered as VNN-COMP words.
//!
//! For now the only proof method is IBP: a region is proved when, for every unsafe disjunct,
//! some constraint of it is violated by every output in the IBP output box.

use crate::bounds::{self, linear_min};
use crate::domain::{FpMode, Intervals};
use crate::network::Network;
use crate::spec::{Constraint, Spec, SpecError};
use serde::Serialize;
use std::time::{Duration, Instant};

/// A checked counterexample: an input inside the spec's region whose output (as computed by
/// the concrete evaluator) satisfies an unsafe disjunct.
#[derive(Clone, Debug, Serialize)]
pub struct Counterexample {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub region: usize,
    pub disjunct: usize,
}

/// Outcome of a verification.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// The unsafe set is unreachable (`unsat`).
    Verified,
    /// A checked counterexample reaches the unsafe set (`sat`).
    Falsified(Counterexample),
    /// Neither proved nor falsified.
    Unknown,
    /// The time limit ran out.
    Timeout,
    /// The analysis could not run.
    Error(String),
}

impl Verdict {
    /// VNN-COMP result word.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Verified => "unsat",
            Verdict::Falsified(_) => "sat",
            Verdict::Unknown => "unknown",
            Verdict::Timeout => "timeout",
            Verdict::Error(_) => "error",
        }
    }

    /// Process exit code: 0 verified, 1 falsified, 3 unknown or timeout, 2 error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Verified => 0,
            Verdict::Falsified(_) => 1,
            Verdict::Unknown | Verdict::Timeout => 3,
            Verdict::Error(_) => 2,
        }
    }
}

/// Settings of a verification run.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    pub timeout: Option<Duration>,
    pub fp_mode: FpMode,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            timeout: None,
            fp_mode: FpMode::Deployed,
        }
    }
}

/// Verdict with the evidence gathered.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub verdict: Verdict,
    /// Method that settled the verdict (or the last one tried).
    pub method: &'static str,
    pub regions: usize,
    pub regions_proved: usize,
    pub disjuncts: usize,
    pub disjuncts_proved: usize,
    pub elapsed: Duration,
}

/// Whether the output box `[lo, hi]` provably avoids the conjunction: some constraint
/// `c y <= rhs` has `min c y > rhs` over the box (`>=` suffices for a strict one).
pub fn box_refutes(conj: &[Constraint], lo: &[f64], hi: &[f64]) -> bool {
    conj.iter().any(|c| {
        let m = linear_min(&c.coeffs, lo, hi);
        if c.strict { m >= c.rhs } else { m > c.rhs }
    })
}

/// Regions bounded per IBP batch.
const REGION_BATCH: usize = 256;

/// Verify `spec` on `net`.
pub fn verify(net: &Network, spec: &Spec, opts: &VerifyOptions) -> Result<VerifyReport, SpecError> {
    let start = Instant::now();
    let g = &net.analysis;
    spec.check_against(g.input_numel(), g.output_numel())?;
    let (ni, no) = (g.input_numel(), g.output_numel());
    let mut report = VerifyReport {
        verdict: Verdict::Unknown,
        method: "ibp",
        regions: spec.regions.len(),
        regions_proved: 0,
        disjuncts: spec.disjunct_count(),
        disjuncts_proved: 0,
        elapsed: Duration::ZERO,
    };
    let mut all = true;
    for chunk in spec.regions.chunks(REGION_BATCH) {
        if opts.timeout.is_some_and(|t| start.elapsed() > t) {
            report.verdict = Verdict::Timeout;
            report.elapsed = start.elapsed();
            return Ok(report);
        }
        let lo: Vec<f64> = chunk.iter().flat_map(|r| r.lower.iter().copied()).collect();
        let hi: Vec<f64> = chunk.iter().flat_map(|r| r.upper.iter().copied()).collect();
        debug_assert_eq!(lo.len(), chunk.len() * ni);
        let out = bounds::ibp(g, Intervals::new(lo, hi), chunk.len(), opts.fp_mode);
        for (b, r) in chunk.iter().enumerate() {
            let (l, h) = (&out.lo[b * no..(b + 1) * no], &out.hi[b * no..(b + 1) * no]);
            let proved = r.disjuncts.iter().filter(|d| box_refutes(d, l, h)).count();
            report.disjuncts_proved += proved;
            if proved == r.disjuncts.len() {
                report.regions_proved += 1;
            } else {
                all = false;
            }
        }
    }
    report.verdict = if all {
        Verdict::Verified
    } else {
        Verdict::Unknown
    };
    report.elapsed = start.elapsed();
    Ok(report)
}

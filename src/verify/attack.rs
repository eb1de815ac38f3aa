//! Falsification: random sampling and projected gradient descent on the property's margin.
//!
//! A candidate becomes a counterexample only after [`check_candidate`]: its input is a
//! float32 vector inside the region (exact comparison; the network sees exactly this input),
//! and the unsafe disjunct holds both for the concrete evaluator's float32 output and for the
//! float64 evaluation at the same input, with a margin larger than eight times their
//! disagreement, so a runtime that sums in another order reaches the same verdict. When
//! deployed-mode interval bounds at that input show the disjunct holds for *every* float32
//! evaluation order, the counterexample is marked `robust`.

use super::Counterexample;
use crate::bounds::{self, linear_min};
use crate::domain::{FpMode, Intervals};
use crate::eval;
use crate::eval::grad;
use crate::network::Network;
use crate::spec::Region;
use std::time::Instant;

/// Settings of the attack.
#[derive(Clone, Copy, Debug)]
pub struct AttackConfig {
    /// Random points per region (a quarter of them box vertices).
    pub samples: usize,
    /// PGD starting points per disjunct.
    pub restarts: usize,
    pub steps: usize,
    pub seed: u64,
}

impl Default for AttackConfig {
    fn default() -> Self {
        AttackConfig {
            samples: 256,
            restarts: 8,
            steps: 40,
            seed: 0,
        }
    }
}

/// SplitMix64: small, fast and reproducible across platforms.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A stream for `(seed, stream)`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD1B54A32D192ED03));
        r.next_u64();
        r
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A float32 value inside `[l, h]` nearest to `v` (the box is assumed to hold one).
pub fn to_f32_inside(v: f64, l: f64, h: f64) -> f32 {
    let mut f = v.clamp(l, h) as f32;
    if (f as f64) < l {
        f = f.next_up();
    }
    if (f as f64) > h {
        f = f.next_down();
    }
    f
}

/// Whether the conjunction `conj` holds for every output in `[lo, hi]`.
fn holds_on_box(conj: &[crate::spec::Constraint], lo: &[f64], hi: &[f64]) -> bool {
    conj.iter().all(|c| {
        let neg: Vec<(usize, f64)> = c.coeffs.iter().map(|&(i, a)| (i, -a)).collect();
        let max = -linear_min(&neg, lo, hi);
        if c.strict { max < c.rhs } else { max <= c.rhs }
    })
}

/// Whether the conjunction holds at the float32 output `y32` and, with a margin beyond the
/// float32/float64 disagreement, at the float64 output `y64`.
fn holds_with_margin(conj: &[crate::spec::Constraint], y32: &[f64], y64: &[f64]) -> bool {
    conj.iter().all(|c| {
        let (mut v32, mut v64, mut mag) = (0.0, 0.0, 0.0);
        for &(j, a) in &c.coeffs {
            v32 += a * y32[j];
            v64 += a * y64[j];
            mag += (a * y64[j]).abs();
        }
        let tol = 8.0 * (v32 - v64).abs() + 1e-9 * (1.0 + mag + c.rhs.abs());
        let ok = |v: f64| if c.strict { v < c.rhs } else { v <= c.rhs };
        ok(v32) && ok(v64 + tol)
    })
}

/// Re-check a candidate input of region `ri`; see the module documentation.
pub fn check_candidate(
    net: &Network,
    region: &Region,
    ri: usize,
    x: &[f32],
) -> Option<Counterexample> {
    let mut x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    // An input interval may hold no float32 value at all (a degenerate bound such as
    // `X_i = 0.1`): the deployed network can only be fed the nearest float32. There the
    // witness is the box point itself, accepted when its float64 evaluation and the float32
    // evaluation of `x` (one rounding away) both violate the property beyond their
    // disagreement. Coordinates whose interval does hold a float32 must be inside exactly.
    for (i, v) in x64.iter_mut().enumerate() {
        let (l, h) = (region.lower[i], region.upper[i]);
        if *v < l || *v > h {
            let f = to_f32_inside(l, l, h) as f64;
            if (l..=h).contains(&f) {
                return None;
            }
            *v = v.clamp(l, h);
        }
    }
    if !region.contains(&x64) {
        return None;
    }
    let y32 = eval::forward::<f32>(&net.exec, x, 1).ok()?;
    let y: Vec<f64> = y32.iter().map(|&v| v as f64).collect();
    let y64 = eval::forward::<f64>(&net.exec, &x64, 1).ok()?;
    let k = region
        .disjuncts
        .iter()
        .position(|conj| holds_with_margin(conj, &y, &y64))?;
    let out = bounds::ibp(
        &net.analysis,
        Intervals::point(x64.clone()),
        1,
        FpMode::Deployed,
    );
    let robust = holds_on_box(&region.disjuncts[k], &out.lo, &out.hi);
    Some(Counterexample {
        x: x64,
        y,
        region: ri,
        disjunct: k,
        robust,
    })
}

/// Evaluate a batch of float32 candidates of region `ri` and return the first that checks.
fn first_valid(
    net: &Network,
    region: &Region,
    ri: usize,
    xs: &[f32],
    n: usize,
) -> Option<Counterexample> {
    let ni = net.exec.input_numel();
    let no = net.exec.output_numel();
    let ys = eval::forward_par::<f32>(&net.exec, xs, n, 256).ok()?;
    (0..n).find_map(|s| {
        let y: Vec<f64> = ys[s * no..(s + 1) * no].iter().map(|&v| v as f64).collect();
        region.violated_by(&y)?;
        check_candidate(net, region, ri, &xs[s * ni..(s + 1) * ni])
    })
}

/// Random points of every region (centres, vertices, uniform).
pub fn random_search(
    net: &Network,
    regions: &[Region],
    cfg: &AttackConfig,
    deadline: Option<Instant>,
) -> Option<Counterexample> {
    let ni = net.exec.input_numel();
    for (ri, r) in regions.iter().enumerate() {
        if deadline.is_some_and(|d| Instant::now() > d) {
            return None;
        }
        let mut rng = Rng::new(cfg.seed, ri as u64);
        let n = cfg.samples.max(1);
        let mut xs = Vec::with_capacity(n * ni);
        for s in 0..n {
            for i in 0..ni {
                let (l, h) = (r.lower[i], r.upper[i]);
                let v = match s {
                    0 => 0.5 * l + 0.5 * h,
                    _ if s % 4 == 1 => {
                        if rng.unit() < 0.5 {
                            l
                        } else {
                            h
                        }
                    }
                    _ => l + (h - l) * rng.unit(),
                };
                xs.push(to_f32_inside(v, l, h));
            }
        }
        if let Some(c) = first_valid(net, r, ri, &xs, n) {
            return Some(c);
        }
    }
    None
}

/// Projected gradient descent on the hinge `max_i (c_i y - d_i)` of each unsafe disjunct of
/// region `ri`, from `cfg.restarts` starting points per disjunct (the first at the centre)
/// and from `starts` (`(disjunct, point)`, e.g. the box corners where a linear lower bound of
/// a constraint is attained: [`minimiser_corner`]).
pub fn pgd(
    net: &Network,
    region: &Region,
    ri: usize,
    disjuncts: &[usize],
    starts: &[(usize, Vec<f64>)],
    cfg: &AttackConfig,
    deadline: Option<Instant>,
) -> Option<Counterexample> {
    let g = &net.analysis;
    let (ni, no) = (g.input_numel(), g.output_numel());
    let (lo, hi) = (&region.lower, &region.upper);
    let mut rng = Rng::new(cfg.seed ^ 0xA77AC4, ri as u64);
    // One sample per (disjunct, restart); low-dimensional inputs get more restarts (cheap).
    let restarts = cfg.restarts.max((2048 / (ni + 1)).min(64));
    let starts: Vec<&(usize, Vec<f64>)> = starts
        .iter()
        .filter(|(k, p)| disjuncts.contains(k) && p.len() == ni)
        .collect();
    let random = disjuncts.len() * restarts;
    let targets: Vec<usize> = disjuncts
        .iter()
        .flat_map(|&k| std::iter::repeat_n(k, restarts))
        .chain(starts.iter().map(|s| s.0))
        .collect();
    let n = targets.len();
    if n == 0 {
        return None;
    }
    let mut x = vec![0.0f64; n * ni];
    for s in 0..random {
        for i in 0..ni {
            x[s * ni + i] = if s % restarts == 0 {
                0.5 * lo[i] + 0.5 * hi[i]
            } else {
                lo[i] + (hi[i] - lo[i]) * rng.unit()
            };
        }
    }
    for (s, (_, p)) in starts.iter().enumerate() {
        for i in 0..ni {
            x[(random + s) * ni + i] = p[i].clamp(lo[i], hi[i]);
        }
    }
    let mut eta = 0.25;
    for _ in 0..cfg.steps {
        if deadline.is_some_and(|d| Instant::now() > d) {
            return None;
        }
        let vals = eval::forward_values::<f64>(g, &x, n).ok()?;
        let y = vals[g.output].as_deref()?;
        // Gradient of the sum of hinges max(0, c_i y - d_i + kappa) of each sample's disjunct:
        // every unsatisfied constraint is pushed at once, slightly past its threshold.
        let mut gy = vec![0.0; n * no];
        for s in 0..n {
            let conj = &region.disjuncts[targets[s]];
            let ys = &y[s * no..(s + 1) * no];
            for c in conj {
                let v: f64 = c.coeffs.iter().map(|&(j, a)| a * ys[j]).sum::<f64>() - c.rhs;
                let kappa = 1e-4 * (1.0 + c.rhs.abs());
                if v + kappa > 0.0 {
                    for &(j, a) in &c.coeffs {
                        gy[s * no + j] += a;
                    }
                }
            }
        }
        let gx = grad::input_gradient(g, &vals, g.output, gy, n);
        for s in 0..n {
            for i in 0..ni {
                let k = s * ni + i;
                let step = eta * (hi[i] - lo[i]);
                let dir = if gx[k] > 0.0 {
                    -1.0
                } else if gx[k] < 0.0 {
                    1.0
                } else {
                    0.0
                };
                x[k] = (x[k] + step * dir).clamp(lo[i], hi[i]);
            }
        }
        eta = (eta * 0.85).max(0.002);
        let xs: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(k, &v)| to_f32_inside(v, lo[k % ni], hi[k % ni]))
            .collect();
        if let Some(c) = first_valid(net, region, ri, &xs, n) {
            return Some(c);
        }
    }
    None
}

/// The corner of the box `lo..hi` where a linear function with coefficients `a` is least: a
/// PGD start for the constraint whose linear lower bound `a` is. On mnistfc 256x6
/// prop_1_0.05 the violation is a corner of the box; the gradient's sign at the centre
/// points towards it on 223 of 784 pixels, the CROWN minimiser's corner lies on its side on
/// 533, and PGD from there finds it, where from the centre and uniform points it never did
/// (64 restarts, 100 steps).
pub fn minimiser_corner(a: &[f64], lo: &[f64], hi: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(lo.iter().zip(hi))
        .map(|(&c, (&l, &h))| if c >= 0.0 { l } else { h })
        .collect()
}

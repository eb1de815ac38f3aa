//! Linear programming relaxation of a network (HiGHS), with a *safe* dual bound.
//!
//! [`Encoding::new`] turns a graph and its intermediate bounds (one domain of a
//! [`crate::bounds::crown::Crown`]) into an LP: one column per element of every value with its
//! bounds, rows for every operator (layers as two-sided rows that include the rounding error
//! allowance, the triangle relaxation for undecided ReLUs, the relaxation lines of other
//! activations, McCormick planes for products).
//!
//! The solver's floating-point optimum is not a proof. [`Encoding::safe_lower`] turns *any*
//! row multipliers `y` (HiGHS's duals, which are nearly optimal) into a rigorous lower bound
//! (Neumaier & Shcherbina 2004): for feasible `z`, `c z = (c - A^T y) z + y (A z)`, where
//! `y (A z) >= sum_i y_i * (row_lo_i if y_i > 0 else row_hi_i)` and `(c - A^T y) z` is
//! bounded below over the column box with interval arithmetic; every product and sum is
//! widened by its f64 error term and the result rounded down. A wrong sign or an inaccurate
//! dual only loosens the bound.

use crate::bounds::crown::Crown;
use crate::domain::gamma;
use crate::ir::{Node, Op, ValueId};
use crate::ops::Family;
use crate::ops::pool::PoolRelax;
use crate::with_family;
use highs::{HighsModelStatus, RowProblem, Sense};
use thiserror::Error;

/// Errors of the LP layer.
#[derive(Debug, Error)]
pub enum LpError {
    #[error("the LP would have {0} nonzeros, more than the limit {1}")]
    TooLarge(usize, usize),
    #[error("operator {0} has no LP encoding")]
    Unsupported(&'static str),
    #[error("the LP solver stopped with status {0}")]
    Solver(String),
}

/// A sparse row `lo <= sum coef * col <= hi`.
#[derive(Clone, Debug)]
struct Row {
    terms: Vec<(usize, f64)>,
    lo: f64,
    hi: f64,
}

/// The LP relaxation of one domain.
pub struct Encoding {
    col_lo: Vec<f64>,
    col_hi: Vec<f64>,
    rows: Vec<Row>,
    /// First column of each value (`None` when not encoded).
    first: Vec<Option<usize>>,
    output: ValueId,
    nnz: usize,
}

/// Bounds of value `v` on domain `d` (unbounded when not computed).
fn domain_bound(crown: &Crown, v: ValueId, d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = crown.g.values[v].numel();
    match crown.bounds[v].as_ref() {
        Some(b) => (
            b.lo[d * n..(d + 1) * n].to_vec(),
            b.hi[d * n..(d + 1) * n].to_vec(),
        ),
        None => (vec![f64::NEG_INFINITY; n], vec![f64::INFINITY; n]),
    }
}

/// One node's view of the encoding being built: what a family's
/// [`crate::ops::Family::lp_rows`] reads (columns, bounds, rounding allowances, relaxations)
/// and the rows it adds.
pub struct LpNode<'e, 'c> {
    enc: &'e mut Encoding,
    crown: &'e Crown<'c>,
    node: &'e Node,
    d: usize,
    max_nnz: usize,
    /// First column of the node's output.
    pub y0: usize,
}

impl LpNode<'_, '_> {
    /// First column of input `i`.
    pub fn col(&self, i: usize) -> usize {
        self.node
            .inputs
            .get(i)
            .and_then(|&v| self.enc.first[v])
            .unwrap_or(0)
    }

    /// The value of input `i`.
    pub fn input(&self, i: usize) -> ValueId {
        self.node.inputs[i]
    }

    /// Elements of every input, in order.
    pub fn in_sizes(&self) -> Vec<usize> {
        let g = self.crown.g;
        self.node
            .inputs
            .iter()
            .map(|&v| g.values[v].numel())
            .collect()
    }

    /// Elements of the output.
    pub fn out_n(&self) -> usize {
        self.crown.g.values[self.node.output].numel()
    }

    /// Bounds of value `v` on this domain.
    pub fn bound(&self, v: ValueId) -> (Vec<f64>, Vec<f64>) {
        domain_bound(self.crown, v, self.d)
    }

    /// Rounding allowance of output element `j` on this domain (0 when none was computed).
    pub fn err(&self, j: usize) -> f64 {
        let n = self.out_n();
        self.crown.errs[self.node.output]
            .as_ref()
            .map_or(0.0, |e| e[self.d * n + j])
    }

    /// Add the row `lo <= sum coef * col <= hi`.
    pub fn add_row(&mut self, terms: Vec<(usize, f64)>, lo: f64, hi: f64) -> Result<(), LpError> {
        self.enc.add_row(terms, lo, hi, self.max_nnz)
    }

    /// The max-pool relaxation of this node on this domain.
    pub fn pools(&self) -> Result<Vec<PoolRelax>, LpError> {
        self.crown.pools[self.node.output]
            .as_ref()
            .map(|p| p[self.d].clone())
            .ok_or(LpError::Unsupported("max pool without relaxation"))
    }

    /// Rows of the relaxation lines of an activation: `y >= kl x + bl`, `y <= ku x + bu`
    /// (exact lines collapse to one two-sided row). `triangle` is the leak of a convex
    /// ReLU-like kink, whose lower side is the two lines through the origin with slopes leak
    /// and 1 (the triangle relaxation) instead of CROWN's one lower line.
    pub fn line_rows(&mut self, triangle: Option<f64>) -> Result<(), LpError> {
        let (x0, y0, n, d) = (self.col(0), self.y0, self.out_n(), self.d);
        let crown = self.crown;
        let lines = crown.lines[self.node.output]
            .as_deref()
            .ok_or(LpError::Unsupported("activation without relaxation"))?;
        for j in 0..n {
            let ln = lines[d * n + j];
            let ej = self.err(j);
            if ln.kl == ln.ku && ln.bl == ln.bu {
                self.add_row(
                    vec![(y0 + j, 1.0), (x0 + j, -ln.kl)],
                    ln.bl - ej,
                    ln.bl + ej,
                )?;
                continue;
            }
            if let Some(a) = triangle {
                for k in [a, 1.0] {
                    self.add_row(vec![(y0 + j, 1.0), (x0 + j, -k)], -ej, f64::INFINITY)?;
                }
            } else if ln.bl.is_finite() {
                self.add_row(
                    vec![(y0 + j, 1.0), (x0 + j, -ln.kl)],
                    ln.bl - ej,
                    f64::INFINITY,
                )?;
            }
            if ln.bu.is_finite() {
                self.add_row(
                    vec![(y0 + j, 1.0), (x0 + j, -ln.ku)],
                    f64::NEG_INFINITY,
                    ln.bu + ej,
                )?;
            }
        }
        Ok(())
    }
}

/// Result of bounding one objective.
#[derive(Clone, Copy, Debug)]
pub struct LpBound {
    /// The rigorous lower bound.
    pub safe: f64,
    /// The solver's reported optimum (not a proof; for diagnostics).
    pub reported: f64,
}

impl Encoding {
    /// Encode `crown.g` on domain `d`, refusing LPs with more than `max_nnz` nonzeros.
    pub fn new(crown: &Crown, d: usize, max_nnz: usize) -> Result<Self, LpError> {
        Self::prefix(crown, d, max_nnz, None)
    }

    /// Encode the nodes of `crown.g` up to the one producing `upto` (all when `None`).
    /// Leaving out later nodes drops constraints only, so every lower bound of this LP bounds
    /// the whole one's from below and stays sound; it is the smaller LP an intermediate bound
    /// needs (mnistfc 256x4, second ReLU layer: 267k nonzeros instead of 404k, 2.6x faster).
    pub fn prefix(
        crown: &Crown,
        d: usize,
        max_nnz: usize,
        upto: Option<ValueId>,
    ) -> Result<Self, LpError> {
        let g = crown.g;
        let mut e = Encoding {
            col_lo: Vec::new(),
            col_hi: Vec::new(),
            rows: Vec::new(),
            first: vec![None; g.values.len()],
            output: g.output,
            nnz: 0,
        };
        let (lo, hi) = domain_bound(crown, g.input, d);
        e.first[g.input] = Some(e.add_cols(&lo, &hi));
        for node in &g.nodes {
            let out = node.output;
            // A view: its columns are its input's.
            if matches!(node.op, Op::Reshape) {
                e.first[out] = e.first[node.inputs[0]];
                if upto == Some(out) {
                    break;
                }
                continue;
            }
            let (lo, hi) = domain_bound(crown, out, d);
            let y0 = e.add_cols(&lo, &hi);
            e.first[out] = Some(y0);
            let mut lp = LpNode {
                enc: &mut e,
                crown,
                node,
                d,
                max_nnz,
                y0,
            };
            with_family!(&node.op, f => f.lp_rows(&mut lp))?;
            if upto == Some(out) {
                break;
            }
        }
        Ok(e)
    }

    fn add_cols(&mut self, lo: &[f64], hi: &[f64]) -> usize {
        let first = self.col_lo.len();
        self.col_lo.extend_from_slice(lo);
        self.col_hi.extend_from_slice(hi);
        first
    }

    fn add_row(
        &mut self,
        terms: Vec<(usize, f64)>,
        lo: f64,
        hi: f64,
        max_nnz: usize,
    ) -> Result<(), LpError> {
        self.nnz += terms.len();
        if self.nnz > max_nnz {
            return Err(LpError::TooLarge(self.nnz, max_nnz));
        }
        self.rows.push(Row { terms, lo, hi });
        Ok(())
    }

    /// Number of columns and nonzeros.
    pub fn size(&self) -> (usize, usize) {
        (self.col_lo.len(), self.nnz)
    }

    /// The relaxation as a quiet single-threaded HiGHS model with zero costs, and its columns.
    fn highs_model(&self) -> (highs::Model, Vec<highs::Col>) {
        let mut pb = RowProblem::default();
        let cols: Vec<highs::Col> = (0..self.col_lo.len())
            .map(|j| pb.add_column(0.0, self.col_lo[j]..=self.col_hi[j]))
            .collect();
        for r in &self.rows {
            let t: Vec<(highs::Col, f64)> = r.terms.iter().map(|&(j, c)| (cols[j], c)).collect();
            pb.add_row(r.lo..=r.hi, &t);
        }
        let mut model = pb.optimise(Sense::Minimise);
        model.make_quiet();
        model.set_option("threads", 1);
        (model, cols)
    }

    /// Lower bounds of `c . v` (coefficients over the elements of value `v`) for each objective.
    /// From [`SPLIT_MIN`] objectives on, the first and second halves are solved in two models
    /// side by side (each warm-started along its half); the split depends on the count alone,
    /// so the bounds do not depend on the number of threads. Errors only when the time limit
    /// stops a solve (or HiGHS fails outright).
    pub fn lower_bounds(
        &self,
        v: ValueId,
        objectives: &[Vec<(usize, f64)>],
        deadline: Option<std::time::Instant>,
    ) -> Result<Vec<LpBound>, LpError> {
        if objectives.len() < SPLIT_MIN {
            return self.lower_bounds_in_one(v, objectives, deadline);
        }
        let (a, b) = objectives.split_at(objectives.len() / 2);
        let (ra, rb) = rayon::join(
            || self.lower_bounds_in_one(v, a, deadline),
            || self.lower_bounds_in_one(v, b, deadline),
        );
        let mut out = ra?;
        out.extend(rb?);
        Ok(out)
    }

    /// [`Self::lower_bounds`] in one HiGHS model whose costs change between solves
    /// (warm-started basis).
    fn lower_bounds_in_one(
        &self,
        v: ValueId,
        objectives: &[Vec<(usize, f64)>],
        deadline: Option<std::time::Instant>,
    ) -> Result<Vec<LpBound>, LpError> {
        let base = self.first[v].ok_or(LpError::Unsupported("objective on an unencoded value"))?;
        let ncols = self.col_lo.len();
        let born = std::time::Instant::now();
        let (mut model, cols) = self.highs_model();
        let mut out = Vec::with_capacity(objectives.len());
        let mut previous: Vec<usize> = Vec::new();
        for obj in objectives {
            if !set_time_limit(&mut model, born, deadline) {
                return Err(LpError::Solver("time limit".into()));
            }
            for &j in &previous {
                model.change_column_cost(cols[j], 0.0);
            }
            let mut cost = vec![0.0; ncols];
            previous.clear();
            for &(j, c) in obj {
                cost[base + j] += c;
                previous.push(base + j);
            }
            for &j in &previous {
                model.change_column_cost(cols[j], cost[j]);
            }
            // `solve` panics when HiGHS reports an error (seen once on an oval21 LP after a
            // long run); an error is no bound, which every caller already handles.
            let solved = model
                .try_solve()
                .map_err(|e| LpError::Solver(format!("HiGHS: {e:?}")))?;
            let status = solved.status();
            if status == HighsModelStatus::ReachedTimeLimit {
                return Err(LpError::Solver("time limit".into()));
            }
            // Any multipliers give a rigorous bound (`safe_lower`), so a solve HiGHS gave up
            // on (status Unknown, seen on mnistfc 256x4's fourth ReLU layer after 49 good
            // solves) still yields one, maybe weak.
            let sol = solved.get_solution();
            out.push(LpBound {
                safe: self.safe_lower(&cost, sol.dual_rows()),
                reported: cost.iter().zip(sol.columns()).map(|(c, x)| c * x).sum(),
            });
            if status == HighsModelStatus::Optimal {
                model = solved.into();
            } else {
                // The rest go on in a fresh model, away from the basis it failed from. The
                // failure does not depend on time, so a proof checker meets the same one.
                model = self.highs_model().0;
                previous.clear();
            }
        }
        Ok(out)
    }

    /// Whether the relaxation provably holds no point. HiGHS's infeasibility verdict is not a
    /// proof; its Farkas ray `y` is checked instead: the safe bound of the zero objective from
    /// `y` (or `-y`) exceeding 0 contradicts `0 = 0 . z` for any feasible `z`.
    pub fn provably_empty(&self, deadline: Option<std::time::Instant>) -> bool {
        let ncols = self.col_lo.len();
        let born = std::time::Instant::now();
        let (mut model, _) = self.highs_model();
        // Presolve may detect infeasibility without leaving a ray.
        model.set_option("presolve", "off");
        // Primal simplex: measured 95 ms to a ray on a 1034-row mnistfc domain LP, where the
        // default (dual) strategy without presolve ran past 26 s.
        model.set_option("simplex_strategy", 4);
        if !set_time_limit(&mut model, born, deadline) {
            return false;
        }
        let Ok(mut solved) = model.try_solve() else {
            return false;
        };
        if solved.status() != HighsModelStatus::Infeasible {
            return false;
        }
        let mut ray = vec![0.0f64; self.rows.len()];
        let mut has: highs_sys::HighsInt = 0;
        // SAFETY: the model pointer is live for `solved`'s lifetime and `ray` holds one value
        // per row, as Highs_getDualRay writes.
        let status =
            unsafe { highs_sys::Highs_getDualRay(solved.as_mut_ptr(), &mut has, ray.as_mut_ptr()) };
        if status != 0 || has == 0 {
            return false;
        }
        let zero = vec![0.0; ncols];
        if self.safe_lower(&zero, &ray) > 0.0 {
            return true;
        }
        ray.iter_mut().for_each(|v| *v = -*v);
        self.safe_lower(&zero, &ray) > 0.0
    }

    /// Rigorous lower bound of `min cost . z` over the relaxation from multipliers `y`.
    pub fn safe_lower(&self, cost: &[f64], y: &[f64]) -> f64 {
        let ncols = cost.len();
        let g64 = |n: usize| gamma(n + 2, 1.1102230246251565e-16);
        // Keep only multipliers whose row side is finite.
        let y: Vec<f64> = self
            .rows
            .iter()
            .zip(y)
            .map(|(r, &yi)| {
                if (yi > 0.0 && r.lo.is_finite()) || (yi < 0.0 && r.hi.is_finite()) {
                    yi
                } else {
                    0.0
                }
            })
            .collect();
        // Residual costs r = c - A^T y with a per-column error bound.
        let mut res = cost.to_vec();
        let mut mag: Vec<f64> = cost.iter().map(|c| c.abs()).collect();
        let mut cnt = vec![1usize; ncols];
        for (row, &yi) in self.rows.iter().zip(&y) {
            if yi == 0.0 {
                continue;
            }
            for &(j, a) in &row.terms {
                res[j] -= yi * a;
                mag[j] += (yi * a).abs();
                cnt[j] += 1;
            }
        }
        let mut total = 0.0;
        let mut total_mag = 0.0;
        let mut terms = 0usize;
        for (row, &yi) in self.rows.iter().zip(&y) {
            if yi != 0.0 {
                let t = if yi > 0.0 { yi * row.lo } else { yi * row.hi };
                total += t;
                total_mag += t.abs();
                terms += 1;
            }
        }
        for j in 0..ncols {
            let e = (g64(cnt[j]) * mag[j]).next_up();
            let (rl, rh) = (res[j] - e, res[j] + e);
            if rl == 0.0 && rh == 0.0 {
                continue;
            }
            let (l, u) = (self.col_lo[j], self.col_hi[j]);
            // Interval product with 0 * inf = 0 (a zero residual side ignores that bound).
            let mul = |a: f64, b: f64| if a == 0.0 || b == 0.0 { 0.0 } else { a * b };
            let m = [mul(rl, l), mul(rl, u), mul(rh, l), mul(rh, u)]
                .into_iter()
                .fold(f64::INFINITY, f64::min);
            if !m.is_finite() {
                return f64::NEG_INFINITY;
            }
            total += m;
            total_mag += m.abs();
            terms += 1;
        }
        (total - g64(terms) * total_mag).next_down()
    }

    /// The output value's first column (for objectives on the network output).
    pub fn output(&self) -> ValueId {
        self.output
    }
}

/// Objectives from which [`Encoding::lower_bounds`] solves in two models: below it the second
/// cold start costs more than the second core gains.
pub const SPLIT_MIN: usize = 4;

/// Size limits of the LP stage and of LP on branch-and-bound domains.
#[derive(Clone, Copy, Debug)]
pub struct LpLimits {
    /// Largest LP (nonzeros) built.
    pub max_nnz: usize,
    /// Largest number of undecided neurons whose bounds are tightened by LP (two solves each).
    pub max_tighten: usize,
}

impl Default for LpLimits {
    fn default() -> Self {
        LpLimits {
            max_nnz: 2_000_000,
            max_tighten: 400,
        }
    }
}

/// Let `model` (created at `born`) run until `deadline`; false when no time is left. HiGHS
/// measures `time_limit` from the model's creation, across all its solves, so the limit is the
/// deadline's distance from `born`, not the time left (which stopped warm re-solves early).
fn set_time_limit(
    model: &mut highs::Model,
    born: std::time::Instant,
    deadline: Option<std::time::Instant>,
) -> bool {
    let Some(d) = deadline else {
        return true;
    };
    if d <= std::time::Instant::now() {
        return false;
    }
    model.set_option(
        "time_limit",
        d.saturating_duration_since(born).as_secs_f64(),
    );
    true
}

/// Tighten the bounds of undecided ReLU inputs layer by layer with LP (minimise and maximise
/// each one over the relaxation built from the bounds so far), recomputing the later layers'
/// CROWN bounds after each layer. Returns the CROWN engine with the tightened bounds for the
/// single domain `input` and the number of layers tightened; a layer the solver does not
/// finish (time limit) ends the tightening with the layers before it kept, since each
/// finished layer's bounds are sound on their own. `layers` stops after that many (a proof
/// checker repeats a run's tightening without its time limit).
pub fn tighten_layers<'g>(
    g: &'g crate::ir::Graph,
    input: crate::domain::Intervals,
    cfg: crate::bounds::crown::CrownConfig,
    limits: &LpLimits,
    layers: Option<usize>,
) -> Result<(Crown<'g>, usize), LpError> {
    use crate::bounds::crown::Seeds;
    use crate::transformers::relax;
    let mut c = Crown::new(g, input.clone(), 1, cfg);
    let mut budget = limits.max_tighten;
    // Until some ReLU is undecided (and no other nonlinearity came first) the relaxation is
    // exact and the LP gives nothing CROWN has not (mnistfc: 2.6 s of LPs on the first
    // layer, no bound changed).
    let mut relaxed_before = false;
    let mut done = 0;
    // Wall seconds per objective of the last layer tightened.
    let mut per_objective: Option<f64> = None;
    for (idx, node) in g.nodes.iter().enumerate() {
        if !matches!(node.op, Op::Relu | Op::LeakyRelu { .. }) {
            relaxed_before |=
                node.op.is_activation() || matches!(node.op, Op::MaxPool(_) | Op::Binary(_));
            continue;
        }
        if budget == 0 {
            continue;
        }
        if cfg.deadline.is_some_and(|d| std::time::Instant::now() > d)
            || layers.is_some_and(|n| done >= n)
        {
            break;
        }
        let v = node.inputs[0];
        let Some(b) = c.bounds[v].as_ref() else {
            continue;
        };
        let unstable: Vec<usize> = (0..b.lo.len())
            .filter(|&j| relax::unstable(b.lo[j], b.hi[j]))
            .take(budget)
            .collect();
        if unstable.is_empty() {
            continue;
        }
        if !std::mem::replace(&mut relaxed_before, true) {
            continue;
        }
        budget -= unstable.len();
        let enc = Encoding::prefix(&c, 0, limits.max_nnz, Some(v))?;
        // Every lower bound first, then every upper one: consecutive objectives point the
        // same way, and warm starts took 12 % fewer simplex iterations than alternating
        // (mnistfc 256x4 prop_14_0.05, second and third ReLU layers).
        let objs: Vec<Vec<(usize, f64)>> = [1.0, -1.0]
            .iter()
            .flat_map(|&s| unstable.iter().map(move |&j| vec![(j, s)]))
            .collect();
        // A layer that cannot finish by the deadline is lost whole, and its time with it
        // (mnistfc 256x4 prop_14_0.05: 20 s of a 25 s stage on its fourth ReLU layer, cut
        // off), so it is not started when the last layer's time per objective, at least, says
        // so; deeper layers' LPs were never cheaper per objective in our runs.
        if let (Some(d), Some(rate)) = (cfg.deadline, per_objective) {
            let left = d.saturating_duration_since(std::time::Instant::now());
            if rate * objs.len() as f64 > left.as_secs_f64() {
                break;
            }
        }
        let started = std::time::Instant::now();
        let solved = enc.lower_bounds(v, &objs, cfg.deadline);
        per_objective = Some(started.elapsed().as_secs_f64() / objs.len() as f64);
        let res = match solved {
            Ok(res) => res,
            Err(LpError::Solver(_)) => break,
            Err(e) => return Err(e),
        };
        let n = unstable.len();
        let mut bounds = c.bounds.clone();
        if let Some(bv) = bounds[v].as_mut() {
            for (t, &j) in unstable.iter().enumerate() {
                bv.lo[j] = bv.lo[j].max(res[t].safe);
                bv.hi[j] = bv.hi[j].min(-res[n + t].safe);
            }
        }
        let producer = g.nodes.iter().position(|n| n.output == v).unwrap_or(idx);
        let seeds = Seeds {
            bounds,
            splits: Vec::new(),
            skip_before: producer + 1,
        };
        c = Crown::build(g, input.clone(), 1, cfg, Some(&seeds));
        done += 1;
    }
    Ok((c, done))
}

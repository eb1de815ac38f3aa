//! Joint refutation of a conjunction of output constraints.
//!
//! An unsafe disjunct `c_j y <= d_j (j = 1..m)` is refuted on a box when some single
//! `min c_j f(x) > d_j`; but a box that straddles the places where different constraints fail
//! needs every `c_j` at once. For any `lambda >= 0`, every unsafe point satisfies
//! `sum_j lambda_j c_j f(x) <= sum_j lambda_j d_j`, so a sound lower bound of the combined row
//! above the combined threshold refutes the whole conjunction (a Farkas argument; the
//! combination is itself an ordinary objective row, so CROWN bounds it with all its rounding
//! care and nothing here needs to be exact).
//!
//! `lambda` is chosen from the rows' own linear bounds `c_j f(x) >= A_j x + b_j`: the best
//! combination of them is `max_{lambda in simplex} min_{x in box} sum_j lambda_j (A_j x + b_j - d_j)`,
//! a concave piecewise-linear problem solved approximately by exponentiated supergradient
//! ascent. Its primal iterates approach `argmin_x max_j (A_j x + b_j - d_j)`, the point that the
//! linear bounds find most nearly unsafe, a good counterexample candidate.

/// A combination of one disjunct's constraints chosen for one box.
#[derive(Clone, Debug)]
pub struct Combination {
    /// Weights of the constraints (on the simplex).
    pub lambda: Vec<f64>,
    /// The combined bound's predicted value (> 0 predicts a refutation; not sound).
    pub predicted: f64,
    /// The primal point (inside the box) the linear bounds find most nearly unsafe.
    pub x: Vec<f64>,
}

/// The box point minimising `c . x`; ties take the midpoint.
fn corner(c: &[f64], lo: &[f64], hi: &[f64], x: &mut [f64]) {
    for i in 0..c.len() {
        x[i] = if c[i] > 0.0 {
            lo[i]
        } else if c[i] < 0.0 {
            hi[i]
        } else {
            0.5 * lo[i] + 0.5 * hi[i]
        };
    }
}

/// Choose `lambda` for linear bounds `rows[j] . x + e[j]` (offsets already minus the
/// thresholds) over the box `[lo, hi]`, with `iters` ascent steps.
pub fn choose(rows: &[&[f64]], e: &[f64], lo: &[f64], hi: &[f64], iters: usize) -> Combination {
    let m = rows.len();
    let n = lo.len();
    let mut lambda = vec![1.0 / m as f64; m];
    let mut best = Combination {
        lambda: lambda.clone(),
        predicted: f64::NEG_INFINITY,
        x: lo.iter().zip(hi).map(|(l, h)| 0.5 * l + 0.5 * h).collect(),
    };
    let mut c = vec![0.0; n];
    let mut x = vec![0.0; n];
    let mut xsum = vec![0.0; n];
    let mut wsum = 0.0;
    let mut g = vec![0.0; m];
    for t in 0..iters.max(1) {
        c.iter_mut().for_each(|v| *v = 0.0);
        for (j, r) in rows.iter().enumerate() {
            for i in 0..n {
                c[i] += lambda[j] * r[i];
            }
        }
        corner(&c, lo, hi, &mut x);
        for j in 0..m {
            g[j] = e[j] + rows[j].iter().zip(&x).map(|(a, v)| a * v).sum::<f64>();
        }
        let phi: f64 = lambda.iter().zip(&g).map(|(l, v)| l * v).sum();
        if !phi.is_finite() {
            break;
        }
        if phi > best.predicted {
            best.predicted = phi;
            best.lambda.copy_from_slice(&lambda);
        }
        // Later iterates weigh more in the primal average.
        let w = (t + 1) as f64;
        xsum.iter_mut().zip(&x).for_each(|(s, v)| *s += w * v);
        wsum += w;
        // Exponentiated ascent: the step is scaled by the spread of the supergradient.
        let (gmin, gmax) = g
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let spread = gmax - gmin;
        if spread <= 0.0 {
            break;
        }
        let eta = 4.0 / (spread * ((t + 1) as f64).sqrt());
        let mut z = 0.0;
        for j in 0..m {
            lambda[j] *= (eta * (g[j] - gmax)).exp();
            z += lambda[j];
        }
        if z <= 0.0 || !z.is_finite() {
            break;
        }
        // Keep every weight above a floor so a constraint can come back.
        for l in lambda.iter_mut() {
            *l = (*l / z).max(1e-12);
        }
    }
    if wsum > 0.0 {
        best.x = xsum.iter().map(|s| s / wsum).collect();
    }
    best
}

/// Exact best combination for small problems: the LP `min t` subject to
/// `rows[j] . x + e[j] <= t` over the box, by a dense primal simplex (Bland's rule); the
/// weights are the constraints' dual values. `None` if the simplex does not finish within
/// its pivot limit (the caller falls back to [`choose`]).
///
/// Nothing here needs to be exact: the caller bounds the combination soundly.
pub fn solve_lp(rows: &[&[f64]], e: &[f64], lo: &[f64], hi: &[f64]) -> Option<Combination> {
    let m = rows.len();
    let n = lo.len();
    if m == 0 {
        return None;
    }
    let w: Vec<f64> = lo.iter().zip(hi).map(|(l, h)| h - l).collect();
    // In w = x - lo in [0, W]: f_j = at_lo[j] + rows[j] . w.
    let at_lo: Vec<f64> = (0..m)
        .map(|j| e[j] + rows[j].iter().zip(lo).map(|(a, l)| a * l).sum::<f64>())
        .collect();
    let box_min = |j: usize| {
        at_lo[j]
            + rows[j]
                .iter()
                .zip(&w)
                .map(|(a, wi)| a.min(0.0) * wi)
                .sum::<f64>()
    };
    let mins: Vec<f64> = (0..m).map(box_min).collect();
    // t = tl + t' with t' >= 0: tl (the best single row) is below the optimum.
    let (jbest, tl) = mins
        .iter()
        .copied()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
    if !tl.is_finite() {
        return None;
    }
    let beta: Vec<f64> = (0..m).map(|j| tl - at_lo[j]).collect();
    let single = |j: usize| {
        let mut lambda = vec![0.0; m];
        lambda[j] = 1.0;
        let x = (0..n)
            .map(|i| if rows[j][i] > 0.0 { lo[i] } else { hi[i] })
            .collect();
        Some(Combination {
            lambda,
            predicted: mins[j],
            x,
        })
    };
    let (istar, bmin) = beta
        .iter()
        .copied()
        .enumerate()
        .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    if bmin >= 0.0 {
        return single(jbest);
    }
    // Tableau: rows j < m are `rows[j] . w - t' + s_j = beta_j`, rows m + i are
    // `w_i + s'_i = W_i`; columns w (n), t' (1), s (m), s' (n), then the right-hand side.
    let (nr, nc) = (m + n, 2 * n + 1 + m);
    let tcol = n;
    let mut t = vec![0.0; nr * (nc + 1)];
    let at = |r: usize, c: usize| r * (nc + 1) + c;
    for j in 0..m {
        for i in 0..n {
            t[at(j, i)] = rows[j][i];
        }
        t[at(j, tcol)] = -1.0;
        t[at(j, n + 1 + j)] = 1.0;
        t[at(j, nc)] = beta[j];
    }
    for i in 0..n {
        t[at(m + i, i)] = 1.0;
        t[at(m + i, n + 1 + m + i)] = 1.0;
        t[at(m + i, nc)] = w[i];
    }
    let mut basis: Vec<usize> = (0..nr).map(|r| n + 1 + r).collect();
    let pivot = |t: &mut [f64], basis: &mut [usize], pr: usize, pc: usize| {
        let p = t[at(pr, pc)];
        for c in 0..=nc {
            t[at(pr, c)] /= p;
        }
        for r in 0..nr {
            if r == pr {
                continue;
            }
            let f = t[at(r, pc)];
            if f != 0.0 {
                for c in 0..=nc {
                    t[at(r, c)] -= f * t[at(pr, c)];
                }
            }
        }
        basis[pr] = pc;
    };
    // Entering t' on the most violated row makes every right-hand side non-negative.
    pivot(&mut t, &mut basis, istar, tcol);
    let scale = beta.iter().fold(0.0f64, |a, b| a.max(b.abs())).max(1e-300);
    let eps = 1e-12;
    let mut reduced = vec![0.0; nc];
    let mut done = false;
    for _ in 0..50 * (nr + nc) {
        // Reduced costs of minimising t': c_k - c_B B^-1 A_k, with c = e_{t'}.
        for (k, d) in reduced.iter_mut().enumerate() {
            *d = if k == tcol { 1.0 } else { 0.0 };
            for r in 0..nr {
                if basis[r] == tcol {
                    *d -= t[at(r, k)];
                }
            }
        }
        let Some(pc) = (0..nc).find(|&k| reduced[k] < -eps && !basis.contains(&k)) else {
            done = true;
            break;
        };
        let mut best: Option<(f64, usize)> = None;
        for r in 0..nr {
            let a = t[at(r, pc)];
            if a > eps {
                let ratio = t[at(r, nc)].max(0.0) / a;
                let better = match best {
                    None => true,
                    Some((br, bi)) => {
                        ratio < br - eps * scale
                            || (ratio <= br + eps * scale && basis[r] < basis[bi])
                    }
                };
                if better {
                    best = Some((ratio, r));
                }
            }
        }
        let (_, pr) = best?;
        pivot(&mut t, &mut basis, pr, pc);
    }
    if !done {
        return None;
    }
    // Dual value of row j: the reduced cost of its slack.
    let mut lambda: Vec<f64> = (0..m).map(|j| reduced[n + 1 + j].max(0.0)).collect();
    let total: f64 = lambda.iter().sum();
    if !(total > 0.0) || !total.is_finite() {
        return None;
    }
    lambda.iter_mut().for_each(|l| *l /= total);
    let mut x = lo.to_vec();
    for r in 0..nr {
        if basis[r] < n {
            x[basis[r]] = (lo[basis[r]] + t[at(r, nc)]).clamp(lo[basis[r]], hi[basis[r]]);
        }
    }
    // The weights' own value over the box (the LP optimum, up to rounding).
    let predicted = (0..m).map(|j| lambda[j] * at_lo[j]).sum::<f64>()
        + (0..n)
            .map(|i| {
                let c: f64 = (0..m).map(|j| lambda[j] * rows[j][i]).sum();
                c.min(0.0) * w[i]
            })
            .sum::<f64>();
    Some(Combination {
        lambda,
        predicted,
        x,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lp_matches_the_exact_optimum() {
        // Same as below: the LP finds lambda = (1/2, 1/2) exactly.
        let (r1, r2) = ([1.0], [-1.0]);
        let c = solve_lp(&[&r1, &r2], &[0.5, 0.5], &[-1.0], &[1.0]).expect("lp");
        assert!((c.predicted - 0.5).abs() < 1e-12, "{c:?}");
        assert!((c.lambda[0] - 0.5).abs() < 1e-12);
        // max(x - 0.2, -x) on [-1, 1]: optimum -0.1 at x = 0.1.
        let c = solve_lp(&[&r1, &r2], &[-0.2, 0.0], &[-1.0], &[1.0]).expect("lp");
        assert!((c.predicted + 0.1).abs() < 1e-12, "{c:?}");
        assert!((c.x[0] - 0.1).abs() < 1e-12, "{c:?}");
    }

    #[test]
    fn lp_agrees_with_long_ascent_in_two_dimensions() {
        // Four rows on a 2-D box; the ascent with many steps approaches the LP optimum.
        let rows: [[f64; 2]; 4] = [[1.0, 0.3], [-0.7, 1.0], [-0.2, -1.0], [0.5, -0.4]];
        let e = [0.1, -0.05, 0.2, 0.0];
        let rr: Vec<&[f64]> = rows.iter().map(|r| &r[..]).collect();
        let (lo, hi) = ([-1.0, -0.5], [0.5, 1.0]);
        let lp = solve_lp(&rr, &e, &lo, &hi).expect("lp");
        let asc = choose(&rr, &e, &lo, &hi, 20_000);
        assert!(lp.predicted >= asc.predicted - 1e-9, "{lp:?} {asc:?}");
        assert!(lp.predicted - asc.predicted < 1e-3, "{lp:?} {asc:?}");
        // The primal point attains the optimum: max_j f_j(x) = predicted.
        let f = |j: usize| e[j] + rows[j][0] * lp.x[0] + rows[j][1] * lp.x[1];
        let worst = (0..4).map(f).fold(f64::NEG_INFINITY, f64::max);
        assert!((worst - lp.predicted).abs() < 1e-9, "{worst} {lp:?}");
    }

    #[test]
    fn finds_the_separating_combination() {
        // y1 = x, y2 = -x on [-1, 1], unsafe: x + 0.5 <= 0 and -x + 0.5 <= 0 (empty). No single
        // row refutes (each has min -0.5), the average does (min 0.5).
        let (r1, r2) = ([1.0], [-1.0]);
        let c = choose(&[&r1, &r2], &[0.5, 0.5], &[-1.0], &[1.0], 64);
        assert!(c.predicted > 0.49, "{c:?}");
        assert!((c.lambda[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn primal_point_approaches_the_least_safe_point() {
        // max(x - 0.2, -x) is smallest at x = 0.1 (value -0.1), the corners give 0.8 and 1.
        // The averaged iterate is only a candidate: it must be far better than a corner.
        let (r1, r2) = ([1.0], [-1.0]);
        let c = choose(&[&r1, &r2], &[-0.2, 0.0], &[-1.0], &[1.0], 200);
        assert!((c.predicted + 0.1).abs() < 1e-3, "{c:?}");
        let at = (c.x[0] - 0.2).max(-c.x[0]);
        assert!(at < 0.05 && c.x[0].abs() <= 1.0, "{c:?}");
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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

//! Sound linear relaxations of the piecewise-linear activations (ReLU, LeakyReLU; smooth
//! functions derive theirs in [`crate::ops::elementwise`]): for an input interval `[l, u]`, a lower
//! line `kl x + bl` and an upper line `ku x + bu` with `kl x + bl <= f(x) <= ku x + bu` on
//! `[l, u]`, including every float error of computing the lines themselves.

/// Lower and upper bounding lines of one neuron.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lines {
    pub kl: f64,
    pub bl: f64,
    pub ku: f64,
    pub bu: f64,
}

impl Lines {
    /// `f(x) = k x + b` exactly.
    pub fn exact(k: f64, b: f64) -> Self {
        Lines {
            kl: k,
            bl: b,
            ku: k,
            bu: b,
        }
    }
}

/// Relative and absolute slack that covers the f64 rounding of a line's intercept computed
/// from a few products and differences.
fn slack(k: f64, l: f64, u: f64, b: f64) -> f64 {
    8.0 * f64::EPSILON * (b.abs() + k.abs() * l.abs().max(u.abs()) + l.abs().max(u.abs())) + 1e-300
}

/// Intercept of a line with slope `k` that lies above a *convex* function on `[l, u]`: above
/// both endpoints suffices.
fn convex_upper(k: f64, l: f64, fl: f64, u: f64, fu: f64) -> f64 {
    let b = (fl - k * l).max(fu - k * u);
    (b + slack(k, l, u, b)).next_up()
}

/// Intercept of a line with slope `k` that lies below a *concave* function on `[l, u]`.
fn concave_lower(k: f64, l: f64, fl: f64, u: f64, fu: f64) -> f64 {
    let b = (fl - k * l).min(fu - k * u);
    (b - slack(k, l, u, b)).next_down()
}

/// Is the neuron undecided (its input interval straddles the kink at 0)?
pub fn unstable(l: f64, u: f64) -> bool {
    l < 0.0 && u > 0.0
}

/// The CROWN/DeepPoly adaptive lower slope: 1 when the positive side dominates, else 0.
pub fn adaptive_alpha(l: f64, u: f64) -> f64 {
    if u > -l { 1.0 } else { 0.0 }
}

/// ReLU on `[l, u]` with lower slope `alpha` in `[0, 1]` (any such slope is sound).
pub fn relu(l: f64, u: f64, alpha: f64) -> Lines {
    leaky_relu(l, u, 0.0, alpha)
}

/// LeakyReLU with negative slope `a` on `[l, u]`; `beta` is the lower slope through the origin
/// for `a <= 1` (sound for any `beta` in `[a, 1]`), the upper one for `a > 1` (`[1, a]`).
pub fn leaky_relu(l: f64, u: f64, a: f64, beta: f64) -> Lines {
    if !(l.is_finite() && u.is_finite()) {
        return Lines {
            kl: 0.0,
            bl: f64::NEG_INFINITY,
            ku: 0.0,
            bu: f64::INFINITY,
        };
    }
    if l >= 0.0 {
        return Lines::exact(1.0, 0.0);
    }
    if u <= 0.0 {
        return Lines::exact(a, 0.0);
    }
    let (fl, fu) = (a * l, u);
    let k = (fu - fl) / (u - l);
    if a <= 1.0 {
        // Convex: a chord-slope line above the endpoints, a line through the origin below.
        Lines {
            kl: beta.clamp(a, 1.0),
            bl: 0.0,
            ku: k,
            bu: convex_upper(k, l, fl, u, fu),
        }
    } else {
        Lines {
            kl: k,
            bl: concave_lower(k, l, fl, u, fu),
            ku: beta.clamp(1.0, a),
            bu: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: impl Fn(f64) -> f64, ln: Lines, l: f64, u: f64) {
        for i in 0..=1000 {
            let x = l + (u - l) * i as f64 / 1000.0;
            let y = f(x);
            assert!(ln.kl * x + ln.bl <= y + 1e-15, "lower at {x}: {ln:?}");
            assert!(ln.ku * x + ln.bu >= y - 1e-15, "upper at {x}: {ln:?}");
        }
    }

    #[test]
    fn relu_and_leaky_lines_are_sound() {
        for &(l, u) in &[
            (-1.0, 2.0),
            (-3.0, 0.5),
            (0.1, 2.0),
            (-2.0, -0.1),
            (-1e-8, 1e-8),
        ] {
            for &alpha in &[0.0, 0.3, 1.0] {
                check(|x: f64| x.max(0.0), relu(l, u, alpha), l, u);
            }
            for &a in &[0.01, 0.5, 2.0] {
                for &b in &[a, 1.0, 0.7] {
                    check(
                        |x: f64| if x < 0.0 { a * x } else { x },
                        leaky_relu(l, u, a, b),
                        l,
                        u,
                    );
                }
            }
        }
    }
}

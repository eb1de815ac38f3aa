//! The elementwise-function family: every scalar function `y = f(x)` applied to each element.
//!
//! A function is one [`Def`]: the value (f64, and float32 as deployed), the derivative (a
//! one-sided slope at kinks), its *shape* (the breakpoints and whether `f` is convex, concave
//! or linear between them, and what kind of kink each breakpoint is), its domain and the
//! deployed runtime's error allowance. A [`Func`] is a `Def` with its parameters. Everything
//! else is derived from those, once, here:
//!
//! * [`extremes`]: a verified lower bound of `min (f(x) - k x)` and upper bound of
//!   `max (f(x) - k x)` over `[l, u]`. On a convex piece the maximum sits at an endpoint and,
//!   for any `x0`, `g(x) >= g(x0) + g'(x0) (x - x0)` bounds the minimum from below (tight when
//!   `x0` is near the stationary point, found by bisection on the monotone `g'`); concave
//!   pieces are symmetric, linear pieces attain both at their ends. Breakpoints that are not
//!   exactly representable (`±sqrt 2`, multiples of pi/2, `-beta/alpha`) are covered by a
//!   sliver of width `2 delta` bounded by its Lipschitz constant instead, so rounding a
//!   breakpoint can never attribute the wrong curvature to a point.
//! * IBP ([`interval`]): `extremes` with `k = 0`, widened by the allowance.
//! * CROWN lines ([`lines`]): on a convex range a tangent at the midpoint below and the chord
//!   above, on a concave range the reverse, otherwise two lines with the chord's slope; every
//!   intercept is the verified extreme of `f(x) - k x`, widened by the allowance.
//! * the VJP (reverse mode) from the derivative; the evaluator from the values.
//!
//! Piecewise-constant functions (Floor, Ceil, Round, Sign) are non-decreasing: their interval
//! is `[f(l), f(u)]`, exact, and their lines are those constants.

use crate::domain::{FpMode, Rounding};
use serde::Serialize;
use std::f64::consts::{FRAC_PI_2, PI, SQRT_2};

/// Curvature of `f` between two breakpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curv {
    Convex,
    Concave,
    Linear,
}

/// What happens at a breakpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kink {
    /// `f` is differentiable there (an inflection point).
    Smooth,
    /// The slope jumps up (as ReLU's at 0): convex across it.
    Convex,
    /// The slope jumps down: concave across it.
    Concave,
}

/// A breakpoint: where it is, whether that f64 is exactly the breakpoint, and its kink.
#[derive(Clone, Copy, Debug)]
pub struct Break {
    pub x: f64,
    pub exact: bool,
    pub kink: Kink,
}

/// The pieces of `f` over (part of) the real line: `curv[i]` holds between `breaks[i - 1]`
/// and `breaks[i]`.
#[derive(Clone, Debug)]
pub struct Shape {
    pub breaks: Vec<Break>,
    pub curv: Vec<Curv>,
}

impl Shape {
    fn one(c: Curv) -> Self {
        Shape {
            breaks: vec![],
            curv: vec![c],
        }
    }
    fn two(c0: Curv, x: f64, exact: bool, kink: Kink, c1: Curv) -> Self {
        Shape {
            breaks: vec![Break { x, exact, kink }],
            curv: vec![c0, c1],
        }
    }
}

/// The deployed runtime's error in one evaluation: `|f_deployed(x) - f(x)| <= abs + rel |f(x)|`.
#[derive(Clone, Copy, Debug)]
pub struct Allowance {
    pub abs: f64,
    pub rel: f64,
}

/// 2^-19: at least 6x the largest difference to onnxruntime measured on 10^6 samples of every
/// transcendental function (`tests/data/allowances.json`, `scripts/measure_allowances.py`;
/// the worst, tanh near 1, is 3.2e-7).
pub const TRANSCENDENTAL: Allowance = Allowance {
    abs: 1.9073486328125e-6,
    rel: 1.9073486328125e-6,
};
/// Results the runtime computes exactly (comparisons, selections, rounding to integers).
pub const EXACT: Allowance = Allowance { abs: 0.0, rel: 0.0 };
/// A few roundings of basic arithmetic (hard sigmoid / swish): covered by the same bound.
pub const ARITHMETIC: Allowance = TRANSCENDENTAL;

/// Parameters of a function (`Pow`'s exponent, `Clip`'s bounds, ...); unused ones are 0.
pub type Params = [f64; 2];

/// One elementwise function: everything every analysis needs, in one entry. Adding a
/// function is adding one of these (and, when it takes parameters, one importer line that
/// reads them); see the README's "Adding an elementwise function".
pub struct Def {
    /// ONNX operator name (default domain).
    pub name: &'static str,
    /// `f(x)` in real arithmetic (f64, libm accuracy).
    pub value: fn(f64, Params) -> f64,
    /// `f(x)` in float32 as the deployed network computes it (within the allowance); `None`:
    /// the f64 value rounded to float32.
    pub value_f32: Option<fn(f32, Params) -> f32>,
    /// `f'(x)`; at a kink either one-sided slope.
    pub derivative: fn(f64, Params) -> f64,
    /// The pieces covering `[l, u]` (`None`: too many to handle).
    pub shape: fn(f64, f64, Params) -> Option<Shape>,
    /// Whether `f` is defined (finite) on all of `[l, u]`.
    pub defined_on: fn(f64, f64, Params) -> bool,
    /// The deployed runtime's error allowance.
    pub allowance: Allowance,
    /// Piecewise constant and non-decreasing (Floor, Ceil, Round, Sign).
    pub step: bool,
}

fn everywhere(_: f64, _: f64, _: Params) -> bool {
    true
}
fn positive(l: f64, _: f64, _: Params) -> bool {
    l > 0.0
}
fn one(c: Curv) -> Option<Shape> {
    Some(Shape::one(c))
}
fn smooth_s(_: f64, _: f64, _: Params) -> Option<Shape> {
    Some(Shape::two(
        Curv::Convex,
        0.0,
        true,
        Kink::Smooth,
        Curv::Concave,
    ))
}
fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}
fn erf64(x: f64) -> f64 {
    statrs::function::erf::erf(x)
}
/// `Phi(x) = (1 + erf(x / sqrt 2)) / 2` without the cancellation of `1 + erf` in the left tail.
fn phi_cdf(x: f64) -> f64 {
    0.5 * statrs::function::erf::erfc(-x / SQRT_2)
}
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
fn is_integer(p: f64) -> bool {
    p.fract() == 0.0 && p.abs() < 1e15
}
fn brk(x: f64, exact: bool, kink: Kink) -> Break {
    Break { x, exact, kink }
}
fn kinked(breaks: Vec<Break>) -> Option<Shape> {
    let n = breaks.len() + 1;
    Some(Shape {
        breaks,
        curv: vec![Curv::Linear; n],
    })
}

pub const SIGMOID: Def = Def {
    name: "Sigmoid",
    value: |x, _| sigmoid(x),
    value_f32: Some(|x, _| 1.0 / (1.0 + (-x).exp())),
    derivative: |x, _| {
        let s = sigmoid(x);
        s * (1.0 - s)
    },
    shape: smooth_s,
    defined_on: everywhere,
    allowance: TRANSCENDENTAL,
    step: false,
};
pub const TANH: Def = Def {
    name: "Tanh",
    value: |x, _| x.tanh(),
    value_f32: Some(|x, _| x.tanh()),
    derivative: |x, _| 1.0 - x.tanh().powi(2),
    shape: smooth_s,
    defined_on: everywhere,
    allowance: TRANSCENDENTAL,
    step: false,
};
pub const ERF: Def = Def {
    name: "Erf",
    value: |x, _| erf64(x),
    value_f32: None,
    derivative: |x, _| 2.0 / PI.sqrt() * (-x * x).exp(),
    shape: smooth_s,
    defined_on: everywhere,
    allowance: TRANSCENDENTAL,
    step: false,
};
pub const EXP: Def = Def {
    name: "Exp",
    value: |x, _| x.exp(),
    value_f32: Some(|x, _| x.exp()),
    derivative: |x, _| x.exp(),
    shape: |_, _, _| one(Curv::Convex),
    defined_on: everywhere,
    allowance: TRANSCENDENTAL,
    step: false,
};
pub const SOFTPLUS: Def = Def {
    name: "Softplus",
    value: |x, _| {
        if x > 0.0 {
            x + (-x).exp().ln_1p()
        } else {
            x.exp().ln_1p()
        }
    },
    value_f32: None,
    derivative: |x, _| sigmoid(x),
    shape: |_, _, _| one(Curv::Convex),
    defined_on: everywhere,
    allowance: TRANSCENDENTAL,
    step: false,
};
pub const LOG: Def = Def {
    name: "Log",
    value: |x, _| x.ln(),
    value_f32: Some(|x, _| x.ln()),
    derivative: |x, _| 1.0 / x,
    shape: |_, _, _| one(Curv::Concave),
    defined_on: positive,
    allowance: TRANSCENDENTAL,
    step: false,
};
pub const SQRT: Def = Def {
    name: "Sqrt",
    value: |x, _| x.sqrt(),
    value_f32: Some(|x, _| x.sqrt()),
    derivative: |x, _| 0.5 / x.sqrt(),
    shape: |_, _, _| one(Curv::Concave),
    defined_on: |l, _, _| l >= 0.0,
    allowance: TRANSCENDENTAL,
    step: false,
};
pub const RECIPROCAL: Def = Def {
    name: "Reciprocal",
    value: |x, _| 1.0 / x,
    value_f32: Some(|x, _| 1.0 / x),
    derivative: |x, _| -1.0 / (x * x),
    shape: |_, u, _| one(if u < 0.0 { Curv::Concave } else { Curv::Convex }),
    defined_on: |l, u, _| l > 0.0 || u < 0.0,
    allowance: TRANSCENDENTAL,
    step: false,
};
/// `x^p` for a constant exponent `p = params[0]`.
pub const POW: Def = Def {
    name: "Pow",
    value: |x, p| x.powf(p[0]),
    value_f32: Some(|x, p| x.powf(p[0] as f32)),
    derivative: |x, p| {
        if p[0] == 0.0 {
            0.0
        } else {
            p[0] * x.powf(p[0] - 1.0)
        }
    },
    shape: |_, u, p| Some(pow_shape(p[0], u)),
    defined_on: |l, u, p| {
        if is_integer(p[0]) {
            p[0] >= 0.0 || l > 0.0 || u < 0.0
        } else if p[0] > 0.0 {
            l >= 0.0
        } else {
            l > 0.0
        }
    },
    allowance: TRANSCENDENTAL,
    step: false,
};
/// `f'' = -f`: concave where `f > 0`, convex where `f < 0`, inflections where `f = 0`.
fn periodic_shape(f: fn(f64) -> f64, off: f64, l: f64, u: f64) -> Option<Shape> {
    if !(u - l < 64.0 * PI) {
        return None;
    }
    let k0 = ((l - off) / PI).floor() as i64 - 1;
    let k1 = ((u - off) / PI).ceil() as i64 + 1;
    let curv_at = |x: f64| {
        if f(x) > 0.0 {
            Curv::Concave
        } else {
            Curv::Convex
        }
    };
    let mut breaks = Vec::new();
    let mut curv = vec![curv_at(off + (k0 as f64 - 0.5) * PI)];
    for k in k0..=k1 {
        breaks.push(brk(off + k as f64 * PI, off == 0.0 && k == 0, Kink::Smooth));
        curv.push(curv_at(off + (k as f64 + 0.5) * PI));
    }
    Some(Shape { breaks, curv })
}
pub const SIN: Def = Def {
    name: "Sin",
    value: |x, _| x.sin(),
    value_f32: Some(|x, _| x.sin()),
    derivative: |x, _| x.cos(),
    shape: |l, u, _| periodic_shape(f64::sin, 0.0, l, u),
    defined_on: everywhere,
    allowance: TRANSCENDENTAL,
    step: false,
};
pub const COS: Def = Def {
    name: "Cos",
    value: |x, _| x.cos(),
    value_f32: Some(|x, _| x.cos()),
    derivative: |x, _| -x.sin(),
    shape: |l, u, _| periodic_shape(f64::cos, FRAC_PI_2, l, u),
    defined_on: everywhere,
    allowance: TRANSCENDENTAL,
    step: false,
};
/// `x Phi(x)` (ONNX Gelu, approximate = "none"); `Phi'' = phi(x)(2 - x^2)`: convex on
/// `[-sqrt 2, sqrt 2]`, concave outside.
pub const GELU: Def = Def {
    name: "Gelu",
    value: |x, _| x * phi_cdf(x),
    value_f32: None,
    derivative: |x, _| phi_cdf(x) + x * (-0.5 * x * x).exp() / (2.0 * PI).sqrt(),
    shape: |_, _, _| {
        Some(Shape {
            breaks: vec![
                brk(-SQRT_2, false, Kink::Smooth),
                brk(SQRT_2, false, Kink::Smooth),
            ],
            curv: vec![Curv::Concave, Curv::Convex, Curv::Concave],
        })
    },
    defined_on: everywhere,
    allowance: TRANSCENDENTAL,
    step: false,
};
pub const ABS: Def = Def {
    name: "Abs",
    value: |x, _| x.abs(),
    value_f32: Some(|x, _| x.abs()),
    derivative: |x, _| sign(x),
    shape: |_, _, _| kinked(vec![brk(0.0, true, Kink::Convex)]),
    defined_on: everywhere,
    allowance: EXACT,
    step: false,
};
/// `max(0, min(1, alpha x + beta))` with `params = [alpha, beta]`.
pub const HARD_SIGMOID: Def = Def {
    name: "HardSigmoid",
    value: |x, p| (p[0] * x + p[1]).clamp(0.0, 1.0),
    value_f32: Some(|x, p| (p[0] as f32 * x + p[1] as f32).clamp(0.0, 1.0)),
    derivative: |x, p| {
        let z = p[0] * x + p[1];
        if z > 0.0 && z < 1.0 { p[0] } else { 0.0 }
    },
    shape: |_, _, p| {
        let (alpha, beta) = (p[0], p[1]);
        if alpha == 0.0 {
            return one(Curv::Linear);
        }
        // Where alpha x + beta reaches 0 and 1, in increasing x (not exact f64 values).
        let (a, b) = ((0.0 - beta) / alpha, (1.0 - beta) / alpha);
        let (k0, k1) = if alpha > 0.0 {
            (Kink::Convex, Kink::Concave)
        } else {
            (Kink::Concave, Kink::Convex)
        };
        kinked(vec![brk(a.min(b), false, k0), brk(a.max(b), false, k1)])
    },
    defined_on: everywhere,
    allowance: ARITHMETIC,
    step: false,
};
/// `x max(0, min(1, x / 6 + 1 / 2))`: 0, then `x (x + 3) / 6` (convex), then `x`; the slope
/// drops at -3 (0 to -1/2) and at 3 (3/2 to 1).
pub const HARD_SWISH: Def = Def {
    name: "HardSwish",
    value: |x, _| x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
    value_f32: Some(|x, _| x * (x / 6.0 + 0.5).clamp(0.0, 1.0)),
    derivative: |x, _| {
        if x <= -3.0 {
            0.0
        } else if x >= 3.0 {
            1.0
        } else {
            x / 3.0 + 0.5
        }
    },
    shape: |_, _, _| {
        Some(Shape {
            breaks: vec![
                brk(-3.0, true, Kink::Concave),
                brk(3.0, true, Kink::Concave),
            ],
            curv: vec![Curv::Linear, Curv::Convex, Curv::Linear],
        })
    },
    defined_on: everywhere,
    allowance: ARITHMETIC,
    step: false,
};
/// `min(max(x, lo), hi)` with `params = [lo, hi]`, `lo <= hi`.
pub const CLIP: Def = Def {
    name: "Clip",
    value: |x, p| x.max(p[0]).min(p[1]),
    value_f32: Some(|x, p| x.max(p[0] as f32).min(p[1] as f32)),
    derivative: |x, p| f64::from(x > p[0] && x < p[1]),
    shape: |_, _, p| {
        kinked(vec![
            brk(p[0], true, Kink::Convex),
            brk(p[1], true, Kink::Concave),
        ])
    },
    defined_on: everywhere,
    allowance: EXACT,
    step: false,
};
/// `max(x, c)` with `params[0] = c`.
pub const MAX: Def = Def {
    name: "Max",
    value: |x, p| x.max(p[0]),
    value_f32: Some(|x, p| x.max(p[0] as f32)),
    derivative: |x, p| f64::from(x > p[0]),
    shape: |_, _, p| kinked(vec![brk(p[0], true, Kink::Convex)]),
    defined_on: everywhere,
    allowance: EXACT,
    step: false,
};
/// `min(x, c)` with `params[0] = c`.
pub const MIN: Def = Def {
    name: "Min",
    value: |x, p| x.min(p[0]),
    value_f32: Some(|x, p| x.min(p[0] as f32)),
    derivative: |x, p| f64::from(x < p[0]),
    shape: |_, _, p| kinked(vec![brk(p[0], true, Kink::Concave)]),
    defined_on: everywhere,
    allowance: EXACT,
    step: false,
};
macro_rules! step_def {
    ($name:ident, $onnx:literal, $f64:expr, $f32:expr) => {
        pub const $name: Def = Def {
            name: $onnx,
            value: $f64,
            value_f32: Some($f32),
            derivative: |_, _| 0.0,
            shape: |_, _, _| one(Curv::Linear),
            defined_on: everywhere,
            allowance: EXACT,
            step: true,
        };
    };
}
step_def!(FLOOR, "Floor", |x, _| x.floor(), |x, _| x.floor());
step_def!(CEIL, "Ceil", |x, _| x.ceil(), |x, _| x.ceil());
// Round half to even, as ONNX specifies.
step_def!(ROUND, "Round", |x, _| x.round_ties_even(), |x, _| x
    .round_ties_even());
step_def!(SIGN, "Sign", |x, _| sign(x), |x, _| sign(x as f64) as f32);

/// `x / (1 + |x|)`: convex below 0, concave above, smooth at 0.
pub const SOFTSIGN: Def = Def {
    name: "Softsign",
    value: |x, _| x / (1.0 + x.abs()),
    value_f32: Some(|x, _| x / (1.0 + x.abs())),
    derivative: |x, _| 1.0 / (1.0 + x.abs()).powi(2),
    shape: smooth_s,
    defined_on: everywhere,
    allowance: ARITHMETIC,
    step: false,
};

/// Every function, for lookups by name and tests.
pub const DEFS: &[&Def] = &[
    &SIGMOID,
    &TANH,
    &ERF,
    &EXP,
    &SOFTPLUS,
    &LOG,
    &SQRT,
    &RECIPROCAL,
    &POW,
    &SIN,
    &COS,
    &GELU,
    &ABS,
    &HARD_SIGMOID,
    &HARD_SWISH,
    &CLIP,
    &MAX,
    &MIN,
    &FLOOR,
    &CEIL,
    &ROUND,
    &SIGN,
    &SOFTSIGN,
];

/// A function with its parameters (what an IR node carries).
#[derive(Clone, Copy)]
pub struct Func {
    pub def: &'static Def,
    pub params: Params,
}

impl PartialEq for Func {
    fn eq(&self, o: &Self) -> bool {
        std::ptr::eq(self.def, o.def) && self.params == o.params
    }
}

impl std::fmt::Debug for Func {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{:?}", self.def.name, self.params)
    }
}

impl Serialize for Func {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:?}", self))
    }
}

impl Func {
    /// A function without parameters.
    pub const fn of(def: &'static Def) -> Self {
        Func {
            def,
            params: [0.0, 0.0],
        }
    }
    /// A function with parameters.
    pub const fn with(def: &'static Def, params: Params) -> Self {
        Func { def, params }
    }
    /// The function whose ONNX name is `name`, when it takes no parameters.
    pub fn by_name(name: &str) -> Option<Self> {
        DEFS.iter().find(|d| d.name == name).map(|d| Func::of(d))
    }
    /// ONNX name.
    pub fn name(&self) -> &'static str {
        self.def.name
    }
    /// `f(x)` in real arithmetic.
    pub fn value(&self, x: f64) -> f64 {
        (self.def.value)(x, self.params)
    }
    /// `f(x)` in float32 as deployed.
    pub fn value_f32(&self, x: f32) -> f32 {
        match self.def.value_f32 {
            Some(f) => f(x, self.params),
            None => self.value(x as f64) as f32,
        }
    }
    /// `f'(x)` (a one-sided slope at a kink).
    pub fn derivative(&self, x: f64) -> f64 {
        (self.def.derivative)(x, self.params)
    }
    /// Whether `f` is piecewise constant.
    pub fn is_step(&self) -> bool {
        self.def.step
    }
    /// Whether `f` is defined on all of `[l, u]`.
    pub fn defined_on(&self, l: f64, u: f64) -> bool {
        (self.def.defined_on)(l, u, self.params)
    }
    /// The deployed runtime's allowance.
    pub fn allowance(&self) -> Allowance {
        self.def.allowance
    }
    /// The pieces covering `[l, u]`.
    pub fn shape(&self, l: f64, u: f64) -> Option<Shape> {
        (self.def.shape)(l, u, self.params)
    }
}

fn pow_shape(p: f64, u: f64) -> Shape {
    use Curv::*;
    if p == 0.0 || p == 1.0 {
        return Shape::one(Linear);
    }
    if is_integer(p) {
        let even = (p as i64) % 2 == 0;
        if p > 0.0 {
            // Even powers are convex; odd ones concave below 0 and convex above.
            return if even {
                Shape::one(Convex)
            } else {
                Shape::two(Concave, 0.0, true, Kink::Smooth, Convex)
            };
        }
        // Negative integers: convex above 0; below, convex for even and concave for odd.
        return if u < 0.0 && !even {
            Shape::one(Concave)
        } else {
            Shape::one(Convex)
        };
    }
    // Non-integer exponents live on x >= 0: concave for 0 < p < 1, convex otherwise.
    if p > 0.0 && p < 1.0 {
        Shape::one(Concave)
    } else {
        Shape::one(Convex)
    }
}

/// `0 * anything = 0` (an infinite slope over an empty width contributes nothing).
fn mul0(a: f64, b: f64) -> f64 {
    if a == 0.0 || b == 0.0 { 0.0 } else { a * b }
}

/// Slack covering our own f64 evaluation of `f(x) - k x`: 2^-40 (far above the few ulps of
/// libm and statrs) relative to the magnitudes involved, including `|x f'(x)|`, the scale of a
/// cancellation inside `f` (e.g. `alpha x + beta` near 0).
fn slack(f: &Func, x: f64, k: f64) -> f64 {
    let scale = f.value(x).abs() + (k * x).abs() + mul0(x, f.derivative(x)).abs();
    if !scale.is_finite() {
        return f64::INFINITY;
    }
    scale * 9.094947017729282e-13 + 1e-300
}

/// Bounds of `g = f - k x` over a piece `[a, b]` of curvature `c`.
fn piece(f: &Func, k: f64, a: f64, b: f64, c: Curv) -> (f64, f64) {
    let g = |x: f64| f.value(x) - k * x;
    // At an endpoint the derivative from inside the piece (a kink may sit exactly there, and
    // the tangent inequality needs the piece's own one-sided slope).
    let dg = |x: f64| {
        let inside = if x <= a && a < b {
            a.next_up()
        } else if x >= b && a < b {
            b.next_down()
        } else {
            x
        };
        f.derivative(inside) - k
    };
    let (ga, gb) = (g(a), g(b));
    let se = slack(f, a, k).max(slack(f, b, k));
    let ends = (ga.min(gb) - se, ga.max(gb) + se);
    if c == Curv::Linear || a == b {
        return ends;
    }
    // g' is monotone on the piece (increasing if convex): bisect for its zero.
    let sign = if c == Curv::Convex { 1.0 } else { -1.0 };
    let x0 = if sign * dg(a) >= 0.0 {
        a
    } else if sign * dg(b) <= 0.0 {
        b
    } else {
        let (mut lo, mut hi) = (a, b);
        for _ in 0..80 {
            let m = 0.5 * (lo + hi);
            if m <= lo || m >= hi {
                break;
            }
            if sign * dg(m) < 0.0 {
                lo = m;
            } else {
                hi = m;
            }
        }
        0.5 * (lo + hi)
    };
    let (g0, d0) = (g(x0), dg(x0));
    // Tangent inequality: convex g >= g(x0) + g'(x0) (x - x0) on [a, b]; the worst end.
    let t = (mul0(d0, a - x0)).min(mul0(d0, b - x0));
    // Our derivative may be off by 2^-40 relative plus a few ulps of 1 absolute (1 - tanh^2
    // in the tails); over the width that moves the tangent by at most this.
    let tail = slack(f, x0, k) + (d0.abs() + 1.0) * 9.094947017729282e-13 * (b - a);
    if c == Curv::Convex {
        ((g0 + t - tail).min(ends.0), ends.1)
    } else {
        let t = (mul0(d0, a - x0)).max(mul0(d0, b - x0));
        (ends.0, (g0 + t + tail).max(ends.1))
    }
}

/// Verified bounds `(lo, hi)` with `lo <= min_{[l,u]} (f(x) - k x)` and `hi >= max`, in real
/// arithmetic (no deployed allowance); `(-inf, inf)` when `f` is undefined somewhere on
/// `[l, u]` or the range is not finite.
pub fn extremes(f: &Func, k: f64, l: f64, u: f64) -> (f64, f64) {
    let unbounded = (f64::NEG_INFINITY, f64::INFINITY);
    if !(l.is_finite() && u.is_finite() && l <= u && k.is_finite()) || !f.defined_on(l, u) {
        return unbounded;
    }
    let Some(shape) = f.shape(l, u) else {
        return unbounded;
    };
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut add = |(a, b): (f64, f64)| {
        lo = lo.min(a);
        hi = hi.max(b);
    };
    // Piece i spans breaks[i - 1] .. breaks[i]; an inexact breakpoint is kept out of both
    // neighbours by delta and covered by a sliver bounded through the Lipschitz constant
    // instead, so every point of [l, u] is in a piece whose curvature is certain or in a
    // sliver.
    let n = shape.curv.len();
    for i in 0..n {
        let left = match i.checked_sub(1).map(|j| shape.breaks[j]) {
            None => f64::NEG_INFINITY,
            Some(br) if br.exact => br.x,
            Some(br) => br.x + delta(br.x),
        };
        let right = match shape.breaks.get(i) {
            None => f64::INFINITY,
            Some(br) if br.exact => br.x,
            Some(br) => br.x - delta(br.x),
        };
        let (a, b) = (left.max(l), right.min(u));
        if a <= b {
            add(piece(f, k, a, b, shape.curv[i]));
        }
    }
    for br in shape.breaks.iter().filter(|b| !b.exact) {
        let (sa, sb) = ((br.x - delta(br.x)).max(l), (br.x + delta(br.x)).min(u));
        if sa <= sb {
            add(sliver(f, k, sa, sb));
        }
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return unbounded;
    }
    (lo.next_down(), hi.next_up())
}

/// Half-width of the sliver around an inexact breakpoint: far above its f64 rounding.
fn delta(x: f64) -> f64 {
    1e-9 * x.abs().max(1.0)
}

/// Bounds of `f - k x` over a tiny interval by its Lipschitz constant, which is the largest
/// `|f'|` of the two sides and the middle (the derivative is continuous or has a jump there,
/// and the sliver is far narrower than any feature of `f`) plus `|k|`, with a factor 2 of slack.
fn sliver(f: &Func, k: f64, a: f64, b: f64) -> (f64, f64) {
    let m = 0.5 * (a + b);
    let lip = 2.0
        * ([a, m, b]
            .iter()
            .map(|&x| f.derivative(x).abs())
            .fold(0.0, f64::max)
            + k.abs())
        + 1e-12;
    let gm = f.value(m) - k * m;
    let r = lip * (b - a) * 0.5 + slack(f, m, k);
    (gm - r, gm + r)
}

/// The allowance's absolute error over an output range `[ylo, yhi]`.
fn allowance_on(f: &Func, ylo: f64, yhi: f64, rnd: &Rounding) -> f64 {
    match rnd.mode {
        FpMode::Real => 0.0,
        FpMode::Deployed => {
            let a = f.allowance();
            a.abs + a.rel * ylo.abs().max(yhi.abs())
        }
    }
}

/// Interval of `f` over `[l, u]`: every value the deployed function can return there (for
/// `rnd`'s mode); unbounded where `f` is undefined or may overflow the deployed type.
pub fn interval(f: &Func, l: f64, u: f64, rnd: &Rounding) -> (f64, f64) {
    if f.is_step() {
        if !(l <= u) {
            return (f64::NEG_INFINITY, f64::INFINITY);
        }
        return rnd.widen(f.value(l), f.value(u), 0.0);
    }
    let (lo, hi) = extremes(f, 0.0, l, u);
    let e = allowance_on(f, lo, hi, rnd);
    rnd.widen(lo, hi, e)
}

/// Sound lower and upper lines `kl x + bl <= f(x) <= ku x + bu` on `[l, u]` (for every value
/// the deployed function can return, for `rnd`'s mode).
pub fn lines(f: &Func, l: f64, u: f64, rnd: &Rounding) -> crate::transformers::relax::Lines {
    use crate::transformers::relax::Lines;
    let (ylo, yhi) = interval(f, l, u, rnd);
    let flat = Lines {
        kl: 0.0,
        bl: ylo,
        ku: 0.0,
        bu: yhi,
    };
    if f.is_step() || !(ylo.is_finite() && yhi.is_finite()) || !(u > l) {
        return flat;
    }
    let chord = (f.value(u) - f.value(l)) / (u - l);
    let m = 0.5 * (l + u);
    let tangent = f.derivative(m);
    let (convex, concave) = curvature_on(f, l, u);
    let (kl, ku) = match (convex, concave) {
        (true, true) => (chord, chord),
        (true, false) => (tangent, chord),
        (false, true) => (chord, tangent),
        (false, false) => (chord, chord),
    };
    if !(kl.is_finite() && ku.is_finite()) {
        return flat;
    }
    let e = allowance_on(f, ylo, yhi, rnd);
    let bl = extremes(f, kl, l, u).0 - e;
    let bu = extremes(f, ku, l, u).1 + e;
    if !(bl.is_finite() && bu.is_finite()) {
        return flat;
    }
    Lines {
        kl,
        bl: bl.next_down(),
        ku,
        bu: bu.next_up(),
    }
}

/// Whether `f` is convex, and whether it is concave, on all of `[l, u]`.
pub fn curvature_on(f: &Func, l: f64, u: f64) -> (bool, bool) {
    let Some(shape) = f.shape(l, u) else {
        return (false, false);
    };
    let (mut convex, mut concave) = (true, true);
    let mut start = f64::NEG_INFINITY;
    for (i, c) in shape.curv.iter().enumerate() {
        let end = shape.breaks.get(i).map_or(f64::INFINITY, |b| b.x);
        // The piece (start, end) meets [l, u] (with the inexact-breakpoint margin).
        let pad = |x: f64| if x.is_finite() { 2.0 * delta(x) } else { 0.0 };
        if end + pad(end) >= l && start - pad(start) <= u {
            match c {
                Curv::Convex => concave = false,
                Curv::Concave => convex = false,
                Curv::Linear => {}
            }
        }
        if let Some(b) = shape.breaks.get(i) {
            let inside = b.x + pad(b.x) > l && b.x - pad(b.x) < u;
            if inside {
                match b.kink {
                    Kink::Convex => concave = false,
                    Kink::Concave => convex = false,
                    Kink::Smooth => {}
                }
            }
        }
        start = end;
    }
    (convex, concave)
}

// ---- the family -----------------------------------------------------------------------------

impl super::Family for Func {
    fn eval<T: crate::eval::Scalar>(&self, _at: &super::At, ins: &[&[T]]) -> Vec<T> {
        let x = ins.first().copied().unwrap_or(&[]);
        x.iter().map(|&v| T::apply(self, v)).collect()
    }

    fn eval_in_place<T: crate::eval::Scalar>(&self, _at: &super::At, x: &mut [T]) -> bool {
        x.iter_mut().for_each(|v| *v = T::apply(self, *v));
        true
    }

    fn vjp<T: crate::eval::Scalar>(
        &self,
        _at: &super::At,
        ins: &[&[T]],
        go: Vec<T>,
    ) -> Vec<Option<Vec<T>>> {
        let x = ins.first().copied().unwrap_or(&[]);
        vec![Some(
            go.iter()
                .zip(x)
                .map(|(&d, &v)| d * T::from_f64(self.derivative(v.to_f64())))
                .collect(),
        )]
    }

    fn ibp(
        &self,
        _at: &super::At,
        ins: &[&crate::domain::Intervals],
        rnd: &Rounding,
    ) -> crate::domain::Intervals {
        let x = ins[0];
        let (lo, hi) =
            x.lo.iter()
                .zip(&x.hi)
                .map(|(&l, &h)| interval(self, l, h, rnd))
                .unzip();
        crate::domain::Intervals::new(lo, hi)
    }

    fn needs(&self) -> super::Need {
        super::Need::All
    }

    fn relaxation(
        &self,
        _at: &super::At,
        input: &crate::domain::Intervals,
        rnd: &Rounding,
    ) -> super::Relaxation {
        super::Relaxation::Lines(
            input
                .lo
                .iter()
                .zip(&input.hi)
                .map(|(&l, &u)| lines(self, l, u, rnd))
                .collect(),
        )
    }

    fn backward_error(
        &self,
        at: &super::At,
        bounds: &[Option<crate::domain::Intervals>],
        _rnd: &Rounding,
        terms: usize,
    ) -> Option<Vec<f64>> {
        // The deployed function's own error is in its relaxation lines; our backward step
        // multiplies by the lines' slopes and adds their intercepts: magnitudes of input and
        // output bound it.
        let x = bounds[at.node.inputs[0]].as_ref()?;
        let y = bounds[at.node.output].as_ref()?;
        let g64 = crate::transformers::backward::f64_gamma(terms);
        Some(
            x.abs_max()
                .iter()
                .zip(y.abs_max())
                .map(|(v, w)| (g64 * (v + w + 1.0) * 2.0).next_up())
                .collect(),
        )
    }

    fn linear_back(
        &self,
        _at: &super::At,
        _a: &[f64],
        _support: &[Option<crate::ir::Rect>],
    ) -> Option<crate::transformers::backward::Back> {
        None
    }

    fn relaxed_back(
        &self,
        ctx: &crate::transformers::backward::BackCtx,
        node: &crate::ir::Node,
        a: &[f64],
        alpha: crate::transformers::backward::Alpha,
        support: &[Option<crate::ir::Rect>],
    ) -> crate::transformers::backward::Back {
        crate::transformers::backward::lines_back(ctx, node, a, alpha, None, support)
    }

    fn back_support(
        &self,
        at: &super::At,
        out: &[Option<crate::ir::Rect>],
    ) -> Vec<crate::transformers::backward::Support> {
        crate::transformers::backward::same_support(at, out)
    }

    fn alpha_leak(&self) -> Option<f64> {
        // Smooth and step functions keep their CROWN lines.
        None
    }

    fn relaxed_forward(
        &self,
        pass: &crate::bounds::alpha::RelaxedPass,
        at: &super::At,
        ins: &[&[f64]],
    ) -> (Vec<f64>, Option<Vec<f64>>) {
        pass.through_lines(at, ins)
    }

    fn lp_rows(&self, lp: &mut crate::lp::LpNode) -> Result<(), crate::lp::LpError> {
        // Its two CROWN lines per element (no triangle).
        lp.line_rows(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::DType;

    /// Every function of [`DEFS`], parameterised ones with a few parameter choices.
    fn all() -> Vec<Func> {
        let mut v: Vec<Func> = DEFS
            .iter()
            .filter(|d| !matches!(d.name, "Pow" | "HardSigmoid" | "Clip" | "Max" | "Min"))
            .map(|d| Func::of(d))
            .collect();
        for p in [3.0, 2.0, -1.0, -2.0, 0.5, 1.5, -0.5] {
            v.push(Func::with(&POW, [p, 0.0]));
        }
        v.push(Func::with(&HARD_SIGMOID, [0.2, 0.5]));
        v.push(Func::with(&HARD_SIGMOID, [-0.3, 0.1]));
        v.push(Func::with(&CLIP, [-0.5, 1.5]));
        v.push(Func::with(&MAX, [0.25, 0.0]));
        v.push(Func::with(&MIN, [-0.25, 0.0]));
        v
    }

    /// Dense samples of every function on many intervals stay inside its interval and between
    /// its lines, in real and deployed mode; the lines are not vacuous.
    #[test]
    fn lines_and_intervals_contain_dense_samples() {
        let mut seed = 0x1234_5678_u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for f in &all() {
            for t in 0..300 {
                let c = (rnd() - 0.5) * [1.0, 6.0, 40.0][t % 3];
                let w = rnd() * [0.01, 1.0, 8.0][(t / 3) % 3];
                let (l, u) = (c - w, c + w);
                let (l, u) = if f.defined_on(l, u) {
                    (l, u)
                } else {
                    (w.max(1e-3), w.max(1e-3) * (2.0 + rnd()))
                };
                for mode in [FpMode::Real, FpMode::Deployed] {
                    let rnd = Rounding::new(mode, DType::F32);
                    let (ylo, yhi) = interval(f, l, u, &rnd);
                    let ln = lines(f, l, u, &rnd);
                    assert!(ln.kl.is_finite() && ln.ku.is_finite(), "{f:?} [{l}, {u}]");
                    for s in 0..=400 {
                        let x = l + (u - l) * s as f64 / 400.0;
                        let y = f.value(x);
                        assert!(
                            ylo <= y && y <= yhi,
                            "{f:?} at {x} in [{l}, {u}]: {y} outside [{ylo}, {yhi}]"
                        );
                        let (lo_line, hi_line) = (ln.kl * x + ln.bl, ln.ku * x + ln.bu);
                        assert!(
                            lo_line <= y && y <= hi_line,
                            "{f:?} at {x} in [{l}, {u}] ({mode:?}): {y} not in [{lo_line}, {hi_line}] ({ln:?})"
                        );
                    }
                }
            }
        }
    }

    /// The derivative matches central differences away from kinks.
    #[test]
    fn derivatives_match_finite_differences() {
        for f in all().iter().filter(|f| !f.is_step()) {
            for &x in &[-2.7, -1.3, -0.6, 0.37, 0.9, 1.7, 2.9] {
                if !f.defined_on(x - 1e-3, x + 1e-3) {
                    continue;
                }
                let h = 1e-6;
                let fd = (f.value(x + h) - f.value(x - h)) / (2.0 * h);
                let d = f.derivative(x);
                assert!(
                    (fd - d).abs() < 1e-5 * (1.0 + d.abs()),
                    "{f:?}'({x}) = {d}, fd {fd}"
                );
            }
        }
    }

    /// On a convex range the lower line is a tangent; on a concave range the upper one: both
    /// tighter than two parallel chord lines.
    #[test]
    fn tangent_and_chord_on_one_curvature() {
        let real = Rounding::new(FpMode::Real, DType::F32);
        let dep = Rounding::new(FpMode::Deployed, DType::F32);
        let ln = lines(&Func::of(&EXP), 0.0, 2.0, &real);
        assert!((ln.kl - 1.0f64.exp()).abs() < 1e-12 && ln.ku > ln.kl);
        let ln = lines(&Func::of(&LOG), 1.0, 3.0, &real);
        assert!(
            (ln.ku - 0.5).abs() < 1e-12,
            "tangent at the midpoint 2: {ln:?}"
        );
        // Deployed lines are wider by the allowance.
        let e = Func::of(&EXP);
        let (r, d) = (lines(&e, 0.0, 2.0, &real), lines(&e, 0.0, 2.0, &dep));
        assert!(d.bl < r.bl && d.bu > r.bu);
        // Undefined somewhere: unbounded; beyond float32's range: unbounded in deployed mode.
        assert_eq!(
            interval(&Func::of(&LOG), -1.0, 1.0, &real).0,
            f64::NEG_INFINITY
        );
        assert_eq!(
            interval(&Func::of(&RECIPROCAL), -1.0, 1.0, &real).1,
            f64::INFINITY
        );
        assert_eq!(interval(&e, 80.0, 90.0, &dep).1, f64::INFINITY);
        assert!(interval(&e, 80.0, 90.0, &real).1.is_finite());
    }
}

//! The typed graph IR every analysis works on.
//!
//! A [`Graph`] has one variable input and one output, nodes in topological order, and a static
//! per-sample shape for every value (symbolic or zero batch dimensions become 1 at import). The
//! operator set is deliberately small: ONNX operators are lowered at import onto a handful of
//! families ([`Op`]) so that each analysis needs one transformer per family, not per ONNX op.
//! [`Node::source_op`] keeps the ONNX name(s) for reports.

pub mod passes;

use crate::tensor::numel;
use serde::Serialize;
use std::fmt;

/// Index of a value (an edge) in [`Graph::values`].
pub type ValueId = usize;

/// Element type the deployed network computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F64,
}

impl DType {
    /// Unit roundoff of the type (half an ulp of 1).
    pub fn unit_roundoff(self) -> f64 {
        match self {
            DType::F32 => f64::powi(2.0, -24),
            DType::F64 => f64::powi(2.0, -53),
        }
    }

    /// Largest absolute error one rounding of a tiny result can make, covering flush-to-zero
    /// and denormals-are-zero modes (the smallest normal number).
    pub fn underflow_unit(self) -> f64 {
        match self {
            DType::F32 => f64::powi(2.0, -126),
            DType::F64 => f64::powi(2.0, -1022),
        }
    }

    /// Largest finite value: anything beyond may overflow to infinity in the deployed network.
    pub fn max_finite(self) -> f64 {
        match self {
            DType::F32 => f32::MAX as f64,
            DType::F64 => f64::MAX,
        }
    }
}

/// A constant tensor kept in both precisions: `f64` for the analyses, `f32` for the evaluator.
#[derive(Clone, Debug)]
pub struct Param {
    pub shape: Vec<usize>,
    pub f64: Vec<f64>,
    pub f32: Vec<f32>,
}

impl Param {
    /// Build from f64 data; the f32 copy is the round-to-nearest image.
    pub fn from_f64(shape: Vec<usize>, data: Vec<f64>) -> Self {
        let f32 = data.iter().map(|&v| v as f32).collect();
        Param {
            shape,
            f64: data,
            f32,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.f64.len()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.f64.is_empty()
    }
}

/// Floating-point error model of an affine operator as the deployed network computes it.
///
/// For an output element `j` with `n` summed products, the deployed result differs from the
/// real-arithmetic value of the IR operator by at most
/// `gamma(n + extra_roundings) * (sum_i |W_ji| |x_i| + offset[j])` (plus an underflow term),
/// where `gamma(m) = m u / (1 - m u)`. This is the classic bound for a dot product evaluated in
/// any order (Higham, Accuracy and Stability, Lemma 3.1 and eq. 3.5), and it also holds when
/// elementwise operators that the simplifier folded into the op (Sub/Div normalisation,
/// BatchNormalization, a bias Add) were computed separately by the deployed network: each
/// folded step contributes one more rounding factor per term (`extra_roundings`) and its own
/// absolute magnitudes (`offset`, e.g. `|mean| / std` for a folded `(x - mean) / std`).
/// See [`passes`] for how folding updates the model.
#[derive(Clone, Debug, Default)]
pub struct FpModel {
    /// Roundings per product term beyond the `n` of the dot product itself.
    pub extra_roundings: u32,
    /// Per output feature (Linear: per row `p`, Conv: per output channel, Affine: per element).
    pub offset: Vec<f64>,
    /// Affine only: the deployed error is at most `gamma(extra_roundings) * |y|` (a single
    /// elementwise operation, or a shift followed by scalings), so folding it into the next
    /// layer only needs [`FpModel::input_shift`], not an offset.
    pub relative: bool,
    /// Linear/Conv only: the magnitude term reads `|x_k + input_shift_k|` instead of `|x_k|`
    /// (per input feature for Linear, per input channel for Conv), the exact magnitude of the
    /// values the deployed layer multiplies when a relative affine map was folded into it.
    pub input_shift: Option<Vec<f64>>,
}

/// `y[o, p, i] = sum_k W[p, k] * x[o, k, i] + b[p]`: Gemm, MatMul with a constant, and every
/// affine map folded into them. The per-sample input is viewed as `[outer, k, inner]`.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[p, k]`, row-major.
    pub weight: Param,
    /// `|weight|`, precomputed for interval and error-term kernels.
    pub weight_abs: Vec<f64>,
    /// `[p]`.
    pub bias: Option<Param>,
    pub outer: usize,
    pub k: usize,
    pub inner: usize,
    pub p: usize,
    pub fp: FpModel,
    /// `W^T` and `|W|^T` (`[k, p]`, row-major), built on first use by the f64 products over
    /// thin batches (`ops/linear.rs`).
    pub transposed: std::sync::OnceLock<(Vec<f64>, Vec<f64>)>,
}

impl Linear {
    /// The contracted feature `k` of per-sample input element `i`.
    pub fn input_feature(&self, i: usize) -> usize {
        (i / self.inner) % self.k
    }
}

/// Geometry of a 2-D convolution or pooling window on one sample (1-D ops use `h = 1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Images per sample (the ONNX batch dimension of the per-sample shape, normally 1).
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    /// Leading (top/left) padding; trailing padding is implied by `oh`/`ow`.
    pub ph: usize,
    pub pw: usize,
    pub dh: usize,
    pub dw: usize,
}

impl Window {
    /// The in-bounds taps of output position `(oy, ox)`: `(a, b, iy * w + ix)` for each kernel
    /// offset `(a, b)` whose input `(iy, ix)` lies inside the image (padding is skipped).
    pub fn taps(&self, oy: usize, ox: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        (0..self.kh).flat_map(move |a| {
            let iy = (oy * self.sh + a * self.dh) as isize - self.ph as isize;
            let row_in = iy >= 0 && iy < self.h as isize;
            (0..self.kw).filter_map(move |b| {
                let ix = (ox * self.sw + b * self.dw) as isize - self.pw as isize;
                (row_in && ix >= 0 && ix < self.w as isize)
                    .then(|| (a, b, iy as usize * self.w + ix as usize))
            })
        })
    }
}

/// A box of positions `[y0, y1) x [x0, x1)` in a value's spatial plane (its last two
/// dimensions; see [`Graph::plane`]), over every channel and image: the support of one row of
/// backward coefficients, which stays local through the first layers of a CNN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rect {
    pub y0: usize,
    pub y1: usize,
    pub x0: usize,
    pub x1: usize,
}

impl Rect {
    /// Positions in the box.
    pub fn area(&self) -> usize {
        (self.y1 - self.y0) * (self.x1 - self.x0)
    }

    /// The box of the one position of flat index `j` in a value whose plane is `(h, w)`.
    pub fn at((h, w): (usize, usize), j: usize) -> Rect {
        let (y, x) = ((j / w) % h, j % w);
        Rect {
            y0: y,
            y1: y + 1,
            x0: x,
            x1: x + 1,
        }
    }

    /// The whole plane `(h, w)`.
    pub fn whole((h, w): (usize, usize)) -> Rect {
        Rect {
            y0: 0,
            y1: h,
            x0: 0,
            x1: w,
        }
    }

    /// The smallest box holding both (an empty one holds nothing).
    pub fn union(self, o: Rect) -> Rect {
        if self.area() == 0 {
            return o;
        }
        if o.area() == 0 {
            return self;
        }
        Rect {
            y0: self.y0.min(o.y0),
            y1: self.y1.max(o.y1),
            x0: self.x0.min(o.x0),
            x1: self.x1.max(o.x1),
        }
    }

    /// The ranges of flat indices the box covers in a value of `n` elements whose plane is
    /// `h x w` (every channel and image in turn), in increasing order.
    pub fn runs(
        self,
        (h, w): (usize, usize),
        n: usize,
    ) -> impl Iterator<Item = std::ops::Range<usize>> {
        let planes = if self.area() == 0 {
            0
        } else {
            n / (h * w).max(1)
        };
        (0..planes).flat_map(move |p| {
            (self.y0..self.y1).map(move |y| {
                let base = (p * h + y) * w;
                base + self.x0..base + self.x1
            })
        })
    }
}

impl Window {
    /// The input positions the outputs in `out` read (kernel taps inside the image): the box
    /// holding the support of the transposed map of coefficients supported in `out`.
    pub fn input_rect(&self, out: Rect) -> Rect {
        let span = |o0: usize, o1: usize, s: usize, k: usize, d: usize, p: usize, size: usize| {
            if o0 >= o1 || k == 0 {
                return (0, 0);
            }
            let lo = (o0 * s).saturating_sub(p);
            let hi = ((o1 - 1) * s + (k - 1) * d + 1).saturating_sub(p).min(size);
            if lo >= hi { (0, 0) } else { (lo, hi) }
        };
        let (y0, y1) = span(out.y0, out.y1, self.sh, self.kh, self.dh, self.ph, self.h);
        let (x0, x1) = span(out.x0, out.x1, self.sw, self.kw, self.dw, self.pw, self.w);
        if y0 >= y1 || x0 >= x1 {
            return Rect::default();
        }
        Rect { y0, y1, x0, x1 }
    }
}

/// Grouped 2-D convolution with constant weights.
#[derive(Clone, Debug)]
pub struct Conv {
    /// `[m, c / group, kh, kw]`.
    pub weight: Param,
    pub weight_abs: Vec<f64>,
    /// `[m]`.
    pub bias: Option<Param>,
    pub win: Window,
    /// Output channels.
    pub m: usize,
    pub group: usize,
    pub fp: FpModel,
    /// The layer as a dense `[out, in]` matrix per image, built on first use by the
    /// concrete evaluator when that is small and cheaper than unfolding (`None` otherwise).
    pub dense: std::sync::OnceLock<Option<Param>>,
}

impl Conv {
    /// The input channel of per-sample input element `i`.
    pub fn input_channel(&self, i: usize) -> usize {
        (i / (self.win.h * self.win.w)) % self.win.c
    }
}

/// `y = x * scale + shift` elementwise; `scale` and `shift` have the full per-sample shape.
#[derive(Clone, Debug)]
pub struct Affine {
    pub scale: Param,
    pub shift: Param,
    pub fp: FpModel,
}

/// Elementwise arithmetic between two variable tensors, with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
}

/// Binary operator with precomputed broadcast maps (`None`: the input already has the output
/// shape).
#[derive(Clone, Debug)]
pub struct Binary {
    pub kind: BinaryKind,
    pub a_map: Option<Vec<usize>>,
    pub b_map: Option<Vec<usize>>,
}

/// Pooling window operator.
#[derive(Clone, Debug)]
pub struct Pool {
    pub win: Window,
    /// AveragePool: divide by the full window size, padding included.
    pub count_include_pad: bool,
}

/// Marker in [`Select::map`] for an element that takes [`Select::fill`].
pub const FILL: usize = usize::MAX;

/// Data movement: output element `i` is element `map[i]` of the inputs' per-sample data laid
/// end to end, or `fill` where `map[i] == FILL`. Transpose, Slice, Pad, Gather and Concat all
/// lower to this, so every analysis handles them with one exact transformer.
#[derive(Clone, Debug)]
pub struct Select {
    pub map: Vec<usize>,
    pub fill: f64,
}

/// Operator families of the IR.
#[derive(Clone, Debug)]
pub enum Op {
    /// A constant produced inside the graph.
    Const(Param),
    Linear(Linear),
    Conv(Conv),
    Affine(Affine),
    Binary(Binary),
    Relu,
    LeakyRelu {
        alpha: f64,
    },
    /// A scalar function applied to every element (sigmoid, tanh, exp, clip, ...): see
    /// [`crate::ops::elementwise`].
    Elementwise(crate::ops::Func),
    MaxPool(Pool),
    AveragePool(Pool),
    /// Shape change only (Flatten, Reshape, Squeeze, Unsqueeze): data is unchanged.
    Reshape,
    Select(Select),
}

impl Op {
    /// Short family name used in reports and errors.
    pub fn family(&self) -> &'static str {
        match self {
            Op::Const(_) => "Const",
            Op::Linear(_) => "Linear",
            Op::Conv(_) => "Conv",
            Op::Affine(_) => "Affine",
            Op::Binary(b) => match b.kind {
                BinaryKind::Add => "Add",
                BinaryKind::Sub => "Sub",
                BinaryKind::Mul => "Mul",
                BinaryKind::Div => "Div",
            },
            Op::Relu => "Relu",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::Elementwise(f) => f.name(),
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool(_) => "AveragePool",
            Op::Reshape => "Reshape",
            Op::Select(_) => "Select",
        }
    }

    /// Number of constant parameters the operator holds.
    pub fn param_count(&self) -> usize {
        match self {
            Op::Const(p) => p.len(),
            Op::Linear(l) => l.weight.len() + l.bias.as_ref().map_or(0, Param::len),
            Op::Conv(c) => c.weight.len() + c.bias.as_ref().map_or(0, Param::len),
            Op::Affine(a) => a.scale.len() + a.shift.len(),
            Op::Binary(_)
            | Op::Relu
            | Op::LeakyRelu { .. }
            | Op::Elementwise(_)
            | Op::MaxPool(_)
            | Op::AveragePool(_)
            | Op::Reshape
            | Op::Select(_) => 0,
        }
    }

    /// True for piecewise or smooth nonlinear activations.
    pub fn is_activation(&self) -> bool {
        matches!(self, Op::Relu | Op::LeakyRelu { .. } | Op::Elementwise(_))
    }

    /// Whether the node is an affine map with constant parameters (Gemm/MatMul, Conv,
    /// elementwise scale and shift): on a box its interval image is exact up to rounding.
    pub fn is_affine(&self) -> bool {
        matches!(self, Op::Linear(_) | Op::Conv(_) | Op::Affine(_))
    }
}

/// A named edge with its static per-sample shape.
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    pub shape: Vec<usize>,
}

impl Value {
    /// Elements per sample.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
}

/// One operator application.
#[derive(Clone, Debug)]
pub struct Node {
    /// ONNX node name (or the output name when the node had none).
    pub name: String,
    /// ONNX operator(s) this node came from, e.g. `"MatMul+Add"` after folding.
    pub source_op: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
}

/// A network with one input and one output, nodes in topological order.
#[derive(Clone, Debug)]
pub struct Graph {
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub input: ValueId,
    pub output: ValueId,
    pub dtype: DType,
}

impl Graph {
    /// Per-sample shape of the network input.
    pub fn input_shape(&self) -> &[usize] {
        &self.values[self.input].shape
    }

    /// Per-sample shape of the network output.
    pub fn output_shape(&self) -> &[usize] {
        &self.values[self.output].shape
    }

    /// Input elements per sample.
    pub fn input_numel(&self) -> usize {
        self.values[self.input].numel()
    }

    /// Output elements per sample.
    pub fn output_numel(&self) -> usize {
        self.values[self.output].numel()
    }

    /// Total constant parameters.
    pub fn param_count(&self) -> usize {
        self.nodes.iter().map(|n| n.op.param_count()).sum()
    }

    /// For each value, the indices of the nodes that read it.
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut c = vec![Vec::new(); self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &v in &n.inputs {
                if !c[v].contains(&i) {
                    c[v].push(i);
                }
            }
        }
        c
    }

    /// For each value, the index of the last node that reads it (`usize::MAX` if none), used to
    /// free activations early.
    pub fn last_use(&self) -> Vec<usize> {
        let mut last = vec![usize::MAX; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &v in &n.inputs {
                last[v] = i;
            }
        }
        last
    }

    /// The spatial plane `(h, w)` of value `v`: its last two dimensions from rank 4 on, `(1,
    /// length)` at rank 3 (1-D convolutions), `None` for vectors. [`Rect`]s of `v` live here.
    pub fn plane(&self, v: ValueId) -> Option<(usize, usize)> {
        let s = &self.values[v].shape;
        match s.len() {
            0..=2 => None,
            3 => Some((1, s[2])),
            r => Some((s[r - 2], s[r - 1])),
        }
        .filter(|&(h, w)| h * w > 0)
    }

    /// Number of activation (nonlinear) nodes.
    pub fn activation_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.op.is_activation()).count()
    }
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "input {} {:?} -> output {} {:?}",
            self.values[self.input].name,
            self.input_shape(),
            self.values[self.output].name,
            self.output_shape()
        )?;
        for n in &self.nodes {
            writeln!(
                f,
                "  {:<12} {:<24} {:?}  [{}]",
                n.op.family(),
                n.name,
                self.values[n.output].shape,
                n.source_op
            )?;
        }
        Ok(())
    }
}

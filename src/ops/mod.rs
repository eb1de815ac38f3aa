//! Operator families, one home each. Every family of the IR ([`crate::ir::Op`]) implements
//! [`Family`]: what each analysis needs from it (concrete evaluation in f32 and f64, the
//! vector-Jacobian product, the interval transformer, which intermediate bounds CROWN needs, the
//! relaxation it fixes once its input bounds are final, the backward step with its rounding
//! term, alpha-CROWN's relaxed forward pass, and its LP rows). The engines in
//! [`crate::eval`], [`crate::transformers`], [`crate::bounds`] and [`crate::lp`] stay generic:
//! they reach a node's family through [`with_family!`], the one dispatch over `Op`, so a new
//! operator does not compile until it has a family here, and a family does not compile until it
//! implements every method (there are no defaults).
//!
//! | file | families |
//! |---|---|
//! | [`constant`] | constants produced inside the graph |
//! | [`linear`] | Linear (Gemm, MatMul with a constant) and Conv |
//! | [`affine`] | elementwise `x * scale + shift` |
//! | [`binary`] | Add, Sub, Mul, Div of two network values |
//! | [`relu`] | ReLU and LeakyReLU |
//! | [`elementwise`] | every other scalar function (value, derivative, pieces, allowance) |
//! | [`pool`] | MaxPool and AveragePool |
//! | [`movement`] | Reshape (a view) and Select (every exact index map) |

/// The methods every exactly linear family answers the same way: it needs no intermediate
/// bounds, fixes no relaxation, has no relaxed step (its step is
/// [`Family::linear_back`]), no optimised slopes, and its relaxed forward pass is its own
/// evaluation. Invoked inside an `impl Family`, so each family still opts in by name.
macro_rules! exactly_linear {
    () => {
        exactly_linear!(own_forward);

        fn relaxed_forward(
            &self,
            _pass: &$crate::bounds::alpha::RelaxedPass,
            at: &$crate::ops::At,
            ins: &[&[f64]],
        ) -> (Vec<f64>, Option<Vec<f64>>) {
            (self.eval(at, ins), None)
        }
    };
    // Every method but the relaxed forward pass, which the family writes itself.
    (own_forward) => {
        fn needs(&self) -> $crate::ops::Need {
            $crate::ops::Need::No
        }

        fn relaxation(
            &self,
            _at: &$crate::ops::At,
            _input: &$crate::domain::Intervals,
            _rnd: &$crate::domain::Rounding,
        ) -> $crate::ops::Relaxation {
            $crate::ops::Relaxation::None
        }

        fn relaxed_back(
            &self,
            _ctx: &$crate::transformers::backward::BackCtx,
            _node: &$crate::ir::Node,
            _a: &[f64],
            _alpha: $crate::transformers::backward::Alpha,
            _support: &[Option<$crate::ir::Rect>],
        ) -> $crate::transformers::backward::Back {
            $crate::transformers::backward::Back::Concretize(Vec::new())
        }

        fn alpha_leak(&self) -> Option<f64> {
            None
        }
    };
}

pub mod affine;
pub mod binary;
pub mod constant;
pub mod elementwise;
pub mod linear;
pub mod movement;
pub mod pool;
pub mod relu;

pub use elementwise::Func;

use crate::bounds::alpha::RelaxedPass;
use crate::domain::{Intervals, Rounding};
use crate::eval::Scalar;
use crate::ir::{Graph, Node, Rect};
use crate::lp::{LpError, LpNode};
use crate::transformers::backward::{Alpha, Back, BackCtx, PoolRelax, Support};
use crate::transformers::relax::Lines;

/// A node in its graph, with the number of samples (or domains, or rows) an analysis runs.
pub struct At<'a> {
    pub g: &'a Graph,
    pub node: &'a Node,
    pub batch: usize,
}

impl At<'_> {
    /// Elements per sample of input `i`.
    pub fn in_n(&self, i: usize) -> usize {
        self.g.values[self.node.inputs[i]].numel()
    }

    /// Elements per sample of the output.
    pub fn out_n(&self) -> usize {
        self.g.values[self.node.output].numel()
    }

    /// Elements per sample of every input, in order.
    pub fn in_sizes(&self) -> Vec<usize> {
        self.node
            .inputs
            .iter()
            .map(|&v| self.g.values[v].numel())
            .collect()
    }
}

/// Which elements of its inputs a family needs tight bounds for (CROWN's intermediate bounds).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Need {
    /// None: the family is exactly linear.
    No,
    /// Only where the interval straddles 0 (ReLU-like kinks).
    Kink,
    /// Everywhere (smooth activations, pooling, products).
    All,
}

/// The relaxation a family fixes once its input bounds are final, per domain.
pub enum Relaxation {
    /// Nothing to fix: linear maps, and products (McCormick planes from the bounds each pass).
    None,
    /// Lower and upper lines of every element (`[domains, numel]`).
    Lines(Vec<Lines>),
    /// The dominating or best tap of every max-pool window, per domain.
    Pool(Vec<Vec<PoolRelax>>),
}

/// What every analysis needs from one operator family.
pub trait Family {
    /// Concrete evaluation of `at.batch` samples, in the arithmetic of `T` (f32 as deployed, or
    /// f64 for constant folding and the relaxed passes).
    fn eval<T: Scalar>(&self, at: &At, ins: &[&[T]]) -> Vec<T>;

    /// Evaluate over the buffer of the single input when the family is elementwise over it
    /// (the same arithmetic as [`Family::eval`], so the same bits); `false` when it is not,
    /// and the buffer is untouched. Lets the evaluator reuse a buffer at its last use.
    fn eval_in_place<T: Scalar>(&self, at: &At, x: &mut [T]) -> bool;

    /// Gradients of the inputs from the output gradient `go` (`[batch, out_n]`), given the
    /// forward values of the inputs; `None` for an input that receives none.
    fn vjp<T: Scalar>(&self, at: &At, ins: &[&[T]], go: Vec<T>) -> Vec<Option<Vec<T>>>;

    /// Interval transformer over `at.batch` boxes, containing every output the deployed
    /// arithmetic can produce under `rnd`.
    fn ibp(&self, at: &At, ins: &[&Intervals], rnd: &Rounding) -> Intervals;

    /// Which elements of the inputs need tight intermediate bounds.
    fn needs(&self) -> Need;

    /// The relaxation fixed from the final bounds of input 0 (`at.batch` domains).
    fn relaxation(&self, at: &At, input: &Intervals, rnd: &Rounding) -> Relaxation;

    /// Rounding error bound of every output element (`[domains, numel]`, `at.batch` domains)
    /// covering the deployed arithmetic and the f64 arithmetic of a backward pass through the
    /// node; `terms` bounds the length of any dot product a backward pass computes. `None`
    /// when a needed bound is missing.
    fn backward_error(
        &self,
        at: &At,
        bounds: &[Option<Intervals>],
        rnd: &Rounding,
        terms: usize,
    ) -> Option<Vec<f64>>;

    /// The backward step of a family that is exactly linear (needs no bounds): the transposed
    /// map of `a` (`at.batch` rows) and its constant term. `None` for a nonlinear family.
    /// `support` holds, per row, a box of the output's plane outside which the row of `a` is
    /// zero (`None`: anywhere); a family may use it to skip the zeros.
    fn linear_back(&self, at: &At, a: &[f64], support: &[Option<Rect>]) -> Option<Back>;

    /// The backward step of a nonlinear family through its relaxation (`ctx.rows` rows).
    /// Linear families return `Back::Concretize` (their step is [`Family::linear_back`]).
    /// `support` as for [`Family::linear_back`].
    fn relaxed_back(
        &self,
        ctx: &BackCtx,
        node: &Node,
        a: &[f64],
        alpha: Alpha,
        support: &[Option<Rect>],
    ) -> Back;

    /// Per input, per row, a box of the input's plane holding every coefficient a backward
    /// step can give it from output coefficients supported in `out` (one entry per row;
    /// `None`: anywhere). Must hold the support of the step's result, or be `None`.
    fn back_support(&self, at: &At, out: &[Option<Rect>]) -> Vec<Support>;

    /// For ReLU-like kinks, the smallest slope alpha-CROWN may give the lower line through the
    /// origin (the leak); `None` where the family keeps its CROWN relaxation.
    fn alpha_leak(&self) -> Option<f64>;

    /// alpha-CROWN's forward pass of the relaxed network at the minimising input vertex of
    /// every row: the node's output and, for a family with optimised slopes, the gradient of
    /// the bound with respect to them.
    fn relaxed_forward(
        &self,
        pass: &RelaxedPass,
        at: &At,
        ins: &[&[f64]],
    ) -> (Vec<f64>, Option<Vec<f64>>);

    /// The family's rows of the LP relaxation on one domain.
    fn lp_rows(&self, lp: &mut LpNode) -> Result<(), LpError>;
}

/// Bind `$f` to the [`Family`] of `$op` (a `&Op`) and evaluate `$body`: the one match over the
/// IR's operators that the engines use.
#[macro_export]
macro_rules! with_family {
    ($op:expr, $f:ident => $body:expr) => {
        match $op {
            $crate::ir::Op::Const(p) => {
                let $f = $crate::ops::constant::Constant(p);
                $body
            }
            $crate::ir::Op::Linear($f) => $body,
            $crate::ir::Op::Conv($f) => $body,
            $crate::ir::Op::Affine($f) => $body,
            $crate::ir::Op::Binary($f) => $body,
            $crate::ir::Op::Relu => {
                let $f = $crate::ops::relu::ReluLike::RELU;
                $body
            }
            $crate::ir::Op::LeakyRelu { alpha } => {
                let $f = $crate::ops::relu::ReluLike::leaky(*alpha);
                $body
            }
            $crate::ir::Op::Elementwise($f) => $body,
            $crate::ir::Op::MaxPool(p) => {
                let $f = $crate::ops::pool::MaxPool(p);
                $body
            }
            $crate::ir::Op::AveragePool(p) => {
                let $f = $crate::ops::pool::AveragePool(p);
                $body
            }
            $crate::ir::Op::Reshape => {
                let $f = $crate::ops::movement::Reshape;
                $body
            }
            $crate::ir::Op::Select($f) => $body,
        }
    };
}

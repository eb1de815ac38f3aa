//! Concrete evaluator: batched forward pass in f32 (as deployed) or f64.
//!
//! Every analysis that needs a concrete output (counterexample checks, attacks, sampling,
//! smoothing) goes through [`forward`], so a counterexample is always re-checked by this one
//! implementation.

pub mod grad;
pub mod kernels;

use crate::ir::{Graph, Node, Param};
use crate::ops::{At, Family, Func};
use crate::with_family;
use rayon::prelude::*;
use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};
use thiserror::Error;

/// Errors of the concrete evaluator.
#[derive(Debug, Error)]
pub enum EvalError {
    #[error(
        "input has {got} values, but the network expects {expected} per sample x {batch} samples"
    )]
    InputSize {
        expected: usize,
        batch: usize,
        got: usize,
    },
}

/// Floating-point element type of an evaluation.
pub trait Scalar:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + Debug
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    /// Round-to-nearest conversion.
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn tanh(self) -> Self;
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;
    /// `C = A B` for row-major `A` (`m x p`), `B` (`p x n`), `C` (`m x n`): the thin
    /// products of backward passes ([`kernels::gemm_rows_f64`] in f64).
    fn gemm_rows(m: usize, p: usize, n: usize, a: &[Self], b: &[Self], c: &mut [Self]);
    /// The copy of a parameter in this precision.
    fn param(p: &Param) -> &[Self];
    /// An elementwise function in this precision (float32: as the deployed network does).
    fn apply(f: &Func, x: Self) -> Self;
    /// Raw strided GEMM `C = A B + beta C`.
    ///
    /// # Safety
    /// Every strided index must lie inside the pointed-to buffers.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

macro_rules! impl_scalar {
    ($t:ty, $field:ident, $gemm:path, $rows:path, $apply:ident) => {
        impl Scalar for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn max(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            fn min(self, o: Self) -> Self {
                <$t>::min(self, o)
            }
            fn gemm_rows(m: usize, p: usize, n: usize, a: &[Self], b: &[Self], c: &mut [Self]) {
                $rows(m, p, n, a, b, c)
            }
            fn param(p: &Param) -> &[Self] {
                &p.$field
            }
            fn apply(f: &Func, x: Self) -> Self {
                f.$apply(x)
            }
            unsafe fn gemm_raw(
                m: usize,
                k: usize,
                n: usize,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                // SAFETY: forwarded from the caller's contract.
                unsafe { $gemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
            }
        }
    };
}

impl_scalar!(
    f32,
    f32,
    matrixmultiply::sgemm,
    kernels::gemm_rows_f32,
    value_f32
);
impl_scalar!(
    f64,
    f64,
    matrixmultiply::dgemm,
    kernels::gemm_rows_f64,
    value
);

/// Apply one node to its inputs' batched data (its family's [`crate::ops::Family::eval`]).
pub fn run_node<T: Scalar>(g: &Graph, node: &Node, inputs: &[&[T]], batch: usize) -> Vec<T> {
    let at = At { g, node, batch };
    with_family!(&node.op, f => f.eval(&at, inputs))
}

/// Forward pass keeping every intermediate value (`None` for values no node produced).
pub fn forward_values<T: Scalar>(
    g: &Graph,
    input: &[T],
    batch: usize,
) -> Result<Vec<Option<Vec<T>>>, EvalError> {
    run_graph(g, input, batch, true)
}

/// Forward pass of `batch` samples laid out `[batch, input...]`; returns `[batch, output...]`.
/// Activations are freed after their last use.
pub fn forward<T: Scalar>(g: &Graph, input: &[T], batch: usize) -> Result<Vec<T>, EvalError> {
    let mut vals = run_graph(g, input, batch, false)?;
    Ok(vals[g.output].take().unwrap_or_default())
}

fn check_input<T>(g: &Graph, input: &[T], batch: usize) -> Result<(), EvalError> {
    let expected = g.input_numel();
    if input.len() != expected * batch {
        return Err(EvalError::InputSize {
            expected,
            batch,
            got: input.len(),
        });
    }
    Ok(())
}

/// Evaluate every node in order; unless `keep_all`, free values after their last use (and let
/// a view take over its input's buffer).
fn run_graph<T: Scalar>(
    g: &Graph,
    input: &[T],
    batch: usize,
    keep_all: bool,
) -> Result<Vec<Option<Vec<T>>>, EvalError> {
    check_input(g, input, batch)?;
    let last = g.last_use();
    let mut vals: Vec<Option<Vec<T>>> = vec![None; g.values.len()];
    vals[g.input] = Some(input.to_vec());
    for (i, node) in g.nodes.iter().enumerate() {
        // At its input's last use, an elementwise node (or a view) works in that buffer.
        let reuse = !keep_all
            && node.inputs.len() == 1
            && last[node.inputs[0]] == i
            && node.inputs[0] != g.output;
        let mut taken = None;
        if reuse && let Some(mut buf) = vals[node.inputs[0]].take() {
            let at = At { g, node, batch };
            if with_family!(&node.op, f => f.eval_in_place(&at, &mut buf)) {
                taken = Some(buf);
            } else {
                vals[node.inputs[0]] = Some(buf);
            }
        }
        let y = if let Some(buf) = taken {
            buf
        } else {
            let ins: Vec<&[T]> = node
                .inputs
                .iter()
                .map(|&v| vals[v].as_deref().unwrap_or(&[]))
                .collect();
            run_node(g, node, &ins, batch)
        };
        if !keep_all {
            for &v in &node.inputs {
                if last[v] == i && v != g.output {
                    vals[v] = None;
                }
            }
        }
        vals[node.output] = Some(y);
    }
    Ok(vals)
}

/// [`forward`] split into chunks of at most `chunk` samples evaluated in parallel with rayon.
/// The result does not depend on the chunk size or thread count: samples are independent.
pub fn forward_par<T: Scalar>(
    g: &Graph,
    input: &[T],
    batch: usize,
    chunk: usize,
) -> Result<Vec<T>, EvalError> {
    check_input(g, input, batch)?;
    let (ni, no) = (g.input_numel(), g.output_numel());
    let chunk = chunk.max(1);
    let parts: Result<Vec<Vec<T>>, EvalError> = input
        .par_chunks(chunk * ni.max(1))
        .map(|c| forward(g, c, if ni == 0 { batch } else { c.len() / ni }))
        .collect();
    let mut out = Vec::with_capacity(batch * no);
    for p in parts? {
        out.extend(p);
    }
    Ok(out)
}

//! Reverse mode of the concrete network: vector-Jacobian products batched over samples, in
//! f32 or f64, each from its operator family ([`crate::ops::Family::vjp`]; a new operator
//! does not compile until its family has one). Linear maps use their transposed matrix
//! products; nonlinear operators use the derivative at the forward value (a subgradient at
//! kinks: ReLU's is 0 at 0, MaxPool's goes to the first maximal tap).
//!
//! PGD (verification), the trigger search and the patch attack of the backdoor scan all take
//! their gradients from [`input_gradient`].

use super::Scalar;
use crate::ir::{Graph, Node, ValueId};
use crate::ops::{At, Family};
use crate::with_family;

/// Gradient with respect to the network input of `sum_s gv[s] . v(x_s)` for the value `v`,
/// given the forward values of every node for the batch (from [`super::forward_values`]).
pub fn input_gradient<T: Scalar>(
    g: &Graph,
    vals: &[Option<Vec<T>>],
    v: ValueId,
    gv: Vec<T>,
    batch: usize,
) -> Vec<T> {
    let mut grads: Vec<Option<Vec<T>>> = vec![None; g.values.len()];
    grads[v] = Some(gv);
    let last = g
        .nodes
        .iter()
        .position(|n| n.output == v)
        .map_or(0, |l| l + 1);
    for node in g.nodes[..last].iter().rev() {
        let Some(go) = grads[node.output].take() else {
            continue;
        };
        let ins = node_vjp(g, node, vals, go, batch);
        for (&iv, gi) in node.inputs.iter().zip(ins) {
            let Some(gi) = gi else { continue };
            match &mut grads[iv] {
                Some(acc) => acc.iter_mut().zip(&gi).for_each(|(a, &b)| *a += b),
                slot => *slot = Some(gi),
            }
        }
    }
    grads[g.input]
        .take()
        .unwrap_or_else(|| vec![T::ZERO; batch * g.input_numel()])
}

/// Gradients of one node's inputs from its output gradient `go` (`[batch, out_n]`); `None`
/// for an input that receives none (its family's [`crate::ops::Family::vjp`]).
pub fn node_vjp<T: Scalar>(
    g: &Graph,
    node: &Node,
    vals: &[Option<Vec<T>>],
    go: Vec<T>,
    batch: usize,
) -> Vec<Option<Vec<T>>> {
    let ins: Vec<&[T]> = node
        .inputs
        .iter()
        .map(|&v| vals[v].as_deref().unwrap_or(&[]))
        .collect();
    let at = At { g, node, batch };
    with_family!(&node.op, f => f.vjp(&at, &ins, go))
}

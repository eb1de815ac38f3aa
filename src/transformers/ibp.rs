//! Interval bound propagation: the engine side. Each operator family's transformer lives with
//! it in [`crate::ops`] ([`crate::ops::Family::ibp`]), with its soundness argument: endpoint
//! or centre-radius arithmetic widened by the error term of [`crate::domain`], exact
//! selections for ReLU, max pooling and data movement, and verified extremes over convexity
//! pieces for the elementwise functions.

use crate::domain::{Intervals, Rounding};
use crate::ir::{Graph, Node};
use crate::ops::{At, Family};
use crate::with_family;

/// Apply the interval transformer of `node` to its inputs' intervals (batched): its family's
/// [`crate::ops::Family::ibp`].
pub fn transfer(
    g: &Graph,
    node: &Node,
    ins: &[&Intervals],
    batch: usize,
    rnd: &Rounding,
) -> Intervals {
    let at = At { g, node, batch };
    with_family!(&node.op, f => f.ibp(&at, ins, rnd))
}

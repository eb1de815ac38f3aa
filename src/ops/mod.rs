//! Operator families, one home each. [`elementwise`] holds every scalar function applied
//! elementwise (value, derivative, convexity pieces, deployed allowance) and derives its
//! interval, relaxation lines and gradient from them.

pub mod elementwise;

pub use elementwise::Func;

//! Per-operator abstract transformers, one file per analysis kind.
//!
//! Each file implements one transformer for every IR operator family; the engines that drive
//! them over a graph live in [`crate::bounds`].

pub mod backward;
pub mod ibp;
pub mod relax;

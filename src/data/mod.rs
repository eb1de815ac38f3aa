//! Input data sets: NumPy `.npy` arrays (images, labels) checked against a model, for smoothing
//! and scanning.

mod dataset;
pub mod npy;

pub use dataset::{DataError, Dataset};

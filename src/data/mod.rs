//! Input data sets: NumPy `.npy` arrays (images, labels) for smoothing and scanning.

pub mod npy;

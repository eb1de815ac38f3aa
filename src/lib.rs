//! ferrocert: sound analysis of neural networks (bounds, verification, smoothing, scanning).
//!
//! Data flows one way: [`onnx`] -> [`ir`] -> [`eval`] and the [`transformers`] over the
//! [`domain`] -> analyses ([`bounds`], [`verify`], [`smoothing`], [`scan`]) -> [`report`]. The binary (`src/main.rs`)
//! only parses arguments and calls [`commands`].

pub mod alloc;
pub mod bounds;
pub mod certify;
pub mod commands;
pub mod data;
pub mod domain;
pub mod eval;
pub mod ir;
pub mod lp;
pub mod network;
pub mod onnx;
pub mod ops;
pub mod progress;
pub mod report;
pub mod scan;
pub mod smoothing;
pub mod spec;
pub mod tensor;
pub mod transformers;
pub mod verify;

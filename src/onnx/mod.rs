//! ONNX protobuf -> graph IR.
//!
//! [`load`] reads and decodes the file (hashing it on the way), [`import`] lowers the graph to
//! the IR of [`crate::ir`]. Every check that protects later layers happens here: tensor sizes
//! against [`crate::tensor::MAX_ELEMENTS`] before allocation, declared shapes against data,
//! NaN/Inf weights, cycles, dangling inputs, and the full list of unsupported operators.

pub mod build;
mod import;
mod tensor;

pub use import::{import, supported_ops};

use onnx_protobuf::{Message, ModelProto};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// One operator the importer cannot lower.
#[derive(Debug, Clone)]
pub struct UnsupportedOp {
    pub op_type: String,
    pub domain: String,
    pub node: String,
    pub opset: i64,
}

impl fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dom = if self.domain.is_empty() {
            "ai.onnx"
        } else {
            &self.domain
        };
        write!(
            f,
            "{} (node '{}', domain {}, opset {})",
            self.op_type, self.node, dom, self.opset
        )
    }
}

fn list_unsupported(ops: &[UnsupportedOp]) -> String {
    ops.iter().map(|o| format!("\n  - {o}")).collect::<String>()
}

/// Errors of ONNX loading and import.
#[derive(Debug, Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a valid ONNX model (truncated or corrupt protobuf): {0}")]
    Decode(String),
    #[error("the model has no graph")]
    NoGraph,
    #[error("{} unsupported operator(s):{}", .0.len(), list_unsupported(.0))]
    UnsupportedOps(Vec<UnsupportedOp>),
    #[error("node '{node}' ({op}): unsupported form: {reason}")]
    Unsupported {
        node: String,
        op: String,
        reason: String,
    },
    #[error("node '{node}' ({op}): bad attribute: {reason}")]
    Attribute {
        node: String,
        op: String,
        reason: String,
    },
    #[error("node '{node}' ({op}): shape error: {reason}")]
    Shape {
        node: String,
        op: String,
        reason: String,
    },
    #[error("tensor '{name}': {reason}")]
    BadTensor { name: String, reason: String },
    #[error("tensor '{name}' holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        name: String,
        index: usize,
        value: f64,
    },
    #[error(
        "tensor '{name}' declares shape {shape:?}, more than the {limit} elements ferrocert accepts (refused before allocating)"
    )]
    TooLarge {
        name: String,
        shape: Vec<i64>,
        limit: usize,
    },
    #[error("the graph has a cycle through node(s): {}", .0.join(", "))]
    Cycle(Vec<String>),
    #[error("node '{node}' reads '{input}', which no node, initializer or graph input defines")]
    DanglingInput { node: String, input: String },
    #[error("value '{0}' is produced by more than one node")]
    DuplicateOutput(String),
    #[error("ferrocert needs exactly one non-constant graph input, found {0}")]
    InputCount(usize),
    #[error("the graph declares {0} outputs; ferrocert needs at least one")]
    OutputCount(usize),
    #[error("graph input '{name}': {reason}")]
    BadInput { name: String, reason: String },
    #[error("graph output '{name}': {reason}")]
    BadOutput { name: String, reason: String },
}

/// A decoded ONNX file with its identity.
pub struct OnnxFile {
    pub path: PathBuf,
    pub proto: ModelProto,
    /// Lower-case hex SHA-256 of the file bytes.
    pub sha256: String,
    pub size_bytes: u64,
}

impl OnnxFile {
    /// Opset of the default (`ai.onnx`) domain; 13 when the model declares none.
    pub fn opset(&self) -> i64 {
        opset_of(&self.proto)
    }
}

pub(crate) fn opset_of(m: &ModelProto) -> i64 {
    m.opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(13)
}

/// Read and decode an ONNX file.
pub fn load(path: &Path) -> Result<OnnxFile, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes, path)
}

/// Decode ONNX bytes read from `path` (the path only names the model and locates external data).
pub fn decode(bytes: &[u8], path: &Path) -> Result<OnnxFile, ImportError> {
    let sha256 = sha256_hex(bytes);
    let proto =
        ModelProto::parse_from_bytes(bytes).map_err(|e| ImportError::Decode(e.to_string()))?;
    if proto.graph.is_none() {
        return Err(ImportError::NoGraph);
    }
    Ok(OnnxFile {
        path: path.to_path_buf(),
        proto,
        sha256,
        size_bytes: bytes.len() as u64,
    })
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String, std::io::Error> {
    Ok(sha256_hex(&std::fs::read(path)?))
}

/// Load and import in one step: the IR graph as the deployed network computes it (constants
/// folded, views and no-ops removed, affine maps not yet merged).
pub fn load_graph(path: &Path) -> Result<(OnnxFile, crate::ir::Graph), ImportError> {
    import_file(load(path)?)
}

/// Import a decoded file; external data is looked up beside its path.
pub fn import_file(f: OnnxFile) -> Result<(OnnxFile, crate::ir::Graph), ImportError> {
    let base = f.path.parent().unwrap_or(Path::new("."));
    let g = import(&f.proto, base)?;
    Ok((f, g))
}

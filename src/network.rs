//! A loaded network: its file identity, the graph as deployed, and the simplified graph the
//! analyses run on.

use crate::ir::{Graph, passes};
use crate::onnx::{self, ImportError};
use std::path::Path;

/// A model ready for analysis.
pub struct Network {
    /// Path it was loaded from.
    pub path: std::path::PathBuf,
    /// Lower-case hex SHA-256 of the ONNX file.
    pub sha256: String,
    /// Size of the ONNX file.
    pub size_bytes: u64,
    /// Opset of the default domain.
    pub opset: i64,
    /// ONNX operator counts of the file, in first-seen order.
    pub onnx_ops: Vec<(String, usize)>,
    /// Parameters stored in the file (initializer elements).
    pub onnx_params: usize,
    /// The graph as the deployed network computes it (constants folded, views, no merging):
    /// the concrete evaluator and counterexample checks use it.
    pub exec: Graph,
    /// The same function with affine maps folded into neighbouring layers: bounds use it.
    pub analysis: Graph,
}

impl Network {
    /// Load, import and simplify an ONNX file.
    pub fn load(path: &Path) -> Result<Self, ImportError> {
        Self::from_file(onnx::load(path)?)
    }

    /// Import and simplify ONNX bytes as if read from `path`.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, ImportError> {
        Self::from_file(onnx::decode(bytes, path)?)
    }

    fn from_file(file: onnx::OnnxFile) -> Result<Self, ImportError> {
        let (file, exec) = onnx::import_file(file)?;
        let analysis = passes::simplify(exec.clone());
        let mut onnx_ops: Vec<(String, usize)> = Vec::new();
        let g = file.proto.graph.as_ref();
        for n in g.map(|g| &g.node[..]).unwrap_or(&[]) {
            match onnx_ops.iter_mut().find(|(o, _)| *o == n.op_type) {
                Some(e) => e.1 += 1,
                None => onnx_ops.push((n.op_type.clone(), 1)),
            }
        }
        let onnx_params = g
            .map(|g| {
                g.initializer
                    .iter()
                    .map(|t| {
                        t.dims
                            .iter()
                            .fold(1usize, |n, &d| n.saturating_mul(d.max(0) as usize))
                    })
                    .fold(0usize, usize::saturating_add)
            })
            .unwrap_or(0);
        Ok(Network {
            path: file.path.clone(),
            opset: file.opset(),
            sha256: file.sha256,
            size_bytes: file.size_bytes,
            onnx_ops,
            onnx_params,
            exec,
            analysis,
        })
    }
}

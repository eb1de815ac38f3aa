//! Programmatic construction of ONNX models, for tests, fuzzing and generated fixtures.

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension::Value as DimValue};
use onnx_protobuf::type_proto::{Tensor as TypeTensor, Value as TypeValue};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Builds a single-input, single-output ONNX model node by node.
pub struct ModelBuilder {
    graph: GraphProto,
    opset: i64,
    counter: usize,
}

fn value_info(name: &str, elem: i32, shape: Option<&[i64]>) -> ValueInfoProto {
    let mut t = TypeTensor::new();
    t.elem_type = elem;
    if let Some(shape) = shape {
        let mut s = TensorShapeProto::new();
        for &d in shape {
            let mut dim = Dimension::new();
            dim.value = Some(DimValue::DimValue(d));
            s.dim.push(dim);
        }
        t.shape = Some(s).into();
    }
    let mut ty = TypeProto::new();
    ty.value = Some(TypeValue::TensorType(t));
    let mut v = ValueInfoProto::new();
    v.name = name.to_string();
    v.type_ = Some(ty).into();
    v
}

/// An integer attribute.
pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

/// An integer-list attribute.
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

/// A string attribute.
pub fn attr_str(name: &str, v: &str) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::STRING.into();
    a.s = v.as_bytes().to_vec();
    a
}

/// A float attribute.
pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = v;
    a
}

/// A float32 tensor.
pub fn tensor_f32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = 1;
    t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

/// An int64 tensor.
pub fn tensor_i64(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = 7;
    t.int64_data = data.to_vec();
    t
}

impl ModelBuilder {
    /// A model whose float32 input `input` has the given shape.
    pub fn new(input_shape: &[i64], opset: i64) -> Self {
        let mut graph = GraphProto::new();
        graph.name = "built".into();
        graph.input.push(value_info("input", 1, Some(input_shape)));
        ModelBuilder {
            graph,
            opset,
            counter: 0,
        }
    }

    /// Add an initializer; returns its name.
    pub fn init(&mut self, dims: &[i64], data: &[f32]) -> String {
        self.counter += 1;
        let name = format!("w{}", self.counter);
        self.graph.initializer.push(tensor_f32(&name, dims, data));
        name
    }

    /// Add an int64 initializer (shapes, axes); returns its name.
    pub fn init_i64(&mut self, dims: &[i64], data: &[i64]) -> String {
        self.counter += 1;
        let name = format!("i{}", self.counter);
        self.graph.initializer.push(tensor_i64(&name, dims, data));
        name
    }

    /// Add a raw initializer tensor as given.
    pub fn init_tensor(&mut self, t: TensorProto) {
        self.graph.initializer.push(t);
    }

    /// Add a node with one output; returns the output name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.counter += 1;
        let out = format!("v{}", self.counter);
        self.node_to(op, inputs, &[&out], attrs);
        out
    }

    /// Add a node with explicit output names.
    pub fn node_to(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = format!("{op}_{}", self.graph.node.len());
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = outputs.iter().map(|s| s.to_string()).collect();
        n.attribute = attrs;
        self.graph.node.push(n);
    }

    /// Finish with `output` as the graph output (shape left unspecified).
    pub fn finish(mut self, output: &str) -> ModelProto {
        self.graph.output.push(value_info(output, 1, None));
        let mut m = ModelProto::new();
        m.ir_version = 8;
        let mut op = OperatorSetIdProto::new();
        op.version = self.opset;
        m.opset_import.push(op);
        m.graph = Some(self.graph).into();
        m
    }
}

/// Serialise a model to protobuf bytes.
pub fn to_bytes(m: &ModelProto) -> Vec<u8> {
    m.write_to_bytes().unwrap_or_default()
}

//! Lowering of an ONNX graph onto the IR operator families.
//!
//! Nodes are visited in topological order. A node whose inputs are all constant is evaluated
//! at import (constant folding, including shape arithmetic such as Shape -> Gather -> Concat ->
//! Reshape). Identity, Dropout and Cast between float types disappear; Flatten, Reshape,
//! Squeeze and Unsqueeze become views; Transpose, Slice, Pad, Gather and Concat become one
//! index map; Sub/Add/Mul/Div by a constant and BatchNormalization become an elementwise
//! affine map that [`crate::ir::passes`] later folds into the neighbouring Linear/Conv.

use super::tensor::{ConstT, checked_dims, decode, dt};
use super::{ImportError, UnsupportedOp, opset_of};
use crate::eval;
use crate::ir::{
    Affine, Binary, BinaryKind, Conv, DType, FILL, FpModel, Graph, Linear, Node, Op, Param, Pool,
    Select, Value, ValueId, Window,
};
use crate::ops::Func;
use crate::tensor::{
    MAX_ELEMENTS, broadcast_index_map, broadcast_shapes, broadcast_to, checked_numel,
    normalize_axis, numel, strides,
};
use onnx_protobuf::type_proto::Value as TypeValue;
use onnx_protobuf::{
    AttributeProto, ModelProto, NodeProto, ValueInfoProto,
    tensor_shape_proto::dimension::Value as DimValue,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::rc::Rc;

mod structural;

/// Whether `op` is an elementwise function of the table in [`crate::ops::elementwise`]: the
/// one list of them, so the importer and the family cannot drift.
pub fn is_elementwise(op: &str) -> bool {
    crate::ops::elementwise::DEFS.iter().any(|d| d.name == op)
}

/// How the importer lowers an ONNX operator.
#[derive(Clone, Copy)]
enum Lowering {
    /// Lowered by its own routine, never folded as a whole (it may have several outputs).
    Direct(fn(&mut Builder<'_>, &Ctx<'_>, &[Option<Val>]) -> Result<Vec<Val>, ImportError>),
    /// Lowered onto IR nodes; over constant inputs the same nodes are evaluated at import.
    Nodes(fn(&mut Builder<'_>, &Ctx<'_>, &[Option<Val>]) -> Result<Val, ImportError>),
}

/// Which inputs carry data (the others are shapes, axes, sizes or a condition).
#[derive(Clone, Copy)]
enum DataInputs {
    All,
    First,
    /// Where's two branches (inputs 1 and 2).
    Branches,
}

/// One row of the importer's operator table.
struct OpRow {
    name: &'static str,
    lowering: Lowering,
    data: DataInputs,
    /// Pure data movement: folding it over exact constants stays exact.
    movement: bool,
}

const fn row(name: &'static str, lowering: Lowering, data: DataInputs, movement: bool) -> OpRow {
    OpRow {
        name,
        lowering,
        data,
        movement,
    }
}

use DataInputs::{All, Branches, First};
use Lowering::{Direct, Nodes};

/// Every ONNX operator (default domain) the importer lowers besides the elementwise functions
/// of [`crate::ops::elementwise::DEFS`]: the one list, so that the support check, the lowering,
/// constant folding and its exactness cannot drift apart.
const OPS: &[OpRow] = &[
    row(
        "Constant",
        Direct(|b, c, _| Ok(vec![b.constant_attr(c)?])),
        All,
        true,
    ),
    row("Shape", Direct(|b, c, i| b.shape_op(c, i)), All, true),
    row("Identity", Direct(|b, c, i| b.identity(c, i)), All, true),
    row("Dropout", Direct(|b, c, i| b.identity(c, i)), All, true),
    row("Cast", Direct(|b, c, i| b.cast(c, i)), All, true),
    row("Split", Direct(|b, c, i| b.split(c, i)), All, true),
    row(
        "Equal",
        Direct(|b, c, i| Ok(vec![b.compare(c, i)?])),
        All,
        true,
    ),
    row(
        "Less",
        Direct(|b, c, i| Ok(vec![b.compare(c, i)?])),
        All,
        true,
    ),
    row(
        "LessOrEqual",
        Direct(|b, c, i| Ok(vec![b.compare(c, i)?])),
        All,
        true,
    ),
    row(
        "Greater",
        Direct(|b, c, i| Ok(vec![b.compare(c, i)?])),
        All,
        true,
    ),
    row(
        "GreaterOrEqual",
        Direct(|b, c, i| Ok(vec![b.compare(c, i)?])),
        All,
        true,
    ),
    row(
        "Not",
        Direct(|b, c, i| Ok(vec![b.compare(c, i)?])),
        All,
        true,
    ),
    row(
        "And",
        Direct(|b, c, i| Ok(vec![b.compare(c, i)?])),
        All,
        true,
    ),
    row(
        "Or",
        Direct(|b, c, i| Ok(vec![b.compare(c, i)?])),
        All,
        true,
    ),
    row(
        "Xor",
        Direct(|b, c, i| Ok(vec![b.compare(c, i)?])),
        All,
        true,
    ),
    row("Relu", Nodes(|b, c, i| b.relu(c, i)), All, false),
    row("LeakyRelu", Nodes(|b, c, i| b.relu(c, i)), All, false),
    row("Neg", Nodes(|b, c, i| b.neg(c, i)), All, false),
    row("Add", Nodes(|b, c, i| b.binary(c, i)), All, false),
    row("Sub", Nodes(|b, c, i| b.binary(c, i)), All, false),
    row("Mul", Nodes(|b, c, i| b.binary(c, i)), All, false),
    row("Div", Nodes(|b, c, i| b.binary(c, i)), All, false),
    row("MatMul", Nodes(|b, c, i| b.matmul(c, i)), All, false),
    row("Gemm", Nodes(|b, c, i| b.gemm(c, i)), All, false),
    row("Conv", Nodes(|b, c, i| b.conv(c, i)), All, false),
    row(
        "ConvTranspose",
        Nodes(|b, c, i| b.conv_transpose(c, i)),
        All,
        false,
    ),
    row(
        "BatchNormalization",
        Nodes(|b, c, i| b.batchnorm(c, i)),
        All,
        false,
    ),
    row("MaxPool", Nodes(|b, c, i| b.pool(c, i)), All, false),
    row("AveragePool", Nodes(|b, c, i| b.pool(c, i)), All, false),
    row("GlobalMaxPool", Nodes(|b, c, i| b.pool(c, i)), All, false),
    row(
        "GlobalAveragePool",
        Nodes(|b, c, i| b.pool(c, i)),
        All,
        false,
    ),
    row("Flatten", Nodes(|b, c, i| b.reshape(c, i)), First, true),
    row("Reshape", Nodes(|b, c, i| b.reshape(c, i)), First, true),
    row("Squeeze", Nodes(|b, c, i| b.reshape(c, i)), First, true),
    row("Unsqueeze", Nodes(|b, c, i| b.reshape(c, i)), First, true),
    row("Transpose", Nodes(|b, c, i| b.transpose(c, i)), First, true),
    row("Slice", Nodes(|b, c, i| b.slice(c, i)), First, true),
    row("Pad", Nodes(|b, c, i| b.pad(c, i)), First, true),
    row("Concat", Nodes(|b, c, i| b.concat(c, i)), All, true),
    row("Gather", Nodes(|b, c, i| b.gather(c, i)), First, true),
    row("Tile", Nodes(|b, c, i| b.tile(c, i)), First, true),
    row("Expand", Nodes(|b, c, i| b.expand(c, i)), First, true),
    row("Where", Nodes(|b, c, i| b.where_op(c, i)), Branches, true),
    row(
        "ConstantOfShape",
        Nodes(|b, c, i| b.constant_of_shape(c, i)),
        All,
        true,
    ),
    row("ReduceSum", Nodes(|b, c, i| b.reduce(c, i)), First, false),
    row("ReduceMean", Nodes(|b, c, i| b.reduce(c, i)), First, false),
    row("ReduceMax", Nodes(|b, c, i| b.reduce(c, i)), First, false),
    row("ReduceMin", Nodes(|b, c, i| b.reduce(c, i)), First, false),
    row("Softmax", Nodes(|b, c, i| b.softmax(c, i)), All, false),
    row("LogSoftmax", Nodes(|b, c, i| b.softmax(c, i)), All, false),
    row(
        "LayerNormalization",
        Nodes(|b, c, i| b.layer_norm(c, i)),
        All,
        false,
    ),
    row("Resize", Nodes(|b, c, i| b.resize(c, i)), First, false),
    row("Upsample", Nodes(|b, c, i| b.resize(c, i)), First, false),
];

fn op_row(op: &str) -> Option<&'static OpRow> {
    OPS.iter().find(|r| r.name == op)
}

/// Every ONNX operator the importer accepts: the table's and the elementwise functions.
pub fn supported_ops() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = OPS.iter().map(|r| r.name).collect();
    v.extend(crate::ops::elementwise::DEFS.iter().map(|d| d.name));
    v.sort_unstable();
    v
}

/// An ONNX value during import: a constant or an IR value.
#[derive(Clone)]
enum Val {
    Const(Rc<ConstT>),
    Var(ValueId),
}

/// Import context for one node, used to build errors that name it.
struct Ctx<'a> {
    node: &'a NodeProto,
    name: String,
}

impl Ctx<'_> {
    fn shape_err(&self, reason: impl Into<String>) -> ImportError {
        ImportError::Shape {
            node: self.name.clone(),
            op: self.node.op_type.clone(),
            reason: reason.into(),
        }
    }
    fn attr_err(&self, reason: impl Into<String>) -> ImportError {
        ImportError::Attribute {
            node: self.name.clone(),
            op: self.node.op_type.clone(),
            reason: reason.into(),
        }
    }
    fn unsupported(&self, reason: impl Into<String>) -> ImportError {
        ImportError::Unsupported {
            node: self.name.clone(),
            op: self.node.op_type.clone(),
            reason: reason.into(),
        }
    }
    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }
    fn float(&self, name: &str, default: f64) -> f64 {
        self.attr(name).map_or(default, |a| a.f as f64)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }
    fn string(&self, name: &str) -> Option<String> {
        self.attr(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
}

struct Builder<'b> {
    values: Vec<Value>,
    nodes: Vec<Node>,
    opset: i64,
    base: &'b Path,
}

/// Read a graph input/output's declared dims: concrete positive sizes, `None` for symbolic or
/// zero (dynamic) ones. `Err` when the value carries no tensor shape at all.
fn declared_dims(v: &ValueInfoProto) -> Result<(i32, Vec<Option<i64>>), String> {
    let Some(ty) = v.type_.as_ref() else {
        return Err("no type information".into());
    };
    let Some(TypeValue::TensorType(t)) = &ty.value else {
        return Err("not a tensor".into());
    };
    let Some(shape) = t.shape.as_ref() else {
        return Err("no shape information".into());
    };
    let dims = shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(DimValue::DimValue(v)) if v > 0 => Some(v),
            _ => None,
        })
        .collect();
    Ok((t.elem_type, dims))
}

/// Import the graph of `model`; `base` resolves external tensor data.
pub fn import(model: &ModelProto, base: &Path) -> Result<Graph, ImportError> {
    let graph = model.graph.as_ref().ok_or(ImportError::NoGraph)?;
    let opset = opset_of(model);

    // Every unsupported operator, all at once.
    let unsupported: Vec<UnsupportedOp> = graph
        .node
        .iter()
        .filter(|n| {
            let dom_ok = n.domain.is_empty() || n.domain == "ai.onnx";
            !(dom_ok && (op_row(&n.op_type).is_some() || is_elementwise(&n.op_type)))
        })
        .map(|n| UnsupportedOp {
            op_type: n.op_type.clone(),
            domain: n.domain.clone(),
            node: node_name(n),
            opset,
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(ImportError::UnsupportedOps(unsupported));
    }

    let mut env: HashMap<String, Val> = HashMap::new();
    for t in &graph.initializer {
        let c = decode(t, base)?;
        env.insert(t.name.clone(), Val::Const(Rc::new(c)));
    }

    let var_inputs: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !env.contains_key(&i.name))
        .collect();
    if var_inputs.len() != 1 {
        return Err(ImportError::InputCount(var_inputs.len()));
    }
    let inp = var_inputs[0];
    let bad_input = |reason: String| ImportError::BadInput {
        name: inp.name.clone(),
        reason,
    };
    let (elem, dims) = declared_dims(inp).map_err(bad_input)?;
    let dtype = match elem {
        dt::FLOAT => DType::F32,
        dt::DOUBLE => DType::F64,
        other => {
            return Err(bad_input(format!(
                "element type {other} is not float or double"
            )));
        }
    };
    // Symbolic and zero (dynamic) dimensions are the batch: one sample.
    let in_shape: Vec<usize> = dims.iter().map(|d| d.unwrap_or(1) as usize).collect();
    if checked_numel(&in_shape).is_none() {
        return Err(bad_input(format!(
            "shape {in_shape:?} exceeds {MAX_ELEMENTS} elements"
        )));
    }

    let mut b = Builder {
        values: vec![Value {
            name: inp.name.clone(),
            shape: in_shape,
        }],
        nodes: Vec::new(),
        opset,
        base,
    };
    env.insert(inp.name.clone(), Val::Var(0));

    for n in topo_order(&graph.node, &env)? {
        let ctx = Ctx {
            node: n,
            name: node_name(n),
        };
        let ins: Vec<Option<Val>> = n
            .input
            .iter()
            .map(|name| {
                if name.is_empty() {
                    Ok(None)
                } else {
                    env.get(name)
                        .cloned()
                        .map(Some)
                        .ok_or_else(|| ImportError::DanglingInput {
                            node: ctx.name.clone(),
                            input: name.clone(),
                        })
                }
            })
            .collect::<Result<_, _>>()?;
        let outs = b.lower(&ctx, &ins)?;
        for (i, name) in n.output.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            match outs.get(i) {
                Some(v) => {
                    if let Val::Var(id) = v {
                        if b.values[*id].name.is_empty() {
                            b.values[*id].name = name.clone();
                        }
                    }
                    env.insert(name.clone(), v.clone());
                }
                // Secondary outputs (Dropout mask, MaxPool indices) are only an error if used.
                None => {
                    if graph.node.iter().any(|m| m.input.contains(name))
                        || graph.output.iter().any(|o| &o.name == name)
                    {
                        return Err(ctx.unsupported(format!(
                            "output #{i} ('{name}') is used, but only the first output is supported"
                        )));
                    }
                }
            }
        }
    }

    if graph.output.is_empty() {
        return Err(ImportError::OutputCount(0));
    }
    let mut outputs = Vec::with_capacity(graph.output.len());
    for out in &graph.output {
        let bad_output = |reason: String| ImportError::BadOutput {
            name: out.name.clone(),
            reason,
        };
        let id = match env.get(&out.name) {
            Some(Val::Var(id)) => *id,
            Some(Val::Const(_)) => {
                return Err(bad_output("the output does not depend on the input".into()));
            }
            None => return Err(bad_output("no node produces it".into())),
        };
        if id == 0 {
            return Err(bad_output("the output is the input itself".into()));
        }
        if let Ok((_, dims)) = declared_dims(out) {
            let inferred = &b.values[id].shape;
            let ok = dims.len() == inferred.len()
                && dims
                    .iter()
                    .zip(inferred)
                    .all(|(d, &s)| d.is_none_or(|d| d as usize == s));
            if !ok {
                return Err(bad_output(format!(
                    "declared shape {:?} does not match the computed shape {inferred:?}",
                    dims.iter()
                        .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
                        .collect::<Vec<_>>()
                )));
            }
        }
        outputs.push(id);
    }
    // Several outputs: one flat output, their elements concatenated in order (VNN-COMP's
    // numbering of Y_j over a multi-output network).
    let output = if outputs.len() == 1 {
        outputs[0]
    } else {
        let total: usize = outputs.iter().map(|&v| b.values[v].numel()).sum();
        let id = b.values.len();
        b.values.push(Value {
            name: graph
                .output
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            shape: vec![total],
        });
        b.nodes.push(Node {
            name: "outputs".into(),
            source_op: "Concat(outputs)".into(),
            op: Op::Select(Select {
                map: (0..total).collect(),
                fill: 0.0,
            }),
            inputs: outputs,
            output: id,
        });
        id
    };
    let g = Graph {
        values: b.values,
        nodes: b.nodes,
        input: 0,
        output,
        dtype,
    };
    Ok(crate::ir::passes::prune_dead(g))
}

fn node_name(n: &NodeProto) -> String {
    if !n.name.is_empty() {
        n.name.clone()
    } else {
        n.output
            .first()
            .cloned()
            .unwrap_or_else(|| n.op_type.clone())
    }
}

/// Kahn's algorithm; reports cycles, dangling inputs and doubly-defined values.
fn topo_order<'a>(
    nodes: &'a [NodeProto],
    env: &HashMap<String, Val>,
) -> Result<Vec<&'a NodeProto>, ImportError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(o.as_str(), i).is_some() || env.contains_key(o) {
                return Err(ImportError::DuplicateOutput(o.clone()));
            }
        }
    }
    let mut indeg = vec![0usize; nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let mut seen = HashSet::new();
        for inp in n.input.iter().filter(|s| !s.is_empty()) {
            if env.contains_key(inp) {
                continue;
            }
            match producer.get(inp.as_str()) {
                Some(&p) => {
                    if seen.insert(p) {
                        indeg[i] += 1;
                        users[p].push(i);
                    }
                }
                None => {
                    return Err(ImportError::DanglingInput {
                        node: node_name(n),
                        input: inp.clone(),
                    });
                }
            }
        }
    }
    let mut queue: VecDeque<usize> = (0..nodes.len()).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = queue.pop_front() {
        order.push(&nodes[i]);
        for &u in &users[i] {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                queue.push_back(u);
            }
        }
    }
    if order.len() != nodes.len() {
        let stuck = (0..nodes.len())
            .filter(|&i| indeg[i] > 0)
            .map(|i| node_name(&nodes[i]))
            .collect();
        return Err(ImportError::Cycle(stuck));
    }
    Ok(order)
}

fn constant(shape: Vec<usize>, data: Vec<f64>, is_int: bool) -> Val {
    Val::Const(Rc::new(ConstT {
        shape,
        data,
        is_int,
        exact: true,
    }))
}

impl Builder<'_> {
    fn shape(&self, v: &Val) -> Vec<usize> {
        match v {
            Val::Const(c) => c.shape.clone(),
            Val::Var(id) => self.values[*id].shape.clone(),
        }
    }

    fn push(
        &mut self,
        ctx: &Ctx,
        source: &str,
        op: Op,
        inputs: Vec<ValueId>,
        shape: Vec<usize>,
    ) -> Result<ValueId, ImportError> {
        if checked_numel(&shape).is_none() {
            return Err(ctx.shape_err(format!(
                "output shape {shape:?} exceeds {MAX_ELEMENTS} elements"
            )));
        }
        let id = self.values.len();
        self.values.push(Value {
            name: String::new(),
            shape,
        });
        self.nodes.push(Node {
            name: ctx.name.clone(),
            source_op: source.to_string(),
            op,
            inputs,
            output: id,
        });
        Ok(id)
    }

    /// The IR value of `v`, materialising a constant as a `Const` node when needed.
    fn var(&mut self, ctx: &Ctx, v: &Val) -> Result<ValueId, ImportError> {
        match v {
            Val::Var(id) => Ok(*id),
            Val::Const(c) => {
                let p = Param::from_f64(c.shape.clone(), c.data.clone());
                self.push(ctx, "Constant", Op::Const(p), vec![], c.shape.clone())
            }
        }
    }

    /// Lower one node. Returns its outputs (only the first for multi-output ops).
    fn lower(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
        let row = op_row(&ctx.node.op_type);
        if let Some(OpRow {
            lowering: Direct(f),
            ..
        }) = row
        {
            return f(self, ctx, ins);
        }
        // Constant folding: lower the node into a scratch graph over constant nodes and
        // evaluate it in f64.
        let all_const = ins.iter().all(|v| !matches!(v, Some(Val::Var(_))));
        if all_const && !ins.is_empty() {
            let data: Vec<usize> = match row.map_or(All, |r| r.data) {
                All => (0..ins.len()).collect(),
                First => vec![0],
                Branches => vec![1, 2],
            };
            let movement = row.is_some_and(|r| r.movement);
            return self.fold(ctx, ins, &data, movement).map(|v| vec![v]);
        }
        self.lower_var(ctx, ins).map(|v| vec![v])
    }

    fn shape_op(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
        let x = req(ctx, ins, 0)?;
        let s = self.shape(x);
        let r = s.len() as i64;
        let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let start = clampi(ctx.int("start", 0));
        let end = clampi(ctx.int("end", r));
        let dims: Vec<f64> = s[start..end.max(start)].iter().map(|&d| d as f64).collect();
        Ok(vec![constant(vec![dims.len()], dims, true)])
    }

    /// Identity, and Dropout in inference mode.
    fn identity(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
        if ctx.node.op_type == "Dropout" {
            let training = match ins.get(2) {
                Some(Some(Val::Const(c))) => c.data.first().is_some_and(|&v| v != 0.0),
                Some(Some(Val::Var(_))) => true,
                _ => false,
            };
            if training {
                return Err(ctx.unsupported("Dropout in training mode"));
            }
        }
        Ok(vec![req(ctx, ins, 0)?.clone()])
    }

    fn cast(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
        let to = ctx.int("to", dt::FLOAT as i64) as i32;
        match req(ctx, ins, 0)? {
            Val::Var(id) => {
                if dt::is_float(to) {
                    Ok(vec![Val::Var(*id)])
                } else {
                    Err(ctx.unsupported(format!(
                        "Cast of a network value to the non-float type {to}"
                    )))
                }
            }
            Val::Const(c) => {
                let is_int = !dt::is_float(to);
                let data = c
                    .data
                    .iter()
                    .map(|&v| match to {
                        dt::FLOAT => v as f32 as f64,
                        dt::BOOL => (v != 0.0) as u8 as f64,
                        _ if is_int => v.trunc(),
                        _ => v,
                    })
                    .collect();
                Ok(vec![Val::Const(Rc::new(ConstT {
                    shape: c.shape.clone(),
                    data,
                    is_int,
                    exact: c.exact,
                }))])
            }
        }
    }

    fn fold(
        &mut self,
        ctx: &Ctx,
        ins: &[Option<Val>],
        data: &[usize],
        movement: bool,
    ) -> Result<Val, ImportError> {
        let mut scratch = Builder {
            values: vec![Value {
                name: "<none>".into(),
                shape: vec![0],
            }],
            nodes: Vec::new(),
            opset: self.opset,
            base: self.base,
        };
        let out = scratch.lower_var(ctx, ins)?;
        let consts: Vec<&ConstT> = data
            .iter()
            .filter_map(|&i| match ins.get(i) {
                Some(Some(Val::Const(c))) => Some(c.as_ref()),
                _ => None,
            })
            .collect();
        let is_int = !consts.is_empty() && consts.iter().all(|c| c.is_int);
        let exact = consts.iter().all(|c| c.exact) && (movement || is_int);
        let id = match out {
            Val::Const(c) => return Ok(Val::Const(c)),
            Val::Var(id) => id,
        };
        let g = Graph {
            values: scratch.values,
            nodes: scratch.nodes,
            input: 0,
            output: id,
            dtype: DType::F64,
        };
        let mut vals = eval::forward_values::<f64>(&g, &[], 1)
            .map_err(|e| ctx.shape_err(format!("constant folding failed: {e}")))?;
        let mut data_out = vals[id].take().unwrap_or_default();
        if is_int {
            for v in &mut data_out {
                *v = v.trunc();
            }
        } else if let Some((index, &value)) =
            data_out.iter().enumerate().find(|(_, v)| !v.is_finite())
        {
            return Err(ImportError::NonFinite {
                name: format!("constant folded at node '{}'", ctx.name),
                index,
                value,
            });
        }
        Ok(Val::Const(Rc::new(ConstT {
            shape: g.values[id].shape.clone(),
            data: data_out,
            is_int,
            exact,
        })))
    }

    fn constant_attr(&self, ctx: &Ctx) -> Result<Val, ImportError> {
        let a = ctx
            .node
            .attribute
            .first()
            .ok_or_else(|| ctx.attr_err("Constant without a value"))?;
        Ok(match a.name.as_str() {
            "value" => {
                let t =
                    a.t.as_ref()
                        .ok_or_else(|| ctx.attr_err("'value' is not a tensor"))?;
                Val::Const(Rc::new(decode(t, self.base)?))
            }
            "value_float" => constant(vec![], vec![a.f as f64], false),
            "value_floats" => constant(
                vec![a.floats.len()],
                a.floats.iter().map(|&v| v as f64).collect(),
                false,
            ),
            "value_int" => constant(vec![], vec![a.i as f64], true),
            "value_ints" => constant(
                vec![a.ints.len()],
                a.ints.iter().map(|&v| v as f64).collect(),
                true,
            ),
            other => return Err(ctx.unsupported(format!("Constant with attribute '{other}'"))),
        })
    }

    /// Lower a node with at least one variable input (or into a folding scratch graph).
    fn lower_var(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let op = ctx.node.op_type.as_str();
        match op_row(op).map(|r| r.lowering) {
            Some(Nodes(f)) => f(self, ctx, ins),
            None if is_elementwise(op) => self.elementwise(ctx, ins),
            Some(Direct(_)) | None => Err(ctx.unsupported("operator not lowered")),
        }
    }

    fn relu(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let op = ctx.node.op_type.as_str();
        let x = req(ctx, ins, 0)?.clone();
        let xv = self.var(ctx, &x)?;
        let irop = if op == "Relu" {
            Op::Relu
        } else {
            Op::LeakyRelu {
                alpha: ctx.float("alpha", 0.01),
            }
        };
        let s = self.shape(&x);
        Ok(Val::Var(self.push(ctx, op, irop, vec![xv], s)?))
    }

    fn neg(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let x = req(ctx, ins, 0)?.clone();
        let xv = self.var(ctx, &x)?;
        let s = self.shape(&x);
        let n = numel(&s);
        let aff = Affine {
            scale: Param::from_f64(s.clone(), vec![-1.0; n]),
            shift: Param::from_f64(s.clone(), vec![0.0; n]),
            fp: FpModel {
                extra_roundings: 0,
                offset: vec![0.0; n],
                relative: true,
                ..Default::default()
            },
        };
        Ok(Val::Var(self.push(
            ctx,
            "Neg",
            Op::Affine(aff),
            vec![xv],
            s,
        )?))
    }

    fn constant_of_shape(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let shape =
            const_ints(ctx, ins, 1, "shape").or_else(|_| const_ints(ctx, ins, 0, "shape"))?;
        let shape = to_dims(ctx, &shape)?;
        let value = ctx
            .attr("value")
            .and_then(|a| a.t.as_ref())
            .map(|t| decode(t, self.base))
            .transpose()?;
        let (v, is_int) = value
            .and_then(|c| c.data.first().map(|&v| (v, c.is_int)))
            .unwrap_or((0.0, false));
        let n = numel(&shape);
        Ok(constant(shape, vec![v; n], is_int))
    }

    /// Lower an elementwise function onto `Op::Elementwise`; its constant operands
    /// (Clip's bounds, Pow's exponent, Max/Min's constants) become the function's parameters.
    fn elementwise(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let op = ctx.node.op_type.as_str();
        // A constant operand that is one number (a scalar, or a tensor of equal values).
        let scalar = |v: &Val, what: &str| -> Result<f64, ImportError> {
            match v {
                Val::Const(c) => match c.data.split_first() {
                    Some((&x, rest)) if rest.iter().all(|&y| y == x) && !x.is_nan() => Ok(x),
                    _ => Err(ctx.unsupported(format!("{what} must be one constant number"))),
                },
                Val::Var(_) => Err(ctx.unsupported(format!(
                    "{what} computed by the network (only a constant is supported)"
                ))),
            }
        };
        let x = req(ctx, ins, 0)?.clone();
        let mut input = x.clone();
        use crate::ops::elementwise as ew;
        let func = match op {
            "HardSigmoid" => Func::with(
                &ew::HARD_SIGMOID,
                [ctx.float("alpha", 0.2), ctx.float("beta", 0.5)],
            ),
            "Gelu" => match ctx.string("approximate").as_deref() {
                None | Some("none") => Func::of(&ew::GELU),
                Some(other) => {
                    return Err(ctx.unsupported(format!("Gelu with approximate = \"{other}\"")));
                }
            },
            "Pow" => {
                if matches!(x, Val::Const(_)) {
                    return Err(ctx.unsupported("Pow with a constant base and a variable exponent"));
                }
                let p = scalar(req(ctx, ins, 1)?, "the exponent")?;
                if !p.is_finite() {
                    return Err(ctx.attr_err(format!("exponent {p} is not finite")));
                }
                Func::with(&ew::POW, [p, 0.0])
            }
            "Clip" => {
                // Before opset 11 the bounds are attributes; since, optional constant inputs.
                let (lo, hi) = if self.opset < 11 {
                    (
                        ctx.attr("min").map_or(f64::NEG_INFINITY, |a| a.f as f64),
                        ctx.attr("max").map_or(f64::INFINITY, |a| a.f as f64),
                    )
                } else {
                    let b = |i: usize, what: &str| -> Result<f64, ImportError> {
                        match ins.get(i).and_then(Option::as_ref) {
                            None => Ok(if i == 1 {
                                f64::NEG_INFINITY
                            } else {
                                f64::INFINITY
                            }),
                            Some(v) => scalar(v, what),
                        }
                    };
                    (b(1, "Clip's min")?, b(2, "Clip's max")?)
                };
                if lo.is_nan() || hi.is_nan() {
                    return Err(ctx.attr_err("Clip bound is NaN"));
                }
                match (lo.is_finite(), hi.is_finite()) {
                    // min(max(x, lo), hi) is hi everywhere when lo > hi.
                    (true, true) => Func::with(&ew::CLIP, [lo.min(hi), hi]),
                    (true, false) => Func::with(&ew::MAX, [lo, 0.0]),
                    (false, true) => Func::with(&ew::MIN, [hi, 0.0]),
                    (false, false) => return Ok(x),
                }
            }
            "Max" | "Min" => {
                // Variadic: every operand but one must be a constant number.
                let all: Vec<&Val> = ins.iter().flatten().collect();
                let vars: Vec<&Val> = all
                    .iter()
                    .copied()
                    .filter(|v| matches!(v, Val::Var(_)))
                    .collect();
                if vars.len() != 1 {
                    return Err(ctx.unsupported(format!(
                        "{op} of {} network values (one network value and constants are supported)",
                        vars.len()
                    )));
                }
                input = vars[0].clone();
                let consts = all
                    .iter()
                    .filter(|v| matches!(v, Val::Const(_)))
                    .map(|v| scalar(v, &format!("{op}'s constant operand")))
                    .collect::<Result<Vec<f64>, _>>()?;
                if consts.is_empty() {
                    return Ok(input);
                }
                if op == "Max" {
                    let c = consts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    Func::with(&ew::MAX, [c, 0.0])
                } else {
                    let c = consts.iter().copied().fold(f64::INFINITY, f64::min);
                    Func::with(&ew::MIN, [c, 0.0])
                }
            }
            // Every function without parameters comes straight from the table.
            other => Func::by_name(other).ok_or_else(|| {
                ctx.unsupported(format!("{other} is not an elementwise function"))
            })?,
        };
        let xv = self.var(ctx, &input)?;
        let s = self.shape(&input);
        Ok(Val::Var(self.push(
            ctx,
            op,
            Op::Elementwise(func),
            vec![xv],
            s,
        )?))
    }

    fn binary(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let op = ctx.node.op_type.as_str();
        let a = req(ctx, ins, 0)?.clone();
        let b = req(ctx, ins, 1)?.clone();
        let (sa, sb) = (self.shape(&a), self.shape(&b));
        let out = broadcast_shapes(&sa, &sb)
            .ok_or_else(|| ctx.shape_err(format!("shapes {sa:?} and {sb:?} do not broadcast")))?;
        // One constant operand and no growth of the variable: an elementwise affine map.
        let affine = match (&a, &b) {
            (Val::Var(x), Val::Const(c)) if out == sa => Some((*x, c.clone(), false)),
            (Val::Const(c), Val::Var(x)) if out == sb => Some((*x, c.clone(), true)),
            _ => None,
        };
        if let Some((x, c, const_first)) = affine {
            let cs = broadcast_to(&c.data, &c.shape, &out);
            let n = cs.len();
            let (scale, shift, offset): (Vec<f64>, Vec<f64>, Vec<f64>) = match (op, const_first) {
                ("Add", _) => (
                    vec![1.0; n],
                    cs.clone(),
                    cs.iter().map(|v| v.abs()).collect(),
                ),
                ("Sub", false) => (
                    vec![1.0; n],
                    cs.iter().map(|v| -v).collect(),
                    cs.iter().map(|v| v.abs()).collect(),
                ),
                ("Sub", true) => (
                    vec![-1.0; n],
                    cs.clone(),
                    cs.iter().map(|v| v.abs()).collect(),
                ),
                ("Mul", _) => (cs.clone(), vec![0.0; n], vec![0.0; n]),
                ("Div", false) => {
                    if cs.contains(&0.0) {
                        return Err(ctx.shape_err("division by a constant zero"));
                    }
                    (
                        cs.iter().map(|v| 1.0 / v).collect(),
                        vec![0.0; n],
                        vec![0.0; n],
                    )
                }
                _ => {
                    // constant / variable is not affine.
                    let av = self.var(ctx, &a)?;
                    let bv = self.var(ctx, &b)?;
                    return self.binary_var(ctx, BinaryKind::Div, av, bv, out);
                }
            };
            let extra = 1 + u32::from(!c.exact);
            let aff = Affine {
                scale: Param::from_f64(out.clone(), scale),
                shift: Param::from_f64(out.clone(), shift),
                fp: FpModel {
                    extra_roundings: extra,
                    offset,
                    // One elementwise operation: its error is relative to its result.
                    relative: c.exact,
                    ..Default::default()
                },
            };
            return Ok(Val::Var(self.push(
                ctx,
                op,
                Op::Affine(aff),
                vec![x],
                out,
            )?));
        }
        let kind = match op {
            "Add" => BinaryKind::Add,
            "Sub" => BinaryKind::Sub,
            "Mul" => BinaryKind::Mul,
            _ => BinaryKind::Div,
        };
        let av = self.var(ctx, &a)?;
        let bv = self.var(ctx, &b)?;
        self.binary_var(ctx, kind, av, bv, out)
    }

    fn binary_var(
        &mut self,
        ctx: &Ctx,
        kind: BinaryKind,
        a: ValueId,
        b: ValueId,
        out: Vec<usize>,
    ) -> Result<Val, ImportError> {
        let (sa, sb) = (self.values[a].shape.clone(), self.values[b].shape.clone());
        let map = |s: &Vec<usize>| (s != &out).then(|| broadcast_index_map(s, &out));
        let bin = Binary {
            kind,
            a_map: map(&sa),
            b_map: map(&sb),
        };
        Ok(Val::Var(self.push(
            ctx,
            &ctx.node.op_type,
            Op::Binary(bin),
            vec![a, b],
            out,
        )?))
    }

    /// Push a Linear node `y[o,p,i] = sum_k W[p,k] x[o,k,i] + b[p]`.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        ctx: &Ctx,
        x: ValueId,
        w: Vec<f64>,
        (outer, k, inner, p): (usize, usize, usize, usize),
        bias: Option<Vec<f64>>,
        extra: u32,
        out: Vec<usize>,
    ) -> Result<ValueId, ImportError> {
        let offset = bias
            .as_ref()
            .map_or(vec![0.0; p], |b| b.iter().map(|v| v.abs()).collect());
        let lin = Linear {
            transposed: Default::default(),
            weight_abs: w.iter().map(|v| v.abs()).collect(),
            weight: Param::from_f64(vec![p, k], w),
            bias: bias.map(|b| Param::from_f64(vec![p], b)),
            outer,
            k,
            inner,
            p,
            fp: FpModel {
                extra_roundings: extra,
                offset,
                ..Default::default()
            },
        };
        self.push(ctx, &ctx.node.op_type, Op::Linear(lin), vec![x], out)
    }

    fn matmul(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let a = req(ctx, ins, 0)?.clone();
        let b = req(ctx, ins, 1)?.clone();
        let (sa, sb) = (self.shape(&a), self.shape(&b));
        match (&a, &b) {
            (Val::Var(av), Val::Var(bv)) => self.matmul_var(ctx, *av, *bv),
            (_, Val::Const(c)) => {
                // x [..., K] @ W [K, P] (or [K]).
                let x = self.var(ctx, &a)?;
                let kx = *sa
                    .last()
                    .ok_or_else(|| ctx.shape_err("MatMul of a scalar"))?;
                let (kk, p, w) = match c.shape.len() {
                    2 => {
                        let (kk, p) = (c.shape[0], c.shape[1]);
                        let mut w = vec![0.0; kk * p];
                        for i in 0..kk {
                            for j in 0..p {
                                w[j * kk + i] = c.data[i * p + j];
                            }
                        }
                        (kk, p, w)
                    }
                    1 => (c.shape[0], 1, c.data.clone()),
                    _ => {
                        return Err(ctx.unsupported(format!(
                            "MatMul with a constant of rank {} (batched constant)",
                            c.shape.len()
                        )));
                    }
                };
                if kx != kk {
                    return Err(
                        ctx.shape_err(format!("inner dimensions differ: {sa:?} @ {:?}", c.shape))
                    );
                }
                let lead = &sa[..sa.len() - 1];
                let mut out = lead.to_vec();
                if c.shape.len() == 2 {
                    out.push(p);
                }
                let extra = u32::from(!c.exact);
                Ok(Val::Var(self.linear(
                    ctx,
                    x,
                    w,
                    (numel(lead), kk, 1, p),
                    None,
                    extra,
                    out,
                )?))
            }
            (Val::Const(c), Val::Var(x)) => {
                // W [P, K] (or [K]) @ x [..., K, M] (or [K]).
                let (p, kk, w) = match c.shape.len() {
                    2 => (c.shape[0], c.shape[1], c.data.clone()),
                    1 => (1, c.shape[0], c.data.clone()),
                    _ => {
                        return Err(ctx.unsupported(format!(
                            "MatMul with a constant of rank {} (batched constant)",
                            c.shape.len()
                        )));
                    }
                };
                let extra = u32::from(!c.exact);
                let (outer, kx, inner, mut out) = match sb.len() {
                    0 => return Err(ctx.shape_err("MatMul of a scalar")),
                    1 => (1, sb[0], 1, vec![]),
                    r => {
                        let lead = &sb[..r - 2];
                        (numel(lead), sb[r - 2], sb[r - 1], lead.to_vec())
                    }
                };
                if kx != kk {
                    return Err(
                        ctx.shape_err(format!("inner dimensions differ: {:?} @ {sb:?}", c.shape))
                    );
                }
                if c.shape.len() == 2 {
                    out.push(p);
                }
                if sb.len() >= 2 {
                    out.push(inner);
                }
                Ok(Val::Var(self.linear(
                    ctx,
                    *x,
                    w,
                    (outer, kk, inner, p),
                    None,
                    extra,
                    out,
                )?))
            }
        }
    }

    fn gemm(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let a = req(ctx, ins, 0)?.clone();
        let b = req(ctx, ins, 1)?.clone();
        let c = ins.get(2).cloned().flatten();
        let (ta, tb) = (ctx.int("transA", 0) != 0, ctx.int("transB", 0) != 0);
        let (alpha, beta) = (ctx.float("alpha", 1.0), ctx.float("beta", 1.0));
        let (sa, sb) = (self.shape(&a), self.shape(&b));
        if sa.len() != 2 || sb.len() != 2 {
            return Err(ctx.shape_err(format!("Gemm needs 2-D operands, got {sa:?} and {sb:?}")));
        }
        let (m, ka) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
        let (kb, n) = if tb { (sb[1], sb[0]) } else { (sb[0], sb[1]) };
        if ka != kb {
            return Err(ctx.shape_err(format!(
                "inner dimensions differ: A {sa:?} (transA={ta}), B {sb:?} (transB={tb})"
            )));
        }
        let kk = ka;
        let cdata = match &c {
            None => None,
            Some(Val::Const(cc)) => {
                let full = broadcast_shapes(&cc.shape, &[m, n])
                    .filter(|s| s == &[m, n])
                    .ok_or_else(|| {
                        ctx.shape_err(format!("C {:?} does not broadcast to [{m}, {n}]", cc.shape))
                    })?;
                Some((broadcast_to(&cc.data, &cc.shape, &full), cc.exact))
            }
            Some(Val::Var(_)) => return Err(ctx.unsupported("Gemm with a non-constant C")),
        };
        let mut extra = u32::from(alpha != 1.0) + u32::from(beta != 1.0 && cdata.is_some());
        // Lower to a Linear that yields either [m, n] directly or its transpose.
        let (x, w, dims, transposed, wexact) = match (&a, &b) {
            (Val::Var(_), Val::Var(_)) => {
                return Err(ctx.unsupported("Gemm of two network values (A or B must be constant)"));
            }
            (_, Val::Const(bc)) => {
                let x = self.var(ctx, &a)?;
                // W[p=n][k] = alpha * B'[k][n].
                let mut w = vec![0.0; n * kk];
                for j in 0..n {
                    for i in 0..kk {
                        let v = if tb {
                            bc.data[j * kk + i]
                        } else {
                            bc.data[i * n + j]
                        };
                        w[j * kk + i] = alpha * v;
                    }
                }
                // A [m,k]: contract the last axis -> [m, n]; A^T stored [k, m]: axis 0 -> [n, m].
                let dims = if ta { (1, kk, m, n) } else { (m, kk, 1, n) };
                (x, w, dims, ta, bc.exact)
            }
            (Val::Const(ac), Val::Var(xb)) => {
                // W[p=m][k] = alpha * A'[m][k].
                let mut w = vec![0.0; m * kk];
                for i in 0..m {
                    for j in 0..kk {
                        let v = if ta {
                            ac.data[j * m + i]
                        } else {
                            ac.data[i * kk + j]
                        };
                        w[i * kk + j] = alpha * v;
                    }
                }
                // B [k,n]: contract axis 0 -> [m, n]; B^T stored [n, k]: last axis -> [n, m].
                let dims = if tb { (n, kk, 1, m) } else { (1, kk, n, m) };
                (*xb, w, dims, tb, ac.exact)
            }
        };
        extra += u32::from(!wexact);
        let lin_shape = if transposed { vec![n, m] } else { vec![m, n] };
        // The bias can live in the Linear when it is constant along the non-`p` axis.
        let mut bias = None;
        let mut residual = None;
        if let Some((cd, cexact)) = cdata {
            extra += u32::from(!cexact);
            let scaled: Vec<f64> = cd.iter().map(|v| beta * v).collect();
            // Element (row r, col j) of [m, n]; the Linear's p-axis is n unless lowered as W@x.
            let p_is_cols = matches!((&a, &b), (_, Val::Const(_)));
            let along_p = |r: usize, j: usize| scaled[r * n + j];
            let uniform = if p_is_cols {
                (0..m).all(|r| (0..n).all(|j| along_p(r, j) == along_p(0, j)))
            } else {
                (0..m).all(|r| (0..n).all(|j| along_p(r, j) == along_p(r, 0)))
            };
            if uniform {
                bias = Some(if p_is_cols {
                    (0..n).map(|j| along_p(0, j)).collect::<Vec<f64>>()
                } else {
                    (0..m).map(|r| along_p(r, 0)).collect()
                });
                extra += 1;
            } else {
                residual = Some(scaled);
            }
        }
        let mut y = self.linear(ctx, x, w, dims, bias, extra, lin_shape.clone())?;
        if transposed {
            let map = transpose_map(&lin_shape, &[1, 0]);
            y = self.push(
                ctx,
                "Gemm",
                Op::Select(Select { map, fill: 0.0 }),
                vec![y],
                vec![m, n],
            )?;
        }
        if let Some(shift) = residual {
            let aff = Affine {
                scale: Param::from_f64(vec![m, n], vec![1.0; m * n]),
                fp: FpModel {
                    extra_roundings: 1,
                    offset: shift.iter().map(|v| v.abs()).collect(),
                    ..Default::default()
                },
                shift: Param::from_f64(vec![m, n], shift),
            };
            y = self.push(ctx, "Gemm", Op::Affine(aff), vec![y], vec![m, n])?;
        }
        Ok(Val::Var(y))
    }

    /// What Conv and ConvTranspose share: the data, the constant weights and optional
    /// constant bias, the data's shape and its spatial rank (1 or 2), checked against the
    /// weights' rank.
    #[allow(clippy::type_complexity)]
    pub(super) fn conv_operands(
        &self,
        ctx: &Ctx,
        ins: &[Option<Val>],
    ) -> Result<(Val, Rc<ConstT>, Option<Rc<ConstT>>, Vec<usize>, usize), ImportError> {
        let op = &ctx.node.op_type;
        let x = req(ctx, ins, 0)?.clone();
        let Val::Const(w) = req(ctx, ins, 1)?.clone() else {
            return Err(ctx.unsupported(format!("{op} with non-constant weights")));
        };
        let bias = match ins.get(2).cloned().flatten() {
            None => None,
            Some(Val::Const(b)) => Some(b),
            Some(Val::Var(_)) => {
                return Err(ctx.unsupported(format!("{op} with a non-constant bias")));
            }
        };
        let xs = self.shape(&x);
        let spatial = xs
            .len()
            .checked_sub(2)
            .filter(|&s| s == 1 || s == 2)
            .ok_or_else(|| {
                ctx.unsupported(format!(
                    "{op} on input of rank {} (only 1-D and 2-D)",
                    xs.len()
                ))
            })?;
        if w.shape.len() != xs.len() {
            return Err(ctx.shape_err(format!("weight {:?} does not match input {xs:?}", w.shape)));
        }
        Ok((x, w, bias, xs, spatial))
    }

    fn conv(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let (x, w, bias, xs, spatial) = self.conv_operands(ctx, ins)?;
        let xv = self.var(ctx, &x)?;
        let group = ctx.int("group", 1);
        if group < 1 {
            return Err(ctx.attr_err(format!("group {group}")));
        }
        let group = group as usize;
        let (m, cg) = (w.shape[0], w.shape[1]);
        if cg.checked_mul(group) != Some(xs[1]) || m % group != 0 {
            return Err(ctx.shape_err(format!(
                "input has {} channels, weight {:?} with group {group}",
                xs[1], w.shape
            )));
        }
        if let Some(ks) = ctx.ints("kernel_shape") {
            if ks
                .iter()
                .map(|&v| v as usize)
                .ne(w.shape[2..].iter().copied())
            {
                return Err(ctx.shape_err(format!(
                    "kernel_shape {ks:?} differs from weight {:?}",
                    w.shape
                )));
            }
        }
        let win = self.window(ctx, &xs, &w.shape[2..], spatial, true)?;
        if let Some(b) = &bias {
            if b.data.len() != m {
                return Err(ctx.shape_err(format!(
                    "bias has {} values for {m} output channels",
                    b.data.len()
                )));
            }
        }
        let extra = u32::from(bias.is_some())
            + u32::from(!w.exact)
            + u32::from(bias.as_ref().is_some_and(|b| !b.exact));
        let out = if spatial == 2 {
            vec![win.n, m, win.oh, win.ow]
        } else {
            vec![win.n, m, win.ow]
        };
        let conv = Conv {
            weight_abs: w.data.iter().map(|v| v.abs()).collect(),
            weight: Param::from_f64(w.shape.clone(), w.data.clone()),
            fp: FpModel {
                extra_roundings: extra,
                offset: bias
                    .as_ref()
                    .map_or(vec![0.0; m], |b| b.data.iter().map(|v| v.abs()).collect()),
                ..Default::default()
            },
            bias: bias.map(|b| Param::from_f64(vec![m], b.data.clone())),
            win,
            m,
            group,
            dense: Default::default(),
        };
        Ok(Val::Var(self.push(
            ctx,
            "Conv",
            Op::Conv(conv),
            vec![xv],
            out,
        )?))
    }

    /// Window geometry from the standard attributes; `kernel` is the spatial kernel shape.
    fn window(
        &self,
        ctx: &Ctx,
        xs: &[usize],
        kernel: &[usize],
        spatial: usize,
        dilations: bool,
    ) -> Result<Window, ImportError> {
        // Every geometry value at most MAX_ELEMENTS, so the sums and products below (at most
        // two factors, a few terms) stay far inside usize; larger ones fit no tensor anyway.
        let get = |name: &str, default: i64, len: usize| -> Result<Vec<usize>, ImportError> {
            let v = ctx.ints(name).unwrap_or_else(|| vec![default; len]);
            let bad = |x: i64| x < 0 || (name != "pads" && x < 1) || x > MAX_ELEMENTS as i64;
            if v.len() != len || v.iter().any(|&x| bad(x)) {
                return Err(ctx.attr_err(format!("{name} = {v:?}")));
            }
            Ok(v.iter().map(|&x| x as usize).collect())
        };
        if kernel.len() != spatial || kernel.iter().any(|&k| k == 0 || k > MAX_ELEMENTS) {
            return Err(ctx.shape_err(format!("kernel {kernel:?}")));
        }
        let strides = get("strides", 1, spatial)?;
        let dil = if dilations {
            get("dilations", 1, spatial)?
        } else {
            vec![1; spatial]
        };
        let mut pads = get("pads", 0, 2 * spatial)?;
        let ceil = ctx.int("ceil_mode", 0) != 0;
        let ins = &xs[2..];
        let auto = ctx.string("auto_pad").unwrap_or_default();
        match auto.as_str() {
            "" | "NOTSET" => {}
            "VALID" => pads = vec![0; 2 * spatial],
            "SAME_UPPER" | "SAME_LOWER" => {
                for d in 0..spatial {
                    let o = ins[d].div_ceil(strides[d]).max(1);
                    let need = (o - 1) * strides[d] + dil[d] * (kernel[d] - 1) + 1;
                    let total = need.saturating_sub(ins[d]);
                    let (lo, hi) = if auto == "SAME_UPPER" {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    };
                    pads[d] = lo;
                    pads[d + spatial] = hi;
                }
            }
            other => return Err(ctx.attr_err(format!("auto_pad '{other}'"))),
        }
        let mut outs = Vec::with_capacity(spatial);
        for d in 0..spatial {
            let span = ins[d] + pads[d] + pads[d + spatial];
            let eff = dil[d] * (kernel[d] - 1) + 1;
            if span < eff {
                return Err(ctx.shape_err(format!(
                    "kernel {kernel:?} (dilations {dil:?}) does not fit input {xs:?} with pads {pads:?}"
                )));
            }
            let mut o = if ceil {
                (span - eff).div_ceil(strides[d]) + 1
            } else {
                (span - eff) / strides[d] + 1
            };
            // ONNX ceil mode: the last window must start inside the input or left padding.
            if ceil && (o - 1) * strides[d] >= ins[d] + pads[d] {
                o -= 1;
            }
            outs.push(o);
        }
        let (h, kh, sh, ph, dh, oh) = if spatial == 2 {
            (ins[0], kernel[0], strides[0], pads[0], dil[0], outs[0])
        } else {
            (1, 1, 1, 0, 1, 1)
        };
        let l = spatial - 1;
        Ok(Window {
            n: xs[0],
            c: xs[1],
            h,
            w: ins[l],
            oh,
            ow: outs[l],
            kh,
            kw: kernel[l],
            sh,
            sw: strides[l],
            ph,
            pw: pads[l],
            dh,
            dw: dil[l],
        })
    }

    fn pool(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let x = req(ctx, ins, 0)?.clone();
        let xs = self.shape(&x);
        let xv = self.var(ctx, &x)?;
        let spatial = xs
            .len()
            .checked_sub(2)
            .filter(|&s| s == 1 || s == 2)
            .ok_or_else(|| {
                ctx.unsupported(format!(
                    "pooling on input of rank {} (only 1-D and 2-D)",
                    xs.len()
                ))
            })?;
        let op = ctx.node.op_type.as_str();
        let global = op.starts_with("Global");
        let win = if global {
            if xs[2..].contains(&0) {
                return Err(ctx.shape_err(format!("empty spatial shape {xs:?}")));
            }
            let (h, w) = if spatial == 2 {
                (xs[2], xs[3])
            } else {
                (1, xs[2])
            };
            Window {
                n: xs[0],
                c: xs[1],
                h,
                w,
                oh: 1,
                ow: 1,
                kh: h,
                kw: w,
                sh: 1,
                sw: 1,
                ph: 0,
                pw: 0,
                dh: 1,
                dw: 1,
            }
        } else {
            let kernel: Vec<usize> = ctx
                .ints("kernel_shape")
                .ok_or_else(|| ctx.attr_err("missing kernel_shape"))?
                .iter()
                .map(|&v| v.max(0) as usize)
                .collect();
            self.window(ctx, &xs, &kernel, spatial, op == "MaxPool")?
        };
        let out = if spatial == 2 {
            vec![win.n, win.c, win.oh, win.ow]
        } else {
            vec![win.n, win.c, win.ow]
        };
        let pool = Pool {
            win,
            count_include_pad: ctx.int("count_include_pad", 0) != 0,
        };
        let irop = if op.ends_with("MaxPool") {
            Op::MaxPool(pool)
        } else {
            Op::AveragePool(pool)
        };
        Ok(Val::Var(self.push(ctx, op, irop, vec![xv], out)?))
    }

    fn batchnorm(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let x = req(ctx, ins, 0)?.clone();
        if ctx.int("training_mode", 0) != 0 {
            return Err(ctx.unsupported("BatchNormalization in training mode"));
        }
        let xs = self.shape(&x);
        if xs.len() < 2 {
            return Err(ctx.shape_err(format!("input {xs:?} has no channel axis")));
        }
        let c = xs[1];
        let mut p = Vec::new();
        for (i, name) in ["scale", "B", "mean", "var"].iter().enumerate() {
            match req(ctx, ins, i + 1)? {
                Val::Const(t) if t.data.len() == c => p.push(t.clone()),
                Val::Const(t) => {
                    return Err(ctx.shape_err(format!(
                        "{name} has {} values for {c} channels",
                        t.data.len()
                    )));
                }
                Val::Var(_) => return Err(ctx.unsupported(format!("non-constant {name}"))),
            }
        }
        let eps = ctx.float("epsilon", 1e-5);
        let inner = numel(&xs[2..]);
        let n = numel(&xs);
        let (mut scale, mut shift, mut offset) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        for i in 0..n {
            let ch = (i / inner) % c;
            let s = p[0].data[ch] / (p[3].data[ch] + eps).sqrt();
            if !s.is_finite() {
                return Err(
                    ctx.shape_err(format!("channel {ch}: variance + epsilon is not positive"))
                );
            }
            scale[i] = s;
            shift[i] = p[1].data[ch] - p[2].data[ch] * s;
            offset[i] = (p[2].data[ch] * s).abs() + p[1].data[ch].abs();
        }
        let xv = self.var(ctx, &x)?;
        // Deployed BN: sqrt, add, divide, multiply, subtract, add -> at most 6 roundings per
        // term, whether computed directly or pre-folded into a neighbouring layer.
        let aff = Affine {
            scale: Param::from_f64(xs.clone(), scale),
            shift: Param::from_f64(xs.clone(), shift),
            fp: FpModel {
                extra_roundings: 6,
                offset,
                ..Default::default()
            },
        };
        Ok(Val::Var(self.push(
            ctx,
            "BatchNormalization",
            Op::Affine(aff),
            vec![xv],
            xs,
        )?))
    }

    fn reshape(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let x = req(ctx, ins, 0)?.clone();
        let xs = self.shape(&x);
        let r = xs.len();
        let n = numel(&xs);
        let out: Vec<usize> = match ctx.node.op_type.as_str() {
            "Flatten" => {
                let axis = ctx.int("axis", 1);
                let a = if axis < 0 { axis + r as i64 } else { axis };
                if !(0..=r as i64).contains(&a) {
                    return Err(ctx.attr_err(format!("axis {axis} for rank {r}")));
                }
                let a = a as usize;
                vec![numel(&xs[..a]), numel(&xs[a..])]
            }
            "Reshape" => {
                let spec = const_ints(ctx, ins, 1, "shape")?;
                let allowzero = ctx.int("allowzero", 0) != 0;
                let mut out = Vec::with_capacity(spec.len());
                let mut infer = None;
                for (i, &d) in spec.iter().enumerate() {
                    match d {
                        -1 if infer.is_none() => {
                            infer = Some(i);
                            out.push(1);
                        }
                        0 if !allowzero => out.push(*xs.get(i).ok_or_else(|| {
                            ctx.shape_err(format!("shape {spec:?} copies dim {i} of input {xs:?}"))
                        })?),
                        d if d >= 0 => out.push(d as usize),
                        _ => return Err(ctx.shape_err(format!("invalid target shape {spec:?}"))),
                    }
                }
                if let Some(i) = infer {
                    let rest = checked_numel(&out).unwrap_or(0);
                    if rest == 0 || n % rest != 0 {
                        return Err(ctx.shape_err(format!("cannot reshape {xs:?} to {spec:?}")));
                    }
                    out[i] = n / rest;
                }
                out
            }
            "Squeeze" => {
                let axes = if self.opset >= 13 {
                    ins.get(1)
                        .cloned()
                        .flatten()
                        .map(|_| const_ints(ctx, ins, 1, "axes"))
                        .transpose()?
                } else {
                    ctx.ints("axes")
                };
                match axes {
                    None => xs.iter().copied().filter(|&d| d != 1).collect(),
                    Some(axes) => {
                        let mut drop = vec![false; r];
                        for &a in &axes {
                            let a = normalize_axis(a, r)
                                .ok_or_else(|| ctx.attr_err(format!("axis {a} for rank {r}")))?;
                            if xs[a] != 1 {
                                return Err(
                                    ctx.shape_err(format!("cannot squeeze axis {a} of {xs:?}"))
                                );
                            }
                            drop[a] = true;
                        }
                        xs.iter()
                            .zip(&drop)
                            .filter(|(_, d)| !**d)
                            .map(|(v, _)| *v)
                            .collect()
                    }
                }
            }
            _ => {
                let axes = if self.opset >= 13 {
                    const_ints(ctx, ins, 1, "axes")?
                } else {
                    ctx.ints("axes")
                        .ok_or_else(|| ctx.attr_err("missing axes"))?
                };
                let nr = r + axes.len();
                let mut ins_at = vec![false; nr];
                for &a in &axes {
                    let a = normalize_axis(a, nr)
                        .ok_or_else(|| ctx.attr_err(format!("axis {a} for rank {nr}")))?;
                    if ins_at[a] {
                        return Err(ctx.attr_err(format!("repeated axis {a}")));
                    }
                    ins_at[a] = true;
                }
                let mut it = xs.iter();
                ins_at
                    .iter()
                    .map(|&new| if new { 1 } else { *it.next().unwrap_or(&1) })
                    .collect()
            }
        };
        if checked_numel(&out) != Some(n) {
            return Err(ctx.shape_err(format!("cannot reshape {xs:?} ({n} elements) to {out:?}")));
        }
        let xv = self.var(ctx, &x)?;
        Ok(Val::Var(self.push(
            ctx,
            &ctx.node.op_type,
            Op::Reshape,
            vec![xv],
            out,
        )?))
    }

    fn select(
        &mut self,
        ctx: &Ctx,
        inputs: Vec<ValueId>,
        map: Vec<usize>,
        fill: f64,
        out: Vec<usize>,
    ) -> Result<Val, ImportError> {
        Ok(Val::Var(self.push(
            ctx,
            &ctx.node.op_type,
            Op::Select(Select { map, fill }),
            inputs,
            out,
        )?))
    }

    fn transpose(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let x = req(ctx, ins, 0)?.clone();
        let xs = self.shape(&x);
        let r = xs.len();
        let perm: Vec<usize> = match ctx.ints("perm") {
            Some(p) => p
                .iter()
                .map(|&v| normalize_axis(v, r).unwrap_or(usize::MAX))
                .collect(),
            None => (0..r).rev().collect(),
        };
        let mut seen = vec![false; r];
        if perm.len() != r
            || perm
                .iter()
                .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
        {
            return Err(ctx.attr_err(format!("perm {perm:?} for rank {r}")));
        }
        let out: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
        let map = transpose_map(&xs, &perm);
        let xv = self.var(ctx, &x)?;
        self.select(ctx, vec![xv], map, 0.0, out)
    }

    fn slice(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let x = req(ctx, ins, 0)?.clone();
        let xs = self.shape(&x);
        let r = xs.len();
        let (starts, ends, axes, steps) = if self.opset < 10 {
            let s = ctx
                .ints("starts")
                .ok_or_else(|| ctx.attr_err("missing starts"))?;
            let e = ctx
                .ints("ends")
                .ok_or_else(|| ctx.attr_err("missing ends"))?;
            let a = ctx
                .ints("axes")
                .unwrap_or_else(|| (0..s.len() as i64).collect());
            let st = vec![1; s.len()];
            (s, e, a, st)
        } else {
            let s = const_ints(ctx, ins, 1, "starts")?;
            let e = const_ints(ctx, ins, 2, "ends")?;
            let a = match ins.get(3).cloned().flatten() {
                Some(_) => const_ints(ctx, ins, 3, "axes")?,
                None => (0..s.len() as i64).collect(),
            };
            let st = match ins.get(4).cloned().flatten() {
                Some(_) => const_ints(ctx, ins, 4, "steps")?,
                None => vec![1; s.len()],
            };
            (s, e, a, st)
        };
        if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            return Err(ctx.attr_err("starts, ends, axes and steps differ in length"));
        }
        // Per axis: (first index, step, count).
        let mut sel: Vec<(i64, i64, usize)> = xs.iter().map(|&d| (0, 1, d)).collect();
        for i in 0..starts.len() {
            let a = normalize_axis(axes[i], r)
                .ok_or_else(|| ctx.attr_err(format!("axis {} for rank {r}", axes[i])))?;
            let d = xs[a] as i64;
            let step = steps[i];
            if step == 0 {
                return Err(ctx.attr_err("step 0"));
            }
            let fix = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
            let (s, e) = (fix(starts[i]), fix(ends[i]));
            let (s, e) = if step > 0 {
                (s.clamp(0, d), e.clamp(0, d))
            } else {
                (s.clamp(0, d - 1), e.clamp(-1, d - 1))
            };
            // In i128: `step` may be any i64 (i64::MIN included), s and e lie in [-1, d].
            let (s128, e128, st128) = (i128::from(s), i128::from(e), i128::from(step));
            let count = if step > 0 {
                if e > s {
                    (e128 - s128 + st128 - 1) / st128
                } else {
                    0
                }
            } else if s > e {
                (s128 - e128 - st128 - 1) / -st128
            } else {
                0
            };
            // count <= d, which fits usize.
            sel[a] = (s, step, count as usize);
        }
        let out: Vec<usize> = sel.iter().map(|s| s.2).collect();
        let map = index_map(&out, |coord| {
            let st = strides(&xs);
            Some(
                coord
                    .iter()
                    .zip(&sel)
                    .zip(&st)
                    .map(|((&c, s), &t)| (s.0 + s.1 * c as i64) as usize * t)
                    .sum(),
            )
        });
        let xv = self.var(ctx, &x)?;
        self.select(ctx, vec![xv], map, 0.0, out)
    }

    fn pad(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let x = req(ctx, ins, 0)?.clone();
        let xs = self.shape(&x);
        let r = xs.len();
        let mode = ctx.string("mode").unwrap_or_else(|| "constant".into());
        if mode != "constant" {
            return Err(ctx.unsupported(format!("Pad mode '{mode}' (only constant)")));
        }
        let (pads, value, axes) = if self.opset < 11 {
            let p = ctx
                .ints("pads")
                .ok_or_else(|| ctx.attr_err("missing pads"))?;
            (
                p,
                ctx.float("value", 0.0),
                (0..r as i64).collect::<Vec<_>>(),
            )
        } else {
            let p = const_ints(ctx, ins, 1, "pads")?;
            let v = match ins.get(2).cloned().flatten() {
                Some(Val::Const(c)) => c.data.first().copied().unwrap_or(0.0),
                Some(Val::Var(_)) => return Err(ctx.unsupported("non-constant pad value")),
                None => 0.0,
            };
            let a = match ins.get(3).cloned().flatten() {
                Some(_) => const_ints(ctx, ins, 3, "axes")?,
                None => (0..r as i64).collect(),
            };
            (p, v, a)
        };
        if pads.len() != 2 * axes.len() {
            return Err(ctx.attr_err(format!("{} pads for {} axes", pads.len(), axes.len())));
        }
        let mut before = vec![0i64; r];
        let mut after = vec![0i64; r];
        for (i, &a) in axes.iter().enumerate() {
            let a = normalize_axis(a, r).ok_or_else(|| ctx.attr_err(format!("axis {a}")))?;
            before[a] = pads[i];
            after[a] = pads[i + axes.len()];
        }
        let mut out = Vec::with_capacity(r);
        for d in 0..r {
            let o = (xs[d] as i64)
                .checked_add(before[d])
                .and_then(|o| o.checked_add(after[d]))
                .ok_or_else(|| ctx.attr_err(format!("pads {pads:?} overflow")))?;
            if o < 0 {
                return Err(ctx.shape_err(format!("pads {pads:?} crop more than {xs:?}")));
            }
            out.push(o as usize);
        }
        if checked_numel(&out).is_none() {
            return Err(ctx.shape_err(format!("padded shape {out:?} is too large")));
        }
        let st = strides(&xs);
        let map = index_map(&out, |coord| {
            let mut flat = 0usize;
            for d in 0..r {
                let i = coord[d] as i64 - before[d];
                if i < 0 || i >= xs[d] as i64 {
                    return None;
                }
                flat += i as usize * st[d];
            }
            Some(flat)
        });
        let xv = self.var(ctx, &x)?;
        self.select(ctx, vec![xv], map, value, out)
    }

    fn concat(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let parts: Vec<Val> = ins.iter().flatten().cloned().collect();
        let first = parts
            .first()
            .ok_or_else(|| ctx.shape_err("Concat without inputs"))?;
        let s0 = self.shape(first);
        let r = s0.len();
        let axis = normalize_axis(ctx.int("axis", 0), r)
            .ok_or_else(|| ctx.attr_err(format!("axis for rank {r}")))?;
        let mut out = s0.clone();
        out[axis] = 0;
        let mut shapes = Vec::new();
        for p in &parts {
            let s = self.shape(p);
            if s.len() != r || (0..r).any(|d| d != axis && s[d] != s0[d]) {
                return Err(ctx.shape_err(format!(
                    "cannot concatenate {s:?} with {s0:?} on axis {axis}"
                )));
            }
            out[axis] += s[axis];
            shapes.push(s);
        }
        let outer = numel(&s0[..axis]);
        let inner = numel(&s0[axis + 1..]);
        let mut starts = Vec::new();
        let mut acc = 0;
        for s in &shapes {
            starts.push(acc);
            acc += numel(s);
        }
        let mut map = Vec::with_capacity(numel(&out));
        for o in 0..outer {
            for (j, s) in shapes.iter().enumerate() {
                let block = s[axis] * inner;
                map.extend((0..block).map(|e| starts[j] + o * block + e));
            }
        }
        let mut vids = Vec::new();
        for p in &parts {
            vids.push(self.var(ctx, p)?);
        }
        self.select(ctx, vids, map, 0.0, out)
    }

    fn gather(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let x = req(ctx, ins, 0)?.clone();
        let Val::Const(idx) = req(ctx, ins, 1)?.clone() else {
            return Err(ctx.unsupported("Gather with non-constant indices"));
        };
        let xs = self.shape(&x);
        let r = xs.len();
        let axis = normalize_axis(ctx.int("axis", 0), r)
            .ok_or_else(|| ctx.attr_err(format!("axis for rank {r}")))?;
        let d = xs[axis] as i64;
        let mut ids = Vec::with_capacity(idx.data.len());
        for &v in &idx.data {
            let i = v as i64;
            let i = if i < 0 { i + d } else { i };
            if !(0..d).contains(&i) {
                return Err(
                    ctx.shape_err(format!("index {v} out of range for axis {axis} of {xs:?}"))
                );
            }
            ids.push(i as usize);
        }
        let mut out = xs[..axis].to_vec();
        out.extend_from_slice(&idx.shape);
        out.extend_from_slice(&xs[axis + 1..]);
        let outer = numel(&xs[..axis]);
        let inner = numel(&xs[axis + 1..]);
        let mut map = Vec::with_capacity(outer * ids.len() * inner);
        for o in 0..outer {
            for &i in &ids {
                map.extend((0..inner).map(|e| (o * xs[axis] + i) * inner + e));
            }
        }
        let xv = self.var(ctx, &x)?;
        self.select(ctx, vec![xv], map, 0.0, out)
    }
}

fn req<'v>(ctx: &Ctx, ins: &'v [Option<Val>], i: usize) -> Result<&'v Val, ImportError> {
    ins.get(i)
        .and_then(Option::as_ref)
        .ok_or_else(|| ctx.shape_err(format!("missing input #{i}")))
}

fn const_ints(
    ctx: &Ctx,
    ins: &[Option<Val>],
    i: usize,
    what: &str,
) -> Result<Vec<i64>, ImportError> {
    match req(ctx, ins, i)? {
        Val::Const(c) => Ok(c.ints()),
        Val::Var(_) => Err(ctx.unsupported(format!("'{what}' must be constant"))),
    }
}

fn to_dims(ctx: &Ctx, v: &[i64]) -> Result<Vec<usize>, ImportError> {
    let (s, _) = checked_dims(&ctx.name, v)?;
    Ok(s)
}

/// Flat source index for every element of `out`, computed from its multi-index.
fn index_map(out: &[usize], f: impl Fn(&[usize]) -> Option<usize>) -> Vec<usize> {
    let n = numel(out);
    let mut map = Vec::with_capacity(n);
    let mut coord = vec![0usize; out.len()];
    for _ in 0..n {
        map.push(f(&coord).unwrap_or(FILL));
        for ax in (0..out.len()).rev() {
            coord[ax] += 1;
            if coord[ax] < out[ax] {
                break;
            }
            coord[ax] = 0;
        }
    }
    map
}

/// Source indices of a transpose of `shape` by `perm`.
fn transpose_map(shape: &[usize], perm: &[usize]) -> Vec<usize> {
    let st = strides(shape);
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    index_map(&out, |c| {
        Some(c.iter().zip(perm).map(|(&ci, &p)| ci * st[p]).sum())
    })
}

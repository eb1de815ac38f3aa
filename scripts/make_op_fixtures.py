"""Small ONNX models covering every supported operator and attribute variant, with
onnxruntime's float32 outputs, for tests/ops_onnxruntime.rs."""
import json, os, sys
import numpy as np
import onnx
from onnx import helper as h, TensorProto as T, numpy_helper as nh
import onnxruntime as ort

out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
rng = np.random.default_rng(20261123)


def w(name, *shape, scale=1.0):
    return nh.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def i64(name, vals):
    return nh.from_array(np.array(vals, dtype=np.int64), name)


def save(name, in_shape, nodes, inits, opset=13, out="y"):
    g = h.make_graph(nodes, name, [h.make_tensor_value_info("x", T.FLOAT, in_shape)],
                     [h.make_tensor_value_info(out, T.FLOAT, None)], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    m = onnx.shape_inference.infer_shapes(m)
    path = os.path.join(out_dir, name + ".onnx")
    onnx.save(m, path)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    cases = []
    for _ in range(3):
        x = rng.uniform(-2, 2, in_shape).astype(np.float32)
        y = sess.run(None, {"x": x})[0]
        cases.append({"input": x.ravel().tolist(), "output": y.astype(np.float64).ravel().tolist(),
                      "output_shape": list(y.shape)})
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump({"model": name + ".onnx", "input_shape": in_shape, "cases": cases}, f)


N = h.make_node
save("conv2d_group_stride_pad_dil", [1, 4, 9, 9],
     [N("Conv", ["x", "W", "B"], ["y"], group=2, strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2])],
     [w("W", 6, 2, 3, 3), w("B", 6)])
save("conv1d", [1, 2, 12], [N("Conv", ["x", "W", "B"], ["y"], strides=[2], pads=[1, 2])], [w("W", 3, 2, 4), w("B", 3)])
save("conv_same_upper", [1, 1, 7, 7], [N("Conv", ["x", "W"], ["y"], strides=[2, 2], auto_pad="SAME_UPPER")], [w("W", 2, 1, 3, 3)])
save("maxpool_pads_ceil", [1, 2, 7, 7], [N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)], [])
save("maxpool_dilation", [1, 2, 8, 8], [N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])], [])
save("avgpool_include_pad", [1, 2, 6, 6], [N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)], [])
save("avgpool_exclude_pad", [1, 2, 6, 6], [N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])], [])
save("global_pools", [1, 3, 5, 4], [N("GlobalAveragePool", ["x"], ["a"]), N("GlobalMaxPool", ["x"], ["b"]), N("Add", ["a", "b"], ["y"])], [])
save("batchnorm", [1, 3, 4, 4], [N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
     [w("s", 3), w("b", 3), w("m", 3), nh.from_array(rng.uniform(0.2, 2, 3).astype(np.float32), "v")])
save("conv_pad_then_bn", [1, 2, 6, 6],
     [N("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]), N("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"])],
     [w("W", 3, 2, 3, 3), w("B", 3), w("s", 3), w("b", 3), w("m", 3), nh.from_array(rng.uniform(0.2, 2, 3).astype(np.float32), "v")])
save("normalize_then_padded_conv", [1, 3, 5, 5],
     [N("Sub", ["x", "mean"], ["a"]), N("Div", ["a", "std"], ["b"]), N("Conv", ["b", "W"], ["y"], pads=[1, 1, 1, 1])],
     [nh.from_array(rng.uniform(0, 1, (1, 3, 1, 1)).astype(np.float32), "mean"),
      nh.from_array(rng.uniform(0.2, 1, (1, 3, 1, 1)).astype(np.float32), "std"), w("W", 2, 3, 3, 3)])
save("pad_constant_and_crop", [1, 2, 4, 5], [N("Pad", ["x", "p", "v"], ["y"])],
     [i64("p", [0, 0, 1, -1, 0, 1, 2, 0]), nh.from_array(np.array(0.5, dtype=np.float32), "v")])
save("transpose_flatten_gemm", [1, 2, 3, 4],
     [N("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), N("Flatten", ["t"], ["f"]), N("Gemm", ["f", "W", "B"], ["y"], transB=1)],
     [w("W", 5, 24), w("B", 5)])
save("slice_negative_step", [1, 3, 4, 6], [N("Slice", ["x", "s", "e", "a", "st"], ["y"])],
     [i64("s", [-1, 2]), i64("e", [-1000, 0]), i64("a", [3, 1]), i64("st", [-2, -1])])
save("concat_var_const", [1, 2, 3], [N("Concat", ["x", "c"], ["y"], axis=1)], [w("c", 1, 3, 3)])
save("gather_axis1", [1, 4, 3], [N("Gather", ["x", "i"], ["y"], axis=1)], [i64("i", [2, 0, 2, -1])])
save("squeeze_unsqueeze", [1, 3, 1, 2],
     [N("Squeeze", ["x", "a"], ["s"]), N("Unsqueeze", ["s", "b"], ["y"])], [i64("a", [2]), i64("b", [0, 3])])
save("reshape_zero_minus_one", [1, 2, 3, 4], [N("Reshape", ["x", "s"], ["y"])], [i64("s", [0, -1, 4])])
save("activations", [1, 10],
     [N("LeakyRelu", ["x"], ["a"], alpha=0.2), N("Sigmoid", ["a"], ["b"]), N("Tanh", ["x"], ["c"]), N("Add", ["b", "c"], ["y"])], [])
save("gemm_transA_var", [4, 3], [N("Gemm", ["x", "W", "C"], ["y"], transA=1, alpha=0.5, beta=2.0)], [w("W", 4, 5), w("C", 1, 5)])
save("gemm_const_A", [4, 5], [N("Gemm", ["A", "x", "C"], ["y"])], [w("A", 3, 4), w("C", 3, 1)])
save("gemm_const_A_transB", [5, 4], [N("Gemm", ["A", "x"], ["y"], transB=1)], [w("A", 3, 4)])
save("gemm_nonuniform_bias", [3, 4], [N("Gemm", ["x", "W", "C"], ["y"], transB=1, beta=0.5)], [w("W", 2, 4), w("C", 3, 2)])
save("matmul_const_left", [4, 3], [N("MatMul", ["W", "x"], ["y"])], [w("W", 2, 4)])
save("matmul_1d", [4], [N("MatMul", ["x", "W"], ["y"])], [w("W", 4, 3)])
save("matmul_batched_var", [2, 3, 4], [N("MatMul", ["x", "W"], ["y"])], [w("W", 4, 2)])
save("elementwise_const", [1, 6],
     [N("Div", ["x", "d"], ["a"]), N("Sub", ["c", "a"], ["b"]), N("Neg", ["b"], ["n"]), N("Mul", ["n", "m"], ["y"])],
     [nh.from_array(rng.uniform(0.5, 2, (1, 6)).astype(np.float32), "d"), w("c", 6), w("m", 1)])
save("binary_vars_broadcast", [1, 3, 4, 4],
     [N("GlobalAveragePool", ["x"], ["g"]), N("Add", ["x", "g"], ["a"]), N("Relu", ["a"], ["r"]),
      N("Mul", ["r", "x"], ["m"]), N("Sub", ["m", "g"], ["y"])], [])
save("div_var_var", [1, 5], [N("Sigmoid", ["x"], ["s"]), N("Add", ["s", "one"], ["d"]), N("Div", ["x", "d"], ["y"])],
     [nh.from_array(np.array([1.0], dtype=np.float32), "one")])
save("pytorch_flatten_pattern", [1, 2, 3, 3],
     [N("Shape", ["x"], ["sh"]), N("Gather", ["sh", "zero"], ["n"], axis=0), N("Unsqueeze", ["n", "ax"], ["nu"]),
      N("Concat", ["nu", "minus1"], ["shape"], axis=0), N("Reshape", ["x", "shape"], ["f"]),
      N("Gemm", ["f", "W"], ["y"], transB=1)],
     [i64("zero", 0), i64("ax", [0]), i64("minus1", [-1]), w("W", 4, 18)])
save("constant_of_shape_and_noops", [1, 4],
     [N("ConstantOfShape", ["s"], ["c"], value=nh.from_array(np.array([0.25], dtype=np.float32))),
      N("Identity", ["x"], ["i"]), N("Dropout", ["i"], ["d"]), N("Cast", ["d"], ["ca"], to=T.FLOAT),
      N("Add", ["ca", "c"], ["y"])], [i64("s", [1, 4])])
save("opset9_slice_pad_squeeze", [1, 1, 4, 6],
     [N("Slice", ["x"], ["s"], starts=[1], ends=[5], axes=[3]), N("Pad", ["s"], ["p"], pads=[0, 0, 1, 0, 0, 0, 0, 2], value=-1.0),
      N("Squeeze", ["p"], ["q"], axes=[1]), N("Unsqueeze", ["q"], ["y"], axes=[1])], [], opset=9)

# Elementwise functions (src/ops/elementwise.rs), one fixture each. Inputs are uniform in
# [-2, 2]; functions defined only for positive inputs see 0.05 + |x|; the wide ones see 4x.
def pos(name):
    return [N("Abs", ["x"], ["ax"]), N("Add", ["ax", name], ["px"])]


eps = lambda name: nh.from_array(np.array([0.05], dtype=np.float32), name)
four = nh.from_array(np.array([4.0], dtype=np.float32), "four")
for op in ["Sigmoid", "Tanh", "Exp", "Sin", "Cos", "Softplus", "Erf", "Abs", "Floor", "Ceil", "Round", "Sign"]:
    save(f"fn_{op.lower()}", [1, 12], [N("Mul", ["x", "four"], ["wx"]), N(op, ["wx"], ["y"])], [four])
for op in ["Log", "Sqrt", "Reciprocal"]:
    save(f"fn_{op.lower()}", [1, 12], pos("e") + [N(op, ["px"], ["y"])], [eps("e")])
save("fn_gelu", [1, 12], [N("Mul", ["x", "four"], ["wx"]), N("Gelu", ["wx"], ["y"])], [four], opset=20)
save("fn_hardsigmoid", [1, 12], [N("Mul", ["x", "four"], ["wx"]), N("HardSigmoid", ["wx"], ["y"], alpha=0.3, beta=0.4)], [four])
save("fn_hardswish", [1, 12], [N("Mul", ["x", "four"], ["wx"]), N("HardSwish", ["wx"], ["y"])], [four], opset=14)
save("fn_clip_inputs", [1, 12], [N("Clip", ["x", "lo", "hi"], ["y"])],
     [nh.from_array(np.array(-0.5, dtype=np.float32), "lo"), nh.from_array(np.array(1.25, dtype=np.float32), "hi")])
save("fn_clip_relu6_attrs", [1, 12], [N("Mul", ["x", "four"], ["wx"]), N("Clip", ["wx"], ["y"], min=0.0, max=6.0)], [four], opset=10)
save("fn_clip_min_only", [1, 12], [N("Clip", ["x", "lo"], ["y"])], [nh.from_array(np.array(0.3, dtype=np.float32), "lo")])
save("fn_max_min_const", [1, 12],
     [N("Max", ["x", "c"], ["a"]), N("Min", ["a", "d", "d2"], ["y"])],
     [nh.from_array(np.array([-0.25], dtype=np.float32), "c"), nh.from_array(np.array(0.75, dtype=np.float32), "d"),
      nh.from_array(np.array([1.5], dtype=np.float32), "d2")])
for tag, p_ in [("2", 2.0), ("3", 3.0), ("m1", -1.0)]:
    save(f"fn_pow_{tag}", [1, 12], pos("e") + [N("Pow", ["px", "p"], ["y"])],
         [eps("e"), nh.from_array(np.array(p_, dtype=np.float32), "p")])
for tag, p_ in [("half", 0.5), ("m1_5", -1.5), ("2_5", 2.5)]:
    save(f"fn_pow_{tag}", [1, 12], pos("e") + [N("Pow", ["px", "p"], ["y"])],
         [eps("e"), nh.from_array(np.array(p_, dtype=np.float32), "p")])
save("fn_pow_odd_negative_base", [1, 12], [N("Pow", ["x", "p"], ["y"])], [nh.from_array(np.array(3.0, dtype=np.float32), "p")])
save("fn_softsign", [1, 12], [N("Mul", ["x", "four"], ["wx"]), N("Softsign", ["wx"], ["y"])], [four])
# Structural operators (src/onnx/import/structural.rs).
def save_multi(name, in_shape, nodes, inits, outs, opset=13):
    """Like save, with several graph outputs; the expected output is their concatenation."""
    g = h.make_graph(nodes, name, [h.make_tensor_value_info("x", T.FLOAT, in_shape)],
                     [h.make_tensor_value_info(o, T.FLOAT, None) for o in outs], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    path = os.path.join(out_dir, name + ".onnx")
    onnx.save(m, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    cases = []
    for _ in range(3):
        x = rng.uniform(-2, 2, in_shape).astype(np.float32)
        ys = sess.run(None, {"x": x})
        y = np.concatenate([v.astype(np.float64).ravel() for v in ys])
        cases.append({"input": x.ravel().tolist(), "output": y.tolist(), "output_shape": [len(y)]})
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump({"model": name + ".onnx", "input_shape": in_shape, "cases": cases}, f)


save("split_sizes_concat", [1, 6, 4], [N("Split", ["x", "sp"], ["a", "b"], axis=1), N("Mul", ["a", "two"], ["a2"]),
                                        N("Concat", ["b", "a2"], ["y"], axis=1)],
     [i64("sp", [2, 4]), nh.from_array(np.array(2.0, dtype=np.float32), "two")])
save("split_num_outputs", [1, 7], [N("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3), N("Sub", ["a", "c"], ["d"]),
                                   N("Concat", ["d", "b"], ["y"], axis=1)], [], opset=18)
save("tile", [1, 2, 3], [N("Tile", ["x", "r"], ["y"])], [i64("r", [2, 1, 3])])
save("expand", [1, 3, 1], [N("Expand", ["x", "s"], ["y"])], [i64("s", [2, 1, 3, 4])])
save("where_const_condition", [1, 2, 3],
     [N("Less", ["p", "q"], ["c"]), N("Neg", ["x"], ["nx"]), N("Where", ["c", "x", "nx"], ["y"])],
     [nh.from_array(rng.uniform(-1, 1, (2, 3)).astype(np.float32), "p"), nh.from_array(np.zeros(3, np.float32), "q")])
save("reduce_sum_axes_input", [1, 3, 4, 2], [N("ReduceSum", ["x", "ax"], ["y"], keepdims=1)], [i64("ax", [1, 3])])
save("reduce_mean_attr", [1, 3, 4], [N("ReduceMean", ["x"], ["y"], axes=[2], keepdims=0)], [])
save("reduce_max_attr", [1, 3, 4], [N("ReduceMax", ["x"], ["y"], axes=[1], keepdims=1)], [])
save("reduce_min_axes_input", [1, 3, 4], [N("ReduceMin", ["x", "ax"], ["y"], keepdims=0)], [i64("ax", [-1])], opset=18)
save("softmax_last_axis", [1, 2, 5], [N("Softmax", ["x"], ["y"], axis=-1)], [])
save("softmax_opset11_coerced", [1, 3, 4], [N("Softmax", ["x"], ["y"], axis=1)], [], opset=11)
save("logsoftmax", [1, 6], [N("LogSoftmax", ["x"], ["y"], axis=1)], [])
save("layernorm", [1, 3, 6], [N("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)],
     [w("g", 6), w("b", 6)], opset=17)
save("matmul_two_network_values", [1, 3, 4],
     [N("Transpose", ["x"], ["t"], perm=[0, 2, 1]), N("MatMul", ["x", "t"], ["y"])], [])
save("conv_transpose_2d", [1, 4, 4, 3],
     [N("ConvTranspose", ["x", "W", "B"], ["y"], strides=[2, 2], pads=[1, 0, 1, 1], output_padding=[1, 0],
        group=2, dilations=[1, 2])], [w("W", 4, 3, 3, 2), w("B", 6)])
save("conv_transpose_1d", [1, 2, 5], [N("ConvTranspose", ["x", "W"], ["y"], strides=[3], pads=[1, 2])], [w("W", 2, 3, 4)])
save("resize_nearest_scales", [1, 2, 3, 4], [N("Resize", ["x", "", "sc"], ["y"], mode="nearest",
                                                coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
     [nh.from_array(np.array([1, 1, 2, 1.5], dtype=np.float32), "sc")])
save("resize_linear_half_pixel", [1, 2, 3, 4], [N("Resize", ["x", "", "sc"], ["y"], mode="linear")],
     [nh.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "sc")])
save("resize_linear_align_corners_sizes", [1, 1, 3, 3],
     [N("Resize", ["x", "", "", "sz"], ["y"], mode="linear", coordinate_transformation_mode="align_corners")],
     [i64("sz", [1, 1, 5, 4])])
save("upsample_nearest_opset9", [1, 2, 2, 3], [N("Upsample", ["x", "sc"], ["y"], mode="nearest")],
     [nh.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "sc")], opset=9)
save_multi("two_outputs", [1, 4], [N("Relu", ["x"], ["a"]), N("Gemm", ["x", "W"], ["b"], transB=1)], [w("W", 3, 4)], ["a", "b"])
print("wrote fixtures to", out_dir)

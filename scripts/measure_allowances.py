"""Largest difference between onnxruntime's float32 elementwise functions and the true
function (float64 reference at the same float32 inputs), over dense samples of each function's
interesting range. Writes tests/data/allowances.json; tests/ops_onnxruntime.rs checks that
every declared deployed-arithmetic allowance (src/ops/elementwise.rs) stays well above these.

    .venv-fixtures/bin/python scripts/measure_allowances.py tests/data/allowances.json
"""
import json
import math
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h

N = 1_000_000
rng = np.random.default_rng(20261201)
erf = np.vectorize(math.erf)


def run(node, x, opset=20, extra_inits=()):
    g = h.make_graph([node], "f", [h.make_tensor_value_info("x", T.FLOAT, [len(x)])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=list(extra_inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 9
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0].astype(np.float64)


def samples(lo, hi):
    # Uniform, plus a log-spaced sweep near zero and the exact endpoints.
    a = rng.uniform(lo, hi, N - 2048).astype(np.float32)
    s = np.geomspace(1e-6, max(abs(lo), abs(hi)), 1024).astype(np.float32)
    b = np.concatenate([s, -s]) if lo < 0 else s
    b = b[(b >= lo) & (b <= hi)]
    return np.concatenate([a, b, np.array([lo, hi], dtype=np.float32)]).astype(np.float32)


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def softplus(x):
    return np.logaddexp(0.0, x)


CASES = [
    ("Sigmoid", h.make_node("Sigmoid", ["x"], ["y"]), (-30, 30), lambda x: 1 / (1 + np.exp(-x))),
    ("Tanh", h.make_node("Tanh", ["x"], ["y"]), (-20, 20), np.tanh),
    ("Exp", h.make_node("Exp", ["x"], ["y"]), (-80, 80), np.exp),
    ("Log", h.make_node("Log", ["x"], ["y"]), (1e-30, 1e30), np.log),
    ("Sqrt", h.make_node("Sqrt", ["x"], ["y"]), (0, 1e30), np.sqrt),
    ("Reciprocal", h.make_node("Reciprocal", ["x"], ["y"]), (1e-30, 1e30), lambda x: 1 / x),
    ("Sin", h.make_node("Sin", ["x"], ["y"]), (-100, 100), np.sin),
    ("Cos", h.make_node("Cos", ["x"], ["y"]), (-100, 100), np.cos),
    ("Softplus", h.make_node("Softplus", ["x"], ["y"]), (-80, 80), softplus),
    ("Erf", h.make_node("Erf", ["x"], ["y"]), (-10, 10), erf),
    ("Gelu", h.make_node("Gelu", ["x"], ["y"]), (-20, 20), gelu),
    ("Softsign", h.make_node("Softsign", ["x"], ["y"]), (-1e4, 1e4), lambda x: x / (1 + np.abs(x))),
]


def main(path):
    out = {"samples_per_function": N, "onnxruntime": ort.__version__, "functions": {}}
    for name, node, (lo, hi), ref in CASES:
        x = samples(lo, hi)
        y = run(node, x)
        t = ref(x.astype(np.float64))
        ok = np.isfinite(t) & np.isfinite(y)
        d = np.abs(y[ok] - t[ok])
        rel = d / np.maximum(np.abs(t[ok]), 1e-300)
        # Worst abs error where |f| <= 1, worst relative error where |f| > 1: the allowance
        # model is abs + rel * |f|.
        small = np.abs(t[ok]) <= 1
        out["functions"][name] = {
            "range": [lo, hi],
            "max_abs_err_where_abs_f_le_1": float(d[small].max()) if small.any() else 0.0,
            "max_rel_err_where_abs_f_gt_1": float(rel[~small].max()) if (~small).any() else 0.0,
            "max_abs_err": float(d.max()),
        }
        print(name, out["functions"][name])
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])

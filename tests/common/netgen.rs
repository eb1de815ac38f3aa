//! Random networks of random shapes, built as ONNX protobufs and imported like any model file.
#![allow(dead_code)]

use ferrocert::ir::Graph;
use ferrocert::onnx;
use ferrocert::onnx::build::{ModelBuilder, attr_float, attr_int, attr_ints, attr_str};
use std::path::Path;

/// Deterministic pseudo-random numbers (SplitMix64).
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [a, b).
    pub fn range(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.unit()
    }
    /// Uniform integer in [a, b].
    pub fn int(&mut self, a: usize, b: usize) -> usize {
        a + (self.next_u64() % (b - a + 1) as u64) as usize
    }
    pub fn vec(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (self.range(-1.0, 1.0) * scale) as f32)
            .collect()
    }
}

/// Layer kinds the generator can emit (applied when the current shape allows).
pub const KINDS: usize = 25;

/// The elementwise functions kind 16 picks from (ONNX name, how its input is prepared).
pub const FUNCS: &[&str] = &[
    "Sigmoid",
    "Tanh",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Sin",
    "Cos",
    "Softplus",
    "Erf",
    "Gelu",
    "Abs",
    "HardSigmoid",
    "HardSwish",
    "Clip",
    "Max",
    "Min",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Pow2",
    "Pow3",
    "PowHalf",
    "PowM1",
    "Softsign",
];

/// Append elementwise function `name` to `x`, first squashing or shifting its input into the
/// function's domain (and away from float32 overflow).
pub fn add_func(b: &mut ModelBuilder, r: &mut Rng, x: &str, name: &str) -> String {
    let mut x = x.to_string();
    let positive = matches!(name, "Log" | "Sqrt" | "Reciprocal" | "PowHalf" | "PowM1");
    let squash = matches!(name, "Exp" | "Softplus" | "Pow2" | "Pow3");
    if positive {
        let c = b.init(&[], &[r.range(0.1, 1.0) as f32]);
        x = b.node("Abs", &[&x], vec![]);
        x = b.node("Add", &[&x, &c], vec![]);
    }
    if squash {
        let c = b.init(&[], &[3.0]);
        x = b.node("Tanh", &[&x], vec![]);
        x = b.node("Mul", &[&x, &c], vec![]);
    }
    let scalar = |b: &mut ModelBuilder, v: f32| b.init(&[], &[v]);
    match name {
        "HardSigmoid" => b.node(
            "HardSigmoid",
            &[&x],
            vec![
                attr_float("alpha", r.range(0.1, 0.6) as f32),
                attr_float("beta", r.range(0.2, 0.8) as f32),
            ],
        ),
        "Clip" => {
            let lo = scalar(b, r.range(-1.0, 0.0) as f32);
            let hi = scalar(b, r.range(0.2, 1.5) as f32);
            b.node("Clip", &[&x, &lo, &hi], vec![])
        }
        "Max" | "Min" => {
            let c = scalar(b, r.range(-0.5, 0.5) as f32);
            b.node(name, &[&x, &c], vec![])
        }
        "Pow2" | "Pow3" | "PowHalf" | "PowM1" => {
            let p = match name {
                "Pow2" => 2.0,
                "Pow3" => 3.0,
                "PowHalf" => 0.5,
                _ => -1.0,
            };
            let p = scalar(b, p);
            b.node("Pow", &[&x, &p], vec![])
        }
        other => b.node(other, &[&x], vec![]),
    }
}

/// Build a random network: `kinds` picks layers, `seed` their sizes and weights.
/// Returns the ONNX model and a readable description.
pub fn random_model(
    kinds: &[u8],
    conv_input: bool,
    seed: u64,
) -> (onnx_protobuf::ModelProto, String) {
    let mut r = Rng(seed);
    let mut desc = Vec::new();
    let (mut b, mut x, mut shape): (ModelBuilder, String, Vec<i64>) = if conv_input {
        let s = vec![
            1,
            r.int(1, 3) as i64,
            r.int(4, 7) as i64,
            r.int(4, 7) as i64,
        ];
        (ModelBuilder::new(&s, 13), "input".to_string(), s)
    } else {
        let s = vec![1, r.int(1, 6) as i64];
        (ModelBuilder::new(&s, 13), "input".to_string(), s)
    };
    desc.push(format!("input {shape:?}"));
    for &k in kinds {
        let scale = [0.3, 1.0, 4.0][r.int(0, 2)];
        let is4 = shape.len() == 4;
        let numel: i64 = shape.iter().product();
        match k as usize % KINDS {
            0 | 1 => {
                // Dense (flattening first if needed).
                if is4 {
                    x = b.node("Flatten", &[&x], vec![attr_int("axis", 1)]);
                    shape = vec![1, numel];
                } else if shape[0] != 1 {
                    let s = b.init_i64(&[2], &[1, numel]);
                    x = b.node("Reshape", &[&x, &s], vec![]);
                    shape = vec![1, numel];
                }
                let (din, dout) = (shape[1], r.int(1, 8) as i64);
                let w = b.init(&[dout, din], &r.vec((din * dout) as usize, scale));
                let bias = b.init(&[dout], &r.vec(dout as usize, scale));
                x = b.node("Gemm", &[&x, &w, &bias], vec![attr_int("transB", 1)]);
                shape = vec![1, dout];
                desc.push(format!("Gemm {din}->{dout} x{scale}"));
            }
            2 | 3 => {
                x = b.node("Relu", &[&x], vec![]);
                desc.push("Relu".into());
            }
            4 => {
                let alpha = r.range(0.0, 0.5) as f32;
                x = b.node("LeakyRelu", &[&x], vec![attr_float("alpha", alpha)]);
                desc.push(format!("LeakyRelu {alpha}"));
            }
            5 => {
                x = b.node("Sigmoid", &[&x], vec![]);
                desc.push("Sigmoid".into());
            }
            6 => {
                x = b.node("Tanh", &[&x], vec![]);
                desc.push("Tanh".into());
            }
            7 => {
                // Normalisation by constants, broadcast from a smaller tensor.
                let m = b.init(&[], &[r.range(-0.5, 0.5) as f32]);
                let s = b.init(&[], &[r.range(0.2, 2.0) as f32]);
                x = b.node("Sub", &[&x, &m], vec![]);
                x = b.node("Div", &[&x, &s], vec![]);
                desc.push("Sub/Div".into());
            }
            8 => {
                // Residual block y = x + W2 relu(W1 x).
                if is4 {
                    let c = shape[1];
                    let w = b.init(&[c, c, 3, 3], &r.vec((c * c * 9) as usize, scale / 3.0));
                    let h = b.node("Conv", &[&x, &w], vec![attr_ints("pads", &[1, 1, 1, 1])]);
                    let h = b.node("Relu", &[&h], vec![]);
                    x = b.node("Add", &[&x, &h], vec![]);
                    desc.push("Conv residual".into());
                } else {
                    let d = shape[1];
                    let w = b.init(&[d, d], &r.vec((d * d) as usize, scale));
                    let h = b.node("MatMul", &[&x, &w], vec![]);
                    let h = b.node("Relu", &[&h], vec![]);
                    x = b.node("Add", &[&h, &x], vec![]);
                    desc.push("MatMul residual".into());
                }
            }
            9 | 10 if is4 => {
                let (c, h, w) = (shape[1], shape[2], shape[3]);
                let k = r.int(1, 3.min(h as usize).min(w as usize)) as i64;
                let s = r.int(1, 2) as i64;
                let p = r.int(0, (k - 1) as usize) as i64;
                let m = r.int(1, 4) as i64;
                let wt = b.init(&[m, c, k, k], &r.vec((m * c * k * k) as usize, scale));
                let bias = b.init(&[m], &r.vec(m as usize, scale));
                x = b.node(
                    "Conv",
                    &[&x, &wt, &bias],
                    vec![
                        attr_ints("strides", &[s, s]),
                        attr_ints("pads", &[p, p, p, p]),
                        attr_ints("kernel_shape", &[k, k]),
                    ],
                );
                shape = vec![1, m, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1];
                desc.push(format!("Conv {c}->{m} k{k} s{s} p{p}"));
            }
            11 if is4 && shape[2] >= 2 && shape[3] >= 2 => {
                let op = if r.unit() < 0.5 {
                    "MaxPool"
                } else {
                    "AveragePool"
                };
                x = b.node(
                    op,
                    &[&x],
                    vec![
                        attr_ints("kernel_shape", &[2, 2]),
                        attr_ints("strides", &[2, 2]),
                    ],
                );
                shape = vec![1, shape[1], shape[2] / 2, shape[3] / 2];
                desc.push(op.into());
            }
            12 if is4 => {
                let c = shape[1] as usize;
                let sc = b.init(&[c as i64], &r.vec(c, 1.5));
                let bb = b.init(&[c as i64], &r.vec(c, 1.0));
                let mean = b.init(&[c as i64], &r.vec(c, 1.0));
                let var: Vec<f32> = (0..c).map(|_| r.range(0.1, 2.0) as f32).collect();
                let var = b.init(&[c as i64], &var);
                x = b.node("BatchNormalization", &[&x, &sc, &bb, &mean, &var], vec![]);
                desc.push("BatchNorm".into());
            }
            13 => {
                // Pad the last axis, then slice it back down differently.
                let r_ = shape.len();
                let mut pads = vec![0i64; 2 * r_];
                pads[r_ - 1] = 1;
                pads[2 * r_ - 1] = 2;
                let p = b.init_i64(&[2 * r_ as i64], &pads);
                let v = b.init(&[], &[r.range(-1.0, 1.0) as f32]);
                x = b.node("Pad", &[&x, &p, &v], vec![]);
                let last = shape[r_ - 1] + 3;
                let st = b.init_i64(&[1], &[1]);
                let en = b.init_i64(&[1], &[last - 1]);
                let ax = b.init_i64(&[1], &[r_ as i64 - 1]);
                x = b.node("Slice", &[&x, &st, &en, &ax], vec![]);
                shape[r_ - 1] = last - 2;
                desc.push("Pad+Slice".into());
            }
            14 => {
                // Transpose the last two axes (or a no-op for 2-D batch-first) and concat.
                let r_ = shape.len();
                let mut perm: Vec<i64> = (0..r_ as i64).collect();
                perm.swap(r_ - 1, r_ - 2);
                x = b.node("Transpose", &[&x], vec![attr_ints("perm", &perm)]);
                shape.swap(r_ - 1, r_ - 2);
                let y = b.node("Neg", &[&x], vec![]);
                x = b.node("Concat", &[&x, &y], vec![attr_int("axis", r_ as i64 - 1)]);
                shape[r_ - 1] *= 2;
                desc.push("Transpose+Concat".into());
            }
            15 => {
                let c = b.init(&[], &[r.range(-2.0, 2.0) as f32]);
                x = b.node("Mul", &[&x, &c], vec![]);
                let y = b.node("Relu", &[&x], vec![]);
                x = b.node("Mul", &[&x, &y], vec![]);
                desc.push("Mul const, Mul var".into());
            }
            16 => {
                let name = FUNCS[r.int(0, FUNCS.len() - 1)];
                x = add_func(&mut b, &mut r, &x, name);
                desc.push(name.into());
            }
            17 => {
                // Softmax or LogSoftmax over the last axis.
                let op = if r.unit() < 0.7 {
                    "Softmax"
                } else {
                    "LogSoftmax"
                };
                x = b.node(op, &[&x], vec![attr_int("axis", -1)]);
                desc.push(op.into());
            }
            18 => {
                // A reduction over the last axis, kept as size 1.
                let ops = ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceMean"];
                let op = ops[r.int(0, 3)];
                let r_ = shape.len() as i64;
                x = if op == "ReduceSum" {
                    // Since opset 13 ReduceSum takes its axes as an input.
                    let ax = b.init_i64(&[1], &[r_ - 1]);
                    b.node(op, &[&x, &ax], vec![attr_int("keepdims", 1)])
                } else {
                    b.node(
                        op,
                        &[&x],
                        vec![attr_ints("axes", &[r_ - 1]), attr_int("keepdims", 1)],
                    )
                };
                let last = shape.len() - 1;
                shape[last] = 1;
                desc.push(op.into());
            }
            19 if is4 => {
                let (c, h, w) = (shape[1], shape[2], shape[3]);
                let m = r.int(1, 3) as i64;
                let s_ = r.int(1, 2) as i64;
                let k = r.int(1, 3) as i64;
                let wt = b.init(&[c, m, k, k], &r.vec((c * m * k * k) as usize, scale / 2.0));
                x = b.node(
                    "ConvTranspose",
                    &[&x, &wt],
                    vec![
                        attr_ints("strides", &[s_, s_]),
                        attr_ints("pads", &[0, 0, 0, 0]),
                    ],
                );
                shape = vec![1, m, (h - 1) * s_ + k, (w - 1) * s_ + k];
                desc.push(format!("ConvTranspose {c}->{m} k{k} s{s_}"));
            }
            20 if is4 => {
                let mode = if r.unit() < 0.5 { "nearest" } else { "linear" };
                let sc = b.init(&[4], &[1.0, 1.0, 2.0, 1.5]);
                let roi = b.init(&[0], &[]);
                x = b.node("Resize", &[&x, &roi, &sc], vec![attr_str("mode", mode)]);
                shape = vec![shape[0], shape[1], shape[2] * 2, shape[3] * 3 / 2];
                desc.push(format!("Resize {mode}"));
            }
            21 if !is4 => {
                // x^T-like product of two network values: [1, d] @ [d, 1] = [1, 1], doubled
                // back out by a dense layer later.
                let (a, d) = (shape[0], shape[1]);
                let t = b.node("Transpose", &[&x], vec![attr_ints("perm", &[1, 0])]);
                x = b.node("MatMul", &[&x, &t], vec![]);
                shape = vec![a, a];
                desc.push(format!("MatMul var-var ({a} x {d})"));
            }
            22 if shape[shape.len() - 1] >= 2 => {
                // Split the last axis in two and swap the halves.
                let r_ = shape.len();
                let n = shape[r_ - 1];
                let sp = b.init_i64(&[2], &[n / 2, n - n / 2]);
                let (a, c) = (format!("{x}_a"), format!("{x}_b"));
                b.node_to(
                    "Split",
                    &[&x, &sp],
                    &[&a, &c],
                    vec![attr_int("axis", r_ as i64 - 1)],
                );
                x = b.node("Concat", &[&c, &a], vec![attr_int("axis", r_ as i64 - 1)]);
                desc.push("Split+Concat".into());
            }
            23 if shape[shape.len() - 1] >= 2 => {
                let n = shape[shape.len() - 1];
                let g = b.init(&[n], &r.vec(n as usize, 1.5));
                let bb = b.init(&[n], &r.vec(n as usize, 1.0));
                x = b.node(
                    "LayerNormalization",
                    &[&x, &g, &bb],
                    vec![attr_int("axis", -1)],
                );
                desc.push("LayerNorm".into());
            }
            24 => {
                // Tile the last axis twice, or expand a leading 1 to 2 and fold it back.
                let r_ = shape.len();
                let mut reps = vec![1i64; r_];
                reps[r_ - 1] = 2;
                let rp = b.init_i64(&[r_ as i64], &reps);
                x = b.node("Tile", &[&x, &rp], vec![]);
                shape[r_ - 1] *= 2;
                desc.push("Tile".into());
            }
            _ => {}
        }
    }
    if shape.len() != 2 || shape[0] != 1 {
        let numel: i64 = shape.iter().product();
        let s = b.init_i64(&[2], &[1, numel]);
        x = b.node("Reshape", &[&x, &s], vec![]);
    }
    // Always end with a dense layer so every network has an affine output.
    let din: i64 = shape.iter().product();
    let dout = r.int(1, 4) as i64;
    let w = b.init(&[dout, din], &r.vec((din * dout) as usize, 1.0));
    x = b.node("Gemm", &[&x, &w], vec![attr_int("transB", 1)]);
    desc.push(format!("Gemm {din}->{dout}"));
    (b.finish(&x), desc.join(" | "))
}

/// Import a built model.
pub fn import(m: &onnx_protobuf::ModelProto) -> Graph {
    onnx::import(m, Path::new("."))
        .unwrap_or_else(|e| panic!("generated model failed to import: {e}"))
}

/// Runs `cases` proptest cases over random dense/ReLU stacks that end in a
/// dense layer, each with a seed, an epsilon pick (0..3) and one extra value
/// drawn from `extra`; `check` gets `(kinds, seed, eps_pick, extra)`.
pub fn run_dense_relu_cases<S: proptest::strategy::Strategy>(
    cases: u32,
    extra: S,
    check: impl Fn(&[u8], u64, usize, S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    // No source file to persist failures beside: a failure prints its case.
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        proptest::collection::vec(prop_oneof![Just(0u8), Just(2u8)], 2..7),
        any::<u64>(),
        0usize..3,
        extra,
    );
    runner
        .run(&strategy, |(body, seed, eps_pick, x)| {
            let mut kinds = body;
            kinds.push(0);
            check(&kinds, seed, eps_pick, x)
        })
        .unwrap();
}

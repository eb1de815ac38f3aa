//! Reverse mode against central finite differences, for every IR operator family, on the graph
//! as deployed (`exec`) and on the folded analysis graph, in f64; and f32 against f64.
//!
//! Each case names the families it must exercise and the test fails if the imported graph does
//! not contain them, so a lowering change cannot make a case vacuous.

mod common;

use common::netgen::Rng;
use ferrocert::eval::{self, grad};
use ferrocert::ir::Graph;
use ferrocert::onnx::build::{ModelBuilder, attr_float, attr_int, attr_ints};

fn import(b: ModelBuilder, out: &str) -> Graph {
    ferrocert::onnx::import(&b.finish(out), std::path::Path::new(".")).expect("import")
}

fn families(g: &Graph) -> Vec<&'static str> {
    g.nodes.iter().map(|n| n.op.family()).collect()
}

/// Check `d/dx sum_s w_s . f(x_s)` against central differences at a few random points.
fn check(name: &str, g: &Graph, must_have: &[&str], seed: u64) {
    let fams = families(g);
    for f in must_have {
        assert!(
            fams.contains(f),
            "{name}: graph lacks {f} (has {fams:?}); the case no longer tests it"
        );
    }
    let (ni, no) = (g.input_numel(), g.output_numel());
    let mut r = Rng(seed);
    let batch = 3;
    let x: Vec<f64> = (0..batch * ni).map(|_| r.range(-1.0, 1.0)).collect();
    let w: Vec<f64> = (0..batch * no).map(|_| r.range(-1.0, 1.0)).collect();
    let vals = eval::forward_values::<f64>(g, &x, batch).expect("forward");
    let grad = grad::input_gradient(g, &vals, g.output, w.clone(), batch);
    assert_eq!(grad.len(), batch * ni);
    let f = |x: &[f64]| -> f64 {
        let y = eval::forward::<f64>(g, x, batch).expect("forward");
        y.iter().zip(&w).map(|(a, b)| a * b).sum()
    };
    let h = 1e-6;
    let mut worst = 0.0f64;
    for k in 0..batch * ni {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[k] += h;
        xm[k] -= h;
        let fd = (f(&xp) - f(&xm)) / (2.0 * h);
        let err = (fd - grad[k]).abs() / (1.0 + fd.abs());
        worst = worst.max(err);
        assert!(
            err < 1e-5,
            "{name}: d/dx{k}: reverse mode {} vs finite difference {fd}",
            grad[k]
        );
    }
    // The f32 reverse mode agrees with f64 to float32 accuracy.
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let vals32 = eval::forward_values::<f32>(g, &x32, batch).expect("forward");
    let grad32 = grad::input_gradient(g, &vals32, g.output, w32, batch);
    let scale = grad.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (k, (&a, &b)) in grad.iter().zip(&grad32).enumerate() {
        assert!(
            (a - b as f64).abs() < 1e-3 * scale,
            "{name}: f32 gradient {b} vs f64 {a} at {k}"
        );
    }
    assert!(worst.is_finite());
}

/// Both graphs of a model: the deployed one and the folded analysis graph.
fn check_both(name: &str, b: ModelBuilder, out: &str, exec_has: &[&str], seed: u64) {
    let g = import(b, out);
    check(name, &g, exec_has, seed);
    let a = ferrocert::ir::passes::simplify(g);
    check(&format!("{name} (analysis graph)"), &a, &[], seed + 1);
}

fn dense(b: &mut ModelBuilder, r: &mut Rng, x: &str, din: i64, dout: i64) -> String {
    let w = b.init(&[dout, din], &r.vec((din * dout) as usize, 1.0));
    let bias = b.init(&[dout], &r.vec(dout as usize, 0.5));
    b.node("Gemm", &[x, &w, &bias], vec![attr_int("transB", 1)])
}

#[test]
fn linear_gemm_and_matmul() {
    let mut r = Rng(1);
    let mut b = ModelBuilder::new(&[1, 5], 13);
    let h = dense(&mut b, &mut r, "input", 5, 4);
    let w = b.init(&[4, 3], &r.vec(12, 1.0));
    let y = b.node("MatMul", &[&h, &w], vec![]);
    check_both("Gemm+MatMul", b, &y, &["Linear"], 10);
    // MatMul on a 3-D value contracts the middle axis (inner > 1 after import).
    let mut b = ModelBuilder::new(&[1, 2, 3], 13);
    let w = b.init(&[4, 2], &r.vec(8, 1.0));
    let y = b.node("MatMul", &[&w, "input"], vec![]);
    check_both("W @ x", b, &y, &["Linear"], 11);
}

#[test]
fn conv_with_groups_strides_pads_dilations() {
    let mut r = Rng(2);
    let mut b = ModelBuilder::new(&[1, 4, 7, 6], 13);
    let w = b.init(&[6, 2, 3, 2], &r.vec(72, 0.7));
    let bias = b.init(&[6], &r.vec(6, 0.3));
    let y = b.node(
        "Conv",
        &["input", &w, &bias],
        vec![
            attr_int("group", 2),
            attr_ints("strides", &[2, 1]),
            attr_ints("pads", &[1, 0, 2, 1]),
            attr_ints("dilations", &[1, 2]),
        ],
    );
    check_both("Conv", b, &y, &["Conv"], 20);
}

#[test]
fn pooling() {
    for (op, fam) in [("MaxPool", "MaxPool"), ("AveragePool", "AveragePool")] {
        for include_pad in [0, 1] {
            let mut b = ModelBuilder::new(&[1, 2, 5, 5], 13);
            let mut attrs = vec![
                attr_ints("kernel_shape", &[3, 2]),
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 0]),
            ];
            if op == "AveragePool" {
                attrs.push(attr_int("count_include_pad", include_pad));
            }
            let y = b.node(op, &["input"], attrs);
            check_both(&format!("{op} pad {include_pad}"), b, &y, &[fam], 30);
        }
    }
    let mut b = ModelBuilder::new(&[1, 3, 4, 4], 13);
    let y = b.node("GlobalAveragePool", &["input"], vec![]);
    let y = b.node("Flatten", &[&y], vec![]);
    let mut b2 = ModelBuilder::new(&[1, 3, 4, 4], 13);
    let z = b2.node("GlobalMaxPool", &["input"], vec![]);
    check_both("GlobalAveragePool", b, &y, &["AveragePool"], 31);
    check_both("GlobalMaxPool", b2, &z, &["MaxPool"], 32);
}

#[test]
fn affine_by_constants() {
    let mut r = Rng(4);
    let mut b = ModelBuilder::new(&[1, 6], 13);
    let m = b.init(&[6], &r.vec(6, 1.0));
    let s = b.init(&[6], &[0.5, 2.0, -1.5, 0.25, 3.0, -0.7]);
    let x = b.node("Sub", &["input", &m], vec![]);
    let x = b.node("Div", &[&x, &s], vec![]);
    let c = b.init(&[], &[1.7]);
    let x = b.node("Mul", &[&x, &c], vec![]);
    let y = b.node("Neg", &[&x], vec![]);
    check_both("Affine", b, &y, &["Affine"], 40);
    // BatchNormalization lowers to an Affine too.
    let mut b = ModelBuilder::new(&[1, 2, 3, 3], 13);
    let sc = b.init(&[2], &[1.5, -0.5]);
    let bb = b.init(&[2], &[0.1, 0.2]);
    let mean = b.init(&[2], &[0.3, -0.4]);
    let var = b.init(&[2], &[0.5, 2.0]);
    let y = b.node(
        "BatchNormalization",
        &["input", &sc, &bb, &mean, &var],
        vec![],
    );
    check_both("BatchNorm", b, &y, &["Affine"], 41);
}

#[test]
fn binary_of_two_network_values_with_broadcasting() {
    for (op, fam) in [
        ("Add", "Add"),
        ("Sub", "Sub"),
        ("Mul", "Mul"),
        ("Div", "Div"),
    ] {
        let mut r = Rng(5);
        let mut b = ModelBuilder::new(&[1, 2, 3], 13);
        // A second operand of shape [1, 1, 3] (broadcast over the middle axis).
        let red = b.init(&[3, 3], &r.vec(9, 1.0));
        let h = b.node("MatMul", &["input", &red], vec![]);
        let sl_s = b.init_i64(&[1], &[0]);
        let sl_e = b.init_i64(&[1], &[1]);
        let sl_a = b.init_i64(&[1], &[1]);
        let h = b.node("Slice", &[&h, &sl_s, &sl_e, &sl_a], vec![]);
        // Keep the divisor away from zero: 1.5 + sigmoid(h) lies in (1.5, 2.5).
        let h = if op == "Div" {
            let s = b.node("Sigmoid", &[&h], vec![]);
            let c = b.init(&[], &[1.5]);
            b.node("Add", &[&s, &c], vec![])
        } else {
            h
        };
        let y = b.node(op, &["input", &h], vec![]);
        check_both(op, b, &y, &[fam], 50);
    }
}

#[test]
fn every_activation() {
    let mut r = Rng(6);
    let acts: [(&str, Vec<_>, &str); 4] = [
        ("Relu", vec![], "Relu"),
        ("LeakyRelu", vec![attr_float("alpha", 0.15)], "LeakyRelu"),
        ("Sigmoid", vec![], "Sigmoid"),
        ("Tanh", vec![], "Tanh"),
    ];
    for (op, attrs, fam) in acts {
        let mut b = ModelBuilder::new(&[1, 4], 13);
        let h = dense(&mut b, &mut r, "input", 4, 6);
        let h = b.node(op, &[&h], attrs);
        let y = dense(&mut b, &mut r, &h, 6, 3);
        check_both(op, b, &y, &["Linear", fam], 60);
    }
}

#[test]
fn every_elementwise_function() {
    for (i, name) in common::netgen::FUNCS.iter().enumerate() {
        let mut r = Rng(100 + i as u64);
        let mut b = ModelBuilder::new(&[1, 5], 13);
        let h = dense(&mut b, &mut r, "input", 5, 6);
        let h = common::netgen::add_func(&mut b, &mut r, &h, name);
        let y = dense(&mut b, &mut r, &h, 6, 2);
        // Steps (Floor, Round, ...) have zero derivative, which the differences confirm away
        // from the jumps.
        check_both(name, b, &y, &["Linear"], 90 + i as u64);
    }
}

#[test]
fn structural_operators_through_their_lowerings() {
    use ferrocert::onnx::build::attr_str;
    let mut r = Rng(8);
    // (name, input shape, builder) for each lowering.
    let mut cases: Vec<(
        &str,
        Vec<i64>,
        Box<dyn Fn(&mut ModelBuilder, &mut Rng) -> String>,
    )> = Vec::new();
    cases.push((
        "Softmax",
        vec![1, 6],
        Box::new(|b, _| b.node("Softmax", &["input"], vec![attr_int("axis", -1)])),
    ));
    cases.push((
        "LogSoftmax",
        vec![1, 2, 5],
        Box::new(|b, _| b.node("LogSoftmax", &["input"], vec![attr_int("axis", -1)])),
    ));
    cases.push((
        "ReduceMean+Max+Min",
        vec![1, 3, 4],
        Box::new(|b, _| {
            let a = b.node("ReduceMean", &["input"], vec![attr_ints("axes", &[2])]);
            let m = b.node("ReduceMax", &["input"], vec![attr_ints("axes", &[1])]);
            let n = b.node("ReduceMin", &["input"], vec![attr_ints("axes", &[1, 2])]);
            let s = b.node("Add", &[&a, &m], vec![]);
            let f = b.node("Flatten", &[&s], vec![]);
            let nf = b.node("Flatten", &[&n], vec![]);
            b.node("Concat", &[&f, &nf], vec![attr_int("axis", 1)])
        }),
    ));
    cases.push((
        "LayerNormalization",
        vec![1, 2, 5],
        Box::new(|b, r| {
            let g = b.init(&[5], &r.vec(5, 1.5));
            let bb = b.init(&[5], &r.vec(5, 1.0));
            b.node(
                "LayerNormalization",
                &["input", &g, &bb],
                vec![attr_int("axis", -1)],
            )
        }),
    ));
    cases.push((
        "ConvTranspose",
        vec![1, 2, 3, 3],
        Box::new(|b, r| {
            let w = b.init(&[2, 3, 2, 3], &r.vec(36, 0.7));
            b.node(
                "ConvTranspose",
                &["input", &w],
                vec![
                    attr_ints("strides", &[2, 1]),
                    attr_ints("pads", &[1, 0, 0, 1]),
                ],
            )
        }),
    ));
    cases.push((
        "Resize linear",
        vec![1, 1, 3, 4],
        Box::new(|b, _| {
            let roi = b.init(&[0], &[]);
            let sc = b.init(&[4], &[1.0, 1.0, 2.0, 1.5]);
            b.node(
                "Resize",
                &["input", &roi, &sc],
                vec![attr_str("mode", "linear")],
            )
        }),
    ));
    cases.push((
        "MatMul of two network values",
        vec![1, 3, 4],
        Box::new(|b, _| {
            let t = b.node("Transpose", &["input"], vec![attr_ints("perm", &[0, 2, 1])]);
            b.node("MatMul", &["input", &t], vec![])
        }),
    ));
    cases.push((
        "Split+Tile+Expand+Where",
        vec![1, 4],
        Box::new(|b, _| {
            let sp = b.init_i64(&[2], &[1, 3]);
            b.node_to(
                "Split",
                &["input", &sp],
                &["sa", "sb"],
                vec![attr_int("axis", 1)],
            );
            let rp = b.init_i64(&[2], &[1, 3]);
            let t = b.node("Tile", &["sa", &rp], vec![]);
            let shape = b.init_i64(&[2], &[1, 3]);
            let e = b.node("Expand", &[&t, &shape], vec![]);
            let c = b.init(&[3], &[1.0, 0.0, 1.0]);
            let z = b.init(&[3], &[0.5, 0.5, 0.5]);
            let cond = b.node("Greater", &[&c, &z], vec![]);
            b.node("Where", &[&cond, &e, "sb"], vec![])
        }),
    ));
    for (i, (name, shape, build)) in cases.iter().enumerate() {
        let mut b = ModelBuilder::new(shape, 17);
        let y = build(&mut b, &mut r);
        let y = b.node("Flatten", &[&y], vec![]);
        let g = import(b, &y);
        check(name, &g, &[], 200 + i as u64);
        let a = ferrocert::ir::passes::simplify(g);
        check(&format!("{name} (analysis)"), &a, &[], 300 + i as u64);
    }
}

#[test]
fn selections_views_and_constants() {
    let mut r = Rng(7);
    let mut b = ModelBuilder::new(&[1, 2, 3, 4], 13);
    let x = b.node(
        "Transpose",
        &["input"],
        vec![attr_ints("perm", &[0, 3, 1, 2])],
    );
    let p = b.init_i64(&[8], &[0, 0, 1, 0, 0, 1, 0, 2]);
    let v = b.init(&[], &[0.25]);
    let x = b.node("Pad", &[&x, &p, &v], vec![]);
    let st = b.init_i64(&[2], &[1, 0]);
    let en = b.init_i64(&[2], &[4, 5]);
    let ax = b.init_i64(&[2], &[2, 3]);
    let sp = b.init_i64(&[2], &[1, 2]);
    let x = b.node("Slice", &[&x, &st, &en, &ax, &sp], vec![]);
    let idx = b.init_i64(&[3], &[2, 0, 2]);
    let x = b.node("Gather", &[&x, &idx], vec![attr_int("axis", 1)]);
    let x = b.node("Flatten", &[&x], vec![]);
    // Concat with a constant materialises a Const node.
    let c = b.init(&[1, 3], &r.vec(3, 1.0));
    let x = b.node("Concat", &[&x, &c, &x], vec![attr_int("axis", 1)]);
    let shape = b.init_i64(&[3], &[1, 3, -1]);
    let y = b.node("Reshape", &[&x, &shape], vec![]);
    check_both(
        "Select/Reshape/Const",
        b,
        &y,
        &["Select", "Reshape", "Const"],
        70,
    );
}

#[test]
fn a_deep_mixed_network_and_the_digits_models() {
    let (m, desc) =
        common::netgen::random_model(&[9, 2, 11, 12, 8, 14, 0, 5, 15, 6, 0], true, 1234);
    let g = common::netgen::import(&m);
    check(&format!("random network {desc}"), &g, &["Conv"], 80);
    for model in ["digits_mlp", "digits_cnn"] {
        let net = ferrocert::network::Network::load(&common::repo(&format!("models/{model}.onnx")))
            .expect("bundled model");
        check(model, &net.exec, &["Linear", "Relu"], 81);
        check(&format!("{model} (analysis)"), &net.analysis, &["Relu"], 82);
    }
}

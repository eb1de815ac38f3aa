//! Bad input of every kind: a clear error on stderr, exit code 2, never a panic.

mod common;

use ferrocert::onnx::build::{ModelBuilder, attr_int, tensor_f32, to_bytes};
use std::path::{Path, PathBuf};

const SPEC_2_1: &str = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n\
(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n(assert (>= Y_0 10))\n";

/// A valid 2 -> 3 -> 1 network.
fn good_model() -> ModelBuilder {
    let mut b = ModelBuilder::new(&[1, 2], 13);
    let w = b.init(&[3, 2], &[1.0, -1.0, 0.5, 0.25, -2.0, 1.0]);
    let h = b.node("Gemm", &["input", &w], vec![attr_int("transB", 1)]);
    let h = b.node("Relu", &[&h], vec![]);
    let w2 = b.init(&[1, 3], &[1.0, 1.0, 1.0]);
    b.node_to("Gemm", &[&h, &w2], &["out"], vec![attr_int("transB", 1)]);
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Assert a clean failure: exit 2, an `error:` line mentioning `needle`, no panic.
fn assert_error(args: &[&str], needle: &str) {
    let (code, _out, err) = common::ferrocert(args);
    assert_eq!(code, 2, "args {args:?}: exit {code}, stderr: {err}");
    assert!(err.starts_with("error:"), "args {args:?}: stderr {err}");
    assert!(!err.contains("panicked"), "args {args:?}: panic: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "args {args:?}: stderr lacks '{needle}': {err}"
    );
}

fn onnx_case(name: &str, bytes: &[u8], needle: &str) {
    let d = common::scratch(&format!("bad_{name}"));
    let m = write(&d, "m.onnx", bytes);
    let s = write(&d, "s.vnnlib", SPEC_2_1.as_bytes());
    let (m, s) = (m.to_str().unwrap(), s.to_str().unwrap());
    assert_error(&["inspect", m], needle);
    assert_error(&["bounds", m, s], needle);
    assert_error(&["verify", m, s], needle);
}

#[test]
fn the_good_model_works() {
    let d = common::scratch("bad_good");
    let m = write(&d, "m.onnx", &to_bytes(&good_model().finish("out")));
    let s = write(&d, "s.vnnlib", SPEC_2_1.as_bytes());
    let (code, out, err) = common::ferrocert(&["verify", m.to_str().unwrap(), s.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("unsat\n"));
}

#[test]
fn truncated_onnx() {
    let bytes = to_bytes(&good_model().finish("out"));
    for cut in [1, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        onnx_case(&format!("trunc{cut}"), &bytes[..cut], "");
    }
}

#[test]
fn random_bytes_onnx() {
    let mut r = common::netgen::Rng(7);
    for i in 0..20 {
        let n = r.int(0, 4000);
        let bytes: Vec<u8> = (0..n).map(|_| r.next_u64() as u8).collect();
        onnx_case(&format!("rand{i}"), &bytes, "");
    }
}

#[test]
fn graph_with_a_cycle() {
    let mut b = ModelBuilder::new(&[1, 2], 13);
    b.node_to("Relu", &["input_plus"], &["a"], vec![]);
    b.node_to("Add", &["input", "a"], &["input_plus"], vec![]);
    onnx_case("cycle", &to_bytes(&b.finish("a")), "cycle");
}

#[test]
fn dangling_input() {
    let mut b = ModelBuilder::new(&[1, 2], 13);
    b.node_to("Add", &["input", "nowhere"], &["a"], vec![]);
    onnx_case("dangling", &to_bytes(&b.finish("a")), "nowhere");
}

#[test]
fn nan_and_inf_weights() {
    for (name, v) in [("nan", f32::NAN), ("inf", f32::INFINITY)] {
        let mut b = good_model();
        b.init_tensor(tensor_f32("bad_w", &[1, 1], &[v]));
        let x = b.node("Mul", &["out", "bad_w"], vec![]);
        onnx_case(name, &to_bytes(&b.finish(&x)), "non-finite");
    }
}

#[test]
fn declared_shape_does_not_match_data() {
    let mut b = good_model();
    let mut t = tensor_f32("short", &[2, 2], &[1.0, 2.0, 3.0]);
    t.dims = vec![2, 2];
    b.init_tensor(t);
    let x = b.node("Mul", &["out", "short"], vec![]);
    onnx_case("shape_data", &to_bytes(&b.finish(&x)), "bytes");
}

#[test]
fn absurd_sizes_are_refused_before_allocating() {
    // A 10^12-element initializer declared without data.
    let mut b = good_model();
    let mut t = tensor_f32("huge", &[], &[]);
    t.dims = vec![1_000_000, 1_000_000];
    b.init_tensor(t);
    let x = b.node("Mul", &["out", "huge"], vec![]);
    onnx_case("huge_init", &to_bytes(&b.finish(&x)), "elements");
    // A 10^12-element network input.
    let mut b = ModelBuilder::new(&[1, 1_000_000_000_000], 13);
    let x = b.node("Relu", &["input"], vec![]);
    onnx_case("huge_input", &to_bytes(&b.finish(&x)), "elements");
    // A reshape to an absurd shape.
    let mut b = good_model();
    let s = b.init_i64(&[2], &[1_000_000_000, 1_000_000_000]);
    let x = b.node("Reshape", &["out", &s], vec![]);
    onnx_case("huge_reshape", &to_bytes(&b.finish(&x)), "reshape");
}

#[test]
fn every_unsupported_operator_is_listed_at_once() {
    let mut b = ModelBuilder::new(&[1, 2], 13);
    let x = b.node("Hardmax", &["input"], vec![]);
    let x = b.node("Relu", &[&x], vec![]);
    let x = b.node("Einsum", &[&x], vec![]);
    let (code, _, err) = {
        let d = common::scratch("bad_unsupported");
        let m = write(&d, "m.onnx", &to_bytes(&b.finish(&x)));
        common::ferrocert(&["inspect", m.to_str().unwrap()])
    };
    assert_eq!(code, 2);
    assert!(err.contains("2 unsupported operator(s)"), "{err}");
    assert!(
        err.contains("Hardmax (node 'Hardmax_0'") && err.contains("Einsum (node 'Einsum_2'"),
        "{err}"
    );
    assert!(err.contains("opset 13"), "{err}");
}

#[test]
fn operator_shape_mismatch() {
    let mut b = ModelBuilder::new(&[1, 2], 13);
    let w = b.init(&[3, 5], &[0.0; 15]);
    let x = b.node("Gemm", &["input", &w], vec![attr_int("transB", 1)]);
    onnx_case("gemm_shape", &to_bytes(&b.finish(&x)), "inner dimensions");
}

#[test]
fn missing_files() {
    assert_error(&["inspect", "/nonexistent/model.onnx"], "cannot read");
    let d = common::scratch("bad_missing");
    let m = write(&d, "m.onnx", &to_bytes(&good_model().finish("out")));
    assert_error(
        &["verify", m.to_str().unwrap(), "/nonexistent/spec.vnnlib"],
        "cannot read",
    );
}

fn spec_case(name: &str, spec: &str, needle: &str) {
    let d = common::scratch(&format!("badspec_{name}"));
    let m = write(&d, "m.onnx", &to_bytes(&good_model().finish("out")));
    let s = write(&d, "s.vnnlib", spec.as_bytes());
    let (m, s) = (m.to_str().unwrap(), s.to_str().unwrap());
    assert_error(&["bounds", m, s], needle);
    assert_error(&["verify", m, s], needle);
}

#[test]
fn vnnlib_errors_name_line_and_column() {
    spec_case(
        "unknown_var",
        "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(assert (<= X_2 1))\n",
        "s.vnnlib:4:13",
    );
    spec_case(
        "syntax",
        "(declare-const X_0 Real)\n(assert (<= X_0 1)\n",
        "s.vnnlib:3:1",
    );
    spec_case(
        "bad_token",
        "(declare-const X_0 Real)\n(assert (<== X_0 1))\n",
        "s.vnnlib:2:10",
    );
    spec_case(
        "bad_number",
        "(declare-const X_0 Real)\n(assert (<= X_0 1.2.3))\n",
        "2:17",
    );
}

#[test]
fn spec_variable_counts_must_match_the_network() {
    let three_inputs = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const X_2 Real)\n(declare-const Y_0 Real)\n\
        (assert (>= X_0 0))(assert (<= X_0 1))(assert (>= X_1 0))(assert (<= X_1 1))(assert (>= X_2 0))(assert (<= X_2 1))(assert (>= Y_0 1))";
    spec_case("inputs", three_inputs, "3 input variables, the network 2");
    let two_outputs = SPEC_2_1.replace(
        "(declare-const Y_0 Real)",
        "(declare-const Y_0 Real)\n(declare-const Y_1 Real)",
    );
    spec_case("outputs", &two_outputs, "2 output variables, the network 1");
}

#[test]
fn bad_cli_values() {
    let d = common::scratch("bad_cli");
    let m = write(&d, "m.onnx", &to_bytes(&good_model().finish("out")));
    let s = write(&d, "s.vnnlib", SPEC_2_1.as_bytes());
    assert_error(
        &[
            "verify",
            m.to_str().unwrap(),
            s.to_str().unwrap(),
            "--timeout=-1",
        ],
        "timeout",
    );
    let (code, _, _) = common::ferrocert(&["bounds", "--method", "nonsense", "a", "b"]);
    assert_eq!(code, 2);
}

/// `inspect` on a one-node model over a [1, 2, 4, 4] input fails cleanly, naming `needle`.
fn geometry_case(name: &str, build: impl FnOnce(&mut ModelBuilder) -> String, needle: &str) {
    let mut b = ModelBuilder::new(&[1, 2, 4, 4], 13);
    let out = build(&mut b);
    let d = common::scratch(&format!("bad_attr_{name}"));
    let m = write(&d, "m.onnx", &to_bytes(&b.finish(&out)));
    assert_error(&["inspect", m.to_str().unwrap()], needle);
}

#[test]
fn attribute_arithmetic_is_checked() {
    use ferrocert::onnx::build::attr_ints;
    let big = i64::MAX;
    let conv = |b: &mut ModelBuilder, attrs| {
        let w = b.init(&[2, 2, 1, 1], &[1.0; 4]);
        b.node("Conv", &["input", &w], attrs)
    };
    // group * channels: 3 channels per group times 0x5555555555555556 groups is 2 modulo 2^64,
    // the input's channel count, so an unchecked product accepts it (with no output channels).
    geometry_case(
        "group",
        |b| {
            let w = b.init(&[0, 3, 1, 1], &[]);
            b.node(
                "Conv",
                &["input", &w],
                vec![attr_int("group", 0x5555_5555_5555_5556)],
            )
        },
        "channels",
    );
    for (name, attrs) in [
        ("pads", vec![attr_ints("pads", &[big, big, big, big])]),
        (
            "pads_sum",
            vec![attr_ints("pads", &[1 << 62, 1 << 62, 0, 0])],
        ),
        ("dilations", vec![attr_ints("dilations", &[1 << 40, 1])]),
        ("strides", vec![attr_ints("strides", &[big, 1])]),
        ("negative_stride", vec![attr_ints("strides", &[-1, 1])]),
    ] {
        let what = name.split('_').next().unwrap().to_string();
        geometry_case(name, |b| conv(b, attrs), &what);
    }
    // A dilated kernel that no longer fits: a shape error, not an underflow.
    geometry_case(
        "dilated_kernel",
        |b| {
            let w = b.init(&[2, 2, 2, 2], &[1.0; 16]);
            b.node(
                "Conv",
                &["input", &w],
                vec![attr_ints("dilations", &[1 << 30, 1])],
            )
        },
        "dilations",
    );
    geometry_case(
        "pool_kernel",
        |b| {
            b.node(
                "MaxPool",
                &["input"],
                vec![attr_ints("kernel_shape", &[big, 1])],
            )
        },
        "kernel",
    );
    geometry_case(
        "pad_overflow",
        |b| {
            let p = b.init_i64(&[8], &[0, 0, big, 0, 0, 0, big, 0]);
            b.node("Pad", &["input", &p], vec![])
        },
        "pads",
    );
    geometry_case(
        "split_outputs",
        |b| {
            b.node(
                "Split",
                &["input"],
                vec![attr_int("axis", 1), attr_int("num_outputs", 1 << 60)],
            )
        },
        "num_outputs",
    );
    geometry_case(
        "split_sizes",
        |b| {
            let s = b.init_i64(&[3], &[2, 1 << 62, 1 << 62]);
            b.node("Split", &["input", &s], vec![attr_int("axis", 1)])
        },
        "elements",
    );
    geometry_case(
        "empty_but_huge",
        |b| {
            let s = b.init_i64(&[4], &[0, 1 << 40, 1 << 40, 1]);
            b.node("Reshape", &["input", &s], vec![])
        },
        "reshape",
    );
    geometry_case(
        "resize_sizes",
        |b| {
            let sizes = b.init_i64(&[4], &[1, 2, -4, 4]);
            b.node("Resize", &["input", "", "", &sizes], vec![])
        },
        "resize",
    );
}

#[test]
fn extreme_slice_steps_select_what_onnx_says() {
    // steps of i64::MIN from the last element take exactly one element (the last one); a step
    // of i64::MAX from the first takes the first. Counting them in i64 would overflow.
    for (start, end, step, want) in [
        (-1i64, i64::MIN, i64::MIN, 3.0f32),
        (0, i64::MAX, i64::MAX, 0.0),
    ] {
        let mut b = ModelBuilder::new(&[1, 4], 13);
        let s = b.init_i64(&[1], &[start]);
        let e = b.init_i64(&[1], &[end]);
        let a = b.init_i64(&[1], &[1]);
        let st = b.init_i64(&[1], &[step]);
        let x = b.node("Slice", &["input", &s, &e, &a, &st], vec![]);
        let d = common::scratch(&format!("slice_{step}"));
        let m = write(&d, "m.onnx", &to_bytes(&b.finish(&x)));
        let net = ferrocert::network::Network::load(&m).expect("imports");
        let y = ferrocert::eval::forward::<f32>(&net.exec, &[0.0, 1.0, 2.0, 3.0], 1).unwrap();
        assert_eq!(y, vec![want], "start {start} end {end} step {step}");
    }
}

//! A network built to fool real-arithmetic verifiers (Jia & Rinard, 2021): large cancelling
//! weights make the float32 network output -1 where real arithmetic says 0. A verifier that
//! bounds the real function certifies the false property "y > -0.5"; ferrocert must not.

mod common;

use ferrocert::bounds::{self, BoundOptions, Method, Objective};
use ferrocert::domain::{FpMode, Intervals};
use ferrocert::eval;
use ferrocert::network::Network;
use ferrocert::onnx::build::{ModelBuilder, attr_int, to_bytes};
use ferrocert::spec;
use ferrocert::verify::{self, VerifyOptions};

/// y = relu(1e8 x + 1) - relu(1e8 x) - 1: exactly 0 in real arithmetic for x >= 0, but
/// 1e8 + 1 rounds to 1e8 in float32, so the deployed network can output -1.
fn cancelling_model(tag: &str) -> Network {
    let mut b = ModelBuilder::new(&[1, 1], 13);
    let w1 = b.init(&[2, 1], &[1e8, 1e8]);
    let b1 = b.init(&[2], &[1.0, 0.0]);
    let h = b.node("Gemm", &["input", &w1, &b1], vec![attr_int("transB", 1)]);
    let h = b.node("Relu", &[&h], vec![]);
    let w2 = b.init(&[1, 2], &[1.0, -1.0]);
    let b2 = b.init(&[1], &[-1.0]);
    let y = b.node("Gemm", &[&h, &w2, &b2], vec![attr_int("transB", 1)]);
    let d = common::scratch(&format!("fp_cancel_{tag}"));
    let p = d.join("cancel.onnx");
    std::fs::write(&p, to_bytes(&b.finish(&y))).unwrap();
    Network::load(&p).unwrap()
}

const SPEC: &str = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (>= X_0 0.5))\n(assert (<= X_0 1.0))\n(assert (<= Y_0 -0.5))\n";

#[test]
fn float32_network_really_outputs_minus_one() {
    let net = cancelling_model("eval");
    let y = eval::forward::<f32>(&net.exec, &[1.0f32], 1).unwrap();
    let y64 = eval::forward::<f64>(&net.exec, &[1.0f64], 1).unwrap();
    assert_eq!(y64[0], 0.0, "real-valued network is exactly 0");
    // Depending on the summation order the float32 result is -1 or 0; onnxruntime's order
    // gives -1. Either way it is not the real value everywhere.
    assert!(y[0] == -1.0 || y[0] == 0.0, "{}", y[0]);
}

#[test]
fn real_arithmetic_bounds_are_fooled_but_deployed_bounds_are_not() {
    let net = cancelling_model("bounds");
    let sp = spec::parse_str(SPEC).unwrap();
    let r = &sp.regions[0];
    let obj = [Objective {
        domain: 0,
        coeffs: vec![(0, 1.0)],
    }];
    for method in [Method::Ibp, Method::Crown, Method::AlphaCrown] {
        let real = BoundOptions {
            method,
            mode: FpMode::Real,
            ..Default::default()
        };
        let dep = BoundOptions {
            method,
            mode: FpMode::Deployed,
            ..Default::default()
        };
        let input = || Intervals::new(r.lower.clone(), r.upper.clone());
        let lr = bounds::objective_lower(&net.analysis, input(), 1, &obj, &real)[0];
        let ld = bounds::objective_lower(&net.analysis, input(), 1, &obj, &dep)[0];
        // Real-arithmetic CROWN proves y >= 0 (a false certificate for the float32 network)...
        if method != Method::Ibp {
            assert!(lr > -0.5, "{method:?}: real-mode bound {lr}");
        }
        // ...the deployed-mode bound admits the float32 output -1.
        assert!(
            ld <= -1.0,
            "{method:?}: deployed bound {ld} excludes the float32 output -1"
        );
    }
    let opts = VerifyOptions::default();
    let rep = verify::verify(&net, &sp, &opts).unwrap();
    assert_ne!(
        rep.verdict.word(),
        "unsat",
        "ferrocert certified a property the float32 network violates"
    );
    let real = VerifyOptions {
        fp_mode: FpMode::Real,
        ..VerifyOptions::incomplete(Method::AlphaCrown)
    };
    assert_eq!(
        verify::verify(&net, &sp, &real).unwrap().verdict.word(),
        "unsat",
        "real-arithmetic mode is the fooled baseline"
    );
}

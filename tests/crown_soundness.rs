//! Property tests: CROWN and alpha-CROWN bounds (outputs and random linear objectives) contain
//! every sampled float32 output of random networks (>= 10^4 samples per case); CROWN with IBP
//! intersection is never looser than IBP, and alpha-CROWN never looser than CROWN.

mod common;

use common::netgen::{self, Rng};
use ferrocert::bounds::{self, BoundOptions, Method, Objective, alpha::AlphaConfig};
use ferrocert::domain::{FpMode, Intervals};
use ferrocert::eval;
use ferrocert::ir::passes;
use proptest::prelude::*;

fn check(kinds: &[u8], conv: bool, seed: u64, eps_pick: usize) -> Result<(), TestCaseError> {
    let (model, desc) = netgen::random_model(kinds, conv, seed);
    check_model(&model, &desc, seed, eps_pick)
}

/// Every elementwise function inside random MLPs: dense, the function, dense, the function
/// again (of the function's own output), dense.
#[test]
fn crown_contains_samples_through_every_elementwise_function() {
    use ferrocert::onnx::build::{ModelBuilder, attr_int};
    let mut checked = 0;
    for (i, name) in netgen::FUNCS.iter().enumerate() {
        for rep in 0..4u64 {
            let seed = 1000 * i as u64 + rep;
            let mut r = Rng(seed);
            let mut b = ModelBuilder::new(&[1, 4], 13);
            let mut x = "input".to_string();
            let mut width = 4;
            for layer in 0..3 {
                let out = r.int(2, 6) as i64;
                let scale = [0.5, 1.0, 3.0][(seed as usize + layer) % 3];
                let w = b.init(&[out, width], &r.vec((out * width) as usize, scale));
                let bias = b.init(&[out], &r.vec(out as usize, scale));
                x = b.node("Gemm", &[&x, &w, &bias], vec![attr_int("transB", 1)]);
                width = out;
                if layer < 2 {
                    x = netgen::add_func(&mut b, &mut r, &x, name);
                }
            }
            let desc = format!("{name} MLP #{rep}");
            check_model(&b.finish(&x), &desc, seed, rep as usize + 1)
                .unwrap_or_else(|e| panic!("{desc}: {e}"));
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * netgen::FUNCS.len());
}

/// CNNs with planes large enough that an intermediate bound's row stays inside a small box of
/// positions for a few layers (the boxes CROWN tracks, `transformers::backward::Support`):
/// strided, padded, dilated and grouped convolutions, pooling and a residual add, checked
/// against float32 samples like every other model.
#[test]
fn crown_contains_samples_of_cnns_with_local_rows() {
    use ferrocert::onnx::build::{ModelBuilder, attr_int, attr_ints};
    for seed in 0..6u64 {
        let mut r = Rng(seed);
        let mut b = ModelBuilder::new(&[1, 2, 14, 14], 13);
        let mut x = "input".to_string();
        let mut conv = |b: &mut ModelBuilder,
                        x: &str,
                        c: i64,
                        m: i64,
                        k: i64,
                        attrs: Vec<onnx_protobuf::AttributeProto>| {
            let w = b.init(&[m, c, k, k], &r.vec((m * c * k * k) as usize, 0.6));
            let bias = b.init(&[m], &r.vec(m as usize, 0.3));
            b.node("Conv", &[x, &w, &bias], attrs)
        };
        let p1 = attr_ints("pads", &[1, 1, 1, 1]);
        x = conv(&mut b, &x, 2, 4, 3, vec![p1.clone()]);
        x = b.node("Relu", &[&x], vec![]);
        let h = conv(
            &mut b,
            &x,
            4,
            4,
            3,
            vec![p1.clone(), attr_ints("dilations", &[1, 1])],
        );
        let h = b.node("Relu", &[&h], vec![]);
        x = b.node("Add", &[&x, &h], vec![]);
        let strided = vec![p1.clone(), attr_ints("strides", &[2, 2])];
        x = conv(&mut b, &x, 4, 6, 4, strided);
        x = b.node("Relu", &[&x], vec![]);
        if seed % 2 == 0 {
            let w = b.init(&[6, 3, 3, 3], &r.vec(6 * 3 * 3 * 3, 0.6));
            let grouped = vec![
                attr_ints("pads", &[2, 2, 2, 2]),
                attr_ints("dilations", &[2, 2]),
                attr_int("group", 2),
            ];
            x = b.node("Conv", &[&x, &w], grouped);
        } else {
            x = b.node(
                "MaxPool",
                &[&x],
                vec![
                    attr_ints("kernel_shape", &[2, 2]),
                    attr_ints("strides", &[1, 1]),
                ],
            );
        }
        x = b.node("Relu", &[&x], vec![]);
        x = b.node("Flatten", &[&x], vec![attr_int("axis", 1)]);
        let n = if seed % 2 == 0 { 6 * 7 * 7 } else { 6 * 6 * 6 };
        let w = b.init(&[3, n], &r.vec(3 * n as usize, 0.3));
        x = b.node("Gemm", &[&x, &w], vec![attr_int("transB", 1)]);
        let desc = format!("local-row CNN #{seed}");
        let model = b.finish(&x);
        check_model(&model, &desc, seed, 2 + seed as usize % 2)
            .unwrap_or_else(|e| panic!("{desc}: {e}"));
        same_bounds_with_dense_rows(&model, &desc, seed);
    }
}

/// Every value's CROWN bounds with row boxes tracked equal those with every row dense, up to
/// the order of the f64 sums: a box that missed a nonzero would drop its terms and show here
/// (samples alone rarely reach the bounds of a CNN's hidden values).
fn same_bounds_with_dense_rows(model: &onnx_protobuf::ModelProto, desc: &str, seed: u64) {
    use ferrocert::bounds::alpha::{self, AlphaConfig};
    use ferrocert::bounds::crown::{Crown, CrownConfig, Intermediate, Seeds};
    let g = passes::simplify(netgen::import(model));
    let mut r = Rng(seed ^ 0xb0c5);
    let c: Vec<f64> = (0..g.input_numel())
        .map(|_| r.range(-1.0, 1.0) as f32 as f64)
        .collect();
    let input = Intervals::new(
        c.iter().map(|v| v - 0.1).collect(),
        c.iter().map(|v| v + 0.1).collect(),
    );
    // CROWN, and alpha-CROWN on every unstable intermediate bound, whose gradients come from
    // a forward pass computed only inside the rows' boxes (`conv_boxes`).
    for intermediate in [Intermediate::Crown, Intermediate::Alpha] {
        let run = |local_rows| {
            let cfg = CrownConfig {
                local_rows,
                intermediate,
                ..CrownConfig::default()
            };
            Crown::new(&g, input.clone(), 1, cfg).bounds
        };
        let (local, dense) = (run(true), run(false));
        let mut compared = 0;
        for (v, (a, b)) in local.iter().zip(&dense).enumerate() {
            let (Some(a), Some(b)) = (a, b) else { continue };
            for (x, y) in a.lo.iter().chain(&a.hi).zip(b.lo.iter().chain(&b.hi)) {
                assert!(
                    (x - y).abs() <= 1e-9 * (1.0 + x.abs()),
                    "{desc} ({intermediate:?}): value {v}: bound {x} with row boxes, {y} with \
                     dense rows"
                );
                compared += 1;
            }
        }
        assert!(compared > 1000, "{desc}: only {compared} bounds compared");
    }
    // beta-CROWN on a domain with splits on the first ReLU's undecided inputs: the split
    // multipliers' gradients read pre-activations no coefficient reaches at first.
    let root = Crown::new(&g, input.clone(), 1, CrownConfig::default());
    let first = g
        .nodes
        .iter()
        .find(|n| matches!(n.op, ferrocert::ir::Op::Relu))
        .expect("a ReLU")
        .inputs[0];
    let b = root.bounds[first].as_ref().expect("bounds");
    let unstable: Vec<usize> = (0..g.values[first].numel())
        .filter(|&j| ferrocert::transformers::relax::unstable(b.lo[j], b.hi[j]))
        .collect();
    assert!(unstable.len() >= 4, "{desc}: {} undecided", unstable.len());
    let seeds = Seeds {
        bounds: vec![None; g.values.len()],
        splits: unstable
            .iter()
            .step_by(unstable.len() / 4)
            .take(4)
            .enumerate()
            .map(|(i, &j)| (first, 0, j, i % 2 == 0))
            .collect(),
        skip_before: 0,
    };
    let no = g.output_numel();
    let cfg = AlphaConfig {
        iterations: 10,
        lr_beta: 0.5,
        ..Default::default()
    };
    let run = |local_rows| {
        let ccfg = CrownConfig {
            local_rows,
            intermediate: Intermediate::Alpha,
            alpha: cfg,
            ..CrownConfig::default()
        };
        let c = Crown::build(&g, input.clone(), 1, ccfg, Some(&seeds));
        let out = alpha::optimize(
            &c,
            g.output,
            &vec![0; no],
            |k, a| {
                a.fill(0.0);
                a[k] = 1.0;
            },
            &cfg,
        );
        // Every intermediate bound after the splits, then the outputs.
        c.bounds
            .iter()
            .flatten()
            .flat_map(|b| b.lo.iter().chain(&b.hi).copied().collect::<Vec<_>>())
            .chain(out)
            .collect::<Vec<f64>>()
    };
    let (local, dense) = (run(true), run(false));
    assert_eq!(local.len(), dense.len());
    for (x, y) in local.iter().zip(&dense) {
        assert!(
            (x - y).abs() <= 1e-9 * (1.0 + x.abs()),
            "{desc} (beta-CROWN): {x} with row boxes, {y} with dense rows"
        );
    }
}

fn check_model(
    model: &onnx_protobuf::ModelProto,
    desc: &str,
    seed: u64,
    eps_pick: usize,
) -> Result<(), TestCaseError> {
    let exec = netgen::import(model);
    let g = passes::simplify(exec.clone());
    let mut r = Rng(seed ^ 0x5151);
    let (ni, no) = (g.input_numel(), g.output_numel());
    let eps = [0.0, 1e-3, 0.05, 0.3, 1.0][eps_pick % 5];
    let c: Vec<f64> = (0..ni).map(|_| r.range(-1.0, 1.0) as f32 as f64).collect();
    let lo: Vec<f64> = c.iter().map(|v| v - eps).collect();
    let hi: Vec<f64> = c.iter().map(|v| v + eps).collect();
    let n = if eps == 0.0 { 1 } else { 10_000 };
    let xs = common::sample_box(&lo, &hi, n, &mut r);
    let ys = eval::forward_par::<f32>(&exec, &xs, n, 512).unwrap();
    // Objectives: every output both ways, plus random combinations (spec rows).
    let mut objs: Vec<Objective> = (0..no)
        .flat_map(|j| {
            [1.0, -1.0].map(|s| Objective {
                domain: 0,
                coeffs: vec![(j, s)],
            })
        })
        .collect();
    for _ in 0..4 {
        objs.push(Objective {
            domain: 0,
            coeffs: (0..no).map(|j| (j, r.range(-1.0, 1.0))).collect(),
        });
    }
    let input = Intervals::new(lo, hi);
    let run = |method, intersect_ibp| {
        let opts = BoundOptions {
            method,
            mode: FpMode::Deployed,
            intersect_ibp,
            alpha: AlphaConfig {
                iterations: 10,
                ..Default::default()
            },
        };
        bounds::objective_lower(&g, input.clone(), 1, &objs, &opts)
    };
    let ibp = run(Method::Ibp, true);
    let plain = run(Method::Crown, false);
    let crown = run(Method::Crown, true);
    let alpha = run(Method::AlphaCrown, true);
    // The smallest value of each objective over the samples.
    let mut min_obj = vec![f64::INFINITY; objs.len()];
    for s in 0..n {
        for (k, o) in objs.iter().enumerate() {
            let v: f64 = o
                .coeffs
                .iter()
                .map(|&(j, c)| c * ys[s * no + j] as f64)
                .sum();
            min_obj[k] = min_obj[k].min(v);
        }
    }
    for k in 0..objs.len() {
        // Tiny slack for the f64 evaluation of the objective itself.
        let m = min_obj[k] + 1e-15 * (1.0 + min_obj[k].abs());
        for (name, b) in [
            ("ibp", ibp[k]),
            ("plain crown", plain[k]),
            ("crown", crown[k]),
            ("alpha-crown", alpha[k]),
        ] {
            prop_assert!(
                b <= m,
                "{desc}\neps {eps} objective {k}: {name} lower bound {b} above sampled minimum {}",
                min_obj[k]
            );
        }
        // Intersected with IBP, CROWN is never looser than IBP, up to the ulps by which a
        // verified function interval on an ulp-narrower input can come out wider (its
        // rounding slack depends on the endpoints).
        let ulps = 1e-12 * (1.0 + ibp[k].abs());
        prop_assert!(
            crown[k] >= ibp[k] - ulps,
            "{desc}\ncrown {} looser than ibp {}",
            crown[k],
            ibp[k]
        );
        prop_assert!(
            alpha[k] >= crown[k],
            "{desc}\nalpha-crown {} looser than crown {}",
            alpha[k],
            crown[k]
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn crown_contains_samples_of_random_mlps(kinds in prop::collection::vec(0u8..netgen::KINDS as u8, 1..7), seed in any::<u64>(), eps in 0usize..5) {
        check(&kinds, false, seed, eps)?;
    }

    #[test]
    fn crown_contains_samples_of_random_cnns(kinds in prop::collection::vec(0u8..netgen::KINDS as u8, 1..6), seed in any::<u64>(), eps in 0usize..5) {
        check(&kinds, true, seed, eps)?;
    }
}

/// alpha-CROWN intermediate bounds cut short by `alpha_deadline` (the root of ReLU splitting
/// under a time limit) are rebuilt bit for bit, without a clock, by `alpha_nodes` set to the
/// node where the optimisation stopped, as the proof checker rebuilds them: that node and
/// every later one keep CROWN's bounds, not a partial ascent that depends on the clock.
#[test]
fn alpha_intermediate_bounds_cut_short_are_rebuilt_from_where_they_stopped() {
    use ferrocert::bounds::crown::{Crown, CrownConfig, Intermediate};
    use ferrocert::verify::files::{load_network, load_spec_for};
    use std::time::{Duration, Instant};
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Six hidden ReLU layers: five whose bounds alpha-CROWN optimises.
    let net = load_network(&repo.join("models/ACASXU_run2a_1_1_batch_2000.onnx")).expect("model");
    let spec = load_spec_for(&repo.join("specs/acasxu/prop_1.vnnlib"), &net).expect("spec");
    let g = &net.analysis;
    let r = &spec.regions[0];
    let input = Intervals::new(r.lower.clone(), r.upper.clone());
    let cfg = CrownConfig {
        intermediate: Intermediate::Alpha,
        ..CrownConfig::default()
    };
    let run = |cfg: CrownConfig| Crown::new(g, input.clone(), 1, cfg);
    let t0 = Instant::now();
    let full = run(cfg);
    let t_full = t0.elapsed();
    assert_eq!(full.alpha_nodes(), g.nodes.len());
    let crown = run(CrownConfig {
        intermediate: Intermediate::Crown,
        ..CrownConfig::default()
    });
    assert!(
        full.bounds != crown.bounds,
        "alpha-CROWN narrowed nothing here"
    );
    let zero = run(CrownConfig {
        alpha_nodes: 0,
        ..cfg
    });
    assert!(zero.bounds == crown.bounds, "alpha_nodes 0 is not CROWN");
    // A deadline already passed stops at the first node optimised, leaving CROWN's bounds;
    // later ones stop wherever the clock says, and each is rebuilt from where it stopped.
    for frac in [0.0, 0.25, 0.5, 0.75] {
        let cut = run(CrownConfig {
            alpha_deadline: Some(Instant::now() + t_full.mul_f64(frac)),
            ..cfg
        });
        let k = cut.alpha_nodes();
        if frac == 0.0 {
            assert!(k < g.nodes.len(), "a passed deadline optimised every node");
            assert!(cut.bounds == crown.bounds, "a passed deadline is not CROWN");
        }
        let again = run(CrownConfig {
            alpha_nodes: k,
            alpha_deadline: Some(Instant::now() + Duration::from_secs(3600)),
            ..cfg
        });
        assert_eq!(again.alpha_nodes(), k.min(g.nodes.len()));
        assert!(
            again.bounds == cut.bounds,
            "cut at {frac} of {t_full:?}: stopped before node {k}, not rebuilt from there"
        );
    }
}

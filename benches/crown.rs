//! CROWN and alpha-CROWN per spec (intermediate bounds + spec rows folded into the backward
//! pass) on the first instance of ACAS Xu, mnistfc 256x2/256x6, oval21 and cifar10_resnet
//! (2b, 4b).
//! `cargo bench --bench crown`. Needs ../shared/benchmarks (skipped loudly otherwise, except
//! for the bundled ACAS Xu network).

use criterion::{Criterion, criterion_group, criterion_main};
use ferrocert::bounds::{self, BoundOptions, Method, Objective};
use ferrocert::domain::Intervals;
use ferrocert::network::Network;
use ferrocert::spec;
use std::hint::black_box;
use std::path::{Path, PathBuf};

fn path(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/benchmarks")
        .join(rel);
    p.exists().then_some(p)
}

/// (name, model, spec, samples): the first instance of each network.
fn cases() -> Vec<(&'static str, PathBuf, PathBuf, usize)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v = vec![(
        "acasxu_1_1_prop1",
        path("acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx")
            .unwrap_or(root.join("models/ACASXU_run2a_1_1_batch_2000.onnx")),
        path("acasxu/vnnlib/prop_1.vnnlib").unwrap_or(root.join("specs/acasxu/prop_1.vnnlib")),
        50,
    )];
    for (name, m, s, n) in [
        (
            "mnistfc_256x2",
            "mnistfc/onnx/mnist-net_256x2.onnx",
            "mnistfc/vnnlib/prop_0_0.03.vnnlib",
            30,
        ),
        (
            "mnistfc_256x6",
            "mnistfc/onnx/mnist-net_256x6.onnx",
            "mnistfc/vnnlib/prop_0_0.03.vnnlib",
            20,
        ),
        (
            "oval21_base_kw",
            "oval21/onnx/cifar_base_kw.onnx",
            "oval21/vnnlib/cifar_base_kw-img8194-eps0.018300653594771243.vnnlib",
            10,
        ),
        (
            "oval21_deep_kw",
            "oval21/onnx/cifar_deep_kw.onnx",
            "oval21/vnnlib/cifar_deep_kw-img1052-eps0.010718954248366015.vnnlib",
            10,
        ),
        (
            "cifar10_resnet_2b",
            "cifar10_resnet/onnx/resnet_2b.onnx",
            "cifar10_resnet/vnnlib_properties_pgd_filtered/resnet2b_pgd_filtered/prop_0_eps_0.008.vnnlib",
            10,
        ),
        (
            "cifar10_resnet_4b",
            "cifar10_resnet/onnx/resnet_4b.onnx",
            "cifar10_resnet/vnnlib_properties_pgd_filtered/resnet4b_pgd_filtered/prop_0_eps_0.004.vnnlib",
            10,
        ),
    ] {
        match (path(m), path(s)) {
            (Some(m), Some(s)) => v.push((name, m, s, n)),
            _ => eprintln!("SKIPPED {name}: ../shared/benchmarks not present"),
        }
    }
    v
}

fn bench(c: &mut Criterion) {
    // The allocator tuned as the binary tunes it, so the figures match the command users run.
    ferrocert::alloc::tune();
    for (name, model, spec_path, samples) in cases() {
        let net = Network::load(&model).expect("model");
        let sp = spec::parse_file(&spec_path).expect("spec");
        let r = &sp.regions[0];
        let objs: Vec<Objective> = r
            .disjuncts
            .iter()
            .flatten()
            .map(|c| Objective {
                domain: 0,
                coeffs: c.coeffs.clone(),
            })
            .collect();
        let mut g = c.benchmark_group(name);
        g.sample_size(samples.max(10));
        for method in [Method::Crown, Method::AlphaCrown] {
            let opts = BoundOptions {
                method,
                ..Default::default()
            };
            g.bench_function(method.name(), |b| {
                b.iter(|| {
                    let input = Intervals::new(r.lower.clone(), r.upper.clone());
                    black_box(bounds::objective_lower(
                        &net.analysis,
                        input,
                        1,
                        &objs,
                        &opts,
                    ))
                })
            });
        }
        // What users run: the `bounds` command end to end (load, simplify, hash, parse the
        // spec, bound every output from above and below on every region), minus process
        // start-up and printing.
        let args = ferrocert::commands::BoundsArgs {
            model: model.clone(),
            spec: spec_path.clone(),
            method: Method::Crown,
            json: true,
            no_ibp_intersection: false,
            alpha_iterations: 20,
            fp_mode: ferrocert::commands::FpModeArg::Deployed,
        };
        g.bench_function("command_crown", |b| {
            b.iter(|| {
                black_box(ferrocert::commands::bounds(&args, &mut std::io::sink()).expect("bounds"))
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Foundation benchmarks: IBP on ACAS Xu and mnistfc 256x6, VNN-LIB parsing (largest shared
//! spec and a synthetic 10 MB spec), and the concrete evaluator.
//!
//! `cargo bench --bench foundation`. Networks under `../shared/benchmarks` are used when
//! present; otherwise the bundled copies in `models/` and `specs/`.

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use ferrocert::domain::{FpMode, Intervals};
use ferrocert::network::Network;
use ferrocert::{bounds, eval, spec};
use std::hint::black_box;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn shared(rel: &str) -> Option<PathBuf> {
    let p = root().join("../shared/benchmarks").join(rel);
    p.exists().then_some(p)
}

fn ibp_case(c: &mut Criterion, name: &str, model: &Path, spec_path: &Path) {
    let net = Network::load(model).expect("model");
    let sp = spec::parse_file(spec_path).expect("spec");
    let r = &sp.regions[0];
    c.bench_function(name, |b| {
        b.iter(|| {
            let out = bounds::ibp(
                &net.analysis,
                Intervals::new(r.lower.clone(), r.upper.clone()),
                1,
                FpMode::Deployed,
            );
            black_box(out)
        })
    });
}

fn bench_ibp(c: &mut Criterion) {
    let acas = shared("acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx")
        .unwrap_or_else(|| root().join("models/ACASXU_run2a_1_1_batch_2000.onnx"));
    let acas_spec = shared("acasxu/vnnlib/prop_1.vnnlib")
        .unwrap_or_else(|| root().join("specs/acasxu/prop_1.vnnlib"));
    ibp_case(c, "ibp/acasxu_1_1_prop1", &acas, &acas_spec);
    match (
        shared("mnistfc/onnx/mnist-net_256x6.onnx"),
        shared("mnistfc/vnnlib/prop_0_0.03.vnnlib"),
    ) {
        (Some(m), Some(s)) => ibp_case(c, "ibp/mnistfc_256x6_prop0", &m, &s),
        _ => eprintln!("SKIPPED ibp/mnistfc_256x6: ../shared/benchmarks/mnistfc not present"),
    }
}

/// A VNN-COMP style spec of about `target` bytes: a box over many inputs and a 9-way output
/// disjunction.
fn synthetic_spec(target: usize) -> String {
    let mut s = String::with_capacity(target + 1000);
    let n = target / 110;
    for i in 0..n {
        s.push_str(&format!("(declare-const X_{i} Real)\n"));
    }
    for j in 0..10 {
        s.push_str(&format!("(declare-const Y_{j} Real)\n"));
    }
    for i in 0..n {
        s.push_str(&format!(
            "(assert (<= X_{i} 0.52500000000000002))\n(assert (>= X_{i} -0.0123456789))\n"
        ));
    }
    s.push_str("(assert (or\n");
    for j in 1..10 {
        s.push_str(&format!("    (and (>= Y_{j} Y_0))\n"));
    }
    s.push_str("))\n");
    s
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("vnnlib");
    g.sample_size(20);
    if let Some(dir) = shared("") {
        let mut largest: Option<(u64, PathBuf)> = None;
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "vnnlib") {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    if largest.as_ref().is_none_or(|(l, _)| len > *l) {
                        largest = Some((len, p));
                    }
                }
            }
        }
        if let Some((len, p)) = largest {
            let text = std::fs::read_to_string(&p).expect("spec");
            eprintln!("largest shared spec: {} ({len} bytes)", p.display());
            g.bench_function("parse_largest_shared", |b| {
                b.iter(|| black_box(spec::parse_str(&text).expect("parses")))
            });
        }
    } else {
        eprintln!("SKIPPED vnnlib/parse_largest_shared: ../shared/benchmarks not present");
    }
    let big = synthetic_spec(10_000_000);
    eprintln!("synthetic spec: {} bytes", big.len());
    g.bench_function("parse_synthetic_10MB", |b| {
        b.iter(|| black_box(spec::parse_str(&big).expect("parses")))
    });
    g.finish();
}

fn bench_eval(c: &mut Criterion) {
    let net = Network::load(&root().join("models/digits_mlp.onnx")).expect("model");
    let batch = 4096;
    let x: Vec<f32> = (0..batch * 64).map(|i| (i % 17) as f32 / 16.0).collect();
    c.bench_function("eval/digits_mlp_f32_batch4096", |b| {
        b.iter(|| black_box(eval::forward::<f32>(&net.exec, &x, batch).expect("eval")))
    });
}

/// Why the kernels call matrixmultiply directly instead of going through nalgebra: the same
/// GEMM on our row-major buffers, without copying into nalgebra's column-major matrices.
fn bench_matmul(c: &mut Criterion) {
    let (m, k, n) = (1024usize, 784usize, 256usize);
    let (a, b) = common::gemm_operands(m, k, n);
    let mut g = c.benchmark_group("matmul_1024x784x256_f32");
    common::bench_row_major_gemm(&mut g, "matrixmultiply_row_major", (m, k, n), &a, &b);
    g.bench_function("nalgebra_with_copies", |bch| {
        bch.iter(|| {
            let am = nalgebra::DMatrix::from_row_slice(m, k, &a);
            let bm = nalgebra::DMatrix::from_row_slice(k, n, &b);
            let cm = am * bm;
            // Back to row-major for the next layer.
            let out: Vec<f32> = cm.transpose().as_slice().to_vec();
            black_box(out)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_ibp, bench_parse, bench_eval, bench_matmul);
criterion_main!(benches);

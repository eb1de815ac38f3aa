//! Randomized-smoothing throughput: noisy samples per second (Gaussian generation + batched
//! forward pass + class counting) on the digits models, the normal generator alone, and the
//! GEMM rate of the MLP's first layer for reference.

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferrocert::data::npy;
use ferrocert::network::Network;
use ferrocert::smoothing::rng::{WyRand, Ziggurat};
use ferrocert::smoothing::{self, Dataset, Mode, SmoothConfig};
use std::hint::black_box;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bench_samples(c: &mut Criterion) {
    // The allocator tuned as the binary tunes it, so the figures match the command users run.
    ferrocert::alloc::tune();
    let x = npy::read(&root().join("tests/data/digits/test_images.npy")).expect("images");
    let mut g = c.benchmark_group("smoothing");
    g.sample_size(10);
    // What the README's command runs: every bundled test image, n 100,000.
    let images = 50;
    let cfg = SmoothConfig {
        sigma: 0.25,
        n0: 100,
        n: 100_000,
        alpha: 0.001,
        batch: 2048,
        seed: 0,
        mode: Mode::Certify,
    };
    g.throughput(Throughput::Elements(images as u64 * (cfg.n0 + cfg.n)));
    for (name, shape) in [
        ("digits_mlp_noise", vec![1, 64]),
        ("digits_cnn", vec![1, 1, 8, 8]),
    ] {
        let net = Network::load(&root().join(format!("models/{name}.onnx"))).expect("model");
        let mut ds = Dataset::new(&x, None, 1.0, &shape, 10).expect("data");
        ds.truncate(images);
        g.bench_function(format!("certify_samples/{name}"), |b| {
            b.iter(|| black_box(smoothing::smooth_dataset(&net.exec, &ds, &cfg, &|_| {})))
        });
    }
    g.finish();
}

fn fill_rand_distr(rng: &mut impl rand::Rng, buf: &mut [f32]) {
    for v in buf.iter_mut() {
        let z: f32 = rng.sample(rand_distr::StandardNormal);
        *v = 0.25 * z;
    }
    black_box(&buf);
}

fn bench_normals(c: &mut Criterion) {
    use rand::SeedableRng;
    let zig = Ziggurat::new();
    let mut buf = vec![0f32; 1 << 20];
    let mut g = c.benchmark_group("normals");
    g.throughput(Throughput::Elements(buf.len() as u64));
    g.bench_function("ziggurat_wyrand_1thread", |b| {
        let mut rng = WyRand::stream(1, 2, 3, 4);
        b.iter(|| {
            zig.fill(&mut rng, 0.25, &mut buf);
            black_box(&buf);
        })
    });
    // The crate a Rust user would reach for first, on its default StdRng (ChaCha12) and its
    // fastest SmallRng (Xoshiro256++): the measured reason for our own generator (README, "Crates").
    g.bench_function("rand_distr_standard_normal_stdrng_1thread", |b| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        b.iter(|| fill_rand_distr(&mut rng, &mut buf))
    });
    g.bench_function("rand_distr_standard_normal_smallrng_1thread", |b| {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        b.iter(|| fill_rand_distr(&mut rng, &mut buf))
    });
    g.finish();
}

/// The MLP's first layer at the smoothing batch size: [2048 x 64] x [64 x 32].
fn bench_layer_gemm(c: &mut Criterion) {
    let dims = (2048usize, 64usize, 32usize);
    let (a, b) = common::gemm_operands(dims.0, dims.1, dims.2);
    let mut g = c.benchmark_group("matmul_2048x64x32_f32");
    common::bench_row_major_gemm(&mut g, "matrixmultiply_1thread", dims, &a, &b);
    g.finish();
}

criterion_group!(benches, bench_samples, bench_normals, bench_layer_gemm);
criterion_main!(benches);

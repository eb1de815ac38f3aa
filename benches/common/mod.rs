//! Helpers shared by the bench targets.

use criterion::Throughput;
use criterion::measurement::WallTime;
use std::hint::black_box;

/// Deterministic row-major `[m x k]` and `[k x n]` operands for a GEMM bench.
pub fn gemm_operands(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let a = (0..m * k).map(|i| ((i * 7) % 13) as f32 / 13.0).collect();
    let b = (0..k * n).map(|i| ((i * 5) % 11) as f32 / 11.0).collect();
    (a, b)
}

/// Set the group's throughput to the GEMM's flops and bench the evaluator's row-major kernel
/// on `a` x `b` as `name`.
pub fn bench_row_major_gemm(
    g: &mut criterion::BenchmarkGroup<'_, WallTime>,
    name: &str,
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
) {
    g.throughput(Throughput::Elements((2 * m * k * n) as u64));
    g.bench_function(name, |bch| {
        let mut out = vec![0f32; m * n];
        bch.iter(|| {
            ferrocert::eval::kernels::gemm(m, k, n, a, (k, 1), b, (n, 1), &mut out, (n, 1), false);
            black_box(&out);
        })
    });
}

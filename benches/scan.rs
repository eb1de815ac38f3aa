//! Backdoor scan: the trigger search over all labels (Neural Cleanse, 600 steps per label, the
//! 450 digits test images) and the certified patch bound for k = 2 and k = 3, on the digits
//! MLP and CNN. The allocator is tuned as the binary tunes it (`ferrocert::alloc::tune`), so
//! these figures match the end-to-end command's stages.

use criterion::{Criterion, criterion_group, criterion_main};
use ferrocert::data::{Dataset, npy};
use ferrocert::network::Network;
use ferrocert::scan::{self, NoProgress, ScanConfig, ScanData, patch};
use std::hint::black_box;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bench_scan(c: &mut Criterion) {
    ferrocert::alloc::tune();
    let x = npy::read(&root().join("models/data/test_images_all.npy")).expect("images");
    let y = npy::read(&root().join("models/data/test_labels_all.npy")).expect("labels");
    let mut g = c.benchmark_group("scan");
    g.sample_size(10);
    for (name, shape, image) in [
        ("digits_mlp_backdoor", vec![1, 64], Some((8, 8, 1))),
        ("digits_cnn", vec![1, 1, 8, 8], None),
    ] {
        let net = Network::load(&root().join(format!("models/{name}.onnx"))).expect("model");
        let ds = Dataset::new(&x, Some(&y), 1.0, &shape, 10).expect("data");
        let cfg = ScanConfig {
            patch_sizes: vec![],
            ..ScanConfig::default()
        };
        let sd = ScanData::new(&net, &ds, image, &cfg).expect("scan data");
        g.bench_function(format!("trigger_search/{name}"), |b| {
            b.iter(|| black_box(scan::scan(&sd, &cfg, &NoProgress).expect("scan")))
        });
        for k in [2, 3] {
            let cfg = ScanConfig::default();
            g.bench_function(format!("patch_bound_k{k}/{name}"), |b| {
                b.iter(|| black_box(patch::bound_all(&sd, k, &cfg, &NoProgress)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);

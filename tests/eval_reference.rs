//! The concrete evaluator against onnxruntime and float64 reference outputs.

mod common;

use ferrocert::{eval, onnx};

#[test]
fn forward_matches_onnxruntime_and_float64_on_digits() {
    let Some(shared) = common::shared_benchmarks() else {
        return;
    };
    let digits = shared.join("digits");
    let lines = common::read_jsonl(&digits.join("reference/forward.jsonl"));
    assert!(lines.len() >= 390);
    let mut graphs = std::collections::HashMap::new();
    let (mut worst32, mut worst64) = (0.0f64, 0.0f64);
    for l in &lines {
        let model = l["model"].as_str().unwrap().to_string();
        let g = graphs.entry(model.clone()).or_insert_with(|| {
            onnx::load_graph(&digits.join(format!("onnx/{model}.onnx")))
                .unwrap()
                .1
        });
        let x = common::f64s(&l["input"]);
        let ort = common::f64s(&l["output_ort"]);
        let f64ref = common::f64s(&l["output_f64"]);
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let y32 = eval::forward::<f32>(g, &x32, 1).unwrap();
        let x64: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
        let y64 = eval::forward::<f64>(g, &x64, 1).unwrap();
        for i in 0..ort.len() {
            let e32 = (y32[i] as f64 - ort[i]).abs() / (1.0 + ort[i].abs());
            let e64 = (y64[i] - f64ref[i]).abs();
            worst32 = worst32.max(e32);
            worst64 = worst64.max(e64);
            assert!(
                e32 <= 1e-5,
                "{model} {}: f32 {} vs ort {}",
                l["index"],
                y32[i],
                ort[i]
            );
            assert!(
                e64 <= 1e-9,
                "{model} {}: f64 {} vs {}",
                l["index"],
                y64[i],
                f64ref[i]
            );
        }
        let argmax = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
        if let Some(am) = l["argmax"].as_u64() {
            assert_eq!(argmax(&y32) as u64, am, "{model} argmax");
        }
    }
    eprintln!("forward: worst f32 rel error {worst32:.2e}, worst f64 abs error {worst64:.2e}");
}

//! Bounds against the independent reference values in `tests/data/digits/bounds_reference.jsonl`
//! (a copy of the digits suite's `reference/bounds.jsonl`: IBP, CROWN and LP checked against
//! auto_LiRPA, plus sampled outputs).

mod common;

use ferrocert::bounds;
use ferrocert::domain::{FpMode, Intervals};
use ferrocert::network::Network;
use serde_json::Value;
use std::collections::HashMap;

/// The input box of a reference line: clipped to [0, 1] around a test image, or around a centre.
fn input_box(l: &Value, images: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let eps = l["eps"].as_f64().unwrap();
    let clip = l["clip"].as_bool().unwrap();
    let x0: Vec<f64> = match l.get("image") {
        Some(i) => images[i.as_u64().unwrap() as usize].clone(),
        None => common::f64s(&l["center"]),
    };
    let lo = x0
        .iter()
        .map(|v| {
            if clip {
                (v - eps).clamp(0.0, 1.0)
            } else {
                v - eps
            }
        })
        .collect();
    let hi = x0
        .iter()
        .map(|v| {
            if clip {
                (v + eps).clamp(0.0, 1.0)
            } else {
                v + eps
            }
        })
        .collect();
    (lo, hi)
}

/// The output rows a reference line bounds.
fn row_ids(l: &Value) -> Vec<usize> {
    l["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap() as usize)
        .collect()
}

/// (lower, upper) of the reference line's rows from an output box.
fn rows_from_box(l: &Value, lo: &[f64], hi: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let rows = row_ids(l);
    if l["spec"] == "margin" {
        let lab = l["label"].as_u64().unwrap() as usize;
        // Interval arithmetic on y_label - y_j, rounded outward.
        (
            rows.iter()
                .map(|&j| (lo[lab] - hi[j]).next_down())
                .collect(),
            rows.iter().map(|&j| (hi[lab] - lo[j]).next_up()).collect(),
        )
    } else {
        (
            rows.iter().map(|&j| lo[j]).collect(),
            rows.iter().map(|&j| hi[j]).collect(),
        )
    }
}

struct Fixture {
    lines: Vec<Value>,
    images: Vec<Vec<f64>>,
    nets: HashMap<String, Network>,
}

fn fixture() -> Option<Fixture> {
    let lines = common::read_jsonl(&common::repo("tests/data/digits/bounds_reference.jsonl"));
    let ts: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo("tests/data/digits/test_set.json")).unwrap(),
    )
    .unwrap();
    let images = ts["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(common::f64s)
        .collect();
    let mut nets = HashMap::new();
    for m in ["digits_mlp", "digits_cnn", "toy_mlp"] {
        nets.insert(
            m.to_string(),
            Network::load(&common::repo(&format!("models/{m}.onnx"))).unwrap(),
        );
    }
    Some(Fixture {
        lines,
        images,
        nets,
    })
}

#[test]
fn ibp_matches_reference_and_contains_samples() {
    let Some(fx) = fixture() else { return };
    let mut sampled: HashMap<String, (Vec<f64>, Vec<f64>)> = HashMap::new();
    let key = |l: &Value| {
        format!(
            "{}|{}|{}|{}|{}",
            l["model"], l["image"], l["center"], l["eps"], l["spec"]
        )
    };
    for l in fx.lines.iter().filter(|l| l["method"] == "sampled") {
        sampled.insert(
            key(l),
            (common::f64s(&l["lower"]), common::f64s(&l["upper"])),
        );
    }
    let (mut n, mut worst_real, mut worst_dep) = (0, 0.0f64, 0.0f64);
    for l in fx.lines.iter().filter(|l| l["method"] == "ibp") {
        let net = &fx.nets[l["model"].as_str().unwrap()];
        let (lo, hi) = input_box(l, &fx.images);
        let (rl, ru) = (common::f64s(&l["lower"]), common::f64s(&l["upper"]));
        let (sl, su) = &sampled[&key(l)];
        for mode in [FpMode::Real, FpMode::Deployed] {
            let out = bounds::ibp(
                &net.analysis,
                Intervals::new(lo.clone(), hi.clone()),
                1,
                mode,
            );
            let (tl, tu) = rows_from_box(l, &out.lo, &out.hi);
            for i in 0..rl.len() {
                // Sound: never tighter than the reference (beyond its own rounding) nor the samples.
                assert!(
                    tl[i] <= sl[i] && tu[i] >= su[i],
                    "{}: sample outside IBP",
                    key(l)
                );
                let dl = (tl[i] - rl[i]).abs() / (1.0 + rl[i].abs());
                let du = (tu[i] - ru[i]).abs() / (1.0 + ru[i].abs());
                let d = dl.max(du);
                match mode {
                    FpMode::Real => {
                        worst_real = worst_real.max(d);
                        assert!(
                            d <= 1e-7,
                            "{} row {i}: real-mode IBP [{}, {}] vs reference [{}, {}]",
                            key(l),
                            tl[i],
                            tu[i],
                            rl[i],
                            ru[i]
                        );
                    }
                    FpMode::Deployed => {
                        // The float32 rounding allowance grows with the bound's width (the
                        // error term scales with the magnitudes IBP admits): measured
                        // relative to the reference interval's width.
                        let widen =
                            ((rl[i] - tl[i]) + (tu[i] - ru[i])) / (ru[i] - rl[i]).max(1e-12);
                        worst_dep = worst_dep.max(widen);
                        assert!(
                            widen <= 1e-3,
                            "{} row {i}: deployed IBP [{}, {}] vs reference [{}, {}]",
                            key(l),
                            tl[i],
                            tu[i],
                            rl[i],
                            ru[i]
                        );
                        assert!(
                            tl[i] <= rl[i] + 1e-9 * (1.0 + rl[i].abs())
                                && tu[i] >= ru[i] - 1e-9 * (1.0 + ru[i].abs())
                        );
                    }
                }
            }
        }
        n += 1;
    }
    eprintln!(
        "{n} IBP reference lines; worst relative difference (real mode) {worst_real:.2e}; worst float32 widening of the width (deployed mode) {worst_dep:.2e}"
    );
    assert!(n >= 100);
}

/// CROWN rows of a reference line: lower bounds of `c y` and of `-c y` for each row's `c`.
fn crown_rows(
    l: &Value,
    net: &Network,
    lo: Vec<f64>,
    hi: Vec<f64>,
    cfg: ferrocert::bounds::crown::CrownConfig,
) -> (Vec<f64>, Vec<f64>) {
    use ferrocert::bounds::crown::Crown;
    let g = &net.analysis;
    let no = g.output_numel();
    let rows = row_ids(l);
    let label = l.get("label").and_then(|v| v.as_u64()).map(|v| v as usize);
    let crown = Crown::new(g, Intervals::new(lo, hi), 1, cfg);
    let doms = vec![0usize; 2 * rows.len()];
    let lower = crown.lower_bounds_with(g.output, &doms, None, |r, a| {
        let j = rows[r / 2];
        let s = if r % 2 == 0 { 1.0 } else { -1.0 };
        match label {
            Some(lab) => {
                a[lab] += s;
                a[j] -= s;
            }
            None => a[j] = s,
        }
        let _ = no;
    });
    let lo: Vec<f64> = (0..rows.len()).map(|i| lower[2 * i]).collect();
    let hi: Vec<f64> = (0..rows.len()).map(|i| -lower[2 * i + 1]).collect();
    (lo, hi)
}

#[test]
fn crown_matches_reference_and_is_never_looser_with_ibp_intersection() {
    use ferrocert::bounds::crown::CrownConfig;
    let Some(fx) = fixture() else { return };
    let key = |l: &Value| {
        format!(
            "{}|{}|{}|{}|{}",
            l["model"], l["image"], l["center"], l["eps"], l["spec"]
        )
    };
    let mut sampled: HashMap<String, (Vec<f64>, Vec<f64>)> = HashMap::new();
    for l in fx.lines.iter().filter(|l| l["method"] == "sampled") {
        sampled.insert(
            key(l),
            (common::f64s(&l["lower"]), common::f64s(&l["upper"])),
        );
    }
    let (mut n, mut worst_plain, mut worst_real, mut worst_dep, mut tighter) =
        (0, 0.0f64, 0.0f64, 0.0f64, 0);
    for l in fx.lines.iter().filter(|l| l["method"] == "crown") {
        let net = &fx.nets[l["model"].as_str().unwrap()];
        let (lo, hi) = input_box(l, &fx.images);
        let (rl, ru) = (common::f64s(&l["lower"]), common::f64s(&l["upper"]));
        let (sl, su) = &sampled[&key(l)];
        // Plain CROWN in real arithmetic reproduces the reference.
        let plain = CrownConfig {
            mode: FpMode::Real,
            intersect_ibp: false,
            ..CrownConfig::default()
        };
        let (tl, tu) = crown_rows(l, net, lo.clone(), hi.clone(), plain);
        for i in 0..rl.len() {
            let d = ((tl[i] - rl[i]).abs() / (1.0 + rl[i].abs()))
                .max((tu[i] - ru[i]).abs() / (1.0 + ru[i].abs()));
            worst_plain = worst_plain.max(d);
            assert!(
                d <= 1e-7,
                "{} row {i}: plain CROWN [{}, {}] vs reference [{}, {}]",
                key(l),
                tl[i],
                tu[i],
                rl[i],
                ru[i]
            );
        }
        // IBP intersection, real arithmetic: at least as tight as the reference.
        let real = CrownConfig {
            mode: FpMode::Real,
            ..CrownConfig::default()
        };
        let (xl, xu) = crown_rows(l, net, lo.clone(), hi.clone(), real);
        for i in 0..rl.len() {
            let loss = ((rl[i] - xl[i]).max(xu[i] - ru[i]) / (1.0 + rl[i].abs().max(ru[i].abs())))
                .max(0.0);
            worst_real = worst_real.max(loss);
            assert!(
                loss <= 1e-7,
                "{} row {i}: real-mode CROWN [{}, {}] looser than reference [{}, {}]",
                key(l),
                xl[i],
                xu[i],
                rl[i],
                ru[i]
            );
            if xl[i] > rl[i] + 1e-9 || xu[i] < ru[i] - 1e-9 {
                tighter += 1;
            }
        }
        // Default: deployed float32 soundness, IBP intersection.
        let (tl, tu) = crown_rows(l, net, lo, hi, CrownConfig::default());
        for i in 0..rl.len() {
            assert!(
                tl[i] <= sl[i] && tu[i] >= su[i],
                "{} row {i}: sample outside CROWN",
                key(l)
            );
            let loss = ((rl[i] - tl[i]).max(tu[i] - ru[i]) / (1.0 + rl[i].abs().max(ru[i].abs())))
                .max(0.0);
            worst_dep = worst_dep.max(loss);
            assert!(
                loss <= 1e-3,
                "{} row {i}: CROWN [{}, {}] looser than reference [{}, {}]",
                key(l),
                tl[i],
                tu[i],
                rl[i],
                ru[i]
            );
        }
        n += 1;
    }
    eprintln!(
        "{n} CROWN reference lines: plain real-mode worst difference {worst_plain:.2e}; IBP-intersected real-mode worst loosening {worst_real:.2e} (strictly tighter on {tighter} rows); float32-sound default worst loosening {worst_dep:.2e}"
    );
    assert!(n >= 100);
}

/// Plain real-arithmetic CROWN on an LP reference line's box: the intermediate bounds the
/// reference LPs were built from.
fn lp_line_crown<'g>(
    g: &'g ferrocert::ir::Graph,
    l: &Value,
    images: &[Vec<f64>],
) -> ferrocert::bounds::crown::Crown<'g> {
    use ferrocert::bounds::crown::{Crown, CrownConfig};
    let (lo, hi) = input_box(l, images);
    let cfg = CrownConfig {
        mode: FpMode::Real,
        intersect_ibp: false,
        ..CrownConfig::default()
    };
    Crown::new(g, Intervals::new(lo, hi), 1, cfg)
}

#[test]
fn lp_safe_bound_matches_reference_lp() {
    use ferrocert::lp::Encoding;
    let Some(fx) = fixture() else { return };
    let (mut n, mut worst, mut worst_gap) = (0, 0.0f64, 0.0f64);
    for l in fx.lines.iter().filter(|l| l["method"] == "lp") {
        let g = &fx.nets[l["model"].as_str().unwrap()].analysis;
        let c = lp_line_crown(g, l, &fx.images);
        let enc = Encoding::new(&c, 0, 5_000_000).unwrap();
        let rows = row_ids(l);
        let label = l.get("label").and_then(|v| v.as_u64()).map(|v| v as usize);
        let mut objs = Vec::new();
        for &j in &rows {
            for s in [1.0, -1.0] {
                objs.push(match label {
                    Some(lab) => vec![(lab, s), (j, -s)],
                    None => vec![(j, s)],
                });
            }
        }
        let b = enc.lower_bounds(g.output, &objs, None).unwrap();
        let (rl, ru) = (common::f64s(&l["lower"]), common::f64s(&l["upper"]));
        for (i, _) in rows.iter().enumerate() {
            let (tl, tu) = (b[2 * i].safe, -b[2 * i + 1].safe);
            let d = ((tl - rl[i]).abs() / (1.0 + rl[i].abs()))
                .max((tu - ru[i]).abs() / (1.0 + ru[i].abs()));
            worst = worst.max(d);
            worst_gap = worst_gap.max((b[2 * i].reported - b[2 * i].safe).abs());
            assert!(
                d <= 1e-5,
                "{} row {i}: LP [{tl}, {tu}] vs reference [{}, {}] (reported {} {})",
                l["model"],
                rl[i],
                ru[i],
                b[2 * i].reported,
                -b[2 * i + 1].reported
            );
            // The safe bound never exceeds the solver's optimum.
            assert!(b[2 * i].safe <= b[2 * i].reported + 1e-9);
        }
        n += 1;
    }
    eprintln!(
        "{n} LP reference lines: worst relative difference {worst:.2e}; largest reported-minus-safe gap {worst_gap:.2e}"
    );
    assert!(n >= 100);
}

/// The LP of a prefix of the network (what LP tightening solves for an intermediate bound) is
/// a relaxation of the whole network's LP: never tighter than it, and, holding the triangle
/// relaxation, never looser than CROWN's bound from the same intermediate bounds.
#[test]
fn lp_prefix_bound_lies_between_crown_and_the_whole_lp() {
    use ferrocert::ir::Op;
    use ferrocert::lp::Encoding;
    let Some(fx) = fixture() else { return };
    let mut checked = 0;
    for l in fx.lines.iter().filter(|l| l["method"] == "lp").take(12) {
        let g = &fx.nets[l["model"].as_str().unwrap()].analysis;
        let c = lp_line_crown(g, l, &fx.images);
        // The last ReLU's input: the prefix leaves out the layers after it.
        let v = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Relu))
            .map(|n| n.inputs[0])
            .last()
            .expect("an MLP with ReLUs");
        let whole = Encoding::new(&c, 0, 5_000_000).unwrap();
        let part = Encoding::prefix(&c, 0, 5_000_000, Some(v)).unwrap();
        assert!(part.size().1 < whole.size().1, "the prefix drops rows");
        let cb = c.bounds[v].as_ref().expect("CROWN bounds of a ReLU input");
        let n = g.values[v].numel();
        let objs: Vec<Vec<(usize, f64)>> = [1.0, -1.0]
            .iter()
            .flat_map(|&s| (0..n).map(move |j| vec![(j, s)]))
            .collect();
        let bw = whole.lower_bounds(v, &objs, None).unwrap();
        let bp = part.lower_bounds(v, &objs, None).unwrap();
        for j in 0..n {
            let (pl, ph) = (bp[j].safe, -bp[n + j].safe);
            let (wl, wh) = (bw[j].safe, -bw[n + j].safe);
            let tol = 1e-7 * (1.0 + cb.lo[j].abs().max(cb.hi[j].abs()));
            assert!(
                pl <= wl + tol && ph >= wh - tol,
                "element {j}: prefix [{pl}, {ph}] tighter than whole [{wl}, {wh}]"
            );
            assert!(
                pl >= cb.lo[j] - tol && ph <= cb.hi[j] + tol,
                "element {j}: prefix [{pl}, {ph}] looser than CROWN [{}, {}]",
                cb.lo[j],
                cb.hi[j]
            );
        }
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} LP reference lines");
}

//! Verification verdicts against the shared ground truth.

mod common;

use ferrocert::verify::files::verify_files;
use ferrocert::verify::{Verdict, VerifyOptions};

/// Rows of `reference/properties.csv` as maps from column to value.
fn properties(path: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

#[test]
fn ibp_proves_exactly_the_reference_ibp_set_on_digits_and_is_never_wrong() {
    let Some(shared) = common::shared_benchmarks() else {
        return;
    };
    let d = shared.join("digits");
    let (mut proved, mut expected_proved) = (0, 0);
    for row in properties(&d.join("reference/properties.csv")) {
        let opts = VerifyOptions::incomplete(ferrocert::bounds::Method::Ibp);
        let (run, _) = verify_files(&d.join(&row["onnx"]), &d.join(&row["vnnlib"]), &opts);
        let ref_ibp = row["ibp_verified"] == "1";
        expected_proved += ref_ibp as usize;
        match run.verdict {
            Verdict::Verified => {
                assert_eq!(
                    row["expected"], "unsat",
                    "{} {}: wrong unsat",
                    row["onnx"], row["vnnlib"]
                );
                proved += 1;
            }
            Verdict::Unknown => assert!(
                !ref_ibp,
                "{} {}: reference IBP proves it",
                row["onnx"], row["vnnlib"]
            ),
            ref v => panic!(
                "{} {}: unexpected verdict {}",
                row["onnx"],
                row["vnnlib"],
                v.word()
            ),
        }
    }
    eprintln!("IBP proved {proved} digits instances (reference IBP: {expected_proved})");
    assert_eq!(proved, expected_proved);
}

/// Rows of `expected.csv`: (onnx, vnnlib, expected).
fn expected(path: &std::path::Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let e = header.iter().position(|h| *h == "expected").unwrap();
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].to_string(), f[e].to_string())
        })
        .collect()
}

#[test]
fn incomplete_verification_is_never_wrong_on_digits_and_mnistfc() {
    use ferrocert::bounds::Method;
    let Some(shared) = common::shared_benchmarks() else {
        return;
    };
    for (suite, min_crown, min_alpha) in [("digits", 149, 150), ("mnistfc", 30, 32)] {
        let d = shared.join(suite);
        let mut proved = [0usize; 2];
        for (onnx, vnnlib, exp) in expected(&d.join("expected.csv")) {
            for (k, method) in [Method::Crown, Method::AlphaCrown].into_iter().enumerate() {
                let opts = VerifyOptions::incomplete(method);
                let (run, err) = verify_files(&d.join(&onnx), &d.join(&vnnlib), &opts);
                assert!(err.is_none(), "{onnx} {vnnlib}: {err:?}");
                if let Verdict::Verified = run.verdict {
                    assert_ne!(
                        exp, "sat",
                        "{suite} {onnx} {vnnlib}: unsat where expected is sat"
                    );
                    proved[k] += 1;
                }
            }
        }
        eprintln!(
            "{suite}: CROWN proves {} unsat, alpha-CROWN {}",
            proved[0], proved[1]
        );
        assert!(
            proved[0] >= min_crown && proved[1] >= min_alpha,
            "{suite}: {proved:?}"
        );
    }
}

#[test]
fn alpha_crown_is_never_looser_than_crown_and_strictly_tighter_on_most_mnistfc_specs() {
    use ferrocert::bounds::{Objective, alpha, crown};
    use ferrocert::domain::Intervals;
    use ferrocert::network::Network;
    let Some(shared) = common::shared_benchmarks() else {
        return;
    };
    let d = shared.join("mnistfc");
    let (mut tighter, mut total, mut gain) = (0, 0, 0.0);
    let mut nets = std::collections::HashMap::new();
    for (onnx, vnnlib, _) in expected(&d.join("expected.csv")) {
        let net = nets
            .entry(onnx.clone())
            .or_insert_with(|| Network::load(&d.join(&onnx)).unwrap());
        let sp = ferrocert::spec::parse_file(&d.join(&vnnlib)).unwrap();
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
        let g = &net.analysis;
        let c = crown::Crown::new(
            g,
            Intervals::new(r.lower.clone(), r.upper.clone()),
            1,
            crown::CrownConfig::default(),
        );
        let rows = vec![0; objs.len()];
        let fill = |k: usize, a: &mut [f64]| objs[k].coeffs.iter().for_each(|&(j, v)| a[j] += v);
        let base = c.lower_bounds_with(g.output, &rows, None, fill);
        let opt = alpha::optimize(&c, g.output, &rows, fill, &alpha::AlphaConfig::default());
        let mut strict = 0;
        for (b, o) in base.iter().zip(&opt) {
            assert!(o >= b, "{onnx} {vnnlib}: alpha {o} looser than crown {b}");
            if o > b {
                strict += 1;
                gain += o - b;
            }
        }
        total += 1;
        if strict * 2 > objs.len() {
            tighter += 1;
        }
    }
    eprintln!(
        "alpha-CROWN strictly tighter than CROWN on most rows of {tighter} of {total} mnistfc specs (total gain {gain:.2})"
    );
    assert!(tighter * 2 > total, "{tighter} of {total}");
}

/// The report of verifying `prop` on `model`, which must be proved.
fn proved(
    model: &std::path::Path,
    prop: &std::path::Path,
    opts: &VerifyOptions,
) -> ferrocert::verify::VerifyReport {
    let (run, err) = verify_files(model, prop, opts);
    assert!(err.is_none(), "{err:?}");
    assert!(
        matches!(run.verdict, Verdict::Verified),
        "{:?}",
        run.verdict
    );
    run.report.expect("report")
}

/// A shared benchmark instance `suite/onnx`, `suite/vnnlib`: its paths, network and spec;
/// `None` (said loudly) without `../shared`.
fn shared_instance(
    suite: &str,
    onnx: &str,
    vnnlib: &str,
) -> Option<(
    std::path::PathBuf,
    std::path::PathBuf,
    ferrocert::network::Network,
    ferrocert::spec::Spec,
)> {
    use ferrocert::verify::files::{load_network, load_spec_for};
    let d = common::shared_benchmarks()?.join(suite);
    let (model, prop) = (d.join(onnx), d.join(vnnlib));
    let net = load_network(&model).expect("model");
    let spec = load_spec_for(&prop, &net).expect("spec");
    Some((model, prop, net, spec))
}

/// ReLU splitting starts from the region's alpha-CROWN intermediate bounds (`lp_layers` 0 in
/// the proof), with no LP, and the proof checker rebuilds those bounds and checks every node
/// from them. The tree before started from CROWN's bounds (a short search) or from the LP
/// stage's, and recorded no `lp_layers` for this region.
#[test]
fn relu_splitting_starts_from_alpha_crown_bounds_that_the_checker_rebuilds() {
    use ferrocert::verify::files::{load_network, load_spec_for};
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (model, prop) = (
        repo.join("models/digits_mlp.onnx"),
        repo.join("tests/data/proofs/digits_prop_10_0.08.vnnlib"),
    );
    let opts = VerifyOptions {
        // Generous: the root's bounds may take a tenth of it, and need a few ms here.
        timeout: Some(std::time::Duration::from_secs(300)),
        ..Default::default()
    };
    let report = proved(&model, &prop, &opts);
    assert_eq!(report.proved_by[3], 0, "{:?}", report.proved_by);
    assert_eq!(report.proofs.len(), 1);
    let p = &report.proofs[0];
    assert!(p.nodes > 1, "no branching: {} nodes", p.nodes);
    assert_eq!(p.lp_layers, Some(0));
    let net = load_network(&model).expect("model");
    let spec = load_spec_for(&prop, &net).expect("spec");
    let st = ferrocert::verify::proof::check(&net, &spec.regions[p.region], p, &opts)
        .expect("the proof checks");
    assert!(st.root_s > 0.0, "{st:?}");
    assert_eq!(st.lp_stage_s, 0.0);
    // The tree's nodes, plus one where the checker re-bounds disjuncts refuted before it.
    assert!(st.nodes >= p.nodes, "{} of {}", st.nodes, p.nodes);
}

/// Verify with `bab` within `timeout_s`, assert one region proof, and check it.
fn proved_in_one_checked_proof(
    model: &std::path::Path,
    prop: &std::path::Path,
    net: &ferrocert::network::Network,
    spec: &ferrocert::spec::Spec,
    bab: ferrocert::verify::bab::BabConfig,
    timeout_s: u64,
) -> ferrocert::verify::VerifyReport {
    let opts = VerifyOptions {
        timeout: Some(std::time::Duration::from_secs(timeout_s)),
        bab: Some(bab),
        ..Default::default()
    };
    let report = proved(model, prop, &opts);
    assert_eq!(report.proofs.len(), 1);
    let p = &report.proofs[0];
    ferrocert::verify::proof::check(net, &spec.regions[p.region], p, &opts)
        .expect("the proof checks");
    report
}

/// On a CNN whose children's recomputed bounds narrow nothing (oval21 cifar_base_kw), the
/// children keep their parents' bounds after the first batches, and filtered smart branching
/// (BaBSR's best three neurons re-scored by a one-step bound of both children) then proves the
/// region in fewer domains than BaBSR's choice alone. In both trees some leaves are children
/// of the chosen split that its one-step bound already refuted, which are not bounded again;
/// the checker accepts both trees (and so those leaves, from their recorded parameters).
#[test]
fn filtered_smart_branching_proves_a_cnn_region_in_fewer_domains_than_babsr_alone() {
    use ferrocert::verify::bab::BabConfig;
    let Some((model, prop, net, spec)) = shared_instance(
        "oval21",
        "onnx/cifar_base_kw.onnx",
        "vnnlib/cifar_base_kw-img8717-eps0.011633986928104577.vnnlib",
    ) else {
        return;
    };
    let (mut domains, mut closed) = (Vec::new(), Vec::new());
    for fsb in [1, 3] {
        let bab = BabConfig {
            fsb,
            ..BabConfig::default()
        };
        let report = proved_in_one_checked_proof(&model, &prop, &net, &spec, bab, 300);
        domains.push(report.bab.domains);
        closed.push(report.bab.fsb_closed);
    }
    for i in 0..2 {
        assert!(
            closed[i] > 0 && closed[i] < domains[i],
            "{} of {} domains closed by the one-step bound",
            closed[i],
            domains[i]
        );
    }
    assert!(
        domains[1] < domains[0],
        "FSB {} against BaBSR {}",
        domains[1],
        domains[0]
    );
}

/// Input splitting's lookahead (both children of the five best-scored dimensions bounded, the
/// split closest to a proof kept) against alpha-beta-CROWN's smart-branching rule (the
/// dimension with the largest `|A_x| * width / 2` plus margin, no children bounded to choose)
/// on ACAS Xu 1_1 property 2 from the repo: both prove it and the checker accepts both trees,
/// and the lookahead's tree is several times smaller (265 against 2,067 nodes when written).
#[test]
fn input_splitting_lookahead_proves_acas_xu_in_a_smaller_tree_than_smart_branching() {
    use ferrocert::verify::bab::{BabConfig, InputBranching};
    use ferrocert::verify::files::{load_network, load_spec_for};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/ACASXU_run2a_1_1_batch_2000.onnx");
    let prop = root.join("specs/acasxu/prop_2.vnnlib");
    let net = load_network(&model).expect("model");
    let spec = load_spec_for(&prop, &net).expect("spec");
    let mut nodes = Vec::new();
    for input_branching in [InputBranching::Lookahead, InputBranching::Sb] {
        let bab = BabConfig {
            input_branching,
            ..BabConfig::default()
        };
        let report = proved_in_one_checked_proof(&model, &prop, &net, &spec, bab, 120);
        nodes.push(report.proofs[0].nodes);
    }
    assert!(
        2 * nodes[0] < nodes[1],
        "lookahead {} nodes against smart branching {}",
        nodes[0],
        nodes[1]
    );
}

/// mnistfc 256x6 prop_1_0.05's violation is a corner of the box that the gradient at the
/// centre points away from: PGD from the centre and uniform points alone never reached it
/// (64 restarts of 100 steps), and the search timed out. From each open constraint's CROWN
/// minimiser corner the attack stage finds it, and the counterexample re-checks.
#[test]
fn pgd_from_the_crown_minimiser_corners_finds_a_violation_the_centre_misses() {
    use ferrocert::verify::attack::{AttackConfig, check_candidate, pgd};
    let Some((model, prop, net, spec)) = shared_instance(
        "mnistfc",
        "onnx/mnist-net_256x6.onnx",
        "vnnlib/prop_1_0.05.vnnlib",
    ) else {
        return;
    };
    let region = &spec.regions[0];
    let all: Vec<usize> = (0..region.disjuncts.len()).collect();
    let cfg = AttackConfig {
        restarts: 32,
        ..AttackConfig::default()
    };
    assert!(
        pgd(&net, region, 0, &all, &[], &cfg, None).is_none(),
        "found without the corners: the test no longer shows what they add"
    );
    let opts = VerifyOptions {
        timeout: Some(std::time::Duration::from_secs(30)),
        ..Default::default()
    };
    let (run, err) = verify_files(&model, &prop, &opts);
    assert!(err.is_none(), "{err:?}");
    let Verdict::Falsified(cex) = &run.verdict else {
        panic!("{:?}", run.verdict);
    };
    assert_eq!(run.report.expect("report").method, "attack");
    let x32: Vec<f32> = cex.x.iter().map(|&v| v as f32).collect();
    assert!(check_candidate(&net, region, 0, &x32).is_some());
}

/// Where the root's alpha-CROWN optimisation cannot finish in its share of the time
/// (cifar10_resnet resnet_4b: about 36 s on one thread, against 0.3 of a 30 s limit), the
/// search starts from bounds optimised up to the node where it stopped and CROWN's after it,
/// the proof names that node (`alpha_nodes`), and the checker rebuilds the same bounds
/// without a clock. Before, such a root was thrown away and its time lost.
#[test]
fn a_root_cut_short_is_named_in_the_proof_and_rebuilt_by_the_checker() {
    let Some((model, prop, net, spec)) = shared_instance(
        "cifar10_resnet",
        "onnx/resnet_4b.onnx",
        "vnnlib_properties_pgd_filtered/resnet4b_pgd_filtered/prop_6_eps_0.004.vnnlib",
    ) else {
        return;
    };
    let opts = VerifyOptions {
        timeout: Some(std::time::Duration::from_secs(30)),
        ..Default::default()
    };
    let report = proved(&model, &prop, &opts);
    assert_eq!(report.proofs.len(), 1, "proved before the search");
    let p = &report.proofs[0];
    assert_eq!(p.lp_layers, Some(0));
    let k = p.alpha_nodes.expect("the root's optimisation finished");
    assert!(k < net.analysis.nodes.len(), "alpha_nodes {k}");
    let st = ferrocert::verify::proof::check(&net, &spec.regions[p.region], p, &opts)
        .expect("the proof checks");
    assert!(st.root_s > 0.0, "{st:?}");
    assert!(st.nodes >= p.nodes, "{} of {}", st.nodes, p.nodes);
}

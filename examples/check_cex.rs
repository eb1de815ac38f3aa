//! Debug helper: validate a VNN-COMP counterexample file with ferrocert's checker.
use ferrocert::network::Network;
use ferrocert::{report, spec, verify::attack};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let net = Network::load(a[1].as_ref()).unwrap();
    let sp = spec::parse_file(a[2].as_ref()).unwrap();
    let (x, y) = report::parse_counterexample(&std::fs::read_to_string(&a[3]).unwrap()).unwrap();
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    for (ri, r) in sp.regions.iter().enumerate() {
        println!(
            "region {ri}: contains {} violated_by(file y) {:?} check {:?}",
            r.contains(&x),
            r.violated_by(&y),
            attack::check_candidate(&net, r, ri, &x32).map(|c| c.disjunct)
        );
    }
}

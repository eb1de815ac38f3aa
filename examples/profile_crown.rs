//! Profiling helper: CROWN on one instance, repeated. `cargo run --release --example
//! profile_crown -- MODEL SPEC [REPS] [crown|alpha-crown]`.
use ferrocert::bounds::{self, BoundOptions, Method, Objective};
use ferrocert::domain::Intervals;
use ferrocert::network::Network;
use ferrocert::spec;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: profile_crown MODEL SPEC [REPS] [crown|alpha-crown]");
        std::process::exit(2);
    }
    let net = Network::load(args[1].as_ref()).expect("model");
    let sp = spec::parse_file(args[2].as_ref()).expect("spec");
    let reps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let method = if args.get(4).map(String::as_str) == Some("alpha-crown") {
        Method::AlphaCrown
    } else {
        Method::Crown
    };
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
    let opts = BoundOptions {
        method,
        ..Default::default()
    };
    let t = Instant::now();
    let mut l = vec![];
    for _ in 0..reps {
        l = bounds::objective_lower(
            &net.analysis,
            Intervals::new(r.lower.clone(), r.upper.clone()),
            1,
            &objs,
            &opts,
        );
    }
    println!(
        "{:.2} ms per run; bounds {:?}",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64,
        l
    );
}

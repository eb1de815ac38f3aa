//! Proof material for `unsat` found by branch and bound, and its checkers: the search tree of
//! input splitting ([`input`]) or of ReLU splitting ([`relu`]), which `replay --check-proofs`
//! re-bounds instead of searching again.

pub(crate) mod input;
pub(crate) mod relu;

use super::VerifyOptions;
use crate::network::Network;
use crate::spec::Region;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use input::{TreeNode, encode_tree};

/// What a search split.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Branching {
    /// Input dimensions (sub-boxes of the region).
    #[default]
    Input,
    /// ReLU pre-activations (sign constraints).
    Relu,
}

impl Branching {
    fn is_input(&self) -> bool {
        *self == Branching::Input
    }
}

/// The proof material of one region.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct RegionProof {
    pub region: usize,
    /// Disjuncts open when the search started (the others were refuted on the whole region
    /// by the stages before it; the checker bounds the root for every disjunct).
    pub disjuncts: Vec<usize>,
    /// What the search split: input dimensions (omitted) or ReLU pre-activations.
    #[serde(default, skip_serializing_if = "Branching::is_input")]
    pub branching: Branching,
    /// ReLU splitting started from the region's alpha-CROWN intermediate bounds (0) or, in
    /// proofs of earlier versions, from the LP stage's bounds with this many layers tightened
    /// by LP; absent: from CROWN's bounds. The checker rebuilds the same bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lp_layers: Option<usize>,
    /// With `lp_layers` 0: alpha-CROWN optimised the root's intermediate bounds only for the
    /// nodes before this index (its time ran out there), CROWN bounded the rest; absent: every
    /// node. The checker rebuilds the same bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha_nodes: Option<usize>,
    /// The search tree, preorder, hex: one byte per node for input splitting (`ff`: leaf,
    /// else the split dimension); for ReLU splitting see [`relu`].
    pub tree: String,
    /// Nodes of the tree.
    pub nodes: usize,
}

/// The proof material a search returns.
#[derive(Clone, Debug)]
pub struct Material {
    pub branching: Branching,
    /// The encoded tree.
    pub bytes: Vec<u8>,
    pub nodes: usize,
}

/// What a proof check bounded.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ProofStats {
    /// Nodes bounded (the tree's).
    pub nodes: usize,
    /// ReLU splitting: refutations whose stored parameters did not refute by themselves and
    /// were optimised again from them.
    pub reoptimized: usize,
    /// Seconds spent running the LP stage again (ReLU splitting that started from it).
    pub lp_stage_s: f64,
    /// Seconds spent rebuilding the alpha-CROWN bounds a ReLU-splitting search started from.
    pub root_s: f64,
}

/// Check the proof `p` of `region` on `net`; `Err` names the first node that does not check.
pub fn check(
    net: &Network,
    region: &Region,
    p: &RegionProof,
    opts: &VerifyOptions,
) -> Result<ProofStats, String> {
    match p.branching {
        Branching::Input => input::check(net, region, p, opts),
        Branching::Relu => relu::check(net, region, p, opts),
    }
}

/// The disjuncts the stages before the search refuted (those not in `p.disjuncts`) that
/// CROWN and alpha-CROWN on the region's box leave open; counts the bounding in `stats`.
fn open_before(
    net: &Network,
    region: &Region,
    p: &RegionProof,
    opts: &VerifyOptions,
    stats: &mut ProofStats,
) -> Vec<usize> {
    use crate::bounds::crown::{Crown, Record};
    let before: Vec<usize> = (0..region.disjuncts.len())
        .filter(|k| !p.disjuncts.contains(k))
        .collect();
    if before.is_empty() {
        return before;
    }
    stats.nodes += 1;
    let input = crate::domain::Intervals::new(region.lower.clone(), region.upper.clone());
    let cfg = crate::verify::bab::crown_cfg(opts, None);
    let c = Crown::build(&net.analysis, input, 1, cfg, None);
    let rec = Record::default();
    let mut b = crate::verify::bab::bound_batch(&c, region, &[&before[..]], opts, rec, None, &[]);
    b.open.swap_remove(0)
}

/// Hex of bytes.
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    (0..s.len() / 2)
        .map(|i| {
            u8::from_str_radix(s.get(2 * i..2 * i + 2).unwrap_or(""), 16)
                .map_err(|e| format!("hex digit at {}: {e}", 2 * i))
        })
        .collect()
}

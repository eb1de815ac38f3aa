//! Proof material of input splitting: the search tree.
//!
//! In preorder, per node the input dimension it was split on (at the midpoint `0.5 lo +
//! 0.5 hi`, recomputed exactly; bit 7 set when its children were bounded without its bounds
//! as seeds) or a leaf mark, one byte each (hex in the report). The checker first bounds the
//! region's box for the disjuncts the stages before the search refuted, then walks the tree:
//! it bounds each child with CROWN (seeded with its parent's bounds of every value where the
//! search was, sound on a sub-box), combined rows and alpha-CROWN, exactly the bounding the
//! search used (bounds are not monotone in their seeds, so it follows the search's choices),
//! and requires every disjunct still open at a node to be refuted by its children. The leaves
//! cover the region (bisection), so when every node checks, the property holds on the whole
//! region. It bounds each node once: no lookahead candidates, no attacks, no search
//! heuristics.

use super::{ProofStats, RegionProof, from_hex};
use crate::bounds::crown::{Crown, Record, Seeds};
use crate::domain::Intervals;
use crate::network::Network;
use crate::spec::Region;
use crate::verify::VerifyOptions;
use crate::verify::bab::{self, bound_batch, concat_bounds, crown_cfg};
use std::sync::Arc;

/// Leaf mark of the encoding.
const LEAF: u8 = 0xff;

/// Bit of a node byte: its children were bounded without its bounds as seeds.
const UNSEEDED: u8 = 0x80;

/// A node of a search tree: split dimension, children, and whether the children were
/// bounded with the node's bounds as seeds.
pub type TreeNode = (usize, usize, usize, bool);

/// The preorder encoding of a search tree (`tree[id]`; `None` for a leaf); `None` when a
/// dimension does not fit the encoding (127 or more inputs).
pub fn encode_tree(tree: &[Option<TreeNode>]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(tree.len());
    let mut stack = vec![0usize];
    while let Some(n) = stack.pop() {
        match tree.get(n).copied().flatten() {
            Some((dim, a, b, seeded)) => {
                let d = u8::try_from(dim).ok().filter(|&d| d < 0x7f)?;
                out.push(if seeded { d } else { d | UNSEEDED });
                stack.push(b);
                stack.push(a);
            }
            None => out.push(LEAF),
        }
    }
    Some(out)
}

/// Children of every node of a preorder encoding (`None` for leaves). Iterative, so a deep
/// tree (or a crafted one) cannot exhaust the stack.
fn decode(bytes: &[u8]) -> Result<Vec<Option<TreeNode>>, String> {
    let mut nodes: Vec<Option<TreeNode>> = vec![None; bytes.len()];
    // Internal nodes waiting for children: (node, first child once known).
    let mut open: Vec<(usize, Option<usize>)> = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        // Node `i` is the next child of the innermost waiting node.
        if let Some(top) = open.last_mut() {
            if top.1.is_none() {
                top.1 = Some(i);
            } else {
                let (parent, first) = open.pop().unwrap_or((0, None));
                let pb = bytes[parent];
                nodes[parent] = Some((
                    (pb & !UNSEEDED) as usize,
                    first.unwrap_or(0),
                    i,
                    pb & UNSEEDED == 0,
                ));
            }
        } else if i > 0 {
            return Err(format!("{} bytes after the tree", bytes.len() - i));
        }
        if b != LEAF {
            open.push((i, None));
        }
    }
    if !open.is_empty() || bytes.is_empty() {
        return Err("tree ends early".into());
    }
    Ok(nodes)
}

struct Pending {
    node: usize,
    lo: Vec<f64>,
    hi: Vec<f64>,
    open: Vec<usize>,
    seeds: Option<Arc<Vec<Option<Intervals>>>>,
}

/// Check the input-splitting proof `p` of `region` on `net`; `Err` names the first node that
/// does not check.
pub(super) fn check(
    net: &Network,
    region: &Region,
    p: &RegionProof,
    opts: &VerifyOptions,
) -> Result<ProofStats, String> {
    let g = &net.analysis;
    let ni = g.input_numel();
    let tree = decode(&from_hex(&p.tree)?)?;
    if tree.iter().flatten().any(|&(d, _, _, _)| d >= ni) {
        return Err("a split dimension is not an input".into());
    }
    let mut stats = ProofStats::default();
    // The disjuncts refuted before the search, on the whole region.
    let left = super::open_before(net, region, p, opts, &mut stats);
    if !left.is_empty() {
        return Err(format!(
            "disjuncts {left:?} are not refuted on the region's box"
        ));
    }
    let mut queue = Vec::new();
    if !p.disjuncts.is_empty() {
        let Some((dim, a, b, _)) = tree[0] else {
            return Err("the search's disjuncts are open and the tree has no split".into());
        };
        let (lo, hi) = (region.lower.clone(), region.upper.clone());
        let mid = 0.5 * lo[dim] + 0.5 * hi[dim];
        let (mut hi1, mut lo2) = (hi.clone(), lo.clone());
        hi1[dim] = mid;
        lo2[dim] = mid;
        queue.push(Pending {
            node: b,
            lo: lo2,
            hi,
            open: p.disjuncts.clone(),
            seeds: None,
        });
        queue.push(Pending {
            node: a,
            lo,
            hi: hi1,
            open: p.disjuncts.clone(),
            seeds: None,
        });
    }
    const BATCH: usize = 64;
    while !queue.is_empty() {
        let take = queue.len().min(BATCH);
        let batch: Vec<Pending> = queue.split_off(queue.len() - take);
        stats.nodes += batch.len();
        // Seeded and unseeded nodes are bounded apart (a batch shares its seeding).
        let (seeded, bare): (Vec<Pending>, Vec<Pending>) =
            batch.into_iter().partition(|q| q.seeds.is_some());
        for group in [seeded, bare] {
            if !group.is_empty() {
                queue.extend(bound_nodes(net, region, &tree, group, opts)?);
            }
        }
    }
    Ok(stats)
}

/// Bound one batch of tree nodes (all seeded or all not); their children where disjuncts
/// stay open, or the first node left open without children.
fn bound_nodes(
    net: &Network,
    region: &Region,
    tree: &[Option<TreeNode>],
    batch: Vec<Pending>,
    opts: &VerifyOptions,
) -> Result<Vec<Pending>, String> {
    let g = &net.analysis;
    let mut queue = Vec::new();
    {
        let input = Intervals::new(
            batch.iter().flat_map(|q| q.lo.iter().copied()).collect(),
            batch.iter().flat_map(|q| q.hi.iter().copied()).collect(),
        );
        let parent: Option<Vec<&Vec<Option<Intervals>>>> =
            batch.iter().map(|q| q.seeds.as_deref()).collect();
        let seeds = parent.map(|pb| Seeds {
            bounds: concat_bounds(&pb),
            splits: Vec::new(),
            skip_before: 0,
        });
        let c = Crown::build(g, input, batch.len(), crown_cfg(opts, None), seeds.as_ref());
        let opens: Vec<&[usize]> = batch.iter().map(|q| &q.open[..]).collect();
        let boxes: Vec<(&[f64], &[f64])> = batch.iter().map(|q| (&q.lo[..], &q.hi[..])).collect();
        let mut open = bab::bound_boxes(&c, region, &boxes, &opens).open;
        let own: Vec<Arc<Vec<Option<Intervals>>>> = (0..batch.len())
            .map(|q| Arc::new(c.domain_bounds(q)))
            .collect();
        if opts.method == crate::bounds::Method::AlphaCrown && open.iter().any(|o| !o.is_empty()) {
            let reuse = Seeds {
                bounds: concat_bounds(&own.iter().map(|b| &**b).collect::<Vec<_>>()),
                splits: Vec::new(),
                skip_before: g.nodes.len(),
            };
            let input = Intervals::new(
                batch.iter().flat_map(|q| q.lo.iter().copied()).collect(),
                batch.iter().flat_map(|q| q.hi.iter().copied()).collect(),
            );
            let sub = Crown::build(g, input, batch.len(), crown_cfg(opts, None), Some(&reuse));
            let so: Vec<&[usize]> = open.iter().map(|o| &o[..]).collect();
            open = bound_batch(&sub, region, &so, opts, Record::default(), None, &[]).open;
        }
        for (t, q) in batch.into_iter().enumerate() {
            if open[t].is_empty() {
                continue;
            }
            let Some((dim, a, b, seeded)) = tree[q.node] else {
                return Err(format!(
                    "node {} (box {:?} .. {:?}) leaves disjuncts {:?} open and has no children",
                    q.node, q.lo, q.hi, open[t]
                ));
            };
            let mid = 0.5 * q.lo[dim] + 0.5 * q.hi[dim];
            let (mut hi1, mut lo2) = (q.hi.clone(), q.lo.clone());
            hi1[dim] = mid;
            lo2[dim] = mid;
            let o = std::mem::take(&mut open[t]);
            let seeds = seeded.then(|| own[t].clone());
            queue.push(Pending {
                node: b,
                lo: lo2,
                hi: q.hi,
                open: o.clone(),
                seeds: seeds.clone(),
            });
            queue.push(Pending {
                node: a,
                lo: q.lo,
                hi: hi1,
                open: o,
                seeds,
            });
        }
    }
    Ok(queue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::proof::{from_hex, to_hex};

    /// A random tree of `n` splits over 5 inputs, as the search records it.
    fn random_tree(n: usize, seed: u64) -> Vec<Option<TreeNode>> {
        let mut rng = crate::verify::attack::Rng::new(seed, 1);
        let mut tree: Vec<Option<TreeNode>> = vec![None];
        let mut leaves = vec![0usize];
        for _ in 0..n {
            let k = (rng.next_u64() as usize) % leaves.len();
            let leaf = leaves.swap_remove(k);
            let (a, b) = (tree.len(), tree.len() + 1);
            tree.push(None);
            tree.push(None);
            let dim = (rng.next_u64() % 5) as usize;
            tree[leaf] = Some((dim, a, b, rng.next_u64() % 2 == 0));
            leaves.push(a);
            leaves.push(b);
        }
        tree
    }

    /// The shape of the subtree at `n`, independent of node numbering.
    fn shape(t: &[Option<TreeNode>], n: usize) -> String {
        match t[n] {
            Some((d, a, b, s)) => format!("({d}{s} {} {})", shape(t, a), shape(t, b)),
            None => ".".into(),
        }
    }

    #[test]
    fn encoding_round_trips_and_malformed_trees_are_refused() {
        for seed in 0..50 {
            let t = random_tree(seed as usize * 7, seed);
            let bytes = encode_tree(&t).expect("encodes");
            assert_eq!(bytes.len(), t.len());
            let back = decode(&from_hex(&to_hex(&bytes)).expect("hex")).expect("decodes");
            assert_eq!(shape(&t, 0), shape(&back, 0), "seed {seed}");
            if bytes.len() > 1 {
                assert!(
                    decode(&bytes[..bytes.len() - 1]).is_err(),
                    "truncated, seed {seed}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(LEAF);
            assert!(decode(&longer).is_err(), "trailing byte, seed {seed}");
        }
        assert!(decode(&[]).is_err());
        assert!(from_hex("f").is_err() && from_hex("zz").is_err());
        // A deep chain decodes without recursion.
        let mut deep = vec![0u8; 200_000];
        deep.extend(std::iter::repeat_n(LEAF, 200_001));
        assert!(decode(&deep).is_ok());
    }
}

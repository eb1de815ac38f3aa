//! Proof material of ReLU splitting: the search tree with the parameters of each refuting
//! bound, so a checker rebuilds every node's intermediate bounds as the search did but
//! evaluates each refutation in one pass instead of optimising it again.
//!
//! Encoding (preorder, hex in the report; `varint` is LEB128): per node
//! `varint skip` (the first graph node the search recomputed for it; earlier values kept the
//! parent's bounds), `varint n`, then `n` refutations, then one tag byte: `0` split (then
//! `varint layer, varint element` of the ReLU input split, the inactive child `z <= 0`, the
//! active child `z >= 0`), `1` closed, `2` infeasible (its bounds are empty), `3` refuted by
//! the LP of the domain. A refutation is `varint disjunct, varint constraint, u8 kind`: kind
//! `0` plain CROWN; kind `1` then the alpha/beta-CROWN parameters of that row: per slope node
//! ([`alpha::slope_nodes`]) `varint count` and one byte `round(255 alpha)` per neuron undecided
//! there, then `varint count` and the split multipliers as f32 (little endian).
//!
//! Why a check is a proof: the two children of a split cover their parent (`z_j <= 0` or
//! `z_j >= 0`), so the closed, infeasible and LP-refuted leaves cover the region. Every bound
//! the checker computes is sound on its node whatever the material says: seeds are the
//! parent's bounds (valid on the child), split constraints only clamp, any `skip` keeps sound
//! seeds, any slope in `[leak, 1]` and any multiplier `>= 0` gives a sound bound (the
//! dequantised slopes are clamped there, multipliers at 0), and LP refutations use safe dual
//! bounds. A refutation whose stored parameters do not refute (e.g. quantisation) is optimised
//! again from them, which is also sound; the check only fails when that does not refute
//! either.

use super::{Branching, Material, ProofStats, RegionProof, from_hex};
use crate::bounds::alpha::{self, AlphaConfig, Warm};
use crate::bounds::crown::{Crown, Record, Seeds};
use crate::domain::Intervals;
use crate::ir::{Op, ValueId};
use crate::network::Network;
use crate::spec::Region;
use crate::transformers::relax;
use crate::verify::bab::{concat_bounds, crown_cfg, lp_refutes_domain};
use crate::verify::{VerifyOptions, refuted};
use std::sync::Arc;

/// Largest encoded tree kept as proof material (twice that in the report's hex): a search
/// of this size takes minutes, and a report of tens of megabytes serves nobody.
pub(crate) const MAX_BYTES: usize = 8 << 20;

/// How a node of the tree ends.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum End {
    /// Not bounded yet (the search never leaves one in a finished tree).
    Pending,
    /// Split on element `elem` of the `layer`-th ReLU's input; children inactive, active.
    Split {
        layer: usize,
        elem: usize,
        kids: [usize; 2],
    },
    /// Every disjunct open there refuted.
    Closed,
    /// Its bounds are empty: no input satisfies its splits.
    Infeasible,
    /// The LP of the domain refutes what is left open.
    Lp,
}

/// One refutation: disjunct, the constraint whose bound refuted it, and the encoded
/// parameters of that bound (`None`: plain CROWN).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Refutation {
    pub k: usize,
    pub ci: usize,
    pub params: Option<Vec<u8>>,
}

/// A node of the recorded tree.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub skip: usize,
    pub refuted: Vec<Refutation>,
    pub end: End,
}

/// The tree a ReLU-splitting search records, node 0 the root.
#[derive(Default)]
pub(crate) struct Recorder {
    pub nodes: Vec<Node>,
}

impl Recorder {
    /// A new node (pending); returns its index.
    pub fn add(&mut self) -> usize {
        self.nodes.push(Node {
            skip: 0,
            refuted: Vec::new(),
            end: End::Pending,
        });
        self.nodes.len() - 1
    }

    /// The material of the finished tree; `None` if a node is still pending or the encoding
    /// is larger than [`MAX_BYTES`] (the region is then re-run instead of checked).
    pub fn finish(&self) -> Option<Material> {
        let bytes = encode(&self.nodes).filter(|b| b.len() <= MAX_BYTES)?;
        Some(Material {
            branching: Branching::Relu,
            bytes,
            nodes: self.nodes.len(),
        })
    }
}

/// The ReLU nodes' input values, in graph order (a split names its layer by position here).
pub(crate) fn relu_inputs(g: &crate::ir::Graph) -> Vec<(usize, ValueId)> {
    g.nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.op, Op::Relu))
        .map(|(i, n)| (i, n.inputs[0]))
        .collect()
}

fn put_varint(out: &mut Vec<u8>, mut x: usize) {
    loop {
        let b = (x & 0x7f) as u8;
        x >>= 7;
        if x == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A reader over the encoding; every read names what was cut short.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let x = *self
            .b
            .get(self.at)
            .ok_or_else(|| format!("tree ends early at byte {}", self.at))?;
        self.at += 1;
        Ok(x)
    }

    fn varint(&mut self) -> Result<usize, String> {
        let mut x: usize = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            x |= ((b & 0x7f) as usize)
                .checked_shl(shift)
                .ok_or("varint too long")?;
            if b & 0x80 == 0 {
                return Ok(x);
            }
        }
        Err(format!("varint too long at byte {}", self.at))
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("tree ends early at byte {}", self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
}

/// The preorder encoding of `nodes` (root 0); `None` if a node is pending.
fn encode(nodes: &[Node]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        let n = nodes.get(i)?;
        put_varint(&mut out, n.skip);
        put_varint(&mut out, n.refuted.len());
        for r in &n.refuted {
            put_varint(&mut out, r.k);
            put_varint(&mut out, r.ci);
            match &r.params {
                None => out.push(0),
                Some(p) => {
                    out.push(1);
                    out.extend_from_slice(p);
                }
            }
        }
        match &n.end {
            End::Pending => return None,
            End::Split { layer, elem, kids } => {
                out.push(0);
                put_varint(&mut out, *layer);
                put_varint(&mut out, *elem);
                stack.push(kids[1]);
                stack.push(kids[0]);
            }
            End::Closed => out.push(1),
            End::Infeasible => out.push(2),
            End::Lp => out.push(3),
        }
    }
    Some(out)
}

/// Read one parameter block (its extent only; [`decode_params`] interprets it).
fn skip_params(r: &mut Reader) -> Result<Vec<u8>, String> {
    let start = r.at;
    let nodes = r.varint()?;
    for _ in 0..nodes {
        let n = r.varint()?;
        r.bytes(n)?;
    }
    let nb = r.varint()?;
    r.bytes(nb.checked_mul(4).ok_or("too many multipliers")?)?;
    Ok(r.b[start..r.at].to_vec())
}

/// The nodes of an encoded tree (root 0). Iterative, so a deep or crafted tree cannot
/// exhaust the stack.
fn decode(bytes: &[u8]) -> Result<Vec<Node>, String> {
    let mut r = Reader { b: bytes, at: 0 };
    let mut nodes: Vec<Node> = Vec::new();
    // Split nodes still waiting for a child: (node, children so far).
    let mut waiting: Vec<(usize, usize)> = Vec::new();
    loop {
        let id = nodes.len();
        if let Some((parent, got)) = waiting.last_mut() {
            if let End::Split { kids, .. } = &mut nodes[*parent].end {
                kids[*got] = id;
            }
            *got += 1;
            if *got == 2 {
                waiting.pop();
            }
        } else if id > 0 {
            break;
        }
        let skip = r.varint()?;
        let nref = r.varint()?;
        let mut refuted = Vec::new();
        for _ in 0..nref {
            let k = r.varint()?;
            let ci = r.varint()?;
            let params = match r.byte()? {
                0 => None,
                1 => Some(skip_params(&mut r)?),
                t => return Err(format!("unknown refutation kind {t} at byte {}", r.at - 1)),
            };
            refuted.push(Refutation { k, ci, params });
        }
        let end = match r.byte()? {
            0 => {
                let layer = r.varint()?;
                let elem = r.varint()?;
                waiting.push((id, 0));
                End::Split {
                    layer,
                    elem,
                    kids: [0, 0],
                }
            }
            1 => End::Closed,
            2 => End::Infeasible,
            3 => End::Lp,
            t => return Err(format!("unknown node tag {t} at byte {}", r.at - 1)),
        };
        nodes.push(Node { skip, refuted, end });
    }
    if r.at != bytes.len() {
        return Err(format!("{} bytes after the tree", bytes.len() - r.at));
    }
    Ok(nodes)
}

/// The undecided neurons of domain `d` at slope node `idx` of `c`.
fn undecided(c: &Crown, idx: usize, d: usize) -> Vec<usize> {
    let v = c.g.nodes[idx].inputs[0];
    let n = c.g.values[v].numel();
    let Some(b) = c.bounds[v].as_ref() else {
        return Vec::new();
    };
    (0..n)
        .filter(|&j| relax::unstable(b.lo[d * n + j], b.hi[d * n + j]))
        .collect()
}

/// The parameters `w` of a row of domain `d` of `c`, encoded: slopes of undecided neurons
/// quantised to 1/255, multipliers as f32.
pub(crate) fn encode_params(c: &Crown, d: usize, w: &Warm) -> Vec<u8> {
    let mut out = Vec::new();
    let nodes = alpha::slope_nodes(c, c.g.output);
    put_varint(&mut out, nodes.len());
    for &(idx, _) in &nodes {
        let un = undecided(c, idx, d);
        put_varint(&mut out, un.len());
        let a = w.alphas.get(idx).and_then(|a| a.as_ref());
        for &j in &un {
            let x = a.and_then(|a| a.get(j)).copied().unwrap_or(1.0);
            out.push((x.clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    put_varint(&mut out, w.betas.len());
    for b in &w.betas {
        out.extend_from_slice(&b.to_le_bytes());
    }
    out
}

/// Parameters of a row of domain `d` of `c` from their encoding; `None` when the encoding
/// does not match the domain's undecided neurons or splits. Slopes are clamped to
/// `[leak, 1]` and multipliers to `>= 0` (0 for NaN), where every value is sound.
fn decode_params(c: &Crown, d: usize, bytes: &[u8]) -> Option<Warm> {
    let g = c.g;
    let mut r = Reader { b: bytes, at: 0 };
    let nodes = alpha::slope_nodes(c, g.output);
    if r.varint().ok()? != nodes.len() {
        return None;
    }
    let mut alphas: Vec<Option<Vec<f32>>> = vec![None; g.nodes.len()];
    for &(idx, leak) in &nodes {
        let un = undecided(c, idx, d);
        if r.varint().ok()? != un.len() {
            return None;
        }
        let q = r.bytes(un.len()).ok()?;
        let mut a = vec![1.0f32; g.values[g.nodes[idx].inputs[0]].numel()];
        for (&j, &x) in un.iter().zip(q) {
            a[j] = ((x as f64 / 255.0).clamp(leak, 1.0)) as f32;
        }
        alphas[idx] = Some(a);
    }
    let nb = r.varint().ok()?;
    if nb != c.splits[d].len() {
        return None;
    }
    let raw = r.bytes(nb.checked_mul(4)?).ok()?;
    let betas = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).max(0.0))
        .collect();
    (r.at == bytes.len()).then_some(Warm { alphas, betas })
}

/// A node waiting to be checked.
struct Pending {
    node: usize,
    splits: Vec<(ValueId, usize, bool)>,
    open: Vec<usize>,
    seeds: Arc<Vec<Option<Intervals>>>,
}

/// Check the ReLU-splitting proof `p` of `region` on `net`; `Err` names the first node that
/// does not check.
pub(super) fn check(
    net: &Network,
    region: &Region,
    p: &RegionProof,
    opts: &VerifyOptions,
) -> Result<ProofStats, String> {
    let g = &net.analysis;
    let tree = decode(&from_hex(&p.tree)?)?;
    let relus = relu_inputs(g);
    for (i, n) in tree.iter().enumerate() {
        if n.skip > g.nodes.len() {
            return Err(format!("node {i}: skip {} is past the graph", n.skip));
        }
        if let End::Split { layer, elem, .. } = n.end {
            let ok = relus
                .get(layer)
                .is_some_and(|&(_, v)| elem < g.values[v].numel());
            if !ok {
                return Err(format!("node {i}: no ReLU input {layer}, element {elem}"));
            }
        }
    }
    let mut stats = ProofStats::default();
    // The stages before the search: CROWN and alpha-CROWN on the region, then the root's
    // bounds (or, in proofs of earlier versions, the LP stage).
    let left = super::open_before(net, region, p, opts, &mut stats);
    let mut root = vec![None; g.values.len()];
    if !left.is_empty() || p.lp_layers.is_some_and(|n| n > 0) {
        let Some(limits) = &opts.lp else {
            return Err("the proof needs the LP stage, which these options do not run".into());
        };
        // Only the disjuncts refuted before the search need its LPs (the search's may have
        // run out of time there; here they would have no limit).
        let t0 = std::time::Instant::now();
        let st = crate::verify::lp_stage(net, region, &left, opts, limits, None, p.lp_layers);
        stats.lp_stage_s += t0.elapsed().as_secs_f64();
        if let Some(k) = st.left.first() {
            return Err(format!(
                "disjunct {k} is not refuted on the region before the search"
            ));
        }
        if let Some(n) = p.lp_layers {
            if st.layers != n {
                return Err(format!(
                    "the LP stage tightened {} layers, the search started after {n}",
                    st.layers
                ));
            }
            root = st
                .bounds
                .ok_or("the LP stage gave no bounds to start from")?;
        }
    } else if p.lp_layers == Some(0) {
        let t0 = std::time::Instant::now();
        root = crate::verify::root_bounds(net, region, opts, None, p.alpha_nodes)
            .ok_or("no alpha-CROWN bounds to start from")?
            .bounds;
        stats.root_s += t0.elapsed().as_secs_f64();
    }
    if p.disjuncts.is_empty() {
        return Ok(stats);
    }
    let mut queue = vec![Pending {
        node: 0,
        splits: Vec::new(),
        open: p.disjuncts.clone(),
        seeds: Arc::new(root),
    }];
    const BATCH: usize = 16;
    while !queue.is_empty() {
        let take = queue.len().min(BATCH);
        let batch: Vec<Pending> = queue.split_off(queue.len() - take);
        stats.nodes += batch.len();
        // A batch shares where it recomputes from, as the search's did.
        let mut groups: Vec<(usize, Vec<Pending>)> = Vec::new();
        for q in batch {
            let skip = tree[q.node].skip;
            match groups.iter_mut().find(|e| e.0 == skip) {
                Some(e) => e.1.push(q),
                None => groups.push((skip, vec![q])),
            }
        }
        for (skip, group) in groups {
            queue.extend(check_group(
                net, region, &relus, &tree, group, skip, opts, &mut stats,
            )?);
        }
    }
    Ok(stats)
}

/// Check one group of nodes sharing `skip`; returns their children.
#[allow(clippy::too_many_arguments)]
fn check_group(
    net: &Network,
    region: &Region,
    relus: &[(usize, ValueId)],
    tree: &[Node],
    group: Vec<Pending>,
    skip: usize,
    opts: &VerifyOptions,
    stats: &mut ProofStats,
) -> Result<Vec<Pending>, String> {
    let g = &net.analysis;
    let nb = group.len();
    let input = Intervals::new(
        (0..nb).flat_map(|_| region.lower.iter().copied()).collect(),
        (0..nb).flat_map(|_| region.upper.iter().copied()).collect(),
    );
    let seeds = Seeds {
        bounds: concat_bounds(&group.iter().map(|q| &*q.seeds).collect::<Vec<_>>()),
        splits: group
            .iter()
            .enumerate()
            .flat_map(|(b, q)| q.splits.iter().map(move |&(v, j, a)| (v, b, j, a)))
            .collect(),
        skip_before: skip,
    };
    let c = Crown::build(g, input, nb, crown_cfg(opts, None), Some(&seeds));
    // Every refutation's row: (domain, disjunct, constraint, parameters).
    let mut plain: Vec<(usize, usize, usize)> = Vec::new();
    let mut tuned: Vec<(usize, usize, usize, Option<Warm>)> = Vec::new();
    for (b, q) in group.iter().enumerate() {
        for rf in &tree[q.node].refuted {
            if region
                .disjuncts
                .get(rf.k)
                .and_then(|d| d.get(rf.ci))
                .is_none()
            {
                return Err(format!(
                    "node {}: no constraint {} of disjunct {}",
                    q.node, rf.ci, rf.k
                ));
            }
            match &rf.params {
                None => plain.push((b, rf.k, rf.ci)),
                Some(bytes) => tuned.push((b, rf.k, rf.ci, decode_params(&c, b, bytes))),
            }
        }
    }
    let fill = |k: usize, ci: usize, a: &mut [f64]| {
        for &(j, v) in &region.disjuncts[k][ci].coeffs {
            a[j] += v;
        }
    };
    let mut holds: Vec<Vec<usize>> = vec![Vec::new(); nb];
    let mut fails: Vec<(usize, usize, usize)> = Vec::new();
    if !plain.is_empty() {
        let doms: Vec<usize> = plain.iter().map(|r| r.0).collect();
        let pass = c.passes(
            g.output,
            &doms,
            None,
            |r, a| fill(plain[r].1, plain[r].2, a),
            Record::default(),
        );
        for (&(b, k, ci), &l) in plain.iter().zip(&pass.lower) {
            if refuted(&region.disjuncts[k][ci], l) {
                holds[b].push(k);
            } else {
                fails.push((b, k, ci));
            }
        }
    }
    if !tuned.is_empty() {
        let doms: Vec<usize> = tuned.iter().map(|r| r.0).collect();
        let warm: Vec<Option<&Warm>> = tuned.iter().map(|r| r.3.as_ref()).collect();
        let once = AlphaConfig {
            iterations: 0,
            deadline: None,
            ..opts.alpha
        };
        let tfill = |r: usize, a: &mut [f64]| fill(tuned[r].1, tuned[r].2, a);
        let (lower, _) =
            alpha::optimize_warm(&c, g.output, &doms, tfill, &once, &warm, |_, _| false);
        // Rows the stored parameters do not refute by themselves: optimise from them.
        let again: Vec<usize> = (0..tuned.len())
            .filter(|&r| !refuted(&region.disjuncts[tuned[r].1][tuned[r].2], lower[r]))
            .collect();
        let mut lower = lower;
        if !again.is_empty() {
            stats.reoptimized += again.len();
            let cfg = AlphaConfig {
                deadline: None,
                ..opts.alpha
            };
            let adoms: Vec<usize> = again.iter().map(|&r| doms[r]).collect();
            let awarm: Vec<Option<&Warm>> = again.iter().map(|&r| warm[r]).collect();
            let (l2, _) = alpha::optimize_warm(
                &c,
                g.output,
                &adoms,
                |t, a| tfill(again[t], a),
                &cfg,
                &awarm,
                |t, l| refuted(&region.disjuncts[tuned[again[t]].1][tuned[again[t]].2], l),
            );
            for (&r, l) in again.iter().zip(l2) {
                lower[r] = lower[r].max(l);
            }
        }
        for (r, &(b, k, ci, _)) in tuned.iter().enumerate() {
            if refuted(&region.disjuncts[k][ci], lower[r]) {
                holds[b].push(k);
            } else {
                fails.push((b, k, ci));
            }
        }
    }
    if let Some(&(b, k, ci)) = fails.first() {
        return Err(format!(
            "node {}: constraint {ci} does not refute disjunct {k}",
            group[b].node
        ));
    }
    let mut kids = Vec::new();
    for (b, q) in group.into_iter().enumerate() {
        let open: Vec<usize> = q
            .open
            .iter()
            .copied()
            .filter(|k| !holds[b].contains(k))
            .collect();
        let node = &tree[q.node];
        let bad = |what: &str| Err(format!("node {}: {what}", q.node));
        match &node.end {
            End::Pending => return bad("pending"),
            End::Closed if !open.is_empty() => {
                return bad(&format!("disjuncts {open:?} are left open"));
            }
            End::Closed => {}
            End::Infeasible if !c.infeasible(b) => return bad("its bounds are not empty"),
            End::Infeasible => {}
            End::Lp => {
                if !lp_refutes_domain(&c, b, region, &open, opts, None) {
                    return bad(&format!("its LP does not refute disjuncts {open:?}"));
                }
            }
            End::Split {
                layer,
                elem,
                kids: k2,
            } => {
                let v = relus[*layer].1;
                let own = Arc::new(c.domain_bounds(b));
                for (t, active) in [(0, false), (1, true)] {
                    let mut splits = q.splits.clone();
                    splits.push((v, *elem, active));
                    kids.push(Pending {
                        node: k2[t],
                        splits,
                        open: open.clone(),
                        seeds: own.clone(),
                    });
                }
            }
        }
    }
    Ok(kids)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random finished tree of `n` splits.
    fn random_tree(n: usize, seed: u64) -> Vec<Node> {
        let mut rng = crate::verify::attack::Rng::new(seed, 1);
        let leaf = |rng: &mut crate::verify::attack::Rng| Node {
            skip: (rng.next_u64() % 9) as usize,
            refuted: (0..rng.next_u64() % 3)
                .map(|i| Refutation {
                    k: i as usize,
                    ci: (rng.next_u64() % 300) as usize,
                    params: rng.next_u64().is_multiple_of(2).then(|| {
                        let mut p = Vec::new();
                        put_varint(&mut p, 1);
                        put_varint(&mut p, 3);
                        p.extend([0, 128, 255]);
                        put_varint(&mut p, 1);
                        p.extend(0.5f32.to_le_bytes());
                        p
                    }),
                })
                .collect(),
            end: match rng.next_u64() % 3 {
                0 => End::Closed,
                1 => End::Infeasible,
                _ => End::Lp,
            },
        };
        let mut nodes = vec![leaf(&mut rng)];
        let mut leaves = vec![0usize];
        for _ in 0..n {
            let i = leaves.swap_remove((rng.next_u64() as usize) % leaves.len());
            let (a, b) = (nodes.len(), nodes.len() + 1);
            nodes.push(leaf(&mut rng));
            nodes.push(leaf(&mut rng));
            nodes[i].end = End::Split {
                layer: (rng.next_u64() % 4) as usize,
                elem: (rng.next_u64() % 1000) as usize,
                kids: [a, b],
            };
            leaves.extend([a, b]);
        }
        nodes
    }

    /// The tree below `i` with node numbering removed.
    fn shape(t: &[Node], i: usize) -> String {
        let n = &t[i];
        let head = format!("{} {:?}", n.skip, n.refuted);
        match &n.end {
            End::Split { layer, elem, kids } => format!(
                "({head} {layer}:{elem} {} {})",
                shape(t, kids[0]),
                shape(t, kids[1])
            ),
            e => format!("({head} {e:?})"),
        }
    }

    #[test]
    fn encoding_round_trips_and_malformed_trees_are_refused() {
        for seed in 0..40 {
            let t = random_tree(seed as usize * 5, seed);
            let bytes = encode(&t).expect("finished tree");
            let back = decode(&bytes).expect("decodes");
            assert_eq!(back.len(), t.len());
            assert_eq!(shape(&t, 0), shape(&back, 0), "seed {seed}");
            assert!(decode(&bytes[..bytes.len() - 1]).is_err(), "truncated");
            let mut longer = bytes.clone();
            longer.push(1);
            assert!(decode(&longer).is_err(), "trailing byte");
        }
        let mut pending = random_tree(3, 7);
        pending[2].end = End::Pending;
        assert!(encode(&pending).is_none());
        assert!(decode(&[]).is_err());
        // A deep chain of splits decodes without recursion.
        let mut deep = Vec::new();
        for _ in 0..100_000 {
            deep.extend([0, 0, 0, 0, 0]);
        }
        for _ in 0..100_001 {
            deep.extend([0, 0, 1]);
        }
        assert_eq!(decode(&deep).map(|n| n.len()), Ok(200_001));
    }
}

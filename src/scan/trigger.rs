//! Trigger reverse-engineering (Neural Cleanse, Wang et al. 2019).
//!
//! For a label `t`, find a mask `m` (one value in `[0, 1]` per pixel position, shared over
//! channels) and a pattern `p` (in the valid input range) such that the stamped inputs
//! `(1 - m) x + m p` are classified as `t`, minimising
//! `mean_x CE(f(stamped x), t) + lambda |m|_1`. Mask and pattern are tanh-parameterised
//! (`m = (tanh w + 1) / 2`, `p = lo + (hi - lo) (tanh v + 1) / 2`) so plain Adam keeps them in
//! range. Every `lambda_every` steps the L1 weight is multiplied by `lambda_factor` when the
//! current trigger reaches the target attack success rate and divided by it otherwise; the
//! smallest mask that reached the target is kept. As in the original implementation the search
//! stops early once the weight has moved both ways and the best mask has not shrunk by 1 % for
//! `early_stop_patience` periods (0 turns this off).
//!
//! Gradients come from the batched reverse mode ([`crate::eval::grad`]) in float32 over all
//! clean inputs at once; the kept trigger's success rate is then measured with the deployed
//! evaluator. The result is *empirical*: a small mask shows that a trigger exists, a large one
//! does not prove that none does.

use super::{Layout, Progress, ScanConfig, ScanData, ScanError, argmax, predict};
use crate::eval::{self, grad};
use crate::verify::attack::Rng;

/// A recovered trigger.
#[derive(Clone, Debug, Default)]
pub struct Trigger {
    pub label: usize,
    /// One value in `[0, 1]` per pixel position (row-major).
    pub mask: Vec<f32>,
    /// One value per input element, in the model's input layout.
    pub pattern: Vec<f32>,
    pub mask_l1: f64,
    /// Whether the optimisation reached the target attack success rate.
    pub reached: bool,
    /// Success rate on all clean inputs, deployed float32 evaluation.
    pub attack_success_rate: f64,
    /// Adam steps run (fewer than configured after an early stop).
    pub steps: usize,
}

/// Stamp `mask`/`pattern` onto every item of `x` (`n` items of `layout.numel()` values).
pub fn stamp(layout: &Layout, x: &[f32], mask: &[f32], pattern: &[f32], out: &mut Vec<f32>) {
    let dim = layout.numel();
    out.clear();
    out.reserve(x.len());
    // Per input element, the mask value of its pixel position.
    let m: Vec<f32> = (0..dim).map(|i| mask[layout.position_of(i)]).collect();
    for item in x.chunks_exact(dim) {
        out.extend(
            item.iter()
                .zip(&m)
                .zip(pattern)
                .map(|((&xv, &mv), &pv)| (1.0 - mv) * xv + mv * pv),
        );
    }
}

/// Adam state for one parameter vector (PyTorch's defaults: betas 0.9, 0.999, eps 1e-8).
struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl Adam {
    fn new(n: usize) -> Self {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    fn step(&mut self, x: &mut [f64], g: &[f64], lr: f64) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        self.t += 1;
        let (c1, c2) = (1.0 - B1.powi(self.t), 1.0 - B2.powi(self.t));
        for i in 0..x.len() {
            self.m[i] = B1 * self.m[i] + (1.0 - B1) * g[i];
            self.v[i] = B2 * self.v[i] + (1.0 - B2) * g[i] * g[i];
            x[i] -= lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + 1e-8);
        }
    }
}

/// Search the smallest trigger for label `t`; see the module documentation.
pub fn reverse_engineer(
    d: &ScanData,
    t: usize,
    cfg: &ScanConfig,
    progress: &dyn Progress,
) -> Result<Trigger, ScanError> {
    let g = &d.net.analysis;
    let layout = &d.layout;
    let (n, dim, npos, classes) = (d.data.items, layout.numel(), layout.positions(), d.classes);
    let x = &d.data.x;
    let (lo, hi) = cfg.range;
    let mut rng = Rng::new(cfg.seed ^ 0x0072_166E_5CA9, t as u64);
    // Raw parameters start uniform in [-1, 1]: masks near 1/2, patterns near mid-range.
    let mut w: Vec<f64> = (0..npos).map(|_| 2.0 * rng.unit() - 1.0).collect();
    let mut v: Vec<f64> = (0..dim).map(|_| 2.0 * rng.unit() - 1.0).collect();
    let (mut adam_w, mut adam_v) = (Adam::new(npos), Adam::new(dim));
    let mut lambda = cfg.init_lambda;
    let mut best: Option<(f64, Vec<f32>, Vec<f32>)> = None;
    let (mut mask, mut pattern) = (vec![0f32; npos], vec![0f32; dim]);
    let chunk = super::items_per_pass(g, n);
    let mut xs = Vec::with_capacity(chunk * dim);
    let (mut gm, mut gp) = (vec![0f64; npos], vec![0f64; dim]);
    let (mut sum_g, mut sum_gx) = (vec![0f64; dim], vec![0f64; dim]);
    let pos_of: Vec<usize> = (0..dim).map(|i| layout.position_of(i)).collect();
    let mut last_l1 = 0.0;
    // Early stop (as the original Neural Cleanse): after the weight has gone both up and down,
    // stop once the best mask has not shrunk by 1 % for `early_stop_patience` periods.
    let (mut went_up, mut went_down, mut stale, mut best_at_check) =
        (false, false, 0, f64::INFINITY);
    let mut steps_run = 0;
    for step in 0..cfg.steps {
        steps_run = step + 1;
        for (m, &wv) in mask.iter_mut().zip(&w) {
            *m = ((wv.tanh() + 1.0) * 0.5) as f32;
        }
        for (p, &vv) in pattern.iter_mut().zip(&v) {
            *p = (lo + (hi - lo) * (vv.tanh() + 1.0) * 0.5) as f32;
        }
        // Forward and backward over fixed chunks of items (bounded memory); the chunk sums
        // G_i = sum_s g_si and H_i = sum_s g_si x_si give the chain rule onto mask and
        // pattern: dL/dp_i = G_i m_pos(i), dL/dm_pos = sum over its elements of p_i G_i - H_i.
        sum_g.fill(0.0);
        sum_gx.fill(0.0);
        let mut hits = 0usize;
        for c0 in (0..n).step_by(chunk) {
            let m = chunk.min(n - c0);
            let xc = &x[c0 * dim..(c0 + m) * dim];
            stamp(layout, xc, &mask, &pattern, &mut xs);
            let vals = eval::forward_values::<f32>(g, &xs, m)?;
            let y = vals[g.output].as_deref().unwrap_or(&[]);
            // Cross-entropy gradient (softmax - onehot) / n, and the success count.
            let mut gy = vec![0f32; m * classes];
            for s in 0..m {
                let ys = &y[s * classes..(s + 1) * classes];
                let top = argmax(ys);
                hits += usize::from(top == t);
                let mx = ys[top];
                let z: f32 = ys.iter().map(|&v| (v - mx).exp()).sum();
                for j in 0..classes {
                    let p = (ys[j] - mx).exp() / z;
                    gy[s * classes + j] = (p - f32::from(j == t)) / n as f32;
                }
            }
            let gx = grad::input_gradient(g, &vals, g.output, gy, m);
            drop(vals);
            for (xi, gi) in xc.chunks_exact(dim).zip(gx.chunks_exact(dim)) {
                for i in 0..dim {
                    sum_g[i] += gi[i] as f64;
                    sum_gx[i] += (gi[i] * xi[i]) as f64;
                }
            }
        }
        let asr = hits as f64 / n as f64;
        let l1: f64 = mask.iter().map(|&m| m as f64).sum();
        last_l1 = l1;
        let reached = asr >= cfg.target_asr;
        if reached && best.as_ref().is_none_or(|b| l1 < b.0) {
            best = Some((l1, mask.clone(), pattern.clone()));
        }
        gm.fill(0.0);
        for i in 0..dim {
            let pos = pos_of[i];
            gm[pos] += pattern[i] as f64 * sum_g[i] - sum_gx[i];
            gp[i] = sum_g[i] * mask[pos] as f64;
        }
        for (k, gk) in gm.iter_mut().enumerate() {
            let th = w[k].tanh();
            *gk = (*gk + lambda) * 0.5 * (1.0 - th * th);
        }
        for (i, gi) in gp.iter_mut().enumerate() {
            let th = v[i].tanh();
            *gi *= (hi - lo) * 0.5 * (1.0 - th * th);
        }
        adam_w.step(&mut w, &gm, cfg.lr);
        adam_v.step(&mut v, &gp, cfg.lr);
        progress.inc(1);
        if (step + 1) % cfg.lambda_every == 0 {
            if reached {
                lambda *= cfg.lambda_factor;
                went_up = true;
            } else {
                lambda /= cfg.lambda_factor;
                went_down = true;
            }
            if let Some(b) = &best {
                stale = if b.0 >= 0.99 * best_at_check {
                    stale + 1
                } else {
                    0
                };
                best_at_check = best_at_check.min(b.0);
            }
            if cfg.early_stop_patience > 0
                && went_up
                && went_down
                && stale >= cfg.early_stop_patience
            {
                break;
            }
        }
    }
    progress.inc((cfg.steps - steps_run) as u64);
    let reached = best.is_some();
    let (mask_l1, mask, pattern) = best.unwrap_or((last_l1, mask, pattern));
    // The kept trigger's success rate as the deployed network computes it.
    let mut xs = Vec::new();
    stamp(layout, x, &mask, &pattern, &mut xs);
    let pred = predict(&d.net.exec, &xs, n)?;
    let asr = pred.iter().filter(|&&p| p == t).count() as f64 / n as f64;
    Ok(Trigger {
        label: t,
        mask,
        pattern,
        mask_l1,
        reached,
        attack_success_rate: asr,
        steps: steps_run,
    })
}

//! Batched dense kernels shared by the evaluator and the bound engines.
//!
//! All kernels take the outer batch size explicitly and work on C-order slices. Linear and
//! convolution layers go through one matrix-matrix product (matrixmultiply's blocked GEMM, or
//! for the thin f64 products of backward passes [`gemm_rows_f64`]), never a per-neuron loop.

use super::Scalar;
use crate::ir::{Conv, FILL, Linear, Pool, Rect, Window};

/// The GEMM kernel family matrixmultiply runs on this machine, which fixes the last bits of
/// every product (fused multiply-add or not, register blocking): on x86-64 `avx512` when the
/// CPU has AVX-512F, else `avx2+fma`, else `avx`, else `sse2`, in matrixmultiply 0.3's order of
/// choice (a build with `MMTEST_FEATURE=<feature>` in the environment allows only that one);
/// `neon` on aarch64. Results are bit-identical between machines of one family.
pub fn gemm_kernel() -> &'static str {
    if let Some(f) = option_env!("MMTEST_FEATURE") {
        return f;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            return "avx512";
        }
        if has!("fma") && has!("avx2") {
            return "avx2+fma";
        }
        if has!("avx") {
            return "avx";
        }
        "sse2"
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "portable"
    }
}

/// `C = A * B (+ C if accumulate)` for row/column-strided operands.
///
/// Panics if a stride pattern would read or write outside a slice: the strides come from
/// validated IR shapes, so that is a bug in this crate, never a property of the input.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    (rsa, csa): (usize, usize),
    b: &[T],
    (rsb, csb): (usize, usize),
    c: &mut [T],
    (rsc, csc): (usize, usize),
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |r: usize, rs: usize, cc: usize, cs: usize| (r - 1) * rs + (cc - 1) * cs;
    assert!(last(m, rsc, n, csc) < c.len(), "gemm: C out of bounds");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c[i * rsc + j * csc] = T::ZERO;
                }
            }
        }
        return;
    }
    assert!(last(m, rsa, k, csa) < a.len(), "gemm: A out of bounds");
    assert!(last(k, rsb, n, csb) < b.len(), "gemm: B out of bounds");
    let beta = if accumulate { T::ONE } else { T::ZERO };
    // SAFETY: the asserts above bound every index the strided product touches.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            csc as isize,
        );
    }
}

/// Rows of a block of [`gemm_rows_f64`].
const MR: usize = 4;

/// `C = A B` in f64 for row-major `A` (`m x p`), `B` (`p x n`) and `C` (`m x n`), as a sum
/// of scaled rows of `B` (`C_i = sum_k A_ik B_k`), `MR` rows of `A` at a time, `B` read in
/// place. For the thin products of backward passes (tens of coefficient rows against a
/// weight matrix) this beats a packing GEMM, which copies all of `B` on every call
/// (mnistfc 256x4 branch and bound: a third of matrixmultiply's time was packing); and a
/// step where all `MR` rows of `A` are zero (the coefficients of inactive ReLUs) is skipped,
/// which is exact for finite `B` (every weight is; see the importer and the fusion passes).
/// Each element is one dot product summed in order of `k` with fused multiply-adds: the
/// error bound of any summation order (`gamma(p)`) covers it. CPUs without AVX2 and FMA
/// take matrixmultiply's GEMM.
pub fn gemm_rows_f64(m: usize, p: usize, n: usize, a: &[f64], b: &[f64], c: &mut [f64]) {
    assert!(
        a.len() >= m * p && b.len() >= p * n && c.len() >= m * n,
        "gemm_rows_f64: sizes"
    );
    #[cfg(target_arch = "x86_64")]
    {
        match gemm_kernel() {
            // SAFETY: the kernel family says the CPU has the features; sizes checked above.
            "avx512" => return unsafe { simd::rows_avx512(m, p, n, a, b, c) },
            "avx2+fma" => return unsafe { simd::rows_avx2(m, p, n, a, b, c) },
            _ => {}
        }
    }
    gemm(m, p, n, a, (p, 1), b, (n, 1), c, (n, 1), false);
}

/// [`gemm_rows_f64`]'s product in f32 (the evaluator's reverse mode): matrixmultiply's GEMM.
pub fn gemm_rows_f32(m: usize, p: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    gemm(m, p, n, a, (p, 1), b, (n, 1), c, (n, 1), false);
}

/// The steps `k` where some of the `mr` rows from `i0` of `a` (`p` columns) is nonzero, and
/// those rows' coefficients there (zero-padded to `MR`).
fn nonzero_steps(
    a: &[f64],
    p: usize,
    i0: usize,
    mr: usize,
    ks: &mut Vec<usize>,
    av: &mut Vec<[f64; MR]>,
) {
    ks.clear();
    av.clear();
    let rows: [&[f64]; MR] = std::array::from_fn(|r| {
        if r < mr {
            &a[(i0 + r) * p..(i0 + r + 1) * p]
        } else {
            &[]
        }
    });
    for k in 0..p {
        let col: [f64; MR] = std::array::from_fn(|r| rows[r].get(k).copied().unwrap_or(0.0));
        // `!=` on the array: a NaN coefficient counts as nonzero.
        if col != [0.0; MR] {
            ks.push(k);
            av.push(col);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{MR, nonzero_steps};
    use std::arch::x86_64::*;

    /// One kernel of [`super::gemm_rows_f64`] per instruction set: blocks of `MR` rows by
    /// `$vecs` registers of `$lanes` columns each (the accumulators), masked loads and
    /// stores at the right edge (`$mask(lanes on)` builds a register's mask).
    macro_rules! rows_kernel {
        ($name:ident, $feat:literal, $v:ty, $lanes:literal, $vecs:literal, $mask:expr,
         $zero:ident, $set1:ident, $load:expr, $fma:ident, $store:expr) => {
            /// # Safety
            /// The CPU has the enabled features; `a`, `b`, `c` hold `m x p`, `p x n` and
            /// `m x n` elements.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn $name(
                m: usize,
                p: usize,
                n: usize,
                a: &[f64],
                b: &[f64],
                c: &mut [f64],
            ) {
                const WIDE: usize = $lanes * $vecs;
                let (mut ks, mut av) = (Vec::with_capacity(p), Vec::with_capacity(p));
                let mut i0 = 0;
                while i0 < m {
                    let mr = MR.min(m - i0);
                    nonzero_steps(a, p, i0, mr, &mut ks, &mut av);
                    let mut j0 = 0;
                    while j0 < n {
                        let w = (n - j0).min(WIDE);
                        let masks: [_; $vecs] = std::array::from_fn(|v| {
                            $mask(w.saturating_sub(v * $lanes).min($lanes))
                        });
                        let mut acc: [[$v; $vecs]; MR] = [[$zero(); $vecs]; MR];
                        for (&k, x) in ks.iter().zip(&av) {
                            // SAFETY: masked-out lanes are neither read nor faulted on; the
                            // others lie in row `k` of `b`, columns `j0..j0 + w`.
                            let base = unsafe { b.as_ptr().add(k * n + j0) };
                            let bv: [$v; $vecs] = std::array::from_fn(|v| unsafe {
                                $load(base.add(v * $lanes), masks[v])
                            });
                            for r in 0..MR {
                                let xr = $set1(x[r]);
                                for v in 0..$vecs {
                                    acc[r][v] = $fma(xr, bv[v], acc[r][v]);
                                }
                            }
                        }
                        for (r, row) in acc.iter().enumerate().take(mr) {
                            for v in 0..$vecs {
                                // SAFETY: as the loads, in row `i0 + r` of `c`.
                                unsafe {
                                    let at = c.as_mut_ptr().add((i0 + r) * n + j0 + v * $lanes);
                                    $store(at, masks[v], row[v]);
                                }
                            }
                        }
                        j0 += WIDE;
                    }
                    i0 += MR;
                }
            }
        };
    }

    // 4 x 4 accumulators of 8 lanes: 16 of the 32 registers.
    rows_kernel!(
        rows_avx512,
        "avx512f,fma",
        __m512d,
        8,
        4,
        |on: usize| ((1u16 << on) - 1) as __mmask8,
        _mm512_setzero_pd,
        _mm512_set1_pd,
        |at, m| _mm512_maskz_loadu_pd(m, at),
        _mm512_fmadd_pd,
        |at, m, x| _mm512_mask_storeu_pd(at, m, x)
    );

    // 4 x 2 accumulators of 4 lanes: half of the 16 registers, the rest for loads.
    rows_kernel!(
        rows_avx2,
        "avx2,fma",
        __m256d,
        4,
        2,
        |on: usize| {
            let l = |t: usize| if t < on { -1i64 } else { 0 };
            _mm256_setr_epi64x(l(0), l(1), l(2), l(3))
        },
        _mm256_setzero_pd,
        _mm256_set1_pd,
        |at, m| _mm256_maskload_pd(at, m),
        _mm256_fmadd_pd,
        |at, m, x| _mm256_maskstore_pd(at, m, x)
    );
}

/// Linear layer `y[o,p,i] = sum_k W[p,k] x[o,k,i] + b[p]` on `batch` samples.
pub fn linear<T: Scalar>(l: &Linear, w: &[T], bias: Option<&[T]>, x: &[T], batch: usize) -> Vec<T> {
    let rows = batch * l.outer;
    let mut y = vec![T::ZERO; rows * l.p * l.inner];
    if l.inner == 1 {
        // Y[rows, p] = X[rows, k] * W^T.
        gemm(
            rows,
            l.k,
            l.p,
            x,
            (l.k, 1),
            w,
            (1, l.k),
            &mut y,
            (l.p, 1),
            false,
        );
    } else {
        let xs = l.k * l.inner;
        let ys = l.p * l.inner;
        for r in 0..rows {
            gemm(
                l.p,
                l.k,
                l.inner,
                w,
                (l.k, 1),
                &x[r * xs..(r + 1) * xs],
                (l.inner, 1),
                &mut y[r * ys..(r + 1) * ys],
                (l.inner, 1),
                false,
            );
        }
    }
    if let Some(b) = bias {
        add_bias(l, &mut y, b);
    }
    y
}

/// [`linear`] in f64 for `inner == 1` from the transposed weights `wt` (`[k, p]`, `W^T` or
/// `|W|^T`), by [`gemm_rows_f64`]: no packing of the weights on every call.
pub fn linear_rows_f64(
    l: &Linear,
    wt: &[f64],
    bias: Option<&[f64]>,
    x: &[f64],
    batch: usize,
) -> Vec<f64> {
    debug_assert_eq!(l.inner, 1, "linear_rows_f64: inner dimension");
    let rows = batch * l.outer;
    let mut y = vec![0.0; rows * l.p];
    gemm_rows_f64(rows, l.k, l.p, x, wt, &mut y);
    if let Some(b) = bias {
        add_bias(l, &mut y, b);
    }
    y
}

/// Add `b[p]` to every output `y[o, p, i]` of a linear layer.
fn add_bias<T: Scalar>(l: &Linear, y: &mut [T], b: &[T]) {
    if l.inner == 1 {
        for row in y.chunks_exact_mut(l.p) {
            for (v, &bp) in row.iter_mut().zip(b) {
                *v += bp;
            }
        }
        return;
    }
    for row in y.chunks_exact_mut(l.p * l.inner) {
        for (pp, seg) in row.chunks_exact_mut(l.inner).enumerate() {
            let bp = b[pp];
            for v in seg {
                *v += bp;
            }
        }
    }
}

/// Transposed linear layer `G_in[o, k, i] = sum_p W[p, k] G[o, p, i]` for `batch` rows of
/// `G` (the reverse mode, and CROWN's coefficients through the layer).
pub fn linear_t<T: Scalar>(l: &Linear, w: &[T], go: &[T], batch: usize) -> Vec<T> {
    let rows = batch * l.outer;
    let mut gi = vec![T::ZERO; rows * l.k * l.inner];
    if l.inner == 1 {
        T::gemm_rows(rows, l.p, l.k, go, w, &mut gi);
    } else {
        let (os, is) = (l.p * l.inner, l.k * l.inner);
        for blk in 0..rows {
            gemm(
                l.k,
                l.p,
                l.inner,
                w,
                (1, l.k),
                &go[blk * os..(blk + 1) * os],
                (l.inner, 1),
                &mut gi[blk * is..(blk + 1) * is],
                (l.inner, 1),
                false,
            );
        }
    }
    gi
}

/// Positions from which [`conv_t_boxes`] multiplies through the packing GEMM: its blocked
/// kernel wins once the weights' packing is shared by enough positions.
const PACKED_MIN: usize = 64;

/// Bytes of column scratch per chunk of the transposed convolution.
const COL_BUDGET: usize = 512 << 10;

/// The adjoint of [`conv`] (no bias): `go` holds `batch` output gradients (or coefficient
/// maps), the result the matching input maps.
///
/// An image whose nonzero entries (over all channels) fit in a rectangle of at most half its
/// positions is multiplied on that rectangle alone: CROWN's intermediate-bound rows start
/// one-hot and stay spatially local for several layers. Every entry of the result is then the
/// same sum of products with only zero terms left out, so the error bound of a sum of at most
/// that many terms (which the bound engines charge) holds for either path.
pub fn conv_t<T: Scalar>(c: &Conv, w: &[T], go: &[T], batch: usize) -> Vec<T> {
    conv_t_in(c, w, go, batch, None)
}

/// [`conv_t`] where each of the `batch` maps of `go` is known to vanish outside a box of
/// positions (`support`, one per map; `None`: anywhere, found by scanning instead): the
/// box's area alone is read, as [`conv_t`] does with the box it finds.
pub fn conv_t_in<T: Scalar>(
    c: &Conv,
    w: &[T],
    go: &[T],
    batch: usize,
    support: Option<&[Option<Rect>]>,
) -> Vec<T> {
    let wn = &c.win;
    let images = batch * wn.n;
    let ohw = wn.oh * wn.ow;
    let in_img = wn.c * wn.h * wn.w;
    let out_img = c.m * ohw;
    let mut gi = vec![T::ZERO; images * in_img];
    let full = Rect::whole((wn.oh, wn.ow));
    let boxes: Vec<(usize, Rect)> = (0..images)
        .filter_map(|img| {
            let g = &go[img * out_img..(img + 1) * out_img];
            let known = support.and_then(|s| s.get(img / wn.n.max(1)).copied().flatten());
            let r = match known {
                Some(r) => (r.area() > 0).then_some(r)?,
                None => support_rect(g, c.m, wn.oh, wn.ow)?,
            };
            // Past half the map, gathering a box costs more than reading every position.
            Some((img, if 2 * r.area() <= ohw { r } else { full }))
        })
        .collect();
    conv_t_boxes(c, w, go, &boxes, &mut gi);
    gi
}

/// `d += s` elementwise, with the short runs of common kernel widths unrolled (a loop over 3
/// or 4 entries spent more on its set-up than on the additions).
#[inline(always)]
fn add_run<T: Scalar>(d: &mut [T], s: &[T]) {
    match (d, s) {
        ([d0, d1, d2], [s0, s1, s2]) => {
            *d0 += *s0;
            *d1 += *s1;
            *d2 += *s2;
        }
        ([d0, d1, d2, d3], [s0, s1, s2, s3]) => {
            *d0 += *s0;
            *d1 += *s1;
            *d2 += *s2;
            *d3 += *s3;
        }
        (d, s) => d.iter_mut().zip(s).for_each(|(x, &y)| *x += y),
    }
}

/// The smallest rectangle of positions holding every nonzero of `g` (`m` channels of
/// `oh x ow`; a NaN counts as nonzero); `None` when `g` is all zero.
pub(crate) fn support_rect<T: Scalar>(g: &[T], m: usize, oh: usize, ow: usize) -> Option<Rect> {
    let (mut y0, mut y1, mut x0, mut x1) = (usize::MAX, 0, usize::MAX, 0);
    for plane in g.chunks_exact(oh * ow).take(m) {
        for (oy, row) in plane.chunks_exact(ow).enumerate() {
            let Some(first) = row.iter().position(|&v| v != T::ZERO) else {
                continue;
            };
            let last = row.iter().rposition(|&v| v != T::ZERO).unwrap_or(first);
            y0 = y0.min(oy);
            y1 = y1.max(oy + 1);
            x0 = x0.min(first);
            x1 = x1.max(last + 1);
        }
    }
    (y0 < y1).then_some(Rect { y0, y1, x0, x1 })
}

/// `C = A B` for `npos` gathered positions (the rows of `A`, `npos x k`, row-major) and
/// weights `B` (`k x n`, strides `bs`) into row-major `C`: the packing GEMM from
/// `PACKED_MIN` positions, else the row kernel, which reads a row-major `B` (another layout
/// is copied into `scratch` first).
#[allow(clippy::too_many_arguments)]
fn positions_times<T: Scalar>(
    npos: usize,
    k: usize,
    n: usize,
    a: &[T],
    b: &[T],
    bs: (usize, usize),
    c: &mut [T],
    scratch: &mut Vec<T>,
) {
    if npos >= PACKED_MIN {
        gemm(npos, k, n, a, (k, 1), b, bs, c, (n, 1), false);
    } else if bs == (n, 1) {
        T::gemm_rows(npos, k, n, a, b, c);
    } else {
        scratch.clear();
        scratch.extend((0..k * n).map(|i| b[(i / n) * bs.0 + (i % n) * bs.1]));
        T::gemm_rows(npos, k, n, a, scratch, c);
    }
}

/// Sizes of a convolution's operands, per image and group.
struct Dims {
    /// Input and output channels per group.
    cg: usize,
    mg: usize,
    /// Length of a position's column: `cg kh kw`.
    ckk: usize,
    /// Output positions, input positions.
    ohw: usize,
    hw: usize,
    /// Elements of one input and one output image.
    in_img: usize,
    out_img: usize,
}

impl Dims {
    fn of(c: &Conv) -> Self {
        let wn = &c.win;
        let (cg, mg) = (wn.c / c.group, c.m / c.group);
        let (ohw, hw) = (wn.oh * wn.ow, wn.h * wn.w);
        Dims {
            cg,
            mg,
            ckk: cg * wn.kh * wn.kw,
            ohw,
            hw,
            in_img: wn.c * hw,
            out_img: c.m * ohw,
        }
    }
}

/// The kernel rows (columns) whose taps land inside the image, per output row (column) of a
/// window: a contiguous range, as the tap moves monotonically with the kernel offset.
struct TapSpans {
    rows: Vec<(usize, usize)>,
    cols: Vec<(usize, usize)>,
}

impl TapSpans {
    fn new(wn: &Window) -> Self {
        let valid = |n_out: usize, stride: usize, dil: usize, pad: usize, size: usize, k: usize| {
            (0..n_out)
                .map(|o| {
                    let ok = |t: usize| {
                        let i = o * stride + t * dil;
                        i >= pad && i < pad + size
                    };
                    let t0 = (0..k).find(|&t| ok(t)).unwrap_or(k);
                    let t1 = (t0..k).find(|&t| !ok(t)).unwrap_or(k);
                    (t0, t1)
                })
                .collect()
        };
        TapSpans {
            rows: valid(wn.oh, wn.sh, wn.dh, wn.ph, wn.h, wn.kh),
            cols: valid(wn.ow, wn.sw, wn.dw, wn.pw, wn.w, wn.kw),
        }
    }

    /// For each position of the boxes of `part` (numbered `p` in order), each of `cg` input
    /// channels and each kernel row whose taps land in the image: `f(p, image, channel, ks,
    /// at)`, with `ks` the entries `(ci kh + ka) kw + kb` of the position's column those taps
    /// fill and `at` the index of the first in the channel's plane (the next ones follow every
    /// `dw`). Positions without an in-image tap are skipped (their `p` still counts).
    #[inline(always)]
    fn for_runs(
        &self,
        wn: &Window,
        cg: usize,
        part: &[(usize, Rect)],
        mut f: impl FnMut(usize, usize, usize, std::ops::Range<usize>, usize),
    ) {
        let (kh, kw) = (wn.kh, wn.kw);
        let mut p = 0;
        for &(img, r) in part {
            for oy in r.y0..r.y1 {
                let (ka0, ka1) = self.rows[oy];
                for ox in r.x0..r.x1 {
                    let pos = p;
                    p += 1;
                    let (kb0, kb1) = self.cols[ox];
                    if kb0 >= kb1 {
                        continue;
                    }
                    // In range: the taps of kb0 and ka lie inside the image.
                    let ix0 = ox * wn.sw + kb0 * wn.dw - wn.pw;
                    for ci in 0..cg {
                        for ka in ka0..ka1 {
                            let iy = oy * wn.sh + ka * wn.dh - wn.ph;
                            let k0 = (ci * kh + ka) * kw;
                            f(pos, img, ci, k0 + kb0..k0 + kb1, iy * wn.w + ix0);
                        }
                    }
                }
            }
        }
    }
}

/// Consecutive runs of `boxes` whose positions fit `budget` (at least one box each), with
/// their position count.
fn chunks_by_area(
    boxes: &[(usize, Rect)],
    budget: usize,
) -> impl Iterator<Item = (&[(usize, Rect)], usize)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= boxes.len() {
            return None;
        }
        let mut end = start + 1;
        let mut npos = boxes[start].1.area();
        while end < boxes.len() && npos + boxes[end].1.area() <= budget {
            npos += boxes[end].1.area();
            end += 1;
        }
        let part = &boxes[start..end];
        start = end;
        Some((part, npos))
    })
}

/// [`conv_t`] of the images `imgs`, each zero outside its box, into `gi`. Per chunk of images
/// and group: the boxes' positions gathered position-major (`A`: positions x output
/// channels), one product with the weights as stored (`A W`: positions x `c kh kw`; through
/// [`Scalar::gemm_rows`] for few positions, which reads `W` in place and, in f64, skips a
/// channel that is zero at four positions at once, e.g. behind inactive ReLUs), then each
/// position's row added onto the input taps it came from (runs of `kw` contiguous entries at
/// unit dilation); chunks of whole maps skip the gather (the map read as a strided view).
/// Each entry of the result is the same sum of products as the
/// column-to-image form, its zero terms left out, in another order: the error bound of a sum
/// of that many terms holds.
fn conv_t_boxes<T: Scalar>(c: &Conv, w: &[T], go: &[T], imgs: &[(usize, Rect)], gi: &mut [T]) {
    let wn = &c.win;
    let d = Dims::of(c);
    if imgs.is_empty() || d.ckk == 0 || d.mg == 0 {
        return;
    }
    let taps = TapSpans::new(wn);
    let budget = COL_BUDGET / ((d.mg + d.ckk) * std::mem::size_of::<T>()).max(1);
    let (mut a, mut cols) = (Vec::new(), Vec::new());
    for (part, npos) in chunks_by_area(imgs, budget) {
        a.resize(npos * d.mg, T::ZERO);
        cols.resize(npos * d.ckk, T::ZERO);
        // Whole maps big enough for the packing GEMM are read in place (positions x channels
        // is the map's transpose, a strided view): gathering them cost more than the product.
        let whole = npos >= PACKED_MIN && part.iter().all(|&(_, r)| r.area() == d.ohw);
        for grp in 0..c.group {
            let wg = &w[grp * d.mg * d.ckk..(grp + 1) * d.mg * d.ckk];
            if whole {
                for (i, &(img, _)) in part.iter().enumerate() {
                    let g = &go[img * d.out_img + grp * d.mg * d.ohw..][..d.mg * d.ohw];
                    let out = &mut cols[i * d.ohw * d.ckk..(i + 1) * d.ohw * d.ckk];
                    gemm(
                        d.ohw,
                        d.mg,
                        d.ckk,
                        g,
                        (1, d.ohw),
                        wg,
                        (d.ckk, 1),
                        out,
                        (d.ckk, 1),
                        false,
                    );
                }
            } else {
                let mut p = 0;
                for &(img, r) in part {
                    let g = &go[img * d.out_img + grp * d.mg * d.ohw..][..d.mg * d.ohw];
                    for oy in r.y0..r.y1 {
                        for ox in r.x0..r.x1 {
                            let at = oy * wn.ow + ox;
                            for (mm, v) in a[p * d.mg..(p + 1) * d.mg].iter_mut().enumerate() {
                                *v = g[mm * d.ohw + at];
                            }
                            p += 1;
                        }
                    }
                }
                let (a, cols) = (&a[..npos * d.mg], &mut cols[..npos * d.ckk]);
                positions_times(npos, d.mg, d.ckk, a, wg, (d.ckk, 1), cols, &mut Vec::new());
            }
            taps.for_runs(wn, d.cg, part, |p, img, ci, ks, at| {
                let s = &cols[p * d.ckk..(p + 1) * d.ckk][ks];
                let out = &mut gi[img * d.in_img + (grp * d.cg + ci) * d.hw..][..d.hw][at..];
                if wn.dw == 1 {
                    add_run(&mut out[..s.len()], s);
                } else {
                    for (o, &v) in out.iter_mut().step_by(wn.dw).zip(s) {
                        *o += v;
                    }
                }
            });
        }
    }
}

/// Most elements of the dense matrix a convolution is lowered to (3 MiB as f64 + f32).
const DENSE_CONV_LIMIT: usize = 1 << 18;

/// A convolution's map of one image as a dense `[out, in]` matrix (no bias), for a layer so
/// small that one GEMM over the batch beats unfolding it: at most [`DENSE_CONV_LIMIT`]
/// elements, and at most 16 times the unfolded layer's multiply-adds. Each entry is one
/// weight or zero (distinct taps of one output read distinct inputs).
pub fn dense_conv_matrix(c: &Conv) -> Option<crate::ir::Param> {
    let wn = &c.win;
    let (cg, mg) = (wn.c / c.group, c.m / c.group);
    let ckk = cg * wn.kh * wn.kw;
    let in_img = wn.c * wn.h * wn.w;
    let out_img = c.m * wn.oh * wn.ow;
    if out_img.checked_mul(in_img)? > DENSE_CONV_LIMIT || in_img > 16 * ckk {
        return None;
    }
    let mut t = vec![0.0; out_img * in_img];
    for m in 0..c.m {
        let grp = m / mg;
        for oy in 0..wn.oh {
            for ox in 0..wn.ow {
                let o = (m * wn.oh + oy) * wn.ow + ox;
                for ci in 0..cg {
                    let plane = (grp * cg + ci) * wn.h * wn.w;
                    for (a, b, i) in wn.taps(oy, ox) {
                        t[o * in_img + plane + i] =
                            c.weight.f64[((m * cg + ci) * wn.kh + a) * wn.kw + b];
                    }
                }
            }
        }
    }
    Some(crate::ir::Param::from_f64(vec![out_img, in_img], t))
}

/// [`conv`] through the dense matrix `t` of [`dense_conv_matrix`]: `Y = X T^T` over every
/// image of the batch, then the bias. Only for finite `x`: a zero entry times an infinite
/// input would make a NaN the convolution never computes.
pub fn conv_dense<T: Scalar>(
    cv: &Conv,
    t: &[T],
    bias: Option<&[T]>,
    x: &[T],
    batch: usize,
) -> Vec<T> {
    let wn = &cv.win;
    let images = batch * wn.n;
    let in_img = wn.c * wn.h * wn.w;
    let ohw = wn.oh * wn.ow;
    let out_img = cv.m * ohw;
    let mut y = vec![T::ZERO; images * out_img];
    gemm(
        images,
        in_img,
        out_img,
        x,
        (in_img, 1),
        t,
        (1, in_img),
        &mut y,
        (out_img, 1),
        false,
    );
    if let Some(b) = bias {
        for img in y.chunks_exact_mut(out_img) {
            for (plane, &bv) in img.chunks_exact_mut(ohw).zip(b) {
                for v in plane {
                    *v = *v + bv;
                }
            }
        }
    }
    y
}

/// Bytes of im2col scratch per chunk; bounds memory for large batches of small images. Large
/// chunks keep the evaluator's GEMMs wide (randomized smoothing on the digits CNN: 2.64 M
/// samples/s with 32 MiB, 2.37-2.47 M with 512 KiB); alpha-CROWN's forward pass, whose rows
/// are already spread over threads, takes [`COL_BUDGET`] instead (cifar_base_kw 0.94-0.99 s
/// with 32 MiB, 0.77-0.89 s with 512 KiB: the columns stay in the cache and a 10 MB buffer is
/// not zeroed per call).
const IM2COL_BUDGET: usize = 32 << 20;

/// Grouped 2-D convolution on `batch` samples via im2col and one GEMM per group and chunk.
pub fn conv<T: Scalar>(cv: &Conv, w: &[T], bias: Option<&[T]>, x: &[T], batch: usize) -> Vec<T> {
    conv_chunked(cv, w, bias, x, batch, IM2COL_BUDGET)
}

/// [`conv`] with `budget` bytes of im2col scratch per chunk.
fn conv_chunked<T: Scalar>(
    cv: &Conv,
    w: &[T],
    bias: Option<&[T]>,
    x: &[T],
    batch: usize,
    budget: usize,
) -> Vec<T> {
    let wn = &cv.win;
    let images = batch * wn.n;
    let (cg, mg) = (wn.c / cv.group, cv.m / cv.group);
    let ckk = cg * wn.kh * wn.kw;
    let ohw = wn.oh * wn.ow;
    let in_img = wn.c * wn.h * wn.w;
    let out_img = cv.m * ohw;
    let mut y = vec![T::ZERO; images * out_img];
    let per_image = (ckk * ohw).max(1) * std::mem::size_of::<T>();
    let chunk = (budget / per_image).clamp(1, images.max(1));
    let mut cols = vec![T::ZERO; ckk * ohw * chunk];
    let mut tmp = vec![T::ZERO; mg * ohw * chunk];
    for start in (0..images).step_by(chunk) {
        let nimg = chunk.min(images - start);
        let ncol = nimg * ohw;
        for g in 0..cv.group {
            im2col(
                wn,
                x,
                start,
                nimg,
                g * cg,
                cg,
                in_img,
                &mut cols[..ckk * ncol],
            );
            gemm(
                mg,
                ckk,
                ncol,
                &w[g * mg * ckk..(g + 1) * mg * ckk],
                (ckk, 1),
                &cols[..ckk * ncol],
                (ncol, 1),
                &mut tmp[..mg * ncol],
                (ncol, 1),
                false,
            );
            for mm in 0..mg {
                let oc = g * mg + mm;
                let b = bias.map_or(T::ZERO, |b| b[oc]);
                for i in 0..nimg {
                    let src = &tmp[mm * ncol + i * ohw..mm * ncol + (i + 1) * ohw];
                    let dst = &mut y[(start + i) * out_img + oc * ohw..][..ohw];
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d = s + b;
                    }
                }
            }
        }
    }
    y
}

/// [`conv`] exact only inside a box of output positions per sample (`support[sample]`;
/// `None`: the whole plane; elsewhere zero, or the convolution where [`conv`] itself runs),
/// reading only the input taps the boxes' windows
/// read: the forward pass of alpha-CROWN's gradient, which needs each row's relaxed network
/// only where its backward coefficients are nonzero (a row of cifar_base_kw's second
/// convolution covers 128 of the 2,048 outputs of the first). Per chunk of boxes and group:
/// the boxes' windows gathered position-major (`A`: positions x `c kh kw`, zero for padding),
/// one product with the transposed weights, each position's outputs written to its place.
/// Boxes covering half the maps or more take [`conv`] itself.
pub fn conv_boxes<T: Scalar>(
    cv: &Conv,
    w: &[T],
    bias: Option<&[T]>,
    x: &[T],
    batch: usize,
    support: &[Option<Rect>],
) -> Vec<T> {
    let wn = &cv.win;
    let images = batch * wn.n;
    let d = Dims::of(cv);
    let full = Rect::whole((wn.oh, wn.ow));
    let boxes: Vec<(usize, Rect)> = (0..images)
        .filter_map(|img| {
            let r = support
                .get(img / wn.n.max(1))
                .copied()
                .flatten()
                .unwrap_or(full);
            (r.area() > 0).then_some((img, r))
        })
        .collect();
    let total: usize = boxes.iter().map(|(_, r)| r.area()).sum();
    if 2 * total >= images * d.ohw || d.ckk == 0 || d.mg == 0 {
        return conv_chunked(cv, w, bias, x, batch, COL_BUDGET);
    }
    let mut y = vec![T::ZERO; images * d.out_img];
    let taps = TapSpans::new(wn);
    let budget = COL_BUDGET / ((d.mg + d.ckk) * std::mem::size_of::<T>()).max(1);
    let (mut a, mut out) = (Vec::new(), Vec::new());
    let mut wt = Vec::new();
    for (part, npos) in chunks_by_area(&boxes, budget) {
        // Taps outside the image stay zero for every group: which taps a position has
        // depends on the position alone, and each group gathers the same positions.
        a.clear();
        a.resize(npos * d.ckk, T::ZERO);
        out.resize(npos * d.mg, T::ZERO);
        for grp in 0..cv.group {
            let wg = &w[grp * d.mg * d.ckk..(grp + 1) * d.mg * d.ckk];
            taps.for_runs(wn, d.cg, part, |p, img, ci, ks, at| {
                let src = &x[img * d.in_img + (grp * d.cg + ci) * d.hw..][..d.hw][at..];
                let d = &mut a[p * d.ckk..(p + 1) * d.ckk][ks];
                if wn.dw == 1 {
                    d.copy_from_slice(&src[..d.len()]);
                } else {
                    for (dv, &v) in d.iter_mut().zip(src.iter().step_by(wn.dw)) {
                        *dv = v;
                    }
                }
            });
            let (a, out) = (&a[..npos * d.ckk], &mut out[..npos * d.mg]);
            positions_times(npos, d.ckk, d.mg, a, wg, (1, d.ckk), out, &mut wt);
            let mut p = 0;
            for &(img, r) in part {
                for oy in r.y0..r.y1 {
                    for ox in r.x0..r.x1 {
                        let src = &out[p * d.mg..(p + 1) * d.mg];
                        p += 1;
                        for (mm, &v) in src.iter().enumerate() {
                            let oc = grp * d.mg + mm;
                            let b = bias.map_or(T::ZERO, |b| b[oc]);
                            y[img * d.out_img + oc * d.ohw + oy * wn.ow + ox] = v + b;
                        }
                    }
                }
            }
        }
    }
    y
}

/// Unfold `nimg` images starting at `first` (channels `c0..c0+cg`) into columns
/// `cols[(ci*kh + a)*kw + b][img*ohw + oy*ow + ox]`; padding reads as zero.
#[allow(clippy::too_many_arguments)]
fn im2col<T: Scalar>(
    wn: &Window,
    x: &[T],
    first: usize,
    nimg: usize,
    c0: usize,
    cg: usize,
    in_img: usize,
    cols: &mut [T],
) {
    let ohw = wn.oh * wn.ow;
    let ncol = nimg * ohw;
    for ci in 0..cg {
        for a in 0..wn.kh {
            for b in 0..wn.kw {
                let row = (ci * wn.kh + a) * wn.kw + b;
                let dst_row = &mut cols[row * ncol..(row + 1) * ncol];
                for i in 0..nimg {
                    let base = (first + i) * in_img + (c0 + ci) * wn.h * wn.w;
                    let plane = &x[base..base + wn.h * wn.w];
                    let dst = &mut dst_row[i * ohw..(i + 1) * ohw];
                    let range = tap_range((wn.ow, wn.sw, b * wn.dw, wn.pw, wn.w));
                    for oy in 0..wn.oh {
                        let iy = (oy * wn.sh + a * wn.dh) as isize - wn.ph as isize;
                        let drow = &mut dst[oy * wn.ow..(oy + 1) * wn.ow];
                        let Some((ox0, ox1)) = range.filter(|_| iy >= 0 && iy < wn.h as isize)
                        else {
                            drow.fill(T::ZERO);
                            continue;
                        };
                        drow[..ox0].fill(T::ZERO);
                        drow[ox1..].fill(T::ZERO);
                        let start = iy as usize * wn.w + ox0 * wn.sw + b * wn.dw - wn.pw;
                        if wn.sw == 1 {
                            // Unit stride: one contiguous copy (vectorised).
                            drow[ox0..ox1].copy_from_slice(&plane[start..start + ox1 - ox0]);
                        } else {
                            let src = plane[start..].iter().step_by(wn.sw);
                            for (d, &v) in drow[ox0..ox1].iter_mut().zip(src) {
                                *d = v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The range `[o0, o1)` of output positions whose tap `o * stride + koff - pad` lands inside
/// `[0, size)`, from `(outputs, stride, koff, pad, size)`; `None` when empty.
pub fn tap_range(
    (n_out, stride, koff, pad, size): (usize, usize, usize, usize, usize),
) -> Option<(usize, usize)> {
    // o * stride + koff >= pad  and  o * stride + koff < pad + size.
    let lo = pad.saturating_sub(koff).div_ceil(stride);
    let hi_excl = if pad + size > koff {
        (pad + size - koff).div_ceil(stride)
    } else {
        0
    };
    let (o0, o1) = (lo.min(n_out), hi_excl.min(n_out));
    (o0 < o1).then_some((o0, o1))
}

/// For each output position of a window op, call `f(out_index, taps)` with the in-bounds input
/// indices of its window and the full window size.
pub fn for_each_window(wn: &Window, images: usize, mut f: impl FnMut(usize, &[usize], usize)) {
    let mut taps = Vec::with_capacity(wn.kh * wn.kw);
    let full = wn.kh * wn.kw;
    let mut out = 0;
    for img in 0..images {
        for ch in 0..wn.c {
            let base = (img * wn.c + ch) * wn.h * wn.w;
            for oy in 0..wn.oh {
                for ox in 0..wn.ow {
                    taps.clear();
                    taps.extend(wn.taps(oy, ox).map(|(_, _, i)| base + i));
                    f(out, &taps, full);
                    out += 1;
                }
            }
        }
    }
}

/// Max pooling; padding never wins (it is -inf in ONNX).
pub fn max_pool<T: Scalar>(p: &Pool, x: &[T], batch: usize) -> Vec<T> {
    let wn = &p.win;
    let mut y = vec![T::ZERO; batch * wn.n * wn.c * wn.oh * wn.ow];
    for_each_window(wn, batch * wn.n, |o, taps, _| {
        let mut m = T::NEG_INFINITY;
        for &t in taps {
            m = m.max(x[t]);
        }
        y[o] = m;
    });
    y
}

/// Average pooling (`count_include_pad` selects the divisor).
pub fn avg_pool<T: Scalar>(p: &Pool, x: &[T], batch: usize) -> Vec<T> {
    let wn = &p.win;
    let mut y = vec![T::ZERO; batch * wn.n * wn.c * wn.oh * wn.ow];
    for_each_window(wn, batch * wn.n, |o, taps, full| {
        let mut s = T::ZERO;
        for &t in taps {
            s += x[t];
        }
        let cnt = if p.count_include_pad {
            full
        } else {
            taps.len().max(1)
        };
        y[o] = s / T::from_f64(cnt as f64);
    });
    y
}

/// Resolve a [`crate::ir::Select`] map against inputs of the given per-sample sizes:
/// `(input index, element)` per output element, `None` for fill.
pub fn select_sources(map: &[usize], sizes: &[usize]) -> Vec<Option<(usize, usize)>> {
    let mut starts = Vec::with_capacity(sizes.len());
    let mut acc = 0;
    for &s in sizes {
        starts.push(acc);
        acc += s;
    }
    map.iter()
        .map(|&m| {
            if m == FILL {
                return None;
            }
            let j = starts.partition_point(|&s| s <= m) - 1;
            Some((j, m - starts[j]))
        })
        .collect()
}

/// Gather `out[b, i] = inputs[j][b, e]` for `(j, e) = src[i]`, or `fill`.
pub fn select<T: Scalar>(
    src: &[Option<(usize, usize)>],
    fill: T,
    inputs: &[&[T]],
    sizes: &[usize],
    batch: usize,
) -> Vec<T> {
    let n = src.len();
    let mut y = Vec::with_capacity(batch * n);
    for b in 0..batch {
        y.extend(src.iter().map(|s| match *s {
            Some((j, e)) => inputs[j][b * sizes[j] + e],
            None => fill,
        }));
    }
    y
}

/// Elementwise map over a batch with per-sample parameters of length `n`.
pub fn affine<T: Scalar>(scale: &[T], shift: &[T], x: &[T]) -> Vec<T> {
    let n = scale.len();
    x.chunks_exact(n.max(1))
        .flat_map(|row| {
            row.iter()
                .zip(scale)
                .zip(shift)
                .map(|((&v, &s), &t)| v * s + t)
        })
        .collect()
}

/// Read a possibly broadcast operand: element `i` of sample `b`.
#[inline]
pub fn bcast<T: Copy>(x: &[T], map: Option<&[usize]>, per_sample: usize, b: usize, i: usize) -> T {
    match map {
        Some(m) => x[b * per_sample + m[i]],
        None => x[b * per_sample + i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{FpModel, Param};

    /// The adjoint of a convolution by its definition, tap by tap.
    fn naive_conv_t(c: &Conv, go: &[f64], images: usize) -> Vec<f64> {
        let wn = &c.win;
        let (cg, mg) = (wn.c / c.group, c.m / c.group);
        let mut gi = vec![0.0; images * wn.c * wn.h * wn.w];
        for img in 0..images {
            for m in 0..c.m {
                for oy in 0..wn.oh {
                    for ox in 0..wn.ow {
                        let g = go[((img * c.m + m) * wn.oh + oy) * wn.ow + ox];
                        for ci in 0..cg {
                            let ch = (m / mg) * cg + ci;
                            let plane = (img * wn.c + ch) * wn.h * wn.w;
                            for (a, b, i) in wn.taps(oy, ox) {
                                let w = c.weight.f64[((m * cg + ci) * wn.kh + a) * wn.kw + b];
                                gi[plane + i] += g * w;
                            }
                        }
                    }
                }
            }
        }
        gi
    }

    /// A deterministic pseudo-random stream in [-1, 1).
    fn stream(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
    }

    /// Every shape class of the row kernel (full and partial row blocks, full and masked
    /// column blocks, all-zero steps) against the definition, within the dot products'
    /// rounding bound, and the same bits as the kernel gives on the rows one at a time.
    #[test]
    fn gemm_rows_matches_the_definition_on_every_edge() {
        let mut rnd = stream(7);
        for &(m, p, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (4, 16, 32),
            (9, 33, 41),
            (13, 256, 100),
            (8, 10, 784),
        ] {
            let mut a: Vec<f64> = (0..m * p).map(|_| rnd()).collect();
            // Zero steps for every row (skipped) and for some rows only (not skipped).
            for i in 0..m {
                for k in (0..p).step_by(3) {
                    a[i * p + k] = 0.0;
                }
                if i % 2 == 0 {
                    for k in (1..p).step_by(4) {
                        a[i * p + k] = 0.0;
                    }
                }
            }
            let b: Vec<f64> = (0..p * n).map(|_| rnd() * 3.0).collect();
            let mut c = vec![f64::NAN; m * n];
            gemm_rows_f64(m, p, n, &a, &b, &mut c);
            let g = crate::domain::gamma(p + 1, f64::EPSILON / 2.0);
            for i in 0..m {
                for j in 0..n {
                    let (mut s, mut mag) = (0.0f64, 0.0f64);
                    for k in 0..p {
                        s += a[i * p + k] * b[k * n + j];
                        mag += (a[i * p + k] * b[k * n + j]).abs();
                    }
                    let got = c[i * n + j];
                    assert!(
                        (got - s).abs() <= 2.0 * g * mag + 1e-300,
                        "{m}x{p}x{n} at ({i},{j}): {got} vs {s}"
                    );
                }
                #[cfg(target_arch = "x86_64")]
                {
                    // Both instruction sets sum each element in the same order: same bits.
                    use std::arch::is_x86_feature_detected as has;
                    if has!("avx2") && has!("fma") {
                        let mut c2 = vec![f64::NAN; m * n];
                        // SAFETY: the CPU has the features; sizes as above.
                        unsafe { simd::rows_avx2(m, p, n, &a, &b, &mut c2) };
                        for j in 0..n {
                            assert_eq!(c2[i * n + j], c[i * n + j], "avx2 at ({i},{j})");
                        }
                    }
                }
                let mut one = vec![0.0; n];
                gemm_rows_f64(1, p, n, &a[i * p..(i + 1) * p], &b, &mut one);
                for j in 0..n {
                    assert_eq!(
                        one[j].to_bits() | (1 << 63),
                        c[i * n + j].to_bits() | (1 << 63),
                        "row {i} alone"
                    );
                }
            }
        }
    }

    /// (c, h, w, m, group, kh, kw, stride, pad, dilation) of the convolutions the tests try:
    /// strided, padded, dilated, grouped, 1x1, and a map of more than `PACKED_MIN` positions.
    type ConvShape = (
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
    );
    const CONVS: [ConvShape; 5] = [
        (3, 9, 8, 4, 1, 3, 3, 1, 1, 1),
        (4, 10, 10, 6, 2, 4, 4, 2, 1, 1),
        (2, 7, 9, 3, 1, 3, 2, 2, 0, 2),
        (3, 6, 6, 3, 3, 1, 1, 1, 0, 1),
        (4, 17, 16, 4, 2, 3, 3, 1, 1, 1),
    ];

    /// A convolution of shape `(c, h, w, m, group, kh, kw, stride, pad, dilation)` with random
    /// weights and no bias.
    fn random_conv(
        rnd: &mut impl FnMut() -> f64,
        (ch, h, w, m, group, kh, kw, s, p, d): ConvShape,
    ) -> Conv {
        let oh = (h + 2 * p - d * (kh - 1) - 1) / s + 1;
        let ow = (w + 2 * p - d * (kw - 1) - 1) / s + 1;
        let wdata: Vec<f64> = (0..m * (ch / group) * kh * kw).map(|_| rnd()).collect();
        Conv {
            weight_abs: wdata.iter().map(|v| v.abs()).collect(),
            weight: Param::from_f64(vec![m, ch / group, kh, kw], wdata),
            bias: None,
            win: Window {
                n: 1,
                c: ch,
                h,
                w,
                oh,
                ow,
                kh,
                kw,
                sh: s,
                sw: s,
                ph: p,
                pw: p,
                dh: d,
                dw: d,
            },
            m,
            group,
            fp: FpModel::default(),
            dense: Default::default(),
        }
    }

    #[test]
    fn conv_boxes_match_the_convolution_inside_each_box() {
        let mut rnd = stream(11);
        for shape in CONVS {
            let conv = random_conv(&mut rnd, shape);
            let wn = conv.win.clone();
            let (oh, ow, ohw) = (wn.oh, wn.ow, wn.oh * wn.ow);
            let bias: Vec<f64> = (0..conv.m).map(|_| rnd()).collect();
            let corner = Rect {
                y0: 0,
                y1: 1.min(oh),
                x0: ow - 1,
                x1: ow,
            };
            let middle = Rect {
                y0: oh / 3,
                y1: (oh / 3 + 2).min(oh),
                x0: ow / 4,
                x1: (ow / 4 + 3).min(ow),
            };
            let half = Rect {
                y0: 0,
                y1: oh.div_ceil(2),
                x0: 0,
                x1: ow,
            };
            // Small boxes (the gathered path, every group after the first included) and a
            // batch covering more than half the maps (the plain convolution).
            let small = vec![
                Some(corner),
                Some(Rect::default()),
                Some(middle),
                Some(corner),
            ];
            let large = vec![None, Some(half), Some(middle)];
            for boxes in [small, large] {
                let batch = boxes.len();
                let x: Vec<f64> = (0..batch * wn.c * wn.h * wn.w).map(|_| rnd()).collect();
                let got = conv_boxes(&conv, &conv.weight.f64, Some(&bias), &x, batch, &boxes);
                let want = super::conv(&conv, &conv.weight.f64, Some(&bias), &x, batch);
                let mut checked = 0;
                for (b, r) in boxes.iter().enumerate() {
                    let r = r.unwrap_or(Rect {
                        y0: 0,
                        y1: oh,
                        x0: 0,
                        x1: ow,
                    });
                    for mm in 0..conv.m {
                        for oy in r.y0..r.y1 {
                            for ox in r.x0..r.x1 {
                                let i = (b * conv.m + mm) * ohw + oy * ow + ox;
                                assert!(
                                    (got[i] - want[i]).abs() <= 1e-12,
                                    "{shape:?} sample {b} ({mm}, {oy}, {ox}): {} vs {}",
                                    got[i],
                                    want[i]
                                );
                                checked += 1;
                            }
                        }
                    }
                }
                assert!(checked >= conv.m * 2);
            }
        }
    }

    #[test]
    fn conv_t_local_and_dense_paths_match_the_definition() {
        let mut rnd = stream(7);
        let mut lowered = 0;
        for (ch, h, w, m, group, kh, kw, s, p, d) in CONVS {
            let conv = random_conv(&mut rnd, (ch, h, w, m, group, kh, kw, s, p, d));
            let (oh, ow) = (conv.win.oh, conv.win.ow);
            let out_img = m * oh * ow;
            // Images: all zero, one-hot (each corner and the middle), a small patch, dense.
            let mut go = vec![0.0; out_img];
            for &(y, x) in &[(0, 0), (oh - 1, ow - 1), (oh / 2, ow / 2), (0, ow - 1)] {
                let mut g = vec![0.0; out_img];
                g[((m - 1) * oh + y) * ow + x] = rnd();
                go.extend(g);
            }
            let mut g = vec![0.0; out_img];
            for mm in 0..m {
                for y in oh / 3..(oh / 3 + 2).min(oh) {
                    for x in 1..3.min(ow) {
                        g[(mm * oh + y) * ow + x] = rnd();
                    }
                }
            }
            go.extend(g);
            go.extend((0..out_img).map(|_| rnd()));
            let images = go.len() / out_img;
            let got = conv_t(&conv, &conv.weight.f64, &go, images);
            let want = naive_conv_t(&conv, &go, images);
            assert_eq!(got.len(), want.len());
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-12,
                    "conv {ch}x{h}x{w} k{kh}x{kw} s{s}: {i}: {a} vs {b}"
                );
            }
            // Dense maps alone: on a map of `PACKED_MIN` positions or more they are read in
            // place (the whole-map product), else gathered like any box.
            let dense = &go[6 * out_img..];
            let whole = conv_t(&conv, &conv.weight.f64, dense, 1);
            assert!(
                whole
                    .iter()
                    .zip(&want[6 * whole.len()..])
                    .all(|(a, b)| (a - b).abs() <= 1e-12)
            );
            let twice: Vec<f64> = dense.iter().chain(dense).copied().collect();
            let both = conv_t(&conv, &conv.weight.f64, &twice, 2);
            assert!(both.chunks(whole.len()).all(|c| c == whole.as_slice()));
            // The dense lowering, where the layer gets one, computes the same convolution.
            let x: Vec<f64> = (0..2 * ch * h * w).map(|_| rnd()).collect();
            if let Some(t) = dense_conv_matrix(&conv) {
                lowered += 1;
                let by_dense = conv_dense(&conv, &t.f64, None, &x, 2);
                let by_cols = super::conv(&conv, &conv.weight.f64, None, &x, 2);
                assert_eq!(by_dense.len(), by_cols.len());
                for (a, b) in by_dense.iter().zip(&by_cols) {
                    assert!((a - b).abs() <= 1e-12, "dense lowering: {a} vs {b}");
                }
            }
            // The one-hot and patch images take the local path, the dense one the other.
            let area = |k: usize| {
                support_rect(&go[k * out_img..(k + 1) * out_img], m, oh, ow).map(|r| r.area())
            };
            assert_eq!(area(0), None);
            assert_eq!(area(1), Some(1));
            assert!(2 * area(5).unwrap_or(usize::MAX) <= oh * ow);
            assert_eq!(area(6), Some(oh * ow));
            // Boxes given by the caller (the engine's, which may be looser than the support)
            // give the same result; an empty box means an all-zero map.
            let boxes: Vec<Option<Rect>> = (0..images)
                .map(
                    |k| match support_rect(&go[k * out_img..(k + 1) * out_img], m, oh, ow) {
                        None => Some(Rect::default()),
                        Some(r) if k % 2 == 1 => Some(Rect {
                            y0: r.y0.saturating_sub(1),
                            y1: (r.y1 + 1).min(oh),
                            x0: r.x0,
                            x1: (r.x1 + 1).min(ow),
                        }),
                        Some(_) => None,
                    },
                )
                .collect();
            let given = conv_t_in(&conv, &conv.weight.f64, &go, images, Some(&boxes));
            for (i, (a, b)) in given.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-12, "given boxes: {i}: {a} vs {b}");
            }
            // The input box of an output box holds every tap its positions read.
            for k in 0..images {
                let Some(r) = support_rect(&go[k * out_img..(k + 1) * out_img], m, oh, ow) else {
                    continue;
                };
                let inb = conv.win.input_rect(r);
                for oy in r.y0..r.y1 {
                    for ox in r.x0..r.x1 {
                        for (_, _, i) in conv.win.taps(oy, ox) {
                            let (y, x) = (i / w, i % w);
                            assert!(
                                (inb.y0..inb.y1).contains(&y) && (inb.x0..inb.x1).contains(&x),
                                "tap ({y}, {x}) of ({oy}, {ox}) outside {inb:?}"
                            );
                        }
                    }
                }
            }
        }
        // The 1x1 grouped layer does 1 multiply-add per output: unfolding it stays cheaper.
        assert_eq!(lowered, 3);
    }
}

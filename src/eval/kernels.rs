//! Batched dense kernels shared by the evaluator and the bound engines.
//!
//! All kernels take the outer batch size explicitly and work on C-order slices. Linear and
//! convolution layers go through one matrix-matrix product (matrixmultiply's blocked GEMM),
//! never a per-neuron loop.

use super::Scalar;
use crate::ir::{Conv, FILL, Linear, Pool, Window};

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
        if l.inner == 1 {
            for row in y.chunks_exact_mut(l.p) {
                for (v, &bp) in row.iter_mut().zip(b) {
                    *v += bp;
                }
            }
            return y;
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
    y
}

/// Transposed linear layer `G_in[o, k, i] = sum_p W[p, k] G[o, p, i]` for `batch` rows of
/// `G` (the reverse mode, and CROWN's coefficients through the layer).
pub fn linear_t<T: Scalar>(l: &Linear, w: &[T], go: &[T], batch: usize) -> Vec<T> {
    let rows = batch * l.outer;
    let mut gi = vec![T::ZERO; rows * l.k * l.inner];
    if l.inner == 1 {
        gemm(
            rows,
            l.p,
            l.k,
            go,
            (l.p, 1),
            w,
            (l.k, 1),
            &mut gi,
            (l.k, 1),
            false,
        );
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

/// Bytes of column scratch per chunk of the transposed convolution.
const COL_BUDGET: usize = 64 << 20;

/// Transposed convolution: one GEMM per group (`cols = W_g^T G_g`), then the adjoint of
/// im2col scatters the columns back onto the input positions.
pub fn conv_t<T: Scalar>(c: &Conv, w: &[T], go: &[T], batch: usize) -> Vec<T> {
    let wn = &c.win;
    let images = batch * wn.n;
    let (cg, mg) = (wn.c / c.group, c.m / c.group);
    let ckk = cg * wn.kh * wn.kw;
    let ohw = wn.oh * wn.ow;
    let in_img = wn.c * wn.h * wn.w;
    let out_img = c.m * ohw;
    let mut gi = vec![T::ZERO; images * in_img];
    let per_image = ((ckk + mg) * ohw).max(1) * std::mem::size_of::<T>();
    let chunk = (COL_BUDGET / per_image).clamp(1, images.max(1));
    let mut at = vec![T::ZERO; mg * ohw * chunk];
    let mut cols = vec![T::ZERO; ckk * ohw * chunk];
    for start in (0..images).step_by(chunk) {
        let nimg = chunk.min(images - start);
        let ncol = nimg * ohw;
        for grp in 0..c.group {
            for mm in 0..mg {
                for i in 0..nimg {
                    let src = &go[(start + i) * out_img + (grp * mg + mm) * ohw..][..ohw];
                    at[mm * ncol + i * ohw..mm * ncol + (i + 1) * ohw].copy_from_slice(src);
                }
            }
            gemm(
                ckk,
                mg,
                ncol,
                &w[grp * mg * ckk..(grp + 1) * mg * ckk],
                (1, ckk),
                &at[..mg * ncol],
                (ncol, 1),
                &mut cols[..ckk * ncol],
                (ncol, 1),
                false,
            );
            col2im_add(
                wn,
                &cols[..ckk * ncol],
                start,
                nimg,
                grp * cg,
                cg,
                in_img,
                &mut gi,
            );
        }
    }
    gi
}

/// Bytes of im2col scratch per chunk; bounds memory for large batches of small images.
const IM2COL_BUDGET: usize = 32 << 20;

/// Grouped 2-D convolution on `batch` samples via im2col and one GEMM per group and chunk.
pub fn conv<T: Scalar>(cv: &Conv, w: &[T], bias: Option<&[T]>, x: &[T], batch: usize) -> Vec<T> {
    let wn = &cv.win;
    let images = batch * wn.n;
    let (cg, mg) = (wn.c / cv.group, cv.m / cv.group);
    let ckk = cg * wn.kh * wn.kw;
    let ohw = wn.oh * wn.ow;
    let in_img = wn.c * wn.h * wn.w;
    let out_img = cv.m * ohw;
    let mut y = vec![T::ZERO; images * out_img];
    let per_image = (ckk * ohw).max(1) * std::mem::size_of::<T>();
    let chunk = (IM2COL_BUDGET / per_image).clamp(1, images.max(1));
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

/// Adjoint of im2col: add every column entry back onto the input position it was read from.
#[allow(clippy::too_many_arguments)]
pub fn col2im_add<T: Scalar>(
    wn: &Window,
    cols: &[T],
    first: usize,
    nimg: usize,
    c0: usize,
    cg: usize,
    in_img: usize,
    out: &mut [T],
) {
    let ohw = wn.oh * wn.ow;
    let ncol = nimg * ohw;
    for ci in 0..cg {
        for ka in 0..wn.kh {
            for kb in 0..wn.kw {
                let row = (ci * wn.kh + ka) * wn.kw + kb;
                let src_row = &cols[row * ncol..(row + 1) * ncol];
                let Some((ox0, ox1)) = tap_range(ox_params(wn, kb)) else {
                    continue;
                };
                let off = (ox0 * wn.sw + kb * wn.dw) as isize - wn.pw as isize;
                for i in 0..nimg {
                    let base = (first + i) * in_img + (c0 + ci) * wn.h * wn.w;
                    let src = &src_row[i * ohw..(i + 1) * ohw];
                    for oy in 0..wn.oh {
                        let iy = (oy * wn.sh + ka * wn.dh) as isize - wn.ph as isize;
                        if iy < 0 || iy >= wn.h as isize {
                            continue;
                        }
                        let start = base + iy as usize * wn.w + off as usize;
                        let s = &src[oy * wn.ow + ox0..oy * wn.ow + ox1];
                        if wn.sw == 1 {
                            // Unit stride: contiguous, the same additions vectorised.
                            for (d, &v) in out[start..start + s.len()].iter_mut().zip(s) {
                                *d += v;
                            }
                        } else {
                            for (d, &v) in out[start..].iter_mut().step_by(wn.sw).zip(s) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `(out size, stride, kernel offset, padding, in size)` of the horizontal taps of column `kb`.
fn ox_params(wn: &Window, kb: usize) -> (usize, usize, usize, usize, usize) {
    (wn.ow, wn.sw, kb * wn.dw, wn.pw, wn.w)
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
                    for a in 0..wn.kh {
                        let iy = (oy * wn.sh + a * wn.dh) as isize - wn.ph as isize;
                        if iy < 0 || iy >= wn.h as isize {
                            continue;
                        }
                        for b in 0..wn.kw {
                            let ix = (ox * wn.sw + b * wn.dw) as isize - wn.pw as isize;
                            if ix >= 0 && ix < wn.w as isize {
                                taps.push(base + iy as usize * wn.w + ix as usize);
                            }
                        }
                    }
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

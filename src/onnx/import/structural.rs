//! Structural ONNX operators lowered onto the IR families the analyses already handle:
//!
//! * Split, Tile, Expand, Resize/Upsample (nearest) and Where with a constant condition: one
//!   exact index map ([`Op::Select`]).
//! * ReduceSum / ReduceMean: a transpose to put the reduced axes last, then a Linear of ones
//!   (or `1/k`); ReduceMax / ReduceMin: a MaxPool over each reduced group (negated for Min).
//! * Resize/Upsample (linear): one Linear of interpolation weights per resized axis.
//! * ConvTranspose: zeros interleaved and padding (a Select), then a Conv with the flipped,
//!   regrouped kernel: the same sums of products.
//! * MatMul of two network values: a broadcast product (Binary Mul) and a ReduceSum.
//! * Softmax / LogSoftmax: `exp(x - max x)` over a sum, as runtimes compute it; LayerNormalization
//!   as `(x - mean) / sqrt(mean((x - mean)^2) + eps) * scale + bias`.
//! * Equal, Less, Greater, ... and Not/And/Or: folded when every operand is constant.
//!
//! Each lowered node brings its own deployed rounding model, so the bounds cover a runtime that
//! computes the operator in this order (or with no larger rounding error); the README states
//! this assumption for Softmax, LayerNormalization and linear Resize.

use super::*;
use crate::ops::elementwise as ew;

/// Reduce kinds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Reduce {
    Sum,
    Mean,
    Max,
    Min,
}

impl Builder<'_> {
    /// The axes of a reduction (attribute before `axes_input_opset`, input 1 since), normalised
    /// and sorted; all axes when none are given (unless `noop_with_empty_axes`).
    fn reduce_axes(
        &self,
        ctx: &Ctx,
        ins: &[Option<Val>],
        rank: usize,
        axes_input_opset: i64,
    ) -> Result<Option<Vec<usize>>, ImportError> {
        let given = if self.opset >= axes_input_opset {
            if ctx.attr("axes").is_some() {
                return Err(ctx.attr_err(format!(
                    "an 'axes' attribute is not part of {} since opset {axes_input_opset}: axes are input #1",
                    ctx.node.op_type
                )));
            }
            match ins.get(1).and_then(Option::as_ref) {
                None => None,
                Some(_) => Some(const_ints(ctx, ins, 1, "axes")?),
            }
        } else {
            ctx.ints("axes")
        };
        let mut axes = match given {
            Some(a) if !a.is_empty() => a
                .iter()
                .map(|&v| {
                    normalize_axis(v, rank)
                        .ok_or_else(|| ctx.attr_err(format!("axis {v} for rank {rank}")))
                })
                .collect::<Result<Vec<usize>, _>>()?,
            _ => {
                if ctx.int("noop_with_empty_axes", 0) != 0 {
                    return Ok(None);
                }
                (0..rank).collect()
            }
        };
        axes.sort_unstable();
        axes.dedup();
        Ok(Some(axes))
    }

    /// Reduce `x` over `axes` (sorted), keeping them as size-1 dims when `keep`.
    pub(super) fn reduce_var(
        &mut self,
        ctx: &Ctx,
        x: ValueId,
        axes: &[usize],
        keep: bool,
        kind: Reduce,
    ) -> Result<ValueId, ImportError> {
        let xs = self.values[x].shape.clone();
        let kept: Vec<usize> = (0..xs.len()).filter(|a| !axes.contains(a)).collect();
        let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
        let outer: usize = kept.iter().map(|&a| xs[a]).product();
        let k: usize = axes.iter().map(|&a| xs[a]).product();
        let out: Vec<usize> = if keep {
            (0..xs.len())
                .map(|a| if axes.contains(&a) { 1 } else { xs[a] })
                .collect()
        } else {
            kept.iter().map(|&a| xs[a]).collect()
        };
        // Reduced axes last (a no-op map when they already are).
        let src = if perm.iter().enumerate().all(|(i, &p)| i == p) {
            x
        } else {
            let moved: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
            let map = transpose_map(&xs, &perm);
            match self.select(ctx, vec![x], map, 0.0, moved)? {
                Val::Var(v) => v,
                Val::Const(_) => unreachable_const(ctx)?,
            }
        };
        match kind {
            Reduce::Sum | Reduce::Mean => {
                let (w, extra) = if kind == Reduce::Sum {
                    (1.0, 0)
                } else {
                    // The runtime divides the sum by k (or multiplies by a rounded 1/k).
                    (1.0 / k as f64, 2)
                };
                self.linear(ctx, src, vec![w; k], (outer, k, 1, 1), None, extra, out)
            }
            Reduce::Max | Reduce::Min => {
                let neg =
                    |b: &mut Self, v: ValueId, shape: Vec<usize>| -> Result<ValueId, ImportError> {
                        let n = numel(&shape);
                        b.push(
                            ctx,
                            &ctx.node.op_type,
                            Op::Affine(Affine {
                                scale: Param::from_f64(shape.clone(), vec![-1.0; n]),
                                shift: Param::from_f64(shape.clone(), vec![0.0; n]),
                                fp: FpModel {
                                    extra_roundings: 0,
                                    offset: vec![0.0; n],
                                    relative: true,
                                    ..Default::default()
                                },
                            }),
                            vec![v],
                            shape,
                        )
                    };
                let moved_shape = self.values[src].shape.clone();
                let v = if kind == Reduce::Min {
                    neg(self, src, moved_shape)?
                } else {
                    src
                };
                let win = Window {
                    n: 1,
                    c: outer,
                    h: 1,
                    w: k,
                    oh: 1,
                    ow: 1,
                    kh: 1,
                    kw: k,
                    sh: 1,
                    sw: k,
                    ph: 0,
                    pw: 0,
                    dh: 1,
                    dw: 1,
                };
                let m = self.push(
                    ctx,
                    &ctx.node.op_type,
                    Op::MaxPool(Pool {
                        win,
                        count_include_pad: false,
                    }),
                    vec![v],
                    out.clone(),
                )?;
                if kind == Reduce::Min {
                    neg(self, m, out)
                } else {
                    Ok(m)
                }
            }
        }
    }

    pub(super) fn reduce(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let op = ctx.node.op_type.as_str();
        let (kind, axes_opset) = match op {
            "ReduceSum" => (Reduce::Sum, 13),
            "ReduceMean" => (Reduce::Mean, 18),
            "ReduceMax" => (Reduce::Max, 18),
            _ => (Reduce::Min, 18),
        };
        let x = req(ctx, ins, 0)?.clone();
        let rank = self.shape(&x).len();
        let Some(axes) = self.reduce_axes(ctx, ins, rank, axes_opset)? else {
            return Ok(x);
        };
        let keep = ctx.int("keepdims", 1) != 0;
        let xv = self.var(ctx, &x)?;
        Ok(Val::Var(self.reduce_var(ctx, xv, &axes, keep, kind)?))
    }

    /// Split: one Select per output along `axis`.
    pub(super) fn split(
        &mut self,
        ctx: &Ctx,
        ins: &[Option<Val>],
    ) -> Result<Vec<Val>, ImportError> {
        let x = req(ctx, ins, 0)?.clone();
        let xs = self.shape(&x);
        let r = xs.len();
        let axis = normalize_axis(ctx.int("axis", 0), r)
            .ok_or_else(|| ctx.attr_err(format!("axis for rank {r}")))?;
        let outputs = ctx.node.output.len();
        let sizes: Vec<usize> = match (self.opset >= 13, ins.get(1).and_then(Option::as_ref)) {
            (true, Some(_)) => to_dims(ctx, &const_ints(ctx, ins, 1, "split")?)?,
            (false, _) if ctx.ints("split").is_some() => {
                to_dims(ctx, &ctx.ints("split").unwrap_or_default())?
            }
            _ => {
                let n = ctx.int("num_outputs", outputs as i64);
                if n != outputs as i64 || n < 1 {
                    return Err(
                        ctx.attr_err(format!("num_outputs {n} for a node with {outputs} outputs"))
                    );
                }
                let n = n as usize;
                // Equal parts, the last one smaller (opset 18's rule).
                let part = xs[axis].div_ceil(n);
                (0..n)
                    .map(|i| part.min(xs[axis].saturating_sub(i * part)))
                    .collect()
            }
        };
        let total = sizes.iter().try_fold(0usize, |t, &v| t.checked_add(v));
        if total != Some(xs[axis]) || sizes.len() != outputs {
            return Err(ctx.shape_err(format!(
                "split sizes {sizes:?} for axis of length {} into {outputs} outputs",
                xs[axis]
            )));
        }
        let st = strides(&xs);
        let mut start = 0;
        let mut vals = Vec::with_capacity(outputs);
        for &len in &sizes {
            let mut out = xs.clone();
            out[axis] = len;
            let s0 = start;
            let map = index_map(&out, |c| {
                Some(
                    c.iter()
                        .enumerate()
                        .map(|(d, &ci)| {
                            if d == axis {
                                (ci + s0) * st[d]
                            } else {
                                ci * st[d]
                            }
                        })
                        .sum(),
                )
            });
            vals.push(self.gather_map(ctx, &x, map, out)?);
            start += len;
        }
        Ok(vals)
    }

    /// Apply an index map to a value: folded for a constant, a Select node otherwise.
    fn gather_map(
        &mut self,
        ctx: &Ctx,
        x: &Val,
        map: Vec<usize>,
        out: Vec<usize>,
    ) -> Result<Val, ImportError> {
        match x {
            Val::Const(c) => Ok(Val::Const(Rc::new(ConstT {
                data: map.iter().map(|&i| c.data[i]).collect(),
                shape: out,
                is_int: c.is_int,
                exact: c.exact,
            }))),
            Val::Var(v) => self.select(ctx, vec![*v], map, 0.0, out),
        }
    }

    pub(super) fn tile(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let x = req(ctx, ins, 0)?.clone();
        let xs = self.shape(&x);
        let reps = to_dims(ctx, &const_ints(ctx, ins, 1, "repeats")?)?;
        if reps.len() != xs.len() {
            return Err(ctx.shape_err(format!("repeats {reps:?} for rank {}", xs.len())));
        }
        let out: Vec<usize> = xs
            .iter()
            .zip(&reps)
            .map(|(&d, &r)| d.checked_mul(r))
            .collect::<Option<_>>()
            .ok_or_else(|| ctx.shape_err(format!("Tile of {xs:?} by {reps:?} overflows")))?;
        if checked_numel(&out).is_none() {
            return Err(ctx.shape_err(format!(
                "output shape {out:?} exceeds {MAX_ELEMENTS} elements"
            )));
        }
        let st = strides(&xs);
        let map = index_map(&out, |c| {
            Some(
                c.iter()
                    .enumerate()
                    .map(|(d, &ci)| (ci % xs[d].max(1)) * st[d])
                    .sum(),
            )
        });
        self.gather_map(ctx, &x, map, out)
    }

    pub(super) fn expand(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let x = req(ctx, ins, 0)?.clone();
        let xs = self.shape(&x);
        let target = to_dims(ctx, &const_ints(ctx, ins, 1, "shape")?)?;
        let out = broadcast_shapes(&xs, &target)
            .ok_or_else(|| ctx.shape_err(format!("cannot expand {xs:?} to {target:?}")))?;
        if checked_numel(&out).is_none() {
            return Err(ctx.shape_err(format!(
                "output shape {out:?} exceeds {MAX_ELEMENTS} elements"
            )));
        }
        let map = broadcast_index_map(&xs, &out);
        self.gather_map(ctx, &x, map, out)
    }

    /// Where with a constant condition: each element from `x` or `y` (one index map over both).
    pub(super) fn where_op(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let Val::Const(cond) = req(ctx, ins, 0)?.clone() else {
            return Err(ctx.unsupported("Where with a condition computed by the network"));
        };
        let (a, b) = (req(ctx, ins, 1)?.clone(), req(ctx, ins, 2)?.clone());
        let (sa, sb) = (self.shape(&a), self.shape(&b));
        let out = broadcast_shapes(&cond.shape, &sa)
            .and_then(|s| broadcast_shapes(&s, &sb))
            .ok_or_else(|| {
                ctx.shape_err(format!(
                    "shapes {:?}, {sa:?}, {sb:?} do not broadcast",
                    cond.shape
                ))
            })?;
        let (mc, ma, mb) = (
            broadcast_index_map(&cond.shape, &out),
            broadcast_index_map(&sa, &out),
            broadcast_index_map(&sb, &out),
        );
        let na = numel(&sa);
        let map: Vec<usize> = (0..numel(&out))
            .map(|i| {
                if cond.data[mc[i]] != 0.0 {
                    ma[i]
                } else {
                    na + mb[i]
                }
            })
            .collect();
        let (av, bv) = (self.var(ctx, &a)?, self.var(ctx, &b)?);
        self.select(ctx, vec![av, bv], map, 0.0, out)
    }

    /// Comparisons and logic, folded: every operand must be constant.
    pub(super) fn compare(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let op = ctx.node.op_type.as_str();
        let consts: Vec<Rc<ConstT>> = ins
            .iter()
            .flatten()
            .map(|v| match v {
                Val::Const(c) => Ok(c.clone()),
                Val::Var(_) => Err(ctx.unsupported(format!(
                    "{op} of a value computed by the network (only constant operands are folded)"
                ))),
            })
            .collect::<Result<_, _>>()?;
        let f: fn(f64, f64) -> bool = match op {
            "Equal" => |a, b| a == b,
            "Less" => |a, b| a < b,
            "LessOrEqual" => |a, b| a <= b,
            "Greater" => |a, b| a > b,
            "GreaterOrEqual" => |a, b| a >= b,
            "And" => |a, b| a != 0.0 && b != 0.0,
            "Or" => |a, b| a != 0.0 || b != 0.0,
            "Xor" => |a, b| (a != 0.0) != (b != 0.0),
            _ => |a, _| a == 0.0, // Not
        };
        let a = consts
            .first()
            .ok_or_else(|| ctx.shape_err("missing input #0"))?;
        let b = consts.get(1).unwrap_or(a);
        let out = broadcast_shapes(&a.shape, &b.shape).ok_or_else(|| {
            ctx.shape_err(format!(
                "shapes {:?} and {:?} do not broadcast",
                a.shape, b.shape
            ))
        })?;
        let (ma, mb) = (
            broadcast_index_map(&a.shape, &out),
            broadcast_index_map(&b.shape, &out),
        );
        let data = (0..numel(&out))
            .map(|i| f64::from(f(a.data[ma[i]], b.data[mb[i]])))
            .collect();
        Ok(constant(out, data, true))
    }

    /// Softmax (or LogSoftmax) over `axis`: `e = exp(x - max x)`, then `e / sum e` (or
    /// `x - max x - log(sum e)`).
    pub(super) fn softmax(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let log = ctx.node.op_type == "LogSoftmax";
        let x = req(ctx, ins, 0)?.clone();
        let xs = self.shape(&x);
        let r = xs.len();
        let axis = normalize_axis(ctx.int("axis", if self.opset >= 13 { -1 } else { 1 }), r)
            .ok_or_else(|| ctx.attr_err(format!("axis for rank {r}")))?;
        // Before opset 13 the input is coerced to 2-D: every axis from `axis` on is reduced.
        let axes: Vec<usize> = if self.opset >= 13 {
            vec![axis]
        } else {
            (axis..r).collect()
        };
        let xv = self.var(ctx, &x)?;
        let m = self.reduce_var(ctx, xv, &axes, true, Reduce::Max)?;
        let d = self.binary_id(ctx, BinaryKind::Sub, xv, m, xs.clone())?;
        let e = self.push(
            ctx,
            "Softmax",
            Op::Elementwise(Func::of(&ew::EXP)),
            vec![d],
            xs.clone(),
        )?;
        let s = self.reduce_var(ctx, e, &axes, true, Reduce::Sum)?;
        if log {
            let ss = self.values[s].shape.clone();
            let ls = self.push(
                ctx,
                "LogSoftmax",
                Op::Elementwise(Func::of(&ew::LOG)),
                vec![s],
                ss,
            )?;
            return Ok(Val::Var(self.binary_id(ctx, BinaryKind::Sub, d, ls, xs)?));
        }
        Ok(Val::Var(self.binary_id(ctx, BinaryKind::Div, e, s, xs)?))
    }

    /// A Binary node of two IR values with numpy broadcasting to `out`.
    fn binary_id(
        &mut self,
        ctx: &Ctx,
        kind: BinaryKind,
        a: ValueId,
        b: ValueId,
        out: Vec<usize>,
    ) -> Result<ValueId, ImportError> {
        match self.binary_var(ctx, kind, a, b, out)? {
            Val::Var(v) => Ok(v),
            Val::Const(_) => unreachable_const(ctx),
        }
    }

    /// An elementwise affine map `x * scale + shift` with constants broadcast to `x`.
    fn affine_const(
        &mut self,
        ctx: &Ctx,
        x: ValueId,
        scale: &ConstT,
        shift: Option<&ConstT>,
    ) -> Result<ValueId, ImportError> {
        let s = self.values[x].shape.clone();
        if broadcast_shapes(&scale.shape, &s).as_ref() != Some(&s)
            || shift.is_some_and(|b| broadcast_shapes(&b.shape, &s).as_ref() != Some(&s))
        {
            return Err(ctx.shape_err(format!("scale/bias do not broadcast to {s:?}")));
        }
        let sc = broadcast_to(&scale.data, &scale.shape, &s);
        let sh = shift.map_or(vec![0.0; sc.len()], |b| broadcast_to(&b.data, &b.shape, &s));
        let extra = 1 + u32::from(shift.is_some());
        self.push(
            ctx,
            &ctx.node.op_type,
            Op::Affine(Affine {
                fp: FpModel {
                    extra_roundings: extra,
                    offset: sh.iter().map(|v| v.abs()).collect(),
                    relative: false,
                    ..Default::default()
                },
                scale: Param::from_f64(s.clone(), sc),
                shift: Param::from_f64(s.clone(), sh),
            }),
            vec![x],
            s,
        )
    }

    /// LayerNormalization over the axes from `axis` on.
    pub(super) fn layer_norm(
        &mut self,
        ctx: &Ctx,
        ins: &[Option<Val>],
    ) -> Result<Val, ImportError> {
        let x = req(ctx, ins, 0)?.clone();
        let xs = self.shape(&x);
        let r = xs.len();
        let axis = normalize_axis(ctx.int("axis", -1), r)
            .ok_or_else(|| ctx.attr_err(format!("axis for rank {r}")))?;
        let eps = ctx.float("epsilon", 1e-5);
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(ctx.attr_err(format!("epsilon {eps}")));
        }
        let konst = |i: usize, what: &str| -> Result<Option<Rc<ConstT>>, ImportError> {
            match ins.get(i).and_then(Option::as_ref) {
                None => Ok(None),
                Some(Val::Const(c)) => Ok(Some(c.clone())),
                Some(Val::Var(_)) => Err(ctx.unsupported(format!(
                    "LayerNormalization with a {what} computed by the network"
                ))),
            }
        };
        let scale = konst(1, "scale")?.ok_or_else(|| ctx.shape_err("missing input #1 (scale)"))?;
        let bias = konst(2, "bias")?;
        let axes: Vec<usize> = (axis..r).collect();
        let xv = self.var(ctx, &x)?;
        let mean = self.reduce_var(ctx, xv, &axes, true, Reduce::Mean)?;
        let d = self.binary_id(ctx, BinaryKind::Sub, xv, mean, xs.clone())?;
        let sq = self.push(
            ctx,
            "LayerNormalization",
            Op::Elementwise(Func::with(&ew::POW, [2.0, 0.0])),
            vec![d],
            xs.clone(),
        )?;
        let var = self.reduce_var(ctx, sq, &axes, true, Reduce::Mean)?;
        let vs = self.values[var].shape.clone();
        let ones = ConstT {
            shape: vec![],
            data: vec![1.0],
            is_int: false,
            exact: true,
        };
        let e = ConstT {
            shape: vec![],
            data: vec![eps],
            is_int: false,
            exact: false,
        };
        let ve = self.affine_const(ctx, var, &ones, Some(&e))?;
        let sd = self.push(
            ctx,
            "LayerNormalization",
            Op::Elementwise(Func::of(&ew::SQRT)),
            vec![ve],
            vs,
        )?;
        let y = self.binary_id(ctx, BinaryKind::Div, d, sd, xs)?;
        Ok(Val::Var(self.affine_const(
            ctx,
            y,
            &scale,
            bias.as_deref(),
        )?))
    }

    /// MatMul of two network values `A [..., m, k] @ B [..., k, n]`: the broadcast product
    /// `A[..., m, k, 1] * B[..., 1, k, n]` summed over `k`.
    pub(super) fn matmul_var(
        &mut self,
        ctx: &Ctx,
        a: ValueId,
        b: ValueId,
    ) -> Result<Val, ImportError> {
        let (sa, sb) = (self.values[a].shape.clone(), self.values[b].shape.clone());
        if sa.len() < 2 || sb.len() < 2 {
            return Err(ctx.unsupported(format!(
                "MatMul of network values of shapes {sa:?} and {sb:?} (both must have rank >= 2)"
            )));
        }
        let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        if k != k2 {
            return Err(ctx.shape_err(format!("MatMul of {sa:?} and {sb:?}")));
        }
        let lead = broadcast_shapes(&sa[..sa.len() - 2], &sb[..sb.len() - 2]).ok_or_else(|| {
            ctx.shape_err(format!("batch dims of {sa:?} and {sb:?} do not broadcast"))
        })?;
        let view = |b: &mut Self, v: ValueId, shape: Vec<usize>| {
            b.push(ctx, "MatMul", Op::Reshape, vec![v], shape)
        };
        let a4: Vec<usize> = sa[..sa.len() - 2]
            .iter()
            .copied()
            .chain([m, k, 1])
            .collect();
        let b4: Vec<usize> = sb[..sb.len() - 2]
            .iter()
            .copied()
            .chain([1, k, n])
            .collect();
        let av = view(self, a, a4)?;
        let bv = view(self, b, b4)?;
        let prod: Vec<usize> = lead.iter().copied().chain([m, k, n]).collect();
        if checked_numel(&prod).is_none() {
            return Err(ctx.shape_err(format!(
                "MatMul intermediate {prod:?} exceeds {MAX_ELEMENTS} elements"
            )));
        }
        let p = self.binary_id(ctx, BinaryKind::Mul, av, bv, prod.clone())?;
        let ka = prod.len() - 2;
        Ok(Val::Var(self.reduce_var(
            ctx,
            p,
            &[ka],
            false,
            Reduce::Sum,
        )?))
    }

    /// ConvTranspose (1-D and 2-D): zeros interleaved and padded in, then a stride-1 Conv with
    /// the flipped kernel `W'[g M/G + o, c, a, b] = W[g C/G + c, o, kh - 1 - a, kw - 1 - b]`.
    pub(super) fn conv_transpose(
        &mut self,
        ctx: &Ctx,
        ins: &[Option<Val>],
    ) -> Result<Val, ImportError> {
        let (x, w, bias, xs, spatial) = self.conv_operands(ctx, ins)?;
        let group = ctx.int("group", 1);
        if group < 1 || group as usize > xs[1].max(1) {
            return Err(ctx.attr_err(format!("group {group}")));
        }
        let group = group as usize;
        let (c_in, mg) = (w.shape[0], w.shape[1]);
        let m = mg
            .checked_mul(group)
            .ok_or_else(|| ctx.attr_err("group * channels overflows"))?;
        if c_in != xs[1] || c_in % group != 0 {
            return Err(ctx.shape_err(format!(
                "input has {} channels, weight {:?} with group {group}",
                xs[1], w.shape
            )));
        }
        let cg = c_in / group;
        // Spatial geometry, as (h, w) with h = 1 for 1-D.
        let (ih, iw) = if spatial == 2 {
            (xs[2], xs[3])
        } else {
            (1, xs[2])
        };
        let (kh, kw) = if spatial == 2 {
            (w.shape[2], w.shape[3])
        } else {
            (1, w.shape[2])
        };
        let get = |name: &str, default: i64, len: usize| -> Result<Vec<i64>, ImportError> {
            let v = ctx.ints(name).unwrap_or_else(|| vec![default; len]);
            if v.len() != len || v.iter().any(|&e| e < 0 || e > 1 << 20) {
                return Err(ctx.attr_err(format!("{name} = {v:?}")));
            }
            Ok(v)
        };
        // (height, width); a 1-D transpose has a unit height dimension.
        let two = |v: Vec<i64>, h1: i64| -> (i64, i64) {
            if spatial == 2 {
                (v[0], v[1])
            } else {
                (h1, v[0])
            }
        };
        let (sh, sw) = two(get("strides", 1, spatial)?, 1);
        let (dh, dw) = two(get("dilations", 1, spatial)?, 1);
        let (oph, opw) = two(get("output_padding", 0, spatial)?, 0);
        if sh < 1 || sw < 1 || dh < 1 || dw < 1 {
            return Err(ctx.attr_err("strides and dilations must be at least 1"));
        }
        let pads = get("pads", 0, 2 * spatial)?;
        let (pt, pl, pb, pr) = if spatial == 2 {
            (pads[0], pads[1], pads[2], pads[3])
        } else {
            (0, pads[0], 0, pads[1])
        };
        if ctx.ints("output_shape").is_some()
            || ctx.string("auto_pad").is_some_and(|a| a != "NOTSET")
        {
            return Err(ctx.unsupported("ConvTranspose with output_shape or auto_pad (give pads)"));
        }
        let (khe, kwe) = (dh * (kh as i64 - 1), dw * (kw as i64 - 1));
        // Upsampled and padded input: zero between taps, padding d (k - 1) - p (negative crops).
        let up = |n: usize, s: i64| (n as i64 - 1) * s + 1;
        let (ht, hb) = (khe - pt, khe - pb + oph);
        let (wl, wr) = (kwe - pl, kwe - pr + opw);
        let h2 = up(ih, sh) + ht + hb;
        let w2 = up(iw, sw) + wl + wr;
        let oh = h2 - khe;
        let ow = w2 - kwe;
        if oh < 1 || ow < 1 || h2 > 1 << 24 || w2 > 1 << 24 {
            return Err(ctx.shape_err(format!(
                "ConvTranspose output {oh} x {ow} from input {ih} x {iw}"
            )));
        }
        let (h2, w2, oh, ow) = (h2 as usize, w2 as usize, oh as usize, ow as usize);
        let n = xs[0];
        let st = strides(&xs);
        let plane = [n, c_in, h2, w2];
        if checked_numel(&plane).is_none() {
            return Err(ctx.shape_err(format!(
                "ConvTranspose needs an upsampled input {plane:?}, over the element cap"
            )));
        }
        let map = index_map(&plane, |c| {
            let (y, xw) = (c[2] as i64 - ht, c[3] as i64 - wl);
            if y < 0 || xw < 0 || y % sh != 0 || xw % sw != 0 {
                return None;
            }
            let (iy, ix) = ((y / sh) as usize, (xw / sw) as usize);
            if iy >= ih || ix >= iw {
                return None;
            }
            Some(if spatial == 2 {
                c[0] * st[0] + c[1] * st[1] + iy * st[2] + ix * st[3]
            } else {
                c[0] * st[0] + c[1] * st[1] + ix * st[2]
            })
        });
        let xv = self.var(ctx, &x)?;
        let padded = match self.select(ctx, vec![xv], map, 0.0, plane.to_vec())? {
            Val::Var(v) => v,
            Val::Const(_) => return unreachable_const(ctx).map(Val::Var),
        };
        // The flipped, regrouped kernel [m, cg, kh, kw].
        let mut wt = vec![0.0; m * cg * kh * kw];
        for g in 0..group {
            for o in 0..mg {
                for ci in 0..cg {
                    for a in 0..kh {
                        for b in 0..kw {
                            let src =
                                (((g * cg + ci) * mg + o) * kh + (kh - 1 - a)) * kw + (kw - 1 - b);
                            let dst = (((g * mg + o) * cg + ci) * kh + a) * kw + b;
                            wt[dst] = w.data[src];
                        }
                    }
                }
            }
        }
        if let Some(b) = &bias {
            if b.data.len() != m {
                return Err(ctx.shape_err(format!(
                    "bias has {} values for {m} output channels",
                    b.data.len()
                )));
            }
        }
        let win = Window {
            n,
            c: c_in,
            h: h2,
            w: w2,
            oh,
            ow,
            kh,
            kw,
            sh: 1,
            sw: 1,
            ph: 0,
            pw: 0,
            dh: dh as usize,
            dw: dw as usize,
        };
        let extra = u32::from(bias.is_some())
            + u32::from(!w.exact)
            + u32::from(bias.as_ref().is_some_and(|b| !b.exact));
        let conv = Conv {
            weight_abs: wt.iter().map(|v| v.abs()).collect(),
            weight: Param::from_f64(vec![m, cg, kh, kw], wt),
            fp: FpModel {
                extra_roundings: extra,
                offset: bias
                    .as_ref()
                    .map_or(vec![0.0; m], |b| b.data.iter().map(|v| v.abs()).collect()),
                ..Default::default()
            },
            bias: bias.map(|b| Param::from_f64(vec![m], b.data.clone())),
            win,
            m,
            group,
            dense: Default::default(),
        };
        let out = if spatial == 2 {
            vec![n, m, oh, ow]
        } else {
            vec![n, m, ow]
        };
        Ok(Val::Var(self.push(
            ctx,
            "ConvTranspose",
            Op::Conv(conv),
            vec![padded],
            out,
        )?))
    }

    /// Resize / Upsample in modes nearest and linear.
    pub(super) fn resize(&mut self, ctx: &Ctx, ins: &[Option<Val>]) -> Result<Val, ImportError> {
        let x = req(ctx, ins, 0)?.clone();
        let xs = self.shape(&x);
        let r = xs.len();
        let float_input = |i: usize| -> Result<Option<Vec<f64>>, ImportError> {
            match ins.get(i).and_then(Option::as_ref) {
                None => Ok(None),
                Some(Val::Const(c)) if c.data.is_empty() => Ok(None),
                Some(Val::Const(c)) => Ok(Some(c.data.clone())),
                Some(Val::Var(_)) => {
                    Err(ctx.unsupported("Resize with scales or sizes computed by the network"))
                }
            }
        };
        let upsample = ctx.node.op_type == "Upsample";
        let (scales, sizes) = if upsample {
            let s = if self.opset < 9 {
                ctx.attr("scales")
                    .map(|a| a.floats.iter().map(|&v| v as f64).collect())
            } else {
                float_input(1)?
            };
            (s, None)
        } else if self.opset < 11 {
            (float_input(1)?, None)
        } else {
            (float_input(2)?, float_input(3)?)
        };
        let out: Vec<usize> = match (&sizes, &scales) {
            (Some(sz), _) if sz.len() == r => sz.iter().map(|&v| v as usize).collect(),
            (_, Some(sc)) if sc.len() == r => xs
                .iter()
                .zip(sc)
                .map(|(&d, &s)| {
                    if s > 0.0 && s.is_finite() && (d as f64 * s) < 1e9 {
                        Ok((d as f64 * s).floor() as usize)
                    } else {
                        Err(ctx.attr_err(format!("scale {s}")))
                    }
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(ctx.shape_err(format!("Resize of rank {r} needs {r} scales or sizes"))),
        };
        if out.contains(&0) || checked_numel(&out).is_none() {
            return Err(ctx.shape_err(format!("Resize output {out:?}")));
        }
        // The scale the coordinate formulas use: given, or out / in.
        let scale: Vec<f64> = (0..r)
            .map(|d| match (&scales, &sizes) {
                (Some(sc), None) => sc[d],
                _ => out[d] as f64 / xs[d] as f64,
            })
            .collect();
        let mode = ctx.string("mode").unwrap_or_else(|| "nearest".into());
        let ctm = ctx
            .string("coordinate_transformation_mode")
            .unwrap_or_else(|| {
                if upsample || self.opset < 11 {
                    "asymmetric".into()
                } else {
                    "half_pixel".into()
                }
            });
        let nearest_mode = ctx
            .string("nearest_mode")
            .unwrap_or_else(|| "round_prefer_floor".into());
        let orig = |d: usize, o: usize| -> Result<f64, ImportError> {
            let (o, inn, outn, s) = (o as f64, xs[d] as f64, out[d] as f64, scale[d]);
            Ok(match ctm.as_str() {
                "half_pixel" => (o + 0.5) / s - 0.5,
                "pytorch_half_pixel" => {
                    if outn > 1.0 {
                        (o + 0.5) / s - 0.5
                    } else {
                        0.0
                    }
                }
                "align_corners" => {
                    if outn > 1.0 {
                        o * (inn - 1.0) / (outn - 1.0)
                    } else {
                        0.0
                    }
                }
                "asymmetric" => o / s,
                "tf_half_pixel_for_nn" => (o + 0.5) / s,
                other => {
                    return Err(
                        ctx.unsupported(format!("Resize coordinate_transformation_mode {other}"))
                    );
                }
            })
        };
        match mode.as_str() {
            "nearest" => {
                let mut src: Vec<Vec<usize>> = Vec::with_capacity(r);
                for d in 0..r {
                    let mut v = Vec::with_capacity(out[d]);
                    for o in 0..out[d] {
                        let c = orig(d, o)?;
                        let i = match nearest_mode.as_str() {
                            "round_prefer_floor" => {
                                if c.fract() == 0.5 {
                                    c.floor()
                                } else {
                                    c.round()
                                }
                            }
                            "round_prefer_ceil" => c.round(),
                            "floor" => c.floor(),
                            "ceil" => c.ceil(),
                            other => {
                                return Err(ctx.unsupported(format!("Resize nearest_mode {other}")));
                            }
                        };
                        v.push((i.max(0.0) as usize).min(xs[d] - 1));
                    }
                    src.push(v);
                }
                let st = strides(&xs);
                let map = index_map(&out, |c| {
                    Some(
                        c.iter()
                            .enumerate()
                            .map(|(d, &ci)| src[d][ci] * st[d])
                            .sum(),
                    )
                });
                self.gather_map(ctx, &x, map, out)
            }
            "linear" => {
                let mut v = self.var(ctx, &x)?;
                let mut shape = xs.clone();
                for d in 0..r {
                    if out[d] == xs[d] && (scale[d] - 1.0).abs() < 1e-12 {
                        continue;
                    }
                    // Interpolation weights R[o, i] along axis d.
                    let (k, p) = (xs[d], out[d]);
                    // Stored dense: refuse a matrix over the element cap before allocating it.
                    if checked_numel(&[p, k]).is_none() {
                        return Err(ctx.unsupported(format!(
                            "linear Resize of an axis of {k} to {p} (a {p} x {k} interpolation \
                             matrix, over the element cap)"
                        )));
                    }
                    let mut wts = vec![0.0; p * k];
                    for o in 0..p {
                        let c = orig(d, o)?.clamp(0.0, (k - 1) as f64);
                        let i0 = c.floor() as usize;
                        let i1 = (i0 + 1).min(k - 1);
                        let t = c - i0 as f64;
                        wts[o * k + i0] += 1.0 - t;
                        wts[o * k + i1] += t;
                    }
                    let outer: usize = shape[..d].iter().product();
                    let inner: usize = shape[d + 1..].iter().product();
                    shape[d] = p;
                    // A two-term sum in some order, the weight products and a subtraction
                    // (a + t (b - a)): two extra roundings.
                    v = self.linear(ctx, v, wts, (outer, k, inner, p), None, 2, shape.clone())?;
                }
                Ok(Val::Var(v))
            }
            other => Err(ctx.unsupported(format!("Resize mode {other}"))),
        }
    }
}

/// A Select/Binary of variables never folds to a constant; if it did, that is a bug here.
fn unreachable_const<T>(ctx: &Ctx) -> Result<T, ImportError> {
    Err(ctx.shape_err("internal: a lowering of network values produced a constant"))
}

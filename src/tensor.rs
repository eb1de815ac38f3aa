//! Shapes, strides and broadcasting shared by every layer.
//!
//! Tensors are plain C-order `Vec`s. Every evaluation carries an outer batch dimension that is
//! *not* part of the network's own shape: a per-sample tensor of shape `s` is stored as
//! `[batch, s...]`, so per-sample operators never have to know the batch size.

/// Largest number of elements any single tensor of a network may have (weights, activations,
/// constants, the importer's index maps).
///
/// Checked before anything is allocated, so that a model declaring an absurd tensor is refused
/// with an error instead of exhausting memory. 2^26 elements is 256 MiB of f32, twenty times the
/// largest activation of the VNN-COMP networks (VGG-16's first convolutions, 64 x 224 x 224 =
/// 3.2 M). The importer keeps a few f64 words per element of an operator's output (scale, shift
/// and error offset of an affine map, an index map), so one such tensor costs at most a few GiB
/// to import; at 2^28 the fuzzer met 540-byte files that took 8.6 GiB.
pub const MAX_ELEMENTS: usize = 1 << 26;

/// Largest number of elements of a data array (`.npy`). Its values are in the file, so the file
/// length bounds the allocation; this only refuses the absurd.
pub const MAX_ARRAY_ELEMENTS: usize = 1 << 28;

/// Number of elements of `shape`, or `None` when the product of its nonzero dimensions exceeds
/// [`MAX_ELEMENTS`]. Zero dimensions count as one in the test, so an empty shape such as
/// `[0, 2^40, 2^40]` is refused too: its strides would overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    checked_numel_within(shape, MAX_ELEMENTS)
}

/// [`checked_numel`] against another limit.
pub fn checked_numel_within(shape: &[usize], limit: usize) -> Option<usize> {
    let mut nonzero: usize = 1;
    for &d in shape {
        nonzero = nonzero.checked_mul(d.max(1))?;
        if nonzero > limit {
            return None;
        }
    }
    Some(if shape.contains(&0) { 0 } else { nonzero })
}

/// Number of elements of a shape already known to be valid.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// C-order strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Numpy-style broadcast of two shapes, `None` when incompatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// For every element of `to`, the flat index of the element of `from` it reads under numpy
/// broadcasting. `from` must broadcast to `to`.
pub fn broadcast_index_map(from: &[usize], to: &[usize]) -> Vec<usize> {
    let n = to.len();
    let off = n - from.len();
    let from_strides = strides(from);
    // Stride 0 along broadcast axes.
    let mut eff = vec![0usize; n];
    for i in 0..from.len() {
        if from[i] != 1 || to[i + off] == 1 {
            eff[i + off] = from_strides[i];
        }
    }
    let total = numel(to);
    let mut map = Vec::with_capacity(total);
    let mut idx = vec![0usize; n];
    let mut flat = 0usize;
    for _ in 0..total {
        map.push(flat);
        // Increment the multi-index, updating the source offset incrementally.
        for ax in (0..n).rev() {
            idx[ax] += 1;
            flat += eff[ax];
            if idx[ax] < to[ax] {
                break;
            }
            flat -= eff[ax] * idx[ax];
            idx[ax] = 0;
        }
    }
    map
}

/// Materialise `data` (of shape `from`) broadcast to shape `to`.
pub fn broadcast_to<T: Copy>(data: &[T], from: &[usize], to: &[usize]) -> Vec<T> {
    broadcast_index_map(from, to)
        .into_iter()
        .map(|i| data[i])
        .collect()
}

/// Normalise a possibly negative ONNX axis against `rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_shapes_follow_numpy() {
        assert_eq!(broadcast_shapes(&[1, 5], &[5]), Some(vec![1, 5]));
        assert_eq!(broadcast_shapes(&[3, 1], &[1, 4]), Some(vec![3, 4]));
        assert_eq!(broadcast_shapes(&[2], &[3]), None);
        assert_eq!(broadcast_shapes(&[], &[2, 2]), Some(vec![2, 2]));
    }

    #[test]
    fn broadcast_index_map_reads_the_right_elements() {
        // [3,1] -> [3,2]: each row repeats its element.
        assert_eq!(
            broadcast_index_map(&[3, 1], &[3, 2]),
            vec![0, 0, 1, 1, 2, 2]
        );
        // [2] -> [2,2]: rows repeat the vector.
        assert_eq!(broadcast_index_map(&[2], &[2, 2]), vec![0, 1, 0, 1]);
        assert_eq!(broadcast_index_map(&[], &[3]), vec![0, 0, 0]);
    }

    #[test]
    fn checked_numel_refuses_absurd_sizes() {
        assert_eq!(checked_numel(&[2, 3]), Some(6));
        assert_eq!(checked_numel(&[1_000_000, 1_000_000]), None);
        assert_eq!(checked_numel(&[usize::MAX, 2]), None);
    }
}

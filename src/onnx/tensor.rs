//! Decoding of ONNX `TensorProto`s into constant tensors, with every size check done before
//! any allocation that depends on a declared shape.

use super::ImportError;
use crate::tensor::{MAX_ELEMENTS, checked_numel};
use onnx_protobuf::TensorProto;
use onnx_protobuf::tensor_proto::DataLocation;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// ONNX element type codes (`TensorProto.DataType`).
pub mod dt {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const UINT16: i32 = 4;
    pub const INT16: i32 = 5;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const UINT32: i32 = 12;
    pub const UINT64: i32 = 13;
    pub const BFLOAT16: i32 = 16;

    /// True for the floating-point codes.
    pub fn is_float(t: i32) -> bool {
        matches!(t, FLOAT | FLOAT16 | DOUBLE | BFLOAT16)
    }
}

/// A constant tensor during import. Values are held as f64 (integers up to 2^53 exactly; larger
/// ones only appear as "to the end" sentinels, which saturate correctly).
#[derive(Clone, Debug)]
pub struct ConstT {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
    /// Integer-typed (shapes, indices, axes).
    pub is_int: bool,
    /// The values are exactly what the deployed network uses (not the result of folding
    /// arithmetic, which the deployed network would round differently).
    pub exact: bool,
}

impl ConstT {
    /// Data as integers (saturating).
    pub fn ints(&self) -> Vec<i64> {
        self.data.iter().map(|&v| v as i64).collect()
    }
}

fn elem_size(t: i32) -> Option<usize> {
    use dt::*;
    Some(match t {
        FLOAT | INT32 | UINT32 => 4,
        UINT8 | INT8 | BOOL => 1,
        UINT16 | INT16 | FLOAT16 | BFLOAT16 => 2,
        INT64 | DOUBLE | UINT64 => 8,
        _ => return None,
    })
}

/// IEEE half precision to f64.
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let frac = (bits & 0x3ff) as f64;
    match exp {
        0 => sign * frac * f64::powi(2.0, -24),
        31 => {
            if frac == 0.0 {
                sign * f64::INFINITY
            } else {
                f64::NAN
            }
        }
        e => sign * (1.0 + frac / 1024.0) * f64::powi(2.0, e - 15),
    }
}

fn decode_le(t: i32, bytes: &[u8]) -> Vec<f64> {
    use dt::*;
    let size = elem_size(t).unwrap_or(1);
    bytes
        .chunks_exact(size)
        .map(|c| match t {
            FLOAT => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
            DOUBLE => f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
            INT32 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
            UINT32 => u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
            INT64 => i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64,
            UINT64 => u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64,
            INT8 => c[0] as i8 as f64,
            UINT8 | BOOL => c[0] as f64,
            INT16 => i16::from_le_bytes([c[0], c[1]]) as f64,
            UINT16 => u16::from_le_bytes([c[0], c[1]]) as f64,
            FLOAT16 => f16_to_f64(u16::from_le_bytes([c[0], c[1]])),
            BFLOAT16 => f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64,
            _ => f64::NAN,
        })
        .collect()
}

fn bad(name: &str, reason: impl Into<String>) -> ImportError {
    ImportError::BadTensor {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// Validate the declared dims and return them with the element count.
pub fn checked_dims(name: &str, dims: &[i64]) -> Result<(Vec<usize>, usize), ImportError> {
    let mut shape = Vec::with_capacity(dims.len());
    for &d in dims {
        if d < 0 {
            return Err(bad(
                name,
                format!("negative dimension {d} in shape {dims:?}"),
            ));
        }
        shape.push(d as usize);
    }
    let n = checked_numel(&shape).ok_or_else(|| ImportError::TooLarge {
        name: name.to_string(),
        shape: dims.to_vec(),
        limit: MAX_ELEMENTS,
    })?;
    Ok((shape, n))
}

/// Read `len` bytes of external data, after checking the file is big enough.
fn read_external(t: &TensorProto, base: &Path, len: usize) -> Result<Vec<u8>, ImportError> {
    let name = &t.name;
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for kv in &t.external_data {
        match kv.key.as_str() {
            "location" => location = Some(kv.value.clone()),
            "offset" => {
                offset = kv
                    .value
                    .parse()
                    .map_err(|_| bad(name, format!("bad external offset '{}'", kv.value)))?
            }
            "length" => {
                length = Some(
                    kv.value
                        .parse::<u64>()
                        .map_err(|_| bad(name, format!("bad external length '{}'", kv.value)))?,
                )
            }
            _ => {}
        }
    }
    let loc = location.ok_or_else(|| bad(name, "external data without a location"))?;
    if let Some(l) = length {
        if l != len as u64 {
            return Err(bad(
                name,
                format!(
                    "external length {l} bytes does not match the declared shape ({len} bytes)"
                ),
            ));
        }
    }
    let path = base.join(&loc);
    let mut f = std::fs::File::open(&path).map_err(|e| {
        bad(
            name,
            format!("cannot open external data {}: {e}", path.display()),
        )
    })?;
    let size = f
        .metadata()
        .map_err(|e| bad(name, format!("cannot stat {}: {e}", path.display())))?
        .len();
    if offset.checked_add(len as u64).is_none_or(|end| end > size) {
        return Err(bad(
            name,
            format!(
                "external data {} holds {size} bytes, fewer than offset {offset} + {len}",
                path.display()
            ),
        ));
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| bad(name, e.to_string()))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)
        .map_err(|e| bad(name, e.to_string()))?;
    Ok(buf)
}

/// Decode a tensor, checking its size, its data length against its shape and (for floating
/// types) that every value is finite.
pub fn decode(t: &TensorProto, base: &Path) -> Result<ConstT, ImportError> {
    use dt::*;
    let name = if t.name.is_empty() {
        "<unnamed>"
    } else {
        &t.name
    };
    let (shape, n) = checked_dims(name, &t.dims)?;
    let ty = t.data_type;
    let size =
        elem_size(ty).ok_or_else(|| bad(name, format!("unsupported element type code {ty}")))?;
    let external = t.data_location.enum_value() == Ok(DataLocation::EXTERNAL);
    let data: Vec<f64> = if external {
        decode_le(ty, &read_external(t, base, n * size)?)
    } else if !t.raw_data.is_empty() {
        if t.raw_data.len() != n * size {
            return Err(bad(
                name,
                format!(
                    "shape {:?} needs {} bytes of data, the tensor holds {}",
                    t.dims,
                    n * size,
                    t.raw_data.len()
                ),
            ));
        }
        decode_le(ty, &t.raw_data)
    } else {
        let typed: Vec<f64> = match ty {
            FLOAT => t.float_data.iter().map(|&v| v as f64).collect(),
            DOUBLE => t.double_data.clone(),
            INT64 => t.int64_data.iter().map(|&v| v as f64).collect(),
            INT32 | INT16 | INT8 | UINT16 | UINT8 | BOOL => {
                t.int32_data.iter().map(|&v| v as f64).collect()
            }
            FLOAT16 => t.int32_data.iter().map(|&v| f16_to_f64(v as u16)).collect(),
            BFLOAT16 => t
                .int32_data
                .iter()
                .map(|&v| f32::from_bits((v as u32) << 16) as f64)
                .collect(),
            UINT32 | UINT64 => t.uint64_data.iter().map(|&v| v as f64).collect(),
            _ => Vec::new(),
        };
        if typed.len() != n {
            return Err(bad(
                name,
                format!(
                    "shape {:?} declares {n} elements, the tensor holds {}",
                    t.dims,
                    typed.len()
                ),
            ));
        }
        typed
    };
    if is_float(ty) {
        if let Some((index, &value)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ImportError::NonFinite {
                name: name.to_string(),
                index,
                value,
            });
        }
    }
    Ok(ConstT {
        shape,
        data,
        is_int: !is_float(ty),
        exact: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_decodes() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x0001), f64::powi(2.0, -24));
        assert!(f16_to_f64(0x7e00).is_nan());
    }

    #[test]
    fn absurd_declared_size_is_refused_without_allocating() {
        let mut t = TensorProto::new();
        t.name = "w".into();
        t.dims = vec![1_000_000, 1_000_000];
        t.data_type = dt::FLOAT;
        let e = decode(&t, Path::new(".")).unwrap_err();
        assert!(matches!(e, ImportError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn data_length_must_match_shape() {
        let mut t = TensorProto::new();
        t.name = "w".into();
        t.dims = vec![2, 3];
        t.data_type = dt::FLOAT;
        t.float_data = vec![1.0; 5];
        assert!(decode(&t, Path::new(".")).is_err());
        t.raw_data = vec![0; 20];
        assert!(decode(&t, Path::new(".")).is_err());
    }

    #[test]
    fn nan_weight_is_refused() {
        let mut t = TensorProto::new();
        t.name = "w".into();
        t.dims = vec![2];
        t.data_type = dt::FLOAT;
        t.float_data = vec![1.0, f32::NAN];
        let e = decode(&t, Path::new(".")).unwrap_err();
        assert!(matches!(e, ImportError::NonFinite { index: 1, .. }), "{e}");
    }
}

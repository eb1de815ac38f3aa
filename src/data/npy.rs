//! A strict reader for NumPy `.npy` files (format versions 1-3, little- or big-endian numeric
//! dtypes, C order). Sizes are checked against the file length before any allocation.

use crate::tensor::{MAX_ARRAY_ELEMENTS, checked_numel_within};
use std::path::Path;
use thiserror::Error;

/// Errors of `.npy` reading.
#[derive(Debug, Error)]
pub enum NpyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a .npy file ({reason})")]
    Format { path: String, reason: String },
    #[error(
        "{path}: unsupported dtype '{dtype}' (supported: f4, f8, u1, i1, u2, i2, i4, i8, u4, u8, b1)"
    )]
    Dtype { path: String, dtype: String },
    #[error("{path}: shape {shape:?} has more than {limit} elements")]
    TooLarge {
        path: String,
        shape: Vec<usize>,
        limit: usize,
    },
    #[error("{path}: shape {shape:?} needs {need} bytes of data, the file holds {have}")]
    Truncated {
        path: String,
        shape: Vec<usize>,
        need: usize,
        have: usize,
    },
    #[error("{path}: Fortran-order arrays are not supported")]
    FortranOrder { path: String },
}

/// An array read as f64 values, with its shape and whether the dtype was an integer type.
#[derive(Clone, Debug)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
    pub integer: bool,
    /// The dtype string of the file, e.g. `<f4`.
    pub dtype: String,
}

fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let k = format!("'{key}':");
    let start = header.find(&k)? + k.len();
    Some(header[start..].trim_start())
}

/// Parse a `.npy` file's bytes.
pub fn parse(bytes: &[u8], path: &str) -> Result<Array, NpyError> {
    let fmt = |reason: &str| NpyError::Format {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(fmt("missing magic string"));
    }
    let major = bytes[6];
    let (hlen, hstart): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(fmt("truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(fmt(&format!("unknown format version {v}"))),
    };
    let hend = hstart
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| fmt("truncated header"))?;
    let header =
        std::str::from_utf8(&bytes[hstart..hend]).map_err(|_| fmt("header is not text"))?;
    let descr = header_value(header, "descr").ok_or_else(|| fmt("no descr"))?;
    let descr = descr.trim_start_matches(['\'', '"']);
    let dtype: String = descr
        .chars()
        .take_while(|c| *c != '\'' && *c != '"')
        .collect();
    if header_value(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(NpyError::FortranOrder {
            path: path.to_string(),
        });
    }
    let shape_txt = header_value(header, "shape").ok_or_else(|| fmt("no shape"))?;
    let inner = shape_txt
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| fmt("bad shape"))?;
    let mut shape = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        shape.push(part.parse::<usize>().map_err(|_| fmt("bad shape"))?);
    }
    let n = checked_numel_within(&shape, MAX_ARRAY_ELEMENTS).ok_or_else(|| NpyError::TooLarge {
        path: path.to_string(),
        shape: shape.clone(),
        limit: MAX_ARRAY_ELEMENTS,
    })?;
    let (endian, kind) = match dtype.as_bytes() {
        [e, rest @ ..] if matches!(e, b'<' | b'>' | b'|' | b'=') => {
            (*e, std::str::from_utf8(rest).unwrap_or(""))
        }
        _ => (b'<', dtype.as_str()),
    };
    let size: usize = match kind {
        "f4" | "i4" | "u4" => 4,
        "f8" | "i8" | "u8" => 8,
        "i2" | "u2" => 2,
        "u1" | "i1" | "b1" => 1,
        _ => {
            return Err(NpyError::Dtype {
                path: path.to_string(),
                dtype: dtype.clone(),
            });
        }
    };
    let need = n * size;
    let body = &bytes[hend..];
    if body.len() < need {
        return Err(NpyError::Truncated {
            path: path.to_string(),
            shape,
            need,
            have: body.len(),
        });
    }
    let big = endian == b'>';
    let rd = |c: &[u8]| -> [u8; 8] {
        let mut b = [0u8; 8];
        if big {
            for (i, v) in c.iter().rev().enumerate() {
                b[i] = *v;
            }
        } else {
            b[..c.len()].copy_from_slice(c);
        }
        b
    };
    let data: Vec<f64> = body[..need]
        .chunks_exact(size)
        .map(|c| {
            let b = rd(c);
            match kind {
                "f4" => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
                "f8" => f64::from_le_bytes(b),
                "i4" => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
                "u4" => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
                "i8" => i64::from_le_bytes(b) as f64,
                "u8" => u64::from_le_bytes(b) as f64,
                "i2" => i16::from_le_bytes([b[0], b[1]]) as f64,
                "u2" => u16::from_le_bytes([b[0], b[1]]) as f64,
                "i1" => b[0] as i8 as f64,
                _ => b[0] as f64,
            }
        })
        .collect();
    Ok(Array {
        shape,
        data,
        integer: !kind.starts_with('f'),
        dtype,
    })
}

/// Read a `.npy` file.
pub fn read(path: &Path) -> Result<Array, NpyError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: p.clone(),
        source,
    })?;
    parse(&bytes, &p)
}

/// Serialise a float32 array (C order) as `.npy` version 1 bytes.
pub fn write_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let bytes = write_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let a = parse(&bytes, "x").unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data[5], 6.5);
        assert!(parse(&bytes[..bytes.len() - 2], "x").is_err());
        assert!(parse(b"not numpy at all", "x").is_err());
        let huge = write_f32(&[100_000_000_000, 3], &[]);
        assert!(matches!(parse(&huge, "x"), Err(NpyError::TooLarge { .. })));
        let short = write_f32(&[4, 3], &[1.0; 5]);
        assert!(matches!(
            parse(&short, "x"),
            Err(NpyError::Truncated { .. })
        ));
    }
}

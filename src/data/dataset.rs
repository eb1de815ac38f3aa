//! A data set checked against a model: items of a `.npy` array (each as many values as the
//! model input) and optional integer labels.

use super::npy::Array;
use thiserror::Error;

/// Errors of data checking (shape, values, labels).
#[derive(Debug, Error)]
pub enum DataError {
    #[error("invalid parameter: {0}")]
    Parameter(String),
    #[error(
        "data shape {shape:?} does not match the model input {input:?}: each item must hold {expected} values"
    )]
    Shape {
        shape: Vec<usize>,
        input: Vec<usize>,
        expected: usize,
    },
    #[error("data item {index} holds a non-finite value ({value}) at position {position}")]
    NonFinite {
        index: usize,
        position: usize,
        value: f64,
    },
    #[error("labels: {0}")]
    Labels(String),
    #[error("the data holds no items (shape {0:?})")]
    Empty(Vec<usize>),
}

/// Inputs (and optional labels) checked against a model.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Items, each `dim` values, C order.
    pub x: Vec<f32>,
    pub items: usize,
    pub dim: usize,
    pub labels: Option<Vec<usize>>,
}

impl Dataset {
    /// Check `data` (shape `[N, ...]`, `scale` applied) and `labels` (`[N]`, integers in
    /// `0..classes`) against the model input size. Items whose shape differs from the model's
    /// but hold as many values are accepted as a C-order reshape (e.g. `[N, 64]` for a
    /// `[1, 1, 8, 8]` CNN).
    pub fn new(
        data: &Array,
        labels: Option<&Array>,
        scale: f64,
        input_shape: &[usize],
        classes: usize,
    ) -> Result<Self, DataError> {
        let dim: usize = input_shape.iter().product();
        if !(scale.is_finite() && scale != 0.0) {
            return Err(DataError::Parameter(format!(
                "--scale must be finite and non-zero, got {scale}"
            )));
        }
        let shape_err = || DataError::Shape {
            shape: data.shape.clone(),
            input: input_shape.to_vec(),
            expected: dim,
        };
        let items = *data.shape.first().ok_or_else(shape_err)?;
        let per: usize = data.shape[1..].iter().product();
        if per != dim {
            return Err(shape_err());
        }
        if items == 0 {
            return Err(DataError::Empty(data.shape.clone()));
        }
        let mut x = Vec::with_capacity(data.data.len());
        for (k, &v) in data.data.iter().enumerate() {
            let s = v * scale;
            if !s.is_finite() || !((s as f32).is_finite()) {
                return Err(DataError::NonFinite {
                    index: k / dim,
                    position: k % dim,
                    value: v,
                });
            }
            x.push(s as f32);
        }
        let labels = match labels {
            None => None,
            Some(l) => {
                let n: usize = l.shape.iter().product();
                if l.shape.iter().filter(|&&d| d != 1).count() > 1 || n != items {
                    return Err(DataError::Labels(format!(
                        "shape {:?} does not give one label per data item ({items} items)",
                        l.shape
                    )));
                }
                let mut out = Vec::with_capacity(n);
                for (i, &v) in l.data.iter().enumerate() {
                    if v.fract() != 0.0 || v < 0.0 || v >= classes as f64 {
                        return Err(DataError::Labels(format!(
                            "label {i} is {v}, not a class index in 0..{classes}"
                        )));
                    }
                    out.push(v as usize);
                }
                Some(out)
            }
        };
        Ok(Dataset {
            x,
            items,
            dim,
            labels,
        })
    }

    /// Keep only the first `count` items (and labels).
    pub fn truncate(&mut self, count: usize) {
        self.items = count.min(self.items);
        self.x.truncate(self.items * self.dim);
        if let Some(l) = &mut self.labels {
            l.truncate(self.items);
        }
    }

    /// Item `i`.
    pub fn item(&self, i: usize) -> &[f32] {
        &self.x[i * self.dim..(i + 1) * self.dim]
    }
}

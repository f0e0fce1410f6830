//! Projections: dense (f32, adapters merged) or quantized with an unmerged
//! LoRA beside them, and siblings fused into one GEMM.

use candle_core::quantized::{QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};

use super::kernels;
use crate::error::Result;

pub(super) enum Linear {
    /// `w` is the transposed weight, [in, out], any adapter merged in.
    Dense { w: Tensor, b: Option<Tensor> },
    Quant {
        w: QMatMul,
        b: Option<Tensor>,
        lora: Option<Lora>,
    },
}

pub(super) fn opt_to(t: Option<Tensor>, dev: &Device) -> Result<Option<Tensor>> {
    Ok(t.map(|t| t.to_device(dev)).transpose()?)
}

impl Linear {
    /// The same projection with its weights on `dev`; quantized weights stay
    /// quantized there (their stored blocks are copied as they are).
    pub(super) fn into_device(self, dev: &Device) -> Result<Linear> {
        Ok(match self {
            Linear::Dense { w, b } => Linear::Dense {
                w: w.to_device(dev)?,
                b: opt_to(b, dev)?,
            },
            Linear::Quant { w, b, lora } => Linear::Quant {
                w: match w {
                    QMatMul::QTensor(q) => {
                        let data = q.data()?;
                        let storage = QStorage::from_data(data, dev, q.dtype())?;
                        QMatMul::from_qtensor(QTensor::new(storage, q.shape().clone())?)?
                    }
                    QMatMul::Tensor(t) => QMatMul::Tensor(t.to_device(dev)?),
                    QMatMul::TensorF16(t) => QMatMul::TensorF16(t.to_device(dev)?),
                },
                b: opt_to(b, dev)?,
                lora: match lora {
                    Some(l) => Some(Lora {
                        a_t: l.a_t.to_device(dev)?,
                        b_t: l.b_t.to_device(dev)?,
                        scale: l.scale,
                    }),
                    None => None,
                },
            },
        })
    }
}

/// An unmerged LoRA delta, y += scale · (x·Aᵀ)·Bᵀ, beside quantized weights.
pub(super) struct Lora {
    pub(super) a_t: Tensor,
    pub(super) b_t: Tensor,
    pub(super) scale: f64,
}

impl Linear {
    /// x: [n, in] contiguous -> [n, out]
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (y, b, lora) = match self {
            Linear::Dense { w, b } => (x.matmul(w)?, b, &None),
            Linear::Quant { w, b, lora } => (w.forward(x)?, b, lora),
        };
        let y = match lora {
            Some(l) => (y + (x.matmul(&l.a_t)?.matmul(&l.b_t)? * l.scale)?)?,
            None => y,
        };
        Ok(match b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// A projection as read from the checkpoint: dense weights still [out, in]
/// (transposed when the projection is assembled, together with its
/// siblings), quantized ones ready.
pub(super) enum Loaded {
    Dense { w: Tensor, b: Option<Tensor> },
    Ready(Linear),
}

impl Loaded {
    pub(super) fn into_linear(self) -> Result<Linear> {
        Ok(match self {
            Loaded::Dense { w, b } => Linear::Dense {
                w: kernels::transpose_cat(&[w])?,
                b,
            },
            Loaded::Ready(l) => l,
        })
    }
}

/// Projections that read the same input. Dense ones (adapters merged) are
/// concatenated into one GEMM: fewer, larger matmuls use the cores better.
pub(super) enum Proj {
    Split(Vec<Linear>),
    Fused(Linear, Vec<usize>),
}

impl Proj {
    pub(super) fn new(parts: Vec<Loaded>, sizes: Vec<usize>) -> Result<Self> {
        let mut ws = Vec::new();
        let mut bs = Vec::new();
        for l in &parts {
            if let Loaded::Dense { w, b } = l {
                ws.push(w.clone());
                bs.push(b.clone());
            }
        }
        let same_bias = bs.iter().all(Option::is_some) || bs.iter().all(Option::is_none);
        if ws.len() != parts.len() || !same_bias {
            let parts = parts
                .into_iter()
                .map(Loaded::into_linear)
                .collect::<Result<_>>()?;
            return Ok(Proj::Split(parts));
        }
        drop(parts);
        let w = kernels::transpose_cat(&ws)?;
        drop(ws);
        let b = if bs.iter().all(Option::is_some) {
            Some(Tensor::cat(
                &bs.into_iter().flatten().collect::<Vec<_>>(),
                0,
            )?)
        } else {
            None
        };
        Ok(Proj::Fused(Linear::Dense { w, b }, sizes))
    }

    pub(super) fn into_device(self, dev: &Device) -> Result<Self> {
        Ok(match self {
            Proj::Split(parts) => Proj::Split(
                parts
                    .into_iter()
                    .map(|l| l.into_device(dev))
                    .collect::<Result<_>>()?,
            ),
            Proj::Fused(l, sizes) => Proj::Fused(l.into_device(dev)?, sizes),
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Proj::Split(parts) => parts.iter().map(|l| l.forward(x)).collect(),
            Proj::Fused(l, sizes) => {
                let y = l.forward(x)?;
                let mut out = Vec::with_capacity(sizes.len());
                let mut off = 0;
                for &n in sizes {
                    out.push(y.narrow(1, off, n)?);
                    off += n;
                }
                Ok(out)
            }
        }
    }
}

//! What-if quantization: a candidate computed from a base on the fly, so a
//! user can check a quantization before producing it (`nf4(BASE)`,
//! `int8(BASE)`, `q8_0(BASE)`, `q4_0(BASE)`). Only the linear projections
//! inside decoder blocks are quantized — what bitsandbytes replaces with
//! Linear4bit/Linear8bitLt; embeddings and norms stay as stored.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::Weight;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhatIf {
    /// bitsandbytes NF4: blocks of 64, absmax scaling, the NormalFloat4 codebook.
    Nf4,
    /// LLM.int8-style absmax per output row (no outlier decomposition).
    Int8,
    /// GGUF Q8_0 (blocks of 32, f16 scale), via candle's quantizer.
    Q8_0,
    /// GGUF Q4_0 (blocks of 32, f16 scale), via candle's quantizer.
    Q4_0,
}

impl WhatIf {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "nf4" => WhatIf::Nf4,
            "int8" => WhatIf::Int8,
            "q8_0" => WhatIf::Q8_0,
            "q4_0" => WhatIf::Q4_0,
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            WhatIf::Nf4 => "nf4",
            WhatIf::Int8 => "int8",
            WhatIf::Q8_0 => "q8_0",
            WhatIf::Q4_0 => "q4_0",
        }
    }

    /// Whether this tensor is one the quantizer replaces.
    pub fn applies_to(name: &str) -> bool {
        name.starts_with("model.layers.") && name.ends_with("_proj.weight")
    }

    pub fn apply(&self, w: Weight) -> Result<Weight> {
        let f = w.to_f32()?;
        Ok(match self {
            WhatIf::Nf4 => Weight::Dense(nf4_roundtrip(&f, NF4_BLOCK)?),
            WhatIf::Int8 => Weight::Dense(int8_rowwise_roundtrip(&f)?),
            WhatIf::Q8_0 => Weight::Quantized(QTensor::quantize(&f, GgmlDType::Q8_0)?),
            WhatIf::Q4_0 => Weight::Quantized(QTensor::quantize(&f, GgmlDType::Q4_0)?),
        })
    }
}

pub const NF4_BLOCK: usize = 64;

/// bitsandbytes' NF4 code (functional.py `get_4bit_type("nf4")`), index = 4-bit code.
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// The NF4 code of a value already scaled to [-1, 1]: the nearest entry,
/// which is what bitsandbytes' midpoint decision tree computes.
pub fn nf4_code(x: f32) -> u8 {
    let mut best = 0u8;
    let mut dist = f32::INFINITY;
    for (i, c) in NF4_CODE.iter().enumerate() {
        let d = (x - c).abs();
        if d < dist {
            dist = d;
            best = i as u8;
        }
    }
    best
}

/// Quantize then dequantize blockwise over the flattened tensor, as
/// bitsandbytes' quantize_4bit/dequantize_4bit do (absmax kept in f32).
pub fn nf4_roundtrip(w: &Tensor, block: usize) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let v = w.flatten_all()?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(v.len());
    for chunk in v.chunks(block) {
        let absmax = chunk.iter().fold(0f32, |m, x| m.max(x.abs()));
        if absmax == 0.0 {
            out.extend(std::iter::repeat_n(0f32, chunk.len()));
            continue;
        }
        for x in chunk {
            out.push(NF4_CODE[nf4_code(x / absmax) as usize] * absmax);
        }
    }
    Ok(Tensor::from_vec(out, dims, &Device::Cpu)?)
}

/// bitsandbytes' int8 dequantization multiplies by this constant (1/127 as
/// it writes it), not by dividing: the two differ in the last bit.
// The literal is bitsandbytes' own, kept whole so it can be grepped for.
#[allow(clippy::excessive_precision)]
pub const INT8_INV_127: f32 = 7.874_015_718_698_502e-3;

/// One row as LLM.int8 stores it: codes round(x · 127/absmax) and the absmax (SCB).
pub fn int8_row_codes(row: &[f32]) -> (Vec<i8>, f32) {
    let absmax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
    let s = if absmax > 0.0 { 127.0 / absmax } else { 0.0 };
    let codes = row
        .iter()
        .map(|x| (x * s).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (codes, absmax)
}

/// Symmetric int8 with one absmax scale per output row, rounded and scaled
/// as bitsandbytes' LLM.int8 layout is.
pub fn int8_rowwise_roundtrip(w: &Tensor) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let v = w.to_vec2::<f32>()?;
    let mut out = Vec::with_capacity(rows * cols);
    for row in v {
        let (codes, absmax) = int8_row_codes(&row);
        out.extend(codes.iter().map(|&q| q as f32 * absmax * INT8_INV_127));
    }
    Ok(Tensor::from_vec(out, (rows, cols), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nf4_values_are_codebook_values_times_block_absmax() {
        let w = Tensor::randn(0f32, 0.02, (8, 128), &Device::Cpu).unwrap();
        let q = nf4_roundtrip(&w, 64).unwrap();
        let (wv, qv) = (
            w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            q.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        for (wb, qb) in wv.chunks(64).zip(qv.chunks(64)) {
            let absmax = wb.iter().fold(0f32, |m, x| m.max(x.abs()));
            for (x, y) in wb.iter().zip(qb) {
                let code = y / absmax;
                assert!(
                    NF4_CODE.iter().any(|c| (c - code).abs() < 1e-6),
                    "{code} not in the codebook"
                );
                // Nearest code: error at most half the widest gap (between -1 and -0.696).
                assert!((x - y).abs() <= absmax * 0.16, "{x} -> {y}");
            }
            // The block's absmax element is represented exactly (code ±1).
            let i = wb.iter().position(|x| x.abs() == absmax).unwrap();
            assert!((qb[i] - wb[i]).abs() < 1e-9);
        }
        // Idempotent: quantizing quantized values changes nothing.
        let qq = nf4_roundtrip(&q, 64).unwrap();
        assert_eq!(qq.flatten_all().unwrap().to_vec1::<f32>().unwrap(), qv);
        // The codebook is bitsandbytes': symmetric ends, an exact zero, 7 negatives and 8 positives.
        assert_eq!((NF4_CODE[0], NF4_CODE[7], NF4_CODE[15]), (-1.0, 0.0, 1.0));
        assert_eq!(nf4_code(0.0), 7);
        assert_eq!(nf4_code(0.9), 15);
        assert_eq!(nf4_code(-0.62), 1);
    }

    #[test]
    fn int8_rows_keep_their_absmax_and_have_small_error() {
        let w = Tensor::randn(0f32, 1.0, (4, 300), &Device::Cpu).unwrap();
        let q = int8_rowwise_roundtrip(&w).unwrap();
        for (r, s) in w
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .zip(q.to_vec2::<f32>().unwrap())
        {
            let absmax = r.iter().fold(0f32, |m, x| m.max(x.abs()));
            for (x, y) in r.iter().zip(&s) {
                assert!((x - y).abs() <= absmax / 127.0 / 2.0 + 1e-6);
            }
        }
    }
}

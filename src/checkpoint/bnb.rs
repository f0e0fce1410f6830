//! bitsandbytes weights serialized in safetensors, as transformers saves a
//! model loaded with `load_in_4bit` / `load_in_8bit`:
//!
//! * NF4 (`Params4bit`): `<m>.weight` packed uint8 (two codes per byte, first
//!   element in the high nibble), `<m>.weight.absmax` (f32 per block, or uint8
//!   when double-quantized), `<m>.weight.quant_map` (the 16-entry code),
//!   `<m>.weight.nested_absmax` / `nested_quant_map` for double quantization,
//!   and `<m>.weight.quant_state.bitsandbytes__nf4`: JSON bytes with
//!   quant_type, blocksize, dtype, shape and the nested fields.
//! * INT8 (`Int8Params`, LLM.int8): `<m>.weight` int8 [out, in] and `<m>.SCB`
//!   f32 [out], W = weight · SCB / 127; `<m>.weight_format` may ride along.
//!
//! No crate reads this layout, so it is written here against files the real
//! bitsandbytes produced (fixtures/bnb, scripts/reference/make_bnb_reference.py).

use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::Value as Json;

use super::whatif::{int8_row_codes, nf4_code, INT8_INV_127, NF4_BLOCK, NF4_CODE};
use crate::error::{Error, Result};

pub const QS_NF4: &str = "quant_state.bitsandbytes__nf4";
pub const QS_FP4: &str = "quant_state.bitsandbytes__fp4";
/// Nested (double-quantization) block size bitsandbytes uses.
pub const NESTED_BLOCK: usize = 256;

/// Suffixes of the tensors that belong to a quantized weight rather than
/// being weights themselves.
pub const AUX_SUFFIXES: &[&str] = &[
    ".weight.absmax",
    ".weight.quant_map",
    ".weight.nested_absmax",
    ".weight.nested_quant_map",
    ".weight.quant_state.bitsandbytes__nf4",
    ".weight.quant_state.bitsandbytes__fp4",
    ".SCB",
    ".weight_format",
];

/// A raw safetensors entry: name, dtype, shape, little-endian bytes.
pub type RawEntry = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

pub fn is_aux(name: &str) -> bool {
    AUX_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// What a weight's quant_state JSON says.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantState4 {
    pub blocksize: usize,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub nested: Option<(usize, f32)>,
}

pub fn parse_quant_state(bytes: &[u8], path: &Path, name: &str) -> Result<QuantState4> {
    let bad = |msg: String| Error::tensor(path, name, msg);
    let json: Json =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("quant_state is not JSON: {e}")))?;
    let qt = json.get("quant_type").and_then(Json::as_str).unwrap_or("");
    if qt != "nf4" {
        return Err(bad(format!(
            "quant_type `{qt}` is not supported (bitsandbytes nf4 only)"
        )));
    }
    let blocksize = json
        .get("blocksize")
        .and_then(Json::as_u64)
        .filter(|b| *b > 0 && *b <= 4096)
        .ok_or_else(|| bad("quant_state.blocksize missing or out of range".into()))?
        as usize;
    let shape_json = json
        .get("shape")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("quant_state.shape missing".into()))?;
    // Every entry must be a size: dropping a bad one would reshape the weight.
    let shape: Vec<usize> = shape_json
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| bad(format!("quant_state.shape {shape_json:?} holds a non-size")))?;
    if shape.len() != 2 {
        return Err(bad(format!("quant_state.shape {shape:?} is not 2-D")));
    }
    // Sizes from the file multiply only when checked: the product must be
    // an element count the packed bytes (at most the file's length) can hold.
    if shape[0].checked_mul(shape[1]).is_none() {
        return Err(bad(format!(
            "quant_state.shape {shape:?} has more elements than memory can address"
        )));
    }
    let dtype = json
        .get("dtype")
        .and_then(Json::as_str)
        .unwrap_or("float32")
        .to_string();
    let nested = match json.get("nested_blocksize") {
        None => None,
        Some(b) => {
            let nb = b.as_u64().filter(|b| *b > 0).ok_or_else(|| {
                bad("quant_state.nested_blocksize is not a positive integer".into())
            })? as usize;
            let off = json
                .get("nested_offset")
                .and_then(Json::as_f64)
                .ok_or_else(|| bad("quant_state.nested_offset missing".into()))?;
            Some((nb, off as f32))
        }
    };
    Ok(QuantState4 {
        blocksize,
        shape,
        dtype,
        nested,
    })
}

/// The parts of one 4-bit weight, as raw values.
pub struct Nf4Parts<'a> {
    pub packed: &'a [u8],
    pub state: QuantState4,
    /// f32 absmax per block, or uint8 codes when nested.
    pub absmax_f32: Option<Vec<f32>>,
    pub absmax_u8: Option<&'a [u8]>,
    pub quant_map: Vec<f32>,
    pub nested_absmax: Option<Vec<f32>>,
    pub nested_quant_map: Option<Vec<f32>>,
}

pub fn dequant_nf4(p: &Nf4Parts, path: &Path, name: &str) -> Result<Tensor> {
    let bad = |msg: String| Error::tensor(path, name, msg);
    let n = match p.state.shape[..] {
        [r, c] => r.checked_mul(c),
        _ => None,
    }
    .ok_or_else(|| bad(format!("shape {:?} is not a 2-D size", p.state.shape)))?;
    if p.packed.len() != n.div_ceil(2) {
        return Err(bad(format!(
            "packed weight has {} bytes, shape {:?} needs {}",
            p.packed.len(),
            p.state.shape,
            n.div_ceil(2)
        )));
    }
    if p.quant_map.len() != 16 {
        return Err(bad(format!(
            "quant_map has {} entries, NF4 needs 16",
            p.quant_map.len()
        )));
    }
    let blocks = n.div_ceil(p.state.blocksize);
    let absmax: Vec<f32> = match (&p.absmax_f32, p.absmax_u8, &p.state.nested) {
        (Some(a), None, None) => a.clone(),
        (None, Some(codes), Some((nb, offset))) => {
            let (Some(nabs), Some(nmap)) = (&p.nested_absmax, &p.nested_quant_map) else {
                return Err(bad(
                    "double-quantized absmax without nested_absmax and nested_quant_map".into(),
                ));
            };
            if nmap.len() != 256 || nabs.len() != codes.len().div_ceil(*nb) {
                return Err(bad(format!(
                    "nested statistics do not fit: {} absmax codes, {} nested absmax, {} map entries",
                    codes.len(),
                    nabs.len(),
                    nmap.len()
                )));
            }
            codes
                .iter()
                .enumerate()
                .map(|(i, &c)| nmap[c as usize] * nabs[i / nb] + offset)
                .collect()
        }
        _ => {
            return Err(bad(
                "absmax dtype and quant_state disagree about double quantization".into(),
            ))
        }
    };
    if absmax.len() != blocks {
        return Err(bad(format!(
            "{} absmax values for {blocks} blocks of {}",
            absmax.len(),
            p.state.blocksize
        )));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let byte = p.packed[i / 2];
        let code = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
        out.push(p.quant_map[code as usize] * absmax[i / p.state.blocksize]);
    }
    Ok(Tensor::from_vec(out, p.state.shape.clone(), &Device::Cpu)?)
}

pub fn dequant_int8(
    w: &[i8],
    scb: &[f32],
    shape: &[usize],
    path: &Path,
    name: &str,
) -> Result<Tensor> {
    if shape.len() != 2 || shape[0] != scb.len() || shape[0].checked_mul(shape[1]) != Some(w.len())
    {
        return Err(Error::tensor(
            path,
            name,
            format!(
                "int8 weight of shape {shape:?} needs one SCB value per row, found {}",
                scb.len()
            ),
        ));
    }
    let cols = shape[1];
    let out: Vec<f32> = w
        .iter()
        .enumerate()
        .map(|(i, &q)| q as f32 * scb[i / cols] * INT8_INV_127)
        .collect();
    Ok(Tensor::from_vec(out, shape.to_vec(), &Device::Cpu)?)
}

/// bitsandbytes' `create_dynamic_map(signed=True)`: the 256-entry code its
/// blockwise 8-bit quantizer (and so NF4 double quantization) uses.
pub fn dynamic_map() -> Vec<f32> {
    let (max_exp, total_bits) = (7i32, 8i32);
    let non_sign_bits = total_bits - 1;
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..max_exp {
        let items = 2usize.pow((i + non_sign_bits - max_exp) as u32) + 1;
        // torch.linspace(0.1, 1, items) in f32: its kernel fuses the
        // multiply-add, which computing the product exactly in f64 reproduces.
        let step = (1.0f32 - 0.1f32) / (items as f32 - 1.0);
        let bounds: Vec<f32> = (0..items)
            .map(|k| {
                if k < items / 2 {
                    (0.1f32 as f64 + step as f64 * k as f64) as f32
                } else {
                    (1.0f64 - step as f64 * (items - 1 - k) as f64) as f32
                }
            })
            .collect();
        // A Python float times an f32 tensor: the scalar is rounded to f32 first.
        let scale: f32 = format!("1e{}", -(max_exp - 1) + i).parse().unwrap_or(0.0);
        for w in bounds.windows(2) {
            let mean = (w[0] + w[1]) / 2.0;
            data.push(scale * mean);
            data.push(-scale * mean);
        }
    }
    data.push(0.0);
    data.push(1.0);
    while data.len() < 256 {
        data.push(0.0);
    }
    data.sort_by(|a, b| a.total_cmp(b));
    // bitsandbytes' blockwise quantizer sets the first entry to -1 in the
    // cached map it then serializes (measured on 0.48.2's files).
    data[0] = -1.0;
    data
}

/// Nearest code entry (the map is sorted).
fn nearest(map: &[f32], x: f32) -> u8 {
    let i = map.partition_point(|&c| c < x);
    let cand = [i.saturating_sub(1), i.min(map.len() - 1)];
    let best = if (x - map[cand[0]]).abs() <= (map[cand[1]] - x).abs() {
        cand[0]
    } else {
        cand[1]
    };
    best as u8
}

/// One weight quantized to bitsandbytes NF4 (blocks of 64), optionally with
/// double-quantized absmax; returns (name, dtype, shape, bytes) entries.
pub fn encode_nf4(module_weight: &str, w: &Tensor, double_quant: bool) -> Result<Vec<RawEntry>> {
    let shape = w.dims().to_vec();
    let v = w.flatten_all()?.to_vec1::<f32>()?;
    let mut absmax = Vec::with_capacity(v.len().div_ceil(NF4_BLOCK));
    let mut codes = Vec::with_capacity(v.len());
    for chunk in v.chunks(NF4_BLOCK) {
        let a = chunk.iter().fold(0f32, |m, x| m.max(x.abs()));
        absmax.push(a);
        for x in chunk {
            codes.push(if a > 0.0 { nf4_code(x / a) } else { 7 });
        }
    }
    let mut packed = vec![0u8; codes.len().div_ceil(2)];
    for (i, c) in codes.iter().enumerate() {
        packed[i / 2] |= if i % 2 == 0 { c << 4 } else { *c };
    }
    let aux = |suffix: &str| format!("{module_weight}.{suffix}");
    let mut out = vec![(
        module_weight.to_string(),
        safetensors::Dtype::U8,
        vec![packed.len(), 1],
        packed,
    )];
    let mut state = serde_json::json!({
        "quant_type": "nf4",
        "blocksize": NF4_BLOCK,
        "dtype": "float32",
        "shape": shape,
    });
    if double_quant {
        let offset = absmax.iter().sum::<f32>() / absmax.len() as f32;
        let map = dynamic_map();
        let centered: Vec<f32> = absmax.iter().map(|a| a - offset).collect();
        let mut nested = Vec::new();
        let mut q = Vec::with_capacity(centered.len());
        for chunk in centered.chunks(NESTED_BLOCK) {
            let m = chunk.iter().fold(0f32, |m, x| m.max(x.abs()));
            nested.push(m);
            for x in chunk {
                q.push(if m > 0.0 {
                    nearest(&map, x / m)
                } else {
                    nearest(&map, 0.0)
                });
            }
        }
        out.push(u8_entry(aux("absmax"), q));
        out.push(f32_entry(aux("nested_absmax"), &nested));
        out.push(f32_entry(aux("nested_quant_map"), &map));
        if let Some(o) = state.as_object_mut() {
            o.insert("nested_blocksize".into(), NESTED_BLOCK.into());
            o.insert("nested_dtype".into(), "float32".into());
            o.insert("nested_offset".into(), (offset as f64).into());
        }
    } else {
        out.push(f32_entry(aux("absmax"), &absmax));
    }
    out.push(f32_entry(aux("quant_map"), &NF4_CODE));
    out.push(u8_entry(
        aux(QS_NF4),
        serde_json::to_vec(&state).unwrap_or_default(),
    ));
    Ok(out)
}

/// A 1-D f32 entry.
fn f32_entry(name: String, v: &[f32]) -> RawEntry {
    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    (name, safetensors::Dtype::F32, vec![v.len()], bytes)
}

/// A 1-D u8 entry.
fn u8_entry(name: String, bytes: Vec<u8>) -> RawEntry {
    (name, safetensors::Dtype::U8, vec![bytes.len()], bytes)
}

/// LLM.int8 layout: int8 rows with their absmax (SCB).
pub fn encode_int8(module: &str, w: &Tensor) -> Result<Vec<RawEntry>> {
    let (rows, cols) = w.dims2()?;
    let v = w.to_vec2::<f32>()?;
    let mut q = Vec::with_capacity(rows * cols);
    let mut scb = Vec::with_capacity(rows);
    for row in &v {
        let (codes, absmax) = int8_row_codes(row);
        q.extend(codes.iter().map(|&c| c as u8));
        scb.push(absmax);
    }
    Ok(vec![
        (
            format!("{module}.weight"),
            safetensors::Dtype::I8,
            vec![rows, cols],
            q,
        ),
        f32_entry(format!("{module}.SCB"), &scb),
        // Linear8bitLt saves its layout tag too: 0 = row-major.
        (
            format!("{module}.weight_format"),
            safetensors::Dtype::U8,
            vec![],
            vec![0u8],
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(shape: &str) -> Result<QuantState4> {
        let json = format!(r#"{{"quant_type": "nf4", "blocksize": 64, "shape": {shape}}}"#);
        parse_quant_state(json.as_bytes(), Path::new("m.safetensors"), "w")
    }

    /// A shape whose product overflows, or that holds a non-size (silently
    /// dropped before, reshaping the weight), is refused by name.
    #[test]
    fn hostile_quant_state_shapes_are_refused() {
        let big = 1u64 << 40;
        for (shape, needle) in [
            (format!("[{big}, {big}]"), "more elements"),
            ("[4, -1, 8]".to_string(), "non-size"),
            ("[4, \"8\"]".to_string(), "non-size"),
            ("[32]".to_string(), "not 2-D"),
        ] {
            let e = state(&shape).unwrap_err().to_string();
            assert!(
                e.contains("m.safetensors") && e.contains(needle),
                "{shape}: {e}"
            );
        }
        assert_eq!(state("[4, 8]").unwrap().shape, vec![4, 8]);
        let e = dequant_int8(&[0; 4], &[1.0], &[1, usize::MAX], Path::new("m"), "w");
        assert!(e.is_err());
    }
}

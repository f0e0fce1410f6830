//! A Hugging Face model directory's weights: `model.safetensors`, or shards
//! listed in `model.safetensors.index.json`. Files are memory-mapped and every
//! header is validated at open, so a lying header fails before any compute.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::{bnb, TensorSummary};
use crate::error::{Error, Result};

pub struct SafetensorsDir {
    dir: PathBuf,
    files: Vec<PathBuf>,
    maps: Vec<Mmap>,
    /// canonical HF name -> (file index, stored name)
    index: HashMap<String, (usize, String)>,
    /// bitsandbytes side tensors (absmax, SCB, quant_state…), by canonical name.
    aux: HashMap<String, (usize, String)>,
    /// Weights stored quantized by bitsandbytes.
    quant: HashMap<String, Quant>,
}

#[derive(Debug, Clone)]
enum Quant {
    Nf4(bnb::QuantState4),
    Int8,
}

/// Multimodal and older exports wrap the language model in extra prefixes.
fn canonical(stored: &str) -> String {
    if let Some(rest) = stored.strip_prefix("model.language_model.") {
        return format!("model.{rest}");
    }
    if let Some(rest) = stored.strip_prefix("language_model.") {
        return rest.to_string();
    }
    stored.to_string()
}

impl SafetensorsDir {
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.is_file() {
            let text = crate::assets::read_small_text(&index_path, "safetensors index")?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::field(&index_path, "(json)", e.to_string()))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    Error::field(&index_path, "weight_map", "missing or not an object")
                })?;
            let mut shards: Vec<String> = Vec::new();
            for (k, v) in map {
                let f = v.as_str().ok_or_else(|| {
                    Error::field(&index_path, format!("weight_map.{k}"), "not a file name")
                })?;
                // Shard names are plain file names inside the directory.
                if f.contains('/') || f.contains('\\') || f == ".." {
                    return Err(Error::field(
                        &index_path,
                        format!("weight_map.{k}"),
                        format!("`{f}` is not a file in the model directory"),
                    ));
                }
                if !shards.iter().any(|s| s == f) {
                    shards.push(f.to_string());
                }
            }
            shards.sort();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else if single.is_file() {
            vec![single]
        } else {
            return Err(Error::io(
                &single,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors or model.safetensors.index.json in the model directory",
                ),
            ));
        };

        let mut maps = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            let file = File::open(f).map_err(|e| Error::io(f, e))?;
            // SAFETY: the map is read-only; a checkpoint changing underneath a
            // running gate is outside what any loader can defend against.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(f, e))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| Error::Safetensors {
                path: f.clone(),
                msg: e.to_string(),
            })?;
            for (name, view) in st.iter() {
                match view.dtype() {
                    Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::U8 | Dtype::I8 | Dtype::U32 => {}
                    other => {
                        return Err(Error::tensor(
                            f,
                            name,
                            format!("dtype {other:?} is not supported (f32, f16, bf16)"),
                        ))
                    }
                }
                index.insert(canonical(name), (i, name.to_string()));
            }
            maps.push(mmap);
        }
        let mut aux = HashMap::new();
        index.retain(|name, v| {
            if bnb::is_aux(name) {
                aux.insert(name.clone(), v.clone());
                false
            } else {
                true
            }
        });
        let mut quant = HashMap::new();
        for name in index.keys() {
            let qs4 = [bnb::QS_NF4, bnb::QS_FP4]
                .iter()
                .find_map(|s| aux.get(&format!("{name}.{s}")));
            if let Some((i, stored)) = qs4 {
                let st = SafeTensors::deserialize(&maps[*i]).map_err(|e| Error::Safetensors {
                    path: files[*i].clone(),
                    msg: e.to_string(),
                })?;
                let view = st
                    .tensor(stored)
                    .map_err(|e| Error::tensor(&files[*i], stored, e.to_string()))?;
                let qs = bnb::parse_quant_state(view.data(), &files[*i], stored)?;
                quant.insert(name.clone(), Quant::Nf4(qs));
            } else if let Some(m) = name.strip_suffix(".weight") {
                if aux.contains_key(&format!("{m}.SCB")) {
                    quant.insert(name.clone(), Quant::Int8);
                }
            }
        }
        Ok(SafetensorsDir {
            dir: dir.to_path_buf(),
            files,
            maps,
            index,
            aux,
            quant,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn stored_name(&self, hf_name: &str) -> Option<&str> {
        self.index.get(hf_name).map(|(_, s)| s.as_str())
    }

    pub fn summaries(&self) -> Vec<TensorSummary> {
        let mut out = Vec::new();
        for (name, (i, stored)) in &self.index {
            if let Ok(st) = SafeTensors::deserialize(&self.maps[*i]) {
                if let Ok(v) = st.tensor(stored) {
                    let (dtype, shape) = match self.quant.get(name) {
                        Some(Quant::Nf4(qs)) => ("bnb_nf4".to_string(), qs.shape.clone()),
                        Some(Quant::Int8) => ("bnb_int8".to_string(), v.shape().to_vec()),
                        None => (
                            format!("{:?}", v.dtype()).to_lowercase(),
                            v.shape().to_vec(),
                        ),
                    };
                    out.push(TensorSummary {
                        name: name.clone(),
                        stored_name: stored.clone(),
                        dtype,
                        shape,
                    });
                }
            }
        }
        out
    }

    /// A stored tensor's view, by canonical name (weights or side tensors).
    fn view(&self, canonical: &str) -> Result<(&Path, &str, safetensors::tensor::TensorView<'_>)> {
        let (i, stored) = self
            .index
            .get(canonical)
            .or_else(|| self.aux.get(canonical))
            .ok_or_else(|| Error::tensor(&self.dir, canonical, "missing from the checkpoint"))?;
        let path = &self.files[*i];
        let st = SafeTensors::deserialize(&self.maps[*i]).map_err(|e| Error::Safetensors {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        let view = st
            .tensor(stored)
            .map_err(|e| Error::tensor(path, stored, e.to_string()))?;
        Ok((path.as_path(), stored.as_str(), view))
    }

    /// An f32 side tensor's values.
    fn f32s(&self, canonical: &str) -> Result<Vec<f32>> {
        let (path, stored, v) = self.view(canonical)?;
        if v.dtype() != Dtype::F32 {
            return Err(Error::tensor(
                path,
                stored,
                format!("expected f32, found {:?}", v.dtype()),
            ));
        }
        Ok(v.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn load_bnb(&self, hf_name: &str, q: &Quant) -> Result<Tensor> {
        let (path, stored, view) = self.view(hf_name)?;
        match q {
            Quant::Nf4(state) => {
                if view.dtype() != Dtype::U8 {
                    return Err(Error::tensor(
                        path,
                        stored,
                        format!("packed NF4 weight must be uint8, found {:?}", view.dtype()),
                    ));
                }
                let absmax_name = format!("{hf_name}.absmax");
                let (apath, astored, aview) = self.view(&absmax_name)?;
                let (absmax_f32, absmax_u8) = match aview.dtype() {
                    Dtype::F32 => (Some(self.f32s(&absmax_name)?), None),
                    Dtype::U8 => (None, Some(aview.data())),
                    other => {
                        return Err(Error::tensor(
                            apath,
                            astored,
                            format!("absmax must be f32 or uint8, found {other:?}"),
                        ))
                    }
                };
                let nested = state.nested.is_some();
                let parts = bnb::Nf4Parts {
                    packed: view.data(),
                    state: state.clone(),
                    absmax_f32,
                    absmax_u8,
                    quant_map: self.f32s(&format!("{hf_name}.quant_map"))?,
                    nested_absmax: if nested {
                        Some(self.f32s(&format!("{hf_name}.nested_absmax"))?)
                    } else {
                        None
                    },
                    nested_quant_map: if nested {
                        Some(self.f32s(&format!("{hf_name}.nested_quant_map"))?)
                    } else {
                        None
                    },
                };
                bnb::dequant_nf4(&parts, path, stored)
            }
            Quant::Int8 => {
                if view.dtype() != Dtype::I8 {
                    return Err(Error::tensor(
                        path,
                        stored,
                        format!("LLM.int8 weight must be int8, found {:?}", view.dtype()),
                    ));
                }
                let m = hf_name.strip_suffix(".weight").unwrap_or(hf_name);
                let scb = self.f32s(&format!("{m}.SCB"))?;
                let w: Vec<i8> = view.data().iter().map(|&b| b as i8).collect();
                bnb::dequant_int8(&w, &scb, view.shape(), path, stored)
            }
        }
    }

    /// Loads a weight as f32 (bitsandbytes weights dequantized).
    pub fn load(&self, hf_name: &str) -> Result<Tensor> {
        Ok(self.load_native(hf_name)?.to_dtype(DType::F32)?)
    }

    /// Loads a weight in its stored float type (f32, f16 or bf16), so a
    /// caller that gathers rows converts only those; bitsandbytes weights
    /// come dequantized to f32.
    pub fn load_native(&self, hf_name: &str) -> Result<Tensor> {
        if let Some(q) = self.quant.get(hf_name) {
            return self.load_bnb(hf_name, q);
        }
        let (path, stored, view) = self.view(hf_name)?;
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(Error::tensor(
                    path,
                    stored,
                    format!("dtype {other:?} is not a float weight"),
                ))
            }
        };
        Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .map_err(|e| Error::tensor(path, stored, crate::error::candle_msg(&e)))
    }
}

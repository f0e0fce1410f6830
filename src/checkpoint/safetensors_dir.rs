//! A Hugging Face model directory's weights: `model.safetensors`, or shards
//! listed in `model.safetensors.index.json`. Files are memory-mapped and every
//! header is validated at open, so a lying header fails before any compute.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::TensorSummary;
use crate::error::{Error, Result};

pub struct SafetensorsDir {
    dir: PathBuf,
    files: Vec<PathBuf>,
    maps: Vec<Mmap>,
    /// canonical HF name -> (file index, stored name)
    index: HashMap<String, (usize, String)>,
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
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
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
        Ok(SafetensorsDir {
            dir: dir.to_path_buf(),
            files,
            maps,
            index,
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
                    out.push(TensorSummary {
                        name: name.clone(),
                        stored_name: stored.clone(),
                        dtype: format!("{:?}", v.dtype()).to_lowercase(),
                        shape: v.shape().to_vec(),
                    });
                }
            }
        }
        out
    }

    /// Loads a float tensor as f32.
    pub fn load(&self, hf_name: &str) -> Result<Tensor> {
        let (i, stored) = self
            .index
            .get(hf_name)
            .ok_or_else(|| Error::tensor(&self.dir, hf_name, "missing from the checkpoint"))?;
        let path = &self.files[*i];
        let st = SafeTensors::deserialize(&self.maps[*i]).map_err(|e| Error::Safetensors {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        let view = st
            .tensor(stored)
            .map_err(|e| Error::tensor(path, stored, e.to_string()))?;
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
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .map_err(|e| Error::tensor(path, stored, crate::error::candle_msg(&e)))?;
        Ok(t.to_dtype(DType::F32)?)
    }
}

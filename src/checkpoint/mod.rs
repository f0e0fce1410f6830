//! Checkpoints as people ship them: a GGUF file, a Hugging Face model
//! directory (single or sharded safetensors), or an `hf:org/name[@rev]`
//! reference resolved from the standard Hugging Face cache.
//!
//! Every tensor is served under its Hugging Face name; [`WeightLayout`] says
//! how the stored values differ from what transformers would load.

pub mod adapter;
pub mod bnb;
pub mod config;
mod config_gguf;
pub mod gguf_guard;
pub mod hub;
pub mod layout;
pub mod names;
mod reference;
pub mod safetensors_dir;
pub mod whatif;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::tokenizer::ModelTokenizer;
use config::{Arch, ModelConfig};
pub use reference::{cache_root, known_model_path, ModelRef, ModelSpec, KNOWN_MODELS};

/// How stored values differ from what transformers loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightLayout {
    /// llama.cpp permutes q/k rows of Llama models so its interleaved rope
    /// matches transformers' rotate-half; such weights need interleaved rope.
    pub rope_interleaved: bool,
    /// llama.cpp stores Gemma's RMSNorm weights as (1 + w).
    pub norm_plus_one_baked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Gguf,
    Safetensors,
}

/// One stored weight: GGUF tensors keep their quantized form until asked.
// With `cuda`, candle's QTensor holds its CUDA storage inline (232 bytes);
// a few Weights exist at a time, so boxing it would buy nothing.
#[cfg_attr(feature = "cuda", allow(clippy::large_enum_variant))]
pub enum Weight {
    Quantized(QTensor),
    Dense(Tensor),
}

impl Weight {
    pub fn to_f32(&self) -> Result<Tensor> {
        Ok(match self {
            Weight::Quantized(q) => q.dequantize(&Device::Cpu)?,
            Weight::Dense(t) => t.to_dtype(DType::F32)?,
        })
    }

    pub fn dims(&self) -> Vec<usize> {
        match self {
            Weight::Quantized(q) => q.shape().dims().to_vec(),
            Weight::Dense(t) => t.dims().to_vec(),
        }
    }

    /// The storage type as a short name (`q4_1`, `f32`, `bf16`...).
    pub fn dtype_name(&self) -> String {
        match self {
            Weight::Quantized(q) => format!("{:?}", q.dtype()).to_lowercase(),
            Weight::Dense(t) => format!("{:?}", t.dtype()).to_lowercase(),
        }
    }
}

enum Store {
    Gguf {
        path: PathBuf,
        content: gguf_file::Content,
        /// HF name -> GGUF name
        names: HashMap<String, String>,
    },
    Safetensors(safetensors_dir::SafetensorsDir),
}

/// Summary of one tensor, for `inspect` and the diff stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorSummary {
    pub name: String,
    pub stored_name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

pub struct Checkpoint {
    pub reference: ModelRef,
    /// The full reference as given (with any what-if and adapter).
    pub spec: String,
    pub whatif: Option<whatif::WhatIf>,
    pub adapter: Option<adapter::LoraAdapter>,
    pub format: Format,
    pub config: ModelConfig,
    pub layout: WeightLayout,
    pub tokenizer: ModelTokenizer,
    /// Files whose bytes define the weights, hashed for the fingerprint.
    pub weight_files: Vec<PathBuf>,
    store: Store,
    fingerprint: OnceLock<String>,
    forward_id: OnceLock<String>,
}

impl Checkpoint {
    /// Opens any model reference, candidate forms included (see [`ModelSpec`]).
    pub fn open_str(reference: &str) -> Result<Self> {
        let spec = ModelSpec::parse(reference)?;
        let mut ck = Self::open(&ModelRef::parse(&spec.base)?)?;
        ck.spec = reference.to_string();
        ck.whatif = spec.whatif;
        if let Some(dir) = &spec.adapter {
            let a = adapter::LoraAdapter::load(dir)?;
            let shapes: HashMap<String, Vec<usize>> = ck
                .tensors()
                .into_iter()
                .map(|t| (t.name, t.shape))
                .collect();
            for (module, pair) in &a.modules {
                let wname = format!("{module}.weight");
                let dims = shapes.get(&wname).cloned().ok_or_else(|| {
                    Error::tensor(
                        &a.weight_file,
                        module,
                        format!("the base {} has no such module", spec.base),
                    )
                })?;
                let (out, inp) = (pair.b.dims()[0], pair.a.dims()[1]);
                if dims != [out, inp] {
                    return Err(Error::tensor(
                        &a.weight_file,
                        module,
                        format!("adapter is for a [{out}, {inp}] weight, the base has {dims:?}: an adapter for another base?"),
                    ));
                }
            }
            ck.weight_files.push(a.weight_file.clone());
            ck.adapter = Some(a);
        }
        Ok(ck)
    }

    /// The GGUF file's parsed header and its tensor names (transformers' name →
    /// GGUF name), for writers that copy a GGUF base's metadata.
    pub fn gguf_parts(&self) -> Option<(&gguf_file::Content, &HashMap<String, String>)> {
        match &self.store {
            Store::Gguf { content, names, .. } => Some((content, names)),
            _ => None,
        }
    }

    pub fn open(reference: &ModelRef) -> Result<Self> {
        match reference {
            ModelRef::Gguf { path } => Self::open_gguf(path, reference.clone()),
            ModelRef::HfDir { path } => Self::open_hf_dir(path, reference.clone()),
            ModelRef::Hub { repo, revision } => {
                let dir = hub::resolve(repo, revision)?;
                Self::open_hf_dir(&dir, reference.clone())
            }
        }
    }

    fn open_gguf(path: &Path, reference: ModelRef) -> Result<Self> {
        let (content, _) = gguf_guard::read_content(path)?;
        let config = ModelConfig::from_gguf(&content.metadata, path)?;
        let file_len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        let mut names = HashMap::new();
        for (gname, info) in &content.tensor_infos {
            // Check every tensor fits in the file now, so a truncated
            // download fails at open with the tensor's name.
            let elems = info.shape.elem_count();
            let bs = info.ggml_dtype.block_size();
            if elems % bs != 0 {
                return Err(Error::tensor(
                    path,
                    gname,
                    format!("{elems} elements is not a multiple of the {bs}-element block"),
                ));
            }
            let bytes = (elems / bs) as u64 * info.ggml_dtype.type_size() as u64;
            let end = content
                .tensor_data_offset
                .checked_add(info.offset)
                .and_then(|s| s.checked_add(bytes));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(Error::tensor(
                        path,
                        gname,
                        format!(
                            "data runs past the end of the file ({} bytes): truncated or corrupt",
                            file_len
                        ),
                    ))
                }
            }
            if let Some(h) = names::gguf_to_hf(gname, config.arch) {
                names.insert(h, gname.clone());
            }
        }
        let tokenizer = ModelTokenizer::from_gguf_metadata(&content.metadata, path)?;
        let layout = WeightLayout {
            // llama.cpp permutes q/k only for archs it runs with "normal"
            // (interleaved) rope; Qwen2 and Gemma use NeoX rope unpermuted.
            rope_interleaved: matches!(config.model_type.as_str(), "llama" | "mistral"),
            norm_plus_one_baked: config.arch == Arch::Gemma3,
        };
        let ck = Checkpoint {
            spec: reference.to_string(),
            whatif: None,
            adapter: None,
            reference,
            format: Format::Gguf,
            config,
            layout,
            tokenizer,
            weight_files: vec![path.to_path_buf()],
            store: Store::Gguf {
                path: path.to_path_buf(),
                content,
                names,
            },
            fingerprint: OnceLock::new(),
            forward_id: OnceLock::new(),
        };
        ck.check_required()?;
        Ok(ck)
    }

    fn open_hf_dir(dir: &Path, reference: ModelRef) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let json: serde_json::Value = crate::util::read_json(&cfg_path)?;
        let config = ModelConfig::from_hf_json(&json, &cfg_path)?;
        let st = safetensors_dir::SafetensorsDir::open(dir)?;
        let tokenizer = ModelTokenizer::from_hf_dir(dir)?;
        let ck = Checkpoint {
            spec: reference.to_string(),
            whatif: None,
            adapter: None,
            reference,
            format: Format::Safetensors,
            config,
            layout: WeightLayout {
                rope_interleaved: false,
                norm_plus_one_baked: false,
            },
            tokenizer,
            weight_files: st.files().to_vec(),
            store: Store::Safetensors(st),
            fingerprint: OnceLock::new(),
            forward_id: OnceLock::new(),
        };
        ck.check_required()?;
        Ok(ck)
    }

    /// Fails at open, naming the tensor, when a block the config promises is absent.
    fn check_required(&self) -> Result<()> {
        let mut required = vec!["model.embed_tokens.weight".to_string()];
        for l in 0..self.config.num_layers {
            for m in [
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
                "mlp.gate_proj",
                "mlp.up_proj",
                "mlp.down_proj",
                "input_layernorm",
                "post_attention_layernorm",
            ] {
                required.push(format!("model.layers.{l}.{m}.weight"));
            }
        }
        for name in required {
            if !self.has(&name) {
                return Err(Error::tensor(
                    self.source_path(),
                    self.stored_name(&name),
                    "missing from the checkpoint",
                ));
            }
        }
        Ok(())
    }

    pub fn source_path(&self) -> PathBuf {
        match &self.store {
            Store::Gguf { path, .. } => path.clone(),
            Store::Safetensors(st) => st.dir().to_path_buf(),
        }
    }

    /// The name this tensor has in the file (GGUF or safetensors).
    pub fn stored_name(&self, hf_name: &str) -> String {
        match &self.store {
            Store::Gguf { names, .. } => names
                .get(hf_name)
                .cloned()
                .or_else(|| names::hf_to_gguf(hf_name, self.config.arch))
                .unwrap_or_else(|| hf_name.to_string()),
            Store::Safetensors(st) => st.stored_name(hf_name).unwrap_or(hf_name).to_string(),
        }
    }

    pub fn has(&self, hf_name: &str) -> bool {
        match &self.store {
            Store::Gguf { names, .. } => names.contains_key(hf_name),
            Store::Safetensors(st) => st.stored_name(hf_name).is_some(),
        }
    }

    /// Every tensor, by Hugging Face name, in a stable order.
    pub fn tensors(&self) -> Vec<TensorSummary> {
        let mut out = BTreeMap::new();
        match &self.store {
            Store::Gguf { content, names, .. } => {
                for (h, g) in names {
                    if let Some(info) = content.tensor_infos.get(g) {
                        out.insert(
                            h.clone(),
                            TensorSummary {
                                name: h.clone(),
                                stored_name: g.clone(),
                                dtype: format!("{:?}", info.ggml_dtype).to_lowercase(),
                                shape: info.shape.dims().to_vec(),
                            },
                        );
                    }
                }
            }
            Store::Safetensors(st) => {
                for s in st.summaries() {
                    out.insert(s.name.clone(), s);
                }
            }
        }
        out.into_values().collect()
    }

    /// A tensor as the forward pass reads it: GGUF tensors quantized, dense
    /// ones as f32, any what-if transform applied.
    pub fn get(&self, hf_name: &str) -> Result<Weight> {
        Ok(match self.get_native(hf_name)? {
            Weight::Dense(t) => Weight::Dense(t.to_dtype(DType::F32)?),
            q => q,
        })
    }

    /// Like [`Checkpoint::get`], but a dense tensor keeps its stored float
    /// type (bf16 stays bf16: half the memory of f32, converted exactly later).
    pub fn get_native(&self, hf_name: &str) -> Result<Weight> {
        let w = self.get_stored(hf_name)?;
        match self.whatif {
            Some(q) if whatif::WhatIf::applies_to(hf_name) => q.apply(w),
            _ => Ok(w),
        }
    }

    fn get_stored(&self, hf_name: &str) -> Result<Weight> {
        match &self.store {
            Store::Gguf {
                path,
                content,
                names,
            } => {
                let gname = names
                    .get(hf_name)
                    .ok_or_else(|| Error::tensor(path, self.stored_name(hf_name), "missing"))?;
                let info = content
                    .tensor_infos
                    .get(gname)
                    .ok_or_else(|| Error::tensor(path, gname, "missing"))?;
                let file = File::open(path).map_err(|e| Error::io(path, e))?;
                let mut reader = BufReader::new(file);
                let q = info
                    .read(&mut reader, content.tensor_data_offset, &Device::Cpu)
                    .map_err(|e| Error::tensor(path, gname, crate::error::candle_msg(&e)))?;
                Ok(Weight::Quantized(q))
            }
            Store::Safetensors(st) => Ok(Weight::Dense(st.load_native(hf_name)?)),
        }
    }

    /// A tensor dequantized to f32, as transformers would hold it (layout
    /// differences such as the q/k permutation are *not* undone here).
    pub fn get_f32(&self, hf_name: &str) -> Result<Tensor> {
        self.get(hf_name)?.to_f32()
    }

    /// A tensor as transformers holds it: f32, q/k rows un-permuted, Gemma
    /// norms as stored `w` (the layout the diff, training and writers use).
    pub fn get_hf(&self, hf_name: &str) -> Result<Tensor> {
        let c = &self.config;
        let t = self.get_f32(hf_name)?;
        Ok(crate::checkpoint::layout::to_hf_values(
            hf_name,
            t,
            &self.layout,
            c.arch,
            c.num_heads,
            c.num_kv_heads,
        )?
        .0)
    }

    /// sha256 over the weight files' bytes, hex. Computed once per open.
    pub fn fingerprint(&self) -> Result<String> {
        if let Some(f) = self.fingerprint.get() {
            return Ok(f.clone());
        }
        let mut fp = fingerprint_files(&self.weight_files)?;
        if let Some(w) = self.whatif {
            // A computed candidate is its base plus the transform.
            let mut h = Sha256::new();
            h.update(format!("probegate-whatif-v1\n{}\n{fp}", w.name()));
            fp = hex::encode(h.finalize());
        }
        Ok(self.fingerprint.get_or_init(|| fp).clone())
    }

    /// What decides the activations a prompt produces: the weights (the
    /// fingerprint); for a Hugging Face directory the parsed config and the
    /// tokenizer, which live beside the weight files rather than in them (a
    /// GGUF file holds both, so its fingerprint covers them); and an
    /// adapter's per-module scale, which adapter_config.json sets. The
    /// activation cache is keyed on it, so a candidate that edits only one of
    /// those files is never served its base's activations.
    pub fn forward_identity(&self) -> Result<String> {
        if let Some(f) = self.forward_id.get() {
            return Ok(f.clone());
        }
        let fp = self.fingerprint()?;
        let src = self.source_path();
        let mut parts = Vec::new();
        if self.format != Format::Gguf {
            parts.push(
                serde_json::to_string(&self.config)
                    .map_err(|e| Error::field(&src, "config", e.to_string()))?,
            );
            parts.push(
                self.tokenizer
                    .identity()
                    .map_err(|e| Error::field(&src, "tokenizer", e.to_string()))?,
            );
        }
        if let Some(a) = &self.adapter {
            for (m, pair) in &a.modules {
                parts.push(format!("{m}={:016x}", pair.scale.to_bits()));
            }
        }
        let id = if parts.is_empty() {
            fp
        } else {
            let mut h = Sha256::new();
            h.update(format!("probegate-forward-v1\n{fp}\n{}", parts.join("\n")));
            hex::encode(h.finalize())
        };
        Ok(self.forward_id.get_or_init(|| id).clone())
    }
}

/// sha256 of one file, or of the concatenated per-file digests for many.
pub fn fingerprint_files(files: &[PathBuf]) -> Result<String> {
    let digest_one = |p: &Path| -> Result<[u8; 32]> {
        let mut f = File::open(p).map_err(|e| Error::io(p, e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io(p, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finalize().into())
    };
    match files {
        [one] => Ok(hex::encode(digest_one(one)?)),
        many => {
            let mut h = Sha256::new();
            for p in many {
                h.update(digest_one(p)?);
            }
            Ok(hex::encode(h.finalize()))
        }
    }
}

//! Content-addressed activation cache.
//!
//! One file per (model fingerprint, dataset hash, layer, pooling, precision,
//! token limit), so training six monitors at three depths runs each forward
//! pass once, and the base side of every later gate run is free. Writes are
//! atomic (temp file + rename), so concurrent runs at worst compute the same
//! entry twice; the cache is bounded by size, evicting least recently used.
//! A cache that cannot be written (a full disk, a read-only home) is only
//! slower: the run keeps what it computed, records why in
//! [`ActCache::write_error`], and stops trying to write for the rest of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::activations::{self, ExtractOptions};
use crate::checkpoint::{cache_root, Checkpoint};
use crate::error::{Error, Result};
use crate::model::{Model, Pool, Precision};

const DEFAULT_MAX_BYTES: u64 = 4 << 30;
/// Safetensors metadata key naming the model an entry came from.
const MODEL_KEY: &str = "model_fingerprint";

/// The model fingerprint in an entry's safetensors header, reading only the
/// header; None for entries written before the tag or unreadable ones.
fn entry_model(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let n = u64::from_le_bytes(len);
    // Our entries' headers are tiny; anything huge is not ours.
    if n > 1 << 20 {
        return None;
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
    Some(v.get("__metadata__")?.get(MODEL_KEY)?.as_str()?.to_string())
}

pub struct ActCache {
    root: PathBuf,
    max_bytes: u64,
    enabled: bool,
    /// The first write that failed; once set, nothing more is written.
    write_error: std::sync::Mutex<Option<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheInfo {
    pub path: String,
    pub entries: usize,
    pub bytes: u64,
    pub max_bytes: u64,
}

impl ActCache {
    /// `$PROBEGATE_CACHE/activations`, bounded by PROBEGATE_ACT_CACHE_MAX_BYTES
    /// (default 4 GiB); PROBEGATE_NO_ACT_CACHE=1 turns it off.
    pub fn from_env() -> Self {
        let max_bytes = std::env::var("PROBEGATE_ACT_CACHE_MAX_BYTES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_MAX_BYTES);
        let enabled = !matches!(
            std::env::var("PROBEGATE_NO_ACT_CACHE").as_deref(),
            Ok("1") | Ok("true")
        );
        ActCache {
            root: cache_root().join("activations"),
            max_bytes,
            enabled,
            write_error: Default::default(),
        }
    }

    pub fn at(root: PathBuf, max_bytes: u64) -> Self {
        ActCache {
            root,
            max_bytes,
            enabled: true,
            write_error: Default::default(),
        }
    }

    pub fn key(
        fingerprint: &str,
        data_sha: &str,
        layer: usize,
        pool: Pool,
        precision: Precision,
        max_tokens: usize,
    ) -> String {
        let mut h = Sha256::new();
        h.update(format!(
            "probegate-acts-v{}\n{fingerprint}\n{data_sha}\n{layer}\n{pool}\n{precision}\n{max_tokens}",
            activations::FORMAT_VERSION
        ));
        hex::encode(h.finalize())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(&key[..2]).join(format!("{key}.safetensors"))
    }

    pub fn get(&self, key: &str) -> Option<Tensor> {
        if !self.enabled {
            return None;
        }
        let p = self.path(key);
        let t = candle_core::safetensors::load(&p, &Device::Cpu)
            .ok()?
            .remove("x")?;
        // Touch for LRU eviction.
        if let Ok(f) = std::fs::File::options().append(true).open(&p) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        (t.dtype() == DType::F32 && t.rank() == 2).then_some(t)
    }

    /// Stores `t` under `key`, tagged with the fingerprint of the model that
    /// produced it so [`ActCache::clear_model`] can find it again. Never
    /// fails the caller: the activations are in hand, and a cache that
    /// cannot take them (a full disk) must not turn a run into "could not
    /// evaluate". The first failure is kept for [`ActCache::write_error`]
    /// and ends writing for this cache's life (each try would fail the
    /// same way, and eviction scans the whole folder).
    pub fn put(&self, key: &str, model_fingerprint: &str, t: &Tensor) {
        if !self.enabled {
            return;
        }
        let mut failed = match self.write_error.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if failed.is_some() {
            return;
        }
        if let Err(e) = self.write(key, model_fingerprint, t) {
            *failed = Some(e.to_string());
        }
    }

    /// Why the cache stopped taking entries in this run, if it did.
    pub fn write_error(&self) -> Option<String> {
        match self.write_error.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn write(&self, key: &str, model_fingerprint: &str, t: &Tensor) -> Result<()> {
        let p = self.path(key);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let meta = [(MODEL_KEY.to_string(), model_fingerprint.to_string())].into();
        crate::util::save_safetensors(vec![("x".into(), t.clone())], meta, &p)?;
        self.evict()
    }

    /// Removes the entries one model produced (a candidate no longer wanted,
    /// or to measure a run with only the base side cached).
    pub fn clear_model(&self, model_fingerprint: &str) -> Result<usize> {
        let mut n = 0;
        for (p, _, _) in self.entries() {
            if entry_model(&p).as_deref() == Some(model_fingerprint)
                && std::fs::remove_file(&p).is_ok()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    fn entries(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let mut out = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for d in dirs.flatten() {
            let Ok(files) = std::fs::read_dir(d.path()) else {
                continue;
            };
            for f in files.flatten() {
                if let Ok(m) = f.metadata() {
                    if m.is_file() && f.path().extension().is_some_and(|e| e == "safetensors") {
                        out.push((
                            f.path(),
                            m.len(),
                            m.modified().unwrap_or(std::time::UNIX_EPOCH),
                        ));
                    }
                }
            }
        }
        out
    }

    fn evict(&self) -> Result<()> {
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        if total <= self.max_bytes {
            return Ok(());
        }
        entries.sort_by_key(|e| e.2);
        for (p, len, _) in entries {
            if total <= self.max_bytes {
                break;
            }
            // Another process may have removed it already.
            if std::fs::remove_file(&p).is_ok() {
                total = total.saturating_sub(len);
            }
        }
        Ok(())
    }

    pub fn info(&self) -> CacheInfo {
        let e = self.entries();
        CacheInfo {
            path: self.root.display().to_string(),
            entries: e.len(),
            bytes: e.iter().map(|x| x.1).sum(),
            max_bytes: self.max_bytes,
        }
    }

    pub fn clear(&self) -> Result<usize> {
        let e = self.entries();
        for (p, _, _) in &e {
            let _ = std::fs::remove_file(p);
        }
        Ok(e.len())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// How activations are computed: pooling, precision, batch size.
#[derive(Debug, Clone, Copy)]
pub struct ActSpec {
    pub pool: Pool,
    pub precision: Precision,
    pub batch_size: usize,
}

/// Pooled activations for `texts` at `layers`, from the cache where present;
/// the model is loaded (to the deepest missing block) only if something is missing.
pub fn cached_activations(
    ck: &Checkpoint,
    cache: &ActCache,
    texts: &[String],
    layers: &[usize],
    spec: ActSpec,
    on_batch: &mut dyn FnMut(usize),
) -> Result<BTreeMap<usize, Tensor>> {
    let mut parts = cached_activations_parts(ck, cache, &[texts], layers, spec, on_batch, None)?;
    Ok(parts.pop().unwrap_or_default())
}

/// Both models of a run, kept from one extraction to the next: the gate's
/// corpus, concept texts, revalidation looks and repair ladder all run the
/// same two checkpoints, and a load (every block expanded: about 0.4 s for
/// SmolLM2 to block 22) costs more than a small extraction. Two models are
/// held at once; under `PROBEGATE_WEIGHTS=auto` the second load sees the
/// first's memory gone and streams when it must.
#[derive(Default)]
pub struct Kept<'ck> {
    base: Option<Model<'ck>>,
    cand: Option<Model<'ck>>,
}

impl<'ck> Kept<'ck> {
    /// Both slots at once (base, candidate), for the two sides run together.
    pub fn both(&mut self) -> (&mut Option<Model<'ck>>, &mut Option<Model<'ck>>) {
        (&mut self.base, &mut self.cand)
    }

    /// The slot of the base model, or of the candidate's.
    pub fn side(&mut self, on_base: bool) -> &mut Option<Model<'ck>> {
        if on_base {
            &mut self.base
        } else {
            &mut self.cand
        }
    }
}

/// [`cached_activations`] for consecutive parts of one text list, each its
/// own cache entry: a caller that grows a prefix part by part (the repair
/// ladder's realignment) finds the same entries whatever prefix length an
/// earlier run stopped at. The parts missing from the cache share one model
/// load and one extraction. With `kept`, the model is kept there for the
/// next call, and one already there (of the same checkpoint, deep enough)
/// is used rather than loaded again (a load expands every block: about
/// 0.5 s for SmolLM2, more than a part's forward pass).
pub fn cached_activations_parts<'ck>(
    ck: &'ck Checkpoint,
    cache: &ActCache,
    parts: &[&[String]],
    layers: &[usize],
    spec: ActSpec,
    on_batch: &mut dyn FnMut(usize),
    kept: Option<&mut Option<Model<'ck>>>,
) -> Result<Vec<BTreeMap<usize, Tensor>>> {
    let ActSpec {
        pool,
        precision,
        batch_size,
    } = spec;
    // Keyed on everything the activations depend on; tagged with the
    // weights' fingerprint, which `cache clear --model` looks for.
    let fp = ck.fingerprint()?;
    let mut fid = ck.forward_identity()?;
    if let Some(tag) = crate::model::cache_tag_from_env()? {
        fid = format!("{fid}@{tag}");
    }
    let max_tokens = 2048;
    let hashes: Vec<String> = parts.iter().map(|t| crate::util::texts_sha256(t)).collect();
    let key = |data: &str, l: usize| ActCache::key(&fid, data, l, pool, precision, max_tokens);
    let mut out = vec![BTreeMap::new(); parts.len()];
    // Per part, the layers the cache does not hold.
    let mut missing: Vec<Vec<usize>> = vec![Vec::new(); parts.len()];
    for (i, texts) in parts.iter().enumerate() {
        for &l in layers {
            match cache.get(&key(&hashes[i], l)) {
                Some(t) if t.dims()[0] == texts.len() => {
                    out[i].insert(l, t);
                }
                _ => missing[i].push(l),
            }
        }
    }
    let todo: Vec<usize> = (0..parts.len())
        .filter(|&i| !missing[i].is_empty())
        .collect();
    let cached: usize = (0..parts.len())
        .filter(|i| missing[*i].is_empty())
        .map(|i| parts[i].len())
        .sum();
    if cached > 0 {
        on_batch(cached);
    }
    if todo.is_empty() {
        return Ok(out);
    }
    // One extraction over every part that misses something, at the union of
    // what they miss (a part's cached layers are recomputed only when the
    // pass runs anyway, and then simply refreshed).
    let mut need: Vec<usize> = todo.iter().flat_map(|&i| missing[i].clone()).collect();
    need.sort_unstable();
    need.dedup();
    let deepest = *need.iter().max().unwrap_or(&0);
    let mut local = None;
    let slot = kept.unwrap_or(&mut local);
    let fits = |m: &Model| {
        std::ptr::eq(m.checkpoint(), ck)
            && m.blocks_loaded() > deepest
            && m.precision() == precision
    };
    if !slot.as_ref().is_some_and(fits) {
        // The old model goes before the new one loads: never two at once.
        *slot = None;
        *slot = Some(Model::load(ck, precision, deepest)?);
    }
    let model = slot
        .as_ref()
        .ok_or_else(|| Error::Usage("internal: no model loaded".into()))?;
    let opts = ExtractOptions {
        layers: need.clone(),
        pools: vec![pool],
        precision,
        batch_size,
        max_tokens,
    };
    let texts: Vec<String> = todo.iter().flat_map(|&i| parts[i].to_vec()).collect();
    let acts = activations::extract(ck, model, &texts, &opts, on_batch)?;
    let Some(a) = acts.into_iter().next() else {
        return Ok(out);
    };
    for (l, t) in a.data {
        let mut at = 0;
        for &i in &todo {
            let n = parts[i].len();
            let rows = t.narrow(0, at, n)?.contiguous()?;
            at += n;
            if missing[i].contains(&l) {
                cache.put(&key(&hashes[i], l), &fp, &rows);
            }
            out[i].insert(l, rows);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Tensor {
        Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap()
    }

    #[test]
    fn an_entry_written_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ActCache::at(dir.path().join("activations"), 1 << 20);
        let key = "ab".repeat(32);
        cache.put(&key, "fp", &rows());
        assert_eq!(cache.write_error(), None);
        let back = cache.get(&key).unwrap();
        assert_eq!(
            back.to_vec2::<f32>().unwrap(),
            rows().to_vec2::<f32>().unwrap()
        );
        assert_eq!(cache.info().entries, 1);
    }

    /// A full disk or a read-only home: the caller keeps its activations,
    /// the cache says why it holds nothing, and stops trying.
    #[test]
    fn a_cache_that_cannot_be_written_is_skipped_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the cache expects its folder: every write fails.
        let root = dir.path().join("activations");
        std::fs::write(&root, b"not a folder").unwrap();
        let cache = ActCache::at(root.clone(), 1 << 20);
        cache.put(&"cd".repeat(32), "fp", &rows());
        let first = cache.write_error().expect("the failed write is recorded");
        assert!(first.contains(&root.display().to_string()), "{first}");
        cache.put(&"ef".repeat(32), "fp", &rows());
        assert_eq!(
            cache.write_error(),
            Some(first),
            "the first failure is kept"
        );
        assert!(cache.get(&"cd".repeat(32)).is_none());
        assert_eq!(std::fs::read(&root).unwrap(), b"not a folder");
    }
}

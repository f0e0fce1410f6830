//! Structure-aware fuzzing of every parser that reads bytes probegate did
//! not write, on stable Rust with proptest: each target starts from a valid
//! input (a file as the tools that make it write it), applies a few edits
//! that know its structure (a JSON value swapped for a hostile one, a key
//! removed, a TOML line rewritten, a GGUF length field set to 2^62), then
//! bytes-level ones (truncate, flip, splice), and asserts the parser returns
//! Ok or an error naming the file, and never panics or aborts.
//!
//! `cargo test` runs a bounded number of cases per target (64, or
//! PROPTEST_CASES); `scripts/fuzz.sh` runs long campaigns in release and
//! debug builds (overflow checks differ between them).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value as Json};

use crate::harness::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        // Regressions are kept as tests below, not as files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------------ edits

/// Values a hostile file puts where a parser expects something sane.
fn hostile_json(i: usize) -> Json {
    let deep = (0..200).fold(json!(0), |v, _| json!([v]));
    let vals = [
        json!(1_000_000_000_000_000u64),
        json!(u64::MAX),
        json!(-1),
        json!(0),
        json!(1.5),
        json!(1e308),
        json!(""),
        json!("x".repeat(70_000)),
        json!(null),
        json!([]),
        json!({}),
        json!(true),
        deep,
        json!("../../../etc/passwd"),
        json!("a\u{0}b`\n# PASS"),
        json!(vec![0; 5000]),
        json!({"a": {"b": {"c": [1, "2", null]}}}),
    ];
    vals[i % vals.len()].clone()
}

/// JSON pointers to every value in `v`.
fn pointers(v: &Json, at: String, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => m.iter().for_each(|(k, x)| {
            pointers(
                x,
                format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                out,
            )
        }),
        Json::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| pointers(x, format!("{at}/{i}"), out)),
        _ => {}
    }
    out.push(at);
}

#[derive(Debug, Clone)]
enum JsonEdit {
    Replace(Index, usize),
    Remove(Index),
    /// A key the parser does not expect, next to the value.
    AddKey(Index, usize),
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        (any::<Index>(), any::<usize>()).prop_map(|(i, h)| JsonEdit::Replace(i, h)),
        any::<Index>().prop_map(JsonEdit::Remove),
        (any::<Index>(), any::<usize>()).prop_map(|(i, h)| JsonEdit::AddKey(i, h)),
    ]
}

fn apply_json(mut v: Json, edits: &[JsonEdit]) -> Json {
    for e in edits {
        let mut ps = Vec::new();
        pointers(&v, String::new(), &mut ps);
        match e {
            JsonEdit::Replace(i, h) => {
                let p = i.get(&ps).clone();
                if p.is_empty() {
                    v = hostile_json(*h);
                } else if let Some(x) = v.pointer_mut(&p) {
                    *x = hostile_json(*h);
                }
            }
            JsonEdit::Remove(i) => {
                let p = i.get(&ps);
                if let Some((parent, key)) = p.rsplit_once('/') {
                    match v.pointer_mut(parent) {
                        Some(Json::Object(m)) => {
                            m.remove(&key.replace("~1", "/").replace("~0", "~"));
                        }
                        Some(Json::Array(a)) => {
                            if let Ok(k) = key.parse::<usize>() {
                                if k < a.len() {
                                    a.remove(k);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            JsonEdit::AddKey(i, h) => {
                if let Some(Json::Object(m)) = v.pointer_mut(&i.get(&ps).clone()) {
                    m.insert(format!("fuzz{h}"), hostile_json(*h));
                }
            }
        }
    }
    v
}

#[derive(Debug, Clone)]
enum ByteEdit {
    Truncate(Index),
    Flip(Index, u8),
    /// A little-endian u64 (a GGUF or safetensors length) set to a hostile size.
    PutU64(Index, u64),
    Splice(Index, Vec<u8>),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let size = prop_oneof![
        Just(0u64),
        Just(1 << 62),
        Just(u64::MAX),
        Just(u32::MAX as u64),
        0u64..4096
    ];
    prop_oneof![
        any::<Index>().prop_map(ByteEdit::Truncate),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
        (any::<Index>(), size).prop_map(|(i, v)| ByteEdit::PutU64(i, v)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| ByteEdit::Splice(i, b)),
    ]
}

fn apply_bytes(mut b: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for e in edits {
        if b.is_empty() {
            break;
        }
        match e {
            ByteEdit::Truncate(i) => b.truncate(i.index(b.len())),
            ByteEdit::Flip(i, x) => {
                let k = i.index(b.len());
                b[k] ^= x.max(&1);
            }
            ByteEdit::PutU64(i, v) => {
                let k = i.index(b.len());
                let end = (k + 8).min(b.len());
                b[k..end].copy_from_slice(&v.to_le_bytes()[..end - k]);
            }
            ByteEdit::Splice(i, x) => {
                let k = i.index(b.len());
                b.splice(k..k, x.iter().copied());
            }
        }
    }
    b
}

/// Mostly structural edits, sometimes bytes edits on top (kept rarer so
/// most cases still parse as JSON and reach the code behind the parser).
fn json_case() -> impl Strategy<Value = (Vec<JsonEdit>, Vec<ByteEdit>)> {
    (
        prop::collection::vec(json_edit(), 1..4),
        prop_oneof![3 => Just(vec![]), 1 => prop::collection::vec(byte_edit(), 1..3)],
    )
}

fn mutate_json(seed: &Json, case: &(Vec<JsonEdit>, Vec<ByteEdit>)) -> Vec<u8> {
    let v = apply_json(seed.clone(), &case.0);
    apply_bytes(serde_json::to_vec_pretty(&v).unwrap(), &case.1)
}

#[derive(Debug, Clone)]
enum TomlEdit {
    /// `key = <hostile literal>` on a random `key = value` line.
    Value(Index, usize),
    Delete(Index),
    Duplicate(Index),
}

fn toml_case() -> impl Strategy<Value = (Vec<TomlEdit>, Vec<ByteEdit>)> {
    let edit = prop_oneof![
        (any::<Index>(), any::<usize>()).prop_map(|(i, h)| TomlEdit::Value(i, h)),
        any::<Index>().prop_map(TomlEdit::Delete),
        any::<Index>().prop_map(TomlEdit::Duplicate),
    ];
    (
        prop::collection::vec(edit, 1..4),
        prop_oneof![3 => Just(vec![]), 1 => prop::collection::vec(byte_edit(), 1..3)],
    )
}

fn mutate_toml(seed: &str, case: &(Vec<TomlEdit>, Vec<ByteEdit>)) -> Vec<u8> {
    const LITERALS: &[&str] = &[
        "-1",
        "0",
        "1e308",
        "nan",
        "inf",
        "18446744073709551615",
        "9223372036854775807",
        "\"\"",
        "\"../../etc\"",
        "[]",
        "{}",
        "true",
        "\"short\"",
        "[[1], [2]]",
        "\"a\\u0000b\"",
    ];
    let mut lines: Vec<String> = seed.lines().map(str::to_owned).collect();
    for e in &case.0 {
        if lines.is_empty() {
            break;
        }
        match e {
            TomlEdit::Value(i, h) => {
                let k = i.index(lines.len());
                if let Some((key, _)) = lines[k].split_once('=') {
                    lines[k] = format!("{key}= {}", LITERALS[h % LITERALS.len()]);
                }
            }
            TomlEdit::Delete(i) => {
                lines.remove(i.index(lines.len()));
            }
            TomlEdit::Duplicate(i) => {
                let k = i.index(lines.len());
                lines.insert(k, lines[k].clone());
            }
        }
    }
    apply_bytes(lines.join("\n").into_bytes(), &case.1)
}

/// The error must name the file the bytes came from.
fn names_file<T, E: std::fmt::Display>(r: Result<T, E>, file: &Path) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        let msg = e.to_string();
        let name = file.file_name().unwrap().to_string_lossy();
        prop_assert!(msg.contains(&*name), "error does not name {name}: {msg}");
    }
    Ok(())
}

// ------------------------------------------------------------------ seeds

/// A complete tiny Llama GGUF: config keys, a byte-pair tokenizer and
/// every tensor a block needs, as candle's writer lays it out.
fn seed_gguf() -> Vec<u8> {
    let (d, ff, vocab) = (8usize, 16usize, 4usize);
    let z = |shape: &[usize]| {
        let t = Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
        QTensor::quantize(&t, GgmlDType::F32).unwrap()
    };
    let mut tensors = vec![
        ("token_embd.weight".to_string(), z(&[vocab, d])),
        ("output_norm.weight".to_string(), z(&[d])),
    ];
    for (n, s) in [
        ("attn_q", vec![d, d]),
        ("attn_k", vec![d, d]),
        ("attn_v", vec![d, d]),
        ("attn_output", vec![d, d]),
        ("ffn_gate", vec![ff, d]),
        ("ffn_up", vec![ff, d]),
        ("ffn_down", vec![d, ff]),
        ("attn_norm", vec![d]),
        ("ffn_norm", vec![d]),
    ] {
        tensors.push((format!("blk.0.{n}.weight"), z(&s)));
    }
    let strs = |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
    let md = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.alignment", Value::U32(32)),
        ("llama.embedding_length", Value::U32(d as u32)),
        ("llama.block_count", Value::U32(1)),
        ("llama.attention.head_count", Value::U32(2)),
        ("llama.feed_forward_length", Value::U32(ff as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.context_length", Value::U32(64)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", strs(&["a", "b", "ab", "<s>"])),
        ("tokenizer.ggml.merges", strs(&["a b"])),
        (
            "tokenizer.ggml.token_type",
            Value::Array(vec![
                Value::I32(1),
                Value::I32(1),
                Value::I32(1),
                Value::I32(3),
            ]),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(3)),
    ];
    let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut buf = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &md, &ts).unwrap();
    buf.into_inner()
}

fn read_json(rel: &str) -> Json {
    serde_json::from_slice(&std::fs::read(repo().join(rel)).unwrap()).unwrap()
}

fn seed_safetensors() -> (Json, Vec<u8>) {
    let header = json!({
        "__metadata__": {"format": "pt"},
        "model.embed_tokens.weight": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]},
        "model.norm.weight": {"dtype": "BF16", "shape": [4], "data_offsets": [32, 40]}
    });
    (header, vec![0u8; 40])
}

fn safetensors_file(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(data);
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

// ---------------------------------------------------------------- targets

#[test]
fn seeds_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "seed.gguf", &seed_gguf());
    probegate::checkpoint::Checkpoint::open_str(&p.display().to_string()).unwrap();
    let (h, data) = seed_safetensors();
    let st = dir.path().join("st");
    std::fs::create_dir(&st).unwrap();
    write(
        &st,
        "model.safetensors",
        &safetensors_file(h.to_string().as_bytes(), &data),
    );
    probegate::checkpoint::safetensors_dir::SafetensorsDir::open(&st).unwrap();
}

proptest! {
    #![proptest_config(config())]

    /// GGUF header, metadata, tokenizer metadata and tensor table, through
    /// the same open a `--base model.gguf` takes.
    #[test]
    fn gguf_file(edits in prop::collection::vec(byte_edit(), 1..5)) {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "m.gguf", &apply_bytes(seed_gguf(), &edits));
        names_file(probegate::checkpoint::Checkpoint::open_str(&p.display().to_string()), &p)?;
    }

    /// GGUF metadata values swapped for hostile ones of any type, written
    /// by a correct writer: the config and tokenizer readers behind it.
    #[test]
    fn gguf_metadata(swaps in prop::collection::vec((any::<Index>(), any::<usize>()), 1..4)) {
        let mut c = gguf_file::Content::read(&mut std::io::Cursor::new(seed_gguf())).unwrap();
        let keys: Vec<String> = { let mut k: Vec<_> = c.metadata.keys().cloned().collect(); k.sort(); k };
        let hostile = [
            Value::U64(1 << 50), Value::I32(-1), Value::F32(f32::NAN), Value::F64(1e300),
            Value::String(String::new()), Value::Array(vec![]), Value::Bool(true),
            Value::Array(vec![Value::String("a".into()); 3]), Value::U8(0), Value::I64(i64::MIN),
            Value::Array(vec![Value::U32(7); 2]), Value::String("gemma3".into()),
        ];
        for (i, h) in &swaps {
            c.metadata.insert(i.get(&keys).clone(), hostile[h % hostile.len()].clone());
        }
        let md: HashMap<String, Value> = c.metadata;
        let p = Path::new("m.gguf");
        names_file(probegate::checkpoint::config::ModelConfig::from_gguf(&md, p), p)?;
        names_file(probegate::tokenizer::ModelTokenizer::from_gguf_metadata(&md, p), p)?;
    }

    /// A safetensors header (JSON) and its length prefix and data.
    #[test]
    fn safetensors_header(case in json_case(), tail in prop::collection::vec(byte_edit(), 0..2)) {
        let (h, data) = seed_safetensors();
        let dir = tempfile::tempdir().unwrap();
        let bytes = apply_bytes(safetensors_file(&mutate_json(&h, &case), &data), &tail);
        let p = write(dir.path(), "model.safetensors", &bytes);
        let r = probegate::checkpoint::safetensors_dir::SafetensorsDir::open(dir.path());
        if let Ok(st) = &r {
            for s in st.summaries() {
                let _ = st.load(&s.name);
            }
        }
        names_file(r, &p)?;
    }

    /// bitsandbytes' 4-bit quant_state JSON.
    #[test]
    fn bnb_quant_state(case in json_case()) {
        let seed = json!({"quant_type": "nf4", "blocksize": 64, "shape": [4, 8],
            "dtype": "float16", "nested_blocksize": 256, "nested_offset": 0.03});
        let p = Path::new("model.safetensors");
        names_file(probegate::checkpoint::bnb::parse_quant_state(&mutate_json(&seed, &case), p, "w"), p)?;
    }

    /// config.json of both shipped architectures, then its validation.
    #[test]
    fn config_json(case in json_case(), gemma in any::<bool>()) {
        let seed = read_json(if gemma { "fixtures/reference/gemma3.config.json" } else { "fixtures/reference/smollm2.config.json" });
        let p = Path::new("config.json");
        if let Ok(j) = serde_json::from_slice::<Json>(&mutate_json(&seed, &case)) {
            let r = probegate::checkpoint::config::ModelConfig::from_hf_json(&j, p);
            let r = r.and_then(|c| c.validate(p).map(|_| c));
            names_file(r, p)?;
        }
    }

    /// A PEFT adapter directory: adapter_config.json next to real LoRA weights.
    #[test]
    fn adapter_config(case in json_case()) {
        let src = repo().join("fixtures/adapters/smollm2-lora-r4");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(src.join("adapter_model.safetensors"), dir.path().join("adapter_model.safetensors")).unwrap();
        write(dir.path(), "adapter_config.json", &mutate_json(&read_json("fixtures/adapters/smollm2-lora-r4/adapter_config.json"), &case));
        names_file(probegate::checkpoint::adapter::LoraAdapter::load(dir.path()), dir.path())?;
    }

    /// monitor.json of a shipped monitor, with its direction file.
    #[test]
    fn monitor_json(case in json_case()) {
        let src = repo().join("monitors/smollm2/harmful_request-l15");
        let dir = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(&src).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
            }
        }
        let seed = read_json("monitors/smollm2/harmful_request-l15/monitor.json");
        write(dir.path(), "monitor.json", &mutate_json(&seed, &case));
        // Errors may name the direction file instead (a size monitor.json
        // claims that it does not have): any file of the monitor will do.
        names_file(probegate::monitor::Monitor::load(dir.path()), dir.path())?;
    }

    /// The shipped policies.
    #[test]
    fn policy_toml(case in toml_case(), which in 0usize..3) {
        let name = ["default", "strict", "quantization-only"][which];
        let seed = std::fs::read_to_string(repo().join(format!("policies/{name}.toml"))).unwrap();
        let text = String::from_utf8_lossy(&mutate_toml(&seed, &case)).into_owned();
        let p = Path::new("policy.toml");
        names_file(probegate::gate::policy::Policy::parse(&text, p), p)?;
    }

    /// The example serve.toml, with every secret it names set.
    #[test]
    fn serve_toml(case in toml_case()) {
        let seed = std::fs::read_to_string(repo().join("examples/serve.toml")).unwrap();
        let text = String::from_utf8_lossy(&mutate_toml(&seed, &case)).into_owned();
        let p = Path::new("/etc/probegate/serve.toml");
        let env = |_: &str| Some("s3cret-s3cret-s3cret-s3cret-s3cret".to_string());
        names_file(probegate::adapters::serve::config::Config::parse(&text, p, &env), p)?;
    }

    /// Both webhook bodies (parsed only after authentication, but a leaked
    /// secret must still not crash the server) and the MLflow signature
    /// headers with hostile values.
    #[test]
    fn webhook_bodies_and_signatures(
        hf in json_case(),
        ml in json_case(),
        ts in prop_oneof![Just("".to_string()), Just("-9223372036854775808".to_string()), "[0-9 +-]{0,24}"],
        sig in "[ -~]{0,80}",
    ) {
        use probegate::adapters::serve::webhook::*;
        let hf_seed = json!({
            "event": {"action": "update", "scope": "repo.content"},
            "repo": {"type": "model", "name": "acme/m", "id": "6570a1", "private": false, "headSha": "0123"},
            "webhook": {"id": "wh-1", "version": 3},
            "updatedRefs": [{"ref": "refs/heads/main", "oldSha": null, "newSha": "0123"}]
        });
        let _ = hf_parse(&mutate_json(&hf_seed, &hf));
        let ml_seed = json!({"entity": "model_version", "action": "created",
            "timestamp": "2026-11-27T10:00:00Z",
            "data": {"name": "m", "version": "1", "source": "s", "run_id": "r1", "tags": {}, "description": null}});
        let body = mutate_json(&ml_seed, &ml);
        let _ = mlflow_parse(&body, "d-1");
        let h = MlflowHeaders { signature: Some(&sig), delivery_id: Some("d-1"), timestamp: Some(&ts) };
        for now in [0, i64::MIN, i64::MAX] {
            prop_assert!(mlflow_verify(&h, &body, "secret-secret-secret", now, u64::MAX).is_err());
        }
        let _ = hf_verify(Some(sig.as_bytes()), "secret-secret-secret");
    }
}

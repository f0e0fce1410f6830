//! Hostile and malformed input: every case exits 2 with a message naming the
//! file and the field, and nothing panics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use predicates::prelude::*;

use crate::harness::*;

/// Runs `activations` on `model` and asserts a clean exit-2 failure whose
/// stderr contains every `needle`.
fn fails(model: &str, input: &Path, layers: &str, needles: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let assert = bin()
        .args([
            "activations",
            "--model",
            model,
            "--layers",
            layers,
            "--quiet",
        ])
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out.path().join("a.safetensors"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("panicked").not())
        .stderr(predicate::str::contains("candle_core::").not());
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    for n in needles {
        assert!(stderr.contains(n), "stderr should mention {n:?}:\n{stderr}");
    }
    // A cause is shown once: not again under the message that already says it.
    for cause in stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("caused by: "))
    {
        assert_eq!(
            stderr.matches(cause).count(),
            1,
            "repeated cause:\n{stderr}"
        );
    }
    assert!(
        !out.path().join("a.safetensors").exists(),
        "no output on failure"
    );
}

fn prompts_file() -> PathBuf {
    fixture("reference/prompts.jsonl")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn truncated_gguf_names_the_file_and_tensor() {
    let real = std::fs::read(model_path("smollm2")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Header intact, data cut short.
    let p = write(dir.path(), "cut.gguf", &real[..4 << 20]);
    fails(
        &p.display().to_string(),
        &prompts_file(),
        "0",
        &["cut.gguf", "truncated"],
    );
    // Cut inside the metadata.
    let p = write(dir.path(), "header.gguf", &real[..5000]);
    fails(
        &p.display().to_string(),
        &prompts_file(),
        "0",
        &["header.gguf", "not a valid GGUF"],
    );
}

#[test]
fn corrupt_gguf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "noise.gguf", &[0x13u8; 4096]);
    fails(
        &p.display().to_string(),
        &prompts_file(),
        "0",
        &["noise.gguf", "not a valid GGUF"],
    );
    let mut real = std::fs::read(model_path("smollm2")).unwrap();
    real.truncate(1 << 20);
    // A string length of 2^62 inside the metadata must not allocate.
    real[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let p = write(dir.path(), "lies.gguf", &real);
    fails(
        &p.display().to_string(),
        &prompts_file(),
        "0",
        &["lies.gguf"],
    );
}

fn gguf_with(dir: &Path, name: &str, md: &[(&str, Value)]) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut f, &md, &[]).unwrap();
    p
}

#[test]
fn gguf_metadata_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = gguf_with(
        dir.path(),
        "neox.gguf",
        &[("general.architecture", Value::String("gptneox".into()))],
    );
    fails(
        &p.display().to_string(),
        &prompts_file(),
        "0",
        &["neox.gguf", "unsupported architecture `gptneox`"],
    );
    let p = gguf_with(
        dir.path(),
        "nolayers.gguf",
        &[
            ("general.architecture", Value::String("llama".into())),
            ("llama.embedding_length", Value::U32(64)),
        ],
    );
    fails(
        &p.display().to_string(),
        &prompts_file(),
        "0",
        &["nolayers.gguf", "llama.block_count"],
    );
    let p = gguf_with(
        dir.path(),
        "badtype.gguf",
        &[
            ("general.architecture", Value::String("llama".into())),
            ("llama.embedding_length", Value::String("sixty-four".into())),
        ],
    );
    fails(
        &p.display().to_string(),
        &prompts_file(),
        "0",
        &["badtype.gguf", "llama.embedding_length"],
    );
}

/// A copy of the converted model directory whose files can be broken.
fn hf_copy() -> tempfile::TempDir {
    let src = converted_smollm2();
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn lying_safetensors_headers_are_refused() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "offsets past the end",
            safetensors_bytes(
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,1600]}}"#,
                &[0u8; 16],
            ),
        ),
        ("absurd header length", {
            let mut v = (1u64 << 60).to_le_bytes().to_vec();
            v.extend_from_slice(b"{}");
            v
        }),
        (
            "dtype/shape mismatch",
            safetensors_bytes(
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
                &[0u8; 16],
            ),
        ),
        ("not json", safetensors_bytes("{{{{", &[])),
    ];
    for (what, bytes) in cases {
        let dir = hf_copy();
        write(dir.path(), "model.safetensors", &bytes);
        eprintln!("case: {what}");
        fails(
            &dir.path().display().to_string(),
            &prompts_file(),
            "0",
            &["model.safetensors", "not a valid safetensors file"],
        );
    }
}

#[test]
fn wrong_tensor_shapes_and_missing_tensors_are_named() {
    let dir = hf_copy();
    let src = candle_core::safetensors::load(
        converted_smollm2().join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut broken: HashMap<String, candle_core::Tensor> = src.clone();
    broken.remove("model.layers.4.mlp.up_proj.weight");
    candle_core::safetensors::save(&broken, dir.path().join("model.safetensors")).unwrap();
    fails(
        &dir.path().display().to_string(),
        &prompts_file(),
        "0",
        &["model.layers.4.mlp.up_proj.weight", "missing"],
    );

    let mut broken = src;
    let t = broken["model.layers.0.self_attn.q_proj.weight"]
        .narrow(0, 0, 64)
        .unwrap();
    broken.insert("model.layers.0.self_attn.q_proj.weight".into(), t);
    candle_core::safetensors::save(&broken, dir.path().join("model.safetensors")).unwrap();
    fails(
        &dir.path().display().to_string(),
        &prompts_file(),
        "0",
        &[
            "model.layers.0.self_attn.q_proj.weight",
            "expected shape [576, 576]",
        ],
    );
}

#[test]
fn config_errors_name_the_key() {
    let dir = hf_copy();
    std::fs::copy(
        converted_smollm2().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let cfg_path = dir.path().join("config.json");
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();

    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(&cfg_path, c.to_string()).unwrap();
    fails(
        &dir.path().display().to_string(),
        &prompts_file(),
        "0",
        &["config.json", "hidden_size"],
    );

    let mut c = good.clone();
    c["model_type"] = "bert".into();
    std::fs::write(&cfg_path, c.to_string()).unwrap();
    fails(
        &dir.path().display().to_string(),
        &prompts_file(),
        "0",
        &["config.json", "unsupported architecture `bert`"],
    );

    let mut c = good;
    c["num_key_value_heads"] = 4.into();
    std::fs::write(&cfg_path, c.to_string()).unwrap();
    fails(
        &dir.path().display().to_string(),
        &prompts_file(),
        "0",
        &["config.json", "num_key_value_heads"],
    );

    std::fs::write(&cfg_path, "{ not json").unwrap();
    fails(
        &dir.path().display().to_string(),
        &prompts_file(),
        "0",
        &["config.json", "line 1"],
    );
}

#[test]
fn bad_prompt_files_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_path("smollm2").display().to_string();
    let empty = write(dir.path(), "empty.jsonl", b"");
    fails(&model, &empty, "0", &["empty.jsonl", "no prompts"]);
    let no_text = write(
        dir.path(),
        "notext.jsonl",
        b"{\"text\": \"ok\"}\n{\"prompt\": \"hi\"}\n",
    );
    fails(
        &model,
        &no_text,
        "0",
        &["notext.jsonl:2", "missing field `text`"],
    );
    let not_utf8 = write(dir.path(), "latin1.jsonl", b"{\"text\": \"caf\xe9\"}\n");
    fails(&model, &not_utf8, "0", &["latin1.jsonl:1", "UTF-8"]);
    let not_json = write(
        dir.path(),
        "broken.jsonl",
        b"{\"text\": \"a\"}\n{\"text\": \n",
    );
    fails(&model, &not_json, "0", &["broken.jsonl:2", "JSON"]);
    let number = write(dir.path(), "number.jsonl", b"{\"text\": 42}\n");
    fails(&model, &number, "0", &["number.jsonl:1", "not a string"]);
}

#[test]
fn layer_out_of_range_and_bad_references() {
    fails(
        "smollm2",
        &prompts_file(),
        "30",
        &["layer 30 is out of range", "30 blocks"],
    );
    fails("smollm2", &prompts_file(), "3,x", &["--layers", "`x`"]);
    fails(
        "/no/such/model.gguf",
        &prompts_file(),
        "0",
        &["/no/such/model.gguf"],
    );
    fails(
        "hf:not a repo",
        &prompts_file(),
        "0",
        &["hf:not a repo", "hf:org/name"],
    );
    fails(
        "smollm2",
        Path::new("/no/such/prompts.jsonl"),
        "0",
        &["/no/such/prompts.jsonl"],
    );
}

/// Sizes from a file are bounded before anything is allocated from them:
/// with the binary built before the limits, the first case aborted
/// ("memory allocation of 1000000000000000 bytes failed", exit 134) and
/// the second panicked dividing by the alignment (exit 101).
#[test]
fn hostile_sizes_are_refused_not_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::create_dir(&big).unwrap();
    let cfg = serde_json::json!({"model_type": "gemma3_text", "hidden_size": 64,
        "num_hidden_layers": 1_000_000_000_000_000u64, "num_attention_heads": 4,
        "num_key_value_heads": 1, "head_dim": 16, "intermediate_size": 128,
        "vocab_size": 100, "rms_norm_eps": 1e-6});
    write(&big, "config.json", cfg.to_string().as_bytes());
    write(&big, "model.safetensors", &safetensors_bytes("{}", &[]));
    fails(
        &big.display().to_string(),
        &prompts_file(),
        "0",
        &["config.json", "num_hidden_layers", "limit of 1024"],
    );

    let p = gguf_with(
        dir.path(),
        "align0.gguf",
        &[
            ("general.architecture", Value::String("llama".into())),
            ("general.alignment", Value::U32(0)),
        ],
    );
    fails(
        &p.display().to_string(),
        &prompts_file(),
        "0",
        &["align0.gguf", "general.alignment", "power of two"],
    );
}

/// A suite whose monitor files link to a device (a symlink committed in a
/// pull request): refused before a byte is read, naming the file. Before,
/// a linked monitor.safetensors was read until memory ran out ("out of
/// memory" under a 3 GB ulimit), and a linked monitor.json made its folder
/// look empty ("no monitor here").
#[test]
fn monitor_files_that_link_to_a_device_are_refused_unread() {
    for file in ["monitor.json", "monitor.safetensors"] {
        let tmp = tempfile::tempdir().unwrap();
        let m = tmp.path().join("suite/toxicity-l15");
        std::fs::create_dir_all(&m).unwrap();
        let shipped = repo().join("monitors/smollm2/toxicity-l15");
        for f in ["monitor.json", "monitor.safetensors"] {
            if f == file {
                std::os::unix::fs::symlink("/dev/zero", m.join(f)).unwrap();
            } else {
                std::fs::copy(shipped.join(f), m.join(f)).unwrap();
            }
        }
        let assert = bin()
            .args(["check", "--base", "smollm2", "--candidate", "smollm2"])
            .args(["--no-history", "--quiet", "--monitors"])
            .arg(tmp.path().join("suite"))
            .arg("--out")
            .arg(tmp.path().join("out"))
            .timeout(std::time::Duration::from_secs(120))
            .assert()
            .code(2);
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
        let want = format!("{}: not a regular file", m.join(file).display());
        assert!(stderr.contains(&want), "{file}: {stderr}");
    }
}

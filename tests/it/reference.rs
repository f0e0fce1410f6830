//! The f32 forward agrees with Hugging Face transformers (an independent
//! implementation) on both real models, for every prompt, layer and pooling.

use probegate::activations::{extract, ExtractOptions};
use probegate::model::{Model, Pool, Precision};

use crate::harness::*;

fn check_against_transformers(alias: &str, batch_size: usize) -> f64 {
    let ck = open(alias);
    let n = ck.config.num_layers;
    let reference = reference(alias);
    let model = Model::load(&ck, Precision::F32, n - 1).unwrap();
    let opts = ExtractOptions {
        layers: (0..n).collect(),
        pools: vec![Pool::Last, Pool::Mean],
        precision: Precision::F32,
        batch_size,
        max_tokens: 2048,
    };
    let acts = extract(&ck, &model, &prompts(), &opts, &mut |_| {}).unwrap();
    let mut worst = 1.0f64;
    for a in &acts {
        for (layer, t) in &a.data {
            let key = format!("{}.layer.{layer}", a.pool);
            let r = reference
                .get(&key)
                .unwrap_or_else(|| panic!("reference has no {key}"));
            for (i, (x, y)) in rows(t).iter().zip(rows(r)).enumerate() {
                let c = cosine(x, &y);
                worst = worst.min(c);
                assert!(
                    c >= 0.999,
                    "{alias} {key} prompt {i}: cosine {c:.6} < 0.999"
                );
            }
        }
    }
    eprintln!("{alias}: worst cosine against transformers {worst:.7} (1 - cos = {:.2e}, batch {batch_size})", 1.0 - worst);
    worst
}

#[test]
fn smollm2_f32_matches_transformers_batched() {
    check_against_transformers("smollm2", 8);
}

#[test]
fn smollm2_f32_matches_transformers_one_at_a_time() {
    check_against_transformers("smollm2", 1);
}

#[test]
fn gemma3_f32_matches_transformers_batched() {
    check_against_transformers("gemma3", 8);
}

#[test]
fn token_ids_match_the_reference_run() {
    for alias in ["smollm2", "gemma3"] {
        let ck = open(alias);
        let text =
            std::fs::read_to_string(fixture(&format!("reference/{alias}.tokens.json"))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let expected: Vec<Vec<u32>> = serde_json::from_value(v["token_ids"].clone()).unwrap();
        for (p, want) in prompts().iter().zip(expected) {
            assert_eq!(ck.tokenizer.encode(p).unwrap(), want, "{alias}: {p:?}");
        }
    }
}

//! `diff` names the update family of real candidates built from SmolLM2.

use predicates::prelude::*;
use probegate::checkpoint::Checkpoint;
use probegate::gate::diff::{diff, Family};

use crate::harness::*;

fn family(base: &str, cand: &str) -> probegate::gate::diff::DiffReport {
    let b = Checkpoint::open_str(base).unwrap();
    let c = Checkpoint::open_str(cand).unwrap();
    diff(&b, &c, &mut || {}).unwrap()
}

#[test]
fn families_of_real_candidates() {
    let adapter = fixture("adapters/smollm2-lora-r4").display().to_string();
    let cases = [
        ("smollm2".to_string(), Family::Identical),
        ("q4_0(smollm2)".to_string(), Family::Quantization),
        ("int8(smollm2)".to_string(), Family::Quantization),
        (format!("smollm2+{adapter}"), Family::LowRankAdapter),
        (
            format!("nf4(smollm2)+{adapter}"),
            Family::QuantizationPlusAdapter,
        ),
    ];
    for (cand, want) in cases {
        let r = family("smollm2", &cand);
        assert_eq!(r.family, want, "{cand}: {:?}", r.evidence);
    }
    // The adapter's ΔW has the adapter's rank (r = 4, k_proj r = 2).
    let r = family("smollm2", &format!("smollm2+{adapter}"));
    let q = r
        .tensors
        .iter()
        .find(|t| t.name == "model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert!(q.stable_rank <= 4.0 + 1e-3 && q.rel_change > 0.0, "{q:?}");
    let untouched = r
        .tensors
        .iter()
        .find(|t| t.name == "model.layers.1.self_attn.q_proj.weight")
        .unwrap();
    assert_eq!(
        untouched.rel_change, 0.0,
        "layers_to_transform skips block 1"
    );
    // 8-bit changes the weights far less than 4-bit.
    let (q4, i8) = (
        family("smollm2", "q4_0(smollm2)"),
        family("smollm2", "int8(smollm2)"),
    );
    assert!(
        i8.kinds["mlp_up"] * 4.0 < q4.kinds["mlp_up"],
        "{:?} vs {:?}",
        i8.kinds,
        q4.kinds
    );
}

#[test]
fn merged_adapter_is_recognised_across_naming_schemes() {
    // GGUF base against a Hugging Face directory: names and q/k layout differ.
    let adapter = fixture("adapters/smollm2-lora-r4").display().to_string();
    let unmerged = Checkpoint::open_str(&format!("smollm2+{adapter}")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    probegate::export::convert(
        &unmerged,
        dir.path(),
        probegate::export::OutDtype::F32,
        &mut || {},
    )
    .unwrap();
    let r = family("smollm2", &dir.path().display().to_string());
    assert_eq!(r.family, Family::MergedLowRank, "{:?}", r.evidence);
    assert_eq!(r.tensors.iter().filter(|t| t.rel_change > 0.0).count(), 70);
}

/// A merged adapter served as most checkpoints ship, in bf16: rounding moves
/// every weight, which read as a full fine-tune until the diff compared the
/// candidate with the base rounded to bf16. A bf16 copy of the base alone is
/// a change of precision, never "identical".
#[test]
fn a_merged_adapter_stored_in_bf16_is_still_a_merged_adapter() {
    let adapter = fixture("zoo/smollm2-lora-r8-attn-support")
        .display()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let write = |reference: &str, out: &std::path::Path| {
        let ck = Checkpoint::open_str(reference).unwrap();
        probegate::export::convert(&ck, out, probegate::export::OutDtype::Bf16, &mut || {})
            .unwrap();
        out.display().to_string()
    };
    let merged = write(&format!("smollm2+{adapter}"), &dir.path().join("merged"));
    let r = family("smollm2", &merged);
    assert_eq!(r.family, Family::MergedLowRank, "{:?}", r.evidence);
    assert!(r.evidence[0].contains("as bf16"), "{:?}", r.evidence);
    // The reported change is against the base itself, rounding included:
    // far more than the adapter's 120 projections moved.
    assert!(r.tensors.iter().filter(|t| t.rel_change > 0.0).count() > 200);
    let plain = write("smollm2", &dir.path().join("plain"));
    let r = family("smollm2", &plain);
    assert_eq!(r.family, Family::Quantization, "{:?}", r.evidence);
    assert!(
        r.evidence
            .iter()
            .any(|e| e.contains("storage precision (bf16)")),
        "{:?}",
        r.evidence
    );
}

#[test]
fn diff_cli_reports_json_and_refuses_mismatched_architectures() {
    let out = bin()
        .args([
            "diff",
            "smollm2",
            "q8_0(smollm2)",
            "--format",
            "json",
            "--quiet",
        ])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["family"], "quantization");
    assert_eq!(v["blocks"].as_array().unwrap().len(), 30);
    bin()
        .args(["diff", "smollm2", "gemma3"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("different architectures"));
}

/// `probegate features` on one SmolLM2 monitor, JSON on stdout.
fn features_cmd(cand: &str) -> assert_cmd::Command {
    let mut c = bin();
    c.args([
        "features",
        "--base",
        "smollm2",
        "--candidate",
        cand,
        "--format",
        "json",
        "--quiet",
    ])
    .arg("--monitors")
    .arg(repo().join("monitors/smollm2/self_harm-l22"));
    c
}

fn features(cand: &str) -> serde_json::Value {
    let out = features_cmd(cand)
        .args(["--limit", "48"])
        .arg("--corpus")
        .arg(repo().join("data/realign/corpus.jsonl"))
        .assert()
        .success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

#[test]
fn label_free_features_are_zero_for_the_base_and_move_for_an_adapter() {
    let same = features("smollm2");
    let f = &same["monitors"][0];
    assert_eq!(same["family"], "identical");
    assert_eq!(
        (
            f["score_ks"].as_f64(),
            f["flip_rate"].as_f64(),
            f["projected_shift"].as_f64()
        ),
        (Some(0.0), Some(0.0), Some(0.0))
    );
    assert!((f["act_cosine"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    // The concept features read the concept's training texts (found the way
    // `check` finds them), so `features` shows what the gate's risk stage sees.
    assert_eq!(
        (
            f["concept_decision_auroc"].as_f64(),
            f["concept_flip_rate"].as_f64()
        ),
        (Some(1.0), Some(0.0)),
        "{f}"
    );

    let adapted = features(&format!(
        "smollm2+{}",
        fixture("adapters/smollm2-lora-r4").display()
    ));
    let g = &adapted["monitors"][0];
    assert_eq!(adapted["family"], "low_rank_adapter");
    assert!(g["act_cosine"].as_f64().unwrap() < 0.999, "{g}");
    assert!(
        g["score_ks"].as_f64().unwrap() > 0.0 && g["change_below"].as_f64().unwrap() > 0.0,
        "{g}"
    );
    assert!((g["depth_fraction"].as_f64().unwrap() - 23.0 / 30.0).abs() < 1e-12);
    let d = g["concept_decision_auroc"].as_f64().unwrap();
    assert!(d > 0.5 && d < 1.0, "{g}");
}

#[test]
fn features_with_a_data_directory_that_lacks_the_concept_fail_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = features_cmd("smollm2")
        .arg("--data")
        .arg(tmp.path())
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains(&tmp.path().display().to_string()) && err.contains("self_harm"),
        "{err}"
    );
}

/// A candidate that edits only config.json or the tokenizer keeps its base's
/// weights but not its forward pass. The diff names it (it read as
/// identical, which the verdict excuses) and the activation cache keys it
/// apart from the base (it was served the base's cached activations).
#[test]
fn a_changed_config_or_tokenizer_is_not_identical() {
    let base = converted_smollm2();
    let tmp = tempfile::tempdir().unwrap();
    // The weights linked, the small JSON files copied so one can be edited.
    let copy = |name: &str, edit: &dyn Fn(&std::path::Path)| -> String {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for e in std::fs::read_dir(base).unwrap() {
            let p = e.unwrap().path();
            let to = d.join(p.file_name().unwrap());
            if p.extension().is_some_and(|x| x == "safetensors") {
                std::os::unix::fs::symlink(&p, &to).unwrap();
            } else {
                std::fs::copy(&p, &to).unwrap();
            }
        }
        edit(&d);
        d.display().to_string()
    };
    fn set(
        file: &'static str,
        key: &'static str,
        v: serde_json::Value,
    ) -> impl Fn(&std::path::Path) {
        move |d: &std::path::Path| {
            let p = d.join(file);
            let mut j: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            j[key] = v.clone();
            std::fs::write(&p, serde_json::to_string_pretty(&j).unwrap()).unwrap();
        }
    }
    let same = copy("same", &|_| {});
    let rope = copy("rope", &set("config.json", "rope_theta", 500000.0.into()));
    let eos = copy(
        "eos",
        &set("tokenizer_config.json", "add_eos_token", true.into()),
    );
    let base = base.display().to_string();
    let id = |r: &str| Checkpoint::open_str(r).unwrap().forward_identity().unwrap();
    let fp = |r: &str| Checkpoint::open_str(r).unwrap().fingerprint().unwrap();

    let r = family(&base, &same);
    assert_eq!(r.family, Family::Identical, "{:?}", r.evidence);
    assert_eq!(id(&same), id(&base));

    for (c, why) in [
        (&rope, "`rope_theta` changed"),
        (&eos, "the tokenizer changed"),
    ] {
        let r = family(&base, c);
        assert_eq!(r.family, Family::ConfigOnly, "{:?}", r.evidence);
        assert!(
            r.evidence.iter().any(|e| e.contains(why)),
            "{:?}",
            r.evidence
        );
        // Same weights, so the same fingerprint; different activations, so
        // a different cache identity.
        assert_eq!(fp(c), fp(&base));
        assert_ne!(id(c), id(&base), "{c}");
    }
    // The GGUF base against its own conversion: formats differ, the forward
    // pass does not, so nothing beside the weights is reported.
    let r = family("smollm2", &base);
    assert_eq!(r.family, Family::Identical, "{:?}", r.evidence);
    assert!(
        !r.evidence
            .iter()
            .any(|e| e.starts_with("the config's") || e.starts_with("the tokenizer")),
        "{:?}",
        r.evidence
    );
}

//! Candidate selection and the name and size checks, without a server.

use super::artifacts::{
    components, find_candidate, safe_component, ArtifactLimits, Found, ModelDir, MAX_BYTES_ENV,
};
use super::{select_files, CandidateFiles};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The adapter find_candidate picks in `files`: (dir, files, stored base).
fn adapter_in(files: &[String]) -> (String, Vec<String>, Option<ModelDir>) {
    match find_candidate(files) {
        Ok(Found::Adapter { dir, files, base }) => (dir, files, base),
        other => panic!("expected an adapter in {files:?}, found {other:?}"),
    }
}

#[test]
fn selects_what_check_can_read() {
    assert_eq!(
        select_files(&s(&[
            "README.md",
            "adapter_model.safetensors",
            "adapter_config.json"
        ])),
        Some(CandidateFiles::Adapter(s(&[
            "adapter_config.json",
            "adapter_model.safetensors"
        ])))
    );
    assert_eq!(
        select_files(&s(&[
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "x/y.json"
        ])),
        Some(CandidateFiles::Model(s(&[
            "config.json",
            "model.safetensors",
            "tokenizer.json"
        ])))
    );
    assert_eq!(
        select_files(&s(&["b.gguf", "a.gguf"])),
        Some(CandidateFiles::Gguf("a.gguf".into()))
    );
    assert_eq!(select_files(&s(&["README.md"])), None);
}

/// MLflow's pyfunc layout for `artifacts={"adapter": DIR}` (listed from a
/// real MLflow 3.17 server), and the transformers flavor's.
const PYFUNC: &[&str] = &[
    "MLmodel",
    "conda.yaml",
    "python_env.yaml",
    "python_model.pkl",
    "requirements.txt",
    "artifacts/smollm2-lora-r4/adapter_config.json",
    "artifacts/smollm2-lora-r4/adapter_model.safetensors",
];

#[test]
fn finds_the_adapter_wherever_the_flavor_put_it() {
    assert_eq!(
        find_candidate(&s(PYFUNC)),
        Ok(Found::Adapter {
            dir: "artifacts/smollm2-lora-r4".into(),
            files: s(&["adapter_config.json", "adapter_model.safetensors"]),
            base: None
        })
    );
    for dir in ["", "peft/", "a/b/c/"] {
        let files = s(&[
            "MLmodel",
            &format!("{dir}adapter_config.json"),
            &format!("{dir}adapter_model.safetensors"),
            &format!("{dir}README.md"),
        ]);
        let (d, files, base) = adapter_in(&files);
        assert_eq!(format!("{d}/").trim_start_matches('/'), dir);
        assert_eq!(files.len(), 2);
        assert_eq!(base, None, "{dir}");
    }
}

#[test]
fn transformers_flavor_model_dir_takes_its_tokenizer_from_components() {
    let files = s(&[
        "MLmodel",
        "model/config.json",
        "model/generation_config.json",
        "model/model.safetensors",
        "components/tokenizer/tokenizer.json",
        "components/tokenizer/tokenizer_config.json",
        "components/tokenizer/special_tokens_map.json",
    ]);
    assert_eq!(
        find_candidate(&files),
        Ok(Found::Model(ModelDir {
            dir: "model".into(),
            files: s(&["config.json", "generation_config.json", "model.safetensors"]),
            tokenizer: Some((
                "components/tokenizer".into(),
                s(&[
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "special_tokens_map.json"
                ])
            )),
        }))
    );
    // PEFT with the base's weights saved: peft/ on model/, as MLflow loads it.
    let mut peft = files.clone();
    peft.extend(s(&[
        "peft/adapter_config.json",
        "peft/adapter_model.safetensors",
    ]));
    let (dir, _, base) = adapter_in(&peft);
    let m = base.expect("the base stored beside the adapter");
    assert_eq!((dir.as_str(), m.dir.as_str()), ("peft", "model"));
    assert!(m.tokenizer.is_some());
}

#[test]
fn ambiguity_and_absence_are_errors_naming_what_was_found() {
    let two = s(&[
        "artifacts/a/adapter_config.json",
        "artifacts/a/adapter_model.safetensors",
        "peft/adapter_config.json",
        "peft/adapter_model.safetensors",
    ]);
    let e = find_candidate(&two).unwrap_err();
    assert!(
        e.contains("2 PEFT adapters") && e.contains("`artifacts/a/`") && e.contains("`peft/`"),
        "{e}"
    );

    let e = find_candidate(&s(&["x/m.gguf", "y/m.gguf"])).unwrap_err();
    assert!(e.contains("`x/m.gguf`") && e.contains("`y/m.gguf`"), "{e}");

    let e = find_candidate(&s(&[
        "a/config.json",
        "a/model.safetensors",
        "b/config.json",
        "b/model.safetensors",
    ]))
    .unwrap_err();
    assert!(e.contains("2 model directories"), "{e}");

    // An adapter beside an unrelated model directory is not the flavor's layout.
    let e = find_candidate(&s(&[
        "artifacts/adapter/adapter_config.json",
        "artifacts/adapter/adapter_model.safetensors",
        "artifacts/merged/config.json",
        "artifacts/merged/model.safetensors",
    ]))
    .unwrap_err();
    assert!(
        e.contains("ambiguous") && e.contains("`artifacts/merged/`"),
        "{e}"
    );

    let e = find_candidate(&s(&[
        "m.gguf",
        "peft/adapter_config.json",
        "peft/adapter_model.safetensors",
    ]))
    .unwrap_err();
    assert!(e.contains("`m.gguf`") && e.contains("`peft/`"), "{e}");

    let e =
        find_candidate(&s(&["peft/adapter_config.json", "peft/adapter_model.bin"])).unwrap_err();
    assert!(e.contains("pickle") && e.contains("`peft/`"), "{e}");

    let e = find_candidate(&s(&["MLmodel", "python_model.pkl"])).unwrap_err();
    assert!(e.contains("no PEFT adapter"), "{e}");
    assert_eq!(
        find_candidate(&s(&["d/m.gguf", "MLmodel"])),
        Ok(Found::Gguf("d/m.gguf".into()))
    );
}

#[test]
fn only_plain_names_pass() {
    for ok in [
        "adapter_config.json",
        "model-00001-of-00002.safetensors",
        "a b",
        "m+1.gguf",
    ] {
        assert!(safe_component(ok), "{ok}");
    }
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "a\\b",
        "C:",
        "x\ny",
        "nul\0",
        &"x".repeat(256),
    ] {
        assert!(!safe_component(bad), "{bad:?}");
    }
    assert_eq!(
        components("/0/models/m-1/artifacts/"),
        Ok(s(&["0", "models", "m-1", "artifacts"]))
    );
    assert_eq!(components(""), Ok(vec![]));
    assert!(components("0/../etc").is_err());
    assert!(components("0//x").is_err());
}

#[test]
fn byte_cap_is_a_positive_number_or_refused() {
    let cap = |v| ArtifactLimits::with_max_bytes(v).map(|l| l.max_bytes);
    assert_eq!(cap(Some(" 1234 ")).unwrap(), 1234);
    assert_eq!(cap(None).unwrap(), ArtifactLimits::default().max_bytes);
    for bad in ["0", "-1", "lots", ""] {
        let e = cap(Some(bad)).unwrap_err().to_string();
        assert!(e.contains(MAX_BYTES_ENV), "{e}");
    }
}

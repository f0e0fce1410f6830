use super::*;

#[test]
fn merges_are_stored_as_served_and_old_manifests_still_read() {
    let grid = default_grid(&["chat", "support"]);
    assert_eq!(grid.len(), 32);
    let merges: Vec<&Condition> = grid
        .iter()
        .filter(|c| c.family == Family::MergedLora)
        .collect();
    assert_eq!(merges.len(), 16);
    // No f32 merge (a copy of its source), one bf16 and one GGUF per LoRA.
    for c in &merges {
        let Recipe::Merge { of, storage } = &c.recipe else {
            panic!("{c:?}")
        };
        assert_ne!(*storage, Storage::F32, "{}", c.name);
        assert!(grid.iter().any(|s| &s.name == of), "{of}");
        assert!(c.name.ends_with(of.as_str()), "{}", c.name);
    }
    // A manifest written before storage was recorded: an f32 merge.
    let old: Recipe =
        serde_json::from_str(r#"{"recipe":"merge","of":"lora-r8-attn-chat"}"#).unwrap();
    assert_eq!(
        old,
        Recipe::Merge {
            of: "lora-r8-attn-chat".into(),
            storage: Storage::F32
        }
    );
}

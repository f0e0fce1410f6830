//! Tensor names: probegate speaks Hugging Face names internally and maps GGUF
//! (llama.cpp) names onto them, so every later stage matches tensors across
//! naming schemes with one table.

use crate::checkpoint::config::Arch;

/// A table row: (hf module name or suffix, gguf name or suffix).
type Row = (&'static str, &'static str);

/// (hf module suffix, gguf suffix) inside a decoder block, common to all archs.
const BLOCK_COMMON: &[Row] = &[
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("input_layernorm", "attn_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// Norm names differ: Llama's pre-MLP norm is `ffn_norm`; Gemma 3 has four norms.
fn block_arch(arch: Arch) -> &'static [Row] {
    match arch {
        Arch::Llama => &[("post_attention_layernorm", "ffn_norm")],
        Arch::Gemma3 => &[
            ("post_attention_layernorm", "post_attention_norm"),
            ("pre_feedforward_layernorm", "ffn_norm"),
            ("post_feedforward_layernorm", "post_ffw_norm"),
        ],
    }
}

const GLOBAL: &[Row] = &[
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("lm_head", "output"),
];

fn split_param(name: &str) -> Option<(&str, &str)> {
    let (module, param) = name.rsplit_once('.')?;
    matches!(param, "weight" | "bias").then_some((module, param))
}

/// `name` renamed through the tables, from the scheme whose blocks start
/// with `from_block` to the one whose blocks start with `to_block`; `sides`
/// orders a row as (from, to).
fn rename(
    name: &str,
    arch: Arch,
    (from_block, to_block): (&str, &str),
    sides: fn(&Row) -> Row,
) -> Option<String> {
    let (module, param) = split_param(name)?;
    if let Some((_, to)) = GLOBAL.iter().map(sides).find(|(from, _)| *from == module) {
        return Some(format!("{to}.{param}"));
    }
    let rest = module.strip_prefix(from_block)?;
    let (idx, sub) = rest.split_once('.')?;
    let idx: usize = idx.parse().ok()?;
    BLOCK_COMMON
        .iter()
        .chain(block_arch(arch))
        .map(sides)
        .find(|(from, _)| *from == sub)
        .map(|(_, to)| format!("{to_block}{idx}.{to}.{param}"))
}

pub fn hf_to_gguf(name: &str, arch: Arch) -> Option<String> {
    rename(name, arch, ("model.layers.", "blk."), |&(h, g)| (h, g))
}

pub fn gguf_to_hf(name: &str, arch: Arch) -> Option<String> {
    rename(name, arch, ("blk.", "model.layers."), |&(h, g)| (g, h))
}

/// Which block a HF tensor name belongs to, if any.
pub fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split_once('.')?
        .0
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_for_both_archs() {
        for arch in [Arch::Llama, Arch::Gemma3] {
            let mut names = vec![
                "model.embed_tokens.weight".to_string(),
                "model.norm.weight".into(),
                "lm_head.weight".into(),
            ];
            for (h, _) in BLOCK_COMMON.iter().chain(block_arch(arch)) {
                names.push(format!("model.layers.17.{h}.weight"));
            }
            names.push("model.layers.3.self_attn.q_proj.bias".into());
            for n in names {
                let g = hf_to_gguf(&n, arch).unwrap_or_else(|| panic!("no gguf name for {n}"));
                assert_eq!(gguf_to_hf(&g, arch).as_deref(), Some(n.as_str()), "{g}");
            }
        }
    }

    #[test]
    fn norms_differ_between_llama_and_gemma() {
        assert_eq!(
            hf_to_gguf(
                "model.layers.0.post_attention_layernorm.weight",
                Arch::Llama
            )
            .as_deref(),
            Some("blk.0.ffn_norm.weight")
        );
        assert_eq!(
            gguf_to_hf("blk.0.ffn_norm.weight", Arch::Gemma3).as_deref(),
            Some("model.layers.0.pre_feedforward_layernorm.weight")
        );
        assert_eq!(gguf_to_hf("blk.x.attn_q.weight", Arch::Llama), None);
        assert_eq!(
            hf_to_gguf("model.layers.0.mlp.gate_proj.lora_A", Arch::Llama),
            None
        );
        assert_eq!(block_of("model.layers.12.mlp.up_proj.weight"), Some(12));
    }
}

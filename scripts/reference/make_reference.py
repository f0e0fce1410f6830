#!/usr/bin/env python3
"""Independent Hugging Face transformers reference for probegate's activation extraction.

Exact command used to produce the committed fixtures (from the repository root):

    scripts/reference/setup-venv.sh
    ~/.cache/probegate/pyref/bin/python scripts/reference/make_reference.py \
        --models-dir ~/.cache/probegate/models --out fixtures/reference

(The models come from scripts/fetch-models.sh.)

What it computes, for each model (smollm2, gemma3) and each prompt of
fixtures/reference/prompts.jsonl (8 lines, field "text"):

* One prompt at a time: batch 1, no padding, CPU, float32, model.eval(),
  torch.no_grad(), output_hidden_states=True.
* Tokens: tokenizer(text) with the GGUF-derived tokenizer's defaults
  (add_special_tokens=True). With transformers 5.24.0 that means: gemma3 gets
  <bos> (id 2) prepended, SmolLM2 gets NO BOS (the GGUF says
  tokenizer.ggml.add_bos_token = false). See <model>.tokens.json.
* "Layer L" (0-based) is the residual stream right after decoder block L,
  i.e. hidden_states[L + 1] (hidden_states[0] is the embedding output, which
  for gemma3 already includes the sqrt(d_model) scale).
  LAST BLOCK: in transformers 5.x the output-capturing machinery
  (utils/output_capturing.py, tie_last_hidden_states=True) overwrites
  hidden_states[-1] with last_hidden_state, which is AFTER the final RMSNorm
  (model.model.norm). So hidden_states[num_layers] is post-norm for both llama
  and gemma3. We therefore capture the true residual of the last block with a
  forward hook on model.model.layers[-1] and use that for layer num_layers-1.
  The script checks this at run time (hook vs hidden_states[-1] vs
  norm(hook)) and records the result in the metadata
  ("hidden_states_last_is_post_norm"); it also asserts that the hook outputs
  of all earlier blocks equal hidden_states[L + 1].
* Output tensors (float32, shape [8, d_model], row i = prompt i):
    last.layer.{L}  the last token's vector after block L
    mean.layer.{L}  mean over ALL tokens of the prompt (BOS included if present)
  for every L in 0..num_layers-1, plus embed.last / embed.mean (hidden_states[0])
  and final_norm.last / final_norm.mean (the model's final RMSNorm output,
  i.e. transformers' hidden_states[-1]) as debugging aids.
  __metadata__ (all strings): model, gguf_file, gguf_sha256, transformers,
  torch, gguf (python package), num_layers, d_model, prompts_sha256,
  token_ids (JSON list of lists), next_token_argmax (JSON, greedy next token
  per prompt from the full model), layer_definition, last_layer_source,
  hidden_states_last_is_post_norm.
* <model>.tokens.json: {"add_bos", "bos_id", "token_ids", ...} and
  <model>.config.json: model.config.to_dict() plus "_probegate_observed",
  facts verified against the raw GGUF tensors:
    - gemma3: llama.cpp stores RMSNorm weights as (w + 1); transformers' GGUF
      loader (Gemma2TensorProcessor, also used for gemma3) subtracts 1 and the
      HF Gemma3RMSNorm computes x_hat * (1 + w). Checked: raw - hf == 1.
    - llama: llama.cpp's converter permutes the rows of attn_q / attn_k for its
      interleaved ("normal") RoPE; transformers' loader (LlamaTensorProcessor)
      reverses that permutation so HF can use rotate_half (NeoX layout). Checked:
      dequant(raw) == permute(hf).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}

REPO = Path(__file__).resolve().parents[2]


def default_models_dir() -> Path:
    cache = os.environ.get("PROBEGATE_CACHE")
    if cache:
        return Path(cache) / "models"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "probegate" / "models"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_prompts(path: Path) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                texts.append(json.loads(line)["text"])
    return texts


def raw_gguf_tensor(reader, name: str) -> np.ndarray:
    """Dequantized tensor from the GGUF, in numpy (row-major, [out, in]) layout."""
    from gguf import dequantize

    for t in reader.tensors:
        if t.name == name:
            return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
    raise KeyError(name)


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def observe_loader(model, arch: str, gguf_path: Path) -> dict:
    """Check what transformers' GGUF loader did to the raw tensors."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    cfg = model.config
    obs: dict = {}
    layer0 = model.model.layers[0]
    if arch == "gemma3":
        diffs = {}
        for gguf_name, param in [
            ("blk.0.attn_norm.weight", layer0.input_layernorm.weight),
            ("blk.0.post_attention_norm.weight", layer0.post_attention_layernorm.weight),
            ("blk.0.ffn_norm.weight", layer0.pre_feedforward_layernorm.weight),
            ("blk.0.post_ffw_norm.weight", layer0.post_feedforward_layernorm.weight),
            ("blk.0.attn_q_norm.weight", layer0.self_attn.q_norm.weight),
            ("blk.0.attn_k_norm.weight", layer0.self_attn.k_norm.weight),
            ("output_norm.weight", model.model.norm.weight),
        ]:
            raw = raw_gguf_tensor(reader, gguf_name)
            d = raw - param.detach().numpy()
            diffs[gguf_name] = [float(d.min()), float(d.max())]
        plus_one = all(abs(lo - 1) < 1e-6 and abs(hi - 1) < 1e-6 for lo, hi in diffs.values())
        obs["gguf_norm_weights_stored_plus_one"] = plus_one
        obs["loader_subtracted_one_from_norm_weights"] = plus_one
        obs["norm_weight_raw_minus_hf_minmax"] = diffs
        obs["hf_rmsnorm_formula"] = "x / sqrt(mean(x^2) + eps) * (1 + w_hf)  ==  ... * w_gguf"
        obs["embedding_scale"] = float(model.model.embed_tokens.embed_scale)
        obs["embedding_scale_note"] = "hidden_states[0] = embed_tokens(ids) * sqrt(hidden_size) (computed in f32)"
        obs["attention_scaling"] = float(cfg.query_pre_attn_scalar) ** -0.5
        obs["rope_theta_full_attention"] = cfg.rope_parameters["full_attention"]["rope_theta"]
        obs["rope_theta_sliding_attention"] = cfg.rope_parameters["sliding_attention"]["rope_theta"]
        obs["full_attention_layers"] = [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"]
    if arch == "llama":
        nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
        q_raw = raw_gguf_tensor(reader, "blk.0.attn_q.weight")
        k_raw = raw_gguf_tensor(reader, "blk.0.attn_k.weight")
        q_hf = layer0.self_attn.q_proj.weight.detach().numpy()
        k_hf = layer0.self_attn.k_proj.weight.detach().numpy()
        q_same = bool(np.array_equal(q_raw, q_hf))
        q_unperm = bool(np.array_equal(q_raw, llama_permute(q_hf, nh)))
        k_unperm = bool(np.array_equal(k_raw, llama_permute(k_hf, nkv)))
        obs["gguf_qk_rows_permuted_for_interleaved_rope"] = q_unperm and k_unperm and not q_same
        obs["loader_unpermuted_q_k"] = q_unperm and k_unperm and not q_same
        obs["qk_note"] = (
            "HF q_proj/k_proj = inverse llama.cpp permutation of GGUF attn_q/attn_k; HF applies RoPE "
            "with rotate_half (pairs i, i+head_dim/2). Using the GGUF rows as stored with llama.cpp's "
            "interleaved RoPE (pairs 2i, 2i+1) is equivalent."
        )
        obs["rope_theta"] = cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None) else None
    obs["head_dim"] = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    obs["num_attention_heads"] = cfg.num_attention_heads
    obs["num_key_value_heads"] = cfg.num_key_value_heads
    obs["tie_word_embeddings"] = bool(getattr(cfg, "tie_word_embeddings", False))
    obs["lm_head_tied_to_embeddings"] = (
        model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    )
    obs["gguf_has_output_weight"] = any(t.name == "output.weight" for t in reader.tensors)
    return obs


def run_model(key: str, models_dir: Path, out_dir: Path, prompts: list[str], prompts_sha: str) -> None:
    import gguf as gguf_pkg  # noqa: F401
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    fname = MODELS[key]
    gguf_path = models_dir / fname
    if not gguf_path.is_file():
        sys.exit(f"missing {gguf_path}: run scripts/fetch-models.sh first")
    gguf_sha = sha256_file(gguf_path)
    print(f"[{key}] loading {gguf_path} (sha256 {gguf_sha})", file=sys.stderr)

    tok = AutoTokenizer.from_pretrained(str(models_dir), gguf_file=fname)
    model = AutoModelForCausalLM.from_pretrained(str(models_dir), gguf_file=fname, dtype=torch.float32)
    model.eval()
    arch = model.config.model_type  # "llama" / "gemma3_text"
    arch = "gemma3" if arch.startswith("gemma3") else arch
    layers = model.model.layers
    n_layers = len(layers)
    d_model = model.config.hidden_size

    # Hooks on every decoder block: the block's output IS the residual stream after it.
    captured: dict[int, torch.Tensor] = {}

    def make_hook(idx):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            captured[idx] = out.detach().clone()

        return hook

    handles = [layer.register_forward_hook(make_hook(i)) for i, layer in enumerate(layers)]

    last = {L: [] for L in range(n_layers)}
    mean = {L: [] for L in range(n_layers)}
    extra = {"embed.last": [], "embed.mean": [], "final_norm.last": [], "final_norm.mean": []}
    token_ids: list[list[int]] = []
    next_tok: list[int] = []
    post_norm_flags = []
    max_mid_diff = 0.0

    with torch.no_grad():
        for text in prompts:
            enc = tok(text, return_tensors="pt")  # add_special_tokens=True (default)
            ids = enc["input_ids"]
            assert ids.shape[0] == 1
            token_ids.append(ids[0].tolist())
            captured.clear()
            out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
            hs = out.hidden_states
            assert len(hs) == n_layers + 1, (len(hs), n_layers)
            for L in range(n_layers - 1):
                max_mid_diff = max(max_mid_diff, float((hs[L + 1] - captured[L]).abs().max()))
            true_last = captured[n_layers - 1]
            normed = model.model.norm(true_last)
            is_post = bool(torch.allclose(hs[n_layers], normed, rtol=0, atol=1e-6)) and not bool(
                torch.allclose(hs[n_layers], true_last, rtol=0, atol=1e-6)
            )
            is_pre = bool(torch.equal(hs[n_layers], true_last))
            assert is_post != is_pre, "could not tell whether hidden_states[-1] is pre- or post-norm"
            post_norm_flags.append(is_post)
            for L in range(n_layers):
                # Blocks 0..n-2: hidden_states[L+1] (equal to the hook output, asserted below).
                # Last block: the hook output, since hidden_states[-1] is post-final-norm.
                h = hs[L + 1] if L < n_layers - 1 else true_last
                last[L].append(h[0, -1].float())
                mean[L].append(h[0].float().mean(dim=0))
            extra["embed.last"].append(hs[0][0, -1])
            extra["embed.mean"].append(hs[0][0].mean(dim=0))
            extra["final_norm.last"].append(normed[0, -1])
            extra["final_norm.mean"].append(normed[0].mean(dim=0))
            next_tok.append(int(out.logits[0, -1].argmax()))

    for h in handles:
        h.remove()
    assert max_mid_diff == 0.0, f"hook output differs from hidden_states[L+1]: {max_mid_diff}"
    assert len(set(post_norm_flags)) == 1
    last_is_post_norm = post_norm_flags[0]

    tensors = {}
    for L in range(n_layers):
        tensors[f"last.layer.{L}"] = torch.stack(last[L]).contiguous()
        tensors[f"mean.layer.{L}"] = torch.stack(mean[L]).contiguous()
    for k, v in extra.items():
        tensors[k] = torch.stack(v).contiguous()
    for k, v in tensors.items():
        assert v.dtype == torch.float32 and tuple(v.shape) == (len(prompts), d_model), (k, v.shape)

    metadata = {
        "model": key,
        "architecture": arch,
        "gguf_file": fname,
        "gguf_sha256": gguf_sha,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "gguf": _pkg_version("gguf"),
        "num_layers": str(n_layers),
        "d_model": str(d_model),
        "num_prompts": str(len(prompts)),
        "prompts_sha256": prompts_sha,
        "token_ids": json.dumps(token_ids, separators=(",", ":")),
        "next_token_argmax": json.dumps(next_tok, separators=(",", ":")),
        "layer_definition": "layer L (0-based) = residual stream after decoder block L = hidden_states[L+1]",
        "mean_definition": "mean over all tokens of the prompt, special tokens (BOS) included",
        "last_layer_source": "forward hook on model.model.layers[-1] (hidden_states[-1] is post-final-norm)"
        if last_is_post_norm
        else "hidden_states[-1] (pre-norm)",
        "hidden_states_last_is_post_norm": str(last_is_post_norm).lower(),
        "dtype": "float32",
        "device": "cpu",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    st_path = out_dir / f"{key}.safetensors"
    save_file(tensors, str(st_path), metadata=metadata)
    _canonicalize_safetensors(st_path)

    bos_id = tok.bos_token_id
    add_bos = all(len(t) > 0 and t[0] == bos_id for t in token_ids) if bos_id is not None else False
    gguf_add_bos = _gguf_field(gguf_path, "tokenizer.ggml.add_bos_token")
    tokens_doc = {
        "add_bos": add_bos,
        "bos_id": bos_id,
        "gguf_add_bos_token": gguf_add_bos,
        "tokenizer_class": type(tok).__name__,
        "n_tokens": [len(t) for t in token_ids],
        "token_ids": token_ids,
        "prompts_sha256": prompts_sha,
        "transformers": transformers.__version__,
    }
    _write_json(out_dir / f"{key}.tokens.json", tokens_doc, compact_lists=True)

    cfg = model.config.to_dict()
    cfg["_probegate_observed"] = {
        "hidden_states_last_is_post_norm": last_is_post_norm,
        "num_layers": n_layers,
        "d_model": d_model,
        "tokenizer_add_bos": add_bos,
        "gguf_add_bos_token": gguf_add_bos,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "gguf_sha256": gguf_sha,
        **observe_loader(model, arch, gguf_path),
    }
    _write_json(out_dir / f"{key}.config.json", cfg)
    print(
        f"[{key}] layers={n_layers} d_model={d_model} add_bos={add_bos} "
        f"n_tokens={[len(t) for t in token_ids]} last_post_norm={last_is_post_norm}",
        file=sys.stderr,
    )


def _canonicalize_safetensors(path: Path) -> None:
    """Rewrite the safetensors JSON header with sorted keys, so that re-running the script
    gives byte-identical files (the Rust writer emits its header in hash-map order). Data
    offsets are relative to the end of the header, so only the header changes."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    os.chmod(path, 0o644)


def _gguf_field(path: Path, key: str):
    from gguf import GGUFReader

    f = GGUFReader(str(path)).fields.get(key)
    return None if f is None else f.contents()


def _pkg_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _write_json(path: Path, obj, compact_lists: bool = False) -> None:
    if compact_lists:
        # one prompt's token ids per line: readable diffs, small file
        lines = ["{"]
        items = list(obj.items())
        for i, (k, v) in enumerate(items):
            sep = "," if i < len(items) - 1 else ""
            if k == "token_ids":
                inner = ",\n".join("    " + json.dumps(t, separators=(",", ":")) for t in v)
                lines.append(f'  "{k}": [\n{inner}\n  ]{sep}')
            else:
                lines.append(f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}{sep}")
        lines.append("}")
        text = "\n".join(lines) + "\n"
        json.loads(text)
    else:
        text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, default=default_models_dir(),
                    help="directory with the GGUF files (default: $PROBEGATE_CACHE/models or ~/.cache/probegate/models)")
    ap.add_argument("--out", type=Path, default=REPO / "fixtures" / "reference",
                    help="output directory (default: fixtures/reference)")
    ap.add_argument("--prompts", type=Path, default=None,
                    help="prompts JSONL (default: <out>/prompts.jsonl)")
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS),
                    help="which models (default: all)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    prompts_path = args.prompts or (args.out / "prompts.jsonl")
    prompts = load_prompts(prompts_path)
    prompts_sha = sha256_file(prompts_path)
    for key in args.models:
        run_model(key, args.models_dir.expanduser(), args.out, prompts, prompts_sha)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Real-PEFT LoRA adapter fixtures + transformers/PEFT reference activations for SmolLM2.

Exact command used to produce the committed fixtures (from the repository root):

    scripts/reference/setup-venv.sh
    ~/.cache/probegate/pyref/bin/python scripts/reference/make_peft_reference.py \
        --models-dir ~/.cache/probegate/models

(peft==0.21.2 is pinned in scripts/reference/requirements.txt; the GGUF comes from
scripts/fetch-models.sh.)

What it does:

* Loads SmolLM2-135M-Instruct.Q4_1.gguf into transformers exactly like
  make_reference.py (AutoModelForCausalLM.from_pretrained(dir, gguf_file=...,
  dtype=float32), CPU, eval) and re-computes the plain base activations; they must
  equal fixtures/reference/smollm2.safetensors (checked, max abs diff recorded).
* Builds two adapters with the real peft library (get_peft_model + LoraConfig),
  task_type CAUSAL_LM, lora_dropout 0, bias "none":
    smollm2-lora-r4    r=4, lora_alpha=8, q/k/v/o/gate/up/down_proj on layers
                       0,3,...,27; rank_pattern {"k_proj": 2}; alpha_pattern
                       {"down_proj": 16}; use_rslora=False.
                       scaling = alpha/r: 2 everywhere, except k_proj 8/2 = 4 and
                       down_proj 16/4 = 4.
    smollm2-rslora-r4  r=4, lora_alpha=8, q_proj/v_proj on layers 1,8,15,22,29;
                       use_rslora=True, so scaling = alpha/sqrt(r) = 4 (not 2).
  PEFT initialises lora_B to zero (the adapter would be a no-op), so after creation
  EVERY lora_A / lora_B weight is overwritten with deterministic random values:
  one torch.Generator seeded 20261127 per adapter, parameters visited in sorted name
  order, A = randn(r, in) / sqrt(in), B = randn(out, r) * --b-std (default 0.12).
  Saved with PeftModel.save_pretrained to fixtures/adapters/<name>/
  (adapter_config.json + adapter_model.safetensors, float32; PEFT's auto-generated
  README.md model card is deleted; target_modules in adapter_config.json is sorted,
  PEFT writes it in set order). base_model_name_or_path is
  "HuggingFaceTB/SmolLM2-135M-Instruct".
  Saved keys: base_model.model.model.layers.{i}.{self_attn|mlp}.{proj}.lora_{A|B}.weight
  (no adapter name), A: [r, in_features], B: [out_features, r]; delta_W = scaling * B @ A
  in HF's [out, in] layout. NOTE for a GGUF consumer: HF q_proj/k_proj rows are the
  inverse of llama.cpp's interleaved-RoPE permutation of attn_q/attn_k (see
  smollm2.config.json _probegate_observed), so lora_B of q_proj/k_proj must get the
  same llama.cpp permute (n_head for q, n_head_kv for k) when applied to GGUF
  weights; lora_A and all other modules are used as is.
* Runs the 8 prompts of fixtures/reference/prompts.jsonl through the PEFT model
  (UNMERGED: LoRA applied in the forward pass, eval, no_grad, batch 1, no padding),
  same tokens, same layer definition and tensor names as make_reference.py
  (last.layer.{L}, mean.layer.{L}: [8, 576] float32 for L in 0..29, plus embed.* and
  final_norm.*) and writes fixtures/reference/<name>.safetensors.
* Then merge_and_unload()s the adapter and re-runs: the merged activations must
  match the unmerged ones (max abs and max |diff|/max|x| per tensor recorded;
  the relative one asserted < 1e-5).
* __metadata__ records versions, hashes, the adapter config, the merge check, the
  base self-check, and cosine(base, adapted) per prompt (min over layers) and per
  layer (min over prompts), for last and mean pooling, base = smollm2.safetensors.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference import (  # noqa: E402
    MODELS,
    _canonicalize_safetensors,
    _pkg_version,
    default_models_dir,
    load_prompts,
    sha256_file,
)

REPO = Path(__file__).resolve().parents[2]
SEED = 20261127
BASE_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
ALL_PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

VARIANTS = {
    "smollm2-lora-r4": dict(
        r=4,
        lora_alpha=8,
        target_modules=ALL_PROJ,
        layers_to_transform=list(range(0, 30, 3)),
        rank_pattern={"k_proj": 2},
        alpha_pattern={"down_proj": 16},
        use_rslora=False,
    ),
    "smollm2-rslora-r4": dict(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        layers_to_transform=[1, 8, 15, 22, 29],
        use_rslora=True,
    ),
}


def forward_all(model, tok, prompts: list[str]):
    """Same extraction as make_reference.run_model: returns (tensors, token_ids, next_tok)."""
    layers = model.get_decoder().layers if hasattr(model, "get_decoder") else model.model.layers
    n_layers = len(layers)
    captured: dict[int, torch.Tensor] = {}

    def make_hook(idx):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            captured[idx] = out.detach().clone()

        return hook

    handles = [layer.register_forward_hook(make_hook(i)) for i, layer in enumerate(layers)]
    norm = model.get_decoder().norm
    acc: dict[str, list] = {}
    token_ids, next_tok = [], []
    with torch.no_grad():
        for text in prompts:
            ids = tok(text, return_tensors="pt")["input_ids"]
            token_ids.append(ids[0].tolist())
            captured.clear()
            out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
            hs = out.hidden_states
            assert len(hs) == n_layers + 1
            for L in range(n_layers - 1):
                assert torch.equal(hs[L + 1], captured[L]), L
            true_last = captured[n_layers - 1]
            normed = norm(true_last)
            assert torch.allclose(hs[n_layers], normed, rtol=0, atol=1e-6)  # post-norm, as in make_reference
            for L in range(n_layers):
                h = hs[L + 1] if L < n_layers - 1 else true_last
                acc.setdefault(f"last.layer.{L}", []).append(h[0, -1].float())
                acc.setdefault(f"mean.layer.{L}", []).append(h[0].float().mean(dim=0))
            acc.setdefault("embed.last", []).append(hs[0][0, -1])
            acc.setdefault("embed.mean", []).append(hs[0][0].mean(dim=0))
            acc.setdefault("final_norm.last", []).append(normed[0, -1])
            acc.setdefault("final_norm.mean", []).append(normed[0].mean(dim=0))
            next_tok.append(int(out.logits[0, -1].argmax()))
    for h in handles:
        h.remove()
    tensors = {k: torch.stack(v).contiguous() for k, v in acc.items()}
    return tensors, token_ids, next_tok, n_layers


def randomize_lora(peft_model, b_std: float) -> dict:
    gen = torch.Generator().manual_seed(SEED)
    params = sorted((n, p) for n, p in peft_model.named_parameters() if ".lora_A." in n or ".lora_B." in n)
    assert params, "no LoRA parameters"
    with torch.no_grad():
        for name, p in params:
            if ".lora_A." in name:
                r, fan_in = p.shape
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * b_std)
            assert bool(p.abs().gt(0).all()), name
    return {"n_params": len(params)}


def max_abs_diff(a: dict, b: dict, keys) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in keys)


def cosine_summary(base: dict, adapted: dict, n_layers: int, n_prompts: int) -> dict:
    res = {}
    for pool in ("last", "mean"):
        per_layer = []
        per_prompt = [1.0] * n_prompts
        for L in range(n_layers):
            k = f"{pool}.layer.{L}"
            cos = torch.nn.functional.cosine_similarity(base[k].double(), adapted[k].double(), dim=1)
            per_layer.append(round(float(cos.min()), 6))
            per_prompt = [min(a, float(c)) for a, c in zip(per_prompt, cos)]
        res[pool] = {
            "min_cos_per_layer": per_layer,
            "min_cos_per_prompt": [round(x, 6) for x in per_prompt],
        }
    return res


def key_patterns(st_path: Path) -> list[str]:
    from safetensors import safe_open

    pats: dict[str, set] = {}
    with safe_open(str(st_path), "pt") as f:
        for k in f.keys():
            m = re.match(r"(.*\.layers\.)(\d+)(\..*)", k)
            pat = f"{m.group(1)}{{i}}{m.group(3)}" if m else k
            shape = tuple(f.get_slice(k).get_shape())
            dtype = f.get_slice(k).get_dtype()
            pats.setdefault(f"{pat}  {list(shape)} {dtype}", set()).add(int(m.group(2)) if m else -1)
    return [f"{p}  layers={sorted(v)}" for p, v in sorted(pats.items())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, default=default_models_dir())
    ap.add_argument("--adapters-out", type=Path, default=REPO / "fixtures" / "adapters")
    ap.add_argument("--ref-dir", type=Path, default=REPO / "fixtures" / "reference",
                    help="holds prompts.jsonl and smollm2.safetensors; outputs go here too")
    ap.add_argument("--b-std", type=float, default=0.12, help="std of the random lora_B entries")
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dry-run", action="store_true", help="only print the cosine summary, write nothing")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    import peft
    import safetensors
    import transformers
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    fname = MODELS["smollm2"]
    models_dir = args.models_dir.expanduser()
    gguf_path = models_dir / fname
    if not gguf_path.is_file():
        sys.exit(f"missing {gguf_path}: run scripts/fetch-models.sh first")
    prompts_path = args.ref_dir / "prompts.jsonl"
    prompts = load_prompts(prompts_path)
    base_ref_path = args.ref_dir / "smollm2.safetensors"
    base_ref = load_file(str(base_ref_path))

    tok = AutoTokenizer.from_pretrained(str(models_dir), gguf_file=fname)
    base = AutoModelForCausalLM.from_pretrained(str(models_dir), gguf_file=fname, dtype=torch.float32)
    base.eval()

    base_acts, token_ids, _, n_layers = forward_all(base, tok, prompts)
    layer_keys = [f"{p}.layer.{L}" for p in ("last", "mean") for L in range(n_layers)]
    base_selfcheck = max_abs_diff(base_acts, base_ref, layer_keys)
    print(f"base re-run vs {base_ref_path.name}: max abs diff {base_selfcheck:.3g}", file=sys.stderr)
    assert base_selfcheck < 1e-4, "base activations do not reproduce smollm2.safetensors"

    for name in args.variants:
        spec = VARIANTS[name]
        cfg = LoraConfig(
            task_type="CAUSAL_LM",
            lora_dropout=0.0,
            bias="none",
            base_model_name_or_path=BASE_NAME,
            **spec,
        )
        model = copy.deepcopy(base)
        pm = get_peft_model(model, cfg)
        # get_peft_model overwrites it with the local GGUF directory (model.name_or_path)
        pm.peft_config["default"].base_model_name_or_path = BASE_NAME
        pm.eval()
        info = randomize_lora(pm, args.b_std)
        from peft.tuners.lora import LoraLayer

        scalings = sorted({(n.rsplit(".", 1)[-1], float(m.scaling["default"]), int(m.r["default"]))
                           for n, m in pm.named_modules() if isinstance(m, LoraLayer)})

        acts, tids, next_tok, _ = forward_all(pm, tok, prompts)
        assert tids == token_ids
        cos = cosine_summary(base_ref, acts, n_layers, len(prompts))
        print(f"[{name}] {info['n_params']} lora tensors; (module, scaling, r): {scalings}", file=sys.stderr)
        for pool in ("last", "mean"):
            print(f"[{name}] {pool}: min cos per layer {cos[pool]['min_cos_per_layer']}", file=sys.stderr)
            print(f"[{name}] {pool}: min cos per prompt {cos[pool]['min_cos_per_prompt']}", file=sys.stderr)
        if args.dry_run:
            continue

        adir = args.adapters_out / name
        adir.mkdir(parents=True, exist_ok=True)
        for stale in adir.iterdir():
            stale.unlink()
        pm.save_pretrained(str(adir))
        # PEFT keeps target_modules as a set and dumps it in hash order, which changes from run
        # to run (PYTHONHASHSEED); sort it so that re-running gives byte-identical files. Same
        # formatting as PeftConfigMixin.save_pretrained (indent=2, sort_keys=True).
        cfg_path = adir / "adapter_config.json"
        cfg_doc = json.loads(cfg_path.read_text())
        cfg_doc["target_modules"] = sorted(cfg_doc["target_modules"])
        cfg_path.write_text(json.dumps(cfg_doc, indent=2, sort_keys=True))
        readme = adir / "README.md"
        if readme.exists():
            readme.unlink()
        st = adir / "adapter_model.safetensors"
        os.chmod(st, 0o644)
        os.chmod(adir / "adapter_config.json", 0o644)

        # Reload from disk through PEFT and check it reproduces the in-memory adapter exactly.
        from peft import PeftModel

        reloaded = PeftModel.from_pretrained(copy.deepcopy(base), str(adir))
        reloaded.eval()
        acts_reloaded, _, _, _ = forward_all(reloaded, tok, prompts)
        reload_diff = max_abs_diff(acts, acts_reloaded, layer_keys)
        assert reload_diff == 0.0, reload_diff
        del reloaded

        merged = pm.merge_and_unload()
        merged.eval()
        acts_merged, _, next_tok_merged, _ = forward_all(merged, tok, prompts)
        merge_diff = max_abs_diff(acts, acts_merged, layer_keys)
        merge_rel = max(
            float((acts[k] - acts_merged[k]).abs().max() / acts[k].abs().max()) for k in layer_keys
        )
        print(f"[{name}] merge_and_unload vs unmerged: max abs diff {merge_diff:.3g} "
              f"(max rel-to-layer-max {merge_rel:.3g}); next tokens equal: {next_tok == next_tok_merged}",
              file=sys.stderr)
        # abs diff is ~1e-3 only because SmolLM2 has |x| ~ 1e3 outlier dims; relative it is ~1e-6
        assert merge_rel < 1e-5, (merge_diff, merge_rel)

        adapter_config = json.loads((adir / "adapter_config.json").read_text())
        metadata = {
            "model": "smollm2",
            "adapter": name,
            "adapter_dir": f"fixtures/adapters/{name}",
            "adapter_config": json.dumps(adapter_config, sort_keys=True, separators=(",", ":")),
            "adapter_model_sha256": sha256_file(st),
            "adapter_config_sha256": sha256_file(adir / "adapter_config.json"),
            "application": "unmerged: PEFT LoRA layers in the forward pass, eval(), no_grad, lora_dropout 0",
            "lora_init": f"torch.Generator seed {SEED}, params in sorted name order; "
                         f"A = randn/sqrt(in_features), B = randn*{args.b_std}",
            "effective_scalings": json.dumps([[n, s, r] for n, s, r in scalings]),
            "gguf_file": fname,
            "gguf_sha256": sha256_file(gguf_path),
            "peft": peft.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": _pkg_version("gguf"),
            "safetensors": safetensors.__version__,
            "num_layers": str(n_layers),
            "d_model": str(base.config.hidden_size),
            "num_prompts": str(len(prompts)),
            "prompts_sha256": sha256_file(prompts_path),
            "token_ids": json.dumps(token_ids, separators=(",", ":")),
            "next_token_argmax": json.dumps(next_tok, separators=(",", ":")),
            "layer_definition": "layer L (0-based) = residual stream after decoder block L = hidden_states[L+1]",
            "mean_definition": "mean over all tokens of the prompt, special tokens (BOS) included",
            "last_layer_source": "forward hook on the last decoder block (hidden_states[-1] is post-final-norm)",
            "base_reference": "fixtures/reference/smollm2.safetensors",
            "base_reference_sha256": sha256_file(base_ref_path),
            "base_rerun_max_abs_diff_vs_base_reference": repr(base_selfcheck),
            "cos_vs_base": json.dumps(cos, separators=(",", ":")),
            "min_cos_vs_base_last_per_prompt": json.dumps(cos["last"]["min_cos_per_prompt"]),
            "min_cos_vs_base_mean_per_prompt": json.dumps(cos["mean"]["min_cos_per_prompt"]),
            "merge_and_unload_max_abs_diff": repr(merge_diff),
            "merge_and_unload_max_rel_diff": repr(merge_rel),
            "merge_and_unload_next_token_equal": str(next_tok == next_tok_merged).lower(),
            "reload_from_disk_max_abs_diff": repr(reload_diff),
            "dtype": "float32",
            "device": "cpu",
        }
        out = args.ref_dir / f"{name}.safetensors"
        for k, v in acts.items():
            assert v.dtype == torch.float32 and tuple(v.shape) == (len(prompts), base.config.hidden_size), k
        save_file(acts, str(out), metadata=metadata)
        _canonicalize_safetensors(out)

        print(f"[{name}] wrote {adir}/ and {out}", file=sys.stderr)
        print(f"[{name}] adapter_model.safetensors keys (pattern  shape dtype  layers):")
        for line in key_patterns(st):
            print("   ", line)
        del pm, merged, model


if __name__ == "__main__":
    main()

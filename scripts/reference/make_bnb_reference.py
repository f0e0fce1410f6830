#!/usr/bin/env python3
"""bitsandbytes (NF4 / LLM.int8) serialization fixture for probegate's loader.

Exact command used to produce the committed fixture (from the repository root):

    scripts/reference/setup-venv.sh
    ~/.cache/probegate/pyref/bin/python scripts/reference/make_bnb_reference.py \
        --models-dir ~/.cache/probegate/models --out fixtures/bnb

(The GGUF comes from scripts/fetch-models.sh.) Writes
<out>/bnb_reference.safetensors and <out>/README.md (key table generated from
the written file).

Everything is produced by the REAL bitsandbytes library (pinned in
setup-venv.sh), on the CPU, with the serialization that a transformers model
loaded with load_in_4bit / load_in_8bit gets from model.state_dict():

* 4-bit (Linear4bit._save_to_state_dict):
      <m>.weight                               uint8 [numel/2, 1], packed codes
      <m>.weight.<k> for k, v in quant_state.as_dict(packed=True).items()
  i.e. absmax, quant_map, quant_state.bitsandbytes__nf4 (JSON as uint8 bytes)
  and, with double quant, nested_absmax, nested_quant_map.
* 8-bit (Linear8bitLt._save_to_state_dict, Int8Params quantized from fp16):
      <m>.weight int8 [out, in], <m>.SCB f32 [out], <m>.weight_format uint8 [] (=0, "row")

The tensors are made with bitsandbytes.functional and cross-checked against
the state_dict() of real bnb.nn.Linear4bit / Linear8bitLt modules (identical
keys and bytes), then reloaded from the file with QuantState.from_dict (what
transformers does) and dequantized again.

Modules (both quantized three ways):
    model.layers.0.mlp.rand_proj        [96, 320]  torch.manual_seed(0), N(0, 0.02), 5 entries set to +-0.5
    model.layers.0.self_attn.v_proj     [64, 576]  rows 0..64 of blk.0.attn_v.weight dequantized
                                                    from SmolLM2-135M-Instruct.Q4_1.gguf
    <m>      NF4, blocksize 64, compress_statistics=False
    <m>_dq   NF4, blocksize 64, compress_statistics=True (absmax 8-bit, nested blocksize 256)
    <m>_int8 LLM.int8 row-wise (Int8Params: W.half() -> int8_vectorwise_quant)
Expected values (f32):
    expected.<m>, expected.<m>_dq   bitsandbytes.functional.dequantize_4bit(packed, quant_state)
    expected.<m>_int8               bitsandbytes.functional.int8_vectorwise_dequant(CB, SCB)
    original.model.layers.0.mlp.rand_proj   the f32 input (first matrix only)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference import default_models_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_TENSOR = "blk.0.attn_v.weight"
RAND = "model.layers.0.mlp.rand_proj"
VPROJ = "model.layers.0.self_attn.v_proj"
BLOCKSIZE = 64


def rand_matrix() -> torch.Tensor:
    torch.manual_seed(0)
    w = torch.randn(96, 320, dtype=torch.float32) * 0.02
    idx = torch.randperm(w.numel())[:5]
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])
    w.view(-1)[idx] = 0.5 * signs
    return w.contiguous()


def gguf_matrix(models_dir: Path) -> torch.Tensor:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(models_dir / GGUF_FILE))
    for t in reader.tensors:
        if t.name == GGUF_TENSOR:
            # GGUF ne = [576, 192] (in, out); the numpy array is row-major [out, in].
            assert [int(x) for x in t.shape] == [576, 192], t.shape
            full = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
            assert full.shape == (192, 576), full.shape
            return torch.from_numpy(np.ascontiguousarray(full[:64]))
    raise KeyError(GGUF_TENSOR)


def nf4(module: str, w: torch.Tensor, double_quant: bool, out: dict) -> tuple:
    import bitsandbytes.functional as F
    from bitsandbytes.utils import unpack_tensor_to_dict

    packed, qs = F.quantize_4bit(w, blocksize=BLOCKSIZE, quant_type="nf4", compress_statistics=double_quant)
    sd = {f"{module}.weight": packed}
    for k, v in qs.as_dict(packed=True).items():
        sd[f"{module}.weight.{k}"] = v
    deq = F.dequantize_4bit(packed, qs).to(torch.float32)
    assert deq.shape == w.shape and deq.dtype == torch.float32
    out.update({k: v.detach().clone().contiguous() for k, v in sd.items()})
    out[f"expected.{module}"] = deq.contiguous()
    qs_json = unpack_tensor_to_dict(sd[f"{module}.weight.quant_state.bitsandbytes__nf4"])
    return packed, qs, deq, qs_json, sd


def int8(module: str, w: torch.Tensor, out: dict) -> tuple:
    import bitsandbytes.functional as F

    # Int8Params._quantize: B = data.contiguous().to(device, dtype=torch.float16);
    # CB, SCB, _ = int8_vectorwise_quant(B)
    cb, scb, _ = F.int8_vectorwise_quant(w.contiguous().to(dtype=torch.float16))
    sd = {
        f"{module}.weight": cb,
        f"{module}.SCB": scb,
        f"{module}.weight_format": torch.tensor(0, dtype=torch.uint8),
    }
    deq = F.int8_vectorwise_dequant(cb, scb).to(torch.float32)
    out.update({k: v.detach().clone().contiguous() for k, v in sd.items()})
    out[f"expected.{module}"] = deq.contiguous()
    return cb, scb, deq, sd


def module_state_dict_4bit(w: torch.Tensor, double_quant: bool) -> dict:
    """The real save path: bnb.nn.Linear4bit(...).state_dict() after quantizing on the CPU."""
    import bitsandbytes as bnb

    lin = bnb.nn.Linear4bit(
        w.shape[1], w.shape[0], bias=False, compress_statistics=double_quant, quant_type="nf4", device="meta"
    )
    lin.weight = bnb.nn.Params4bit(
        w.clone(), requires_grad=False, blocksize=BLOCKSIZE, compress_statistics=double_quant,
        quant_type="nf4", module=lin,
    )
    lin = lin.to("cpu")
    return lin.state_dict()


def module_state_dict_8bit(w: torch.Tensor) -> dict:
    import bitsandbytes as bnb

    lin = bnb.nn.Linear8bitLt(w.shape[1], w.shape[0], bias=False, has_fp16_weights=False, device="meta")
    lin.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
    lin = lin.to("cpu")
    return lin.state_dict()


def same_state_dict(prefix: str, ours: dict, theirs: dict) -> None:
    theirs = {prefix + k: v for k, v in theirs.items()}
    assert set(ours) == set(theirs), (sorted(ours), sorted(theirs))
    for k in ours:
        a, b = ours[k], theirs[k]
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), k


def code_indices(w: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """NF4 code index per element (nearest code to w / absmax(block)), flattened."""
    scaled = (w.reshape(-1, BLOCKSIZE) / absmax.view(-1, 1)).clamp(-1, 1).reshape(-1, 1)
    return torch.argmin((scaled - code.view(1, -1)).abs(), dim=-1)


def reload_check(path: Path, modules: list[str]) -> None:
    """Reload the file the way transformers does (QuantState.from_dict) and dequantize again."""
    import bitsandbytes.functional as F
    from safetensors.torch import load_file

    t = load_file(str(path))
    for m in modules:
        for suffix in ("", "_dq"):
            name = m + suffix
            qs_dict = {k[len(name) + len(".weight."):]: v for k, v in t.items() if k.startswith(name + ".weight.")}
            qs = F.QuantState.from_dict(qs_dict, device=torch.device("cpu"))
            deq = F.dequantize_4bit(t[name + ".weight"], qs)
            assert torch.equal(deq, t["expected." + name]), name
        name = m + "_int8"
        deq = F.int8_vectorwise_dequant(t[name + ".weight"], t[name + ".SCB"])
        assert torch.equal(deq, t["expected." + name]), name
    print("reload check: QuantState.from_dict + dequantize_4bit / int8_vectorwise_dequant on the file == expected.*")


def write_readme(out_dir: Path, path: Path, meta: dict) -> None:
    from safetensors import safe_open

    rows = []
    with safe_open(str(path), framework="pt") as f:
        for k in sorted(f.keys()):
            s = f.get_slice(k)
            rows.append(f"| `{k}` | {s.get_dtype()} | {list(s.get_shape())} |")
    size = path.stat().st_size
    text = f"""# bitsandbytes serialization fixture

`bnb_reference.safetensors` ({size} bytes): weights quantized by the real
bitsandbytes {meta['bitsandbytes']} (CPU backend, torch {meta['torch']}) and
serialized exactly as bitsandbytes' `Linear4bit` / `Linear8bitLt`
`_save_to_state_dict` writes them (what transformers saves for a model loaded
with `load_in_4bit` / `load_in_8bit`), plus the f32 values bitsandbytes itself
dequantizes them to (`expected.*`). See the docstring of
`scripts/reference/make_bnb_reference.py` for the details.

Regenerate (from the repository root):

    scripts/reference/setup-venv.sh
    ~/.cache/probegate/pyref/bin/python scripts/reference/make_bnb_reference.py \\
        --models-dir ~/.cache/probegate/models --out fixtures/bnb

Modules (`<m>` = NF4 blocksize 64, `<m>_dq` = NF4 with double quant
(nested blocksize 256), `<m>_int8` = LLM.int8 row-wise, weight cast to fp16 first):

- `{RAND}`: [96, 320], `torch.manual_seed(0)`, N(0, 0.02), 5 entries set to ±0.5
  (`original.{RAND}` is the f32 input).
- `{VPROJ}`: [64, 576], rows 0..64 of `{GGUF_TENSOR}` dequantized from
  `{GGUF_FILE}`.

Expected values: `expected.<m>` / `expected.<m>_dq` =
`bitsandbytes.functional.dequantize_4bit(weight, quant_state)`;
`expected.<m>_int8` = `bitsandbytes.functional.int8_vectorwise_dequant(weight, SCB)`
(= `weight * SCB * 7.874015718698502e-3` in f32). The quant states record
`"dtype": "float32"` (the input was f32; a real transformers checkpoint
usually records `bfloat16` / `float16`).

Safetensors metadata: {json.dumps(meta, sort_keys=True)}

| key | dtype | shape |
|---|---|---|
""" + "\n".join(rows) + "\n"
    (out_dir / "README.md").write_text(text, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=default_models_dir())
    ap.add_argument("--out", type=Path, default=REPO / "fixtures" / "bnb")
    args = ap.parse_args()

    import bitsandbytes
    import bitsandbytes.functional as F
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    mats = {RAND: rand_matrix(), VPROJ: gguf_matrix(args.models_dir)}

    out: dict[str, torch.Tensor] = {}
    out[f"original.{RAND}"] = mats[RAND].clone()
    for m, w in mats.items():
        print(f"== {m}  shape {list(w.shape)}  absmax(W) {w.abs().max().item():.6g}")
        p, qs, deq, qs_json, sd = nf4(m, w, False, out)
        same_state_dict(m + ".", sd, module_state_dict_4bit(w, False))
        print(f"  NF4       quant_state JSON: {json.dumps(qs_json)}")
        print(f"  NF4       max|dequant - W| = {(deq - w).abs().max().item():.6g}   "
              f"mean = {(deq - w).abs().mean().item():.6g}")

        # Nibble order: code index of each element vs the two nibbles of its byte.
        idx = code_indices(w, qs.absmax, qs.code)
        flat = p.reshape(-1)
        hi, lo = (flat >> 4).long(), (flat & 15).long()
        print(f"  nibbles   W.flat[0]={w.reshape(-1)[0].item():.6g} -> code idx {idx[0].item()}; "
              f"packed[0]=0x{flat[0].item():02x}: high={hi[0].item()} low={lo[0].item()}; "
              f"W.flat[1] -> code idx {idx[1].item()}")
        hi_first = torch.equal(idx[0::2], hi) and torch.equal(idx[1::2], lo)
        lo_first = torch.equal(idx[0::2], lo) and torch.equal(idx[1::2], hi)
        print(f"  nibbles   all elements: element 2i in HIGH nibble: {hi_first}; in LOW nibble: {lo_first}")
        assert hi_first

        pd, qsd, deqd, qsd_json, sdd = nf4(m + "_dq", w, True, out)
        same_state_dict(m + "_dq.", sdd, module_state_dict_4bit(w, True))
        assert torch.equal(pd, p), "packed codes differ between plain and double quant"
        print(f"  NF4+DQ    quant_state JSON: {json.dumps(qsd_json)}")
        absmax_dq = F.dequantize_blockwise(qsd.absmax, qsd.state2) + qsd.offset
        print(f"  NF4+DQ    absmax: {qs.absmax.numel()} blocks, nested_absmax {list(qsd.state2.absmax.shape)}, "
              f"offset {qsd.offset.item():.9g}; max|absmax_dq - absmax| = "
              f"{(absmax_dq - qs.absmax).abs().max().item():.6g} "
              f"(rel {((absmax_dq - qs.absmax).abs() / qs.absmax).max().item():.4g})")
        print(f"  NF4+DQ    max|dequant - W| = {(deqd - w).abs().max().item():.6g}; "
              f"max|dequant_dq - dequant| = {(deqd - deq).abs().max().item():.6g}")

        cb, scb, deq8, sd8 = int8(m + "_int8", w, out)
        same_state_dict(m + "_int8.", sd8, module_state_dict_8bit(w))
        manual = cb.float() * scb.view(-1, 1) * 7.874015718698502e-3
        print(f"  INT8      SCB[:3] {scb[:3].tolist()}; max|dequant - W| = {(deq8 - w).abs().max().item():.6g}; "
              f"dequant == CB*SCB*7.874015718698502e-3: {torch.equal(manual, deq8)}; "
              f"max|dequant - CB*SCB/127| = {(cb.float() * scb.view(-1, 1) / 127.0 - deq8).abs().max().item():.3g}")

    meta = {
        "bitsandbytes": bitsandbytes.__version__,
        "torch": torch.__version__,
        "generated_by": "scripts/reference/make_bnb_reference.py",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bnb_reference.safetensors"
    save_file(out, str(path), metadata=meta)
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(out)} tensors)")
    reload_check(path, list(mats))
    write_readme(args.out, path, meta)
    print(f"wrote {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

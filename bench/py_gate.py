#!/usr/bin/env python3
"""Reference Python pipeline for probegate's whole-gate benchmark: the work
`probegate check --full` does, written the way a user would with the Python
stack (transformers + peft for activations, scikit-learn for metrics and the
ridge map, numpy/scipy for the rest).

Usage (venv from scripts/reference/setup-venv.sh; bench/gate.sh runs it side
by side with probegate):

    ~/.cache/probegate/pyref/bin/python bench/py_gate.py \
        --base ~/.cache/probegate/models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --adapter fixtures/zoo/smollm2-lora-r8-attn-support \
        --monitors monitors/smollm2 --data data/suite \
        --corpus data/realign/corpus.jsonl --threads 2

Stages, as probegate runs them (src/gate/mod.rs) under policies/default.toml:
  1. diff: every adapted weight's delta (scale * B @ A) against the base
     weight: relative Frobenius change, cosine, top singular values by
     randomized SVD, stable rank.
  2. features: the realignment corpus (first 600 prompts) through base and
     candidate at every monitor block; per monitor activation cosine,
     projected mean shift, KS statistic of scores, decision flip rate.
  3. revalidation: every concept's labeled test set through the candidate;
     per monitor AUROC with a 1000-resample bootstrap interval, balanced
     accuracy, TPR and FPR at the monitor's threshold; stale by the policy's
     limits.
  4. realignment for stale monitors: the concept's training texts (unlabeled)
     through both models, appended to the corpus pairs; mean shift, CORAL,
     ridge and Procrustes fitted on 80%, chosen by held-out logit error,
     refitted on all, verified on the labeled test activations.
  5. recalibration for monitors still stale: 60 labeled training examples
     through the candidate, threshold chosen for max balanced accuracy,
     verified.
Base-side activations are computed, not cached (probegate caches them; the
benchmark reports probegate both with a cold and a warm cache).

Prints one JSON line: per-stage seconds, total, and per-monitor results.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

MAX_DROP, MIN_AUROC, MAX_BA_DROP, MAX_FPR_UP, MAX_TPR_DROP = 0.05, 0.80, 0.05, 0.05, 0.10


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, type=Path)
    ap.add_argument("--adapter", required=True, type=Path)
    ap.add_argument("--monitors", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--corpus", required=True, type=Path)
    ap.add_argument("--max-prompts", type=int, default=600)
    ap.add_argument("--recal-labels", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    a = ap.parse_args()

    t_all = time.perf_counter()
    import numpy as np
    import torch
    from peft import PeftModel
    from safetensors.numpy import load_file
    from scipy.stats import ks_2samp
    from sklearn.linear_model import Ridge
    from sklearn.metrics import roc_auc_score
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(a.threads)
    secs: dict[str, float] = {}
    t = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(a.base.parent), gguf_file=a.base.name)
    base = AutoModelForCausalLM.from_pretrained(str(a.base.parent), gguf_file=a.base.name, dtype=torch.float32).eval()
    cand_m = AutoModelForCausalLM.from_pretrained(str(a.base.parent), gguf_file=a.base.name, dtype=torch.float32).eval()
    cand = PeftModel.from_pretrained(cand_m, str(a.adapter)).eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    secs["load"] = time.perf_counter() - t

    # Monitors: folded weights w' = w / std, b' = b - mean . w'.
    mons = []
    for d in sorted(p for p in a.monitors.iterdir() if (p / "monitor.json").is_file()):
        meta = json.loads((d / "monitor.json").read_text())
        ten = load_file(str(d / "monitor.safetensors"))
        w = ten["w"].astype(np.float64) / ten["std"].astype(np.float64)
        b = meta["classifier"]["bias"] - float(ten["mean"].astype(np.float64) @ w)
        mons.append({"name": meta["name"], "concept": meta["concept"], "layer": meta["hook"]["layer"],
                     "pool": meta["pooling"], "w": w, "b": b, "thr": meta["classifier"]["threshold"],
                     "base": meta["base_metrics"]})
    layers = sorted({m["layer"] for m in mons})
    pools = sorted({m["pool"] for m in mons})

    def decoder(model):
        """The bare decoder stack (no LM head), under peft's wrapper if any."""
        m = model.get_base_model() if hasattr(model, "get_base_model") else model
        return m.model

    def acts(model, texts: list[str]) -> dict[tuple[str, int], np.ndarray]:
        """Pooled residual-stream activations after each monitor block.

        The work an expert would do, as probegate does: the decoder stack cut
        after the deepest monitor block (see `truncate` below), no LM head,
        block outputs read by forward hooks (hidden_states' last entry would be
        post-final-norm)."""
        out: dict[tuple[str, int], list[np.ndarray]] = {(p, l): [] for p in pools for l in layers}
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        rows: dict[int, dict] = {}
        dec = decoder(model)
        hs: dict[int, torch.Tensor] = {}
        hooks = [dec.layers[l].register_forward_hook(
            lambda mod, inp, o, l=l: hs.__setitem__(l, o[0] if isinstance(o, tuple) else o)) for l in layers]
        try:
            with torch.no_grad():
                for s in range(0, len(order), a.batch_size):
                    idx = order[s:s + a.batch_size]
                    enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True)
                    dec(**enc, use_cache=False)
                    mask = enc["attention_mask"].unsqueeze(-1).float()
                    last = enc["attention_mask"].sum(1) - 1
                    for j, i in enumerate(idx):
                        rows[i] = {}
                        for l in layers:
                            h = hs[l][j]
                            if "last" in pools:
                                rows[i][("last", l)] = h[last[j]].numpy()
                            if "mean" in pools:
                                rows[i][("mean", l)] = ((h * mask[j]).sum(0) / mask[j].sum()).numpy()
        finally:
            for hk in hooks:
                hk.remove()
        return {k: np.stack([rows[i][k] for i in range(len(texts))]).astype(np.float64) for k in out}

    def truncate(model):
        """Blocks past the deepest monitor are never read: drop them."""
        dec = decoder(model)
        dec.layers = dec.layers[: max(layers) + 1]

    # 1. diff
    t = time.perf_counter()
    diff = []
    sd = {k: v for k, v in cand.named_parameters() if "lora_A" in k}
    for k, A in sd.items():
        B = dict(cand.named_parameters())[k.replace("lora_A", "lora_B")]
        mod_name = k.split(".lora_A")[0]
        mod = cand.get_submodule(mod_name)
        scale = mod.scaling["default"]
        W = mod.base_layer.weight.detach()
        dW = scale * (B.detach() @ A.detach())
        fro, wn = float(dW.norm()), float(W.norm())
        u, s, v = torch.svd_lowrank(dW, q=8)
        cos = float((W * (W + dW)).sum() / (wn * float((W + dW).norm())))
        diff.append({"tensor": mod_name, "rel": fro / wn, "cos": cos, "top_sv": s[:4].tolist(),
                     "stable_rank": float(fro ** 2 / max(float(s[0]) ** 2, 1e-30))})
    secs["diff"] = time.perf_counter() - t
    truncate(base)
    truncate(cand)

    # 2. features on the corpus
    t = time.perf_counter()
    corpus = [r["text"] for r in read_jsonl(a.corpus)][: a.max_prompts]
    cb, cc = acts(base, corpus), acts(cand, corpus)

    def logits(m, x):
        return x @ m["w"] + m["b"]

    def sig(z):
        return 1.0 / (1.0 + np.exp(-z))

    feats = {}
    for m in mons:
        xb, xc = cb[(m["pool"], m["layer"])], cc[(m["pool"], m["layer"])]
        cosv = float(np.mean(np.sum(xb * xc, 1) / (np.linalg.norm(xb, axis=1) * np.linalg.norm(xc, axis=1))))
        zb, zc = logits(m, xb), logits(m, xc)
        tl = math.log(m["thr"] / (1 - m["thr"]))
        feats[m["name"]] = {"act_cosine": cosv, "projected_shift": float((zc.mean() - zb.mean()) / zb.std()),
                            "score_ks": float(ks_2samp(sig(zb), sig(zc)).statistic),
                            "flip_rate": float(np.mean((zb > tl) != (zc > tl)))}
    secs["features"] = time.perf_counter() - t

    # 3. revalidation
    t = time.perf_counter()
    rng = np.random.default_rng(20261127)

    def evaluate(m, scores, labels, thr):
        auroc = roc_auc_score(labels, scores)
        boots = []
        n = len(labels)
        for _ in range(1000):
            i = rng.integers(0, n, n)
            if labels[i].min() != labels[i].max():
                boots.append(roc_auc_score(labels[i], scores[i]))
        pred = scores >= thr
        tpr = float(np.mean(pred[labels == 1]))
        fpr = float(np.mean(pred[labels == 0]))
        return {"auroc": float(auroc), "ci": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
                "ba": (tpr + 1 - fpr) / 2, "tpr": tpr, "fpr": fpr}

    def stale(m, e):
        b = m["base"]
        return (e["auroc"] - b["auroc"] <= -MAX_DROP or e["auroc"] < MIN_AUROC
                or b["balanced_accuracy"] - e["ba"] > MAX_BA_DROP or e["fpr"] - b["fpr"] > MAX_FPR_UP
                or b["tpr"] - e["tpr"] > MAX_TPR_DROP)

    results, test_acts = {}, {}
    for concept in sorted({m["concept"] for m in mons}):
        rows = read_jsonl(a.data / concept / "test.jsonl")
        labels = np.array([r["label"] for r in rows])
        x = acts(cand, [r["text"] for r in rows])
        test_acts[concept] = (x, labels)
        for m in (m for m in mons if m["concept"] == concept):
            s = sig(logits(m, x[(m["pool"], m["layer"])]))
            e = evaluate(m, s, labels, m["thr"])
            results[m["name"]] = {"eval": e, "stale": stale(m, e), "delta_auroc": e["auroc"] - m["base"]["auroc"]}
    secs["revalidation"] = time.perf_counter() - t

    # 4. realignment, 5. recalibration
    t = time.perf_counter()

    def fit(method, xc, xb):
        mc, mb = xc.mean(0), xb.mean(0)
        c0, b0 = xc - mc, xb - mb
        d, n = xc.shape[1], len(xc)
        if method == "mean_shift":
            A = np.eye(d)
        elif method == "coral":
            sc, sb = c0.T @ c0 / n, b0.T @ b0 / n
            sc += np.eye(d) * (np.trace(sc) / d * 0.1 + 1e-9)
            sb += np.eye(d) * (np.trace(sb) / d * 0.1 + 1e-9)
            ec, vc = np.linalg.eigh(sc)
            eb, vb = np.linalg.eigh(sb)
            A = (vc @ np.diag(np.maximum(ec, 1e-12) ** -0.5) @ vc.T) @ (vb @ np.diag(np.maximum(eb, 0) ** 0.5) @ vb.T)
        elif method == "ridge":
            lam = np.trace(c0.T @ c0) / d * 0.1 + 1e-9
            A = Ridge(alpha=lam, fit_intercept=False).fit(c0, b0).coef_.T
        else:
            u, _, vt = np.linalg.svd(c0.T @ b0)
            A = u @ vt
        return A, mb - mc @ A

    # A concept's training texts go through each model once, for all its monitors' blocks.
    trains: dict[str, tuple[list[dict], dict, dict]] = {}
    for name, r in results.items():
        if not r["stale"]:
            continue
        m = next(m for m in mons if m["name"] == name)
        key = (m["pool"], m["layer"])
        if m["concept"] not in trains:
            rows = read_jsonl(a.data / m["concept"] / "train.jsonl")
            texts = [x["text"] for x in rows]
            trains[m["concept"]] = (rows, acts(base, texts), acts(cand, texts))
        tb, tc = trains[m["concept"]][1][key], trains[m["concept"]][2][key]
        xb, xc = np.vstack([cb[key], tb]), np.vstack([cc[key], tc])
        k = round(len(xc) * 0.8)
        zb = logits(m, xb[k:])
        var = max(zb.var(), 1e-12)
        best = None
        for method in ["mean_shift", "coral", "ridge", "procrustes"]:
            A, c = fit(method, xc[:k], xb[:k])
            err = float(np.mean((logits(m, xc[k:] @ A + c) - zb) ** 2) / var)
            if best is None or err < best[0]:
                best = (err, method)
        ident = float(np.mean((logits(m, xc[k:]) - zb) ** 2) / var)
        r["realignment"] = {"method": best[1], "heldout_error": best[0], "identity_error": ident}
        if best[0] < ident:
            A, c = fit(best[1], xc, xb)
            x, labels = test_acts[m["concept"]]
            e = evaluate(m, sig(logits(m, x[key] @ A + c)), labels, m["thr"])
            r["realignment"]["after"] = e
            if not stale(m, e):
                r["rung"] = "realignment"
                continue
        # 5. recalibration on a few labeled training examples
        few = trains[m["concept"]][0][: a.recal_labels]
        xr = trains[m["concept"]][2][key][: a.recal_labels]
        yr = np.array([x["label"] for x in few])
        sr = sig(logits(m, xr))
        cands = np.unique(sr)
        bas = [((sr[yr == 1] >= th).mean() + (sr[yr == 0] < th).mean()) / 2 for th in cands]
        thr = float(cands[int(np.argmax(bas))])
        x, labels = test_acts[m["concept"]]
        e = evaluate(m, sig(logits(m, x[key])), labels, thr)
        r["recalibration"] = {"threshold": thr, "after": e}
        r["rung"] = "recalibration" if not stale(m, e) else "none"
    secs["realignment"] = time.perf_counter() - t
    secs["total"] = time.perf_counter() - t_all
    print(json.dumps({"peer": "python (transformers+peft, scikit-learn)", "torch": torch.__version__,
                      "threads": a.threads, "seconds": secs, "corpus_prompts": len(corpus),
                      "monitors": {k: {"delta_auroc": v["delta_auroc"], "stale": v["stale"],
                                       "rung": v.get("rung", "none" if v["stale"] else "healthy")}
                                   for k, v in results.items()},
                      "diff_tensors": len(diff), "features": feats}))


if __name__ == "__main__":
    main()

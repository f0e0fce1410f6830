#!/usr/bin/env python3
"""Reference token ids for probegate's GGUF tokenizer (src/tokenizer/mod.rs).

Writes, under fixtures/reference/:
  tokenizer_sample.jsonl   the sample texts, one JSON object a line: {"i", "source", "text"}
  tokens-smollm2.json      {"transformers", "tokenizers", "model_file", "add_bos", "ids": [[...], ...]}
  tokens-gemma3.json       same, for Gemma 3; "ids" are in sample order

The ids are what Hugging Face transformers produces when it builds the tokenizer from the GGUF
file itself, with no tokenizer.json:

    tok = AutoTokenizer.from_pretrained(models_dir, gguf_file=name)
    tok(text)["input_ids"]            # add_special_tokens=True (the default)

Pinned versions this reference was generated with (the output records them too):
    transformers==5.24.0  tokenizers==0.23.3  gguf==0.19.0  sentencepiece==0.2.3
    protobuf==7.36.2  numpy==2.4.6   (Python 3.11)

No torch is needed. transformers 5.x imports torch at the top of its GGUF reader (for tensor
dtypes only) and refuses non-"fast-config" architectures without torch; neither touches the
tokenizer. This script therefore installs a do-nothing `torch` stand-in module *after*
transformers is imported (so transformers still reports torch as absent), and lets the legacy
config path through. The tokenizer is built by transformers' own
integrations/gguf/gguf_tokenizer_mapping.py, unchanged.

Setup (once):
    python3 -m venv ~/.cache/probegate/toktest-venv
    ~/.cache/probegate/toktest-venv/bin/pip install transformers==5.24.0 tokenizers==0.23.3 \
        gguf==0.19.0 sentencepiece==0.2.3 protobuf==7.36.2
    scripts/fetch-models.sh
Run from the repository root:
    ~/.cache/probegate/toktest-venv/bin/python scripts/reference/make_token_reference.py

Sample texts: the first 30 prompts of XSTest (shared/datasets/xstest/xstest_prompts.csv,
column "prompt"), by Paul Röttger et al., "XSTest: A Test Suite for Identifying Exaggerated
Safety Behaviours in Large Language Models" (NAACL 2024), licensed CC-BY-4.0
(https://creativecommons.org/licenses/by/4.0/), used here unmodified; followed by hand-written
strings that stress tokenizer edge cases. The empty string is deliberately not included.
"""

import csv
import json
import os
import sys
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PROBEGATE_CACHE", Path.home() / ".cache" / "probegate"))
MODELS = CACHE / "models"
OUT = ROOT / "fixtures" / "reference"


def _find_xstest() -> Path:
    candidates = [
        ROOT / "shared" / "datasets" / "xstest" / "xstest_prompts.csv",
        ROOT.parent / "shared" / "datasets" / "xstest" / "xstest_prompts.csv",
    ]
    for c in candidates:
        if c.is_file():
            return c
    sys.exit(f"make_token_reference: xstest_prompts.csv not found in {[str(c) for c in candidates]}")


def _install_torch_stub() -> None:
    """A `torch` module whose every attribute is an inert placeholder (see module docstring)."""
    if "torch" in sys.modules:
        return

    class _Any:
        def __init__(self, name="torch"):
            self._n = name

        def __getattr__(self, k):
            if k.startswith("__"):
                raise AttributeError(k)
            return _Any(self._n + "." + k)

        def __call__(self, *a, **k):
            if len(a) == 1 and callable(a[0]) and not k:  # used as a decorator
                return a[0]
            return _Any(self._n + "()")

        def __getitem__(self, k):
            return self

        def __or__(self, o):
            return self

        __ror__ = __or__

        def __mro_entries__(self, bases):
            return (object,)

    class _Mod(types.ModuleType):
        def __getattr__(self, k):
            if k.startswith("__"):
                raise AttributeError(k)
            return _Any("torch." + k)

    sys.modules["torch"] = _Mod("torch")
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    gguf_utils.is_torch_available = lambda: True  # config path only; no tensor is loaded


TRICKY = [
    "1234567890",
    " 1234567890",
    "  123",
    "x  1 and 22  333",
    "Pi is 3.14159, e is 2.71828; 10,000,000 people paid $1,234.56.",
    "I \u2764\ufe0f Rust \U0001f980\U0001f680!",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family emoji \U0001f44d\U0001f3fd",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u8fd9\u662f\u4e00\u4e2a\u6d4b\u8bd5\u3002",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\ud55c\uad6d\uc5b4 \ubb38\uc7a5",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m se\u00f1or \u00fcber Stra\u00dfe",
    "  leading spaces",
    "trailing spaces   ",
    " ",
    "   ",
    "a     b      c",
    "\tindented\t\twith tabs\t",
    "line one\nline two\nline three",
    "\n\n",
    "paragraph\n\n\nnext paragraph\n",
    "windows\r\nline endings\r\n",
    "def square(x):\n    return x ** 2  # comment\n\nprint(square(12))",
    'fn main() { let v: Vec<u32> = (0..10).collect(); println!("{:?}", v); }',
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "<bos>already has a bos",
    "text<|endoftext|>more text",
    "Don't you'll we've I'M THEY'RE can't",
    "https://example.com/path?query=a&b=c#frag HTTP/1.1 200 OK",
    "non\u00a0breaking\u2003em space\u3000ideographic",
    "zero\u200bwidth\u200cjoiners",
    "\U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522 fraktur and \uff46\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48",
    "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea \u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u03b5\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "bell\x07 and null\x00 control chars",
]


def load_samples():
    with open(_find_xstest(), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    samples = [{"source": "xstest", "text": r["prompt"]} for r in rows[:30]]
    samples += [{"source": "tricky", "text": t} for t in TRICKY]
    assert all(s["text"] != "" for s in samples)
    for i, s in enumerate(samples):
        s["i"] = i
    return samples


def main():
    _install_torch_stub()
    samples = load_samples()
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "tokenizer_sample.jsonl", "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps({"i": s["i"], "source": s["source"], "text": s["text"]}, ensure_ascii=False) + "\n")

    for key, name in [("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"), ("gemma3", "gemma-3-270m-q4_k_m.gguf")]:
        if not (MODELS / name).is_file():
            sys.exit(f"make_token_reference: {MODELS / name} missing; run scripts/fetch-models.sh")
        tok = AutoTokenizer.from_pretrained(str(MODELS), gguf_file=name)
        ids = [tok(s["text"])["input_ids"] for s in samples]
        out = {
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "model_file": name,
            "tokenizer_class": type(tok).__name__,
            "add_bos": bool(getattr(tok, "add_bos_token", False)),
            "bos_token": tok.bos_token,
            "eos_token": tok.eos_token,
            "ids": ids,
        }
        with open(OUT / f"tokens-{key}.json", "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=False)
            f.write("\n")
        print(f"{key}: {len(ids)} samples, add_bos={out['add_bos']}, class={out['tokenizer_class']}")


if __name__ == "__main__":
    main()

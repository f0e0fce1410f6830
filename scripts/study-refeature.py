#!/usr/bin/env python3
"""Adds features a newer probegate computes to a committed grid's rows.

    scripts/study-refeature.py MODEL [STUDY_DIR]     (STUDY_DIR: study/v2)

A grid condition costs minutes; its pre-deployment features cost seconds
(`probegate risk --format json`, with the activations cached). When a feature
is added, this recomputes the features of every condition in
STUDY_DIR/history-MODEL.jsonl and writes the new ones into the history rows
and into each condition's report.json. It refuses (exit 2) if any feature
the row already had comes out different: then the binary measures something
else than the grid did, and the grid must be rerun, not patched. Outcomes
are never touched.

  PROBEGATE        the binary (default: target/release/probegate)
  PROBEGATE_CACHE  where the zoo is (default: ~/.cache/probegate)
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    model = sys.argv[1]
    root = Path(__file__).resolve().parent.parent
    study = Path(sys.argv[2]) if len(sys.argv) == 3 else root / "study" / "v2"
    pg = os.environ.get("PROBEGATE", str(root / "target" / "release" / "probegate"))
    cache = Path(os.environ.get("PROBEGATE_CACHE", Path.home() / ".cache" / "probegate"))
    manifest = json.loads((cache / "zoo" / model / "zoo.json").read_text())
    refs = {"identical": manifest["base"]}
    refs.update({c["name"]: c["reference"] for c in manifest["conditions"]})
    hist = study / f"history-{model}.jsonl"
    rows = [json.loads(line) for line in hist.read_text().splitlines() if line.strip()]
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    new = {}
    for c in conditions:
        if c not in refs:
            print(f"{hist}: condition `{c}` is not in the zoo's manifest", file=sys.stderr)
            return 2
        out = subprocess.run(
            [pg, "risk", "--base", manifest["base"], "--candidate", refs[c],
             "--monitors", str(root / "monitors" / model), "--format", "json", "--quiet"],
            check=True, capture_output=True, text=True,
        ).stdout
        # Numbers stay as the binary wrote them, so what is added is written
        # byte for byte as probegate writes it and old values compare exactly.
        new[c] = {f["monitor"]: f for f, _ in json.loads(out, parse_float=str)}
        print(f"{model} / {c}: {len(new[c])} monitors", file=sys.stderr)

    def added(where: str, old: str, fresh: dict) -> list:
        """The (key, JSON value) pairs `fresh` adds to the flat object `old`."""
        have = json.loads(old, parse_float=str)
        for k, v in have.items():
            if fresh.get(k) != v:
                raise SystemExit(f"{where}: feature `{k}` was {v!r}, now {fresh.get(k)!r}; rerun the grid")
        return [(k, v if isinstance(v, str) and k not in ("monitor", "concept", "family") else json.dumps(v))
                for k, v in fresh.items() if k not in have]

    # Edited as text: a flat "features" object gains keys before its brace,
    # and nothing else in the file is rewritten.
    flat = re.compile(r'("features":\s*)(\{[^{}]*\})')
    lines = hist.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        r = json.loads(line)
        m = flat.search(line)
        extra = added(f"{hist}:{i + 1}", m.group(2), new[r["condition"]][r["features"]["monitor"]])
        body = m.group(2)[:-1] + "".join(f',"{k}":{v}' for k, v in extra) + "}"
        lines[i] = line[: m.start(2)] + body + line[m.end(2):]
    hist.write_text("".join(lines))
    for c in conditions:
        path = study / f"reports-{model}" / c / "report.json"
        if not path.exists():
            continue
        text = path.read_text()

        def patch(m: re.Match) -> str:
            obj = m.group(2)
            name = json.loads(obj)["monitor"]
            extra = added(f"{path} {name}", obj, new[c][name])
            close = obj.rindex("\n")
            indent = re.search(r"\n(\s*)\S", obj).group(1)
            return m.group(1) + obj[:close] + "".join(f',\n{indent}"{k}": {v}' for k, v in extra) + obj[close:]

        path.write_text(flat.sub(patch, text))
    print(f"{hist}: {len(rows)} rows of {len(conditions)} conditions refeatured", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

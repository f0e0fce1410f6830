#!/usr/bin/env python3
"""How much of a concept's label the surface explains (standard library only).

For each concept directory (DIR/<concept>/{train,test}.jsonl) prints, on the test split:
  token (train-chosen): AUROC of "contains token t" for the single token t (lower-cased word)
                        with the best AUROC on the train split, either direction;
  token (test oracle):  the best single token chosen on the test split itself (an upper bound);
  bag-of-words LR:      logistic regression on binary word unigrams+bigrams seen in train,
                        L2 1e-3, 40 epochs of deterministic SGD (lr 0.5/sqrt(t)), scored on test.
A probe's AUROC near these numbers says little beyond the words in the text.

    python3 scripts/data/surface_baselines.py data/suite ~/.cache/probegate/data/real
"""
import json, math, os, random, re, sys


def toks(t):
    return re.findall(r"[a-z0-9']+", t.lower())


def feats(t):
    w = toks(t)
    return set(w) | {a + " " + b for a, b in zip(w, w[1:])}


def auroc(scores, labels):
    pairs = sorted(zip(scores, labels))
    ranks, i = [0.0] * len(pairs), 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    npos = sum(l for _, l in pairs)
    nneg = len(pairs) - npos
    if npos == 0 or nneg == 0:
        return float("nan")
    s = sum(r for r, (_, l) in zip(ranks, pairs) if l == 1)
    return (s - npos * (npos + 1) / 2) / (npos * nneg)


def token_auroc(tok, sets, labels):
    a = auroc([1 if tok in s else 0 for s in sets], labels)
    return max(a, 1 - a)


def best_token(sets, labels):
    vocab = sorted(set().union(*sets))
    return max(vocab, key=lambda t: (token_auroc(t, sets, labels), t))


def logreg(train, test, epochs=40, l2=1e-3, seed=0):
    vocab = sorted(set().union(*[f for f, _ in train]))
    w = {f: 0.0 for f in vocab}
    b = 0.0
    order = list(range(len(train)))
    rng = random.Random(seed)
    step = 0
    for _ in range(epochs):
        rng.shuffle(order)
        for i in order:
            f, y = train[i]
            step += 1
            lr = 0.5 / math.sqrt(step / len(train) + 1)
            z = b + sum(w[x] for x in f)
            p = 1 / (1 + math.exp(-max(-30, min(30, z))))
            g = p - y
            b -= lr * g
            for x in f:
                w[x] -= lr * (g + l2 * w[x])
    return [b + sum(w.get(x, 0.0) for x in f) for f, _ in test]


def load(path):
    rows = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def main():
    print("| set | concept | train | test | best token (chosen on train) | its test AUROC | best token on test (oracle) | oracle AUROC | bag-of-words LR test AUROC |")
    print("| --- | --- | ---: | ---: | --- | ---: | --- | ---: | ---: |")
    for root in sys.argv[1:]:
        for c in sorted(os.listdir(root)):
            d = os.path.join(root, c)
            if not os.path.isfile(os.path.join(d, "test.jsonl")):
                continue
            xtr, ytr = load(os.path.join(d, "train.jsonl"))
            xte, yte = load(os.path.join(d, "test.jsonl"))
            s_tr = [set(toks(t)) for t in xtr]
            s_te = [set(toks(t)) for t in xte]
            t = best_token(s_tr, ytr)
            a = auroc([1 if t in s else 0 for s in s_te], yte)
            sign = auroc([1 if t in s else 0 for s in s_tr], ytr) >= 0.5
            a = a if sign else 1 - a
            to = best_token(s_te, yte)
            ao = token_auroc(to, s_te, yte)
            lr = auroc(logreg([(feats(x), y) for x, y in zip(xtr, ytr)], [(feats(x), y) for x, y in zip(xte, yte)]), yte)
            label = os.path.basename(os.path.normpath(root))
            print(f"| {label} | `{c}` | {len(xtr)} | {len(xte)} | `{t}` | {a:.3f} | `{to}` | {ao:.3f} | {lr:.3f} |", flush=True)


if __name__ == "__main__":
    main()

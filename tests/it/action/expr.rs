//! A subset of GitHub's expression language, evaluated as the runner does;
//! anything outside it fails the test rather than being guessed.

use serde_json::{json, Value};

/// A value in GitHub's expression language (objects are read from JSON contexts).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum V {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

impl V {
    pub(super) fn truthy(&self) -> bool {
        match self {
            V::Null => false,
            V::Bool(b) => *b,
            V::Num(n) => *n != 0.0 && !n.is_nan(),
            V::Str(s) => !s.is_empty(),
        }
    }
    pub(super) fn text(&self) -> String {
        match self {
            V::Null => String::new(),
            V::Bool(b) => b.to_string(),
            V::Num(n) => n.to_string(),
            V::Str(s) => s.clone(),
        }
    }
    pub(super) fn num(&self) -> f64 {
        match self {
            V::Null => 0.0,
            V::Bool(b) => *b as u8 as f64,
            V::Num(n) => *n,
            V::Str(s) if s.trim().is_empty() => 0.0,
            V::Str(s) => s.trim().parse().unwrap_or(f64::NAN),
        }
    }
    /// GitHub's loose equality: strings compare ignoring case; mixed types compare as numbers.
    pub(super) fn loose_eq(&self, o: &V) -> bool {
        match (self, o) {
            (V::Str(a), V::Str(b)) => a.eq_ignore_ascii_case(b),
            (V::Null, V::Null) => true,
            (V::Bool(a), V::Bool(b)) => a == b,
            _ => self.num() == o.num(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Str(String),
    Num(f64),
    Ident(String),
    Op(&'static str),
}

pub(super) fn lex(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                assert!(i < c.len(), "unterminated string in `{src}`");
                if c[i] == '\'' {
                    if c.get(i + 1) == Some(&'\'') {
                        s.push('\'');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                s.push(c[i]);
                i += 1;
            }
            out.push(Tok::Str(s));
        } else if ch.is_ascii_digit() {
            let start = i;
            while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                i += 1;
            }
            let s: String = c[start..i].iter().collect();
            out.push(Tok::Num(s.parse().unwrap()));
        } else if ch.is_ascii_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || matches!(c[i], '_' | '-' | '.')) {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            let op = match two.as_str() {
                "==" => "==",
                "!=" => "!=",
                "&&" => "&&",
                "||" => "||",
                _ => match ch {
                    '!' => "!",
                    '(' => "(",
                    ')' => ")",
                    _ => panic!("unsupported character {ch:?} in expression `{src}`"),
                },
            };
            i += op.len();
            out.push(Tok::Op(op));
        }
    }
    out
}

/// What an expression can see: the contexts, and whether an earlier step failed.
pub(super) struct Ctx<'a> {
    pub(super) contexts: &'a Value,
    pub(super) failed: bool,
}

pub(super) struct Parser<'a, 'b> {
    pub(super) toks: Vec<Tok>,
    pub(super) pos: usize,
    pub(super) ctx: &'a Ctx<'b>,
    pub(super) src: &'a str,
    /// A status function (always/success/failure) appeared, so no implicit success().
    pub(super) status_fn: bool,
}

impl Parser<'_, '_> {
    pub(super) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    pub(super) fn eat(&mut self, op: &str) -> bool {
        if self.peek()
            == Some(&Tok::Op(match op {
                "==" => "==",
                "!=" => "!=",
                "&&" => "&&",
                "||" => "||",
                "!" => "!",
                "(" => "(",
                _ => ")",
            }))
        {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    pub(super) fn or(&mut self) -> V {
        let mut l = self.and();
        while self.eat("||") {
            let r = self.and();
            l = if l.truthy() { l } else { r };
        }
        l
    }
    pub(super) fn and(&mut self) -> V {
        let mut l = self.cmp();
        while self.eat("&&") {
            let r = self.cmp();
            l = if l.truthy() { r } else { l };
        }
        l
    }
    pub(super) fn cmp(&mut self) -> V {
        let l = self.unary();
        if self.eat("==") {
            let r = self.unary();
            return V::Bool(l.loose_eq(&r));
        }
        if self.eat("!=") {
            let r = self.unary();
            return V::Bool(!l.loose_eq(&r));
        }
        l
    }
    pub(super) fn unary(&mut self) -> V {
        if self.eat("!") {
            return V::Bool(!self.unary().truthy());
        }
        self.primary()
    }
    pub(super) fn primary(&mut self) -> V {
        let t = self.peek().cloned();
        self.pos += 1;
        match t {
            Some(Tok::Str(s)) => V::Str(s),
            Some(Tok::Num(n)) => V::Num(n),
            Some(Tok::Op("(")) => {
                let v = self.or();
                assert!(self.eat(")"), "missing ) in `{}`", self.src);
                v
            }
            Some(Tok::Ident(id)) if id == "true" => V::Bool(true),
            Some(Tok::Ident(id)) if id == "false" => V::Bool(false),
            Some(Tok::Ident(id)) if id == "null" => V::Null,
            Some(Tok::Ident(id)) if self.peek() == Some(&Tok::Op("(")) => {
                self.pos += 1;
                assert!(
                    self.eat(")"),
                    "only argument-less functions: `{}`",
                    self.src
                );
                self.status_fn = true;
                match id.as_str() {
                    "always" => V::Bool(true),
                    "success" => V::Bool(!self.ctx.failed),
                    "failure" => V::Bool(self.ctx.failed),
                    "cancelled" => V::Bool(false),
                    _ => panic!("unsupported function {id}() in `{}`", self.src),
                }
            }
            Some(Tok::Ident(path)) => {
                let mut parts = path.split('.');
                let root = parts.next().unwrap();
                assert!(
                    ["inputs", "steps", "github", "runner", "env"].contains(&root),
                    "unsupported context `{root}` in `{}`",
                    self.src
                );
                let mut v = &self.ctx.contexts[root];
                for p in parts {
                    v = &v[p];
                }
                match v {
                    Value::Null => V::Null,
                    Value::Bool(b) => V::Bool(*b),
                    Value::Number(n) => V::Num(n.as_f64().unwrap()),
                    Value::String(s) => V::Str(s.clone()),
                    other => panic!("`{path}` is an object ({other}) in `{}`", self.src),
                }
            }
            other => panic!("unexpected {other:?} in `{}`", self.src),
        }
    }
}

/// Evaluate one expression; the bool says whether it called a status function.
pub(super) fn eval(src: &str, ctx: &Ctx) -> (V, bool) {
    let mut p = Parser {
        toks: lex(src),
        pos: 0,
        ctx,
        src,
        status_fn: false,
    };
    let v = p.or();
    assert!(p.pos == p.toks.len(), "trailing tokens in `{src}`");
    (v, p.status_fn)
}

/// Replace every `${{ expr }}` in a string, as the runner does for `with:`, `env:` and defaults.
pub(super) fn template(s: &str, ctx: &Ctx) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${{") {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find("}}")
            .unwrap_or_else(|| panic!("unterminated ${{{{ in `{s}`"));
        out.push_str(&eval(&rest[i + 3..i + end], ctx).0.text());
        rest = &rest[i + end + 2..];
    }
    out.push_str(rest);
    out
}

/// A step's `if:`; without a status function GitHub reads it as `success() && (…)`.
pub(super) fn condition(cond: Option<&str>, ctx: &Ctx) -> bool {
    let Some(c) = cond else { return !ctx.failed };
    let c = c.trim();
    let c = c
        .strip_prefix("${{")
        .and_then(|c| c.strip_suffix("}}"))
        .unwrap_or(c);
    let (v, status_fn) = eval(c, ctx);
    v.truthy() && (status_fn || !ctx.failed)
}

#[test]
pub(super) fn expression_subset_behaves_like_githubs() {
    let contexts =
        json!({"inputs": {"a": "", "b": "x", "t": "TRUE"}, "steps": {}, "github": {"sha": "s1"}});
    let ctx = Ctx {
        contexts: &contexts,
        failed: false,
    };
    let e = |s: &str| eval(s, &ctx).0;
    assert_eq!(e("inputs.a || github.sha"), V::Str("s1".into()));
    assert_eq!(e("inputs.b || github.sha"), V::Str("x".into()));
    assert_eq!(e("inputs.t == 'true'"), V::Bool(true));
    assert_eq!(e("inputs.a != ''"), V::Bool(false));
    // A missing output is null; mixed types compare as numbers, so null
    // equals both '' and '0' (0 == 0), as on GitHub.
    assert_eq!(e("steps.x.outputs.count != '0'"), V::Bool(false));
    assert_eq!(e("steps.x.outputs.count == ''"), V::Bool(true));
    assert_eq!(e("steps.x.outputs.count == 'abc'"), V::Bool(false));
    assert_eq!(
        template("k-${{ github.sha }}-${{ inputs.a }}", &ctx),
        "k-s1-"
    );
    assert!(!condition(
        Some("always() && inputs.a != ''"),
        &Ctx {
            contexts: &contexts,
            failed: true
        }
    ));
    assert!(condition(
        Some("always()"),
        &Ctx {
            contexts: &contexts,
            failed: true
        }
    ));
    assert!(!condition(
        Some("inputs.b != ''"),
        &Ctx {
            contexts: &contexts,
            failed: true
        }
    ));
}

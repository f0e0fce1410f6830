//! action.yml run as GitHub runs a composite action, in a workspace outside
//! this clone: the file is parsed, the `${{ }}` expressions it uses are
//! evaluated (a small evaluator below; anything outside its subset fails the
//! test rather than being guessed), `uses:` steps are stubbed (actions/cache
//! restores a prepared directory, upload-artifact copies into a folder the
//! test reads), and every `shell: bash` step runs as the runner runs it —
//! `bash --noprofile --norc -eo pipefail {0}` — with GITHUB_OUTPUT,
//! GITHUB_ENV, GITHUB_PATH and GITHUB_STEP_SUMMARY files carried between
//! steps. probegate reaches the runner only through the Action's release
//! download, from a loopback "release" holding the binary this test build
//! made, packaged as cargo-dist packages it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};

use crate::fakes::{spawn, FakeGithub};
use crate::harness::*;

// ------------------------------------------------------------ expressions

/// A value in GitHub's expression language (objects are read from JSON contexts).
#[derive(Debug, Clone, PartialEq)]
enum V {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

impl V {
    fn truthy(&self) -> bool {
        match self {
            V::Null => false,
            V::Bool(b) => *b,
            V::Num(n) => *n != 0.0 && !n.is_nan(),
            V::Str(s) => !s.is_empty(),
        }
    }
    fn text(&self) -> String {
        match self {
            V::Null => String::new(),
            V::Bool(b) => b.to_string(),
            V::Num(n) => n.to_string(),
            V::Str(s) => s.clone(),
        }
    }
    fn num(&self) -> f64 {
        match self {
            V::Null => 0.0,
            V::Bool(b) => *b as u8 as f64,
            V::Num(n) => *n,
            V::Str(s) if s.trim().is_empty() => 0.0,
            V::Str(s) => s.trim().parse().unwrap_or(f64::NAN),
        }
    }
    /// GitHub's loose equality: strings compare ignoring case; mixed types compare as numbers.
    fn loose_eq(&self, o: &V) -> bool {
        match (self, o) {
            (V::Str(a), V::Str(b)) => a.eq_ignore_ascii_case(b),
            (V::Null, V::Null) => true,
            (V::Bool(a), V::Bool(b)) => a == b,
            _ => self.num() == o.num(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Num(f64),
    Ident(String),
    Op(&'static str),
}

fn lex(src: &str) -> Vec<Tok> {
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
struct Ctx<'a> {
    contexts: &'a Value,
    failed: bool,
}

struct Parser<'a, 'b> {
    toks: Vec<Tok>,
    pos: usize,
    ctx: &'a Ctx<'b>,
    src: &'a str,
    /// A status function (always/success/failure) appeared, so no implicit success().
    status_fn: bool,
}

impl Parser<'_, '_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn eat(&mut self, op: &str) -> bool {
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
    fn or(&mut self) -> V {
        let mut l = self.and();
        while self.eat("||") {
            let r = self.and();
            l = if l.truthy() { l } else { r };
        }
        l
    }
    fn and(&mut self) -> V {
        let mut l = self.cmp();
        while self.eat("&&") {
            let r = self.cmp();
            l = if l.truthy() { r } else { l };
        }
        l
    }
    fn cmp(&mut self) -> V {
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
    fn unary(&mut self) -> V {
        if self.eat("!") {
            return V::Bool(!self.unary().truthy());
        }
        self.primary()
    }
    fn primary(&mut self) -> V {
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
fn eval(src: &str, ctx: &Ctx) -> (V, bool) {
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
fn template(s: &str, ctx: &Ctx) -> String {
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
fn condition(cond: Option<&str>, ctx: &Ctx) -> bool {
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
fn expression_subset_behaves_like_githubs() {
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

// ------------------------------------------------------------ the runner

fn action() -> Value {
    let text = std::fs::read_to_string(repo().join("action.yml")).unwrap();
    serde_yaml_ng::from_str(&text).expect("action.yml parses")
}

/// `name=value` lines and `name<<DELIM` blocks, as the runner reads GITHUB_OUTPUT and GITHUB_ENV.
fn file_commands(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.is_empty() {
            continue;
        }
        let heredoc = l.find("<<").filter(|&i| l.find('=').is_none_or(|e| i < e));
        if let Some(i) = heredoc {
            let (name, delim) = (&l[..i], &l[i + 2..]);
            let mut v = Vec::new();
            for b in lines.by_ref() {
                if b == delim {
                    break;
                }
                v.push(b);
            }
            out.push((name.to_string(), v.join("\n")));
        } else {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("bad file command line {l:?} in {}", path.display()));
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

#[derive(Debug)]
struct StepRun {
    name: String,
    /// "success", "failure" or "skipped".
    outcome: &'static str,
    log: String,
}

struct Outcome {
    steps: Vec<StepRun>,
    outputs: BTreeMap<String, String>,
    summary: String,
    failed: bool,
}

impl Outcome {
    fn step(&self, name_part: &str) -> &StepRun {
        self.steps
            .iter()
            .find(|s| s.name.contains(name_part))
            .unwrap_or_else(|| panic!("no step named like {name_part:?}"))
    }
    fn log(&self) -> String {
        self.steps
            .iter()
            .map(|s| format!("--- {} [{}]\n{}", s.name, s.outcome, s.log))
            .collect()
    }
}

/// A GitHub-hosted runner for one job, pared down to what a composite action sees.
struct Runner {
    clone: PathBuf,
    workspace: PathBuf,
    temp: PathBuf,
    home: PathBuf,
    artifacts: PathBuf,
    /// actions/cache: key prefix → directory restored on a hit.
    caches: Vec<(String, PathBuf)>,
    /// Directories put first on PATH for every step (the job's own tools).
    path_front: Vec<PathBuf>,
    env: BTreeMap<String, String>,
    github: Value,
}

impl Runner {
    fn new(root: &Path) -> Runner {
        let mk = |n: &str| {
            let p = root.join(n);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let (os, arch) = match std::env::consts::ARCH {
            "x86_64" => ("Linux", "X64"),
            "aarch64" => ("Linux", "ARM64"),
            other => panic!("no runner for {other}"),
        };
        let r = Runner {
            clone: repo(),
            workspace: mk("work/acme-models"),
            temp: mk("runner-temp"),
            home: mk("home"),
            artifacts: mk("artifacts"),
            caches: vec![],
            path_front: vec![],
            env: BTreeMap::new(),
            github: Value::Null,
        };
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("CI", "true"),
            ("GITHUB_ACTIONS", "true"),
            ("RUNNER_OS", os),
            ("RUNNER_ARCH", arch),
            ("GITHUB_REPOSITORY", "acme/models"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_RUN_ID", "4242"),
            ("GITHUB_RUN_ATTEMPT", "1"),
            ("GITHUB_EVENT_NAME", "pull_request"),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        for (k, p) in [
            ("GITHUB_ACTION_PATH", &r.clone),
            ("GITHUB_WORKSPACE", &r.workspace),
            ("RUNNER_TEMP", &r.temp),
            ("HOME", &r.home),
        ] {
            env.insert(k.to_string(), p.display().to_string());
        }
        Runner { env, ..r }
    }

    fn uses(
        &self,
        step: &Value,
        with: &BTreeMap<String, String>,
    ) -> (bool, Vec<(String, String)>, String) {
        let uses = step["uses"].as_str().unwrap();
        let (name, rf) = uses.split_once('@').unwrap();
        assert!(
            rf.len() == 40 && rf.chars().all(|c| c.is_ascii_hexdigit()),
            "{uses}: not pinned to a commit"
        );
        let expand = |p: &str| match p.strip_prefix("~/") {
            Some(rest) => self.home.join(rest),
            None => PathBuf::from(p),
        };
        match name {
            "actions/cache" => {
                let key = &with["key"];
                let path = expand(&with["path"]);
                match self
                    .caches
                    .iter()
                    .find(|(k, _)| key.starts_with(k.as_str()))
                {
                    Some((_, dir)) => {
                        copy_dir(dir, &path);
                        (
                            true,
                            vec![("cache-hit".into(), "true".into())],
                            format!("cache hit {key} -> {}", path.display()),
                        )
                    }
                    None => (
                        true,
                        vec![("cache-hit".into(), "false".into())],
                        format!("cache miss {key}"),
                    ),
                }
            }
            "actions/upload-artifact" => {
                let name = &with["name"];
                // upload-artifact refuses these characters in a name.
                assert!(
                    !name.is_empty()
                        && !name
                            .contains(['"', ':', '<', '>', '|', '*', '?', '\r', '\n', '\\', '/']),
                    "artifact name {name:?}"
                );
                let path = expand(&with["path"]);
                if path.is_dir() {
                    copy_dir(&path, &self.artifacts.join(name));
                    (true, vec![], format!("uploaded {name}"))
                } else {
                    assert_eq!(
                        with.get("if-no-files-found").map(String::as_str),
                        Some("warn")
                    );
                    (
                        true,
                        vec![],
                        format!("warning: no files at {}", path.display()),
                    )
                }
            }
            other => panic!("no stub for {other}"),
        }
    }

    /// Run action.yml's steps with these inputs, as a `uses:` of this action would.
    fn run(&self, inputs: &[(&str, &str)]) -> Outcome {
        let action = action();
        let mut contexts = json!({
            "github": self.github,
            "runner": {"temp": self.temp, "os": self.env["RUNNER_OS"], "arch": self.env["RUNNER_ARCH"]},
            "steps": {},
            "env": {},
        });
        // Inputs: the caller's over the declared defaults (which are templates themselves).
        let decl = action["inputs"].as_object().unwrap();
        let mut ins = serde_json::Map::new();
        for (k, d) in decl {
            let v = match inputs.iter().find(|(n, _)| n == k) {
                Some((_, v)) => v.to_string(),
                None => {
                    assert!(d["required"] != true, "required input {k} not given");
                    let dflt = match &d["default"] {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    template(
                        &dflt,
                        &Ctx {
                            contexts: &contexts,
                            failed: false,
                        },
                    )
                }
            };
            ins.insert(k.clone(), Value::String(v));
        }
        for (n, _) in inputs {
            assert!(decl.contains_key(*n), "input {n} is not declared");
        }
        contexts["inputs"] = Value::Object(ins);

        let cmd_dir = self.temp.join("_runner_file_commands");
        std::fs::create_dir_all(&cmd_dir).unwrap();
        let mut carried_env: BTreeMap<String, String> = BTreeMap::new();
        let mut added_path: Vec<String> = vec![];
        let mut summary = String::new();
        let mut failed = false;
        let mut steps = vec![];
        for (i, step) in action["runs"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let name = step["name"].as_str().unwrap_or("").to_string();
            let ctx = Ctx {
                contexts: &contexts,
                failed,
            };
            if !condition(step["if"].as_str(), &ctx) {
                steps.push(StepRun {
                    name,
                    outcome: "skipped",
                    log: String::new(),
                });
                continue;
            }
            let tmpl = |v: &Value| -> BTreeMap<String, String> {
                v.as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| {
                                let s = match v {
                                    Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                };
                                (k.clone(), template(&s, &ctx))
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (ok, outputs, log) = if step.get("uses").is_some() {
                self.uses(step, &tmpl(&step["with"]))
            } else {
                assert_eq!(step["shell"], "bash", "{name}: only bash steps are run");
                let body = step["run"].as_str().unwrap();
                assert!(!body.contains("${{"), "{name}: an expression inside run:");
                let script = self.temp.join(format!("step-{i}.sh"));
                std::fs::write(&script, body).unwrap();
                let files: Vec<PathBuf> = ["output", "env", "path", "summary"]
                    .iter()
                    .map(|f| {
                        let p = cmd_dir.join(format!("{f}_{i}"));
                        std::fs::write(&p, "").unwrap();
                        p
                    })
                    .collect();
                let base_path = std::env::var("PATH").unwrap();
                let path: Vec<String> = added_path
                    .iter()
                    .rev()
                    .cloned()
                    .chain(self.path_front.iter().map(|p| p.display().to_string()))
                    .chain(std::iter::once(base_path))
                    .collect();
                let mut c = Command::new("bash");
                c.args(["--noprofile", "--norc", "-eo", "pipefail"])
                    .arg(&script)
                    .current_dir(&self.workspace)
                    .env_clear()
                    .envs(std::env::vars().filter(|(k, _)| {
                        // The machine's environment, less what would leak this test process's setup.
                        !(k.starts_with("GITHUB_")
                            || k.starts_with("RUNNER_")
                            || k.starts_with("PROBEGATE_")
                            || k.starts_with("HF_")
                            || k.starts_with("CARGO")
                            || k.starts_with("RUST")
                            || k == "XDG_CACHE_HOME")
                    }))
                    .envs(&self.env)
                    .envs(&carried_env)
                    .envs(tmpl(&step["env"]))
                    .env("PATH", path.join(":"))
                    .env("GITHUB_OUTPUT", &files[0])
                    .env("GITHUB_ENV", &files[1])
                    .env("GITHUB_PATH", &files[2])
                    .env("GITHUB_STEP_SUMMARY", &files[3]);
                let out = c.output().unwrap();
                for (k, v) in file_commands(&files[1]) {
                    carried_env.insert(k, v);
                }
                for l in std::fs::read_to_string(&files[2]).unwrap().lines() {
                    if !l.is_empty() {
                        added_path.push(l.to_string());
                    }
                }
                summary.push_str(&std::fs::read_to_string(&files[3]).unwrap());
                (
                    out.status.success(),
                    file_commands(&files[0]),
                    format!(
                        "exit {:?}\n{}{}",
                        out.status.code(),
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                )
            };
            if let Some(id) = step["id"].as_str() {
                let o: serde_json::Map<String, Value> = outputs
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                contexts["steps"][id] =
                    json!({"outputs": o, "outcome": if ok {"success"} else {"failure"}});
            }
            failed |= !ok;
            steps.push(StepRun {
                name,
                outcome: if ok { "success" } else { "failure" },
                log,
            });
        }
        let ctx = Ctx {
            contexts: &contexts,
            failed,
        };
        let outputs = action["outputs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, o)| (k.clone(), template(o["value"].as_str().unwrap(), &ctx)))
            .collect();
        Outcome {
            steps,
            outputs,
            summary,
            failed,
        }
    }
}

// ------------------------------------------------------------ a release on loopback

#[derive(Default)]
struct Release {
    files: Mutex<BTreeMap<String, Vec<u8>>>,
    log: Mutex<Vec<String>>,
}

async fn release_get(State(s): State<Arc<Release>>, uri: Uri) -> Response {
    s.log.lock().unwrap().push(uri.path().to_string());
    match s.files.lock().unwrap().get(uri.path()) {
        Some(b) => (StatusCode::OK, b.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

struct FakeRelease {
    addr: SocketAddr,
    state: Arc<Release>,
}

impl FakeRelease {
    fn start() -> Self {
        let state = Arc::new(Release::default());
        let addr = spawn(
            Router::new()
                .fallback(any(release_get))
                .with_state(state.clone()),
        );
        FakeRelease { addr, state }
    }
    /// What PROBEGATE_RELEASE_BASE_URL is set to.
    fn base_url(&self) -> String {
        format!("http://{}/acme/probegate/releases/download", self.addr)
    }
    fn put(&self, name: &str, bytes: Vec<u8>) {
        self.state
            .files
            .lock()
            .unwrap()
            .insert(format!("/acme/probegate/releases/download/{name}"), bytes);
    }
    fn log(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }
}

fn target_triple() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86_64-unknown-linux-gnu",
        _ => "aarch64-unknown-linux-gnu",
    }
}

/// This build's probegate as cargo-dist ships it: `probegate-TARGET.tar.gz`
/// holding `probegate-TARGET/probegate`, and its `.sha256` ("HASH *NAME").
fn packaged(dir: &Path) -> (String, Vec<u8>, String) {
    use sha2::Digest;
    let t = target_triple();
    let stage = dir.join(format!("probegate-{t}"));
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_probegate"), stage.join("probegate")).unwrap();
    let asset = format!("probegate-{t}.tar.gz");
    let st = Command::new("tar")
        .current_dir(dir)
        .args(["-czf", &asset, &format!("probegate-{t}")])
        .status()
        .unwrap();
    assert!(st.success());
    let bytes = std::fs::read(dir.join(&asset)).unwrap();
    let sum = format!("{} *{asset}\n", hex::encode(sha2::Sha256::digest(&bytes)));
    (asset, bytes, sum)
}

/// A fake `cargo` first on PATH: records its arguments and fails, so a source
/// build the Action must not start (or must start) is seen, never run.
fn fake_cargo(dir: &Path) -> PathBuf {
    let bin = dir.join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("cargo.log");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\necho 'fake cargo: not building' >&2\nexit 3\n",
        log.display()
    );
    std::fs::write(bin.join("cargo"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("cargo"), std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// A runner whose release server is `rel` and whose `cargo` is the fake one.
fn runner_for(dir: &Path, rel: &FakeRelease, github: Value) -> Runner {
    let mut r = Runner::new(dir);
    r.path_front.push(fake_cargo(dir));
    r.env
        .insert("PROBEGATE_RELEASE_BASE_URL".into(), rel.base_url());
    r.github = github;
    r
}

/// The prepared "models" cache: the fetched SmolLM2, as a hit restores it.
fn models_cache(dir: &Path) -> PathBuf {
    let d = dir.join("prepared-models");
    std::fs::create_dir_all(&d).unwrap();
    let m = model_path("smollm2");
    std::os::unix::fs::symlink(&m, d.join(m.file_name().unwrap())).unwrap();
    d
}

/// This build, packaged as cargo-dist would, on the fake release server.
/// Returns the asset's name.
fn publish_release(dir: &Path, rel: &FakeRelease) -> String {
    let (asset, bytes, sum) = packaged(dir);
    let version = env!("CARGO_PKG_VERSION");
    rel.put(&format!("v{version}/{asset}"), bytes);
    rel.put(&format!("v{version}/{asset}.sha256"), sum.into_bytes());
    asset
}

/// The model cache as a hit restores it, and an earlier run's base
/// activations: this machine's cache, where the other tests filled it
/// (absent, the gate computes them cold, minutes on two cores).
fn restore_caches(runner: &mut Runner, dir: &Path) {
    runner
        .caches
        .push(("probegate-models-".into(), models_cache(dir)));
    let acts = probegate::checkpoint::cache_root().join("activations");
    if acts.is_dir() {
        runner.caches.push(("probegate-acts-".into(), acts));
    }
}

/// What publishing one gate to pull request 7 calls: a check run opened
/// and completed, then one new sticky comment.
const ONE_GATE_PUBLISHED: [&str; 4] = [
    "POST /repos/acme/models/check-runs",
    "PATCH /repos/acme/models/check-runs/1",
    "GET /repos/acme/models/issues/7/comments",
    "POST /repos/acme/models/issues/7/comments",
];

fn calls(gh: &FakeGithub) -> Vec<String> {
    gh.log()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

// ------------------------------------------------------------ the tests

/// A pull request that adds an adapter (under a non-ASCII name) to a
/// repository holding only a monitor suite: the Action finds it from the
/// changes, downloads and verifies its own release, runs the gate, uploads
/// the report, and publishes one named check run and one sticky comment to
/// a fake GitHub.
#[test]
fn the_action_gates_a_changed_adapter_from_its_release() {
    let tmp = tempfile::tempdir().unwrap();
    let rel = FakeRelease::start();
    let mut runner = runner_for(tmp.path(), &rel, Value::Null);
    let ws = runner.workspace.clone();
    // The models live under ml/, the Action's working-directory.
    let ml = ws.join("ml");

    // The user's repository: the suite and a policy on main, the adapter in
    // the PR. No labeled data: probegate's built-in sets serve the suite.
    git(&ws, &["init", "-q", "-b", "main"]);
    copy_dir(
        &repo().join("monitors/smollm2"),
        &ml.join("monitors/smollm2"),
    );
    // A smaller corpus than the default's, to keep the test short, and
    // whole-set mode: with the budget of 60 below, critical concepts still
    // run (sequential mode's hard cap would leave them unsettled and fail).
    let policy =
        crate::check::test_policy(tmp.path(), &[("mode = \"sequential\"", "mode = \"whole\"")]);
    std::fs::copy(&policy, ml.join("gate-policy.toml")).unwrap();
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-q", "-m", "suite"]);
    let base_sha = git(&ws, &["rev-parse", "HEAD"]);
    let adapter = ml.join("adapters/support-é");
    copy_dir(&repo().join("fixtures/adapters/smollm2-lora-r4"), &adapter);
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-q", "-m", "adapter"]);
    let head_sha = git(&ws, &["rev-parse", "HEAD"]);

    let asset = publish_release(tmp.path(), &rel);
    let version = env!("CARGO_PKG_VERSION");
    let gh = FakeGithub::start();
    let cache = tmp.path().join("cache");
    restore_caches(&mut runner, tmp.path());
    runner.env.insert("GITHUB_API_URL".into(), gh.url());
    runner.env.insert("GITHUB_SHA".into(), head_sha.clone());
    runner.github = json!({
        "token": "ghs_from_the_runner", "sha": head_sha, "run_id": "4242", "run_attempt": "1",
        "repository": "acme/models", "action_repository": "",
        "event": {"pull_request": {"number": 7, "head": {"sha": head_sha}, "base": {"sha": base_sha}}},
    });

    let started = std::time::Instant::now();
    let out = runner.run(&[
        ("base", "smollm2"),
        ("candidates-from-changes", "true"),
        ("working-directory", "ml"),
        ("monitors", "monitors/smollm2"),
        ("policy", "gate-policy.toml"),
        ("budget", "60"),
        ("cache-path", cache.to_str().unwrap()),
    ]);
    eprintln!("action run: {:.1} s", started.elapsed().as_secs_f64());
    let log = out.log();

    // The binary came from the release, checksum-checked; nothing was built.
    assert_eq!(
        rel.log(),
        vec![
            format!("/acme/probegate/releases/download/v{version}/{asset}"),
            format!("/acme/probegate/releases/download/v{version}/{asset}.sha256"),
        ]
    );
    assert!(!tmp.path().join("cargo.log").exists(), "{log}");
    assert_eq!(out.step("Restore a source-built").outcome, "skipped");
    assert!(out.step("Download").log.contains("sha256 "), "{log}");
    assert!(
        out.step("Restore model downloads")
            .log
            .contains("cache hit"),
        "{log}"
    );

    // The gate failed the one changed adapter, and so the job. Under full
    // revalidation this adapter leaves refusal_compliance-l7 stale beyond
    // repair; within a budget of 60 that monitor is not revalidated, at
    // predicted risk 1.00, which the policy's `unverified_fail_risk` fails
    // (before that rule, this job passed it with a warning).
    let verdict = &out.outputs["verdict"];
    assert_eq!(verdict, "fail", "{log}");
    assert_eq!(out.outputs["exit-code"], "1", "{log}");
    assert!(out.failed, "{log}");
    assert_eq!(out.step("Verdict").outcome, "failure", "{log}");
    assert!(
        out.step("Verdict")
            .log
            .contains("not settled within the budget that the policy fails"),
        "{log}"
    );
    assert_ne!(out.outputs["unsettled"], "0", "{log}");
    assert_eq!(out.outputs["candidates"], "1");
    assert_eq!(out.outputs["probegate-version"], version);
    let report_dir = PathBuf::from(&out.outputs["report-path"]);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["verdict"].as_str(), Some(verdict.as_str()));
    let reference = report["candidate"]["reference"].as_str().unwrap();
    assert_eq!(reference, format!("smollm2+{}", adapter.display()));
    // The step summary carries the report itself.
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    let heading = md.lines().next().unwrap();
    assert!(heading.starts_with("## "), "{md}");
    assert!(out.summary.contains(heading), "{}", out.summary);

    // The job name comes from the changed path (workspace stripped, sanitised).
    let name = "smollm2-ml-adapters-support";
    let artifact = runner.artifacts.join("probegate-report-changes-4242-1");
    assert!(artifact.join(name).join("report.json").is_file(), "{log}");
    assert_eq!(calls(&gh), ONE_GATE_PUBLISHED, "{log}");
    let runs = gh.log();
    assert_eq!(runs[0].body["name"], format!("probegate ({name})"));
    assert_eq!(runs[0].body["head_sha"], head_sha);
    assert_eq!(runs[0].auth.as_deref(), Some("Bearer ghs_from_the_runner"));
    // The run `github start` opened is completed with the verdict, and its
    // annotations point into the repository (working-directory included).
    let done = &runs[1].body;
    assert_eq!(
        done["conclusion"],
        serde_json::to_value(probegate::adapters::github::conclusion(
            serde_json::from_value(serde_json::Value::String(verdict.clone())).unwrap()
        ))
        .unwrap()
    );
    for a in done["output"]["annotations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let path = a["path"].as_str().unwrap();
        assert!(path.starts_with("ml/monitors/smollm2/"), "{path}");
    }
    let comments = gh.comments(7);
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0]
            .1
            .starts_with(&probegate::adapters::github::sticky_marker(Some(name))),
        "{}",
        comments[0].1
    );
}

/// A release whose checksum does not match is an error, never a reason to
/// build from source or run the binary; a runner with no release asset (404)
/// builds the action's own source, and only then.
#[test]
fn a_bad_checksum_fails_and_only_a_missing_asset_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let rel = FakeRelease::start();
    let (asset, bytes, _) = packaged(tmp.path());
    let version = env!("CARGO_PKG_VERSION");
    rel.put(&format!("v{version}/{asset}"), bytes);
    rel.put(
        &format!("v{version}/{asset}.sha256"),
        format!("{} *{asset}\n", "0".repeat(64)).into_bytes(),
    );
    let github =
        json!({"token": "", "sha": "abc", "run_id": "4242", "run_attempt": "1", "event": {}});
    let runner = runner_for(tmp.path(), &rel, github.clone());
    let inputs = [
        ("base", "smollm2"),
        ("candidate", "smollm2+adapters/x"),
        ("monitors", "monitors/smollm2"),
        ("github-token", ""),
    ];
    let out = runner.run(&inputs);
    let log = out.log();
    assert!(out.failed, "{log}");
    let dl = out.step("Download");
    assert_eq!(dl.outcome, "failure", "{log}");
    assert!(dl.log.contains("checksum mismatch"), "{log}");
    assert!(!tmp.path().join("cargo.log").exists(), "{log}");
    // Nothing after it ran but the always() upload (which found no report).
    for s in &out.steps[2..] {
        if s.name.contains("Upload") {
            assert!(s.log.contains("no files"), "{log}");
        } else {
            assert_eq!(s.outcome, "skipped", "{}: {log}", s.name);
        }
    }
    assert_eq!(out.outputs["verdict"], "");
    assert!(!runner
        .temp
        .join(format!("probegate-v{version}/bin/probegate"))
        .exists());

    // No asset for this runner: the action's own source is built (here a fake
    // cargo that records the call and fails, so the step fails with it).
    let tmp2 = tempfile::tempdir().unwrap();
    let empty = FakeRelease::start();
    let runner = runner_for(tmp2.path(), &empty, github);
    let out = runner.run(&inputs);
    let log = out.log();
    assert!(out.failed, "{log}");
    assert_eq!(out.step("Download").outcome, "success", "{log}");
    assert!(
        out.step("Restore a source-built")
            .log
            .contains("cache miss"),
        "{log}"
    );
    assert_eq!(out.step("Build probegate").outcome, "failure", "{log}");
    let cargo = std::fs::read_to_string(tmp2.path().join("cargo.log")).unwrap();
    assert_eq!(
        cargo.trim(),
        format!(
            "install --locked --path {} --root {}",
            repo().display(),
            runner.home.join(".probegate-bin").display()
        )
    );
    assert_eq!(
        empty.log(),
        vec![format!(
            "/acme/probegate/releases/download/v{version}/{asset}"
        )]
    );

    // A version other than the action's own is never built from this source.
    let out = runner.run(&[
        inputs[0],
        inputs[1],
        inputs[2],
        inputs[3],
        ("version", "v9.9.9"),
    ]);
    assert!(out.failed);
    assert!(
        out.step("Download").log.contains("pick a released version"),
        "{}",
        out.log()
    );
}

/// What makes the Action safe to call with untrusted inputs, checked on the file itself.
#[test]
fn the_action_keeps_inputs_out_of_scripts() {
    let a = action();
    for s in a["runs"]["steps"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap_or("?");
        if let Some(body) = s["run"].as_str() {
            assert!(!body.contains("${{"), "{name}: expression inside run:");
            assert!(
                !body
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .any(|w| w == "eval"),
                "{name}: eval"
            );
        }
        if let Some(u) = s["uses"].as_str() {
            let (_, rf) = u.split_once('@').unwrap();
            assert!(
                rf.len() == 40 && rf.chars().all(|c| c.is_ascii_hexdigit()),
                "{name}: {u} is not pinned to a full commit SHA"
            );
        }
    }
    // Each pin says which release it is.
    let text = std::fs::read_to_string(repo().join("action.yml")).unwrap();
    for l in text.lines().filter(|l| l.contains("uses:")) {
        assert!(l.contains("# v"), "{l}");
    }
}

/// A suite spread over a matrix: two shard jobs gate one candidate each on
/// part of the suite and publish nothing (a shard's verdict is not the
/// candidate's); a merge job takes their downloaded artifacts, decides the
/// verdict over every monitor and publishes one check run and one comment.
#[test]
fn a_matrix_of_shards_and_a_merge_job_publish_one_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let rel = FakeRelease::start();
    let mut runner = runner_for(tmp.path(), &rel, Value::Null);
    let ws = runner.workspace.clone();
    git(&ws, &["init", "-q", "-b", "main"]);
    copy_dir(
        &repo().join("monitors/smollm2"),
        &ws.join("monitors/smollm2"),
    );
    copy_dir(
        &repo().join("fixtures/adapters/smollm2-lora-r4"),
        &ws.join("adapters/support"),
    );
    let policy = crate::check::test_policy(tmp.path(), &[]);
    std::fs::copy(&policy, ws.join("gate-policy.toml")).unwrap();
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-q", "-m", "suite and adapter"]);
    let head_sha = git(&ws, &["rev-parse", "HEAD"]);
    publish_release(tmp.path(), &rel);
    let gh = FakeGithub::start();
    restore_caches(&mut runner, tmp.path());
    runner.env.insert("GITHUB_API_URL".into(), gh.url());
    runner.github = json!({
        "token": "ghs_from_the_runner", "sha": head_sha, "run_id": "4242", "run_attempt": "1",
        "repository": "acme/models", "action_repository": "",
        "event": {"pull_request": {"number": 7, "head": {"sha": head_sha}, "base": {"sha": head_sha}}},
    });
    let cache = tmp.path().join("cache");
    let inputs = |extra: (&'static str, String)| -> Vec<(&'static str, String)> {
        vec![
            ("base", "smollm2".into()),
            ("candidate", "smollm2+adapters/support".into()),
            ("job-name", "support".into()),
            ("monitors", "monitors/smollm2".into()),
            ("policy", "gate-policy.toml".into()),
            ("budget", "60".into()),
            ("cache-path", cache.display().to_string()),
            extra,
        ]
    };
    let run = |extra| {
        let owned = inputs(extra);
        let args: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        runner.run(&args)
    };

    let mut used = 0;
    for i in 1..=2 {
        let out = run(("shard", format!("{i}/2")));
        let log = out.log();
        // A shard that saw a stale monitor does not fail its job: the merge decides.
        assert!(!out.failed, "{log}");
        assert_eq!(out.step("Start the check runs").outcome, "skipped", "{log}");
        assert_eq!(out.step("Publish").outcome, "skipped", "{log}");
        let dir = runner
            .artifacts
            .join(format!("probegate-report-support-shard-{i}-of-2-4242-1"));
        let r: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("support-shard-{i}-of-2/report.json")))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(r["shard"]["index"], i, "{log}");
        used += r["budget"]["examples_used"].as_u64().unwrap();
    }
    assert!(gh.log().is_empty(), "shards publish nothing");

    // The merge job: actions/download-artifact puts each artifact in a folder of its own.
    copy_dir(&runner.artifacts, &ws.join("shards"));
    let out = run(("merge-shards", "shards".into()));
    let log = out.log();
    assert!(out.outputs["exit-code"] != "2", "{log}");
    assert_eq!(out.step("Fetch models").outcome, "skipped", "{log}");
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(&out.outputs["report-path"]).join("report.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(r["verdict"].as_str(), Some(out.outputs["verdict"].as_str()));
    assert_eq!(r["monitors"].as_array().unwrap().len(), 18);
    assert!(r.get("shard").is_none());
    assert_eq!(r["budget"]["examples_used"].as_u64(), Some(used));
    assert!(
        r["budget"]["examples_used"].as_u64().unwrap() <= 60 + 360,
        "{r}"
    );
    assert_eq!(calls(&gh), ONE_GATE_PUBLISHED, "{log}");
    assert_eq!(gh.log()[0].body["name"], "probegate (support)");

    // A shard must be I/N, and a shard job gates one named candidate.
    let bad = run(("shard", "0/2".into()));
    assert!(
        bad.failed && bad.log().contains("input shard: `0/2` is not I/N"),
        "{}",
        bad.log()
    );
}

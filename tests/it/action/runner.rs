//! A GitHub-hosted runner for one job, pared down to what a composite action
//! sees: `shell: bash` steps run as the runner runs them, file commands
//! carried between steps, `uses:` steps stubbed.

use super::expr::*;
use crate::harness::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(super) fn action() -> Value {
    let text = std::fs::read_to_string(repo().join("action.yml")).unwrap();
    serde_yaml_ng::from_str(&text).expect("action.yml parses")
}

/// `name=value` lines and `name<<DELIM` blocks, as the runner reads GITHUB_OUTPUT and GITHUB_ENV.
pub(super) fn file_commands(path: &Path) -> Vec<(String, String)> {
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
pub(super) struct StepRun {
    pub(super) name: String,
    /// "success", "failure" or "skipped".
    pub(super) outcome: &'static str,
    pub(super) log: String,
}

pub(super) struct Outcome {
    pub(super) steps: Vec<StepRun>,
    pub(super) outputs: BTreeMap<String, String>,
    pub(super) summary: String,
    pub(super) failed: bool,
}

impl Outcome {
    pub(super) fn step(&self, name_part: &str) -> &StepRun {
        self.steps
            .iter()
            .find(|s| s.name.contains(name_part))
            .unwrap_or_else(|| panic!("no step named like {name_part:?}"))
    }
    pub(super) fn log(&self) -> String {
        self.steps
            .iter()
            .map(|s| format!("--- {} [{}]\n{}", s.name, s.outcome, s.log))
            .collect()
    }
}

/// A GitHub-hosted runner for one job, pared down to what a composite action sees.
pub(super) struct Runner {
    pub(super) clone: PathBuf,
    pub(super) workspace: PathBuf,
    pub(super) temp: PathBuf,
    pub(super) home: PathBuf,
    pub(super) artifacts: PathBuf,
    /// actions/cache: key prefix → directory restored on a hit.
    pub(super) caches: Vec<(String, PathBuf)>,
    /// Directories put first on PATH for every step (the job's own tools).
    pub(super) path_front: Vec<PathBuf>,
    pub(super) env: BTreeMap<String, String>,
    pub(super) github: Value,
}

impl Runner {
    pub(super) fn new(root: &Path) -> Runner {
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

    pub(super) fn uses(
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
                        link_dir(dir, &path);
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
    pub(super) fn run(&self, inputs: &[(&str, &str)]) -> Outcome {
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

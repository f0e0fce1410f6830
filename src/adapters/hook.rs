//! The terminal adapter: a git pre-push hook that runs `check` on the
//! adapters and checkpoints a push changes. `hook install` writes a small
//! shell hook that calls back into `probegate hook run`, where the logic
//! lives (and is tested). What it gates is the pushed commits' content,
//! never the working tree ([`push`]).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

mod push;
mod tree;
pub use push::{changed_paths, parse_push_lines, pushed_candidates, Pushed, PushedRef};

use crate::adapters::project::{GateSettings, RunOptions};
use crate::error::{Error, Result};
use crate::gate::prepare::Progress;
use crate::gate::report::Outcome;
use crate::gate::GateOutput;

/// First line after the shebang: how an installed hook is recognised (and safely replaced).
pub const HOOK_MARKER: &str = "# probegate pre-push hook";
pub const SKIP_ENV: &str = "PROBEGATE_SKIP";

#[derive(Debug, Clone)]
pub struct HookConfig {
    /// Each of these is passed only when given; the rest come from the
    /// repository's probegate.toml when the hook runs.
    pub base: Option<String>,
    pub monitors: Option<PathBuf>,
    pub policy: Option<String>,
    pub data: Option<PathBuf>,
    /// Where each candidate's reports go, relative to the repository root.
    pub out: PathBuf,
}

/// Run git in `repo`; its raw stdout (`-z` output stays byte-exact).
pub(crate) fn git_bytes<A: AsRef<OsStr>>(repo: &Path, args: &[A]) -> Result<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|e| Error::Usage(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(Error::Usage(format!(
            "git {} (in {}): {}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

fn git(repo: &Path, args: &[&str]) -> Result<String> {
    let out = git_bytes(repo, args)?;
    Ok(String::from_utf8_lossy(&out).trim_end().to_string())
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Write `.git/hooks/pre-push` (wherever `core.hooksPath` points). Refuses
/// to overwrite a hook that is not probegate's unless `force`.
pub fn install(repo: &Path, cfg: &HookConfig, exe: &Path, force: bool) -> Result<PathBuf> {
    let hooks = PathBuf::from(git(repo, &["rev-parse", "--git-path", "hooks"])?);
    let hooks = if hooks.is_absolute() {
        hooks
    } else {
        repo.join(hooks)
    };
    std::fs::create_dir_all(&hooks).map_err(|e| Error::io(&hooks, e))?;
    let path = hooks.join("pre-push");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if !existing.contains(HOOK_MARKER) && !force {
            return Err(Error::Usage(format!(
                "{} exists and is not probegate's; move it aside or pass --force",
                path.display()
            )));
        }
    }
    let args = [
        ("--base", cfg.base.clone()),
        (
            "--monitors",
            cfg.monitors.as_ref().map(|p| p.display().to_string()),
        ),
        ("--policy", cfg.policy.clone()),
        ("--data", cfg.data.as_ref().map(|p| p.display().to_string())),
        ("--out", Some(cfg.out.display().to_string())),
    ]
    .iter()
    .filter_map(|(k, v)| Some(format!("{k} {}", sh_quote(v.as_ref()?))))
    .collect::<Vec<_>>()
    .join(" ");
    let exe = sh_quote(&exe.display().to_string());
    let script = format!(
        "#!/bin/sh\n{HOOK_MARKER} (written by `probegate hook install`; delete this file to uninstall)\n\
# Runs `probegate check` on adapters and checkpoints this push changes.\n\
# Skip it once:  {SKIP_ENV}=1 git push   (or: git push --no-verify)\n\
if [ \"${{{SKIP_ENV}:-0}}\" = 1 ]; then\n  echo \"probegate: pre-push check skipped ({SKIP_ENV}=1)\" >&2\n  exit 0\nfi\n\
exe={exe}\n[ -x \"$exe\" ] || exe=probegate\n\
exec \"$exe\" hook run --remote \"$1\" {args}\n"
    );
    std::fs::write(&path, script).map_err(|e| Error::io(&path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(&path, e))?;
    }
    Ok(path)
}

/// A file a push changed that makes a candidate, and the model reference for it.
pub fn candidate_for(repo: &Path, file: &str, base: &str) -> Option<String> {
    let p = Path::new(file);
    let name = p.file_name()?.to_str()?;
    let dir = p.parent().unwrap_or(Path::new(""));
    let abs_dir = repo.join(dir);
    if name.ends_with(".gguf") {
        return Some(repo.join(p).display().to_string());
    }
    if name == "adapter_config.json" || name.starts_with("adapter_model.") {
        return Some(format!("{base}+{}", abs_dir.display()));
    }
    if (name == "config.json" || name.ends_with(".safetensors"))
        && abs_dir.join("config.json").is_file()
    {
        return Some(abs_dir.display().to_string());
    }
    None
}

/// The candidates among `files` as they are in the working tree (what
/// `hook run FILE…` and `github candidates` are given); a push's come from
/// its commits instead ([`pushed_candidates`]).
pub fn candidates(repo: &Path, files: &[String], base: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in files {
        // A file the push deletes is nothing to check.
        if !repo.join(f).exists() {
            continue;
        }
        if let Some(c) = candidate_for(repo, f, base) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// One thing to gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// What the user knows it by: its path in the repository (and, for a
    /// push, the branch and commit).
    pub label: String,
    /// The model reference to gate, or why there is none: never a pass.
    pub reference: std::result::Result<String, String>,
}

impl Candidate {
    /// A reference that is its own label.
    pub fn plain(reference: String) -> Self {
        Candidate {
            label: reference.clone(),
            reference: Ok(reference),
        }
    }
}

/// The hook's output root, with a `.gitignore` that keeps reports (and the
/// scratch copies of pushed files) out of the commits being pushed.
pub(crate) fn prepare_out(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let ignore = root.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(&ignore, "*\n").map_err(|e| Error::io(&ignore, e))?;
    }
    Ok(())
}

/// Gates every candidate a push changes, each with its reports in
/// `<settings.out>/candidate-N`, and calls `on` with each result. The worst
/// outcome decides the push: could-not-evaluate outranks a failed gate,
/// and both block it.
pub fn gate_push(
    settings: &GateSettings,
    candidates: &[Candidate],
    history: Option<PathBuf>,
    progress: Progress,
    on: &mut dyn FnMut(&Candidate, &Path, &Result<GateOutput>),
) -> Result<Outcome> {
    let root = &settings.out;
    prepare_out(root)?;
    let opts = RunOptions {
        history,
        ..RunOptions::default()
    };
    let mut worst = Outcome::Pass;
    for (i, cand) in candidates.iter().enumerate() {
        let one = GateSettings {
            out: root.join(format!("candidate-{}", i + 1)),
            ..settings.clone()
        };
        let r = match &cand.reference {
            Ok(reference) => one.run(reference, &opts, progress),
            Err(why) => {
                // Its report says why, as a run that could not evaluate does.
                let _ = std::fs::create_dir_all(&one.out);
                let _ = crate::gate::report::write_error_report(&one.out, why);
                Err(Error::Usage(why.clone()))
            }
        };
        let outcome = match &r {
            Ok(o) => o.report.verdict.into(),
            Err(_) => Outcome::Error,
        };
        on(cand, &one.out, &r);
        worst = worst.worst(outcome);
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_changed_files_to_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        crate::util::write_tree(
            r,
            &[
                ("adapters/a/adapter_config.json", "{}"),
                ("adapters/a/adapter_model.safetensors", ""),
                ("full/config.json", "{}"),
                ("full/model.safetensors", ""),
                ("m.gguf", ""),
                ("README.md", ""),
            ],
        );
        let files: Vec<String> = [
            "adapters/a/adapter_config.json",
            "adapters/a/adapter_model.safetensors",
            "full/model.safetensors",
            "m.gguf",
            "README.md",
            "gone.gguf",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = candidates(r, &files, "smollm2");
        assert_eq!(
            c,
            vec![
                format!("smollm2+{}", r.join("adapters/a").display()),
                r.join("full").display().to_string(),
                r.join("m.gguf").display().to_string(),
            ]
        );
    }

    #[test]
    fn quoting_survives_spaces_and_quotes() {
        assert_eq!(sh_quote("a b'c"), "'a b'\\''c'");
    }
}

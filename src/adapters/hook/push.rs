//! What a push sends, read from git rather than from the working tree. The
//! candidates are the pushed commit's own bytes: each ref's changed paths
//! come NUL-separated (`-z`, so a non-ASCII name is not quoted), their
//! files are copied out of the commit into a scratch directory, and the gate
//! runs there. The branch checked out, uncommitted edits and untracked files
//! change nothing. Only the candidates' files are copied (a model
//! directory's top level, as the loaders read it), never the whole tree: a
//! repository of models would otherwise copy, or fetch from LFS, every
//! model on every push.
//!
//! "Changed" is against what the remotes already hold: the paths whose
//! content in the pushed commit differs from every commit the push builds
//! on that a remote-tracking ref already has (its boundary). One boundary
//! is a plain diff; a merge of a branch the remote has is not re-gated for
//! that branch's content, while a change made in the merge commit itself
//! differs from both sides and is gated.
//!
//! Symbolic links in the pushed tree are followed inside the tree (to the
//! pushed content of their target). A link that leaves the tree (an
//! absolute target, or `..` past the top, as git-annex's links into
//! `.git/annex` do) names a file the push does not carry: it is followed to
//! what it names on this machine, from the repository's own place, and a
//! warning says so. A link to nothing makes the candidate "could not
//! evaluate".

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::tree::{join, lossy, os, split_path, split_z, Entry, Found, Kind, Tree};
use super::{git_bytes as git, prepare_out, Candidate};
use crate::error::{Error, Result};

/// The scratch directory under the hook's output root.
const SCRATCH: &str = "pushed";

/// One line of git's pre-push input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedRef {
    pub local_ref: String,
    pub local_sha: String,
    pub remote_ref: String,
    pub remote_sha: String,
}

fn is_sha(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_zero(sha: &str) -> bool {
    sha.bytes().all(|b| b == b'0')
}

/// git's pre-push lines, `<local ref> <local sha> <remote ref> <remote sha>`.
/// A line that is not one is an error: skipping it would let its ref through.
pub fn parse_push_lines(stdin: &str) -> Result<Vec<PushedRef>> {
    let mut refs = Vec::new();
    for line in stdin.lines().filter(|l| !l.trim().is_empty()) {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            [lr, ls, rr, rs] if is_sha(ls) && is_sha(rs) => refs.push(PushedRef {
                local_ref: lr.into(),
                local_sha: ls.to_ascii_lowercase(),
                remote_ref: rr.into(),
                remote_sha: rs.to_ascii_lowercase(),
            }),
            _ => {
                return Err(Error::Usage(format!(
                    "pre-push input `{}`: not `<local ref> <local sha> <remote ref> <remote sha>`",
                    line.escape_debug()
                )))
            }
        }
    }
    Ok(refs)
}

fn has_commit(repo: &Path, sha: &str) -> bool {
    Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["cat-file", "-e", &format!("{sha}^{{commit}}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The paths `r` changes against what the remotes hold (see the module
/// docs), raw bytes, in git's order. Empty when every commit is already on
/// a remote, or for a deletion.
pub fn changed_paths(repo: &Path, r: &PushedRef) -> Result<Vec<Vec<u8>>> {
    if is_zero(&r.local_sha) {
        return Ok(vec![]);
    }
    let mut args = vec!["rev-list", "--boundary", &r.local_sha, "--not", "--remotes"];
    // The remote's old tip counts as held even where no tracking ref shows it.
    if !is_zero(&r.remote_sha) && has_commit(repo, &r.remote_sha) {
        args.push(&r.remote_sha);
    }
    let listed = String::from_utf8_lossy(&git(repo, &args)?).into_owned();
    let (mut any_new, mut bounds) = (false, Vec::new());
    for l in listed.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match l.strip_prefix('-') {
            Some(b) => bounds.push(b.to_string()),
            None => any_new = true,
        }
    }
    if !any_new {
        return Ok(vec![]);
    }
    // A history the remotes share nothing of: all of it is new.
    if bounds.is_empty() {
        let all = git(repo, &["ls-tree", "-r", "-z", "--name-only", &r.local_sha])?;
        return Ok(split_z(&all));
    }
    let mut changed: Option<Vec<Vec<u8>>> = None;
    for b in &bounds {
        let diff = git(
            repo,
            &[
                "diff",
                "--no-ext-diff",
                "--name-only",
                "-z",
                "--no-renames",
                b,
                &r.local_sha,
            ],
        )?;
        let names = split_z(&diff);
        changed = Some(match changed {
            None => names,
            Some(prev) => {
                let now: HashSet<Vec<u8>> = names.into_iter().collect();
                prev.into_iter().filter(|p| now.contains(p)).collect()
            }
        });
    }
    Ok(changed.unwrap_or_default())
}

/// A changed path's candidate, by the rules of [`super::candidate_for`],
/// judged on the pushed tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Cand {
    File(Vec<u8>),
    Adapter(Vec<u8>),
    Model(Vec<u8>),
}

fn candidate(tree: &mut Tree, path: &[u8]) -> Result<Option<Cand>> {
    let (dir, name) = split_path(path);
    let present = |e: Option<Entry>| e.is_some_and(|e| matches!(e.kind, Kind::Blob | Kind::Link));
    if name.ends_with(b".gguf") {
        return Ok(present(tree.at(path)?).then(|| Cand::File(path.to_vec())));
    }
    if name == b"adapter_config.json" || name.starts_with(b"adapter_model.") {
        // An adapter deleted as a whole is nothing to gate.
        let is_dir = dir.is_empty() || tree.at(dir)?.is_some_and(|e| e.kind == Kind::Dir);
        let live = is_dir
            && tree
                .list(dir)?
                .iter()
                .any(|e| e.name == b"adapter_config.json" || e.name.starts_with(b"adapter_model."));
        return Ok(live.then(|| Cand::Adapter(dir.to_vec())));
    }
    if name == b"config.json" || name.ends_with(b".safetensors") {
        let cfg = tree.at(&join(dir, b"config.json"))?;
        return Ok(present(cfg).then(|| Cand::Model(dir.to_vec())));
    }
    Ok(None)
}

/// The scratch directory: gone when this is dropped, error or not.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a push will send, ready to gate: candidates whose references point
/// into a scratch copy of the pushed commits, removed when this is dropped.
pub struct Pushed {
    pub candidates: Vec<Candidate>,
    /// Said before gating (links that leave the pushed tree).
    pub warnings: Vec<String>,
    _scratch: Scratch,
}

/// The candidates of git's pre-push lines `stdin`, copied out of the
/// pushed commits under `out` (the hook's output root).
pub fn pushed_candidates(repo: &Path, stdin: &str, base: &str, out: &Path) -> Result<Pushed> {
    let refs = parse_push_lines(stdin)?;
    let top = git(repo, &["rev-parse", "--show-toplevel"])?;
    let top = PathBuf::from(os(top.strip_suffix(b"\n").unwrap_or(&top))?);
    prepare_out(out)?;
    let scratch = Scratch(out.join(SCRATCH));
    // A run killed before its cleanup leaves one behind.
    let _ = std::fs::remove_dir_all(&scratch.0);
    let mut pushed = Pushed {
        candidates: vec![],
        warnings: vec![],
        _scratch: scratch,
    };
    let mut seen = HashSet::new();
    for r in &refs {
        let mut tree = Tree::new(&top, &r.local_sha);
        let mut cands = Vec::new();
        for p in changed_paths(&top, r)? {
            if let Some(c) = candidate(&mut tree, &p)? {
                if seen.insert((r.local_sha.clone(), c.clone())) {
                    cands.push(c);
                }
            }
        }
        let short = &r.local_sha[..12];
        let root = pushed._scratch.0.join(short);
        for (i, c) in cands.into_iter().enumerate() {
            let (Cand::File(p) | Cand::Adapter(p) | Cand::Model(p)) = &c;
            let shown = if p.is_empty() { ".".into() } else { lossy(p) };
            let branch = r
                .local_ref
                .strip_prefix("refs/heads/")
                .unwrap_or(&r.local_ref);
            let label = format!("{shown} ({branch} at {short})");
            // A path that is not UTF-8 cannot be a model reference: it gets a plain one.
            let dest = match std::str::from_utf8(p) {
                Ok(s) => root.join(s),
                Err(_) => {
                    let (_, name) = split_path(p);
                    root.join(".renamed").join(i.to_string()).join(lossy(name))
                }
            };
            let reference = materialize(&mut tree, &top, &c, &dest, &mut pushed.warnings)?
                .map(|()| match &c {
                    Cand::Adapter(_) => format!("{base}+{}", dest.display()),
                    Cand::File(_) | Cand::Model(_) => dest.display().to_string(),
                })
                .map_err(|why| format!("{label}: {why}"));
            pushed.candidates.push(Candidate { label, reference });
        }
    }
    Ok(pushed)
}

/// Copy candidate `c` out of the tree to `dest`: the file, or a
/// directory's top-level files. `Err(why)` when the candidate cannot be
/// read from the commit (a link to nothing): gated as "could not evaluate".
fn materialize(
    tree: &mut Tree,
    top: &Path,
    c: &Cand,
    dest: &Path,
    warnings: &mut Vec<String>,
) -> Result<std::result::Result<(), String>> {
    let files: Vec<(Vec<u8>, PathBuf)> = match c {
        Cand::File(p) => vec![(p.clone(), dest.to_path_buf())],
        Cand::Adapter(d) | Cand::Model(d) => {
            let mut v = Vec::new();
            for e in tree.list(d)?.iter() {
                if matches!(e.kind, Kind::Blob | Kind::Link) {
                    v.push((join(d, &e.name), dest.join(os(&e.name)?)));
                }
            }
            v
        }
    };
    for (path, to) in files {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        // Placed already by another candidate (maybe as a link): never write through it.
        let _ = std::fs::remove_file(&to);
        match tree.resolve(&path, top)? {
            Found::Blob { path: from, oid } => tree.write_blob(&from, &oid, &to)?,
            Found::Outside {
                path: real,
                link,
                target,
            } => {
                warnings.push(format!(
                    "`{}` is a symbolic link to `{}`, outside the pushed tree: the push carries \
                     only the link; gating the file it names on this machine, {}",
                    lossy(&link),
                    lossy(&target),
                    real.display()
                ));
                link_to(&real, &to)?;
            }
            Found::Missing(why) => return Ok(Err(why)),
        }
    }
    Ok(Ok(()))
}

#[cfg(unix)]
fn link_to(real: &Path, at: &Path) -> Result<()> {
    std::os::unix::fs::symlink(real, at).map_err(|e| Error::io(at, e))
}

#[cfg(not(unix))]
fn link_to(real: &Path, at: &Path) -> Result<()> {
    std::fs::copy(real, at)
        .map(|_| ())
        .map_err(|e| Error::io(real, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_lines_are_four_fields_with_object_names() {
        let a = "a".repeat(40);
        let z = "0".repeat(40);
        let refs = parse_push_lines(&format!("refs/heads/x {a} refs/heads/x {z}\n\n")).unwrap();
        assert_eq!(refs.len(), 1);
        assert!(is_zero(&refs[0].remote_sha));
        for bad in ["refs/heads/x", &format!("refs/heads/x -p refs/heads/x {z}")] {
            assert!(parse_push_lines(bad).is_err(), "{bad}");
        }
    }
}

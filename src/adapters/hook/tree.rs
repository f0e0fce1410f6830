//! A commit's tree read through git, without a checkout: directory
//! listings, symbolic links followed inside the tree, and blobs copied out
//! byte for byte. Paths are raw bytes, as git stores them.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::git_bytes as git;
use crate::error::{Error, Result};

/// A link followed: its path in the tree and its target.
type Link = (Vec<u8>, Vec<u8>);

/// Links followed for one path before giving up, as the kernel's ELOOP.
const MAX_LINKS: usize = 40;

#[cfg(unix)]
pub(super) fn os(bytes: &[u8]) -> Result<OsString> {
    use std::os::unix::ffi::OsStrExt;
    Ok(std::ffi::OsStr::from_bytes(bytes).to_os_string())
}

#[cfg(not(unix))]
pub(super) fn os(bytes: &[u8]) -> Result<OsString> {
    String::from_utf8(bytes.to_vec())
        .map(OsString::from)
        .map_err(|_| Error::Usage(format!("path `{}` is not UTF-8", lossy(bytes))))
}

pub(super) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(super) fn cat(a: &[u8], b: &[u8]) -> Vec<u8> {
    [a, b].concat()
}

pub(super) fn split_z(out: &[u8]) -> Vec<Vec<u8>> {
    out.split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Blob,
    Link,
    Dir,
    /// A submodule: nothing to read.
    Other,
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub name: Vec<u8>,
    pub kind: Kind,
    pub oid: String,
}

/// Where a path in the pushed tree leads.
pub(super) enum Found {
    Blob {
        path: Vec<u8>,
        oid: String,
    },
    /// Outside the tree: the file on this machine, the link that led there and its target.
    Outside {
        path: PathBuf,
        link: Vec<u8>,
        target: Vec<u8>,
    },
    Missing(String),
}

/// A commit's tree, read through git without a checkout.
pub(super) struct Tree<'a> {
    repo: &'a Path,
    commit: String,
    dirs: HashMap<Vec<u8>, Vec<Entry>>,
}

impl<'a> Tree<'a> {
    pub(super) fn new(repo: &'a Path, commit: &str) -> Self {
        Tree {
            repo,
            commit: commit.into(),
            dirs: HashMap::new(),
        }
    }

    /// The entries of directory `dir` ("" is the top), which must be a tree.
    pub(super) fn list(&mut self, dir: &[u8]) -> Result<&[Entry]> {
        if !self.dirs.contains_key(dir) {
            let spec = if dir.is_empty() {
                os(format!("{}^{{tree}}", self.commit).as_bytes())?
            } else {
                os(&cat(format!("{}:", self.commit).as_bytes(), dir))?
            };
            let out = git(self.repo, &[OsString::from("ls-tree"), "-z".into(), spec])?;
            let mut entries = Vec::new();
            for rec in split_z(&out) {
                // `<mode> <type> <oid>\t<name>`
                let Some(tab) = rec.iter().position(|&b| b == b'\t') else {
                    continue;
                };
                let meta = String::from_utf8_lossy(&rec[..tab]).into_owned();
                let mut f = meta.split(' ');
                let (mode, oid) = (f.next().unwrap_or(""), f.nth(1).unwrap_or(""));
                let kind = match mode {
                    "040000" => Kind::Dir,
                    "120000" => Kind::Link,
                    "100644" | "100755" | "100664" => Kind::Blob,
                    _ => Kind::Other,
                };
                entries.push(Entry {
                    name: rec[tab + 1..].to_vec(),
                    kind,
                    oid: oid.to_string(),
                });
            }
            self.dirs.insert(dir.to_vec(), entries);
        }
        Ok(self.dirs.get(dir).map(Vec::as_slice).unwrap_or_default())
    }

    pub(super) fn entry(&mut self, dir: &[u8], name: &[u8]) -> Result<Option<Entry>> {
        Ok(self.list(dir)?.iter().find(|e| e.name == name).cloned())
    }

    /// The entry at `path`, looked up through real directories only.
    pub(super) fn at(&mut self, path: &[u8]) -> Result<Option<Entry>> {
        let (dir, name) = split_path(path);
        let mut d = Vec::new();
        for c in dir.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            match self.entry(&d, c)? {
                Some(e) if e.kind == Kind::Dir => d = join(&d, c),
                _ => return Ok(None),
            }
        }
        self.entry(&d, name)
    }

    fn blob(&self, oid: &str) -> Result<Vec<u8>> {
        git(self.repo, &["cat-file", "blob", oid])
    }

    /// Follow `path` through the tree's links to a file.
    pub(super) fn resolve(&mut self, path: &[u8], top: &Path) -> Result<Found> {
        let mut done: Vec<u8> = Vec::new();
        let mut todo: VecDeque<Vec<u8>> = path.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
        let (mut links, mut last): (usize, Option<Link>) = (0, None);
        let outside =
            |base: PathBuf, rest: &VecDeque<Vec<u8>>, last: Option<Link>| -> Result<Found> {
                let mut p = base;
                for c in rest.iter().filter(|c| !c.is_empty()) {
                    p.push(os(c)?);
                }
                let (link, target) = last.unwrap_or_default();
                Ok(Found::Outside {
                    path: p,
                    link,
                    target,
                })
            };
        while let Some(c) = todo.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if done.is_empty() {
                        return outside(top.join(".."), &todo, last);
                    }
                    done.truncate(done.iter().rposition(|&b| b == b'/').unwrap_or(0));
                    continue;
                }
                _ => {}
            }
            let here = join(&done, &c);
            let Some(e) = self.entry(&done, &c)? else {
                return Ok(Found::Missing(format!(
                    "`{}` is not in the pushed commit",
                    lossy(&here)
                )));
            };
            match e.kind {
                Kind::Dir => done = here,
                Kind::Blob if todo.iter().all(|t| t.is_empty() || t == b".") => {
                    return Ok(Found::Blob {
                        path: here,
                        oid: e.oid,
                    })
                }
                Kind::Blob => {
                    return Ok(Found::Missing(format!(
                        "`{}` is a file, not a directory",
                        lossy(&here)
                    )))
                }
                Kind::Link => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Ok(Found::Missing(format!(
                            "`{}`: too many levels of symbolic links",
                            lossy(path)
                        )));
                    }
                    let target = self.blob(&e.oid)?;
                    last = Some((here, target.clone()));
                    if target.starts_with(b"/") {
                        return outside(PathBuf::from(os(&target)?), &todo, last);
                    }
                    // Relative to the link's own directory, which is `done`.
                    for t in target.split(|&b| b == b'/').rev() {
                        todo.push_front(t.to_vec());
                    }
                }
                Kind::Other => {
                    return Ok(Found::Missing(format!("`{}` is a submodule", lossy(&here))))
                }
            }
        }
        Ok(Found::Missing(format!(
            "`{}` is a directory, not a file",
            lossy(path)
        )))
    }

    /// Copy the blob at `path` to `dest`, through the filters its
    /// attributes name (Git LFS's smudge), streamed when there are none.
    pub(super) fn write_blob(&self, path: &[u8], oid: &str, dest: &Path) -> Result<()> {
        let attr = git(
            self.repo,
            &[
                OsString::from("check-attr"),
                "-z".into(),
                "filter".into(),
                "--".into(),
                os(path)?,
            ],
        )?;
        let filtered = split_z(&attr)
            .get(2)
            .is_some_and(|v| v != b"unspecified" && v != b"unset");
        let file = std::fs::File::create(dest).map_err(|e| Error::io(dest, e))?;
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(self.repo).arg("cat-file");
        if filtered {
            cmd.arg("--filters")
                .arg(os(&cat(b"--path=", path))?)
                .arg(oid);
        } else {
            cmd.args(["blob", oid]);
        }
        let out = cmd
            .stdout(file)
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| Error::Usage(format!("cannot run git: {e}")))?;
        if !out.status.success() {
            return Err(Error::Usage(format!(
                "git cat-file {oid} (`{}`): {}",
                lossy(path),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}

pub(super) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// (`a/b`, `c`) for `a/b/c`; ("", `c`) for `c`.
pub(super) fn split_path(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_at_their_last_slash() {
        assert_eq!(split_path(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_path(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(join(b"", b"c"), b"c");
        assert_eq!(join(b"a", b"c"), b"a/c");
    }
}

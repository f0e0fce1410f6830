//! A policy file and the policies it `extends`, read as one document: each
//! file's keys over those of the policy it names, tables merged key by key,
//! anything else (numbers, lists) replaced whole. Errors still name the file
//! and line a value came from: every file's spans are shifted into one
//! offset space (`start` below), and [`Layers::locate`] maps them back.
//!
//! Hand-written because the `toml` crate merges nothing itself; its spanned
//! `DeTable` is what keeps the spans through the merge.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::error::{Error, Result};

/// How many policies a chain of `extends` may name (cycles are caught
/// before this; it bounds what a hostile file can make us read).
const MAX_DEPTH: usize = 8;

struct Layer {
    path: PathBuf,
    text: String,
    /// Where this file's offsets begin in the shared offset space.
    start: usize,
}

/// The file a user named first, then each policy it extends, in order.
pub(super) struct Layers {
    files: Vec<Layer>,
}

/// What is read from each file before the rest: the link to follow.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    extends: Option<Spanned<String>>,
    #[serde(default)]
    name: Option<toml::Value>,
}

impl Layers {
    /// Reads `text` (the policy at `path`) and every policy its `extends`
    /// chain names, each resolved relative to the file that names it.
    pub fn read(text: &str, path: &Path) -> Result<Self> {
        let mut files: Vec<Layer> = Vec::new();
        let (mut text, mut path) = (text.to_string(), path.to_path_buf());
        let mut start = 0;
        loop {
            let head: Head = crate::util::parse_toml(&text, &path)?;
            let next = head.extends.as_ref().map(|e| {
                let line = crate::util::line_of(&text, e.span().start);
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                (
                    super::Policy::resolve(e.get_ref(), dir),
                    line,
                    e.get_ref().clone(),
                )
            });
            // The base's name would make reports and history call this
            // policy by a name that means other limits.
            match (&next, &head.name) {
                (Some((_, line, _)), None) if files.is_empty() => {
                    return Err(Error::input(
                        &path,
                        *line,
                        "field `name`: a policy that extends another needs its own name",
                    ));
                }
                _ => {}
            }
            let len = text.len();
            files.push(Layer {
                path: path.clone(),
                text,
                start,
            });
            start += len + 1;
            let Some((next, line, written)) = next else {
                break;
            };
            let field = |msg: String| Error::input(&path, line, format!("field `extends`: {msg}"));
            if files.iter().any(|l| same_file(&l.path, &next)) {
                return Err(field(format!(
                    "{written:?} leads back to {}: a chain of policies cannot loop",
                    next.display()
                )));
            }
            if files.len() >= MAX_DEPTH {
                return Err(field(format!(
                    "more than {MAX_DEPTH} policies in one chain of `extends`"
                )));
            }
            text = crate::assets::read_config(&next)
                .map_err(|e| field(e.to_string()))?
                .into_owned();
            path = next;
        }
        Ok(Layers { files })
    }

    /// The file named first (the policy's `source`).
    pub fn path(&self) -> &Path {
        &self.files[0].path
    }

    /// The file and 1-based line of an offset in the shared space.
    pub fn locate(&self, offset: usize) -> (&Path, usize) {
        let l = self.file_at(offset);
        (&l.path, crate::util::line_of(&l.text, offset - l.start))
    }

    /// The file an offset in the shared space falls in.
    fn file_at(&self, offset: usize) -> &Layer {
        self.files
            .iter()
            .rev()
            .find(|l| l.start <= offset)
            .unwrap_or(&self.files[0])
    }

    /// An error about `field`, at the file and line its value came from.
    pub fn error(&self, field: &str, span: Range<usize>, msg: impl std::fmt::Display) -> Error {
        let (path, line) = self.locate(span.start);
        Error::input(path, line, format!("field `{field}`: {msg}"))
    }

    /// Every file's keys over those of the policy it extends, deserialized.
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let mut merged: Option<Spanned<DeTable<'_>>> = None;
        for l in self.files.iter().rev() {
            let t = DeTable::parse(&l.text)
                .map_err(|e| crate::util::toml_error(&e, &l.text, &l.path))?;
            let t = shift_table(t, l.start);
            merged = Some(match merged {
                None => t,
                Some(base) => {
                    let span = t.span();
                    Spanned::new(span, overlay(base.into_inner(), t.into_inner()))
                }
            });
        }
        let Some(doc) = merged else {
            return Err(Error::Usage("no policy to read".into()));
        };
        T::deserialize(toml::de::Deserializer::from(doc)).map_err(|e| {
            // The span is in the shared space: back to its file's own offset.
            let (l, at) = match e.span() {
                Some(s) => {
                    let l = self.file_at(s.start);
                    (l, Some(s.start - l.start))
                }
                None => (&self.files[0], None),
            };
            crate::util::toml_error_at(e.message(), &l.text, &l.path, at)
        })
    }
}

/// Whether two policy paths name one file (built-in ones by name).
fn same_file(a: &Path, b: &Path) -> bool {
    if crate::assets::is_builtin(a) || crate::assets::is_builtin(b) {
        return a == b;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// `top`'s keys over `base`'s: tables merge, anything else is replaced.
fn overlay<'i>(mut base: DeTable<'i>, top: DeTable<'i>) -> DeTable<'i> {
    for (k, v) in top {
        let merged = match (base.remove(k.get_ref().as_ref()), v) {
            (Some(b), v)
                if matches!(b.get_ref(), DeValue::Table(_))
                    && matches!(v.get_ref(), DeValue::Table(_)) =>
            {
                let span = v.span();
                match (b.into_inner(), v.into_inner()) {
                    (DeValue::Table(b), DeValue::Table(t)) => {
                        Spanned::new(span, DeValue::Table(overlay(b, t)))
                    }
                    // Both were just matched as tables.
                    (_, v) => Spanned::new(span, v),
                }
            }
            (_, v) => v,
        };
        base.insert(k, merged);
    }
    base
}

fn shift(span: Range<usize>, by: usize) -> Range<usize> {
    span.start + by..span.end + by
}

fn shift_table(t: Spanned<DeTable<'_>>, by: usize) -> Spanned<DeTable<'_>> {
    let span = shift(t.span(), by);
    Spanned::new(span, shift_entries(t.into_inner(), by))
}

fn shift_entries(t: DeTable<'_>, by: usize) -> DeTable<'_> {
    let mut out = DeTable::new();
    for (k, v) in t {
        let ks = shift(k.span(), by);
        out.insert(Spanned::new(ks, k.into_inner()), shift_value(v, by));
    }
    out
}

fn shift_value(v: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let span = shift(v.span(), by);
    let inner = match v.into_inner() {
        DeValue::Table(t) => DeValue::Table(shift_entries(t, by)),
        DeValue::Array(mut a) => {
            // In place: the array keeps its own flags.
            for item in a.iter_mut() {
                let old = std::mem::replace(item, Spanned::new(0..0, DeValue::Boolean(false)));
                *item = shift_value(old, by);
            }
            DeValue::Array(a)
        }
        other => other,
    };
    Spanned::new(span, inner)
}

#[cfg(test)]
mod tests {
    use super::super::Policy;
    use std::path::Path;

    fn parse(dir: &Path, files: &[(&str, &str)]) -> crate::error::Result<Policy> {
        crate::util::write_tree(dir, files);
        Policy::load(&dir.join(files[0].0))
    }

    #[test]
    fn a_policy_that_extends_the_default_changes_only_what_it_sets() {
        let tmp = tempfile::tempdir().unwrap();
        let p = parse(
            tmp.path(),
            &[(
                "gate.toml",
                "name = \"ours\"\nextends = \"default\"\n[budget]\nexamples = 968\n",
            )],
        )
        .unwrap();
        let mut want = Policy::shipped_default();
        want.name = "ours".into();
        want.budget.examples = 968;
        want.source = tmp.path().join("gate.toml").display().to_string();
        assert_eq!(p, want);
    }

    #[test]
    fn a_chain_merges_tables_replaces_lists_and_resolves_paths_where_written() {
        let tmp = tempfile::tempdir().unwrap();
        let p = parse(
            tmp.path(),
            &[
                (
                    "a.toml",
                    "name = \"a\"\nextends = \"base/b.toml\"\ncritical = []\n[metrics]\nmax_tpr_drop = 0.2\n",
                ),
                (
                    "base/b.toml",
                    "name = \"b\"\nextends = \"strict\"\n[realignment]\ncorpus = \"c.jsonl\"\n",
                ),
            ],
        )
        .unwrap();
        let strict = Policy::load(&Policy::resolve("strict", None)).unwrap();
        assert_eq!(p.name, "a");
        assert!(p.critical.is_empty() && !strict.critical.is_empty());
        assert_eq!(p.metrics.max_tpr_drop, 0.2);
        assert_eq!(p.metrics.max_auroc_drop, strict.metrics.max_auroc_drop);
        assert_eq!(p.budget, strict.budget);
        assert_eq!(p.realignment.corpus, tmp.path().join("base/c.jsonl"));
        assert_eq!(p.realignment.min_prompts, strict.realignment.min_prompts);
    }

    #[test]
    fn errors_name_the_file_and_line_the_value_came_from() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let base = "name = \"b\"\nextends = \"default\"\n[metrics]\nmax_tpr_drop = 7\n";
        // (a.toml, b.toml, the file the error must name, then its line and text;
        // `{dir}` is the directory).
        let cases = [
            // A bad value in the policy extended, not overridden.
            (
                "name = \"a\"\nextends = \"b.toml\"\n",
                base,
                "b.toml",
                "4: field `metrics.max_tpr_drop`: must be between 0 and 1",
            ),
            // A typo in the file the user wrote.
            (
                "name = \"a\"\nextends = \"b.toml\"\n[budget]\nexampels = 900\n",
                "name = \"b\"\nextends = \"default\"\n",
                "a.toml",
                "4: unknown field `exampels`",
            ),
            (
                "name = \"a\"\nextends = \"b.toml\"\n",
                "name = \"b\"\nextends = \"a.toml\"\n",
                "b.toml",
                "2: field `extends`: \"a.toml\" leads back to",
            ),
            (
                "name = \"a\"\n\nextends = \"nowhere.toml\"\n",
                base,
                "a.toml",
                "3: field `extends`: {dir}/nowhere.toml: No such file",
            ),
            (
                "extends = \"default\"\n",
                base,
                "a.toml",
                "1: field `name`: a policy that extends another needs its own name",
            ),
            (
                "name = \"a\"\nextends = \"/dev/zero\"\n",
                base,
                "a.toml",
                "2: field `extends`: /dev/zero: not a regular file",
            ),
            (
                "name = \"a\"\nextends = 3\n",
                base,
                "a.toml",
                "2: field `extends`: invalid type: integer `3`, expected a string",
            ),
        ];
        let dir = d.display().to_string();
        for (a, b, file, rest) in cases {
            let want = format!("{dir}/{file}:{}", rest.replace("{dir}", &dir));
            let e = parse(d, &[("a.toml", a), ("b.toml", b)])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&want), "\n got  {e}\n want {want}");
        }
    }
}

//! The layering src/lib.rs promises, checked: every module imports only
//! modules declared before it (no cycles, nothing upward). The same rule
//! holds inside the folders whose order is the design: the gate's stages,
//! the repair rungs, the lab and the adapters; a stage imports earlier
//! stages, never the pipeline that calls it. Reads the sources as text, so
//! it needs no model and runs in the model-free tier.
//!
//! Hand-written rather than `syn`-based: paths are all it needs, and a full
//! Rust parser as a dev-dependency would cost every fresh clone a build.

use std::path::Path;

/// Modules whose declaration order is a layering, by module path.
const LAYERED: &[&str] = &["", "gate", "gate::repair", "lab", "adapters"];

/// Child modules declared in `text` (`pub mod x;` / `mod x;`), in order.
fn declared(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect()
}

fn ident(s: &str) -> (&str, &str) {
    let n = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (&s[..n], &s[n..])
}

/// The paths a use-tree starting at `s` names: `a::b::{c, d::{e, f}}` gives
/// a::b::c, a::b::d::e, a::b::d::f. Stops at the end of the tree.
fn tree(s: &str) -> Vec<Vec<String>> {
    let mut segs = Vec::new();
    // `crate::{a, b}`: a group with nothing before it.
    let mut rest = s;
    if let Some(group) = s.strip_prefix('{') {
        return group_paths(&segs, group);
    }
    loop {
        let (id, after) = ident(rest);
        if !id.is_empty() {
            segs.push(id.to_string());
        }
        if let Some(group) = after.strip_prefix("::{") {
            return group_paths(&segs, group);
        }
        match after.strip_prefix("::") {
            Some(r) if !id.is_empty() => rest = r,
            _ => return vec![segs],
        }
    }
}

/// The paths of a brace group's members, `group` starting after its `{`.
fn group_paths(prefix: &[String], group: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                out.extend(sub(prefix, &group[start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.extend(sub(prefix, &group[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out
}

fn sub(prefix: &[String], part: &str) -> Vec<Vec<String>> {
    let part = part.trim();
    if part.is_empty() || part == "self" {
        return vec![prefix.to_vec()];
    }
    tree(part)
        .into_iter()
        .map(|t| prefix.iter().cloned().chain(t).collect())
        .collect()
}

/// Absolute module paths a file at `me` names through `crate::` and
/// `super::` (the latter only outside its test module, where it would mean
/// the file itself).
fn imports(text: &str, me: &[String]) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let tests_at = code.find("mod tests").unwrap_or(code.len());
    let mut out = Vec::new();
    let parent = me[..me.len().saturating_sub(1)].to_vec();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut at = 0;
        while let Some(i) = code[at..].find(prefix) {
            let i = at + i;
            at = i + prefix.len();
            // `crate::` inside a longer word (`my_crate::`) is not ours.
            let inside_word = code[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if inside_word || (prefix == "super::" && i >= tests_at) {
                continue;
            }
            for p in tree(&code[at..]) {
                out.push(base.iter().cloned().chain(p).collect());
            }
        }
    }
    out
}

/// Why `import`, named from the file at module path `me`, breaks the
/// layering, if it does. `decls` gives a module's declared children.
fn violation(
    me: &[String],
    import: &[String],
    decls: &dyn Fn(&[String]) -> Option<Vec<String>>,
) -> Option<String> {
    let common = me.iter().zip(import).take_while(|(a, b)| a == b).count();
    let parent = &me[..common];
    let parent_name = parent.join("::");
    let layered = LAYERED.contains(&parent_name.as_str());
    // A module may use what it contains.
    let x = me.get(common)?;
    let children = decls(parent).unwrap_or_default();
    let Some(y) = import.get(common) else {
        return (layered && common > 0).then(|| format!("imports its parent `{parent_name}`"));
    };
    match children.iter().position(|c| c == y) {
        // An item of the parent itself (a re-export or the pipeline's own
        // types): the stage that defines it is where to import it from.
        None if layered && common > 0 => Some(format!(
            "imports `{parent_name}::{y}` from its parent; import it from the module that defines it"
        )),
        None => None,
        Some(j) => {
            let i = children.iter().position(|c| c == x)?;
            (layered && j > i).then(|| {
                format!(
                    "imports `{}`, declared after `{}`",
                    import[..=common].join("::"),
                    me[..=common].join("::")
                )
            })
        }
    }
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            visit(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

/// The module path of a source file: src/gate/risk.rs is gate::risk,
/// src/gate/mod.rs is gate, src/lib.rs is the root.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" && stem != "lib" {
            parts.push(stem.to_string());
        }
    }
    parts
}

/// Every library source file (the binary's main.rs and cli/, and this
/// test, left out) as (path relative to src/, module path, text).
fn library_files(src: &Path) -> Vec<(std::path::PathBuf, Vec<String>, String)> {
    let mut files = Vec::new();
    visit(src, &mut files);
    files
        .into_iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(src).unwrap().to_path_buf();
            let me = module_of(&rel);
            // The binary sits above the whole library; this test only reads.
            if me
                .first()
                .is_some_and(|t| ["main", "cli", "layering"].contains(&t.as_str()))
            {
                return None;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            Some((rel, me, text))
        })
        .collect()
}

#[test]
fn modules_import_only_the_layers_before_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let decls = |m: &[String]| -> Option<Vec<String>> {
        let dir = m.iter().fold(src.clone(), |d, s| d.join(s));
        let file = if m.is_empty() {
            src.join("lib.rs")
        } else {
            dir.join("mod.rs")
        };
        std::fs::read_to_string(file).ok().map(|t| declared(&t))
    };
    let mut bad = Vec::new();
    let mut checked = 0;
    for (rel, me, text) in library_files(&src) {
        for import in imports(&text, &me) {
            if import.len() == 1 && ["Error", "Result"].contains(&import[0].as_str()) {
                continue;
            }
            checked += 1;
            if let Some(why) = violation(&me, &import, &decls) {
                bad.push(format!("{}: {why}", rel.display()));
            }
        }
    }
    bad.sort();
    bad.dedup();
    assert!(
        checked > 100,
        "only {checked} imports seen: is the scanner broken?"
    );
    assert!(
        bad.is_empty(),
        "imports against the layering:\n{}",
        bad.join("\n")
    );
}

fn paths(v: Vec<Vec<String>>) -> Vec<String> {
    v.into_iter().map(|p| p.join("::")).collect()
}

#[test]
fn the_import_scanner_sees_grouped_nested_and_inline_paths() {
    let me = vec!["gate".to_string(), "risk".to_string()];
    let m = imports(
        "use crate::{a, b::c};\n// crate::ignored\nfn f() { crate::d::e(); my_crate::x(); }\nuse crate::gate::{report::{X, Y}, diff};\nuse super::features::F;",
        &me,
    );
    assert_eq!(
        paths(m),
        vec![
            "a",
            "b::c",
            "d::e",
            "gate::report::X",
            "gate::report::Y",
            "gate::diff",
            "gate::features::F"
        ]
    );
}

#[test]
fn the_rule_catches_upward_sibling_and_parent_imports() {
    let decls = |m: &[String]| -> Option<Vec<String>> {
        let v: &[&str] = match m.join("::").as_str() {
            "" => &["util", "gate", "adapters"],
            "gate" => &["diff", "risk", "report"],
            _ => return None,
        };
        Some(v.iter().map(|s| s.to_string()).collect())
    };
    let p = |s: &str| -> Vec<String> { s.split("::").map(str::to_string).collect() };
    let check = |me: &str, imp: &str| violation(&p(me), &p(imp), &decls);
    assert!(check("gate::risk", "gate::diff::DiffReport").is_none());
    assert!(check("gate::risk", "util::write_atomic").is_none());
    assert!(check("gate", "gate::report::Report").is_none());
    assert!(check("gate::risk", "gate::report::Report").is_some());
    assert!(check("gate::risk", "gate::run").is_some());
    assert!(check("gate::diff", "adapters::serve").is_some());
    assert!(check("util", "gate").is_some());
}

/// Flags are the binary's: no library module names the command-line crate
/// (domain enums implement `util::Choice`; `src/cli/choice.rs` makes flags of them).
#[test]
fn the_library_names_no_command_line_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    for (rel, _, text) in library_files(&src) {
        if text.contains("clap::") || text.contains("use clap") {
            bad.push(rel.display().to_string());
        }
    }
    assert!(bad.is_empty(), "library files naming clap: {bad:?}");
}

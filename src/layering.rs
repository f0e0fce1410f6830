//! The layering src/lib.rs promises, checked: every module imports only
//! modules declared before it there (no cycles, nothing upward). Reads the
//! sources as text, so it needs no model and runs in the model-free tier.

use std::collections::BTreeSet;
use std::path::Path;

/// Every top-level module, parsed from lib.rs in declaration order.
fn order() -> Vec<String> {
    let lib = include_str!("lib.rs");
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

/// Top-level modules a source file names through `crate::`.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c}`: every first segment in the braces.
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
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

#[test]
fn modules_import_only_the_layers_before_them() {
    let order = order();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut bad = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        // The binary (main.rs, cli/) sits above the whole library; lib.rs
        // and this test only declare modules.
        if ["main", "cli", "lib", "layering"].contains(&top.as_str()) {
            continue;
        }
        let me = order
            .iter()
            .position(|m| *m == top)
            .unwrap_or_else(|| panic!("{} is not declared in lib.rs", rel.display()));
        let text = std::fs::read_to_string(&f).unwrap();
        for m in imports(&text) {
            if m == top || m == "Error" || m == "Result" {
                continue;
            }
            match order.iter().position(|o| *o == m) {
                Some(i) if i < me => {}
                Some(_) => bad.push(format!(
                    "{} imports `{m}`, declared after `{top}`",
                    rel.display()
                )),
                None => bad.push(format!("{} imports unknown module `{m}`", rel.display())),
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the layering:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_import_scanner_sees_grouped_and_inline_paths() {
    let m = imports(
        "use crate::{a, b::c};\n// crate::ignored\nfn f() { crate::d::e(); }\nuse crate::report::{X, Y};",
    );
    let names: Vec<&str> = m.iter().map(String::as_str).collect();
    assert_eq!(names, vec!["a", "b", "d", "report"]);
}

use super::*;

fn copy_monitor(name: &str, to: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("monitors/smollm2")
        .join(name);
    std::fs::create_dir_all(to).unwrap();
    for f in [JSON_FILE, TENSOR_FILE] {
        std::fs::copy(src.join(f), to.join(f)).unwrap();
    }
}

fn rename(dir: &Path, name: &str) {
    let p = dir.join(JSON_FILE);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["name"] = name.into();
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn a_name_that_would_escape_repaired_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    copy_monitor("toxicity-l15", &m);
    for bad in ["../../etc/x", "a/b", "..", "", "x`y", "name with\nnewline"] {
        rename(&m, bad);
        let e = Monitor::load(&m).err().unwrap().to_string();
        assert!(
            e.contains("monitor.json") && e.contains("name"),
            "{bad:?}: {e}"
        );
    }
    rename(&m, "my_pii-monitor.v2");
    assert!(Monitor::load(&m).is_ok());
}

#[test]
fn a_symlink_loop_ends_and_duplicate_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    copy_monitor("toxicity-l15", &suite.join("a/toxicity-l15"));
    // A link back to the suite's root and one to the monitor itself.
    std::os::unix::fs::symlink(&suite, suite.join("a/loop")).unwrap();
    std::os::unix::fs::symlink(suite.join("a/toxicity-l15"), suite.join("again")).unwrap();
    let ms = load_suite(&suite).unwrap();
    assert_eq!(ms.len(), 1);
    // A second monitor under the same name is an error naming both places.
    copy_monitor("toxicity-l22", &suite.join("b"));
    rename(&suite.join("b"), "toxicity-l15");
    let e = load_suite(&suite).err().unwrap().to_string();
    assert!(e.contains("unique") && e.contains("toxicity-l15"), "{e}");
}

#[test]
fn a_suite_path_that_holds_no_suite_says_what_one_is() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    copy_monitor("toxicity-l15", &m);
    // A monitor's own monitor.json is that monitor.
    let ms = load_suite(&m.join(JSON_FILE)).unwrap();
    assert_eq!(ms[0].meta.name, "toxicity-l15");
    // Any other file, and a directory with no monitor in it, is an
    // error naming the path and what a suite is.
    let file = tmp.path().join("suite.json");
    std::fs::write(&file, "{}").unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for (p, what) in [(&file, "this is a file"), (&empty, "no monitor here")] {
        let e = load_suite(p).err().unwrap().to_string();
        assert!(
            e.starts_with(&p.display().to_string())
                && e.contains(what)
                && e.contains("a suite is a directory of monitors"),
            "{e}"
        );
    }
}

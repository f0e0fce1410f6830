//! `hf:` references the way users have the Hub set up: HF_ENDPOINT (a
//! mirror or a private Hub, here a fake one on loopback), HF_TOKEN or the
//! token file, and gated, private and missing repositories answered with a
//! message that says which and what to do.

use std::path::Path;

use crate::fakes::{FakeHub, HfRepo};
use crate::harness::*;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn hub_with_gated_repo(dir: &Path) -> FakeHub {
    let hub = FakeHub::start();
    let junk = dir.join("model.safetensors");
    std::fs::write(&junk, b"not safetensors").unwrap();
    hub.add_repo(
        "acme/gated",
        HfRepo {
            sha: SHA.into(),
            files: vec![
                (
                    "config.json".into(),
                    fixture("reference/smollm2.config.json"),
                ),
                (
                    "tokenizer.json".into(),
                    fixture("reference/smollm2.config.json"),
                ),
                ("model.safetensors".into(), junk),
            ],
        },
    );
    hub.gate("acme/gated", "hf_accepted");
    hub
}

/// `probegate inspect` on `reference` against the fake Hub, with a private
/// cache and no token unless the test sets one.
fn inspect(hub: &FakeHub, home: &Path, reference: &str) -> assert_cmd::Command {
    let mut c = bin();
    c.args(["inspect", "--model", reference])
        .env("HF_ENDPOINT", hub.url())
        .env("HF_HOME", home)
        .env("HF_HUB_CACHE", home.join("hub"))
        .env_remove("HF_TOKEN")
        .env_remove("HF_TOKEN_PATH");
    c
}

#[test]
fn gated_private_and_missing_repositories_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = hub_with_gated_repo(tmp.path());
    let gated = format!("hf:acme/gated@{SHA}");

    // No token: 401, and the message says how to give one.
    let o = inspect(&hub, tmp.path(), &gated).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("401") && err.contains("HF_TOKEN"), "{err}");

    // A token whose account has not accepted the terms: 403, gated, and the
    // page to accept them on, at the configured endpoint.
    let o = inspect(&hub, tmp.path(), &gated)
        .env("HF_TOKEN", "hf_other")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("403")
            && err.contains("gated")
            && err.contains(&format!("{}/acme/gated", hub.url())),
        "{err}"
    );

    // A missing repository: 404 and the name and revision to check.
    let o = inspect(&hub, tmp.path(), &format!("hf:acme/absent@{SHA}"))
        .env("HF_TOKEN", "hf_accepted")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("404") && err.contains("acme/absent"), "{err}");
}

#[test]
fn the_token_file_reaches_the_configured_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = hub_with_gated_repo(tmp.path());
    // Where `huggingface-cli login` writes it: $HF_HOME/token.
    std::fs::write(tmp.path().join("token"), "hf_accepted\n").unwrap();
    let o = inspect(&hub, tmp.path(), &format!("hf:acme/gated@{SHA}"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // The weights are junk, so it still fails, but past the Hub: every file
    // was fetched from the fake endpoint with the token.
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("401") && !err.contains("403"), "{err}");
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        let reqs = hub
            .log()
            .matching("GET", &format!("/acme/gated/resolve/{SHA}/{f}"));
        assert!(!reqs.is_empty(), "{f} never requested");
        assert!(
            reqs.iter()
                .all(|r| r.auth.as_deref() == Some("Bearer hf_accepted")),
            "{f}: {reqs:?}"
        );
    }
    // HF_TOKEN_PATH names another file, and HF_TOKEN wins over any file
    // (each run with an empty cache, so it must ask the Hub).
    let other = tmp.path().join("elsewhere");
    std::fs::write(&other, "hf_from_path").unwrap();
    for (i, (var, val)) in [
        ("HF_TOKEN_PATH", other.display().to_string()),
        ("HF_TOKEN", "hf_other".to_string()),
    ]
    .iter()
    .enumerate()
    {
        let o = inspect(&hub, tmp.path(), &format!("hf:acme/gated@{SHA}"))
            .env("HF_HUB_CACHE", tmp.path().join(format!("empty-cache-{i}")))
            .env(var, val)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("403"), "{var}: {err}");
    }
}

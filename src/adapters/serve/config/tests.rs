//! The configuration's rules, each on a small file.

use super::*;

const GOOD: &str = r#"
listen = "127.0.0.1:0"
state_dir = "state"
workers = 2
read_token_env = "READ_TOKEN"

[huggingface]
endpoint = "http://127.0.0.1:9/"
webhook_secret_env = "HF_SECRET"

[mlflow]
tracking_uri = "http://127.0.0.1:9"
webhook_secret_env = "MLFLOW_SECRET"

[[target]]
registry = "huggingface"
name = "acme/adapter"
base = "smollm2"
monitors = "monitors/smollm2"
"#;

fn env(k: &str) -> Option<String> {
    match k {
        "HF_SECRET" => Some("hf-secret-of-16+chars".into()),
        "MLFLOW_SECRET" => Some("mlflow-secret-of-16+chars".into()),
        "READ_TOKEN" => Some("a-long-read-token".into()),
        _ => None,
    }
}

/// The error `text` is refused with, as the user reads it.
fn refused(text: &str, path: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    Config::parse(text, Path::new(path), env)
        .unwrap_err()
        .to_string()
}

#[test]
fn parses_and_resolves_relative_paths() {
    let c = Config::parse(GOOD, Path::new("/etc/pg/serve.toml"), &env).unwrap();
    assert_eq!(c.workers, 2);
    assert_eq!(c.state_dir, PathBuf::from("/etc/pg/state"));
    assert_eq!(
        c.huggingface.as_ref().unwrap().endpoint,
        "http://127.0.0.1:9"
    );
    let t = c.target(Registry::Huggingface, "acme/adapter").unwrap();
    assert_eq!(t.monitors, PathBuf::from("/etc/pg/monitors/smollm2"));
    // No policy or data named: the built-in ones, wherever the server runs.
    assert_eq!(t.policy, PathBuf::from(crate::assets::DEFAULT_POLICY));
    assert_eq!(t.data, None);
    assert!(c.target(Registry::Mlflow, "acme/adapter").is_none());
    assert_eq!(c.limits.job_timeout_secs, 3600);
    assert!(c.limits.job_memory_mib >= 1024);
    assert_eq!(c.limits.max_queued_jobs, 1000);
    assert_eq!(
        c.huggingface.as_ref().unwrap().refs,
        ["refs/heads/*", "refs/pr/*"]
    );
}

#[test]
fn refs_are_branch_or_pull_request_globs() {
    let with = |refs: &str| {
        let text = GOOD.replace(
            "webhook_secret_env = \"HF_SECRET\"",
            &format!("webhook_secret_env = \"HF_SECRET\"\nrefs = {refs}"),
        );
        Config::parse(&text, Path::new("s.toml"), &env)
    };
    let c = with(r#"["refs/heads/main", "refs/pr/*"]"#).unwrap();
    assert_eq!(
        c.huggingface.unwrap().refs,
        ["refs/heads/main", "refs/pr/*"]
    );
    let e = with(r#"["refs/tags/*"]"#).unwrap_err().to_string();
    assert!(
        e.contains("huggingface.refs") && e.contains("refs/tags/*"),
        "{e}"
    );
    assert!(with("[]").is_err());
}

#[test]
fn reads_need_a_token_or_an_explicit_choice() {
    let c = Config::parse(GOOD, Path::new("s.toml"), &env).unwrap();
    assert_eq!(c.reads, Reads::Token("a-long-read-token".into()));
    assert!(!format!("{c:?}").contains("a-long-read-token"));
    let public = GOOD.replace("read_token_env = \"READ_TOKEN\"", "public_reads = true");
    let c = Config::parse(&public, Path::new("s.toml"), &env).unwrap();
    assert_eq!(c.reads, Reads::Public);
    let neither = GOOD.replace("read_token_env = \"READ_TOKEN\"\n", "");
    let e = refused(&neither, "s.toml", &env);
    assert!(e.contains("public_reads"), "{e}");
    let short = |k: &str| match k {
        "READ_TOKEN" => Some("short".to_string()),
        _ => env(k),
    };
    let e = refused(GOOD, "s.toml", &short);
    assert!(e.contains("shorter than 16"), "{e}");
}

#[test]
fn secrets_are_long_redacted_and_bounded() {
    let c = Config::parse(GOOD, Path::new("s.toml"), &env).unwrap();
    let shown = format!("{c:?}");
    for secret in [
        "hf-secret-of-16+chars",
        "mlflow-secret-of-16+chars",
        "a-long-read-token",
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let short = |k: &str| match k {
        "HF_SECRET" => Some("s1".to_string()),
        _ => env(k),
    };
    let e = refused(GOOD, "s.toml", &short);
    assert!(
        e.contains("shorter than 16") && e.contains("HF_SECRET"),
        "{e}"
    );
    let text = GOOD.replace(
        "tracking_uri = \"http://127.0.0.1:9\"",
        "tracking_uri = \"https://alice:pw-123@mlflow.example:5000\"\nmax_skew_seconds = 86400",
    );
    let e = refused(&text, "s.toml", &env);
    assert!(e.contains("max_skew_seconds"), "{e}");
    let c = Config::parse(&text.replace("86400", "60"), Path::new("s.toml"), &env).unwrap();
    assert!(!format!("{c:?}").contains("pw-123"));
    let msg = "https://alice:pw-123@mlflow.example:5000/api/2.0/x: HTTP 500 (token hf-secret-of-16+chars)";
    assert_eq!(
        c.redact(msg),
        "https://***@mlflow.example:5000/api/2.0/x: HTTP 500 (token <redacted>)"
    );
    let text = GOOD.replace("workers = 2", "workers = 2\ncallback_retries = 1000");
    assert!(Config::parse(&text, Path::new("s.toml"), &env).is_err());
}

#[test]
fn limits_are_bounded() {
    let text = format!("{GOOD}\n[limits]\njob_timeout_secs = 60\njob_memory_mib = 512\n");
    let c = Config::parse(&text, Path::new("s.toml"), &env).unwrap();
    assert_eq!(
        c.limits,
        Limits {
            job_timeout_secs: 60,
            job_memory_mib: 512,
            ..c.limits
        }
    );
    let text = format!("{GOOD}\n[limits]\njob_memory_mib = 1\n");
    let e = refused(&text, "s.toml", &env);
    assert!(e.contains("limits.job_memory_mib"), "{e}");
}

#[test]
fn missing_secret_names_the_line_and_variable() {
    let e = refused(GOOD, "serve.toml", &|_| None);
    assert!(e.starts_with("serve.toml:9:"), "{e}");
    assert!(e.contains("HF_SECRET"), "{e}");
}

#[test]
fn bad_fields_point_at_their_line() {
    let text = GOOD.replace("workers = 2", "workers = 0");
    let e = refused(&text, "s.toml", &env);
    assert!(e.starts_with("s.toml:4:") && e.contains("workers"), "{e}");
    let text = GOOD.replace("127.0.0.1:0", "localhost-ish");
    let e = refused(&text, "s.toml", &env);
    assert!(e.starts_with("s.toml:2:") && e.contains("listen"), "{e}");
    let text = GOOD.replace("workers = 2", "workers = 2\nwrokers = 3");
    let e = refused(&text, "s.toml", &env);
    assert!(e.contains("wrokers"), "{e}");
}

/// The shipped example must stay loadable (secrets from a fake environment).
#[test]
fn shipped_example_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/serve.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = Config::parse(&text, &path, &|_| Some("x".repeat(MIN_SECRET_LEN))).unwrap();
    assert_eq!(c.targets.len(), 2);
    assert!(c
        .targets
        .iter()
        .all(|t| t.monitors.is_dir() && crate::assets::is_file(&t.policy)));
    assert_eq!(
        c.targets[1].policy,
        Path::new("builtin:policies/strict.toml")
    );
}

#[test]
fn the_queue_is_redb_unless_a_postgres_url_is_given_and_its_password_stays_hidden() {
    let p = Path::new("/etc/pg/serve.toml");
    assert_eq!(Config::parse(GOOD, p, &env).unwrap().queue, Queue::Redb);
    let url = "postgres://probegate:pw-hunter2@db.internal:5432/probegate";
    let env_url = |k: &str| match k {
        "QUEUE_URL" => Some(url.to_string()),
        k => env(k),
    };
    let text = format!("{GOOD}\n[queue]\nurl_env = \"QUEUE_URL\"\nlease_secs = 5\n");
    let c = Config::parse(&text, p, &env_url).unwrap();
    assert_eq!(
        c.queue,
        Queue::Postgres {
            url: url.into(),
            field: "queue.url_env",
            lease_secs: 5
        }
    );
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("postgres://***@db.internal:5432/probegate"));
    let r = c.redact(&format!("cannot reach {url}; password pw-hunter2"));
    assert!(!r.contains("hunter2"), "{r}");
    // Straight in the file works too.
    let text = format!("{GOOD}\n[queue]\nurl = \"{url}\"\n");
    let c = Config::parse(&text, p, &env).unwrap();
    assert!(matches!(
        c.queue,
        Queue::Postgres {
            lease_secs: 30,
            field: "queue.url",
            ..
        }
    ));

    let bad = |q: &str| {
        Config::parse(&format!("{GOOD}\n[queue]\n{q}\n"), p, &env_url)
            .unwrap_err()
            .to_string()
    };
    let e = bad("");
    assert!(
        e.contains("serve.toml") && e.contains("[queue]") && e.contains("url_env"),
        "{e}"
    );
    let e = bad(&format!("url = \"{url}\"\nurl_env = \"QUEUE_URL\""));
    assert!(e.contains("one of `url` and `url_env`"), "{e}");
    let e = bad("url = \"mysql://u:hunter2@h/db\"");
    assert!(
        e.contains("field `queue.url`") && !e.contains("hunter2"),
        "{e}"
    );
    let e = bad("url_env = \"UNSET\"");
    assert!(
        e.contains("field `queue.url_env`") && e.contains("UNSET"),
        "{e}"
    );
    let e = bad(&format!("url = \"{url}\"\nlease_secs = 1"));
    assert!(e.contains("queue.lease_secs"), "{e}");
}

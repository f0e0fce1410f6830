//! Webhook authentication and payload parsing, as pure functions over the
//! raw request (headers and bytes) so each rule is tested alone.
//!
//! Hugging Face sends its secret verbatim in `X-Webhook-Secret`; MLflow signs
//! `{delivery id}.{timestamp}.{raw body}` with HMAC-SHA256 and sends
//! `X-MLflow-Signature: v1,<base64>`. Both are compared in constant time, and
//! MLflow's over the raw bytes before any parsing.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::store::Source;

/// Why a delivery was refused, and the HTTP status that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub msg: String,
}

fn reject(status: u16, msg: impl Into<String>) -> Reject {
    Reject {
        status,
        msg: msg.into(),
    }
}

/// What a valid delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Jobs(Vec<Source>),
    /// Authentic, but an event probegate does not act on.
    Ignored(String),
}

pub fn secret_matches(given: &[u8], expected: &[u8]) -> bool {
    // ct_eq on unequal lengths returns false without an early exit on content.
    given.ct_eq(expected).into()
}

pub fn hf_verify(secret_header: Option<&[u8]>, secret: &str) -> Result<(), Reject> {
    match secret_header {
        None => Err(reject(401, "missing X-Webhook-Secret")),
        Some(s) if secret_matches(s, secret.as_bytes()) => Ok(()),
        Some(_) => Err(reject(401, "wrong X-Webhook-Secret")),
    }
}

#[derive(Deserialize)]
struct HfPayload {
    event: HfEvent,
    repo: HfRepo,
    webhook: HfWebhook,
    #[serde(default, rename = "updatedRefs")]
    updated_refs: Vec<HfRef>,
}

#[derive(Deserialize)]
struct HfEvent {
    action: String,
    scope: String,
}

#[derive(Deserialize)]
struct HfRepo {
    #[serde(rename = "type")]
    kind: String,
    name: String,
}

#[derive(Deserialize)]
struct HfWebhook {
    id: String,
}

#[derive(Deserialize)]
struct HfRef {
    #[serde(rename = "ref")]
    name: String,
    #[serde(rename = "newSha")]
    new_sha: Option<String>,
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `pattern` with `*` matching any run of characters (`refs/pr/*`).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The refs a Hub delivery may make jobs of when the configuration names none.
pub const DEFAULT_REFS: &[&str] = &["refs/heads/*", "refs/pr/*"];

/// [`hf_parse_refs`] with [`DEFAULT_REFS`].
pub fn hf_parse(body: &[u8]) -> Result<Parsed, Reject> {
    let refs: Vec<String> = DEFAULT_REFS.iter().map(|r| r.to_string()).collect();
    hf_parse_refs(body, &refs)
}

/// The refs of a Hub delivery that become jobs: branches and pull requests
/// that match one of `refs` (globs).
pub fn hf_parse_refs(body: &[u8], refs: &[String]) -> Result<Parsed, Reject> {
    let p: HfPayload = serde_json::from_slice(body)
        .map_err(|e| reject(400, format!("malformed Hugging Face payload: {e}")))?;
    if p.event.scope != "repo.content" || p.event.action != "update" {
        return Ok(Parsed::Ignored(format!(
            "event {}/{} is not a content update",
            p.event.scope, p.event.action
        )));
    }
    if p.repo.kind != "model" {
        return Ok(Parsed::Ignored(format!(
            "repository type `{}` is not a model",
            p.repo.kind
        )));
    }
    let mut jobs = Vec::new();
    for r in p.updated_refs {
        // A deleted ref has no new commit to check; tags point at commits already checked.
        let Some(sha) = r.new_sha else { continue };
        if !(r.name.starts_with("refs/heads/") || r.name.starts_with("refs/pr/")) {
            continue;
        }
        if !refs.iter().any(|g| glob_match(g, &r.name)) {
            continue;
        }
        if !is_sha(&sha) {
            return Err(reject(
                400,
                format!("updatedRefs: `{sha}` is not a commit sha"),
            ));
        }
        jobs.push(Source::Huggingface {
            repo: p.repo.name.clone(),
            repo_type: p.repo.kind.clone(),
            git_ref: r.name,
            new_sha: sha.to_lowercase(),
            webhook_id: p.webhook.id.clone(),
        });
    }
    if jobs.is_empty() {
        return Ok(Parsed::Ignored(
            "no branch or pull request in the configured refs was updated".into(),
        ));
    }
    Ok(Parsed::Jobs(jobs))
}

pub struct MlflowHeaders<'a> {
    pub signature: Option<&'a str>,
    pub delivery_id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
}

pub fn mlflow_signature(secret: &str, delivery_id: &str, timestamp: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes any key length"),
    };
    mac.update(delivery_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// What the headers alone can refuse, before a body is read: a missing
/// header, a signature not of the `v1,<base64>` shape, a timestamp outside
/// the window.
pub fn mlflow_precheck(
    h: &MlflowHeaders<'_>,
    now_unix: i64,
    max_skew_seconds: u64,
) -> Result<(), Reject> {
    let sig = h.signature.map(str::trim).unwrap_or_default();
    let shaped = sig
        .strip_prefix("v1,")
        .is_some_and(|b| !b.is_empty() && b.len() <= 128);
    if h.signature.is_some() && !shaped {
        return Err(reject(401, "X-MLflow-Signature is not `v1,<base64>`"));
    }
    mlflow_verify_with(h, None, "", now_unix, max_skew_seconds).map(|_| ())
}

/// Checks headers, timestamp window and signature; returns the delivery id.
pub fn mlflow_verify<'a>(
    h: &MlflowHeaders<'a>,
    body: &[u8],
    secret: &str,
    now_unix: i64,
    max_skew_seconds: u64,
) -> Result<&'a str, Reject> {
    mlflow_verify_with(h, Some(body), secret, now_unix, max_skew_seconds)
}

/// The headers and the window; the signature too when `body` is given.
fn mlflow_verify_with<'a>(
    h: &MlflowHeaders<'a>,
    body: Option<&[u8]>,
    secret: &str,
    now_unix: i64,
    max_skew_seconds: u64,
) -> Result<&'a str, Reject> {
    let (Some(sig), Some(id), Some(ts)) = (h.signature, h.delivery_id, h.timestamp) else {
        return Err(reject(
            401,
            "missing X-MLflow-Signature, X-MLflow-Delivery-Id or X-MLflow-Timestamp",
        ));
    };
    let t: i64 = ts.trim().parse().map_err(|_| {
        reject(
            400,
            format!("X-MLflow-Timestamp `{ts}` is not unix seconds"),
        )
    })?;
    if now_unix.abs_diff(t) > max_skew_seconds {
        return Err(reject(
            401,
            format!(
                "X-MLflow-Timestamp is {} s away from now (limit {max_skew_seconds} s)",
                now_unix.abs_diff(t)
            ),
        ));
    }
    let Some(body) = body else {
        return Ok(id);
    };
    let expected = mlflow_signature(secret, id, ts, body);
    if !secret_matches(sig.trim().as_bytes(), expected.as_bytes()) {
        return Err(reject(401, "X-MLflow-Signature does not match"));
    }
    Ok(id)
}

#[derive(Deserialize)]
struct MlflowEnvelope {
    entity: String,
    action: String,
    data: serde_json::Value,
}

pub fn mlflow_parse(body: &[u8], delivery_id: &str) -> Result<Parsed, Reject> {
    let env: MlflowEnvelope = serde_json::from_slice(body)
        .map_err(|e| reject(400, format!("malformed MLflow payload: {e}")))?;
    let event = format!("{}.{}", env.entity, env.action);
    if event != "model_version.created" && event != "model_version_alias.created" {
        return Ok(Parsed::Ignored(format!("event {event} is not gated")));
    }
    let field = |k: &str| -> Result<String, Reject> {
        match env.data.get(k) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
            _ => Err(reject(400, format!("MLflow payload: data.{k} is missing"))),
        }
    };
    Ok(Parsed::Jobs(vec![Source::Mlflow {
        name: field("name")?,
        version: field("version")?,
        event,
        delivery_id: delivery_id.to_string(),
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn hf_body(scope: &str, refs: &str) -> Vec<u8> {
        format!(
            r#"{{"event":{{"action":"update","scope":"{scope}"}},
               "repo":{{"type":"model","name":"acme/a","id":"x","private":false,"headSha":"{SHA}"}},
               "webhook":{{"id":"w1","version":3}},"updatedRefs":{refs}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn only_the_configured_refs_become_jobs() {
        assert!(glob_match("refs/pr/*", "refs/pr/12"));
        assert!(glob_match("refs/heads/main", "refs/heads/main"));
        assert!(!glob_match("refs/heads/main", "refs/heads/main2"));
        assert!(glob_match(
            "refs/heads/release-*-rc",
            "refs/heads/release-2-rc"
        ));
        assert!(!glob_match(
            "refs/heads/release-*-rc",
            "refs/heads/release-2"
        ));
        let refs = format!(
            r#"[{{"ref":"refs/heads/main","newSha":"{SHA}"}},
                {{"ref":"refs/heads/dev","newSha":"{SHA}"}},
                {{"ref":"refs/pr/3","newSha":"{SHA}"}}]"#
        );
        let only = ["refs/heads/main".to_string(), "refs/pr/*".to_string()];
        let Parsed::Jobs(j) = hf_parse_refs(&hf_body("repo.content", &refs), &only).unwrap() else {
            panic!("expected jobs")
        };
        let names: Vec<&str> = j
            .iter()
            .map(|s| match s {
                Source::Huggingface { git_ref, .. } => git_ref.as_str(),
                Source::Mlflow { .. } => "",
            })
            .collect();
        assert_eq!(names, ["refs/heads/main", "refs/pr/3"]);
        let none = ["refs/heads/prod".to_string()];
        assert!(matches!(
            hf_parse_refs(&hf_body("repo.content", &refs), &none).unwrap(),
            Parsed::Ignored(_)
        ));
    }

    #[test]
    fn hf_secret_is_checked() {
        assert!(hf_verify(Some(b"s3cret"), "s3cret").is_ok());
        assert_eq!(hf_verify(Some(b"s3cre"), "s3cret").unwrap_err().status, 401);
        assert_eq!(hf_verify(None, "s3cret").unwrap_err().status, 401);
    }

    #[test]
    fn hf_content_updates_become_jobs_per_ref() {
        let refs = format!(
            r#"[{{"ref":"refs/heads/main","oldSha":null,"newSha":"{SHA}"}},
                {{"ref":"refs/pr/3","oldSha":"{SHA}","newSha":"{SHA}"}},
                {{"ref":"refs/heads/old","oldSha":"{SHA}","newSha":null}},
                {{"ref":"refs/tags/v1","oldSha":null,"newSha":"{SHA}"}}]"#
        );
        let Parsed::Jobs(j) = hf_parse(&hf_body("repo.content", &refs)).unwrap() else {
            panic!("expected jobs")
        };
        assert_eq!(j.len(), 2);
        assert_eq!(j[0].dedupe_key(), format!("hf:w1:{SHA}"));
        assert!(matches!(&j[1], Source::Huggingface { git_ref, .. } if git_ref == "refs/pr/3"));
        assert!(matches!(
            hf_parse(&hf_body("discussion", "[]")).unwrap(),
            Parsed::Ignored(_)
        ));
        let bad = r#"[{"ref":"refs/heads/main","newSha":"not-a-sha"}]"#;
        assert_eq!(
            hf_parse(&hf_body("repo.content", bad)).unwrap_err().status,
            400
        );
        assert_eq!(hf_parse(b"{not json").unwrap_err().status, 400);
    }

    #[test]
    fn mlflow_headers_are_checked_before_the_body() {
        let now = 1_700_000_000i64;
        let ts: &'static str = Box::leak(now.to_string().into_boxed_str());
        let h = |sig: Option<&'static str>| MlflowHeaders {
            signature: sig,
            delivery_id: Some("d"),
            timestamp: Some(ts),
        };
        assert!(mlflow_precheck(&h(Some("v1,abcd")), now, 300).is_ok());
        let status = |r: Result<(), Reject>| r.unwrap_err().status;
        assert_eq!(
            status(mlflow_precheck(&h(Some("sha256=ab")), now, 300)),
            401
        );
        assert_eq!(status(mlflow_precheck(&h(None), now, 300)), 401);
        assert_eq!(
            status(mlflow_precheck(&h(Some("v1,abcd")), now + 301, 300)),
            401
        );
    }

    #[test]
    fn mlflow_signature_matches_the_python_reference() {
        // From mlflow/webhooks/delivery.py's scheme, computed with Python's hmac:
        // base64(hmac.new(b"secret", b"d1.1700000000.{}", sha256).digest())
        let sig = mlflow_signature("secret", "d1", "1700000000", b"{}");
        assert_eq!(sig, "v1,G77iR07mhxRhj4uXzCbRdU/9tFV0ULbzSFKOaC7ieFc=");
    }

    #[test]
    fn mlflow_rejects_forgery_staleness_and_missing_headers() {
        let body = br#"{"entity":"model_version","action":"created","timestamp":"t","data":{"name":"m","version":"4"}}"#;
        let now = 1_700_000_000i64;
        let ts = now.to_string();
        let sig = mlflow_signature("k", "d9", &ts, body);
        let h = |s: &'static str| MlflowHeaders {
            signature: Some(s),
            delivery_id: Some("d9"),
            timestamp: Some(Box::leak(ts.clone().into_boxed_str())),
        };
        let good = Box::leak(sig.into_boxed_str());
        assert_eq!(mlflow_verify(&h(good), body, "k", now, 300).unwrap(), "d9");
        // Wrong secret, tampered body, stale and future timestamps.
        assert_eq!(
            mlflow_verify(&h(good), body, "other", now, 300)
                .unwrap_err()
                .status,
            401
        );
        let mut tampered = body.to_vec();
        tampered[40] ^= 1;
        assert_eq!(
            mlflow_verify(&h(good), &tampered, "k", now, 300)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            mlflow_verify(&h(good), body, "k", now + 301, 300)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            mlflow_verify(&h(good), body, "k", now - 301, 300)
                .unwrap_err()
                .status,
            401
        );
        let none = MlflowHeaders {
            signature: None,
            delivery_id: Some("d9"),
            timestamp: Some("1"),
        };
        assert_eq!(
            mlflow_verify(&none, body, "k", now, 300)
                .unwrap_err()
                .status,
            401
        );
        let Parsed::Jobs(j) = mlflow_parse(body, "d9").unwrap() else {
            panic!()
        };
        assert_eq!(j[0].dedupe_key(), "mlflow:d9");
        let other = br#"{"entity":"registered_model","action":"created","data":{"name":"m"}}"#;
        assert!(matches!(
            mlflow_parse(other, "x").unwrap(),
            Parsed::Ignored(_)
        ));
        let missing = br#"{"entity":"model_version","action":"created","data":{"name":"m"}}"#;
        assert_eq!(mlflow_parse(missing, "x").unwrap_err().status, 400);
    }
}

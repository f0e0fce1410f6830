//! `probegate serve`'s listener against slow and unauthenticated clients:
//! a webhook is refused on its headers before its body is read, idle
//! connections are closed, and connections beyond the cap wait their turn.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::*;
use crate::fakes::{FakeHub, FakeMlflow};

fn addr(s: &Server) -> String {
    s.url.trim_start_matches("http://").to_string()
}

/// Send `head` and the first bytes of a body, never the rest; the answer
/// the server gives meanwhile, if any within `wait`.
fn answer_without_body(s: &Server, head: &str, wait: Duration) -> String {
    let mut c = TcpStream::connect(addr(s)).unwrap();
    c.set_read_timeout(Some(wait)).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(b"{\"event\":").unwrap();
    let mut buf = [0u8; 512];
    let n = c.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[test]
fn a_webhook_is_refused_on_its_headers_before_its_body_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (hub, ml) = (FakeHub::start(), FakeMlflow::start());
    let cfg = config(tmp.path(), &hub.url(), &ml.url(), 1);
    let s = start(&cfg, &tmp.path().join("serve.log"));
    let wait = Duration::from_secs(5);
    let hf = "POST /webhooks/huggingface HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: wrong\r\n\
              Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n";
    let a = answer_without_body(&s, hf, wait);
    assert!(
        a.starts_with("HTTP/1.1 401"),
        "no refusal before the body: {a:?}"
    );
    let ml_head = "POST /webhooks/mlflow HTTP/1.1\r\nHost: x\r\nX-MLflow-Signature: v1,AAAA\r\n\
                   X-MLflow-Delivery-Id: d\r\nX-MLflow-Timestamp: 1\r\nContent-Length: 60000\r\n\r\n";
    let a = answer_without_body(&s, ml_head, wait);
    assert!(
        a.starts_with("HTTP/1.1 401"),
        "no refusal before the body: {a:?}"
    );
}

/// A sender whose headers pass but whose body is over `max_body_bytes`
/// (65536 here) gets the 413, not a reset, whether it declared the length or
/// streamed chunks: the server discards the body before it answers. The
/// pause lets a server that answered early and closed do so before the rest
/// is written, so without the discard the writes fail or the read finds a
/// reset.
#[test]
fn an_oversized_body_gets_its_413_not_a_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let (hub, ml) = (FakeHub::start(), FakeMlflow::start());
    let cfg = config(tmp.path(), &hub.url(), &ml.url(), 1);
    let s = start(&cfg, &tmp.path().join("serve.log"));
    let chunk = [b' '; 8192];
    for chunked in [false, true] {
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {}", 25 * chunk.len())
        };
        let head = format!(
            "POST /webhooks/huggingface HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: {HF_SECRET}\r\n\
             Content-Type: application/json\r\n{framing}\r\n\r\n"
        );
        let mut c = TcpStream::connect(addr(&s)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(head.as_bytes()).unwrap();
        let mut send = |bytes: &[u8]| {
            if let Err(e) = c.write_all(bytes) {
                panic!("chunked {chunked}: the server dropped the connection mid-body: {e}");
            }
        };
        for i in 0..25 {
            if chunked {
                send(format!("{:x}\r\n", chunk.len()).as_bytes());
            }
            send(&chunk);
            if chunked {
                send(b"\r\n");
            }
            // Past the limit (8 chunks) a server that does not discard has
            // answered and closed by the end of this pause.
            let pause = if i == 9 { 500 } else { 5 };
            std::thread::sleep(Duration::from_millis(pause));
        }
        if chunked {
            send(b"0\r\n\r\n");
        }
        let mut answer = Vec::new();
        match c.read_to_end(&mut answer) {
            Ok(_) => {}
            Err(e) if !answer.is_empty() => eprintln!("after the answer: {e}"),
            Err(e) => panic!("chunked {chunked}: no answer, the connection failed: {e}"),
        }
        let a = String::from_utf8_lossy(&answer);
        assert!(a.starts_with("HTTP/1.1 413"), "chunked {chunked}: {a:?}");
        assert!(a.contains("max_body_bytes"), "chunked {chunked}: {a:?}");
        // The server closes after it: the sender must not reuse the connection.
        assert!(
            a.to_ascii_lowercase().contains("\r\nconnection: close\r\n"),
            "chunked {chunked}: {a:?}"
        );
    }
}

#[test]
fn idle_connections_are_closed_and_the_rest_wait_their_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let (hub, ml) = (FakeHub::start(), FakeMlflow::start());
    let extra = "\n[http]\nmax_connections = 4\nidle_timeout_secs = 2\n";
    let cfg = config_with(tmp.path(), &hub.url(), &ml.url(), 1, extra);
    let s = start(&cfg, &tmp.path().join("serve.log"));
    // Four clients connect and say nothing (a slowloris holding every slot).
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(addr(&s)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // A fifth is served once the idle ones are closed, not never.
    let t = Instant::now();
    let (code, _) = get(&format!("{}/healthz", s.url));
    let waited = t.elapsed();
    assert_eq!(code, 200);
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_secs(10),
        "served after {waited:?}"
    );
    for c in &mut idle {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 16];
        match c.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("an idle connection stayed open: {other:?}"),
        }
    }
    eprintln!("connection cap 4, idle timeout 2 s: the fifth client waited {waited:?}");
}

#[test]
fn credentials_in_the_tracking_uri_never_leave_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let (hub, ml) = (FakeHub::start(), FakeMlflow::start());
    let uri = ml.url().replace("http://", "http://alice:pw-s3cr3t-9@");
    let cfg = config(tmp.path(), &hub.url(), &uri, 1);
    let s = start(&cfg, &tmp.path().join("serve.log"));
    // An unknown version: the registry's 404 quotes the URL it was asked at.
    let (code, v) = mlflow_post(
        &s,
        "cred-1",
        now(),
        ML_SECRET,
        &mlflow_body("smollm2-chat", "7"),
    );
    assert_eq!(code, 202, "{v}");
    let id = v["jobs"][0]["id"].as_u64().unwrap();
    let j = wait_for(&s, id, Duration::from_secs(60), done);
    let shown = j.to_string();
    assert!(!shown.contains("pw-s3cr3t-9"), "{shown}");
    assert!(shown.contains("http://***@127.0.0.1"), "{shown}");
    let (_, md) = get(&format!("{}/jobs/{id}/report.md", s.url));
    assert!(!md.contains("pw-s3cr3t-9"), "{md}");
    let tags = ml
        .log()
        .matching("POST", "/api/2.0/mlflow/model-versions/set-tag");
    assert!(!tags.is_empty());
    for t in &tags {
        assert!(!t.body.to_string().contains("pw-s3cr3t-9"), "{t:?}");
    }
}

//! The audit log: admin actions and the governance decisions of requests are
//! appended as hash-chained records; `switchyard audit verify` accepts the log as
//! written and catches a changed, removed, reordered or cut-off record. Keys
//! never appear in it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_chain_records_decisions_and_catches_tampering() {
    let paths = Paths::discover();
    let dir = Scratch::new("audit");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let mut gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/gpt"])
        .route("other", &["a/gpt-2"])
        .yaml("prices:\n  a/gpt: { input: 1, output: 2 }\ngovernance: { audit_flush_s: 1 }\n")
        .start(&paths, &dir)
        .await;
    let (id, key) = gw
        .create_key(&json!({"name": "audited", "team": "research", "routes": ["chat"]}))
        .await;
    gw.wait_for_key(&key, "chat").await;
    let auth = format!("Bearer {key}");
    for _ in 0..3 {
        assert_eq!(
            gw.chat(&chat_body("chat"), &[("authorization", &auth)]).await.status(),
            200
        );
    }
    assert_eq!(
        gw.chat(&chat_body("other"), &[("authorization", &auth)]).await.status(),
        403
    );
    assert_eq!(
        gw.chat(&chat_body("chat"), &[("authorization", "Bearer sk-sy-nope")])
            .await
            .status(),
        401
    );
    let (s, _) = gw
        .admin_call(
            "PATCH",
            &format!("/admin/v1/keys/{id}"),
            Some(&json!({"limits": {"rpm": 100}})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = gw
        .admin_call("POST", &format!("/admin/v1/keys/{id}/revoke"), None)
        .await;
    assert_eq!(s, 200);

    // The request summaries come with the next flush (every second here).
    let log = gw.data_dir.join("audit.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let records: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let allowed: u64 = records
            .iter()
            .filter(|r| r["event"] == "requests" && r["detail"]["key"] == id.as_str())
            .map(|r| r["detail"]["allowed"].as_u64().unwrap_or(0))
            .sum();
        let anonymous = records
            .iter()
            .any(|r| r["event"] == "requests" && r["detail"]["key"].is_null());
        if allowed >= 4 && anonymous {
            break records;
        }
        assert!(Instant::now() < deadline, "no request summaries: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let events: Vec<&str> = records.iter().filter_map(|r| r["event"].as_str()).collect();
    for e in [
        "config.applied",
        "key.created",
        "key.updated",
        "key.revoked",
        "requests",
    ] {
        assert!(events.contains(&e), "{e} missing: {events:?}");
    }
    let denied: u64 = records
        .iter()
        .filter(|r| r["event"] == "requests" && r["detail"]["key"] == id.as_str())
        .map(|r| r["detail"]["denied"]["model"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(denied, 1, "the 403 is counted against the key");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&key), "a key in the audit log");
    assert!(!text.contains("sk-sy-nope"), "a presented key in the audit log");
    assert!(!text.contains("Say hello"), "a prompt in the audit log");

    let (code, out, err) = gw.cli(&paths, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chain intact and complete"), "{out}");
    println!("{}", out.trim());

    // Tampering, on copies (no database head: the chain alone must tell).
    let lines: Vec<String> = text.lines().map(String::from).collect();
    assert!(lines.len() >= 6);
    let none = dir.0.join("no.db");
    let verify = |name: &str, ls: &[String]| {
        let f = dir.0.join(name);
        std::fs::write(&f, ls.join("\n") + "\n").unwrap();
        gw.cli(
            &paths,
            &[
                "audit",
                "verify",
                "--file",
                f.to_str().unwrap(),
                "--db",
                none.to_str().unwrap(),
            ],
        )
    };
    let (code, _, _) = verify("copy.log", &lines);
    assert_eq!(code, 0, "an untouched copy verifies");
    let mut changed = lines.clone();
    changed[2] = changed[2].replacen("\"ts_ms\":", "\"ts_ms\":1", 1);
    let (code, _, err) = verify("changed.log", &changed);
    assert_eq!(code, 1);
    assert!(err.contains("was changed"), "{err}");
    let mut removed = lines.clone();
    removed.remove(2);
    let (code, _, err) = verify("removed.log", &removed);
    assert_eq!(code, 1);
    assert!(err.contains("removed or reordered"), "{err}");
    let mut reordered = lines.clone();
    reordered.swap(2, 3);
    let (code, _, err) = verify("reordered.log", &reordered);
    assert_eq!(code, 1);
    assert!(err.contains("removed or reordered"), "{err}");
    // Cutting the last records off is caught against the head in the database.
    gw.stop_control_plane();
    let full = std::fs::read_to_string(&log).unwrap();
    let kept: Vec<&str> = full.lines().collect();
    std::fs::write(&log, kept[..kept.len() - 1].join("\n") + "\n").unwrap();
    let (code, _, err) = gw.cli(&paths, &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(err.contains("cut off"), "{err}");
}

//! The audit log: admin actions and every request's governance decision are
//! appended as hash-chained records; `switchyard audit verify` accepts the log as
//! written and catches a changed, removed, reordered or cut-off record. Keys and
//! prompts never appear in it.
//!
//! Runs on the filter build `SWITCHYARD_HOST` names (`wasm` by default, `native`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

/// What the audit log should say of one request.
#[derive(Debug)]
struct Expected {
    outcome: &'static str,
    reason: &'static str,
    key: Option<String>,
    team: Option<&'static str>,
    /// `key_state` (401) or `limit` and `limit_of` (429).
    extra: Vec<(&'static str, &'static str)>,
}

fn allowed(key: &str, team: Option<&'static str>) -> Expected {
    Expected {
        outcome: "allowed",
        reason: "admitted",
        key: Some(key.to_string()),
        team,
        extra: vec![],
    }
}

fn denied(reason: &'static str, key: Option<&str>, team: Option<&'static str>) -> Expected {
    Expected {
        outcome: "denied",
        reason,
        key: key.map(String::from),
        team,
        extra: vec![],
    }
}

/// Sends a chat request; the request id the client saw (`x-request-id`) and
/// the status.
async fn send(gw: &Gateway, model: &str, headers: &[(&str, &str)]) -> (String, u16) {
    let r = gw.chat(&chat_body(model), headers).await;
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id on every answer")
        .to_string();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status != 200 {
        // The id in the error body is the header's.
        let in_body = body["error"]["request_id"].as_str().unwrap_or_default();
        assert_eq!(in_body, id, "{body}");
    }
    (id, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_decision_is_one_record_and_the_chain_catches_tampering() {
    let paths = Paths::discover();
    let dir = Scratch::new("audit");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let mut gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/gpt"])
        .route("other", &["a/gpt-2"])
        .yaml("prices:\n  a/gpt: { input: 1, output: 2 }\n  a/gpt-2: { input: 1, output: 2 }\n")
        .start(&paths, &dir)
        .await;
    let (id, key) = gw
        .create_key(&json!({"name": "audited", "team": "research", "routes": ["chat"]}))
        .await;
    let (stopped_id, stopped) = gw.create_key(&json!({"name": "stopped", "limits": {"rpm": 0}})).await;
    let (broke_id, broke) = gw
        .create_key(&json!({"name": "broke", "limits": {"budget_day_usd": 0}}))
        .await;
    let (s, _) = gw
        .admin_call("PUT", "/admin/v1/teams/capped", Some(&json!({"limits": {"rpm": 0}})))
        .await;
    assert_eq!(s, 200);
    let (capped_id, capped) = gw.create_key(&json!({"name": "capped", "team": "capped"})).await;

    // Until the table with every key is in force. These requests carry ids of
    // their own (Envoy keeps a client's x-request-id): the records of those
    // governance decided on are told apart by them.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    loop {
        n += 1;
        let warm = format!("warm-{n}");
        let auth = format!("Bearer {capped}");
        let (_, s) = send(&gw, "chat", &[("authorization", &auth), ("x-request-id", &warm)]).await;
        if s == 429 {
            break;
        }
        assert!(Instant::now() < deadline, "keys not in force within 15 s (last {s})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every request below gets its id from Envoy; each must come back as
    // exactly one record.
    let mut expected: Vec<(String, Expected)> = Vec::new();
    let bearer = |k: &str| format!("Bearer {k}");
    for _ in 0..5 {
        let (rid, s) = send(&gw, "chat", &[("authorization", &bearer(&key))]).await;
        assert_eq!(s, 200);
        expected.push((rid, allowed(&id, Some("research"))));
    }
    let (rid, s) = send(&gw, "other", &[("authorization", &bearer(&key))]).await;
    assert_eq!(s, 403);
    expected.push((rid, denied("model_not_allowed", Some(&id), Some("research"))));
    let (rid, s) = send(&gw, "chat", &[("authorization", "Bearer sk-sy-nope")]).await;
    assert_eq!(s, 401);
    let mut e = denied("invalid_api_key", None, None);
    e.extra.push(("key_state", "unknown"));
    expected.push((rid, e));
    let (rid, s) = send(&gw, "chat", &[]).await;
    assert_eq!(s, 401);
    let mut e = denied("invalid_api_key", None, None);
    e.extra.push(("key_state", "missing"));
    expected.push((rid, e));
    let (rid, s) = send(&gw, "chat", &[("authorization", &bearer(&stopped))]).await;
    assert_eq!(s, 429);
    let mut e = denied("rate_limit_exceeded", Some(&stopped_id), None);
    e.extra.extend([("limit", "requests"), ("limit_of", "key")]);
    expected.push((rid, e));
    let (rid, s) = send(&gw, "chat", &[("authorization", &bearer(&broke))]).await;
    assert_eq!(s, 429);
    let mut e = denied("budget_exceeded", Some(&broke_id), None);
    e.extra.extend([("limit", "budget_day"), ("limit_of", "key")]);
    expected.push((rid, e));
    let (rid, s) = send(&gw, "chat", &[("authorization", &bearer(&capped))]).await;
    assert_eq!(s, 429);
    let mut e = denied("rate_limit_exceeded", Some(&capped_id), Some("capped"));
    e.extra.extend([("limit", "requests"), ("limit_of", "team")]);
    expected.push((rid, e));

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
    // Served until the revocation arrives, then refused: every answer is a
    // decision.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (rid, s) = send(&gw, "chat", &[("authorization", &bearer(&key))]).await;
        if s == 200 {
            expected.push((rid, allowed(&id, Some("research"))));
            assert!(Instant::now() < deadline, "revocation not in force within 5 s");
            continue;
        }
        assert_eq!(s, 401);
        let mut e = denied("invalid_api_key", Some(&id), Some("research"));
        e.extra.push(("key_state", "revoked"));
        expected.push((rid, e));
        break;
    }

    // Decisions come with the exchange (every 250 ms) once their request ended.
    let log = gw.data_dir.join("audit.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        // A line being written may be cut short: read what is whole.
        let records: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let ids: Vec<&str> = records
            .iter()
            .filter(|r| r["event"] == "request")
            .filter_map(|r| r["detail"]["request_id"].as_str())
            .collect();
        if expected.iter().all(|(rid, _)| ids.contains(&rid.as_str())) {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "decisions missing from the audit log: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let decisions: Vec<&Value> = records.iter().filter(|r| r["event"] == "request").collect();
    let mut by_id: HashMap<&str, Vec<&Value>> = HashMap::new();
    for r in &decisions {
        let rid = r["detail"]["request_id"].as_str().expect("a request id");
        by_id.entry(rid).or_default().push(&r["detail"]);
    }
    for (rid, want) in &expected {
        let got = &by_id[rid.as_str()];
        assert_eq!(got.len(), 1, "request {rid}: {got:?}");
        let d = got[0];
        assert_eq!(d["outcome"], want.outcome, "{rid}: {d}");
        assert_eq!(d["reason"], want.reason, "{rid}: {d}");
        assert_eq!(d["key"].as_str(), want.key.as_deref(), "{rid}: {d}");
        assert_eq!(d["team"].as_str(), want.team, "{rid}: {d}");
        for (field, value) in &want.extra {
            assert_eq!(d[*field], *value, "{rid}: {d}");
        }
        assert!(d["node"].as_str().is_some_and(|n| n.starts_with("test-envoy-")), "{d}");
        assert!(d["at_ms"].as_u64().is_some_and(|t| t > 1_700_000_000_000), "{d}");
        let cost = d["cost_usd"].as_f64().expect("cost_usd");
        if want.outcome == "allowed" {
            assert!(cost > 0.0 && d["tokens"].as_u64() > Some(0), "charged: {d}");
        } else {
            assert_eq!(cost, 0.0, "{d}");
        }
    }
    // Nothing else: the only other decisions are the warm-up's, under its ids.
    let others: Vec<&&Value> = decisions
        .iter()
        .filter(|r| {
            let rid = r["detail"]["request_id"].as_str().unwrap_or_default();
            !rid.starts_with("warm-") && !expected.iter().any(|(e, _)| e == rid)
        })
        .collect();
    assert!(others.is_empty(), "decisions of no request sent: {others:?}");
    assert!(
        !records.iter().any(|r| r["event"] == "requests.unrecorded"),
        "nothing was dropped"
    );
    println!(
        "{} requests, {} decisions recorded ({} during warm-up)",
        expected.len(),
        decisions.len(),
        decisions.len() - expected.len()
    );

    // The control plane checks what a report says before it records it: a
    // decision out of bounds refuses the report (nothing recorded); a count
    // of decisions a filter could not keep is recorded as such, with its node.
    let node = decisions[0]["detail"]["node"].as_str().unwrap().to_string();
    let post = |gov: Value| {
        let body = json!({"node": node, "outcomes": [], "gov": gov});
        let url = format!("http://{}/fleet/v1/exchange", gw.status);
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let forged = json!({"at_ms": 1, "request_id": "forged", "reason": "model_not_allowed"});
    assert_eq!(post(json!({"boot": "audit-test", "decisions": [forged]})).await, 400);
    assert_eq!(post(json!({"boot": "audit-test", "dropped": 5})).await, 200);
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!text.contains("forged"), "a refused report recorded nothing");
    let unrecorded: Vec<&Value> = records.iter().filter(|r| r["event"] == "requests.unrecorded").collect();
    assert_eq!(unrecorded.len(), 1);
    assert_eq!(
        (&unrecorded[0]["detail"]["node"], &unrecorded[0]["detail"]["count"]),
        (&json!(node), &json!(5))
    );

    let events: Vec<&str> = records.iter().filter_map(|r| r["event"].as_str()).collect();
    for e in [
        "config.applied",
        "key.created",
        "team.set",
        "key.updated",
        "key.revoked",
        "request",
    ] {
        assert!(events.contains(&e), "{e} missing: {events:?}");
    }
    for k in [&key, &stopped, &broke, &capped] {
        assert!(!text.contains(k.as_str()), "a key in the audit log");
    }
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
    // A refusal turned into an admission.
    let refusal = lines.iter().position(|l| l.contains("\"outcome\":\"denied\"")).unwrap();
    let mut forged = lines.clone();
    forged[refusal] = forged[refusal].replacen("\"outcome\":\"denied\"", "\"outcome\":\"allowed\"", 1);
    let (code, _, err) = verify("forged.log", &forged);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("line {} (", refusal + 1)) && err.contains("was changed"),
        "{err}"
    );
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

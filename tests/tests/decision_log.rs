//! The decision log: with `decision_log: { path }`, each Envoy's listener has a
//! file access log that writes the decision record the planner left in filter
//! state (`switchyard_core::observe::DECISION_STATE`) as one JSON line per
//! request — the plan, every attempt, who served, tokens, cost, hedging — and
//! nothing for requests without one. No credential and no prompt text reaches
//! the file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_core::observe::Decision;
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, served};

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The listener Envoy accepted carries the access log, writing the filter
/// state of this build to the configured file, only when it is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_writes_the_decision_log_file() {
    let paths = Paths::discover();
    let dir = Scratch::new("decision-log-config");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let log = dir.0.join("decisions.log");
    let gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/gpt"])
        .yaml(&format!("decision_log: {{ path: \"{}\" }}\n", log.display()))
        .start(&paths, &dir)
        .await;
    let dump: Value = reqwest::get(format!("{}/config_dump?resource=dynamic_listeners", gw.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = dump.to_string();
    let key = match gw.host {
        switchyard_tests::harness::FilterHost::Wasm => "wasm.sy_decision",
        switchyard_tests::harness::FilterHost::Native => "sy_decision",
    };
    assert!(text.contains(&log.display().to_string()), "{text}");
    assert!(text.contains(&format!("%FILTER_STATE({key}:PLAIN)%")), "{text}");
    assert!(text.contains(&format!("'{key}' in filter_state")), "{text}");
    // Whatever was logged is one JSON object per line.
    let r = reqwest::Client::new()
        .post(gw.at("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    for line in lines(&log) {
        assert!(serde_json::from_str::<Value>(&line).is_ok(), "not JSON: {line}");
    }
}

/// One JSON line per request, in the schema of `switchyard_core::observe`:
/// needs the planner to write the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_line_per_request_with_plan_attempts_and_outcome() {
    let paths = Paths::discover();
    let dir = Scratch::new("decision-log");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let log = dir.0.join("decisions.log");
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/gpt", "b/claude"])
        .yaml(&format!(
            "decision_log: {{ path: \"{}\" }}\nprices:\n  a/gpt: {{ input: 1, output: 2 }}\n  b/claude: {{ input: 3, output: 4 }}\n",
            log.display()
        ))
        .start(&paths, &dir)
        .await;

    let ok = gw.chat(&chat_body("chat"), &[("x-request-id", "req-ok")]).await;
    assert_eq!(served(&ok), ("a".into(), "1".into()));
    let over = gw
        .chat(
            &chat_body("chat"),
            &[("x-request-id", "req-over"), ("x-mock", "a:status=503")],
        )
        .await;
    assert_eq!(served(&over), ("b".into(), "2".into()));
    let failed = gw
        .chat(
            &chat_body("chat"),
            &[("x-request-id", "req-failed"), ("x-mock", "*:status=503")],
        )
        .await;
    assert_eq!(failed.status().as_u16(), 503);
    let rejected = reqwest::Client::new()
        .post(gw.at("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-request-id", "req-rejected")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status().as_u16(), 400);

    // Envoy's file access log flushes every second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let records: Vec<Decision> = loop {
        let l = lines(&log);
        if l.len() >= 4 {
            break l
                .iter()
                .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
                .collect();
        }
        assert!(Instant::now() < deadline, "{} lines in 10 s: {l:?}", l.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(records.len(), 4, "{records:#?}");
    let by_id = |id: &str| {
        records
            .iter()
            .find(|d| d.request_id == id)
            .unwrap_or_else(|| panic!("no record of {id}: {records:#?}"))
    };
    for d in &records {
        assert_eq!(d.v, 1);
        assert!(d.ts_ms > 1_700_000_000_000, "{d:?}");
        assert_eq!(d.endpoint, "chat");
        assert_eq!(d.node, gw_node(&gw));
    }

    let d = by_id("req-ok");
    assert_eq!(
        (d.route.as_str(), d.outcome.as_str(), d.status),
        ("chat", "served", 200)
    );
    assert_eq!(d.plan, vec!["a/gpt".to_string(), "b/claude".to_string()]);
    assert_eq!(d.attempts.len(), 1);
    let served_by = d.served_by.as_ref().unwrap();
    assert_eq!(
        (
            served_by.provider.as_str(),
            served_by.model.as_str(),
            served_by.position
        ),
        ("a", "gpt", 1)
    );
    assert!(d.usage.as_ref().is_some_and(|u| u.input > 0 && u.output > 0), "{d:?}");
    assert!(d.cost_micros > 0);
    assert_eq!(d.hedge, "none");

    let d = by_id("req-over");
    assert_eq!((d.outcome.as_str(), d.status), ("served", 200));
    let a0 = &d.attempts[0];
    assert_eq!((a0.position, a0.provider.as_str(), a0.model.as_str()), (1, "a", "gpt"));
    assert_eq!(
        (a0.status, a0.result.as_str(), a0.key),
        (Some(503), "server_error", Some(0))
    );
    assert!(a0.headers_ms.is_some());
    let a1 = &d.attempts[1];
    assert_eq!(
        (a1.position, a1.provider.as_str(), a1.status, a1.result.as_str()),
        (2, "b", Some(200), "success")
    );
    assert!(a1.start_ms >= a0.start_ms);
    assert_eq!(d.served_by.as_ref().map(|s| s.position), Some(2));

    let d = by_id("req-failed");
    assert_eq!((d.outcome.as_str(), d.status, d.attempts.len()), ("all_failed", 503, 2));
    assert!(d.served_by.is_none());
    assert!(d.attempts.iter().all(|a| a.result == "server_error"));

    let d = by_id("req-rejected");
    assert_eq!((d.outcome.as_str(), d.status), ("rejected", 400));
    assert_eq!(d.rejection.as_deref(), Some("invalid_json"));
    assert!(d.plan.is_empty() && d.attempts.is_empty());

    // No secrets, no prompt text.
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [a.api_key.as_str(), b.api_key.as_str(), "Say hello"] {
        assert!(!text.contains(secret), "`{secret}` in the decision log");
    }
}

/// The node id the harness gave the gateway's first Envoy.
fn gw_node(gw: &Gateway) -> String {
    gw.envoys[0].name.clone()
}

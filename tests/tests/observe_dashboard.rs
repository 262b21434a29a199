//! The Grafana dashboard and the Prometheus alert rules of `deploy/observability/`
//! against a real Prometheus scraping a real gateway: `promtool check rules`
//! passes, every PromQL expression of the dashboard (panels and template
//! variables) and of the rules evaluates, the panels that traffic fed show
//! data, and after a scripted fault the alerts that should fire are pending.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, served};
use switchyard_tests::prometheus::{Prometheus, promtool};

fn observability(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/observability")
        .join(file)
}

/// Every query of the dashboard, with its panel's title: the panels' targets
/// (rows' nested panels included) and the query variables (`label_values(m, l)`
/// is Grafana's; its PromQL is `m`).
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.clone(), e.to_string()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or("");
            let promql = q
                .strip_prefix("label_values(")
                .and_then(|r| r.split(',').next())
                .unwrap_or(q);
            out.push((format!("variable {}", v["name"]), promql.trim().to_string()));
        }
    }
    out
}

/// What Grafana puts in place of its variables: the interval macros, and "All"
/// (`.*`, the dashboard's `allValue`) for the template variables.
fn substitute(expr: &str) -> String {
    let mut e = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m");
    for var in ["route", "provider"] {
        e = e
            .replace(&format!("${{{var}}}"), ".*")
            .replace(&format!("${var}"), ".*");
    }
    assert!(!e.contains('$'), "unknown variable in `{expr}`");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_expression_evaluates() {
    let rules = observability("switchyard-alerts.yaml");
    let check = std::process::Command::new(promtool())
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .expect("promtool (Debian's prometheus package ships it: `make setup`)");
    assert!(
        check.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(observability("switchyard-dashboard.json")).unwrap())
            .expect("dashboard JSON");

    let paths = Paths::discover();
    let dir = Scratch::new("observe-dashboard");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/gpt", "b/claude"])
        .yaml(concat!(
            "prices:\n  a/gpt: { input: 1, output: 2 }\n  b/claude: { input: 3, output: 4 }\n",
            "circuit_breaker: { consecutive_failures: 3, base_open_ms: 60000, max_open_ms: 60000 }\n",
        ))
        .start(&paths, &dir)
        .await;
    let prom = Prometheus::start(&dir.0, std::slice::from_ref(&gw.admin), std::slice::from_ref(&rules)).await;

    // Warm-up: every series the alerts watch exists before the fault (a
    // counter born at 1 shows no increase), so rates see it grow.
    let not_json = || async {
        let r = reqwest::Client::new()
            .post(gw.at("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
    };
    for _ in 0..3 {
        assert_eq!(
            served(&gw.chat(&chat_body("chat"), &[]).await),
            ("a".into(), "1".into())
        );
    }
    let r = gw.chat(&chat_body("chat"), &[("x-mock", "a:status=503")]).await;
    assert_eq!(served(&r), ("b".into(), "2".into()));
    let r = gw.chat(&chat_body("chat"), &[("x-mock", "*:status=503")]).await;
    assert_eq!(r.status().as_u16(), 503);
    not_json().await;
    prom.wait_for(
        r#"sum(switchyard_requests_total{outcome=~"all_failed|rejected"})"#,
        Duration::from_secs(20),
        |s| s.first().is_some_and(|s| s.value == 2.0),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The fault: the primary fails until its circuit opens (3 in a row), then
    // everything fails once, and a client sends two bodies that are not JSON.
    for _ in 0..4 {
        let r = gw.chat(&chat_body("chat"), &[("x-mock", "a:status=503")]).await;
        assert_eq!(r.status().as_u16(), 200);
    }
    let r = gw.chat(&chat_body("chat"), &[("x-mock", "*:status=503")]).await;
    assert_eq!(r.status().as_u16(), 503);
    not_json().await;
    not_json().await;
    prom.wait_for(
        r#"sum(switchyard_requests_total{outcome=~"all_failed|rejected"})"#,
        Duration::from_secs(20),
        |s| s.first().is_some_and(|s| s.value == 5.0),
    )
    .await;
    // Histograms arrive with Envoy's stats flush (every 5 s).
    prom.wait_for("sum(switchyard_duration_ms_count)", Duration::from_secs(20), |s| {
        !s.is_empty()
    })
    .await;

    // Every rule evaluates without error, and the fault made the right ones pending.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let groups = prom.rules().await;
        let rules: Vec<&Value> = groups["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        assert_eq!(rules.len(), 5, "{groups}");
        for r in &rules {
            assert_ne!(r["health"], "err", "rule {} fails: {}", r["name"], r["lastError"]);
        }
        let pending = |name: &str| {
            rules
                .iter()
                .any(|r| r["name"] == name && matches!(r["state"].as_str(), Some("pending" | "firing")))
        };
        let want = [
            "SwitchyardPrimaryFailingOver",
            "SwitchyardCircuitOpen",
            "SwitchyardAllAttemptsFailing",
            "SwitchyardGatewayRejecting",
        ];
        if rules.iter().all(|r| r["health"] == "ok") && want.iter().all(|n| pending(n)) {
            assert!(!pending("SwitchyardProviderUnhealthy"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alerts not pending as expected: {}",
            serde_json::to_string_pretty(&rules).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every dashboard expression evaluates; the panels the traffic fed have
    // data. A rate needs two scrapes of a series and a histogram two stats
    // flushes (5 s) that differ: keep a trickle of requests going meanwhile.
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 25, "{} queries", queries.len());
    let fed = [
        "Requests by outcome",
        "Gateway rejections vs provider failures",
        "Requests failing after every attempt",
        "Fail-over rate by class",
        "Success by chain position",
        "Attempt success rate per target",
        "Attempts by result",
        "Duration p50 per target",
        "Duration p99 per target",
        "Time to first token p50 per target",
        "Time to response headers p99 per target",
        "Cost per hour",
        "Tokens per second",
        "Circuit state per target (worst Envoy)",
        "Circuit transitions",
        "variable \"route\"",
        "variable \"provider\"",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut with_data = std::collections::HashSet::new();
        for (title, expr) in &queries {
            let promql = substitute(expr);
            match prom.samples(&promql).await {
                Ok(s) if s.iter().any(|s| s.value.is_finite()) => {
                    with_data.insert(title.clone());
                }
                Ok(_) => {}
                Err(e) => panic!("panel `{title}`: `{promql}` does not evaluate: {e}"),
            }
        }
        let missing: Vec<&&str> = fed.iter().filter(|t| !with_data.contains(**t)).collect();
        if missing.is_empty() {
            let empty: Vec<&String> = queries
                .iter()
                .map(|(t, _)| t)
                .filter(|t| !with_data.contains(*t))
                .collect();
            eprintln!("panels without data in this run (nothing fed them): {empty:?}");
            break;
        }
        assert!(Instant::now() < deadline, "panels without data: {missing:?}");
        let _ = gw.chat(&chat_body("chat"), &[]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

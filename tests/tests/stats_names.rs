//! The filter's labelled stats come out of Envoy's `/stats/prometheus` with the
//! names and labels of docs/metrics.md, whichever build emits them: proxy-wasm's
//! flat `wasmcustom.<metric>.<label>.<value>…` names are turned into tags by the
//! bootstrap's tag extractors, the native module's real tags keep their names
//! and its stat namespace is stripped (`switchyard bootstrap`). The same
//! assertions run on both builds (`SWITCHYARD_HOST`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, served};
use switchyard_tests::prometheus::{Sample, contract, parse_exposition};

/// Envoy's `/stats/prometheus`, parsed.
async fn exposition(gw: &Gateway) -> Vec<Sample> {
    let text = reqwest::get(format!("{}/stats/prometheus", gw.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    parse_exposition(&text)
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.len() == labels.len() && labels.iter().all(|(k, v)| s.label(k) == *v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_stats_read_the_same_on_both_builds() {
    let paths = Paths::discover();
    let dir = Scratch::new("stats-names");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    // `gpt-4.1` has a dot: a label value is sanitised to `gpt-4_1`, or the flat
    // proxy-wasm name would split there.
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/gpt-4.1", "b/claude"])
        .yaml("prices:\n  a/gpt-4.1: { input: 1, output: 2 }\n  b/claude: { input: 1, output: 2 }\n")
        .start(&paths, &dir)
        .await;

    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(served(&r), ("a".into(), "1".into()));
    let r = gw.chat(&chat_body("chat"), &[("x-mock", "a:status=503")]).await;
    assert_eq!(served(&r), ("b".into(), "2".into()));

    // Counters are written when a request ends (its log callback).
    let deadline = Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let s = exposition(&gw).await;
        let cost = |p, m| find(&s, "switchyard_cost_micros_total", &[("provider", p), ("model", m)]);
        if cost("a", "gpt-4_1").is_some() && cost("b", "claude").is_some() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no switchyard_cost_micros_total{{provider,model}} for both targets in /stats/prometheus:\n{}",
            s.iter()
                .filter(|s| s.name.starts_with("switchyard_"))
                .map(|s| format!("{} {:?}", s.name, s.labels))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Every attempt, by result, with exactly the contract's labels.
    let attempts = |p, m, r| {
        find(
            &samples,
            "switchyard_attempts_total",
            &[("provider", p), ("model", m), ("result", r)],
        )
        .map(|s| s.value)
    };
    assert_eq!(attempts("a", "gpt-4_1", "success"), Some(1.0));
    assert_eq!(attempts("a", "gpt-4_1", "server_error"), Some(1.0));
    assert_eq!(attempts("b", "claude", "success"), Some(1.0));

    // Every series of the filter is a metric of the contract, with its labels:
    // no flat name (`…_provider_a_model_…`) and no `envoy_switchyard_` prefix
    // reaches Prometheus on either build.
    let contract = contract();
    let ours: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name.starts_with("switchyard_") || s.name.starts_with("envoy_switchyard"))
        .collect();
    assert!(!ours.is_empty());
    for s in ours {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                s.name
                    .strip_suffix(suffix)
                    .filter(|b| contract.get(*b).is_some_and(|c| c.kind == "histogram"))
            })
            .unwrap_or(&s.name);
        let Some(c) = contract.get(base) else {
            panic!("`{}` {:?} is not in docs/metrics.md", s.name, s.labels);
        };
        let mut want: Vec<&str> = c.labels.iter().map(String::as_str).collect();
        if s.name.ends_with("_bucket") {
            want.push("le");
        }
        want.sort_unstable();
        let got: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(got, want, "labels of {} {:?}", s.name, s.labels);
    }
}

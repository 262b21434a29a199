//! Prometheus end to end: a real Prometheus scrapes the gateway's Envoy
//! (`/stats/prometheus`, every second, on the stats-only listener of
//! `switchyard bootstrap --stats-addr`, as the chart's pods are scraped) while the primary is made to fail a
//! scripted share of requests (`x-mock`) and the fallback is slow; PromQL then
//! shows the fail-over by class, success by chain position and per-provider
//! latency the traffic produced — the same queries on both filter builds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::time::Duration;

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, served};
use switchyard_tests::prometheus::{Prometheus, Sample};

/// `label value → sample value` of a query grouped by one label.
fn by(samples: &[Sample], label: &str) -> BTreeMap<String, f64> {
    samples.iter().map(|s| (s.label(label).to_string(), s.value)).collect()
}

/// The PromQL this test relies on (also the shape of the dashboard's panels,
/// on counters' totals instead of rates so the figures are exact).
pub mod queries {
    /// Fail-overs by failure class.
    pub const FALLBACKS_BY_CLASS: &str = r#"sum by (class) (switchyard_fallbacks_total{route="chat"})"#;
    /// Fail-overs per planned request (the dashboard's fail-over rate, as a ratio of totals).
    pub const FAILOVER_RATIO: &str = r#"sum(switchyard_fallbacks_total{route="chat"}) / sum(switchyard_requests_total{route="chat",outcome!="rejected"})"#;
    /// Requests served, by the plan slot that served them.
    pub const SERVED_BY_POSITION: &str = r#"sum by (position) (switchyard_served_total{route="chat"})"#;
    /// Requests by outcome.
    pub const REQUESTS_BY_OUTCOME: &str = r#"sum by (outcome) (switchyard_requests_total{route="chat"})"#;
    /// Median attempt duration per provider.
    pub const P50_DURATION_BY_PROVIDER: &str =
        r#"histogram_quantile(0.5, sum by (provider, le) (switchyard_duration_ms_bucket))"#;
    /// The primary's attempt success ratio.
    pub const PRIMARY_SUCCESS_RATIO: &str = r#"sum(switchyard_attempts_total{provider="a",result="success"}) / sum(switchyard_attempts_total{provider="a"})"#;
    /// Fail-over rate by class over the last minute (what the dashboard plots).
    pub const FAILOVER_RATE_BY_CLASS: &str = r#"sum by (class) (rate(switchyard_fallbacks_total{route="chat"}[1m])) / scalar(sum(rate(switchyard_requests_total{route="chat",outcome!="rejected"}[1m])))"#;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_success_by_position_and_latency_in_promql() {
    let paths = Paths::discover();
    let dir = Scratch::new("observe-prometheus");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/gpt", "b/claude"])
        .stats_listener()
        .start(&paths, &dir)
        .await;
    let started = std::time::Instant::now();
    let prom = Prometheus::start(&dir.0, std::slice::from_ref(&gw.stats), &[]).await;
    eprintln!("Prometheus ready in {:?}", started.elapsed());

    // The script: 6 requests the primary serves; 4 it fails with a 503, served
    // by the fallback, which takes 300 ms; 1 both fail.
    for _ in 0..6 {
        let r = gw.chat(&chat_body("chat"), &[]).await;
        assert_eq!(served(&r), ("a".into(), "1".into()));
    }
    for _ in 0..4 {
        let r = gw
            .chat(&chat_body("chat"), &[("x-mock", "a:status=503;b:delay_ms=300")])
            .await;
        assert_eq!(served(&r), ("b".into(), "2".into()));
    }
    let r = gw.chat(&chat_body("chat"), &[("x-mock", "*:status=503")]).await;
    assert_eq!(r.status().as_u16(), 503);

    let wait = Duration::from_secs(30);
    let fallbacks = prom
        .wait_for(queries::FALLBACKS_BY_CLASS, wait, |s| {
            by(s, "class").get("server_error") == Some(&5.0)
        })
        .await;
    // Every class's series exists from the start (at 0); only one moved.
    let moved: Vec<String> = by(&fallbacks, "class")
        .into_iter()
        .filter(|(_, n)| *n > 0.0)
        .map(|(class, _)| class)
        .collect();
    assert_eq!(moved, vec!["server_error".to_string()], "{fallbacks:?}");

    let served = prom
        .wait_for(queries::SERVED_BY_POSITION, wait, |s| {
            by(s, "position").get("2") == Some(&4.0)
        })
        .await;
    assert_eq!(
        by(&served, "position"),
        BTreeMap::from([("1".to_string(), 6.0), ("2".to_string(), 4.0)])
    );

    let outcomes = prom.samples(queries::REQUESTS_BY_OUTCOME).await.unwrap();
    assert_eq!(
        by(&outcomes, "outcome"),
        BTreeMap::from([("all_failed".to_string(), 1.0), ("served".to_string(), 10.0)])
    );
    let ratio = prom.samples(queries::FAILOVER_RATIO).await.unwrap();
    assert!((ratio[0].value - 5.0 / 11.0).abs() < 1e-9, "{ratio:?}");
    let primary = prom.samples(queries::PRIMARY_SUCCESS_RATIO).await.unwrap();
    assert!((primary[0].value - 6.0 / 11.0).abs() < 1e-9, "{primary:?}");

    // Histograms reach /stats/prometheus on Envoy's stats flush (every 5 s).
    let p50 = prom
        .wait_for(queries::P50_DURATION_BY_PROVIDER, wait, |s| {
            by(s, "provider").len() == 2
        })
        .await;
    let p50 = by(&p50, "provider");
    eprintln!("median attempt duration by provider: {p50:?}");
    assert!(p50["a"] < 100.0, "primary's median {p50:?}");
    assert!(p50["b"] >= 250.0 && p50["b"] <= 500.0, "slow fallback's median {p50:?}");

    // The rate the dashboard plots is there too (the counters changed within
    // the last minute of scrapes).
    let rate = prom.samples(queries::FAILOVER_RATE_BY_CLASS).await.unwrap();
    assert!(rate.iter().all(|s| s.value.is_finite() || s.value.is_nan()), "{rate:?}");
}

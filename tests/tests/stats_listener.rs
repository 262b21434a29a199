//! The stats-only listener (`switchyard bootstrap --stats-addr`, the chart's
//! Prometheus port, as Istio's 15090): on real Envoy it serves the admin's
//! `/stats/prometheus` with the filter's metrics and answers 404 for every other
//! path or method, so nothing that reads or controls the Envoy is reachable
//! through it; its requests count under a stat prefix of their own; and a drain
//! of the inbound listeners (the chart's preStop) stops the gateway's listener
//! but not this one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, served};
use switchyard_tests::prometheus::parse_exposition;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_port_serves_prometheus_text_and_nothing_else() {
    let paths = Paths::discover();
    let dir = Scratch::new("stats-listener");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/gpt"])
        .stats_listener()
        .start(&paths, &dir)
        .await;
    assert!(!gw.stats.is_empty(), "no stats listener");
    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(served(&r), ("a".into(), "1".into()));
    let gateway_requests = gw.stat("http.switchyard.downstream_rq_total").await;
    let client = reqwest::Client::new();
    let mut sent = 0;

    // Prometheus text, with the filter's metrics as docs/metrics.md names them
    // (the bootstrap's tag extraction applies: the same text as the admin's).
    let r = client
        .get(format!("{}/stats/prometheus", gw.stats))
        .send()
        .await
        .unwrap();
    sent += 1;
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let samples = parse_exposition(&r.text().await.unwrap());
    let requests = samples
        .iter()
        .find(|s| {
            s.name == "switchyard_requests_total"
                && s.label("route") == "chat"
                && s.label("outcome") == "served"
                && s.label("status_class") == "2xx"
        })
        .unwrap_or_else(|| panic!("no switchyard_requests_total{{route=\"chat\",outcome=\"served\"}}"));
    assert_eq!(requests.value, 1.0);
    assert!(samples.iter().any(|s| s.name == "switchyard_attempts_total"
        && s.label("provider") == "a"
        && s.label("result") == "success"
        && s.value == 1.0));
    // With a query, as a scrape config's `params` may add.
    let r = client
        .get(format!("{}/stats/prometheus?usedonly", gw.stats))
        .send()
        .await
        .unwrap();
    sent += 1;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("switchyard_requests_total{"));

    // Everything else is the listener's own 404: the admin's pages that read
    // the Envoy (its config with credentials, non-Prometheus stats) or control
    // it (quit, drain, health, runtime, logging) are not behind it.
    let refused = [
        ("GET", "/config_dump"),
        ("GET", "/quitquitquit"),
        ("POST", "/quitquitquit"),
        ("GET", "/stats"),
        ("GET", "/stats?format=json"),
        ("GET", "/"),
        ("POST", "/drain_listeners"),
        ("POST", "/healthcheck/fail"),
        ("POST", "/runtime_modify?envoy.reloadable_features.x=false"),
        ("POST", "/logging?level=trace"),
        ("GET", "/clusters"),
        ("GET", "/stats/prometheusx"),
        ("GET", "/stats/prometheus/"),
        ("GET", "//stats/prometheus"),
        ("POST", "/stats/prometheus"),
        ("HEAD", "/stats/prometheus"),
    ];
    for (method, path) in refused {
        let r = client
            .request(method.parse().unwrap(), format!("{}{path}", gw.stats))
            .send()
            .await
            .unwrap();
        sent += 1;
        assert_eq!(r.status(), 404, "{method} {path}");
    }
    // Only the two scrapes reached the admin, and the Envoy is as it was: alive,
    // not failing health checks, serving.
    assert_eq!(gw.stat("cluster.switchyard_admin.upstream_rq_total").await, Some(2));
    assert_eq!(gw.stat("server.state").await, Some(0), "LIVE");
    let ready = client.get(format!("{}/ready", gw.admin)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(served(&r), ("a".into(), "1".into()));

    // Its requests count under its own prefix, not in the gateway's
    // `http.switchyard.*` (which the preStop waits on, and dashboards read).
    assert_eq!(
        gw.stat("http.switchyard.downstream_rq_total").await,
        gateway_requests.map(|n| n + 1),
        "only the chat request"
    );
    assert_eq!(
        gw.stat("http.switchyard_prometheus.downstream_rq_total").await,
        Some(sent)
    );

    // The chart's preStop drains the inbound listeners only (here without the
    // drain period): the gateway's listener stops taking connections, the
    // stats listener keeps serving until Envoy exits.
    let r = client
        .post(format!("{}/drain_listeners?inboundonly", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let port = gw.url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the gateway's listener still takes connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client
        .get(format!("{}/stats/prometheus", gw.stats))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the stats listener stopped with the gateway's");
    assert!(r.text().await.unwrap().contains("switchyard_requests_total{"));
}

//! Traces: with `tracing:` in the config, Envoy's OpenTelemetry tracer sends
//! one span per client request and one per attempt (the router's upstream
//! spans) to an OTLP/gRPC collector — here the harness's receiver. A client's
//! W3C `traceparent` is continued although the planner's header allow-list
//! drops it from the request (Envoy reads it before any filter runs), and each
//! attempt carries its own `traceparent` to the provider. Switchyard's facts
//! (route, served target and position, failure classes, each attempt's target
//! and result) are span attributes read from the filter state the filter
//! writes (`switchyard_core::observe`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, served};
use switchyard_tests::otlp::{Receiver, SpanRecord};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// SpanKind values.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

struct Traced {
    _dir: Scratch,
    gw: Gateway,
    a: Mock,
    _b: Mock,
    rx: Receiver,
}

async fn traced_gateway(tag: &str) -> Traced {
    let paths = Paths::discover();
    let dir = Scratch::new(tag);
    let rx = Receiver::start().await.unwrap();
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/gpt", "b/claude"])
        .yaml(&format!(
            "tracing: {{ otlp_grpc: \"{}\", service_name: sy-test }}\n",
            rx.addr
        ))
        .start(&paths, &dir)
        .await;
    Traced {
        _dir: dir,
        gw,
        a,
        _b: b,
        rx,
    }
}

/// The spans of trace `id`, once there are `n` of them (Envoy's exporter sends
/// a batch every 5 s).
async fn trace(rx: &Receiver, id: &str, n: usize) -> Vec<SpanRecord> {
    rx.wait_for(Duration::from_secs(15), |s| {
        s.iter().filter(|s| s.trace_id == id).count() >= n
    })
    .await
    .unwrap_or_else(|| panic!("trace {id}: fewer than {n} spans in 15 s: {:#?}", rx.spans()))
    .into_iter()
    .filter(|s| s.trace_id == id)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_failed_over_is_one_span_with_two_attempt_spans() {
    let t = traced_gateway("traces-tree").await;
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let r =
        t.gw.chat(
            &chat_body("chat"),
            &[
                ("x-mock", "a:status=503"),
                ("traceparent", &traceparent),
                ("tracestate", "acme=7"),
            ],
        )
        .await;
    let status = r.status();
    let (h, body) = (served(&r), r.text().await.unwrap());
    assert_eq!(h, ("b".into(), "2".into()), "{status} {body}");

    let spans = trace(&t.rx, TRACE_ID, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    // The client's trace is continued: one server span, child of the client's.
    let roots: Vec<&SpanRecord> = spans.iter().filter(|s| s.kind == SERVER).collect();
    assert_eq!(roots.len(), 1, "{spans:#?}");
    let root = roots[0];
    assert_eq!(root.parent_span_id, CLIENT_SPAN);
    assert_eq!(root.trace_state, "acme=7");
    assert_eq!(root.resource.get("service.name").map(String::as_str), Some("sy-test"));
    // Named by the planner (`switchyard_facts_are_span_attributes`), else
    // Envoy's "ingress"; never after an attempt's rewritten path.
    assert!(!root.name.contains("/v1/messages"), "{}", root.name);
    assert_eq!(root.attr("http.status_code"), "200");
    // Two attempts, children of the request's span, in the order they ran.
    let mut attempts: Vec<&SpanRecord> = spans.iter().filter(|s| s.kind == CLIENT).collect();
    attempts.sort_by_key(|s| s.start_ns);
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for s in &attempts {
        assert_eq!(s.parent_span_id, root.span_id);
        assert!(s.start_ns >= root.start_ns && s.end_ns <= root.end_ns, "{s:#?}");
    }
    assert_eq!(attempts[0].attr("upstream_cluster"), "sy_provider_a");
    assert_eq!(attempts[0].attr("http.status_code"), "503");
    assert_eq!(attempts[1].attr("upstream_cluster"), "sy_provider_b");
    assert_eq!(attempts[1].attr("http.status_code"), "200");
    assert!(attempts[0].end_ns <= attempts[1].start_ns);

    // The provider got the trace too: the attempt's own span as parent.
    let got = t.a.requests().await;
    let tp = got[0]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "traceparent")
        .map(|h| h[1].as_str().unwrap().to_string())
        .expect("the provider got a traceparent");
    assert_eq!(tp, format!("00-{TRACE_ID}-{}-01", attempts[0].span_id));

    // Without a traceparent the request starts its own trace.
    let r = t.gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(served(&r), ("a".into(), "1".into()));
    let fresh =
        t.rx.wait_for(Duration::from_secs(15), |s| {
            s.iter().any(|s| s.trace_id != TRACE_ID && s.kind == SERVER)
        })
        .await
        .expect("a span for the untraced request");
    let own = fresh
        .iter()
        .find(|s| s.trace_id != TRACE_ID && s.kind == SERVER)
        .unwrap();
    assert!(own.parent_span_id.is_empty(), "{own:#?}");
}

/// Switchyard's facts on the spans: needs the filter to write them
/// (`switchyard_core::observe::{REQUEST_SPAN_FACTS, ATTEMPT_SPAN_FACTS}`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchyard_facts_are_span_attributes() {
    let t = traced_gateway("traces-facts").await;
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let r =
        t.gw.chat(
            &chat_body("chat"),
            &[("x-mock", "a:status=503"), ("traceparent", &traceparent)],
        )
        .await;
    assert_eq!(served(&r), ("b".into(), "2".into()));
    let spans = trace(&t.rx, TRACE_ID, 3).await;
    let root = spans.iter().find(|s| s.kind == SERVER).unwrap();
    assert_eq!(root.name, "chat chat");
    for (k, v) in [
        ("switchyard.route", "chat"),
        ("gen_ai.request.model", "chat"),
        ("switchyard.attempts", "2"),
        ("switchyard.served.provider", "b"),
        ("gen_ai.provider.name", "b"),
        ("switchyard.served.model", "claude"),
        ("gen_ai.response.model", "claude"),
        ("switchyard.served.position", "2"),
        ("switchyard.failure_classes", "server_error"),
        ("switchyard.hedge", "none"),
    ] {
        assert_eq!(root.attr(k), v, "request span attribute {k}: {root:#?}");
    }
    let mut attempts: Vec<&SpanRecord> = spans.iter().filter(|s| s.kind == CLIENT).collect();
    attempts.sort_by_key(|s| s.start_ns);
    for (s, (provider, model, position, result)) in attempts
        .iter()
        .zip([("a", "gpt", "1", "server_error"), ("b", "claude", "2", "success")])
    {
        assert_eq!(s.attr("switchyard.attempt.provider"), provider, "{s:#?}");
        assert_eq!(s.attr("switchyard.attempt.model"), model, "{s:#?}");
        assert_eq!(s.attr("switchyard.attempt.position"), position, "{s:#?}");
        assert_eq!(s.attr("switchyard.attempt.key"), "0", "{s:#?}");
        assert_eq!(s.attr("switchyard.attempt.result"), result, "{s:#?}");
    }
}

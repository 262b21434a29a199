//! Provider credentials come from the control plane's config and are injected per
//! attempt; the client's own credentials never reach a provider, and provider
//! credentials never reach the client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, recorded_header};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_injected_per_attempt_and_client_auth_is_dropped() {
    let paths = Paths::discover();
    let dir = Scratch::new("credentials");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .credentials(
            "a",
            "api_key: { value: key-a }, organization: org-1, project: proj-1, headers: { X-Title: Switchyard }",
        )
        .route("chat", &["a/gpt", "b/claude"])
        .start(&paths, &dir)
        .await;

    let client_headers = [
        ("authorization", "Bearer client-secret"),
        ("x-api-key", "client-x-api-key"),
        ("api-key", "client-azure-key"),
        ("cookie", "session=client"),
        ("openai-organization", "client-org"),
        ("x-mock", "a:status=503"),
    ];
    let r = gw.chat(&chat_body("chat"), &client_headers).await;
    assert_eq!(r.status(), 200);
    let headers = format!("{:?}", r.headers());
    let body = r.text().await.unwrap();
    for secret in ["key-a", "key-b"] {
        assert!(
            !headers.contains(secret) && !body.contains(secret),
            "provider key leaked to the client"
        );
    }

    let ra = &a.requests().await[0];
    assert_eq!(recorded_header(ra, "authorization"), vec!["Bearer key-a"]);
    assert!(recorded_header(ra, "x-api-key").is_empty());
    assert!(recorded_header(ra, "api-key").is_empty());
    assert!(recorded_header(ra, "cookie").is_empty());
    // Configured organization, project and extra headers; the client's own
    // organization header is not forwarded.
    assert_eq!(recorded_header(ra, "openai-organization"), vec!["org-1"]);
    assert_eq!(recorded_header(ra, "openai-project"), vec!["proj-1"]);
    assert_eq!(recorded_header(ra, "x-title"), vec!["Switchyard"]);

    // The second attempt shares the router's header map with the first: nothing of
    // attempt 1's credentials may survive into attempt 2.
    let rb = &b.requests().await[0];
    assert_eq!(recorded_header(rb, "x-api-key"), vec!["key-b"]);
    assert_eq!(recorded_header(rb, "anthropic-version"), vec!["2023-06-01"]);
    assert!(recorded_header(rb, "authorization").is_empty(), "{rb}");
    for h in ["openai-organization", "openai-project", "x-title"] {
        assert!(
            recorded_header(rb, h).is_empty(),
            "{h} of attempt 1 reached attempt 2: {rb}"
        );
    }
    assert_eq!(rb["path"], "/v1/messages");
    let raw = rb.to_string();
    assert!(
        !raw.contains("client-secret") && !raw.contains("client-x-api-key") && !raw.contains("key-a"),
        "{raw}"
    );
}

/// Provider keys travel over the fleet exchange, not in the filter config:
/// Envoy's `/config_dump` (what anyone with admin access reads) holds none,
/// yet every attempt carries its provider's key (rotation over the exchange:
/// `vertex.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_keys_are_in_no_envoy_config() {
    let paths = Paths::discover();
    let dir = Scratch::new("credentials-dump");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .credentials("a", "api_key: { value: key-a }")
        .credentials("b", "api_key: { value: key-b }")
        .route("chat", &["a/gpt", "b/claude"])
        .start(&paths, &dir)
        .await;
    let r = gw.chat(&chat_body("chat"), &[("x-mock", "a:status=503")]).await;
    assert_eq!(r.status(), 200);
    let sent = a.requests().await;
    assert_eq!(recorded_header(&sent[0], "authorization"), vec!["Bearer key-a"]);
    let sent = b.requests().await;
    assert_eq!(recorded_header(&sent[0], "x-api-key"), vec!["key-b"]);
    let dump = reqwest::get(format!("{}/config_dump?include_eds", gw.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(dump.contains("sy_provider_a"), "a real dump");
    for secret in ["key-a", "key-b"] {
        assert!(!dump.contains(secret), "{secret} is in /config_dump");
    }
}

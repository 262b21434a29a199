//! Provider credentials come from the control plane's config and are injected per
//! attempt; the client's own credentials never reach a provider, and provider
//! credentials never reach the client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::Value;
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

fn header(req: &Value, name: &str) -> Vec<String> {
    req["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_injected_per_attempt_and_client_auth_is_dropped() {
    let paths = Paths::discover();
    let dir = Scratch::new("credentials");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/gpt", "b/claude"])
        .start(&paths, &dir)
        .await;

    let client_headers = [
        ("authorization", "Bearer client-secret"),
        ("x-api-key", "client-x-api-key"),
        ("api-key", "client-azure-key"),
        ("cookie", "session=client"),
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
    assert_eq!(header(ra, "authorization"), vec!["Bearer key-a"]);
    assert!(header(ra, "x-api-key").is_empty());
    assert!(header(ra, "api-key").is_empty());
    assert!(header(ra, "cookie").is_empty());

    // The second attempt shares the router's header map with the first: nothing of
    // attempt 1's credentials may survive into attempt 2.
    let rb = &b.requests().await[0];
    assert_eq!(header(rb, "x-api-key"), vec!["key-b"]);
    assert_eq!(header(rb, "anthropic-version"), vec!["2023-06-01"]);
    assert!(header(rb, "authorization").is_empty(), "{rb}");
    assert_eq!(rb["path"], "/v1/messages");
    let raw = rb.to_string();
    assert!(
        !raw.contains("client-secret") && !raw.contains("client-x-api-key") && !raw.contains("key-a"),
        "{raw}"
    );
}

//! Virtual keys on real Envoy: every refusal a client can act on (401, 403, 429
//! rate and budget) in OpenAI's error shape with the request id, nothing sent
//! upstream for any of them; a key restricted to one provider never reaches
//! another, whatever its request's `fallbacks` name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, recorded_header};

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn send(gw: &Gateway, body: &Value, auth: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new().post(gw.at("/v1/chat/completions")).json(body);
    for (k, v) in auth {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

/// What is sent (name, headers, body) and expected (status, code).
type Case<'a> = (&'a str, Vec<(&'a str, String)>, Value, u16, &'a str);

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_actionable_and_nothing_goes_upstream() {
    let paths = Paths::discover();
    let dir = Scratch::new("keys-errors");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/gpt", "b/claude"])
        .route("other", &["b/claude"])
        .yaml("prices:\n  a/gpt: { input: 1.0, output: 2.0 }\n  b/claude: { input: 1.0, output: 2.0 }\n")
        .start(&paths, &dir)
        .await;

    // Without keys the gateway is open.
    let (s, _, _) = send(&gw, &chat_body("chat"), &[]).await;
    assert_eq!(s, 200, "no keys: open");

    let (_, good) = gw.create_key(&json!({"name": "good"})).await;
    gw.wait_for_key(&good, "chat").await;
    let (revoked_id, revoked) = gw.create_key(&json!({"name": "gone"})).await;
    let (_, expired) = gw
        .create_key(&json!({"name": "old", "expires_at_ms": 1_000_000_000_000u64}))
        .await;
    let (_, other_only) = gw.create_key(&json!({"name": "other-only", "routes": ["other"]})).await;
    let (_, slow) = gw.create_key(&json!({"name": "slow", "limits": {"rpm": 2}})).await;
    let (_, broke) = gw
        .create_key(&json!({"name": "broke", "limits": {"budget_day_usd": 0.000001}}))
        .await;
    let (s, _) = gw
        .admin_call("POST", &format!("/admin/v1/keys/{revoked_id}/revoke"), None)
        .await;
    assert_eq!(s, 200);
    // Every Envoy has the newest table within a second (revocation.rs measures it).
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;

    // The good key, as a bearer token and as x-api-key; the provider gets its own
    // credential, never the client's key.
    let (s, h, _) = send(&gw, &chat_body("chat"), &[("authorization", &bearer(&good))]).await;
    assert_eq!(s, 200);
    assert_eq!(h.get("x-switchyard-provider").unwrap(), "a");
    let (s, _, _) = send(&gw, &chat_body("chat"), &[("x-api-key", &good)]).await;
    assert_eq!(s, 200);
    let seen = a.requests().await;
    for r in &seen {
        for h in ["authorization", "x-api-key"] {
            assert!(
                recorded_header(r, h).iter().all(|v| !v.contains("sk-sy-")),
                "a client key reached the provider: {r}"
            );
        }
    }
    let upstream = |a: &Vec<Value>, b: &Vec<Value>| a.len() + b.len();
    let mut before = upstream(&a.requests().await, &b.requests().await);

    let mut cases: Vec<Case> = vec![
        ("missing", vec![], chat_body("chat"), 401, "invalid_api_key"),
        (
            "unknown",
            vec![("authorization", bearer("sk-sy-not-a-key"))],
            chat_body("chat"),
            401,
            "invalid_api_key",
        ),
        (
            "revoked",
            vec![("authorization", bearer(&revoked))],
            chat_body("chat"),
            401,
            "invalid_api_key",
        ),
        (
            "expired",
            vec![("x-api-key", expired.clone())],
            chat_body("chat"),
            401,
            "invalid_api_key",
        ),
        (
            "route not allowed",
            vec![("authorization", bearer(&other_only))],
            chat_body("chat"),
            403,
            "model_not_allowed",
        ),
        (
            "direct target without the permission",
            vec![("authorization", bearer(&good))],
            chat_body("a/gpt"),
            403,
            "model_not_allowed",
        ),
        (
            "budget",
            vec![("authorization", bearer(&broke))],
            chat_body("chat"),
            429,
            "budget_exceeded",
        ),
    ];
    // RPM 2: the first request passes on credit, then the limit answers.
    let (s, _, _) = send(&gw, &chat_body("chat"), &[("authorization", &bearer(&slow))]).await;
    assert_eq!(s, 200);
    before += 1;
    cases.push((
        "rate",
        vec![("authorization", bearer(&slow))],
        chat_body("chat"),
        429,
        "rate_limit_exceeded",
    ));
    for (what, headers, body, status, code) in &cases {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut hs = hs;
        hs.push(("x-request-id", "req-governance-1"));
        let (s, h, v) = send(&gw, body, &hs).await;
        if *what == "rate" && s == 200 {
            // The grant for the second request arrived first: the third is refused.
            before += 1;
            let (s2, h2, v2) = send(&gw, body, &hs).await;
            assert_eq!(
                (s2, v2["error"]["code"].as_str().unwrap_or("")),
                (*status, *code),
                "{what}: {v2}"
            );
            check_limit_headers(&h2, &v2);
            continue;
        }
        assert_eq!(s, *status, "{what}: {v}");
        assert_eq!(v["error"]["code"], *code, "{what}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(v["error"]["type"].is_string(), "{what}: {v}");
        assert!(
            v["error"]["request_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("req-governance-1")),
            "{what}: {v}"
        );
        if *status == 429 {
            check_limit_headers(&h, &v);
        }
        println!("{what}: {s} {code}: {}", v["error"]["message"]);
    }
    let after = upstream(&a.requests().await, &b.requests().await);
    assert_eq!(after, before, "a refused request reached a provider");
}

fn check_limit_headers(h: &reqwest::header::HeaderMap, v: &Value) {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(get("x-switchyard-limit"), "gateway", "{v}");
    assert!(get("retry-after").parse::<u64>().is_ok_and(|s| s >= 1), "{h:?}");
    assert_eq!(v["error"]["type"], "gateway_limit_error");
    if v["error"]["code"] == "rate_limit_exceeded" {
        assert_eq!(get("x-ratelimit-limit-requests"), "2", "{h:?}");
        assert_eq!(get("x-ratelimit-remaining-requests"), "0", "{h:?}");
        assert!(get("x-ratelimit-reset-requests").ends_with('s'), "{h:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_restricted_to_one_provider_never_reaches_another() {
    let paths = Paths::discover();
    let dir = Scratch::new("keys-restricted");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .yaml(
            "routes:\n  - { model: chat, chain: [a/gpt, b/gpt] }\n  - { model: bee, chain: [b/gpt] }\n  - { model: hedged, chain: [a/gpt, b/gpt], policy: { hedge_after_ms: 100 } }\n",
        )
        .start(&paths, &dir)
        .await;
    let (_, key) = gw
        .create_key(&json!({"name": "a-only", "targets": ["a/*"], "direct": true}))
        .await;
    gw.wait_for_key(&key, "chat").await;
    let auth = bearer(&key);

    // Its provider fails: the route's fallback and the request's fallbacks (an
    // alias and a direct target) all lead to b, which the key may not reach.
    let mut body = chat_body("chat");
    body["fallbacks"] = json!(["b/gpt", "bee"]);
    let r = gw
        .chat(&body, &[("authorization", &auth), ("x-mock", "a:status=503")])
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "x-switchyard-attempts"), "1");
    // Naming b itself is refused, before anything is sent.
    let r = gw.chat(&chat_body("b/gpt"), &[("authorization", &auth)]).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_allowed");
    // A direct target of its own provider is fine.
    let r = gw.chat(&chat_body("a/gpt-direct"), &[("authorization", &auth)]).await;
    assert_eq!(r.status(), 200);
    // `/v1/models` lists only what the key may use.
    let models: Value = reqwest::Client::new()
        .get(gw.at("/v1/models"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"a/gpt") && !ids.contains(&"b/gpt"), "{ids:?}");
    // A hedged route races its next target when the first is slow: not for a
    // key that may not use it (its plan is not the route's chain).
    let t0 = std::time::Instant::now();
    let r = gw
        .chat(
            &chat_body("hedged"),
            &[("authorization", &auth), ("x-mock", "a:delay_ms=400")],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-switchyard-provider"), "a");
    assert!(t0.elapsed() >= std::time::Duration::from_millis(400));
    let b_seen = b.requests().await;
    assert!(b_seen.is_empty(), "the key reached b: {b_seen:?}");
}

/// Teams: a request counts against its key and its team. Keys well within
/// their own limits are refused once their team's are spent — requests per
/// minute shared by two keys, a daily budget — in OpenAI's shape with the
/// team named (`x-switchyard-limit-subject: team NAME`), nothing sent
/// upstream; a key outside the team is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_limit_refuses_keys_within_their_own() {
    let paths = Paths::discover();
    let dir = Scratch::new("keys-teams");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/gpt"])
        .yaml("prices:\n  a/gpt: { input: 1.0, output: 2.0 }\n")
        .start(&paths, &dir)
        .await;
    const TEAM_RPM: u64 = 3;
    for (team, limits) in [
        ("research", json!({"rpm": TEAM_RPM})),
        ("interns", json!({"budget_day_usd": 0.000001})),
    ] {
        let (s, v) = gw
            .admin_call(
                "PUT",
                &format!("/admin/v1/teams/{team}"),
                Some(&json!({"limits": limits})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (_, outsider) = gw.create_key(&json!({"name": "outsider"})).await;
    gw.wait_for_key(&outsider, "chat").await;
    let (_, r1) = gw
        .create_key(&json!({"name": "r1", "team": "research", "limits": {"rpm": 100}}))
        .await;
    let (_, r2) = gw.create_key(&json!({"name": "r2", "team": "research"})).await;
    let (_, intern) = gw
        .create_key(&json!({"name": "intern", "team": "interns", "limits": {"budget_day_usd": 100.0}}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;

    // A spent team budget: refused at once, whatever the key's own budget.
    let before = a.requests().await.len();
    let (s, h, v) = send(&gw, &chat_body("chat"), &[("authorization", &bearer(&intern))]).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["code"], "budget_exceeded", "{v}");
    assert_eq!(v["error"]["type"], "gateway_limit_error", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().starts_with("Team `interns`"),
        "{v}"
    );
    let get =
        |h: &reqwest::header::HeaderMap, n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(get(&h, "x-switchyard-limit"), "gateway");
    assert_eq!(get(&h, "x-switchyard-limit-subject"), "team interns");

    // Requests per minute, shared: r1 and r2 in turn until the team's minute
    // is spent (a refusal that says so, not one waiting for this Envoy's share).
    // Far from a minute's end, so that the whole run is in one window.
    let second = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 60
    };
    while second() > 40 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let keys = [&r1, &r2];
    let mut admitted = 0u64;
    let mut spent = None;
    for i in 0..40 {
        let key = keys[i % 2];
        let (s, h, v) = send(&gw, &chat_body("chat"), &[("authorization", &bearer(key))]).await;
        match s {
            200 => admitted += 1,
            429 => {
                assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
                assert_eq!(get(&h, "x-switchyard-limit-subject"), "team research", "{v}");
                let message = v["error"]["message"].as_str().unwrap();
                assert!(message.starts_with("Team `research`"), "{message}");
                if message.contains("reached its limit") {
                    spent = Some(i);
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            s => panic!("unexpected {s}: {v}"),
        }
    }
    let spent = spent.expect("the team's limit was never reached");
    assert!(
        admitted <= TEAM_RPM,
        "{admitted} admitted, the team's limit is {TEAM_RPM}"
    );
    assert!(admitted >= 1, "nothing admitted");
    // The other key of the team, far below its own limit, is refused too…
    let (s, h, v) = send(
        &gw,
        &chat_body("chat"),
        &[("authorization", &bearer(keys[(spent + 1) % 2]))],
    )
    .await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(get(&h, "x-switchyard-limit-subject"), "team research", "{v}");
    assert_eq!(get(&h, "x-ratelimit-limit-requests"), TEAM_RPM.to_string(), "{h:?}");
    assert_eq!(get(&h, "x-ratelimit-remaining-requests"), "0", "{h:?}");
    // …and nothing refused reached the provider; a key of no team is served.
    assert_eq!(a.requests().await.len(), before + admitted as usize);
    let (s, _, v) = send(&gw, &chat_body("chat"), &[("authorization", &bearer(&outsider))]).await;
    assert_eq!(s, 200, "{v}");
}

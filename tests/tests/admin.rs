//! The admin API and the `switchyard keys`/`teams` CLI against a running
//! control plane: the admin token is required, keys are shown once and then only
//! by id, changes take effect on the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_a_missing_or_wrong_token() {
    let paths = Paths::discover();
    let dir = Scratch::new("admin-token");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/gpt"])
        .start(&paths, &dir)
        .await;
    let url = format!("http://{}/admin/v1/keys", gw.admin_api);
    let client = reqwest::Client::new();
    for (what, req) in [
        ("no token", client.get(&url)),
        ("wrong token", client.get(&url).bearer_auth("sy-admin-wrong")),
        (
            "a prefix of the token",
            client.get(&url).bearer_auth(&gw.admin_token()[..10]),
        ),
        ("create without a token", client.post(&url).json(&json!({"name": "x"}))),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
    }
    // Nothing was created: the gateway is still open.
    let (s, v) = gw.admin_call("GET", "/admin/v1/keys", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["keys"].as_array().unwrap().len(), 0);
    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(r.status(), 200);
    // The CLI with a wrong token file fails, and says why.
    let bad = dir.0.join("bad-token");
    std::fs::write(&bad, "sy-admin-wrong").unwrap();
    let (code, _, err) = gw.cli(&paths, &["keys", "list", "--token-file", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_keys_against_a_running_control_plane() {
    let paths = Paths::discover();
    let dir = Scratch::new("admin-cli");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/gpt"])
        .route("other", &["a/gpt-2"])
        .start(&paths, &dir)
        .await;

    let (code, out, err) = gw.cli(
        &paths,
        &[
            "keys",
            "create",
            "--name",
            "cli-key",
            "--team",
            "research",
            "--owner",
            "ana",
            "--routes",
            "chat",
            "--rpm",
            "600",
            "--budget-day",
            "5",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("sk-sy-"))
        .expect("the key is printed once")
        .to_string();
    let id = out
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .unwrap()
        .to_string();
    gw.wait_for_key(&key, "chat").await;

    let (code, out, _) = gw.cli(&paths, &["keys", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains("cli-key") && out.contains("research"),
        "{out}"
    );
    assert!(!out.contains(&key), "the key is never listed");
    let (code, out, _) = gw.cli(&paths, &["keys", "show", &id]);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["record"]["limits"]["rpm"], 600);
    assert!(shown["record"].get("sha256").is_none(), "{out}");

    // Restrict it: the other route is refused.
    let r = gw
        .chat(&chat_body("other"), &[("authorization", &format!("Bearer {key}"))])
        .await;
    assert_eq!(r.status(), 403);
    let (code, out, err) = gw.cli(&paths, &["keys", "update", &id, "--routes", "all", "--rpm", "none"]);
    assert_eq!(code, 0, "{out}{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let r = gw
            .chat(&chat_body("other"), &[("authorization", &format!("Bearer {key}"))])
            .await;
        if r.status() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "update not in force");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let (code, out, err) = gw.cli(&paths, &["teams", "set", "research", "--budget-month", "100"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = gw.cli(&paths, &["teams", "list"]);
    assert!(out.contains("research") && out.contains("100"), "{out}");

    let (code, out, err) = gw.cli(&paths, &["keys", "revoke", &id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("revoked"), "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let r = gw
            .chat(&chat_body("chat"), &[("authorization", &format!("Bearer {key}"))])
            .await;
        if r.status() == 401 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "revocation not in force");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, out, _) = gw.cli(&paths, &["keys", "list"]);
    assert!(out.contains("revoked"), "{out}");

    // `keys generate` works offline: a key and its hash for the config file.
    let (code, out, _) = gw.cli(&paths, &["keys", "generate"]);
    assert_eq!(code, 0);
    assert!(out.contains("sk-sy-") && out.contains("sha256:"), "{out}");
}

//! The control plane over real gRPC with real Envoy: bootstrap, NACK reporting,
//! hot reload.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

#[test]
fn checked_in_bootstrap_is_generated_and_valid() {
    let paths = Paths::discover();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let checked_in = std::fs::read_to_string(root.join("envoy/bootstrap.yaml")).unwrap();
    let out = Command::new(&paths.switchyard).arg("bootstrap").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        checked_in,
        "envoy/bootstrap.yaml is stale: regenerate with `switchyard bootstrap`"
    );
    let v = Command::new(&paths.envoy)
        .args(["--mode", "validate", "-c"])
        .arg(root.join("envoy/bootstrap.yaml"))
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[test]
fn validate_cli_reports_precise_errors() {
    let paths = Paths::discover();
    let dir = Scratch::new("xds-validate");
    let file = dir.0.join("bad.yaml");
    std::fs::write(
        &file,
        "providers:\n  - { name: a, dialect: openai, base_url: 'http://127.0.0.1:1/v1', api_key: { env: SWITCHYARD_TEST_UNSET_KEY } }\nroutes:\n  - { model: chat, chain: [b/x] }\n",
    )
    .unwrap();
    let out = Command::new(&paths.switchyard)
        .arg("validate")
        .arg(&file)
        .env_remove("SWITCHYARD_TEST_UNSET_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("providers[0].api_key: environment variable SWITCHYARD_TEST_UNSET_KEY is not set"),
        "{err}"
    );
    assert!(err.contains("routes[0].chain[0]: unknown provider `b`"), "{err}");

    std::fs::write(
        &file,
        "providers:\n  - { name: a, dialect: openai, base_url: 'http://127.0.0.1:1/v1', api_key: { value: k } }\n",
    )
    .unwrap();
    let out = Command::new(&paths.switchyard)
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Secrets are never echoed.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("value: k"));
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, timeout: Duration, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_is_logged_and_hot_reload_keeps_serving() {
    let paths = Paths::discover();
    let dir = Scratch::new("xds-reload");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/gpt"])
        .start(&paths, &dir)
        .await;
    let served_by = |r: &reqwest::Response| r.headers()["x-switchyard-provider"].to_str().unwrap().to_string();
    assert_eq!(served_by(&gw.chat(&chat_body("chat"), &[]).await), "a");

    // `switchyard status` shows the Envoy connected and up to date.
    let status = |json: bool| {
        let mut cmd = Command::new(&paths.switchyard);
        cmd.args(["status", "--status-addr", &gw.status.to_string()]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let s: Value = serde_json::from_str(&status(true)).unwrap();
    let version = s["version"].as_str().unwrap().to_string();
    let nodes = s["nodes"].as_object().unwrap();
    assert_eq!(nodes.len(), 1, "{s}");
    let node = nodes.values().next().unwrap();
    assert_eq!(node["connected"], true);
    for ty in ["Cluster", "Listener", "RouteConfiguration"] {
        assert_eq!(node["acked"][ty], version.as_str(), "{s}");
    }
    let table = status(false);
    assert!(table.contains("test-envoy-") && table.contains(" yes "), "{table}");

    // A config Envoy rejects (the filter file does not exist): Envoy NACKs, the
    // control plane logs Envoy's reason, and the old config keeps serving.
    let good = std::fs::read_to_string(&gw.config).unwrap();
    let broken = good
        .replace(&gw.filter_file, "missing_filter")
        .replace("[a/gpt]", "[b/claude]");
    std::fs::write(&gw.config, &broken).unwrap();
    wait_until("a NACK in the control plane log", Duration::from_secs(15), || async {
        gw.cp.output().contains("NACK")
    })
    .await;
    let log = gw.cp.output();
    let nack = log.lines().find(|l| l.contains("NACK")).unwrap();
    assert!(
        nack.contains("missing_filter") || nack.contains("Wasm") || nack.contains("dynamic module"),
        "NACK without Envoy's reason: {nack}"
    );
    assert_eq!(served_by(&gw.chat(&chat_body("chat"), &[]).await), "a");
    let s: Value = serde_json::from_str(&status(true)).unwrap();
    let node = s["nodes"].as_object().unwrap().values().next().unwrap().clone();
    assert!(node["last_nack"].as_str().unwrap_or("").contains("Listener"), "{s}");
    assert_ne!(
        node["acked"]["Listener"], s["version"],
        "the rejected listener version is not accepted: {s}"
    );

    // A config the control plane itself rejects is never pushed.
    std::fs::write(&gw.config, good.replace("dialect: openai", "dialect: nope")).unwrap();
    wait_until(
        "the control plane to reject the file",
        Duration::from_secs(10),
        || async { gw.cp.output().contains("rejected new config") },
    )
    .await;

    // A valid change is pushed and takes effect without a restart.
    std::fs::write(&gw.config, good.replace("[a/gpt]", "[b/claude]")).unwrap();
    let url = gw.at("/v1/chat/completions");
    wait_until("the new route to serve", Duration::from_secs(15), || {
        let url = url.clone();
        async move {
            let r = reqwest::Client::new().post(url).json(&chat_body("chat")).send().await;
            r.ok()
                .is_some_and(|r| r.headers().get("x-switchyard-provider").is_some_and(|p| p == "b"))
        }
    })
    .await;
    let v: Value = gw.chat(&chat_body("chat"), &[]).await.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from b (claude).");
}

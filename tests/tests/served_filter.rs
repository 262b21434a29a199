//! The filter delivered over HTTP, as Istio delivers Wasm: with `filter: { wasm:
//! PATH, serve: true }` the control plane serves the file on its status port and
//! the listener names it by URL and SHA-256; Envoy fetches it through the fleet
//! cluster and loads it only if the digest matches. A new build written in its
//! place rolls out to every Envoy under load without a failed request.
//!
//! Always the Wasm build (the control plane refuses to serve the native module:
//! Envoy 1.40 passes requests unfiltered when it cannot fetch one).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::Digest;
use switchyard_tests::harness::{Dialect, FilterHost, Gateway, Mock, Paths, Scratch, chat_body};
use tokio::sync::Mutex;

fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The Wasm file with a custom section appended: another build, same behaviour.
fn rebuilt(wasm: &[u8], tag: &[u8]) -> Vec<u8> {
    let name = b"switchyard-test";
    let mut out = wasm.to_vec();
    out.push(0); // custom section
    let size = 1 + name.len() + tag.len();
    assert!(size < 128 && name.len() < 128, "one-byte LEB128 lengths");
    out.push(size as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(tag);
    out
}

/// The remote code sources of the active listener in `admin`'s config dump:
/// `(uri, sha256)` of each filter, and whether any filter names a local file.
async fn listener_code(admin: &str) -> (Vec<(String, String)>, bool) {
    let dump: Value = reqwest::get(format!("{admin}/config_dump?resource=dynamic_listeners"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = dump.to_string();
    let mut remote = Vec::new();
    collect_remote(&dump, &mut remote);
    (remote, text.contains("\"filename\""))
}

fn collect_remote(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            // Only the listener being served, not one still warming or draining.
            if let Some(active) = m.get("active_state") {
                collect_remote(active, out);
                return;
            }
            if let (Some(uri), Some(sha)) = (
                m.get("http_uri").and_then(|u| u.get("uri")).and_then(Value::as_str),
                m.get("sha256").and_then(Value::as_str),
            ) {
                out.push((uri.to_string(), sha.to_string()));
            }
            for x in m.values() {
                collect_remote(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_remote(x, out)),
        _ => {}
    }
}

/// Waits until every Envoy's active listener fetches the build `sha`.
async fn wait_for_build(gw: &Gateway, sha: &str) -> Duration {
    let t = Instant::now();
    for i in 0..gw.envoys.len() {
        let admin = admin_of(gw, i);
        loop {
            let (remote, _) = listener_code(&admin).await;
            if !remote.is_empty() && remote.iter().all(|(_, s)| s == sha) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "Envoy {i} did not load build {sha}: {remote:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    t.elapsed()
}

fn admin_of(gw: &Gateway, i: usize) -> String {
    let file = gw.envoys[i].log.with_extension("").with_extension("admin");
    format!("http://{}", std::fs::read_to_string(file).unwrap().trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_fetch_the_served_filter_and_roll_to_a_new_build_without_a_failed_request() {
    let mut paths = Paths::discover();
    paths.host = FilterHost::Wasm;
    let dir = Scratch::new("served-filter");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    // The control plane's copy of the build: the Envoys never read this path.
    let original = std::fs::read(&paths.wasm).unwrap();
    let served = dir.0.join("served").join("switchyard_filter.wasm");
    std::fs::create_dir_all(served.parent().unwrap()).unwrap();
    std::fs::write(&served, &original).unwrap();
    let mut gw = Gateway::builder()
        .filter_yaml(&format!("filter: {{ wasm: \"{}\", serve: true }}", served.display()))
        .provider(&a)
        .route("chat", &["a/m-a"])
        .start(&paths, &dir)
        .await;
    gw.add_envoy(&paths).await;

    // The listener names the build by URL and digest, on the control plane's
    // status port, and no local file.
    let first = sha256(&original);
    let (remote, local) = listener_code(&admin_of(&gw, 0)).await;
    assert_eq!(remote.len(), 2, "planner and adapter: {remote:?}");
    for (uri, sha) in &remote {
        assert_eq!(sha, &first);
        assert_eq!(
            uri,
            &format!("http://127.0.0.1:{}/filter/v1/{first}.wasm", gw.status.port())
        );
    }
    assert!(!local, "a filter still names a local file");
    // The control plane serves exactly that build, and nothing else.
    let got = reqwest::get(format!("http://{}/filter/v1/{first}.wasm", gw.status))
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), original.as_slice());
    let other = reqwest::get(format!("http://{}/filter/v1/{}.wasm", gw.status, "0".repeat(64)))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    for url in &gw.urls {
        let r = reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .json(&chat_body("chat"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    // Under load on both Envoys, a new build replaces the file.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for url in gw.urls.clone() {
        for _ in 0..3 {
            let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
            load.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = client
                        .post(format!("{url}/v1/chat/completions"))
                        .timeout(Duration::from_secs(10))
                        .json(&chat_body("chat"))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            failed.lock().await.push(format!("{status}: {body}"));
                        }
                        Err(e) => failed.lock().await.push(format!("{e}")),
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ok.load(Ordering::Relaxed);
    let second = rebuilt(&original, b"v2");
    let second_sha = sha256(&second);
    // Written beside it and renamed: the control plane never reads half a file.
    let tmp = served.with_extension("wasm.new");
    std::fs::write(&tmp, &second).unwrap();
    std::fs::rename(&tmp, &served).unwrap();
    let rolled = wait_for_build(&gw, &second_sha).await;
    let at_swap = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let failed = failed.lock().await;
    let total = ok.load(Ordering::Relaxed);
    println!(
        "new build on both Envoys {} ms after the write; {total} requests served ({before} before it, {} after both had it), {} failed",
        rolled.as_millis(),
        total - at_swap,
        failed.len()
    );
    assert!(failed.is_empty(), "requests failed during the roll-out: {failed:?}");
    assert!(
        total - at_swap >= 20,
        "too few requests after the roll-out to show anything"
    );
    // The old build is no longer served.
    let old = reqwest::get(format!("http://{}/filter/v1/{first}.wasm", gw.status))
        .await
        .unwrap();
    assert_eq!(old.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_refuses_to_serve_the_native_module() {
    let paths = Paths::discover();
    let dir = Scratch::new("served-native");
    let config = dir.0.join("switchyard.yaml");
    std::fs::write(
        &config,
        format!(
            "filter: {{ module: \"{}\", serve: true }}\nproviders:\n  - {{ name: a, dialect: openai, base_url: \"http://127.0.0.1:9/v1\", api_key: {{ value: k }} }}\n",
            paths.native.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(&paths.switchyard)
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert!(stderr.contains("filter.serve: only for `wasm`"), "{stderr}");
}

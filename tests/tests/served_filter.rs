//! The filter delivered over HTTP, as Istio delivers Wasm: with `filter: { wasm:
//! PATH, serve: true }` the control plane serves the file on its status port and
//! the listener names it by URL and SHA-256; Envoy fetches it through the fleet
//! cluster and loads it only if the digest matches. A new build written in its
//! place rolls out to every Envoy under load without a failed request.
//!
//! Always the Wasm build (the control plane refuses to serve the native module:
//! Envoy 1.40 passes requests unfiltered when it cannot fetch one).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_core::sigv4::sha256_hex as sha256;
use switchyard_tests::harness::{
    Dialect, FilterHost, Gateway, Load, Mock, Paths, Scratch, chat_body, listener_code, wasm_rebuilt,
};

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

/// The Wasm build written to `file` (directories made); its bytes.
fn place_build(paths: &Paths, file: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(&paths.wasm).unwrap();
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, &bytes).unwrap();
    bytes
}

/// A gateway of two Envoys on one mock, `chat` → `a/m-a`, with `filter` as
/// the config's `filter:` line.
async fn two_envoys(paths: &Paths, dir: &Scratch, a: &Mock, filter: &str) -> Gateway {
    let mut gw = Gateway::builder()
        .filter_yaml(filter)
        .provider(a)
        .route("chat", &["a/m-a"])
        .start(paths, dir)
        .await;
    gw.add_envoy(paths).await;
    gw
}

/// Every Envoy answers a chat request with 200.
async fn every_envoy_serves(gw: &Gateway) {
    for url in &gw.urls {
        let r = reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .json(&chat_body("chat"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

/// The body of GET `url`.
async fn text(url: String) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
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
    let served = dir.0.join("served").join("switchyard_filter.wasm");
    let original = place_build(&paths, &served);
    let filter = format!("filter: {{ wasm: \"{}\", serve: true }}", served.display());
    let gw = two_envoys(&paths, &dir, &a, &filter).await;

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
    every_envoy_serves(&gw).await;

    // Under load on both Envoys, a new build replaces the file.
    let load = load_on(&gw.urls);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = load.served();
    let second = wasm_rebuilt(&original, b"v2");
    let second_sha = sha256(&second);
    // Written beside it and renamed: the control plane never reads half a file.
    let tmp = served.with_extension("wasm.new");
    std::fs::write(&tmp, &second).unwrap();
    std::fs::rename(&tmp, &served).unwrap();
    let rolled = wait_for_build(&gw, &second_sha).await;
    let at_swap = load.served();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (total, failed) = load.stop().await;
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

/// The ECDS stat `name` (`config_reload`, …) of the filter of `role` whose
/// extension config name starts `switchyard.<role>.`, summed (one build is
/// live at a time, older ones keep their counts).
async fn ecds_stat(admin: &str, role: &str, name: &str) -> u64 {
    let kind = if role == "planner" {
        "http_filter"
    } else {
        "upstream_http_filter"
    };
    let prefix = format!("extension_config_discovery.{kind}.switchyard.{role}.");
    text(format!("{admin}/stats?filter=extension_config_discovery"))
        .await
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&format!(".{name}: ")))
        .filter_map(|l| l.rsplit(": ").next()?.trim().parse::<u64>().ok())
        .sum()
}

/// A stat of Envoy `admin` (0 when absent).
async fn stat(admin: &str, name: &str) -> u64 {
    text(format!("{admin}/stats?filter=^{}$", name.replace('.', "\\.")))
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The name of the planner's extension config in Envoy `admin`'s active listener.
async fn active_planner(admin: &str) -> Option<String> {
    let dump: Value = reqwest::get(format!("{admin}/config_dump?resource=dynamic_listeners"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let active = dump.pointer("/configs/0/active_state/listener")?.to_string();
    let at = active.find("switchyard.planner.")?;
    Some(active[at..].chars().take_while(|c| *c != '"').collect())
}

/// Waits until `check` holds on every Envoy (30 s at most); how long it took.
async fn on_every_envoy<F, Fut>(gw: &Gateway, what: &str, check: F) -> Duration
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    for i in 0..gw.envoys.len() {
        while !check(admin_of(gw, i)).await {
            assert!(t.elapsed() < Duration::from_secs(30), "Envoy {i}: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    t.elapsed()
}

/// The filters by extension config discovery (ECDS), as istiod delivers a
/// `WasmPlugin` (its agent having fetched the code to a local file): the
/// listener only names them and their configs are xDS resources of their own.
/// Under load on two Envoys, a new filter config is applied in place (no new
/// listener), and a new build arrives as a new listener naming new extension
/// configs (planner and adapter must change together: they share one VM's
/// per-request ledger); no request fails in either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecds_updates_the_filters_in_place_under_load() {
    let mut paths = Paths::discover();
    paths.host = FilterHost::Wasm;
    let dir = Scratch::new("ecds");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let build = |v: &str| dir.0.join(v).join("switchyard_filter.wasm");
    let first = build("v1");
    let original = place_build(&paths, &first);
    let filter = format!("filter: {{ wasm: \"{}\", ecds: true }}", first.display());
    let gw = two_envoys(&paths, &dir, &a, &filter).await;

    let admin = admin_of(&gw, 0);
    let listeners = text(format!("{admin}/config_dump?resource=dynamic_listeners")).await;
    assert!(
        listeners.contains("config_discovery") && !listeners.contains(&first.display().to_string()),
        "the listener should only name the filters"
    );
    // The planner's config shows in the ECDS dump; the adapter's (an upstream
    // filter's) only in its stats.
    let ecds = text(format!("{admin}/config_dump?resource=ecds_filters")).await;
    assert!(
        ecds.contains("switchyard.planner.") && ecds.contains(&first.display().to_string()),
        "{ecds}"
    );
    for i in 0..gw.envoys.len() {
        for role in ["planner", "adapter"] {
            assert_eq!(ecds_stat(&admin_of(&gw, i), role, "config_reload").await, 1, "{role}");
        }
    }
    every_envoy_serves(&gw).await;
    let config = std::fs::read_to_string(&gw.config).unwrap();
    let planner_v1 = active_planner(&admin).await.expect("the listener names the planner");
    let listeners_modified = stat(&admin, "listener_manager.listener_modified").await;
    let load = load_on(&gw.urls);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // (1) A new filter config (prices: only the filters read them).
    std::fs::write(
        &gw.config,
        format!("{config}prices:\n  a/m-a: {{ input: 1, output: 2 }}\n"),
    )
    .unwrap();
    let in_place = on_every_envoy(&gw, "the new config was not applied by ECDS", |admin| async move {
        ecds_stat(&admin, "planner", "config_reload").await == 2
            && ecds_stat(&admin, "adapter", "config_reload").await == 2
    })
    .await;
    assert_eq!(
        stat(&admin, "listener_manager.listener_modified").await,
        listeners_modified,
        "a filter config change replaced the listener"
    );
    let after_config = load.served();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // (2) A new build, at a new path (as Istio's agent writes each).
    let second = build("v2");
    std::fs::create_dir_all(second.parent().unwrap()).unwrap();
    std::fs::write(&second, wasm_rebuilt(&original, b"ecds-2")).unwrap();
    let config = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(
        &gw.config,
        config.replace(&first.display().to_string(), &second.display().to_string()),
    )
    .unwrap();
    let second_path = second.display().to_string();
    let new_build = on_every_envoy(&gw, "the new build was not applied", |admin| {
        let (old, second_path) = (planner_v1.clone(), second_path.clone());
        async move {
            let active = active_planner(&admin).await;
            let ecds = text(format!("{admin}/config_dump?resource=ecds_filters")).await;
            active.is_some_and(|a| a != old) && ecds.contains(&second_path)
        }
    })
    .await;
    let at_swap = load.served();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (total, failed) = load.stop().await;
    println!(
        "ECDS: new config in place on both Envoys in {} ms ({after_config} served by then); new build in {} ms; {total} requests served ({} after), {} failed",
        in_place.as_millis(),
        new_build.as_millis(),
        total - at_swap,
        failed.len()
    );
    assert!(failed.is_empty(), "requests failed during the updates: {failed:?}");
    assert!(total - at_swap >= 20, "too few requests after the updates");
    assert_eq!(
        stat(&admin, "listener_manager.listener_modified").await,
        listeners_modified + 1,
        "a new build is one new listener"
    );
}

/// Three clients per gateway URL, each on its own gateway.
fn load_on(urls: &[String]) -> Load {
    let urls = urls.to_vec();
    Load::start(
        3 * urls.len(),
        move |i, _| (urls[i % urls.len()].clone(), urls[i % urls.len()].clone()),
        |_, _| true,
    )
}

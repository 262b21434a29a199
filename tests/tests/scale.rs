//! Scale check: one control plane, 50 simulated Envoys (each its own ADS
//! connection, ACKing like Envoy, and two workers running the fleet exchange
//! like the filter) plus a real one; a config change reaches all of them in
//! under a second, counted from the file change, and so does a circuit one of
//! them opens, counted from the failures. The 1,000-Envoy figures in
//! docs/architecture.md come from the same tool (`make scale`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Command;

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_converge_in_under_a_second() {
    let paths = Paths::discover();
    let dir = Scratch::new("scale");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/m"])
        .yaml("circuit_breaker: { consecutive_failures: 5, base_open_ms: 60000, max_open_ms: 60000 }\n")
        .start(&paths, &dir)
        .await;
    let load = paths.switchyard.with_file_name("xds-load");
    let (xds, status, config) = (gw.xds.to_string(), gw.status.to_string(), gw.config.clone());
    let pid = gw.cp.pid().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(load)
            .args(["--clients", "50", "--xds", &xds, "--status", &status, "--workers", "2"])
            .args(["--circuit", "a/m", "--pid", &pid, "--steady-s", "2", "--config"])
            .arg(config)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    let ms: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("converged 50 clients in "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(ms < 1000, "50 clients took {ms} ms");
    let ms: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("circuit a/m open on all 100 workers of 50 Envoys in "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(ms < 1000, "the circuit reached every worker in {ms} ms");
    assert!(
        stdout.contains("exchange steady state: 50 Envoys x 2 workers"),
        "{stdout}"
    );
    // The real Envoy took the change too and still serves.
    assert_eq!(gw.chat(&chat_body("chat"), &[]).await.status(), 200);
}

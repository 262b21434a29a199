//! Envoy's heap stays near `limits.max_heap_bytes`: when clients make it hold
//! more (bodies they never finish), the overload manager refuses new
//! connections and requests while the heap is over the limit; the request
//! timeout then lets go of the stalled bodies, and everyone is served again.
//! (Envoy resets the streams holding the most memory only for HTTP/2 and
//! HTTP/3 clients: its buffer accounting does not cover HTTP/1.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

const MAX_HEAP_BYTES: u64 = 128 << 20;
const REQUEST_TIMEOUT_MS: u64 = 5000;
const STALLED_BODY_BYTES: usize = 9_900_000;

/// Sends most of a body and stalls; returns when the gateway let go of it.
async fn stall_body(port: u16) -> Duration {
    let t = Instant::now();
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return t.elapsed();
    };
    let mut body = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        STALLED_BODY_BYTES + 100
    )
    .into_bytes();
    body.resize(STALLED_BODY_BYTES, b' ');
    let _ = s.write_all(&body).await;
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(60), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return t.elapsed(),
            Err(_) => panic!("a stalled body was held for 60 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_heap_limit_new_work_is_refused_until_the_stalled_bodies_are_gone() {
    let paths = Paths::discover();
    let dir = Scratch::new("overload");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/m-a"])
        .yaml(&format!(
            "limits: {{ max_heap_bytes: {MAX_HEAP_BYTES}, request_timeout_ms: {REQUEST_TIMEOUT_MS}, request_headers_timeout_ms: 2000 }}\n"
        ))
        .start(&paths, &dir)
        .await;
    let port: u16 = gw.url.rsplit(':').next().unwrap().parse().unwrap();
    let pressure = || gw.stat("overload.envoy.resource_monitors.fixed_heap.pressure");
    let before = pressure().await.unwrap();

    // 20 bodies of 9.9 MB (about 1.5 times the limit), one every 150 ms so the
    // overload manager (refreshed every 250 ms) sees the heap grow.
    let started = Instant::now();
    let mut stalls = Vec::new();
    let client = reqwest::Client::new();
    let (mut peak, mut statuses) = (0, BTreeMap::<String, u32>::new());
    let mut last_refused = None;
    while stalls.len() < 20
        || !stalls
            .iter()
            .all(|s: &tokio::task::JoinHandle<Duration>| s.is_finished())
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stalled bodies still held after 30 s"
        );
        if stalls.len() < 20 {
            stalls.push(tokio::spawn(stall_body(port)));
        }
        let outcome = match client
            .post(gw.at("/v1/chat/completions"))
            .json(&chat_body("chat"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16().to_string(),
            Err(_) => "refused".to_string(),
        };
        if outcome != "200" {
            last_refused = Some(started.elapsed());
        }
        *statuses.entry(outcome).or_default() += 1;
        peak = peak.max(pressure().await.unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut let_go = Vec::new();
    for s in stalls {
        let_go.push(s.await.unwrap());
    }
    // Served again once the heap is back under the limit.
    let t = Instant::now();
    loop {
        let ok = client
            .post(gw.at("/v1/chat/completions"))
            .json(&chat_body("chat"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "not served again 15 s after the stalled bodies were gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = pressure().await.unwrap();
    println!(
        "heap limit {} MB: pressure {before} % before, {peak} % at most, {after} % after; \
         20 stalled bodies let go after {:?}..{:?} (request timeout {REQUEST_TIMEOUT_MS} ms); \
         requests meanwhile {statuses:?}, the last refused {last_refused:?} after the first stall; \
         served again {:?} after the last stalled body went",
        MAX_HEAP_BYTES >> 20,
        let_go.iter().min().unwrap(),
        let_go.iter().max().unwrap(),
        t.elapsed()
    );
    // Over by at most what arrives within one 250 ms refresh of the overload manager.
    assert!(peak <= 125, "the heap went to {peak} % of the limit");
    assert!(statuses.keys().any(|s| s != "200"), "nothing was refused: {statuses:?}");
    assert!(
        let_go.iter().max().unwrap() < &Duration::from_millis(REQUEST_TIMEOUT_MS + 2500),
        "{let_go:?}"
    );
}

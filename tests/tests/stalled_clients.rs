//! Clients cannot pin a gateway: a request's headers and body must arrive in
//! bounded time (`limits.request_headers_timeout_ms`, `limits.request_timeout_ms`),
//! while answers that stream for longer are not cut; connections over
//! `limits.max_connections` are closed on accept while the others keep working.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, sse_data};

const HEADERS_TIMEOUT_MS: u64 = 1000;
const REQUEST_TIMEOUT_MS: u64 = 3000;
/// A body just under the default 10 MiB limit, never finished.
const STALLED_BODY_BYTES: usize = 9_900_000;

fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// One request on a raw connection: `Some((status, body))`, or `None` when the
/// connection was closed or reset without an answer.
async fn round_trip(stream: &mut TcpStream, request: &[u8]) -> Option<(u16, Vec<u8>)> {
    stream.write_all(request).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
    Some((status, buf[head_end..head_end + length].to_vec()))
}

const MODELS: &[u8] = b"GET /v1/models HTTP/1.1\r\nhost: gateway\r\n\r\n";

/// How a stalled client was let go.
#[derive(Debug)]
struct Dropped {
    /// After its first byte, when the gateway answered (or closed).
    answered: Duration,
    /// The status line of the answer, if any.
    status: String,
    /// When the connection was closed.
    closed: Duration,
}

/// Sends `prefix` and nothing more, then reads until the gateway closes the
/// connection (`None` if it has not within 30 s).
async fn stall(port: u16, prefix: Vec<u8>) -> Option<Dropped> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let t = Instant::now();
    let _ = s.write_all(&prefix).await;
    let (mut answered, mut got) = (None, Vec::new());
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await;
        answered.get_or_insert_with(|| t.elapsed());
        match read {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            Ok(_) => break,
            Err(_) => return None,
        }
    }
    let text = String::from_utf8_lossy(&got);
    Some(Dropped {
        answered: answered.unwrap_or_default(),
        status: text.lines().next().unwrap_or("").to_string(),
        closed: t.elapsed(),
    })
}

/// Bytes Envoy has allocated now (admin `/memory`; the `server.memory_*` stats
/// are only refreshed on the 5 s stats flush).
async fn memory_allocated(gw: &Gateway) -> u64 {
    let v: serde_json::Value = reqwest::get(format!("{}/memory", gw.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["allocated"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_senders_are_dropped_and_everyone_else_is_served() {
    let paths = Paths::discover();
    let dir = Scratch::new("stalled");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/m-a"])
        .workers(2)
        .yaml(&format!(
            "limits: {{ request_headers_timeout_ms: {HEADERS_TIMEOUT_MS}, request_timeout_ms: {REQUEST_TIMEOUT_MS} }}\n"
        ))
        .start(&paths, &dir)
        .await;
    let port = port(&gw.url);
    let baseline = memory_allocated(&gw).await;

    // A stream lasting longer than the request timeout: the timeout ends with
    // the request, the answer is not cut.
    let mut streamed = chat_body("chat");
    streamed["stream"] = serde_json::json!(true);
    let url = gw.at("/v1/chat/completions");
    let stream = tokio::spawn(async move {
        let t = Instant::now();
        let r = reqwest::Client::new()
            .post(url)
            .header("x-mock", "a:chunk_delay_ms=700")
            .json(&streamed)
            .send()
            .await
            .unwrap();
        (r.text().await, t.elapsed())
    });

    // 20 clients stop inside their headers, 20 inside a 9.9 MB body.
    let mut header_stalls = Vec::new();
    let mut body_stalls = Vec::new();
    for i in 0..20 {
        header_stalls.push(tokio::spawn(stall(
            port,
            format!("POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nx-stall: {i}\r\n").into_bytes(),
        )));
        let mut body = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{{\"model\": \"chat\", \"messages\": [{{\"role\": \"user\", \"content\": \"",
            STALLED_BODY_BYTES + 100
        )
        .into_bytes();
        body.resize(STALLED_BODY_BYTES, b'x');
        body_stalls.push(tokio::spawn(stall(port, body)));
    }

    // Everyone else keeps being served meanwhile; Envoy's memory is sampled.
    let client = reqwest::Client::new();
    let (mut served, mut peak) = (0, 0);
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(REQUEST_TIMEOUT_MS + 1500) {
        let r = client
            .post(gw.at("/v1/chat/completions"))
            .json(&chat_body("chat"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "a normal request failed while clients stalled");
        served += 1;
        peak = peak.max(memory_allocated(&gw).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut header_closed = Vec::new();
    for h in header_stalls {
        header_closed.push(h.await.unwrap().expect("a header staller was never disconnected"));
    }
    let mut body_closed = Vec::new();
    for b in body_stalls {
        body_closed.push(b.await.unwrap().expect("a body staller was never disconnected"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = memory_allocated(&gw).await;
    let (text, stream_took) = stream.await.unwrap();
    let text = text.expect("the long stream was cut");
    assert_eq!(sse_data(&text).last().map(String::as_str), Some("[DONE]"), "{text}");

    let range =
        |d: &[Dropped], f: fn(&Dropped) -> Duration| (d.iter().map(f).min().unwrap(), d.iter().map(f).max().unwrap());
    let (h_min, h_max) = range(&header_closed, |d| d.answered);
    let (b_min, b_max) = range(&body_closed, |d| d.answered);
    let (_, closed_max) = range(&body_closed, |d| d.closed);
    let statuses: std::collections::BTreeSet<&str> = header_closed
        .iter()
        .chain(&body_closed)
        .map(|d| d.status.as_str())
        .collect();
    println!(
        "headers stalled: 20 answered after {h_min:?}..{h_max:?} (limit {HEADERS_TIMEOUT_MS} ms); \
         bodies stalled: 20 answered after {b_min:?}..{b_max:?} (limit {REQUEST_TIMEOUT_MS} ms), \
         all connections closed by {closed_max:?}; answers {statuses:?}; \
         {served} normal requests served meanwhile; a {stream_took:?} stream completed; \
         Envoy memory allocated: {} MB before, {} MB peak, {} MB after",
        baseline >> 20,
        peak >> 20,
        after >> 20
    );
    let ms = Duration::from_millis;
    assert!(
        h_min >= ms(HEADERS_TIMEOUT_MS - 50) && h_max < ms(HEADERS_TIMEOUT_MS + 1000),
        "{header_closed:?}"
    );
    assert!(
        b_min >= ms(REQUEST_TIMEOUT_MS - 50) && b_max < ms(REQUEST_TIMEOUT_MS + 1000),
        "{body_closed:?}"
    );
    // Envoy closes after its answer, at the latest after its 1 s delayed close.
    assert!(closed_max < ms(REQUEST_TIMEOUT_MS + 2500), "{body_closed:?}");
    assert!(stream_took > ms(REQUEST_TIMEOUT_MS));
    assert!(
        after < baseline + (64 << 20),
        "memory not released: {} MB after",
        after >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_while_the_others_work() {
    const LIMIT: usize = 6;
    let paths = Paths::discover();
    let dir = Scratch::new("conn-limit");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/m-a"])
        .yaml(&format!("limits: {{ max_connections: {LIMIT} }}\n"))
        .start(&paths, &dir)
        .await;
    let port = port(&gw.url);
    // The harness's readiness probe connection must be gone.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut open = Vec::new();
    for _ in 0..LIMIT {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        assert_eq!(round_trip(&mut s, MODELS).await.map(|r| r.0), Some(200));
        open.push(s);
    }
    // One more: accepted by the kernel, closed by Envoy without an answer.
    for _ in 0..3 {
        let mut extra = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        assert_eq!(
            round_trip(&mut extra, MODELS).await,
            None,
            "a connection over the limit was served"
        );
    }
    // The connections within the limit keep working.
    for s in &mut open {
        assert_eq!(round_trip(s, MODELS).await.map(|r| r.0), Some(200));
    }
    let overflow: u64 = reqwest::get(format!("{}/stats?filter=downstream_global_cx_overflow", gw.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .filter_map(|l| l.rsplit(": ").next()?.trim().parse::<u64>().ok())
        .sum();
    assert!(overflow >= 3, "Envoy counted {overflow} overflowing connections");
    // One closed: room for a new one.
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(round_trip(&mut again, MODELS).await.map(|r| r.0), Some(200));
    println!(
        "limit {LIMIT}: {LIMIT} connections served, 3 over the limit closed unanswered (Envoy counted {overflow})"
    );
}

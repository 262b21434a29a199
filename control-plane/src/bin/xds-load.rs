//! `xds-load`: simulates a fleet of Envoys on one control plane, for the scale
//! check. Each simulated Envoy opens its own ADS connection, subscribes to CDS, LDS
//! and RDS, and ACKs every response like Envoy does. Once all have the current
//! config, the config file is touched (a comment line appended, which changes its
//! version) and the time until every client has the new version is reported.
//!
//! With `--status ADDR`, each simulated Envoy also runs the fleet exchange as the
//! filter does today: `--workers` (2) loops, one per Envoy worker, each POSTing a
//! report to `ADDR/fleet/v1/exchange` every 250 ms on a kept-alive connection.
//! Then, with `--circuit TARGET`, one of them reports consecutive failures of
//! TARGET and the time until every worker's answer says TARGET is open is
//! reported (the config needs a `circuit_breaker` whose `consecutive_failures` is
//! at most 50); with `--pid PID` (the control plane's), its CPU and memory over
//! a steady `--steady-s` (10) seconds of exchanges.
//!
//! With `--fleet grpc` the exchange runs over the fleet stream instead
//! (`fleet_transport: grpc`): each simulated Envoy holds one gRPC stream to
//! the xDS address (as the filter's lease holder does), sends its first report,
//! then a report only with news (the failures) or every heartbeat (5 s), and
//! takes the states the control plane pushes. `--status` is still what turns
//! the exchange on; `--workers` is ignored (one stream per Envoy).
//!
//! Usage: `xds-load --xds 127.0.0.1:18000 --config FILE [--clients 50]
//! [--status ADDR [--workers 2] [--fleet http|grpc] [--circuit provider/model] [--pid PID] [--steady-s 10]]`
//! Prints `converged N clients in X ms` (and the exchange figures) and exits 0,
//! or exits 1 after 30 s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use switchyard_control_plane::xds::resources::{ROUTE_NAME, type_url};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Latest version each client has ACKed, per type.
type Seen = Arc<Mutex<HashMap<usize, HashMap<String, String>>>>;

async fn client(i: usize, xds: String, seen: Seen) -> Result<(), String> {
    let mut ads = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}"))
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    let node = Node {
        id: format!("sim-envoy-{i}"),
        cluster: "switchyard".into(),
        ..Default::default()
    };
    for (ty, names) in [
        (type_url::CLUSTER, vec![]),
        (type_url::LISTENER, vec![]),
        (type_url::ROUTE, vec![ROUTE_NAME.to_string()]),
    ] {
        let req = DiscoveryRequest {
            node: Some(node.clone()),
            type_url: ty.to_string(),
            resource_names: names,
            ..Default::default()
        };
        tx.send(req).await.map_err(|e| e.to_string())?;
    }
    let mut inbound = ads
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    while let Some(resp) = inbound.message().await.map_err(|e| e.to_string())? {
        let ack = DiscoveryRequest {
            type_url: resp.type_url.clone(),
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            resource_names: if resp.type_url == type_url::ROUTE {
                vec![ROUTE_NAME.to_string()]
            } else {
                vec![]
            },
            ..Default::default()
        };
        tx.send(ack).await.map_err(|e| e.to_string())?;
        if let Ok(mut s) = seen.lock() {
            s.entry(i)
                .or_default()
                .insert(resp.type_url, resp.version_info);
        }
    }
    Ok(())
}

/// The version every client has for every type, if they all agree.
fn common_version(seen: &Seen, clients: usize) -> Option<String> {
    let s = seen.lock().ok()?;
    if s.len() < clients {
        return None;
    }
    let mut version = None;
    for types in s.values() {
        if types.len() < 3 {
            return None;
        }
        for v in types.values() {
            match &version {
                None => version = Some(v.clone()),
                Some(x) if x != v => return None,
                _ => {}
            }
        }
    }
    version
}

/// What the exchange loops share.
#[derive(Default)]
struct Exchanges {
    /// Answers received (with `--fleet grpc`: states pushed).
    answers: AtomicU64,
    /// Reports sent on fleet streams.
    reports: AtomicU64,
    /// Answers refused or failed (not 200).
    errors: AtomicU64,
    /// The target whose circuit the run opens, and whether the failures were sent.
    circuit: Option<String>,
    fail_now: AtomicBool,
    /// Workers whose latest answer had the circuit open.
    saw_open: Mutex<std::collections::HashSet<(usize, usize)>>,
}

/// The filter's consecutive-failure report that opens a circuit (more than any
/// `consecutive_failures` the scale configs use).
const FAILURES: u64 = 50;

/// Worker `w` of simulated Envoy `i`: a report every 250 ms, like the filter's
/// background task, on one kept-alive HTTP/1.1 connection (reopened on error).
async fn exchange(i: usize, w: usize, status: String, ex: Arc<Exchanges>) {
    let node = format!("sim-envoy-{i}");
    // Workers start spread over the interval, as real ones do.
    tokio::time::sleep(Duration::from_millis(((i * 7 + w * 131) % 250) as u64)).await;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Ok(tcp) = tokio::net::TcpStream::connect(&status).await else {
            ex.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
        else {
            continue;
        };
        tokio::spawn(conn);
        loop {
            tick.tick().await;
            let mut outcomes = Vec::new();
            if let Some(t) = &ex.circuit
                && i == 0
                && w == 0
                && ex.fail_now.swap(false, Ordering::Relaxed)
            {
                outcomes.push(serde_json::json!({"target": t, "ok": 0, "failed": FAILURES}));
            }
            let body = serde_json::json!({"node": node, "outcomes": outcomes}).to_string();
            let Ok(req) = hyper::Request::post("/fleet/v1/exchange")
                .header("host", status.as_str())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
            else {
                return;
            };
            let Ok(resp) = sender.send_request(req).await else {
                ex.errors.fetch_add(1, Ordering::Relaxed);
                break;
            };
            let ok = resp.status() == 200;
            let Ok(body) = resp.into_body().collect().await else {
                ex.errors.fetch_add(1, Ordering::Relaxed);
                break;
            };
            if !ok {
                ex.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            ex.answers.fetch_add(1, Ordering::Relaxed);
            if let Some(t) = &ex.circuit {
                let answer: serde_json::Value =
                    serde_json::from_slice(&body.to_bytes()).unwrap_or_default();
                let open = answer["open"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|e| e["target"] == t.as_str()));
                if let Ok(mut s) = ex.saw_open.lock() {
                    if open {
                        s.insert((i, w));
                    } else {
                        s.remove(&(i, w));
                    }
                }
            }
        }
    }
}

/// Simulated Envoy `i` on the fleet stream: the first report names it, then a
/// report only with news (the failures) or every heartbeat; every state
/// pushed counts as an answer. Reconnects after 250 ms on error.
async fn stream(i: usize, xds: String, ex: Arc<Exchanges>) {
    use switchyard_proto::fleet::v1 as pb;
    let node = format!("sim-envoy-{i}");
    tokio::time::sleep(Duration::from_millis(((i * 7) % 250) as u64)).await;
    loop {
        let channel = match tonic::transport::Endpoint::from_shared(format!("http://{xds}")) {
            Ok(e) => e.connect().await,
            Err(_) => return,
        };
        let Ok(mut client) = channel.map(pb::fleet_client::FleetClient::new) else {
            ex.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let (tx, rx) = mpsc::channel::<pb::Report>(4);
        let _ = tx
            .send(pb::Report {
                node: node.clone(),
                // Numbered as the filter numbers them: each is answered.
                seq: 1,
                ..Default::default()
            })
            .await;
        let Ok(resp) = client.stream(ReceiverStream::new(rx)).await else {
            ex.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let mut states = resp.into_inner();
        // The credentials version held, reported as the filter does (else
        // every answer would carry the credentials again).
        let held = Arc::new(Mutex::new(String::new()));
        let held2 = held.clone();
        // Reports: news every 250 ms tick, else a heartbeat every 5 s.
        let (ex2, tx2, node2) = (ex.clone(), tx.clone(), node.clone());
        let reporter = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut last = Instant::now();
            let mut seq = 1;
            loop {
                tick.tick().await;
                let mut report = pb::Report {
                    node: node2.clone(),
                    credentials: held2.lock().map(|h| h.clone()).unwrap_or_default(),
                    ..Default::default()
                };
                if let Some(t) = &ex2.circuit
                    && i == 0
                    && ex2.fail_now.swap(false, Ordering::Relaxed)
                {
                    report.outcomes.push(pb::Outcome {
                        target: t.clone(),
                        failed: FAILURES,
                        ..Default::default()
                    });
                } else if last.elapsed() < Duration::from_secs(5) {
                    continue;
                }
                last = Instant::now();
                seq += 1;
                report.seq = seq;
                ex2.reports.fetch_add(1, Ordering::Relaxed);
                if tx2.send(report).await.is_err() {
                    return;
                }
            }
        });
        loop {
            match states.message().await {
                Ok(Some(state)) => {
                    ex.answers.fetch_add(1, Ordering::Relaxed);
                    if let Some(c) = &state.credentials
                        && let Ok(mut h) = held.lock()
                    {
                        *h = c.version.clone();
                    }
                    if let (Some(t), Some(targets)) = (&ex.circuit, &state.targets) {
                        let open = targets.open.iter().any(|o| o.target == *t);
                        if let Ok(mut s) = ex.saw_open.lock() {
                            if open {
                                s.insert((i, 0));
                            } else {
                                s.remove(&(i, 0));
                            }
                        }
                    }
                }
                _ => {
                    ex.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        reporter.abort();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// CPU time (user + system, seconds) and resident memory (MiB) of process `pid`.
fn usage(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // CLK_TCK is 100 on Linux.
    Some((ticks / 100.0, rss_kib / 1024.0))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut xds, mut config, mut clients) = (String::from("127.0.0.1:18000"), None, 50usize);
    let (mut status, mut workers, mut circuit, mut pid, mut steady_s) =
        (None, 2usize, None, None, 10u64);
    let mut grpc = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--xds" => xds = args.next().unwrap_or_default(),
            "--config" => config = args.next(),
            "--clients" => clients = args.next().and_then(|n| n.parse().ok()).unwrap_or(50),
            "--status" => status = args.next(),
            "--workers" => workers = args.next().and_then(|n| n.parse().ok()).unwrap_or(2),
            "--circuit" => circuit = args.next(),
            "--pid" => pid = args.next().and_then(|n| n.parse::<u32>().ok()),
            "--steady-s" => steady_s = args.next().and_then(|n| n.parse().ok()).unwrap_or(10),
            "--fleet" => grpc = args.next().as_deref() == Some("grpc"),
            other => {
                eprintln!("xds-load: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let Some(config) = config else {
        eprintln!(
            "usage: xds-load --xds ADDR --config FILE [--clients N] [--status ADDR [--workers W] [--fleet http|grpc] [--circuit TARGET] [--pid PID] [--steady-s S]]"
        );
        std::process::exit(2);
    };
    let seen: Seen = Arc::default();
    for i in 0..clients {
        let (xds, seen) = (xds.clone(), seen.clone());
        tokio::spawn(async move {
            if let Err(e) = client(i, xds, seen).await {
                eprintln!("xds-load: client {i}: {e}");
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let wait = |target: Option<String>| {
        let seen = seen.clone();
        async move {
            loop {
                if let Some(v) = common_version(&seen, clients)
                    && target.as_ref().is_none_or(|t| *t != v)
                {
                    return v;
                }
                if Instant::now() > deadline {
                    eprintln!("xds-load: clients did not converge in 30 s");
                    std::process::exit(1);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let first = wait(None).await;
    println!("{clients} clients have version {first}");
    let touched = Instant::now();
    let mut text = std::fs::read_to_string(&config).unwrap_or_default();
    text.push_str(&format!(
        "\n# touched by xds-load at {:?}\n",
        std::time::SystemTime::now()
    ));
    if let Err(e) = std::fs::write(&config, text) {
        eprintln!("xds-load: cannot touch {config}: {e}");
        std::process::exit(1);
    }
    let second = wait(Some(first)).await;
    println!(
        "converged {clients} clients in {} ms (version {second}; file change to last ACK, 250 ms file poll included)",
        touched.elapsed().as_millis()
    );
    let Some(status) = status else {
        return;
    };

    // The fleet exchange, as every filter worker runs it today.
    let ex = Arc::new(Exchanges {
        circuit,
        ..Exchanges::default()
    });
    let workers = if grpc { 1 } else { workers };
    for i in 0..clients {
        if grpc {
            tokio::spawn(stream(i, xds.clone(), ex.clone()));
            continue;
        }
        for w in 0..workers {
            tokio::spawn(exchange(i, w, status.clone(), ex.clone()));
        }
    }
    let pollers = clients * workers;
    // Every worker answered once, then the steady state.
    let start = Instant::now();
    while ex.answers.load(Ordering::Relaxed) < pollers as u64 {
        if start.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "xds-load: {} of {pollers} exchanges answered in 30 s ({} errors)",
                ex.answers.load(Ordering::Relaxed),
                ex.errors.load(Ordering::Relaxed)
            );
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(pid) = pid {
        let (a0, r0, t0) = (
            ex.answers.load(Ordering::Relaxed),
            ex.reports.load(Ordering::Relaxed),
            Instant::now(),
        );
        let before = usage(pid);
        tokio::time::sleep(Duration::from_secs(steady_s)).await;
        let (after, secs) = (usage(pid), t0.elapsed().as_secs_f64());
        let answered = ex.answers.load(Ordering::Relaxed) - a0;
        let reported = ex.reports.load(Ordering::Relaxed) - r0;
        if grpc && let (Some((c0, _)), Some((c1, rss))) = (before, after) {
            println!(
                "fleet stream steady state: {clients} Envoys x 1 stream, {:.0} reports/s up, {:.0} states/s down; control plane {:.1} % of one core, RSS {:.0} MiB ({} errors)",
                reported as f64 / secs,
                answered as f64 / secs,
                100.0 * (c1 - c0) / secs,
                rss,
                ex.errors.load(Ordering::Relaxed)
            );
        } else if let (Some((c0, _)), Some((c1, rss))) = (before, after) {
            println!(
                "exchange steady state: {clients} Envoys x {workers} workers, {:.0} exchanges/s; control plane {:.1} % of one core, {:.2} ms CPU per exchange, RSS {:.0} MiB ({} errors)",
                answered as f64 / secs,
                100.0 * (c1 - c0) / secs,
                1000.0 * (c1 - c0) / answered.max(1) as f64,
                rss,
                ex.errors.load(Ordering::Relaxed)
            );
        }
    }
    if let Some(target) = &ex.circuit {
        if ex.saw_open.lock().map(|s| s.len()).unwrap_or(0) > 0 {
            eprintln!(
                "xds-load: the circuit of {target} is open already (restart the control plane)"
            );
            std::process::exit(1);
        }
        let sent = Instant::now();
        ex.fail_now.store(true, Ordering::Relaxed);
        loop {
            let seen = ex.saw_open.lock().map(|s| s.len()).unwrap_or(0);
            if seen == pollers {
                break;
            }
            if sent.elapsed() > Duration::from_secs(30) {
                eprintln!(
                    "xds-load: circuit of {target}: open on {seen} of {pollers} workers after 30 s"
                );
                std::process::exit(1);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if grpc {
            println!(
                "circuit {target} open on all {clients} Envoys' streams in {} ms (from the failing report's next tick, up to 250 ms, to the last push received)",
                sent.elapsed().as_millis()
            );
        } else {
            println!(
                "circuit {target} open on all {pollers} workers of {clients} Envoys in {} ms (from the failing report's next exchange tick to the last worker's answer; 250 ms exchange interval included)",
                sent.elapsed().as_millis()
            );
        }
    }
}

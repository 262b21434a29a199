//! The control plane's view of the fleet: every Envoy that connected, the config
//! version it accepted per resource type, and its last NACK; every target the
//! filters report on; fleet-wide rates over the last minute; the fail-over
//! drill, if one runs. Served as JSON on `GET /status` and printed by
//! `switchyard status`. The same endpoint takes the fleet exchange and drills
//! (`/drill/v1`, admin token required to start or abort one).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::drill::{DrillError, DrillSpec, DrillView, Drills};
use crate::fleet::{self, Fleet, Refused, TargetView};
use crate::governance::Governance;
use crate::rates::{Rates, Window};
use crate::xds::server::{NodeStatus, Registry, Snapshot};
use switchyard_core::fleet::MAX_REPORT_BYTES;

/// The status document.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    /// Version of the snapshot the control plane serves now.
    pub version: String,
    /// Every Envoy seen since start, by node id.
    pub nodes: BTreeMap<String, NodeStatus>,
    /// Every target the filters reported on, fleet-wide.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetView>,
    /// Fail-over, chain positions and latency percentiles, fleet-wide, over
    /// the last minute.
    #[serde(default)]
    pub rates: Rates,
    /// The running (or last) fail-over drill.
    #[serde(default)]
    pub drill: Option<DrillView>,
}

/// Path of the drill endpoint (`GET` the drill, `POST` a [`DrillSpec`] to
/// start one, `DELETE` to abort it).
pub const DRILL_PATH: &str = "/drill/v1";

/// What the status endpoint keeps besides the registry, snapshot and fleet.
#[derive(Clone, Debug)]
struct Observers {
    rates: Window,
    drills: Drills,
    token: Arc<String>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Serves `GET /status`, the fleet exchange (`POST /fleet/v1/exchange`) and
/// drills ([`DRILL_PATH`], starting and aborting with `admin_token`) on
/// `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    fleet: Fleet,
    governance: Governance,
    admin_token: String,
) {
    let observers = Observers {
        rates: Window::default(),
        drills: Drills::default(),
        token: Arc::new(admin_token),
    };
    {
        // A drill moves on with time (its fault ends, the circuit closes)
        // whether or not anyone asks.
        let (drills, fleet) = (observers.drills.clone(), fleet.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                drills.tick(&fleet.view(), now_ms());
            }
        });
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (registry, snapshots, fleet, governance, observers) = (
            registry.clone(),
            snapshots.clone(),
            fleet.clone(),
            governance.clone(),
            observers.clone(),
        );
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (registry, snapshots, fleet, governance, observers) = (
                    registry.clone(),
                    snapshots.clone(),
                    fleet.clone(),
                    governance.clone(),
                    observers.clone(),
                );
                async move {
                    let (code, body) =
                        route(req, &registry, &snapshots, &fleet, &governance, &observers).await;
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = code;
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn route(
    req: Request<hyper::body::Incoming>,
    registry: &Registry,
    snapshots: &watch::Receiver<Arc<Snapshot>>,
    fleet: &Fleet,
    governance: &Governance,
    observers: &Observers,
) -> (StatusCode, Vec<u8>) {
    match (req.method().clone(), req.uri().path()) {
        (hyper::Method::GET, "/status") => {
            let now = now_ms();
            let targets = fleet.view();
            observers.drills.tick(&targets, now);
            let status = Status {
                version: snapshots.borrow().version.clone(),
                nodes: registry.nodes(),
                targets,
                rates: observers.rates.rates(now),
                drill: observers.drills.view(),
            };
            (
                StatusCode::OK,
                serde_json::to_vec(&status).unwrap_or_default(),
            )
        }
        (hyper::Method::POST, switchyard_core::fleet::EXCHANGE_PATH) => {
            let body = match read_report(req).await {
                Ok(b) => b,
                Err(refused) => return refusal(&refused),
            };
            let snapshot = snapshots.borrow().clone();
            let checked = match fleet::check(&body, |n| registry.knows(n), &snapshot.targets) {
                Ok(c) => c,
                Err(refused) => return refusal(&refused),
            };
            let mut state = fleet.exchange(
                &checked,
                &snapshot.targets,
                snapshot.breaker.as_ref(),
                snapshot.adaptive_weights.as_ref(),
                now_ms(),
            );
            if let Some(gov) = checked.gov() {
                state.gov = governance.exchange(gov, now_ms());
            }
            let now = now_ms();
            let observed = checked.observed();
            observers
                .rates
                .add(observed, &snapshot.routes, &snapshot.targets, now);
            if let Some(d) = &observed.drill {
                observers.drills.record(d, now);
            }
            state.faults = observers.drills.faults(now);
            (
                StatusCode::OK,
                serde_json::to_vec(&state).unwrap_or_default(),
            )
        }
        (hyper::Method::GET, DRILL_PATH) => match observers.drills.view() {
            Some(v) => (StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default()),
            None => drill_refusal(&DrillError::NotRunning),
        },
        (method @ (hyper::Method::POST | hyper::Method::DELETE), DRILL_PATH) => {
            if !authorized(&req, &observers.token) {
                return (
                    StatusCode::UNAUTHORIZED,
                    br#"{"error":"a drill needs the admin token (authorization: Bearer ...)"}"#
                        .to_vec(),
                );
            }
            let now = now_ms();
            let result = if method == hyper::Method::DELETE {
                observers.drills.abort("aborted by the operator", now)
            } else {
                let body = match read_report(req).await {
                    Ok(b) => b,
                    Err(refused) => return refusal(&refused),
                };
                match serde_json::from_slice::<DrillSpec>(&body) {
                    Ok(spec) => {
                        let snapshot = snapshots.borrow().clone();
                        observers
                            .drills
                            .start(spec, &snapshot.targets, &fleet.view(), now)
                    }
                    Err(e) => Err(DrillError::Invalid(e.to_string())),
                }
            };
            match result {
                Ok(v) => (StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default()),
                Err(e) => drill_refusal(&e),
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            b"{\"error\":\"GET /status, POST /fleet/v1/exchange, GET|POST|DELETE /drill/v1\"}"
                .to_vec(),
        ),
    }
}

/// Whether the request carries the admin token (compared in constant time).
fn authorized(req: &Request<hyper::body::Incoming>, token: &str) -> bool {
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    !token.is_empty()
        && given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn drill_refusal(e: &DrillError) -> (StatusCode, Vec<u8>) {
    (
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
        serde_json::json!({"error": e.to_string()})
            .to_string()
            .into_bytes(),
    )
}

/// How long a fleet report's body may take to arrive.
const REPORT_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request's headers may take to arrive on the status endpoint.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads a report body, at most [`MAX_REPORT_BYTES`] within
/// [`REPORT_READ_TIMEOUT`]: a client cannot make the control plane buffer or
/// wait without bound.
async fn read_report(req: Request<hyper::body::Incoming>) -> Result<Bytes, Refused> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REPORT_BYTES as u64) {
        return Err(Refused::TooLarge);
    }
    let limited = http_body_util::Limited::new(req.into_body(), MAX_REPORT_BYTES);
    match tokio::time::timeout(REPORT_READ_TIMEOUT, limited.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Refused::TooLarge),
        Ok(Err(e)) => Err(Refused::Malformed(format!("unreadable body: {e}"))),
        Err(_) => Err(Refused::Malformed(format!(
            "body not received within {} s",
            REPORT_READ_TIMEOUT.as_secs()
        ))),
    }
}

fn refusal(refused: &Refused) -> (StatusCode, Vec<u8>) {
    tracing::debug!("fleet report refused: {refused}");
    (
        StatusCode::from_u16(refused.status()).unwrap_or(StatusCode::BAD_REQUEST),
        serde_json::json!({"error": refused.to_string()})
            .to_string()
            .into_bytes(),
    )
}

/// Why `switchyard status` could not get the status.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The control plane did not answer.
    #[error("cannot reach the control plane's status endpoint at {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// It answered something else than a status document.
    #[error("unexpected answer from {addr}: {message}")]
    Answer {
        /// The address tried.
        addr: SocketAddr,
        /// What was wrong.
        message: String,
    },
}

/// Fetches the status from a control plane (a blocking one-shot HTTP/1.1 GET).
pub fn fetch(addr: SocketAddr) -> Result<Status, FetchError> {
    let connect = |source| FetchError::Connect { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(connect)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(connect)?;
    stream
        .write_all(
            format!("GET /status HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(connect)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(connect)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| FetchError::Answer {
            addr,
            message: "no HTTP header/body separator".into(),
        })?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(FetchError::Answer {
            addr,
            message: head.lines().next().unwrap_or("").to_string(),
        });
    }
    serde_json::from_str(body).map_err(|e| FetchError::Answer {
        addr,
        message: e.to_string(),
    })
}

/// The status as a table for people.
pub fn render(s: &Status) -> String {
    let mut out = format!("control plane serves version {}\n", s.version);
    if s.nodes.is_empty() {
        out.push_str("no Envoy has connected\n");
        return out;
    }
    let width = s.nodes.keys().map(String::len).max().unwrap_or(4).max(4);
    out.push_str(&format!(
        "{:<width$}  {:<9}  {:<10}  {:<8}  LAST NACK\n",
        "NODE", "CONNECTED", "UP TO DATE", "ACCEPTED"
    ));
    for (id, n) in &s.nodes {
        let accepted: Vec<&String> = n.acked.values().collect();
        let up_to_date = !accepted.is_empty() && accepted.iter().all(|v| **v == s.version);
        let shown = accepted.first().map(|v| v.as_str()).unwrap_or("-");
        out.push_str(&format!(
            "{:<width$}  {:<9}  {:<10}  {:<8}  {}\n",
            id,
            if n.connected { "yes" } else { "no" },
            if up_to_date { "yes" } else { "no" },
            shown,
            n.last_nack.as_deref().unwrap_or("-"),
        ));
    }
    if !s.targets.is_empty() {
        let width = s.targets.keys().map(String::len).max().unwrap_or(6).max(6);
        out.push_str(&format!(
            "\n{:<width$}  {:>8}  {:>8}  {:>7}  {:>9}  {:>6}  {:<22}  REPORTED BY\n",
            "TARGET", "OK", "FAILED", "SUCCESS", "LATENCY", "WEIGHT", "CIRCUIT"
        ));
        let now = now_ms();
        for (t, v) in &s.targets {
            let circuit = if v.open_until_ms > now {
                format!("open ({} ms left)", v.open_until_ms - now)
            } else {
                "closed".to_string()
            };
            let by: Vec<&str> = v.reporters.iter().map(String::as_str).collect();
            out.push_str(&format!(
                "{:<width$}  {:>8}  {:>8}  {:>6.0}%  {:>7.0}ms  {:>6.2}  {:<22}  {}\n",
                t,
                v.ok,
                v.failed,
                v.success_rate * 100.0,
                v.latency_ms,
                v.weight,
                circuit,
                by.join(", ")
            ));
        }
    }
    out.push_str(&render_rates(&s.rates));
    if let Some(d) = &s.drill {
        out.push('\n');
        out.push_str(&render_drill(d));
    }
    out
}

fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The fleet-wide rates as tables.
pub fn render_rates(r: &Rates) -> String {
    let mut out = String::new();
    if r.routes.is_empty() && r.targets.is_empty() {
        return out;
    }
    out.push_str(&format!("\nfleet, last {} s:\n", r.window_s));
    if !r.routes.is_empty() {
        let width = r.routes.keys().map(String::len).max().unwrap_or(5).max(5);
        out.push_str(&format!(
            "{:<width$}  {:>8}  {:>7}  {:>10}  {:<32}  SERVED BY POSITION\n",
            "ROUTE", "REQUESTS", "REQ/S", "ALL FAILED", "FAIL-OVER PER REQUEST BY CLASS"
        ));
        for (name, v) in &r.routes {
            let classes: Vec<String> = v
                .failover_by_class
                .iter()
                .map(|(c, x)| format!("{c} {}", percent(*x)))
                .collect();
            let positions: Vec<String> = v
                .served_by_position
                .iter()
                .map(|(p, x)| format!("#{p} {}", percent(*x)))
                .collect();
            out.push_str(&format!(
                "{:<width$}  {:>8}  {:>7.2}  {:>10}  {:<32}  {}\n",
                name,
                v.requests,
                v.per_s,
                percent(v.all_failed),
                if classes.is_empty() {
                    "-".to_string()
                } else {
                    classes.join(", ")
                },
                if positions.is_empty() {
                    "-".to_string()
                } else {
                    positions.join(", ")
                },
            ));
        }
    }
    if !r.targets.is_empty() {
        let width = r.targets.keys().map(String::len).max().unwrap_or(6).max(6);
        out.push_str(&format!(
            "{:<width$}  {:>8}  {:>9}  {:>9}   (time to response headers)\n",
            "TARGET", "ANSWERS", "P50", "P99"
        ));
        for (t, l) in &r.targets {
            out.push_str(&format!(
                "{:<width$}  {:>8}  {:>7.0}ms  {:>7.0}ms\n",
                t, l.count, l.p50_ms, l.p99_ms
            ));
        }
    }
    out
}

/// A drill, for people.
pub fn render_drill(d: &DrillView) -> String {
    let opt = |x: Option<f64>, unit: &str| x.map_or("-".to_string(), |v| format!("{v:.0}{unit}"));
    let mut out = format!(
        "drill {} on {}: {:?}\n  fault: {} % of attempts fail as {} for {} s (error budget {} requests)\n",
        d.id,
        d.spec.target,
        d.phase,
        d.spec.share_percent,
        d.spec.class.as_str(),
        d.spec.duration_s,
        d.spec.error_budget,
    );
    out.push_str(&format!(
        "  attempts failed {}, requests affected {}, served by a fallback {} ({}), failed for clients {}\n",
        d.injected,
        d.affected,
        d.rescued,
        d.rescued_percent.map_or("-".to_string(), |p| format!("{p:.1} %")),
        d.lost
    ));
    out.push_str(&format!(
        "  time to headers: affected {} vs {} before: {} added\n",
        opt(d.rescued_ms, " ms"),
        opt(d.baseline_ms, " ms"),
        opt(d.added_ms, " ms")
    ));
    out.push_str(&format!(
        "  circuit: {}\n",
        match (d.circuit_opened, d.circuit_closed) {
            (false, _) => "stayed closed",
            (true, true) => "opened, then closed again",
            (true, false) => "opened, not closed again (yet)",
        }
    ));
    for r in &d.reasons {
        out.push_str(&format!("  - {r}\n"));
    }
    out
}

//! The control plane's view of the fleet: every Envoy that connected, the config
//! version it accepted per resource type, and its last NACK; every target the
//! filters report on; fleet-wide rates over the last minute; the fail-over
//! drill, if one runs. Served as JSON on `GET /status` and printed by
//! `switchyard status`. The same endpoint takes the fleet exchange and drills
//! (`/drill/v1`, admin token required to start or abort one).
//!
//! With TLS (`serve --tls-*`) every connection is TLS; a fleet report needs a
//! client certificate that names its node, and anything else a verified
//! client certificate or the admin token (docs/security.md).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read as _, Write as _};
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
use crate::fleet::answer::Exchange;
use crate::fleet::{self, Fleet, Refused, TargetView};
use crate::rates::{Rates, Window};
use crate::tls;
use crate::xds::server::{Gate, NodeStatus, Registry, Snapshot};
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
    /// Answers fleet reports (shared with the gRPC stream).
    exchange: Exchange,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Serves `GET /status`, the fleet exchange (`POST /fleet/v1/exchange`) and
/// drills ([`DRILL_PATH`], starting and aborting with `admin_token`) on
/// `listener` until the task is dropped; over TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    exchange: Exchange,
    admin_token: String,
    tls: Option<Arc<tls::Server>>,
) {
    let (snapshots, fleet) = (exchange.snapshots.clone(), exchange.fleet.clone());
    let observers = Observers {
        rates: exchange.rates.clone(),
        drills: exchange.drills.clone(),
        token: Arc::new(admin_token),
        exchange,
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
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (registry, snapshots, fleet, observers, tls) = (
            registry.clone(),
            snapshots.clone(),
            fleet.clone(),
            observers.clone(),
            tls.clone(),
        );
        tokio::spawn(async move {
            // The handshake runs here, off the accept loop.
            let (io, gate) = match &tls {
                None => (Io::Plain(stream), Gate::Open),
                Some(server) => match server.accept(stream, tls::Port::Status).await {
                    Ok(conn) => {
                        let gate = Gate::Certificate {
                            peer: conn.info().peer.clone(),
                            policy: server.policy().clone(),
                        };
                        (Io::Tls(Box::new(conn)), gate)
                    }
                    Err(e) => {
                        tracing::info!("TLS handshake refused (status port): {e}");
                        return;
                    }
                },
            };
            let gate = Arc::new(gate);
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (registry, snapshots, fleet, observers, gate) = (
                    registry.clone(),
                    snapshots.clone(),
                    fleet.clone(),
                    observers.clone(),
                    gate.clone(),
                );
                async move {
                    let (code, body) =
                        route(req, &gate, &registry, &snapshots, &fleet, &observers).await;
                    // Every answer is JSON but a served filter build.
                    let content_type = if body.starts_with(b"\0asm") {
                        "application/wasm"
                    } else {
                        "application/json"
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = code;
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(content_type),
                    );
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(io), svc)
                .await;
        });
    }
}

/// A status-port connection, plain or TLS.
enum Io {
    Plain(tokio::net::TcpStream),
    Tls(Box<tls::TlsConn>),
}

impl tokio::io::AsyncRead for Io {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Io {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

async fn route(
    req: Request<hyper::body::Incoming>,
    gate: &Gate,
    registry: &Registry,
    snapshots: &watch::Receiver<Arc<Snapshot>>,
    fleet: &Fleet,
    observers: &Observers,
) -> (StatusCode, Vec<u8>) {
    let is_report = req.method() == hyper::Method::POST
        && req.uri().path() == switchyard_core::fleet::EXCHANGE_PATH;
    // With TLS, reading needs a certificate or the admin token; a report is
    // checked against its node below.
    let certified = matches!(gate, Gate::Open | Gate::Certificate { peer: Some(_), .. });
    if !is_report && !certified && !authorized(&req, &observers.token) {
        return (
            StatusCode::UNAUTHORIZED,
            br#"{"error":"a client certificate or the admin token (authorization: Bearer ...) is required"}"#
                .to_vec(),
        );
    }
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
            let checked = match fleet::check(
                &body,
                |n| gate.check(n),
                |n| registry.may_report(n),
                &snapshot.targets,
            ) {
                Ok(c) => c,
                Err(refused) => return refusal(&refused),
            };
            let state = observers.exchange.answer(&checked, now_ms()).await;
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
        (hyper::Method::GET, path) if path.starts_with(crate::config::SERVED_FILTER_PATH) => {
            // Only the build of the current config: an Envoy asks for the
            // SHA-256 its listener names.
            let snapshot = snapshots.borrow().clone();
            match snapshot.served_filter() {
                Some(f) if f.url_path() == path => (StatusCode::OK, f.bytes.to_vec()),
                _ => (
                    StatusCode::NOT_FOUND,
                    b"{\"error\":\"no such filter build: the current one is in the listener\"}"
                        .to_vec(),
                ),
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            b"{\"error\":\"GET /status, POST /fleet/v1/exchange, GET|POST|DELETE /drill/v1, GET /filter/v1/<sha256>.wasm\"}"
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
    #[error("cannot reach the control plane's status endpoint at {addr}: {message}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The error.
        message: String,
    },
    /// It answered something else than a status document.
    #[error("unexpected answer from {addr}: {message}")]
    Answer {
        /// The address tried.
        addr: String,
        /// What was wrong.
        message: String,
    },
}

/// The CLI's way to the status endpoint (`switchyard status`, `switchyard
/// drill`): `HOST:PORT`, plain or TLS, and the admin token to send (if any).
#[derive(Debug)]
pub struct Client {
    host: String,
    port: u16,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    token: String,
}

impl Client {
    /// A client for `addr` (`HOST:PORT`); with `tls`, the status port's
    /// certificate must be valid for HOST under `tls.ca`.
    pub fn new(
        addr: &str,
        tls: Option<&tls::ClientFiles>,
        token: String,
    ) -> Result<Client, String> {
        let (host, port) = tls::split_host_port(addr)
            .ok_or_else(|| format!("`{addr}` is not a HOST:PORT address"))?;
        let tls = tls
            .map(tls::client_config)
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(Client {
            host,
            port,
            tls,
            token,
        })
    }

    /// The address, for messages.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// One blocking HTTP/1.1 call: `(status, body)`.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), FetchError> {
        let connect = |e: std::io::Error| FetchError::Connect {
            addr: self.addr(),
            message: e.to_string(),
        };
        let mut stream = tls::dial(
            &self.host,
            self.port,
            self.tls.as_ref(),
            Duration::from_secs(5),
        )
        .map_err(connect)?;
        let body = body.unwrap_or("");
        let auth = if self.token.is_empty() {
            String::new()
        } else {
            format!("authorization: Bearer {}\r\n", self.token)
        };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.addr(),
            body.len()
        );
        stream.write_all(req.as_bytes()).map_err(connect)?;
        let mut raw = Vec::new();
        // A TLS peer that closes without close_notify still sent a whole answer
        // (connection: close): keep what arrived.
        if let Err(e) = stream.read_to_end(&mut raw)
            && (raw.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof)
        {
            return Err(connect(e));
        }
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| FetchError::Answer {
                addr: self.addr(),
                message: "no HTTP header/body separator".into(),
            })?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((code, body.to_string()))
    }
}

/// The CLI's TLS files from `--tls-ca`, `--tls-cert`, `--tls-key` (`None`
/// without `--tls-ca`: plain HTTP).
pub fn client_tls(
    ca: Option<&str>,
    cert: Option<&str>,
    key: Option<&str>,
) -> Result<Option<tls::ClientFiles>, String> {
    let cert_key = match (cert, key) {
        (Some(c), Some(k)) => Some((c.into(), k.into())),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    match ca {
        Some(ca) => Ok(Some(tls::ClientFiles {
            ca: ca.into(),
            cert_key,
        })),
        None if cert_key.is_some() => Err("--tls-cert needs --tls-ca".into()),
        None => Ok(None),
    }
}

/// Fetches the status from a control plane.
pub fn fetch(client: &Client) -> Result<Status, FetchError> {
    let (code, body) = client.call("GET", "/status", None)?;
    if code != 200 {
        return Err(FetchError::Answer {
            addr: client.addr(),
            message: format!("HTTP {code}: {}", body.trim()),
        });
    }
    serde_json::from_str(&body).map_err(|e| FetchError::Answer {
        addr: client.addr(),
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

//! `switchyard`: the planner and the adapter (chosen by the `role` of the JSON
//! filter config the control plane sends), with the native [`Host`] of the filter
//! logic.
//!
//! State all workers share is plain process memory ([`crate::store`]); the ledger,
//! as in proxy-wasm, is per worker thread (a stream and its attempts stay on one
//! worker). Metrics are defined when the config is created (the ABI refuses later
//! definitions). Background work (fleet exchange, health checks) runs on Envoy's
//! main thread, woken by a [`Ticker`].
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_core::config::{FilterConfig as Config, Role};
use switchyard_filter::adapter::Adapter;
use switchyard_filter::background::Background;
use switchyard_filter::host::{Action, Body, Cas, Counter, Gauge, Histogram, Host, Map};
use switchyard_filter::metrics::Metric;
use switchyard_filter::planner::Planner;

use crate::api::{
    self, Attribute, BodyKind, BodyStatus, CalloutResponse, CalloutResult, ConfigHandle, Filter,
    FilterConfig, HeaderMap, HeadersStatus, HttpStreamEvent, Stream,
};
use crate::grpc::{self, Delivery};
use crate::store;
use crate::ticker::Ticker;

/// The metrics of one config, defined at its creation (the ABI refuses later
/// definitions), with their label names as Envoy tags.
struct Metrics {
    counters: Vec<(Counter, api::Counter)>,
    gauges: Vec<(Gauge, api::Gauge)>,
    histograms: Vec<(Histogram, api::Histogram)>,
}

/// Defines every metric of one kind; one that fails is logged and left out.
fn define_all<M: Metric + std::fmt::Debug, I>(
    all: &[M],
    mut define: impl FnMut(&str, &[&str]) -> Result<I, api::MetricsError>,
) -> Vec<(M, I)> {
    all.iter()
        .filter_map(|m| match define(m.name(), m.labels()) {
            Ok(id) => Some((*m, id)),
            Err(e) => {
                log::warn!("switchyard: metric {} not defined: {e:?}", m.name());
                None
            }
        })
        .collect()
}

fn find<M: PartialEq, I: Copy>(defined: &[(M, I)], m: M) -> Option<I> {
    defined.iter().find(|(k, _)| *k == m).map(|(_, id)| *id)
}

impl Metrics {
    fn define(handle: &mut ConfigHandle<'_>) -> Metrics {
        Metrics {
            counters: define_all(&Counter::ALL, |n, l| handle.define_counter(n, l)),
            gauges: define_all(&Gauge::ALL, |n, l| handle.define_gauge(n, l)),
            histograms: define_all(&Histogram::ALL, |n, l| handle.define_histogram(n, l)),
        }
    }
}

/// One `switchyard` filter entry (planner or adapter).
pub struct SwitchyardConfig {
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    background: Mutex<Background>,
    /// The background work's gRPC streams (the fleet stream).
    grpc: Mutex<grpc::Streams>,
    /// Stream events that arrived while the background work was running (Envoy
    /// may call back from inside a send or reset): handed over at its next turn.
    deferred: Mutex<Vec<(u32, Delivery)>>,
    /// Wakes [`FilterConfig::on_scheduled`] for the background work; dropped (and
    /// joined) with the config.
    _ticker: Option<Ticker>,
}

/// A name per config for the fleet stream's lease: two configs of one Envoy
/// (one replacing the other) never both think they hold it.
fn config_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "native-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

const TICK: u64 = 1;

impl SwitchyardConfig {
    /// Parses the control plane's JSON config; an error rejects the Envoy config.
    pub fn new(bytes: &[u8], handle: &mut ConfigHandle<'_>) -> Result<Self, String> {
        crate::logger::install();
        let cfg = Config::from_json(bytes).map_err(|e| format!("rejected config: {e}"))?;
        log::info!(
            "switchyard {:?}: config version {} ({} providers, {} routes)",
            cfg.role,
            cfg.version,
            cfg.providers.len(),
            cfg.routes.len()
        );
        let cfg = Arc::new(cfg);
        let metrics = Arc::new(Metrics::define(handle));
        let background = Background::with_name(cfg.clone(), config_name());
        let ticker = match (background.tick_ms(), handle.scheduler()) {
            (Some(ms), Some(scheduler)) => Some(
                Ticker::start(scheduler, Duration::from_millis(ms), TICK)
                    .map_err(|e| e.to_string())?,
            ),
            _ => None,
        };
        Ok(SwitchyardConfig {
            cfg,
            metrics,
            background: Mutex::new(background),
            grpc: Mutex::new(grpc::Streams::default()),
            deferred: Mutex::new(Vec::new()),
            _ticker: ticker,
        })
    }
}

impl FilterConfig for SwitchyardConfig {
    fn new_filter(&self) -> Box<dyn Filter> {
        let part = match self.cfg.role {
            Role::Planner => Part::Planner(Box::new(Planner::new(self.cfg.clone()))),
            Role::Adapter => Part::Adapter(Box::new(Adapter::new(self.cfg.clone()))),
        };
        Box::new(Switchyard {
            part,
            metrics: self.metrics.clone(),
        })
    }

    fn on_scheduled(&self, config: &mut ConfigHandle<'_>, _event_id: u64) {
        let host = ConfigHost {
            handle: RefCell::new(config),
            metrics: &self.metrics,
            grpc: &self.grpc,
        };
        if let Ok(mut b) = self.background.lock() {
            self.hand_over(&mut b, &host, Vec::new());
            b.tick(&host);
        }
    }

    fn on_http_callout_done(
        &self,
        config: &mut ConfigHandle<'_>,
        callout_id: u64,
        _result: CalloutResult,
        response: Option<&CalloutResponse<'_>>,
    ) {
        let status = response
            .and_then(|r| r.status())
            .and_then(|s| u16::try_from(s).ok());
        let body = response.map(|r| r.body_bytes()).unwrap_or_default();
        let host = ConfigHost {
            handle: RefCell::new(config),
            metrics: &self.metrics,
            grpc: &self.grpc,
        };
        if let Ok(mut b) = self.background.lock() {
            b.on_http_response(
                &host,
                u32::try_from(callout_id).unwrap_or(u32::MAX),
                status,
                &body,
            );
        }
    }

    fn on_http_stream(
        &self,
        config: &mut ConfigHandle<'_>,
        stream_id: u64,
        event: HttpStreamEvent<'_>,
    ) {
        // Taken before the background runs: it may open or send on streams.
        let deliveries = match self.grpc.lock() {
            Ok(mut g) => g.on_event(stream_id, &event),
            Err(_) => return,
        };
        if deliveries.is_empty() {
            return;
        }
        let token = u32::try_from(stream_id).unwrap_or(u32::MAX);
        let deliveries: Vec<(u32, Delivery)> = deliveries.into_iter().map(|d| (token, d)).collect();
        let host = ConfigHost {
            handle: RefCell::new(config),
            metrics: &self.metrics,
            grpc: &self.grpc,
        };
        match self.background.try_lock() {
            Ok(mut b) => self.hand_over(&mut b, &host, deliveries),
            // Called back from inside the background work (its send or reset):
            // handed over at its next turn.
            Err(_) => {
                if let Ok(mut d) = self.deferred.lock() {
                    d.extend(deliveries);
                }
            }
        }
    }
}

impl SwitchyardConfig {
    /// Hands the background work what its streams delivered: what was deferred
    /// first, then `now`.
    fn hand_over(
        &self,
        b: &mut Background,
        host: &ConfigHost<'_, '_, '_>,
        now: Vec<(u32, Delivery)>,
    ) {
        let mut all = self
            .deferred
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        all.extend(now);
        for (token, d) in all {
            match d {
                Delivery::Message(m) => b.on_grpc_message(host, token, &m),
                Delivery::Closed(status) => b.on_grpc_close(host, token, status),
            }
        }
    }
}

/// The filter logic of one stream (planner) or one attempt (adapter).
enum Part {
    Planner(Box<Planner>),
    Adapter(Box<Adapter>),
}

struct Switchyard {
    part: Part,
    metrics: Arc<Metrics>,
}

/// Times the rest of the block as callback `planner.$hook` or `adapter.$hook`, by the
/// part of `$part` (feature `profile` only).
macro_rules! profile_span {
    ($part:expr, $hook:literal) => {
        #[cfg(feature = "profile")]
        let _span = switchyard_filter::profile::Span::new(
            match $part {
                Part::Planner(_) => concat!("planner.", $hook),
                Part::Adapter(_) => concat!("adapter.", $hook),
            },
            now_ns,
        );
    };
}

fn headers_status(a: Action) -> HeadersStatus {
    match a {
        Action::Continue => HeadersStatus::Continue,
        Action::Pause => HeadersStatus::StopIteration,
    }
}

fn body_status(a: Action) -> BodyStatus {
    match a {
        Action::Continue => BodyStatus::Continue,
        Action::Pause => BodyStatus::StopIterationAndBuffer,
    }
}

impl Filter for Switchyard {
    fn on_request_headers(&mut self, s: &mut Stream<'_>, end_of_stream: bool) -> HeadersStatus {
        profile_span!(&self.part, "request_headers");
        let host = StreamHost {
            s: RefCell::new(s),
            metrics: &self.metrics,
        };
        headers_status(match &mut self.part {
            Part::Planner(p) => p.on_request_headers(&host, end_of_stream),
            Part::Adapter(a) => a.on_request_headers(&host),
        })
    }

    fn on_request_body(&mut self, s: &mut Stream<'_>, end_of_stream: bool) -> BodyStatus {
        profile_span!(&self.part, "request_body");
        let size = whole_size(s, BodyKind::BufferedRequest, BodyKind::ReceivedRequest);
        let host = StreamHost {
            s: RefCell::new(s),
            metrics: &self.metrics,
        };
        body_status(match &mut self.part {
            Part::Planner(p) => p.on_request_body(&host, size, end_of_stream),
            Part::Adapter(a) => a.on_request_body(&host, end_of_stream),
        })
    }

    fn on_response_headers(&mut self, s: &mut Stream<'_>, end_of_stream: bool) -> HeadersStatus {
        profile_span!(&self.part, "response_headers");
        let host = StreamHost {
            s: RefCell::new(s),
            metrics: &self.metrics,
        };
        headers_status(match &mut self.part {
            Part::Planner(p) => p.on_response_headers(&host),
            Part::Adapter(a) => a.on_response_headers(&host, end_of_stream),
        })
    }

    fn on_response_body(&mut self, s: &mut Stream<'_>, end_of_stream: bool) -> BodyStatus {
        profile_span!(&self.part, "response_body");
        let host = StreamHost {
            s: RefCell::new(s),
            metrics: &self.metrics,
        };
        body_status(match &mut self.part {
            Part::Planner(p) => p.on_response_body(&host, end_of_stream),
            Part::Adapter(a) => a.on_response_body(&host, end_of_stream),
        })
    }

    fn on_http_callout_done(
        &mut self,
        s: &mut Stream<'_>,
        callout_id: u64,
        _result: CalloutResult,
        response: Option<&CalloutResponse<'_>>,
    ) {
        let status = response
            .and_then(|r| r.status())
            .and_then(|c| u16::try_from(c).ok());
        let body = response.map(|r| r.body_bytes()).unwrap_or_default();
        let host = StreamHost {
            s: RefCell::new(s),
            metrics: &self.metrics,
        };
        if let Part::Adapter(a) = &mut self.part {
            a.on_callout_response(
                &host,
                u32::try_from(callout_id).unwrap_or(u32::MAX),
                status,
                &body,
            );
        }
    }

    fn on_stream_complete(&mut self, s: &mut Stream<'_>) {
        {
            profile_span!(&self.part, "log");
            let metrics = self.metrics.clone();
            let host = StreamHost {
                s: RefCell::new(s),
                metrics: &metrics,
            };
            if let Part::Planner(p) = &mut self.part {
                p.on_done(&host);
            }
        }
        // Called for the planner only (upstream filters get no stream completion).
        #[cfg(feature = "profile")]
        if let Part::Planner(_) = self.part {
            switchyard_filter::profile::request_done();
        }
    }
}

/// The size of a body as the filter logic sees it: what was buffered plus the
/// current chunk (or only the buffer, when the chunk is the buffer).
fn whole_size(s: &Stream<'_>, buffered: BodyKind, received: BodyKind) -> usize {
    let same = match buffered {
        BodyKind::BufferedRequest => s.received_is_buffered_request_body(),
        _ => s.received_is_buffered_response_body(),
    };
    if same {
        s.body_size(buffered)
    } else {
        s.body_size(buffered) + s.body_size(received)
    }
}

// === impl Host for a stream ===

struct StreamHost<'a, 'b, 'm> {
    s: RefCell<&'a mut Stream<'b>>,
    metrics: &'m Metrics,
}

fn header_map(map: Map) -> HeaderMap {
    match map {
        Map::Request => HeaderMap::RequestHeaders,
        Map::Response => HeaderMap::ResponseHeaders,
    }
}

fn lossy(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

impl Host for StreamHost<'_, '_, '_> {
    fn header(&self, map: Map, name: &str) -> Option<String> {
        self.s.borrow().header(header_map(map), name).map(lossy)
    }

    fn headers(&self, map: Map) -> Vec<(String, Vec<u8>)> {
        self.s
            .borrow()
            .headers(header_map(map))
            .into_iter()
            .map(|(k, v)| (lossy(k), v.to_vec()))
            .collect()
    }

    fn set_header(&self, map: Map, name: &str, value: Option<&str>) {
        let mut s = self.s.borrow_mut();
        match value {
            Some(v) => s.set_header(header_map(map), name, v.as_bytes()),
            None => s.remove_header(header_map(map), name),
        };
    }

    fn replace_headers(&self, map: Map, pairs: &[(String, Vec<u8>)]) {
        let mut s = self.s.borrow_mut();
        let m = header_map(map);
        let present: Vec<String> = s.headers(m).into_iter().map(|(k, _)| lossy(k)).collect();
        for name in present
            .iter()
            .filter(|n| !pairs.iter().any(|(k, _)| k == *n))
        {
            s.remove_header(m, name);
        }
        for (name, value) in pairs {
            if s.header(m, name) != Some(value.as_slice()) {
                s.set_header(m, name, value);
            }
        }
    }

    fn body(&self, which: Body) -> Vec<u8> {
        let s = self.s.borrow();
        match which {
            Body::Request => s.request_body(),
            Body::Response => s.response_body(),
        }
    }

    fn replace_body(&self, which: Body, bytes: &[u8]) {
        let mut s = self.s.borrow_mut();
        match which {
            Body::Request => s.replace_request_body(bytes),
            Body::Response => s.replace_response_body(bytes),
        };
    }

    fn set_filter_state(&self, key: &str, value: &str) -> bool {
        // Readable by Envoy's matchers under the bare key.
        self.s.borrow_mut().set_filter_state(key, value.as_bytes())
    }

    fn upstream_cluster(&self) -> Option<String> {
        self.s.borrow().cluster_name().map(lossy)
    }

    fn resume_response(&self) {
        self.s.borrow_mut().continue_encoding();
    }

    fn response_code_details(&self) -> Option<String> {
        self.s
            .borrow()
            .attribute_string(Attribute::RESPONSE_CODE_DETAILS)
            .map(lossy)
    }

    fn clear_route_cache(&self) -> bool {
        self.s.borrow_mut().clear_route_cache();
        true
    }

    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        self.s
            .borrow_mut()
            .send_response(u32::from(status), &headers, body, "switchyard");
    }

    fn node_id(&self) -> String {
        String::new()
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        store::get(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Cas {
        store::set(key, value, cas)
    }

    fn count(&self, counter: Counter, labels: &[&str], delta: u64) {
        if let Some(id) = find(&self.metrics.counters, counter) {
            let _ = self.s.borrow().increment_counter(id, labels, delta);
        }
    }

    fn gauge(&self, gauge: Gauge, labels: &[&str], value: u64) {
        if let Some(id) = find(&self.metrics.gauges, gauge) {
            let _ = self.s.borrow().set_gauge(id, labels, value);
        }
    }

    fn record(&self, histogram: Histogram, labels: &[&str], value: u64) {
        if let Some(id) = find(&self.metrics.histograms, histogram) {
            let _ = self.s.borrow().record_histogram(id, labels, value);
        }
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Option<u32> {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        self.s
            .borrow_mut()
            .http_callout(cluster, &headers, body.unwrap_or_default(), timeout_ms)
            .ok()
            .and_then(|id| u32::try_from(id).ok())
    }
}

// === impl Host for the config (background work, main thread) ===

struct ConfigHost<'a, 'b, 'm> {
    handle: RefCell<&'a mut ConfigHandle<'b>>,
    metrics: &'m Metrics,
    grpc: &'m Mutex<grpc::Streams>,
}

impl Host for ConfigHost<'_, '_, '_> {
    fn header(&self, _map: Map, _name: &str) -> Option<String> {
        None
    }
    fn headers(&self, _map: Map) -> Vec<(String, Vec<u8>)> {
        Vec::new()
    }
    fn set_header(&self, _map: Map, _name: &str, _value: Option<&str>) {}
    fn replace_headers(&self, _map: Map, _pairs: &[(String, Vec<u8>)]) {}
    fn body(&self, _which: Body) -> Vec<u8> {
        Vec::new()
    }
    fn replace_body(&self, _which: Body, _bytes: &[u8]) {}
    fn set_filter_state(&self, _key: &str, _value: &str) -> bool {
        false
    }
    fn upstream_cluster(&self) -> Option<String> {
        None
    }
    fn response_code_details(&self) -> Option<String> {
        None
    }
    fn clear_route_cache(&self) -> bool {
        false
    }
    fn send_response(&self, _status: u16, _headers: &[(&str, &str)], _body: &[u8]) {}
    fn resume_response(&self) {}

    fn node_id(&self) -> String {
        // ABI v0.2.0 has no node attribute (docs/native-module.md): the fleet
        // link carries the id the control plane stamped.
        String::new()
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        store::get(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Cas {
        store::set(key, value, cas)
    }

    fn count(&self, counter: Counter, labels: &[&str], delta: u64) {
        if let Some(id) = find(&self.metrics.counters, counter) {
            let _ = self.handle.borrow().increment_counter(id, labels, delta);
        }
    }

    fn gauge(&self, gauge: Gauge, labels: &[&str], value: u64) {
        if let Some(id) = find(&self.metrics.gauges, gauge) {
            let _ = self.handle.borrow().set_gauge(id, labels, value);
        }
    }

    fn record(&self, histogram: Histogram, labels: &[&str], value: u64) {
        if let Some(id) = find(&self.metrics.histograms, histogram) {
            let _ = self.handle.borrow().record_histogram(id, labels, value);
        }
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Option<u32> {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        self.handle
            .borrow_mut()
            .http_callout(cluster, &headers, body.unwrap_or_default(), timeout_ms)
            .ok()
            .and_then(|id| u32::try_from(id).ok())
    }

    fn grpc_stream_open(&self, cluster: &str, service: &str, method: &str) -> Option<u32> {
        let owned = grpc::request_headers(service, method);
        let headers: Vec<(&str, &[u8])> = owned.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let mut handle = self.handle.borrow_mut();
        // No timeout: the stream lives until either side ends it.
        let id = handle.start_http_stream(cluster, &headers, 0).ok()?;
        let Ok(token) = u32::try_from(id) else {
            handle.reset_http_stream(id);
            return None;
        };
        self.grpc.lock().ok()?.opened(id);
        Some(token)
    }

    fn grpc_stream_send(&self, token: u32, message: &[u8]) -> bool {
        self.handle
            .borrow_mut()
            .stream_send_data(u64::from(token), &grpc::frame(message))
    }

    fn grpc_stream_cancel(&self, token: u32) {
        if let Ok(mut g) = self.grpc.lock() {
            g.forget(u64::from(token));
        }
        self.handle.borrow_mut().reset_http_stream(u64::from(token));
    }
}

/// Monotonic nanoseconds for [`switchyard_filter::profile::Span`].
#[cfg(feature = "profile")]
fn now_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

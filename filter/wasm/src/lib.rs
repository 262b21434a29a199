//! Switchyard as a proxy-wasm module: the proxy-wasm [`Host`] of the filter logic
//! (`switchyard_filter`) and the glue from proxy-wasm's contexts to it.
//!
//! One module, two roles chosen by the plugin configuration (planner as a
//! downstream filter, adapter in the router's upstream filters); both use the same
//! `vm_id`, so they share one VM per worker and with it the ledger. State all
//! workers share is proxy-wasm shared data.
//!
//! Host calls go through `proxy_wasm::hostcalls` and never through the SDK's
//! convenience methods, which unwrap: a non-UTF-8 header value or a missing
//! property would abort the VM, turning every later request into a 503.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{
    Action as WasmAction, BufferType, ContextType, LogLevel, MapType, MetricType, Status,
};
use switchyard_core::config::{FilterConfig, Role};
use switchyard_filter::adapter::Adapter;
use switchyard_filter::background::Background;
use switchyard_filter::host::{Action, Body, Cas, Counter, Gauge, Histogram, Host, Map};
use switchyard_filter::metrics;
use switchyard_filter::planner::Planner;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

// === impl Host ===

/// The proxy-wasm host; `body_size` is the size of the body the current body
/// callback sees.
#[derive(Clone, Copy, Debug, Default)]
pub struct WasmHost {
    body_size: usize,
}

fn map_type(map: Map) -> MapType {
    match map {
        Map::Request => MapType::HttpRequestHeaders,
        Map::Response => MapType::HttpResponseHeaders,
    }
}

fn buffer_type(body: Body) -> BufferType {
    match body {
        Body::Request => BufferType::HttpRequestBody,
        Body::Response => BufferType::HttpResponseBody,
    }
}

fn property(path: &[&str]) -> Option<String> {
    hostcalls::get_property(path.to_vec())
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

thread_local! {
    /// Metric ids by name (ids are per VM, so per worker).
    static METRICS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
}

impl Host for WasmHost {
    fn header(&self, map: Map, name: &str) -> Option<String> {
        match hostcalls::get_map_value_bytes(map_type(map), name) {
            Ok(Some(v)) => Some(String::from_utf8_lossy(&v).into_owned()),
            _ => None,
        }
    }

    fn headers(&self, map: Map) -> Vec<(String, Vec<u8>)> {
        hostcalls::get_map_bytes(map_type(map)).unwrap_or_default()
    }

    fn set_header(&self, map: Map, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(map_type(map), name, value);
    }

    fn replace_headers(&self, map: Map, pairs: &[(String, Vec<u8>)]) {
        let pairs: Vec<(&str, &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let _ = hostcalls::set_map_bytes(map_type(map), pairs);
    }

    fn body(&self, which: Body) -> Vec<u8> {
        hostcalls::get_buffer(buffer_type(which), 0, self.body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn replace_body(&self, which: Body, bytes: &[u8]) {
        let _ = hostcalls::set_buffer(buffer_type(which), 0, self.body_size, bytes);
    }

    fn set_filter_state(&self, key: &str, value: &str) -> bool {
        // Readable by Envoy's matchers as `wasm.<key>`.
        hostcalls::set_property(vec![key], Some(value.as_bytes())).is_ok()
    }

    fn upstream_cluster(&self) -> Option<String> {
        property(&["xds", "cluster_name"])
    }

    fn response_code_details(&self) -> Option<String> {
        property(&["response", "code_details"])
    }

    fn clear_route_cache(&self) -> bool {
        hostcalls::call_foreign_function("clear_route_cache", None).is_ok()
    }

    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let _ = hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body));
    }

    fn resume_response(&self) {
        let _ = hostcalls::resume_http_response();
    }

    fn node_id(&self) -> String {
        // Envoy 1.40 answers `node.id` with nothing; the node is `xds.node`.
        property(&["xds", "node", "id"]).unwrap_or_default()
    }

    fn now_ms(&self) -> u64 {
        now_ns() / 1_000_000
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Cas {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Cas::Done,
            Err(Status::CasMismatch) => Cas::Conflict,
            Err(_) => Cas::Failed,
        }
    }

    fn count(&self, counter: Counter, labels: &[&str], delta: u64) {
        if let Some(id) = metric_id(MetricType::Counter, metrics::flat_name(counter, labels)) {
            let _ = hostcalls::increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX));
        }
    }

    fn gauge(&self, gauge: Gauge, labels: &[&str], value: u64) {
        if let Some(id) = metric_id(MetricType::Gauge, metrics::flat_name(gauge, labels)) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    fn record(&self, histogram: Histogram, labels: &[&str], value: u64) {
        if let Some(id) = metric_id(MetricType::Histogram, metrics::flat_name(histogram, labels)) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    fn grpc_stream_open(&self, cluster: &str, service: &str, method: &str) -> Option<u32> {
        // Envoy takes a serialized GrpcService in place of a cluster name: with
        // it the stream's `:authority` is `switchyard`, not the cluster's name
        // (which a server refuses when it holds `|`, as Istio's do).
        let upstream = grpc_service(cluster, "switchyard");
        let upstream = upstream.as_deref().unwrap_or(cluster);
        match hostcalls::open_grpc_stream(upstream, service, method, vec![]) {
            Ok(token) => Some(token),
            Err(e) => {
                log::warn!("switchyard: cannot open {service}/{method} via {cluster}: {e:?}");
                None
            }
        }
    }

    fn grpc_stream_send(&self, token: u32, message: &[u8]) -> bool {
        hostcalls::send_grpc_stream_message(token, Some(message), false).is_ok()
    }

    fn grpc_stream_cancel(&self, token: u32) {
        let _ = hostcalls::cancel_grpc_stream(token);
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Option<u32> {
        hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            body,
            vec![],
            std::time::Duration::from_millis(timeout_ms),
        )
        .ok()
    }
}

/// The id of the metric `name` (a flat name carries its labels), defined on
/// first use and kept per worker.
fn metric_id(kind: MetricType, name: String) -> Option<u32> {
    METRICS.with(|m| {
        if let Some(id) = m.borrow().get(&name) {
            return Some(*id);
        }
        let id = hostcalls::define_metric(kind, &name).ok()?;
        m.borrow_mut().insert(name, id);
        Some(id)
    })
}

/// Nanoseconds since the Unix epoch, from the host's clock.
fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn action(a: Action) -> WasmAction {
    match a {
        Action::Continue => WasmAction::Continue,
        Action::Pause => WasmAction::Pause,
    }
}

/// Times the rest of the block as callback `$name` (feature `profile` only).
macro_rules! profile_span {
    ($name:expr) => {
        #[cfg(feature = "profile")]
        let _span = switchyard_filter::profile::Span::new($name, now_ns);
    };
}

// === impl Root ===

/// Root context: holds the last good config of one plugin instance and its
/// background work.
#[derive(Default)]
struct Root {
    config: Option<Arc<FilterConfig>>,
    background: Option<Background>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u16>().ok());
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        if let Some(b) = &mut self.background {
            b.on_http_response(&WasmHost::default(), token, status, &body);
        }
    }

    fn on_grpc_stream_message(&mut self, token: u32, size: usize) {
        let message = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        if let Some(b) = &mut self.background {
            b.on_grpc_message(&WasmHost::default(), token, &message);
        }
    }

    fn on_grpc_stream_close(&mut self, token: u32, status: u32) {
        if let Some(b) = &mut self.background {
            b.on_grpc_close(&WasmHost::default(), token, status);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        match FilterConfig::from_json(&bytes) {
            Ok(cfg) => {
                log::info!(
                    "switchyard {:?}: config version {} ({} providers, {} routes)",
                    cfg.role,
                    cfg.version,
                    cfg.providers.len(),
                    cfg.routes.len()
                );
                let cfg = Arc::new(cfg);
                // A name for this worker in the fleet stream's lease: the
                // clock in ns and the worker's draw (VMs of all workers start
                // alike, their first draws differ by their start times).
                let me = format!(
                    "{:x}{:x}",
                    now_ns(),
                    (switchyard_filter::host::random_unit(&WasmHost::default())
                        * (1u64 << 53) as f64) as u64
                );
                let background = Background::with_name(cfg.clone(), me);
                if let Some(ms) = background.tick_ms() {
                    let _ = hostcalls::set_tick_period(std::time::Duration::from_millis(ms));
                }
                self.config = Some(cfg);
                self.background = Some(background);
                true
            }
            Err(e) => {
                log::error!("switchyard: rejected config: {e}");
                // Keep serving with the last good config; refuse only a first bad one.
                self.config.is_some()
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let cfg = self.config.clone()?;
        Some(match cfg.role {
            Role::Planner => Box::new(PlannerContext(Planner::new(cfg))),
            Role::Adapter => Box::new(AdapterContext(Adapter::new(cfg))),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn on_tick(&mut self) {
        if let Some(b) = &mut self.background {
            b.tick(&WasmHost::default());
        }
    }
}

// === impl HttpContext ===

struct PlannerContext(Planner);

impl Context for PlannerContext {}

impl HttpContext for PlannerContext {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> WasmAction {
        profile_span!("planner.request_headers");
        action(
            self.0
                .on_request_headers(&WasmHost::default(), end_of_stream),
        )
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> WasmAction {
        profile_span!("planner.request_body");
        action(
            self.0
                .on_request_body(&WasmHost { body_size }, body_size, end_of_stream),
        )
    }

    fn on_http_response_headers(
        &mut self,
        _num_headers: usize,
        _end_of_stream: bool,
    ) -> WasmAction {
        profile_span!("planner.response_headers");
        action(self.0.on_response_headers(&WasmHost::default()))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> WasmAction {
        profile_span!("planner.response_body");
        action(
            self.0
                .on_response_body(&WasmHost { body_size }, end_of_stream),
        )
    }

    fn on_log(&mut self) {
        {
            profile_span!("planner.log");
            self.0.on_done(&WasmHost::default());
        }
        #[cfg(feature = "profile")]
        switchyard_filter::profile::request_done();
    }
}

struct AdapterContext(Adapter);

impl Context for AdapterContext {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u16>().ok());
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        // The held response body is replaced whole.
        let host = WasmHost {
            body_size: u32::MAX as usize,
        };
        self.0.on_callout_response(&host, token, status, &body);
    }
}

impl HttpContext for AdapterContext {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> WasmAction {
        profile_span!("adapter.request_headers");
        action(self.0.on_request_headers(&WasmHost::default()))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> WasmAction {
        profile_span!("adapter.request_body");
        action(
            self.0
                .on_request_body(&WasmHost { body_size }, end_of_stream),
        )
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> WasmAction {
        profile_span!("adapter.response_headers");
        action(
            self.0
                .on_response_headers(&WasmHost::default(), end_of_stream),
        )
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> WasmAction {
        profile_span!("adapter.response_body");
        action(
            self.0
                .on_response_body(&WasmHost { body_size }, end_of_stream),
        )
    }
}

/// `envoy.config.core.v3.GrpcService { envoy_grpc { cluster_name, authority } }`
/// as protobuf bytes, when they are ASCII (the host call takes a string: every
/// length below 128 keeps them so); `None` otherwise.
fn grpc_service(cluster: &str, authority: &str) -> Option<String> {
    let field = |tag: u8, value: &str| -> Option<Vec<u8>> {
        let len = u8::try_from(value.len()).ok().filter(|l| *l < 0x80)?;
        let mut out = vec![tag, len];
        out.extend_from_slice(value.as_bytes());
        Some(out)
    };
    // EnvoyGrpc: cluster_name = 1, authority = 2 (length-delimited).
    let mut inner = field(0x0a, cluster)?;
    inner.extend(field(0x12, authority)?);
    let len = u8::try_from(inner.len()).ok().filter(|l| *l < 0x80)?;
    // GrpcService: envoy_grpc = 1.
    let mut out = vec![0x0a, len];
    out.extend(inner);
    String::from_utf8(out).ok().filter(|s| s.is_ascii())
}

#[cfg(test)]
mod grpc_service_tests {
    use super::grpc_service;

    #[test]
    fn names_the_cluster_and_the_authority() {
        let s = grpc_service("outbound|18000||cp", "switchyard").unwrap();
        let mut want = vec![0x0a, 2 + 18 + 2 + 10, 0x0a, 18];
        want.extend_from_slice(b"outbound|18000||cp");
        want.extend_from_slice(&[0x12, 10]);
        want.extend_from_slice(b"switchyard");
        assert_eq!(s.as_bytes(), &want[..]);
        assert!(grpc_service(&"c".repeat(200), "switchyard").is_none());
    }
}

//! The safe API a Switchyard filter is written against.
//!
//! A module provides a [`FilterConfig`] per filter entry in Envoy's configuration (created on
//! the main thread, shared by all workers) which creates one [`Filter`] per stream (created
//! and driven on one worker thread). Envoy's side is reached only through handles lent to a
//! hook for its duration: [`Stream`] (per-stream hooks), [`ConfigHandle`] (config hooks, main
//! thread) and [`RouteContext`] (cluster specifier). A handle cannot be stored or sent: it
//! borrows the hook's stack frame. Bytes Envoy returns borrow the handle (`&self`); calls that
//! change headers, bodies or the route take `&mut self`, so no Envoy-owned slice survives a
//! change (or the hook).
//!
//! Two owned, thread-safe objects may outlive a hook: [`ConfigScheduler`] and
//! [`FilterScheduler`] (wake a config on the main thread / a stream on its worker from any
//! thread).
#![forbid(unsafe_code)]

pub use crate::abi::{ABI_VERSION, ConfigScheduler, FilterScheduler};
use crate::abi::{MetricKind, MetricOp, RawConfig, RawRoute, RawStream};

// ------------------------------------------------------------------------------------------
// Status codes returned by the hooks (values are the ABI's).
// ------------------------------------------------------------------------------------------

/// What a headers hook tells Envoy (`FilterHeadersStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum HeadersStatus {
    /// Pass the headers on.
    Continue = 0,
    /// Hold the headers; body and trailers callbacks keep arriving (docs/native-module.md b/c), and the
    /// held headers can still be edited there. Resumed by returning `Continue` from a later
    /// hook, or `Stream::continue_decoding` / `continue_encoding` from a callout/scheduled
    /// hook. Never with `end_of_stream = true` unless something will resume: no body hook
    /// follows then.
    StopIteration = 1,
    /// Pass the headers on without ending the stream even if they had end_of_stream.
    ContinueAndDontEndStream = 2,
    /// Hold everything and buffer it (this filter's body hooks are not called meanwhile).
    StopAllIterationAndBuffer = 3,
    /// Hold everything with watermark back-pressure.
    StopAllIterationAndWatermark = 4,
}

/// What a body hook tells Envoy (`FilterDataStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum BodyStatus {
    /// Pass this chunk (and anything buffered before it) on.
    Continue = 0,
    /// Keep this chunk in Envoy's buffer for this filter and wait for more.
    StopIterationAndBuffer = 1,
    /// As `StopIterationAndBuffer`, with watermark back-pressure instead of a hard limit.
    StopIterationAndWatermark = 2,
    /// Hold without buffering (the filter takes responsibility for the data).
    StopIterationNoBuffer = 3,
}

/// What a trailers hook tells Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum TrailersStatus {
    Continue = 0,
    StopIteration = 1,
}

// ------------------------------------------------------------------------------------------
// Selectors.
// ------------------------------------------------------------------------------------------

/// Which header map of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum HeaderMap {
    RequestHeaders = 0,
    RequestTrailers = 1,
    ResponseHeaders = 2,
    ResponseTrailers = 3,
}

/// Which body buffer of the stream (docs/native-module.md b/c has the traces).
///
/// * `Received*`: the chunk of the *current* body hook; empty outside body hooks. With an
///   HTTP/1 client the `end_of_stream` call often carries an empty chunk.
/// * `Buffered*`: what Envoy buffered for this filter: the chunks for which this filter's
///   earlier body hooks returned `StopIterationAndBuffer`, *not* including the current chunk.
///   Absent (`body_chunks` → `None`) until something was buffered.
/// * In the filter right after one that buffered the whole body and then continued, the
///   current chunk *is* that buffer (`received_is_buffered_*_body()` → true; both kinds show
///   the same bytes).
///
/// [`Stream::request_body`] / [`Stream::replace_request_body`] combine these correctly in all
/// three cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum BodyKind {
    ReceivedRequest = 0,
    BufferedRequest = 1,
    ReceivedResponse = 2,
    BufferedResponse = 3,
}

/// Where [`Stream::metadata_string`] reads metadata from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MetadataSource {
    /// The stream's dynamic metadata.
    Dynamic = 0,
    Route = 1,
    Cluster = 2,
    /// The upstream endpoint (`LbEndpoint.metadata`).
    Host = 3,
    HostLocality = 4,
}

/// Envoy log levels (component `dynamic_modules`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// An attribute id (Envoy's attribute vocabulary, `envoy_dynamic_module_type_attribute_id`).
/// The constants are the ones Switchyard reads; any id of the ABI can be built with
/// `Attribute(n)`. docs/native-module.md lists which ids answer as string or int, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attribute(pub u32);

impl Attribute {
    pub const REQUEST_PATH: Attribute = Attribute(0);
    pub const REQUEST_HOST: Attribute = Attribute(2);
    pub const REQUEST_METHOD: Attribute = Attribute(4);
    pub const REQUEST_ID: Attribute = Attribute(9);
    pub const REQUEST_PROTOCOL: Attribute = Attribute(10);
    pub const REQUEST_DURATION: Attribute = Attribute(12);
    pub const REQUEST_SIZE: Attribute = Attribute(13);
    pub const RESPONSE_CODE: Attribute = Attribute(15);
    pub const RESPONSE_CODE_DETAILS: Attribute = Attribute(16);
    pub const RESPONSE_FLAGS: Attribute = Attribute(17);
    pub const RESPONSE_SIZE: Attribute = Attribute(21);
    pub const SOURCE_ADDRESS: Attribute = Attribute(24);
    pub const DESTINATION_ADDRESS: Attribute = Attribute(26);
    pub const CONNECTION_ID: Attribute = Attribute(28);
    pub const UPSTREAM_ADDRESS: Attribute = Attribute(41);
    pub const UPSTREAM_PORT: Attribute = Attribute(42);
    pub const UPSTREAM_LOCAL_ADDRESS: Attribute = Attribute(51);
    pub const UPSTREAM_TRANSPORT_FAILURE_REASON: Attribute = Attribute(52);
    pub const UPSTREAM_REQUEST_ATTEMPT_COUNT: Attribute = Attribute(53);
    pub const XDS_NODE: Attribute = Attribute(56);
    pub const XDS_CLUSTER_NAME: Attribute = Attribute(57);
    pub const XDS_ROUTE_NAME: Attribute = Attribute(61);
    pub const XDS_VIRTUAL_HOST_NAME: Attribute = Attribute(63);
    pub const XDS_UPSTREAM_HOST_METADATA: Attribute = Attribute(65);
    pub const XDS_FILTER_CHAIN_NAME: Attribute = Attribute(66);
    /// One past the last id of ABI v0.1.0 (for probes that walk all ids).
    pub const END: u32 = 68;
}

// ------------------------------------------------------------------------------------------
// Metrics.
// ------------------------------------------------------------------------------------------

/// A counter defined by [`ConfigHandle::define_counter`]; use it from any stream of that
/// config (or of the config itself). Labels are positional, as defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter {
    id: usize,
    labels: usize,
}

/// A gauge defined by [`ConfigHandle::define_gauge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gauge {
    id: usize,
    labels: usize,
}

/// A histogram defined by [`ConfigHandle::define_histogram`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Histogram {
    id: usize,
    labels: usize,
}

/// Why a metric call failed (`envoy_dynamic_module_type_metrics_result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsError {
    NotFound,
    /// Wrong number of label values (checked here before Envoy sees them), or bad labels.
    InvalidLabels,
    /// Metrics can only be defined while the config is being created.
    Frozen,
    Other(u32),
}

impl MetricsError {
    fn from_code(code: u32) -> Result<(), MetricsError> {
        match code {
            0 => Ok(()),
            1 => Err(MetricsError::NotFound),
            2 => Err(MetricsError::InvalidLabels),
            3 => Err(MetricsError::Frozen),
            n => Err(MetricsError::Other(n)),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Callouts.
// ------------------------------------------------------------------------------------------

/// How a callout ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalloutResult {
    Success,
    Reset,
    ExceedResponseBufferLimit,
    Other(u32),
}

impl From<u32> for CalloutResult {
    fn from(code: u32) -> Self {
        match code {
            0 => CalloutResult::Success,
            1 => CalloutResult::Reset,
            2 => CalloutResult::ExceedResponseBufferLimit,
            n => CalloutResult::Other(n),
        }
    }
}

/// Why a callout could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalloutError {
    /// `:method`, `:path` and `host` (or `:authority`) are required.
    MissingRequiredHeaders,
    ClusterNotFound,
    DuplicateCalloutId,
    /// E.g. no healthy host.
    CannotCreateRequest,
    Other(u32),
}

impl From<u32> for CalloutError {
    fn from(code: u32) -> Self {
        match code {
            1 => CalloutError::MissingRequiredHeaders,
            2 => CalloutError::ClusterNotFound,
            3 => CalloutError::DuplicateCalloutId,
            4 => CalloutError::CannotCreateRequest,
            n => CalloutError::Other(n),
        }
    }
}

/// A callout's answer, valid during the `*_callout_done` hook.
#[derive(Debug)]
pub struct CalloutResponse<'a> {
    /// Response headers in order, `:status` included.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    /// Body slices in order.
    pub body: Vec<&'a [u8]>,
}

impl CalloutResponse<'_> {
    /// First value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| *v)
    }

    /// `:status` as a number.
    pub fn status(&self) -> Option<u32> {
        std::str::from_utf8(self.header(":status")?)
            .ok()?
            .parse()
            .ok()
    }

    /// The whole body, copied into one buffer.
    pub fn body_bytes(&self) -> Vec<u8> {
        self.body.concat()
    }
}

// ------------------------------------------------------------------------------------------
// Logging.
// ------------------------------------------------------------------------------------------

/// Logs through Envoy (`[dynamic_modules]` component; enable with e.g.
/// `--component-log-level dynamic_modules:debug`). Callable from any thread.
pub fn log(level: Level, message: &str) {
    crate::abi::log(level, message.as_bytes());
}

/// Whether `level` is enabled for the `dynamic_modules` component (cheap; use it to skip
/// formatting).
pub fn log_enabled(level: Level) -> bool {
    crate::abi::log_enabled(level)
}

// ------------------------------------------------------------------------------------------
// What a module implements.
// ------------------------------------------------------------------------------------------

/// One filter entry of Envoy's configuration (`DynamicModuleFilter` with this module's
/// `filter_name`). Created on the main thread by `crate::filters::new_http_filter_config`,
/// shared by every worker, dropped on the main thread when Envoy drops the config. Use
/// interior mutability (atomics, `Mutex`) for shared state.
pub trait FilterConfig: Send + Sync {
    /// A new filter for one stream (worker thread). For a router `upstream_http_filters`
    /// entry this runs once per attempt.
    fn new_filter(&self) -> Box<dyn Filter>;

    /// Main thread, after [`ConfigScheduler::commit`] (see `crate::ticker::Ticker` for
    /// periodic work).
    fn on_scheduled(&self, _config: &mut ConfigHandle<'_>, _event_id: u64) {}

    /// Main thread, when a [`ConfigHandle::http_callout`] ends. `response` is `None` when the
    /// call failed (reset, timeout, buffer limit).
    fn on_http_callout_done(
        &self,
        _config: &mut ConfigHandle<'_>,
        _callout_id: u64,
        _result: CalloutResult,
        _response: Option<&CalloutResponse<'_>>,
    ) {
    }

    /// Main thread, for each event of a stream started with
    /// [`ConfigHandle::start_http_stream`]. It ends with `Complete` or `Reset`.
    fn on_http_stream(
        &self,
        _config: &mut ConfigHandle<'_>,
        _stream_id: u64,
        _event: HttpStreamEvent<'_>,
    ) {
    }
}

/// What happened on a config-level HTTP stream.
#[derive(Debug)]
pub enum HttpStreamEvent<'a> {
    /// Response headers (`:status` included); `true` when they end the stream.
    Headers(&'a [(Vec<u8>, Vec<u8>)], bool),
    /// Response body bytes; `true` when they end the stream.
    Data(&'a [u8], bool),
    /// Response trailers (they end the stream).
    Trailers(&'a [(Vec<u8>, Vec<u8>)]),
    /// The stream ended normally.
    Complete,
    /// The stream was reset (the ABI's reason code).
    Reset(u32),
}

/// One stream (downstream filter) or one attempt (upstream filter). All hooks run on the
/// stream's worker thread, never concurrently; dropping the box is Envoy's "destroy".
/// Every hook has a pass-through default.
pub trait Filter {
    fn on_request_headers(&mut self, _s: &mut Stream<'_>, _end_of_stream: bool) -> HeadersStatus {
        HeadersStatus::Continue
    }
    fn on_request_body(&mut self, _s: &mut Stream<'_>, _end_of_stream: bool) -> BodyStatus {
        BodyStatus::Continue
    }
    fn on_request_trailers(&mut self, _s: &mut Stream<'_>) -> TrailersStatus {
        TrailersStatus::Continue
    }
    fn on_response_headers(&mut self, _s: &mut Stream<'_>, _end_of_stream: bool) -> HeadersStatus {
        HeadersStatus::Continue
    }
    fn on_response_body(&mut self, _s: &mut Stream<'_>, _end_of_stream: bool) -> BodyStatus {
        BodyStatus::Continue
    }
    fn on_response_trailers(&mut self, _s: &mut Stream<'_>) -> TrailersStatus {
        TrailersStatus::Continue
    }
    /// The stream is over (response sent or stream reset), before access logs: the place for
    /// end-of-request accounting (like proxy-wasm's `on_log`). Response headers and
    /// attributes such as `RESPONSE_CODE` / `RESPONSE_CODE_DETAILS` are readable.
    ///
    /// Envoy 1.40 does **not** call this for a router `upstream_http_filters` instance: an
    /// attempt ends when its filter is dropped (implement `Drop`, which has no `Stream`).
    /// Not called either after this filter panicked.
    fn on_stream_complete(&mut self, _s: &mut Stream<'_>) {}
    /// A [`Stream::http_callout`] ended.
    fn on_http_callout_done(
        &mut self,
        _s: &mut Stream<'_>,
        _callout_id: u64,
        _result: CalloutResult,
        _response: Option<&CalloutResponse<'_>>,
    ) {
    }
    /// Woken through a [`FilterScheduler`].
    fn on_scheduled(&mut self, _s: &mut Stream<'_>, _event_id: u64) {}
    /// Envoy (or a filter) is sending a local reply on this stream. Observation only. Not
    /// called for the local replies this filter sends itself.
    fn on_local_reply(
        &mut self,
        _s: &mut Stream<'_>,
        _status: u32,
        _details: &[u8],
        _reset_imminent: bool,
    ) {
    }
}

/// A cluster chooser for a route (`envoy.router.cluster_specifier_plugin.dynamic_modules`).
/// Runs on a worker when the route is resolved, again when a filter clears the route
/// (cluster) cache, and again for each retry when `refresh_cluster_on_retry` is set.
pub trait ClusterSpecifier: Send + Sync {
    /// Choose with [`RouteContext::set_cluster`] and return `true`; `false` keeps the previous
    /// choice (for the first selection: no cluster, the router answers 503/404).
    fn select(&self, route: &mut RouteContext<'_>) -> bool;
}

// ------------------------------------------------------------------------------------------
// Handles.
// ------------------------------------------------------------------------------------------

/// The stream of the current hook.
pub struct Stream<'a> {
    raw: &'a mut RawStream,
}

impl<'a> Stream<'a> {
    pub(crate) fn new(raw: &'a mut RawStream) -> Stream<'a> {
        Stream { raw }
    }

    // ---- headers ----

    /// First value of header `name` (lower-case) in `map`.
    pub fn header(&self, map: HeaderMap, name: &str) -> Option<&[u8]> {
        self.raw.header(map as u32, name.as_bytes(), 0).0
    }

    /// Every value of header `name` in `map`.
    pub fn header_values(&self, map: HeaderMap, name: &str) -> Vec<&[u8]> {
        let (first, count) = self.raw.header(map as u32, name.as_bytes(), 0);
        let mut out: Vec<&[u8]> = first.into_iter().collect();
        for i in 1..count {
            if let Some(v) = self.raw.header(map as u32, name.as_bytes(), i).0 {
                out.push(v);
            }
        }
        out
    }

    /// All entries of `map` in order, in one host call.
    pub fn headers(&self, map: HeaderMap) -> Vec<(&[u8], &[u8])> {
        self.raw.headers(map as u32)
    }

    /// Replaces every value of `name` (adds it if absent). Pseudo-headers (`:path`,
    /// `:status`, ...) included. `false` when the map is not available in this phase.
    ///
    /// In a router `upstream_http_filters` instance the request map is the *downstream*
    /// request's: an edit stays for the next attempt (its filter sees the edited headers)
    /// and in what downstream filters and access logs see. Derive per-attempt values from
    /// originals kept elsewhere (e.g. filter state), never from the current value. Body edits
    /// do not carry over: each retry gets the router's copy of the original body.
    pub fn set_header(&mut self, map: HeaderMap, name: &str, value: &[u8]) -> bool {
        self.raw
            .set_header(map as u32, name.as_bytes(), Some(value))
    }

    /// Appends a value to `name`.
    pub fn add_header(&mut self, map: HeaderMap, name: &str, value: &[u8]) -> bool {
        self.raw.add_header(map as u32, name.as_bytes(), value)
    }

    /// Removes every value of `name` (the ABI's "set with a null value").
    pub fn remove_header(&mut self, map: HeaderMap, name: &str) -> bool {
        self.raw.set_header(map as u32, name.as_bytes(), None)
    }

    /// Shorthand for `header(RequestHeaders, name)`.
    pub fn request_header(&self, name: &str) -> Option<&[u8]> {
        self.header(HeaderMap::RequestHeaders, name)
    }

    /// Shorthand for `header(ResponseHeaders, name)`.
    pub fn response_header(&self, name: &str) -> Option<&[u8]> {
        self.header(HeaderMap::ResponseHeaders, name)
    }

    /// Shorthand for `set_header(RequestHeaders, ..)`.
    pub fn set_request_header(&mut self, name: &str, value: &[u8]) -> bool {
        self.set_header(HeaderMap::RequestHeaders, name, value)
    }

    /// Shorthand for `set_header(ResponseHeaders, ..)`.
    pub fn set_response_header(&mut self, name: &str, value: &[u8]) -> bool {
        self.set_header(HeaderMap::ResponseHeaders, name, value)
    }

    // ---- bodies ----

    /// Size in bytes of one body buffer (0 when absent).
    pub fn body_size(&self, kind: BodyKind) -> usize {
        self.raw.body_size(kind as u32)
    }

    /// The slices of one body buffer, without copying; `None` when Envoy has no such buffer
    /// in this phase.
    pub fn body_chunks(&self, kind: BodyKind) -> Option<Vec<&[u8]>> {
        self.raw.body_chunks(kind as u32)
    }

    /// One body buffer, copied into one `Vec` (empty when absent).
    pub fn body_bytes(&self, kind: BodyKind) -> Vec<u8> {
        self.raw
            .body_chunks(kind as u32)
            .map(|c| c.concat())
            .unwrap_or_default()
    }

    /// The whole request body, copied: the buffered part plus the current chunk, or only the
    /// buffer when the current chunk is the buffer. Complete when called from
    /// `on_request_body(.., end_of_stream = true)` if every earlier body hook of this filter
    /// returned `StopIterationAndBuffer` (or an earlier filter buffered the whole body).
    pub fn request_body(&self) -> Vec<u8> {
        self.whole_body(true)
    }

    /// As [`Stream::request_body`], for the response.
    pub fn response_body(&self) -> Vec<u8> {
        self.whole_body(false)
    }

    fn whole_body(&self, request: bool) -> Vec<u8> {
        let (buffered, received) = if request {
            (BodyKind::BufferedRequest, BodyKind::ReceivedRequest)
        } else {
            (BodyKind::BufferedResponse, BodyKind::ReceivedResponse)
        };
        let mut out = self.body_bytes(buffered);
        if !self.raw.received_buffered_body(request) {
            out.extend_from_slice(&self.body_bytes(received));
        }
        out
    }

    /// Replaces the whole request body with `data` (same conditions as
    /// [`Stream::request_body`]): drains the buffered part and the current chunk, then puts
    /// `data` where Envoy sends from (the buffer if there is one, else the current chunk).
    /// Set `content-length` yourself while the headers are held. `false` if Envoy refused.
    pub fn replace_request_body(&mut self, data: &[u8]) -> bool {
        self.replace_body(true, data)
    }

    /// As [`Stream::replace_request_body`], for the response.
    pub fn replace_response_body(&mut self, data: &[u8]) -> bool {
        self.replace_body(false, data)
    }

    fn replace_body(&mut self, request: bool, data: &[u8]) -> bool {
        let (buffered, received) = if request {
            (BodyKind::BufferedRequest, BodyKind::ReceivedRequest)
        } else {
            (BodyKind::BufferedResponse, BodyKind::ReceivedResponse)
        };
        let same = self.raw.received_buffered_body(request);
        let buffered_size = self.body_size(buffered);
        let received_size = self.body_size(received);
        let mut ok = true;
        if buffered_size > 0 {
            ok &= self.drain_body(buffered, buffered_size);
        }
        if !same && received_size > 0 {
            ok &= self.drain_body(received, received_size);
        }
        // The data goes where Envoy will send it on: the buffer when there is one (this
        // filter buffered earlier chunks), otherwise the current chunk.
        let target = if buffered_size > 0 || same {
            buffered
        } else {
            received
        };
        ok && self.append_body(target, data)
    }

    /// Appends to one body buffer.
    pub fn append_body(&mut self, kind: BodyKind, data: &[u8]) -> bool {
        self.raw.append_body(kind as u32, data)
    }

    /// Removes `bytes` from the front of one body buffer.
    pub fn drain_body(&mut self, kind: BodyKind, bytes: usize) -> bool {
        self.raw.drain_body(kind as u32, bytes)
    }

    /// Whether the current request chunk *is* the buffered body (an earlier filter buffered
    /// and then resumed).
    pub fn received_is_buffered_request_body(&self) -> bool {
        self.raw.received_buffered_body(true)
    }

    /// As above, for the response.
    pub fn received_is_buffered_response_body(&self) -> bool {
        self.raw.received_buffered_body(false)
    }

    /// Envoy's buffer limit for this stream (bytes; 0 = none).
    pub fn buffer_limit(&self) -> u64 {
        self.raw.buffer_limit()
    }

    /// Raises (or lowers) the buffer limit for this stream.
    pub fn set_buffer_limit(&mut self, limit: u64) {
        self.raw.set_buffer_limit(limit);
    }

    // ---- filter state, metadata, attributes ----

    /// Sets filter state `key` to `value` (a plain string object). A route's
    /// `envoy.extensions.matching.common_inputs.network.v3.FilterStateInput { key }` sees it
    /// under exactly `key`, no prefix (docs/native-module.md b); upstream filters of the same request
    /// read it too. `false` if the key exists read-only.
    pub fn set_filter_state(&mut self, key: &str, value: &[u8]) -> bool {
        self.raw.set_filter_state(key.as_bytes(), value)
    }

    /// Filter state `key`, if it holds bytes.
    pub fn filter_state(&self, key: &str) -> Option<&[u8]> {
        self.raw.filter_state(key.as_bytes())
    }

    /// Sets dynamic metadata `ns.key` to a string (readable by a [`ClusterSpecifier`] through
    /// [`RouteContext::dynamic_metadata`], by access logs, ...).
    pub fn set_metadata_string(&mut self, ns: &str, key: &str, value: &[u8]) {
        self.raw
            .set_metadata_string(ns.as_bytes(), key.as_bytes(), value);
    }

    /// A string from metadata (`source` = stream's dynamic metadata, route, cluster, host...).
    pub fn metadata_string(&self, source: MetadataSource, ns: &str, key: &str) -> Option<&[u8]> {
        self.raw
            .metadata_string(source as u32, ns.as_bytes(), key.as_bytes())
    }

    /// An attribute as a string (`None` when absent or not a string). docs/native-module.md lists which
    /// ids answer in which phase (e.g. `UPSTREAM_ADDRESS` per attempt in upstream filters;
    /// `XDS_NODE` and `XDS_UPSTREAM_HOST_METADATA` never: use [`Stream::metadata_string`]
    /// with [`MetadataSource::Host`] for endpoint metadata).
    pub fn attribute_string(&self, attribute: Attribute) -> Option<&[u8]> {
        self.raw.attribute_string(attribute.0)
    }

    /// An attribute as an integer (`None` when absent or not an integer).
    pub fn attribute_int(&self, attribute: Attribute) -> Option<u64> {
        self.raw.attribute_int(attribute.0)
    }

    /// The cluster of the current route. Downstream filter: the route's choice now; the call
    /// resolves the route if nothing did yet (and so runs a cluster specifier), and the
    /// result is then cached until [`Stream::clear_route_cache`]. Upstream filter: this
    /// attempt's cluster (correct per attempt).
    pub fn cluster_name(&self) -> Option<&[u8]> {
        self.raw.cluster_name()
    }

    /// Which worker runs this stream (0-based).
    pub fn worker_index(&self) -> u32 {
        self.raw.worker_index()
    }

    // ---- routing and flow ----

    /// Makes Envoy resolve the route again (after headers/filter state that a route matches
    /// on changed). Required: a route resolved earlier (by anyone asking for it, e.g.
    /// [`Stream::cluster_name`]) is otherwise kept. Works from a body hook while the headers
    /// are held. Downstream filters only.
    pub fn clear_route_cache(&mut self) {
        self.raw.clear_route_cache();
    }

    /// Re-runs only the cluster choice of the current route.
    pub fn clear_route_cluster_cache(&mut self) {
        self.raw.clear_route_cluster_cache();
    }

    /// Answers the stream locally (status, headers, body, details string for logs). The hook
    /// should then return a stop status. In an upstream filter this ends the attempt *and* the
    /// request: the router does not retry a local reply (docs/native-module.md c).
    pub fn send_response(
        &mut self,
        status: u32,
        headers: &[(&str, &[u8])],
        body: &[u8],
        details: &str,
    ) {
        let headers: Vec<(&[u8], &[u8])> =
            headers.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
        self.raw
            .send_response(status, &headers, body, details.as_bytes());
    }

    /// Resumes request processing held by an earlier stop status (from a callout or
    /// scheduled hook; from a body hook, return `Continue` instead).
    pub fn continue_decoding(&mut self) {
        self.raw.continue_decoding();
    }

    /// Resumes response processing held by an earlier stop status.
    pub fn continue_encoding(&mut self) {
        self.raw.continue_encoding();
    }

    /// A buffered HTTP call to `cluster`; the answer arrives in
    /// [`Filter::on_http_callout_done`]. `headers` must include `:method`, `:path` and
    /// `host`.
    pub fn http_callout(
        &mut self,
        cluster: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, CalloutError> {
        let headers: Vec<(&[u8], &[u8])> =
            headers.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
        self.raw
            .http_callout(cluster.as_bytes(), &headers, body, timeout_ms)
            .map_err(CalloutError::from)
    }

    /// A scheduler that wakes this filter ([`Filter::on_scheduled`]) from any thread; a
    /// no-op once the stream is gone.
    pub fn scheduler(&self) -> Option<FilterScheduler> {
        self.raw.scheduler()
    }

    // ---- metrics ----

    pub fn increment_counter(
        &self,
        counter: Counter,
        labels: &[&str],
        value: u64,
    ) -> Result<(), MetricsError> {
        check_labels(counter.labels, labels)?;
        MetricsError::from_code(self.raw.metric(
            MetricOp::IncrementCounter,
            counter.id,
            labels,
            value,
        ))
    }

    pub fn increment_gauge(
        &self,
        gauge: Gauge,
        labels: &[&str],
        value: u64,
    ) -> Result<(), MetricsError> {
        check_labels(gauge.labels, labels)?;
        MetricsError::from_code(
            self.raw
                .metric(MetricOp::IncrementGauge, gauge.id, labels, value),
        )
    }

    pub fn decrement_gauge(
        &self,
        gauge: Gauge,
        labels: &[&str],
        value: u64,
    ) -> Result<(), MetricsError> {
        check_labels(gauge.labels, labels)?;
        MetricsError::from_code(
            self.raw
                .metric(MetricOp::DecrementGauge, gauge.id, labels, value),
        )
    }

    pub fn set_gauge(&self, gauge: Gauge, labels: &[&str], value: u64) -> Result<(), MetricsError> {
        check_labels(gauge.labels, labels)?;
        MetricsError::from_code(self.raw.metric(MetricOp::SetGauge, gauge.id, labels, value))
    }

    pub fn record_histogram(
        &self,
        histogram: Histogram,
        labels: &[&str],
        value: u64,
    ) -> Result<(), MetricsError> {
        check_labels(histogram.labels, labels)?;
        MetricsError::from_code(self.raw.metric(
            MetricOp::RecordHistogram,
            histogram.id,
            labels,
            value,
        ))
    }
}

fn check_labels(defined: usize, given: &[&str]) -> Result<(), MetricsError> {
    if defined == given.len() {
        Ok(())
    } else {
        Err(MetricsError::InvalidLabels)
    }
}

/// The filter config of the current config hook (main thread).
pub struct ConfigHandle<'a> {
    raw: &'a mut RawConfig,
}

impl<'a> ConfigHandle<'a> {
    pub(crate) fn new(raw: &'a mut RawConfig) -> ConfigHandle<'a> {
        ConfigHandle { raw }
    }

    /// Defines a counter named `name` with positional `labels` (only while the config is
    /// being created: later calls fail with `Frozen`). See docs/native-module.md for the stat names.
    pub fn define_counter(&mut self, name: &str, labels: &[&str]) -> Result<Counter, MetricsError> {
        self.raw
            .define_metric(MetricKind::Counter, name, labels)
            .map(|id| Counter {
                id,
                labels: labels.len(),
            })
            .map_err(|c| {
                MetricsError::from_code(c)
                    .err()
                    .unwrap_or(MetricsError::Other(c))
            })
    }

    pub fn define_gauge(&mut self, name: &str, labels: &[&str]) -> Result<Gauge, MetricsError> {
        self.raw
            .define_metric(MetricKind::Gauge, name, labels)
            .map(|id| Gauge {
                id,
                labels: labels.len(),
            })
            .map_err(|c| {
                MetricsError::from_code(c)
                    .err()
                    .unwrap_or(MetricsError::Other(c))
            })
    }

    pub fn define_histogram(
        &mut self,
        name: &str,
        labels: &[&str],
    ) -> Result<Histogram, MetricsError> {
        self.raw
            .define_metric(MetricKind::Histogram, name, labels)
            .map(|id| Histogram {
                id,
                labels: labels.len(),
            })
            .map_err(|c| {
                MetricsError::from_code(c)
                    .err()
                    .unwrap_or(MetricsError::Other(c))
            })
    }

    pub fn increment_counter(
        &self,
        counter: Counter,
        labels: &[&str],
        value: u64,
    ) -> Result<(), MetricsError> {
        check_labels(counter.labels, labels)?;
        MetricsError::from_code(self.raw.metric(
            MetricOp::IncrementCounter,
            counter.id,
            labels,
            value,
        ))
    }

    pub fn set_gauge(&self, gauge: Gauge, labels: &[&str], value: u64) -> Result<(), MetricsError> {
        check_labels(gauge.labels, labels)?;
        MetricsError::from_code(self.raw.metric(MetricOp::SetGauge, gauge.id, labels, value))
    }

    pub fn record_histogram(
        &self,
        histogram: Histogram,
        labels: &[&str],
        value: u64,
    ) -> Result<(), MetricsError> {
        check_labels(histogram.labels, labels)?;
        MetricsError::from_code(self.raw.metric(
            MetricOp::RecordHistogram,
            histogram.id,
            labels,
            value,
        ))
    }

    /// A buffered HTTP call to `cluster` from the config (e.g. to the control plane);
    /// answered in [`FilterConfig::on_http_callout_done`] on the main thread. Proven from
    /// `on_scheduled`; do not start one while the config is being created (clusters may not
    /// exist yet). Not a stream: see [`ConfigHandle::start_http_stream`].
    pub fn http_callout(
        &mut self,
        cluster: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, CalloutError> {
        let headers: Vec<(&[u8], &[u8])> =
            headers.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
        self.raw
            .http_callout(cluster.as_bytes(), &headers, body, timeout_ms)
            .map_err(CalloutError::from)
    }

    /// Starts a streaming HTTP request to `cluster` whose request side stays open; events come
    /// to [`FilterConfig::on_http_stream`] on the main thread. `timeout_ms` 0: none.
    pub fn start_http_stream(
        &mut self,
        cluster: &str,
        headers: &[(&str, &[u8])],
        timeout_ms: u64,
    ) -> Result<u64, CalloutError> {
        let headers: Vec<(&[u8], &[u8])> =
            headers.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
        self.raw
            .start_http_stream(cluster.as_bytes(), &headers, timeout_ms)
            .map_err(CalloutError::from)
    }

    /// Sends request body bytes on a stream; `false` when it is gone.
    pub fn stream_send_data(&mut self, stream_id: u64, data: &[u8]) -> bool {
        self.raw.stream_send_data(stream_id, data, false)
    }

    /// Resets a stream.
    pub fn reset_http_stream(&mut self, stream_id: u64) {
        self.raw.reset_http_stream(stream_id);
    }

    /// A scheduler that wakes this config ([`FilterConfig::on_scheduled`]) on the main thread
    /// from any thread. Keep it in the config; drop it (and stop threads using it) before or
    /// when the config is dropped.
    pub fn scheduler(&self) -> Option<ConfigScheduler> {
        self.raw.scheduler()
    }
}

/// The request being routed, during [`ClusterSpecifier::select`].
pub struct RouteContext<'a> {
    raw: &'a mut RawRoute,
}

impl<'a> RouteContext<'a> {
    pub(crate) fn new(raw: &'a mut RawRoute) -> RouteContext<'a> {
        RouteContext { raw }
    }

    /// First value of request header `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.raw.header(name.as_bytes(), 0).0
    }

    /// All request headers.
    pub fn headers(&self) -> Vec<(&[u8], &[u8])> {
        self.raw.headers()
    }

    pub fn attribute_string(&self, attribute: Attribute) -> Option<&[u8]> {
        self.raw.attribute_string(attribute.0)
    }

    pub fn attribute_int(&self, attribute: Attribute) -> Option<u64> {
        self.raw.attribute_int(attribute.0)
    }

    /// Dynamic metadata `ns` / `path` as a string (what a downstream filter set with
    /// [`Stream::set_metadata_string`]). There is no filter-state read in this context.
    pub fn dynamic_metadata(&self, ns: &str, path: &str) -> Option<&[u8]> {
        self.raw.dynamic_metadata(ns.as_bytes(), path.as_bytes())
    }

    pub fn route_name(&self) -> Option<&[u8]> {
        self.raw.route_name()
    }

    /// The attempt this selection is for: 1 for the initial route resolution (and for
    /// re-resolutions after `clear_route_cache`), k for the k-th attempt when the router
    /// re-selects on retry (`refresh_cluster_on_retry`). From the attribute
    /// `upstream.request_attempt_count`, which is 0 before the first attempt and already k
    /// during the re-selection for attempt k, whereas the `x-envoy-attempt-count` header still
    /// holds k-1 then (docs/native-module.md d).
    pub fn attempt(&self) -> u32 {
        let n = self
            .attribute_int(Attribute::UPSTREAM_REQUEST_ATTEMPT_COUNT)
            .unwrap_or(0);
        u32::try_from(n).unwrap_or(u32::MAX).max(1)
    }

    /// The route's random value (stable for the request).
    pub fn random_value(&self) -> u64 {
        self.raw.random_value()
    }

    /// Chooses the cluster.
    pub fn set_cluster(&mut self, name: &str) {
        self.raw.set_cluster_name(name.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callout_response_helpers() {
        let r = CalloutResponse {
            headers: vec![(b":status", b"503"), (b"x-a", b"1")],
            body: vec![b"ab", b"c"],
        };
        assert_eq!(r.status(), Some(503));
        assert_eq!(r.header("x-a"), Some(&b"1"[..]));
        assert_eq!(r.header("x-b"), None);
        assert_eq!(r.body_bytes(), b"abc");
    }

    #[test]
    fn abi_codes_map() {
        assert_eq!(MetricsError::from_code(0), Ok(()));
        assert_eq!(MetricsError::from_code(3), Err(MetricsError::Frozen));
        assert_eq!(CalloutError::from(2), CalloutError::ClusterNotFound);
        assert_eq!(CalloutResult::from(1), CalloutResult::Reset);
        assert_eq!(check_labels(1, &["x"]), Ok(()));
        assert_eq!(check_labels(1, &[]), Err(MetricsError::InvalidLabels));
        assert_eq!(HeadersStatus::StopIteration as u32, 1);
        assert_eq!(BodyStatus::StopIterationAndBuffer as u32, 1);
        assert_eq!(BodyKind::BufferedResponse as u32, 3);
    }
}

//! The seam between Switchyard's filter logic and the Envoy it runs in.
//!
//! Planner, adapter and the background tasks talk to Envoy only through
//! [`Host`]; two implementations exist — proxy-wasm (`filter/wasm`, sandboxed,
//! portable to Istio) and a native dynamic module (`filter/native`, fast) — plus an
//! in-memory one for unit tests ([`crate::testing`]). A host handle given to a
//! callback is only meant for that callback.

pub use crate::metrics::{Counter, Gauge, Histogram};

/// Which header map of the current stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Map {
    /// The request headers (shared by every attempt of a request).
    Request,
    /// The response headers of the current answer.
    Response,
}

/// Which body of the current stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// The request body.
    Request,
    /// The response body.
    Response,
}

/// What a filter callback tells Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Go on to the next filter.
    Continue,
    /// Hold: headers until the body callbacks resume them (a plain
    /// `StopIteration`, body callbacks keep arriving), bodies buffered until the
    /// end of the stream.
    Pause,
}

/// Outcome of a compare-and-swap write of shared state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cas {
    /// Written.
    Done,
    /// Someone wrote in between: read again.
    Conflict,
    /// The host refused.
    Failed,
}

/// Envoy, as the filter logic sees it.
pub trait Host {
    // === the current stream ===

    /// The first value of header `name` (lower-case), lossily decoded.
    fn header(&self, map: Map, name: &str) -> Option<String>;
    /// Every header, lower-case names, values as sent.
    fn headers(&self, map: Map) -> Vec<(String, Vec<u8>)>;
    /// Sets (or with `None` removes) header `name`.
    fn set_header(&self, map: Map, name: &str, value: Option<&str>);
    /// Replaces the whole map.
    fn replace_headers(&self, map: Map, pairs: &[(String, Vec<u8>)]);
    /// The body bytes this callback sees: the current chunk, or the whole body
    /// when the filter held it until the end of the stream.
    fn body(&self, which: Body) -> Vec<u8>;
    /// Replaces what [`Host::body`] returned.
    fn replace_body(&self, which: Body, bytes: &[u8]);
    /// Sets filter state `key` (a string) that the route's matcher can read.
    fn set_filter_state(&self, key: &str, value: &str) -> bool;
    /// The cluster the current upstream attempt runs in.
    fn upstream_cluster(&self) -> Option<String>;
    /// Envoy's response code details (why a request ended without an answer).
    fn response_code_details(&self) -> Option<String>;
    /// Makes the router resolve the route again (after filter state changed).
    fn clear_route_cache(&self) -> bool;
    /// Answers the stream locally.
    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]);
    /// Resumes a response the filter held (from outside its body callback: the
    /// answer of an HTTP call the stream made).
    fn resume_response(&self);

    // === the process ===

    /// Envoy's node id, when the host can read it (empty otherwise). The fleet
    /// exchange uses the id the control plane stamps into the config first.
    fn node_id(&self) -> String;
    /// Wall-clock milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// A value of the state all workers share, with its compare-and-swap token.
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes a shared value; with `cas`, only if nobody wrote since it was read.
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Cas;
    /// Adds `delta` to a counter; `labels` are its label values, in the order of
    /// its [`crate::metrics::Metric::labels`].
    fn count(&self, counter: Counter, labels: &[&str], delta: u64);
    /// Sets a gauge.
    fn gauge(&self, gauge: Gauge, labels: &[&str], value: u64);
    /// Records a histogram value.
    fn record(&self, histogram: Histogram, labels: &[&str], value: u64);
    /// Starts an HTTP call to `cluster`; its answer comes back to whoever made it
    /// (the background task, or the stream). `None` when it could not be started.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Option<u32>;

    /// Opens a gRPC stream to `service`/`method` through `cluster` (HTTP/2);
    /// its messages and its end come back to the root context. `None` when it
    /// could not be opened (or the host has no such streams).
    fn grpc_stream_open(&self, _cluster: &str, _service: &str, _method: &str) -> Option<u32> {
        None
    }

    /// Sends one message (the protobuf bytes) on an open stream; `false` when
    /// the stream is gone.
    fn grpc_stream_send(&self, _token: u32, _message: &[u8]) -> bool {
        false
    }

    /// Ends a stream (no callback follows).
    fn grpc_stream_cancel(&self, _token: u32) {}
}

// === derived helpers (every host gets them) ===

/// Seconds since the Unix epoch, for OpenAI's `created` fields.
pub fn unix_now(host: &impl Host) -> u64 {
    host.now_ms() / 1000
}

/// Sends a JSON local reply carrying the request id.
pub fn send_json(host: &impl Host, status: u16, request_id: &str, body: &[u8]) {
    let mut headers = vec![("content-type", "application/json")];
    if !request_id.is_empty() {
        headers.push(("x-request-id", request_id));
    }
    host.send_response(status, &headers, body);
}

/// Applies `f` to a shared value atomically: compare-and-swap, retried a few
/// times. `f` gets the current bytes (empty when unset) and returns the new ones,
/// or `None` to leave the value as it is. Returns whether the value is now `f`'s.
pub fn shared_update(host: &impl Host, key: &str, f: impl Fn(&[u8]) -> Option<Vec<u8>>) -> bool {
    for _ in 0..8 {
        let (current, cas) = host.shared_get(key);
        let Some(next) = f(current.as_deref().unwrap_or_default()) else {
            return true;
        };
        match host.shared_set(key, &next, cas) {
            Cas::Done => return true,
            Cas::Conflict => continue,
            Cas::Failed => return false,
        }
    }
    false
}

/// A shared value as text (empty when unset or not UTF-8).
pub fn shared_text(host: &impl Host, key: &str) -> String {
    host.shared_get(key)
        .0
        .and_then(|v| String::from_utf8(v).ok())
        .unwrap_or_default()
}

thread_local! {
    static RNG: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A uniform draw in [0, 1) (xorshift64*, per worker, seeded from the clock on
/// first use; for spreading load, not for secrets).
pub fn random_unit(host: &impl Host) -> f64 {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            // The clock, and this worker's slot address so that workers started in
            // the same millisecond draw differently.
            let slot = std::ptr::from_ref(r) as usize as u64;
            x = (host.now_ms() ^ slot.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    })
}

//! Host calls that cannot panic on hostile input.
//!
//! The SDK's convenience methods unwrap: a non-UTF-8 header value or a missing
//! property would abort the VM, turning every later request into a 503. Everything
//! the filter reads from the host goes through here.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};

/// All request headers in one host call (lower-case names, values as sent): one
/// crossing instead of one per header read.
#[derive(Debug, Default)]
pub struct Headers(pub Vec<(String, Vec<u8>)>);

impl Headers {
    /// The current request headers.
    pub fn request() -> Headers {
        Headers(hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default())
    }

    /// The first value of `name`, lossily decoded.
    pub fn get(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v))
    }

    /// Whether `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

/// Replaces the whole request header map in one host call.
pub fn replace_request_headers(pairs: &[(String, Vec<u8>)]) -> bool {
    let pairs: Vec<(&str, &[u8])> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    hostcalls::set_map_bytes(MapType::HttpRequestHeaders, pairs).is_ok()
}

/// A request header, lossily decoded.
pub fn request_header(name: &str) -> Option<String> {
    header(MapType::HttpRequestHeaders, name)
}

/// A response header, lossily decoded.
pub fn response_header(name: &str) -> Option<String> {
    header(MapType::HttpResponseHeaders, name)
}

fn header(map: MapType, name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(map, name) {
        Ok(Some(v)) => Some(String::from_utf8_lossy(&v).into_owned()),
        _ => None,
    }
}

/// Sets (or with `None` removes) a request header. Only valid before the header
/// phase returned `Continue`.
pub fn set_request_header(name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
}

/// Sets (or with `None` removes) a response header. Only valid in the response
/// header phase.
pub fn set_response_header(name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value);
}

/// `size` bytes of a body buffer from offset 0.
pub fn body(kind: BufferType, size: usize) -> Vec<u8> {
    hostcalls::get_buffer(kind, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Replaces the first `size` bytes of a body buffer with `value`.
pub fn replace_body(kind: BufferType, size: usize, value: &[u8]) {
    let _ = hostcalls::set_buffer(kind, 0, size, value);
}

/// A property (attribute) of the stream; `None` when absent or unreadable.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

/// Writes filter state `wasm.<key>` that Envoy filters after this one can read.
pub fn set_filter_state(key: &str, value: &str) -> bool {
    hostcalls::set_property(vec![key], Some(value.as_bytes())).is_ok()
}

/// The plugin configuration bytes.
pub fn plugin_configuration() -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
}

thread_local! {
    static RNG: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A uniform draw in [0, 1) (xorshift64*, seeded from the host clock on first use;
/// for spreading load, not for secrets).
pub fn random_unit() -> f64 {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            x = hostcalls::get_current_time()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9E37_79B9_7F4A_7C15)
                | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch, for OpenAI's `created` fields.
pub fn unix_now() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sends a JSON local reply carrying the request id.
pub fn send_json(status: u32, request_id: &str, body: &[u8]) {
    let mut headers = vec![("content-type", "application/json")];
    if !request_id.is_empty() {
        headers.push(("x-request-id", request_id));
    }
    let _ = hostcalls::send_http_response(status, headers, Some(body));
}

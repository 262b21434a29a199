//! `limits:`: request sizes and attempts, how long a client may take to send a
//! request, and what one Envoy holds at once (connections, heap).

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    #[serde(default = "default_max_request_bytes")]
    pub(super) max_request_bytes: usize,
    #[serde(default = "default_max_attempts")]
    pub(super) max_attempts: usize,
    /// An attempt with no bytes from its provider for this long fails: retried
    /// before the answer started, reset after. None: Envoy's 5-minute stream idle.
    #[serde(default)]
    pub(super) stream_idle_timeout_ms: Option<u64>,
    /// A request's headers must arrive within this time of their first byte.
    #[serde(default = "default_request_headers_timeout_ms")]
    pub(super) request_headers_timeout_ms: u64,
    /// A request (headers and body) must arrive within this time; answers are
    /// not limited by it.
    #[serde(default = "default_request_timeout_ms")]
    pub(super) request_timeout_ms: u64,
    /// A client connection with no request in flight for this long is closed.
    #[serde(default = "default_connection_idle_timeout_ms")]
    pub(super) connection_idle_timeout_ms: u64,
    /// Client connections one Envoy holds at once (bootstrap: Envoy's global
    /// downstream connection monitor); more are closed on accept.
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: u64,
    /// Envoy's heap (bootstrap: fixed heap monitor of the overload manager):
    /// near it, the streams holding the most memory are reset, then new
    /// requests are refused.
    #[serde(default = "default_max_heap_bytes")]
    pub(super) max_heap_bytes: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_request_bytes: default_max_request_bytes(),
            max_attempts: default_max_attempts(),
            stream_idle_timeout_ms: None,
            request_headers_timeout_ms: default_request_headers_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            connection_idle_timeout_ms: default_connection_idle_timeout_ms(),
            max_connections: default_max_connections(),
            max_heap_bytes: default_max_heap_bytes(),
        }
    }
}

fn default_max_request_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_max_attempts() -> usize {
    4
}
fn default_request_headers_timeout_ms() -> u64 {
    10_000
}
// A 10 MiB body takes 17 s at 5 Mbit/s.
fn default_request_timeout_ms() -> u64 {
    60_000
}
fn default_connection_idle_timeout_ms() -> u64 {
    60_000
}
fn default_max_connections() -> u64 {
    10_000
}
fn default_max_heap_bytes() -> u64 {
    1024 * 1024 * 1024
}

/// Smallest heap limit accepted: Envoy with the Wasm runtime needs tens of MiB
/// before it serves anything.
const MIN_HEAP_BYTES: u64 = 64 * 1024 * 1024;

/// The limits only Envoy's bootstrap can set (read once at Envoy's start):
/// `switchyard bootstrap --config FILE` takes them from the file's `limits:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootstrapLimits {
    /// Client connections one Envoy holds at once.
    pub max_connections: u64,
    /// Heap size the overload manager measures against.
    pub max_heap_bytes: u64,
}

impl Default for BootstrapLimits {
    fn default() -> Self {
        BootstrapLimits {
            max_connections: default_max_connections(),
            max_heap_bytes: default_max_heap_bytes(),
        }
    }
}

impl RawLimits {
    /// Checks the section; problems are added to `problems`.
    pub(super) fn check(&self, problems: &mut Vec<String>) {
        check(self, problems);
    }

    /// The limits of Envoy's bootstrap.
    pub(super) fn bootstrap(&self) -> BootstrapLimits {
        BootstrapLimits {
            max_connections: self.max_connections,
            max_heap_bytes: self.max_heap_bytes,
        }
    }
}

fn check(l: &RawLimits, problems: &mut Vec<String>) {
    if let Err(e) = switchyard_core::config::check_max_attempts(l.max_attempts) {
        problems.push(format!("limits.max_attempts: {e}"));
    }
    if l.stream_idle_timeout_ms == Some(0) {
        problems.push("limits.stream_idle_timeout_ms: expected > 0".to_string());
    }
    if l.max_request_bytes < 1024 {
        problems.push(format!(
            "limits.max_request_bytes: expected at least 1024, got {}",
            l.max_request_bytes
        ));
    }
    for (name, v) in [
        ("request_headers_timeout_ms", l.request_headers_timeout_ms),
        ("request_timeout_ms", l.request_timeout_ms),
        ("connection_idle_timeout_ms", l.connection_idle_timeout_ms),
        ("max_connections", l.max_connections),
    ] {
        if v == 0 {
            problems.push(format!("limits.{name}: expected > 0"));
        }
    }
    if l.request_headers_timeout_ms > l.request_timeout_ms {
        problems.push(format!(
            "limits.request_headers_timeout_ms ({}) exceeds limits.request_timeout_ms ({}): the headers are part of the request",
            l.request_headers_timeout_ms, l.request_timeout_ms
        ));
    }
    if l.max_connections > u64::from(u32::MAX) {
        problems.push(format!(
            "limits.max_connections: expected at most {}, got {}",
            u32::MAX,
            l.max_connections
        ));
    }
    if l.max_heap_bytes < MIN_HEAP_BYTES {
        problems.push(format!(
            "limits.max_heap_bytes: expected at least {MIN_HEAP_BYTES} (64 MiB), got {}",
            l.max_heap_bytes
        ));
    }
}

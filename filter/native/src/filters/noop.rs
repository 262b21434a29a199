//! `noop`: the benchmark floors of a native filter. With an empty config it continues
//! everywhere (`floor-native`). With `work` (config `work;role=down` or `work;role=up`) it
//! makes Envoy do what Switchyard's planner (`down`) or adapter (`up`) makes it do per
//! request, with no decision in between (`floor-native-work`): hold the request headers
//! until the body's end (buffered), read the whole body and put it back, set request
//! headers, and downstream clear the route cache (a second route resolution); hold the
//! response headers until the body's end, read the whole response body, and downstream add
//! response headers. What is left between that floor and Switchyard is the filter's own
//! logic (`BENCH_PROFILE`).
#![forbid(unsafe_code)]

use crate::api::{BodyStatus, Filter, FilterConfig, HeaderMap, HeadersStatus, Stream};
use crate::kv;

pub struct NoopConfig {
    /// `None`: do nothing. `Some(down)`: the planner's (true) or adapter's (false) work.
    work: Option<bool>,
}

impl NoopConfig {
    pub fn new(config: &[u8]) -> Result<NoopConfig, String> {
        let kv = kv::parse(config);
        if !kv.contains_key("work") {
            return Ok(NoopConfig { work: None });
        }
        match kv.get("role").map(String::as_str) {
            Some("down") => Ok(NoopConfig { work: Some(true) }),
            Some("up") => Ok(NoopConfig { work: Some(false) }),
            other => Err(format!(
                "noop: `work` needs role=down or role=up, got {other:?}"
            )),
        }
    }
}

struct Noop;

/// The floor with Switchyard's Envoy work (see the module doc).
struct Work {
    down: bool,
}

impl FilterConfig for NoopConfig {
    fn new_filter(&self) -> Box<dyn Filter> {
        match self.work {
            None => Box::new(Noop),
            Some(down) => Box::new(Work { down }),
        }
    }
}

impl Filter for Noop {}

/// Headers Switchyard sets on every request and every answer (values of similar sizes).
const REQUEST_HEADERS: [(&str, &[u8]); 2] = [
    ("x-envoy-max-retries", b"0"),
    (
        "x-envoy-retry-on",
        b"5xx,reset,connect-failure,retriable-status-codes",
    ),
];
const RESPONSE_HEADERS: [(&str, &[u8]); 3] = [
    ("x-switchyard-provider", b"fast"),
    ("x-switchyard-model", b"gpt-4o-mini"),
    ("x-switchyard-attempts", b"1"),
];

impl Filter for Work {
    fn on_request_headers(&mut self, _s: &mut Stream<'_>, end_of_stream: bool) -> HeadersStatus {
        if end_of_stream {
            HeadersStatus::Continue
        } else {
            HeadersStatus::StopIteration
        }
    }

    fn on_request_body(&mut self, s: &mut Stream<'_>, end_of_stream: bool) -> BodyStatus {
        if !end_of_stream {
            return BodyStatus::StopIterationAndBuffer;
        }
        let body = s.request_body();
        s.replace_request_body(&body);
        s.set_request_header("content-length", body.len().to_string().as_bytes());
        for (name, value) in REQUEST_HEADERS {
            s.set_request_header(name, value);
        }
        if self.down {
            s.clear_route_cache();
        }
        BodyStatus::Continue
    }

    fn on_response_headers(&mut self, s: &mut Stream<'_>, end_of_stream: bool) -> HeadersStatus {
        if self.down {
            for (name, value) in RESPONSE_HEADERS {
                s.set_header(HeaderMap::ResponseHeaders, name, value);
            }
        }
        if end_of_stream || self.down {
            HeadersStatus::Continue
        } else {
            HeadersStatus::StopIteration
        }
    }

    fn on_response_body(&mut self, s: &mut Stream<'_>, end_of_stream: bool) -> BodyStatus {
        if self.down {
            return BodyStatus::Continue;
        }
        if !end_of_stream {
            return BodyStatus::StopIterationAndBuffer;
        }
        std::hint::black_box(s.response_body());
        BodyStatus::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_needs_a_role() {
        assert!(NoopConfig::new(b"").unwrap().work.is_none());
        assert_eq!(NoopConfig::new(b"work;role=down").unwrap().work, Some(true));
        assert_eq!(NoopConfig::new(b"work;role=up").unwrap().work, Some(false));
        assert!(NoopConfig::new(b"work").is_err());
    }
}

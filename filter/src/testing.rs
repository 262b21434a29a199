//! An in-memory [`Host`] for unit tests: planner and adapter run against it with
//! no Envoy, and the tests read what they did (headers, bodies, filter state,
//! local replies, shared state, counters).

use std::cell::RefCell;
use std::collections::HashMap;

use crate::host::{Body, Cas, Counter, Gauge, Histogram, Host, Map};

/// A local reply the filter sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A header map: names and raw values, in order.
type HeaderList = Vec<(String, Vec<u8>)>;

/// One stream's view of Envoy, plus the process state a test wants to share
/// between streams (clone the `shared` map across hosts to model workers).
#[derive(Debug, Default)]
pub struct MemHost {
    pub request: RefCell<HeaderList>,
    pub response: RefCell<HeaderList>,
    pub request_body: RefCell<Vec<u8>>,
    pub response_body: RefCell<Vec<u8>>,
    pub filter_state: RefCell<HashMap<String, String>>,
    pub cluster: Option<String>,
    pub details: Option<String>,
    pub replies: RefCell<Vec<Reply>>,
    pub route_cleared: RefCell<u32>,
    pub resumed: RefCell<u32>,
    pub now: u64,
    pub shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    pub counters: RefCell<HashMap<String, u64>>,
    pub calls: RefCell<Vec<(String, HeaderList)>>,
    /// gRPC streams opened: cluster, service, method.
    pub streams: RefCell<Vec<(String, String, String)>>,
    /// Messages sent on gRPC streams.
    pub stream_sent: RefCell<Vec<Vec<u8>>>,
    /// gRPC streams cancelled (tokens).
    pub stream_cancelled: RefCell<Vec<u32>>,
}

impl MemHost {
    /// A host whose request has these headers.
    pub fn with_request(headers: &[(&str, &str)]) -> MemHost {
        MemHost {
            request: RefCell::new(
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect(),
            ),
            now: 1_700_000_000_000,
            ..MemHost::default()
        }
    }

    fn map(&self, map: Map) -> &RefCell<HeaderList> {
        match map {
            Map::Request => &self.request,
            Map::Response => &self.response,
        }
    }

    /// Every value of request or response header `name`.
    pub fn values(&self, map: Map, name: &str) -> Vec<String> {
        self.map(map)
            .borrow()
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

impl Host for MemHost {
    fn header(&self, map: Map, name: &str) -> Option<String> {
        self.values(map, name).into_iter().next()
    }

    fn headers(&self, map: Map) -> Vec<(String, Vec<u8>)> {
        self.map(map).borrow().clone()
    }

    fn set_header(&self, map: Map, name: &str, value: Option<&str>) {
        let mut m = self.map(map).borrow_mut();
        m.retain(|(k, _)| k != name);
        if let Some(v) = value {
            m.push((name.to_string(), v.as_bytes().to_vec()));
        }
    }

    fn replace_headers(&self, map: Map, pairs: &[(String, Vec<u8>)]) {
        *self.map(map).borrow_mut() = pairs.to_vec();
    }

    fn body(&self, which: Body) -> Vec<u8> {
        match which {
            Body::Request => self.request_body.borrow().clone(),
            Body::Response => self.response_body.borrow().clone(),
        }
    }

    fn replace_body(&self, which: Body, bytes: &[u8]) {
        match which {
            Body::Request => *self.request_body.borrow_mut() = bytes.to_vec(),
            Body::Response => *self.response_body.borrow_mut() = bytes.to_vec(),
        }
    }

    fn set_filter_state(&self, key: &str, value: &str) -> bool {
        self.filter_state
            .borrow_mut()
            .insert(key.to_string(), value.to_string());
        true
    }

    fn upstream_cluster(&self) -> Option<String> {
        self.cluster.clone()
    }

    fn response_code_details(&self) -> Option<String> {
        self.details.clone()
    }

    fn clear_route_cache(&self) -> bool {
        *self.route_cleared.borrow_mut() += 1;
        true
    }

    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        self.replies.borrow_mut().push(Reply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        });
    }

    fn resume_response(&self) {
        *self.resumed.borrow_mut() += 1;
    }

    fn node_id(&self) -> String {
        "test-node".to_string()
    }

    fn now_ms(&self) -> u64 {
        self.now
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.shared.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Cas {
        let mut m = self.shared.borrow_mut();
        let version = m.get(key).map(|(_, c)| *c);
        if cas.is_some() && version.is_some() && cas != version {
            return Cas::Conflict;
        }
        m.insert(key.to_string(), (value.to_vec(), version.unwrap_or(0) + 1));
        Cas::Done
    }

    fn count(&self, counter: Counter, labels: &[&str], delta: u64) {
        *self
            .counters
            .borrow_mut()
            .entry(crate::metrics::flat_name(counter, labels))
            .or_default() += delta;
    }

    fn gauge(&self, gauge: Gauge, labels: &[&str], value: u64) {
        self.counters
            .borrow_mut()
            .insert(crate::metrics::flat_name(gauge, labels), value);
    }

    fn record(&self, histogram: Histogram, labels: &[&str], value: u64) {
        self.counters
            .borrow_mut()
            .insert(crate::metrics::flat_name(histogram, labels), value);
    }

    fn grpc_stream_open(&self, cluster: &str, service: &str, method: &str) -> Option<u32> {
        let mut streams = self.streams.borrow_mut();
        streams.push((cluster.into(), service.into(), method.into()));
        u32::try_from(streams.len()).ok()
    }

    fn grpc_stream_send(&self, _token: u32, message: &[u8]) -> bool {
        self.stream_sent.borrow_mut().push(message.to_vec());
        true
    }

    fn grpc_stream_cancel(&self, token: u32) {
        self.stream_cancelled.borrow_mut().push(token);
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        _body: Option<&[u8]>,
        _timeout_ms: u64,
    ) -> Option<u32> {
        let mut calls = self.calls.borrow_mut();
        calls.push((
            cluster.to_string(),
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        ));
        u32::try_from(calls.len()).ok()
    }
}

/// A filter config for `role`: providers `a` (OpenAI, key `key-a`) and `b`
/// (Anthropic, key `key-b`), route `chat` = `[a/gpt, b/claude]`.
pub fn config(role: &str) -> std::sync::Arc<switchyard_core::config::FilterConfig> {
    let json = serde_json::json!({
        "version": "t",
        "role": role,
        "providers": {
            "a": {"dialect": "openai", "cluster": "sy_provider_a", "authority": "a.example",
                  "base_path": "/v1", "api_keys": ["key-a"]},
            "b": {"dialect": "anthropic", "cluster": "sy_provider_b", "authority": "b.example",
                  "base_path": "/v1", "api_keys": ["key-b"], "forward_headers": ["anthropic-beta"]},
        },
        "routes": {"chat": {"chain": [
            {"provider": "a", "model": "gpt"}, {"provider": "b", "model": "claude"}]}},
        "max_request_bytes": 100000,
        "max_attempts": 4,
    });
    let cfg = switchyard_core::config::FilterConfig::from_json(json.to_string().as_bytes());
    std::sync::Arc::new(cfg.unwrap_or_else(|e| unreachable!("test config: {e}")))
}

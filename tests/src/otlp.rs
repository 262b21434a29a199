//! An OTLP/gRPC trace receiver for tests: implements the OpenTelemetry
//! collector's `TraceService/Export` on a loopback port and keeps every span
//! it was sent. The messages are the subset of `opentelemetry/proto`'s
//! trace v1 the tests read, written out with prost's derive (prost skips the
//! fields not declared): no code generation, no `protoc`, and no crate beyond
//! tonic and prost, which the workspace already builds.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::codegen::{BoxFuture, Service, http};

/// The gRPC method Envoy's OpenTelemetry tracer calls.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// `opentelemetry.proto` messages (trace v1, common v1, resource v1), the
/// fields the tests read.
pub mod proto {
    /// `ExportTraceServiceRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        /// Spans by resource.
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    /// `ExportTraceServiceResponse` (empty: everything accepted).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceResponse {}
    /// `ResourceSpans`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        /// The resource (service name…).
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        /// Spans by instrumentation scope.
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    /// `Resource`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        /// Its attributes.
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    /// `ScopeSpans`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        /// The spans.
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    /// `Span`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        /// 16 bytes.
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        /// 8 bytes.
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        /// W3C `tracestate`.
        #[prost(string, tag = "3")]
        pub trace_state: String,
        /// 8 bytes, empty for a root span.
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        /// Name.
        #[prost(string, tag = "5")]
        pub name: String,
        /// `SpanKind` (2 server, 3 client).
        #[prost(int32, tag = "6")]
        pub kind: i32,
        /// Start (Unix ns).
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        /// End (Unix ns).
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        /// Attributes.
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        /// Status.
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }
    /// `Status`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        /// Message.
        #[prost(string, tag = "2")]
        pub message: String,
        /// 0 unset, 1 ok, 2 error.
        #[prost(int32, tag = "3")]
        pub code: i32,
    }
    /// `KeyValue`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        /// Key.
        #[prost(string, tag = "1")]
        pub key: String,
        /// Value.
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    /// `AnyValue`: the scalar cases.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        /// The value.
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4")]
        pub value: Option<any_value::Value>,
    }
    /// `AnyValue`'s cases.
    pub mod any_value {
        /// A scalar.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            /// String.
            #[prost(string, tag = "1")]
            StringValue(String),
            /// Bool.
            #[prost(bool, tag = "2")]
            BoolValue(bool),
            /// Integer.
            #[prost(int64, tag = "3")]
            IntValue(i64),
            /// Float.
            #[prost(double, tag = "4")]
            DoubleValue(f64),
        }
    }
}

/// A span as the tests read it: ids in hex, attributes as strings.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, empty for a root span.
    pub parent_span_id: String,
    /// W3C `tracestate`.
    pub trace_state: String,
    /// Name.
    pub name: String,
    /// 2 server, 3 client.
    pub kind: i32,
    /// Start (Unix ns).
    pub start_ns: u64,
    /// End (Unix ns).
    pub end_ns: u64,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Status code (0 unset, 1 ok, 2 error).
    pub status: i32,
    /// The resource's attributes (`service.name`…).
    pub resource: BTreeMap<String, String>,
}

impl SpanRecord {
    /// Attribute `k` (empty when absent).
    pub fn attr(&self, k: &str) -> &str {
        self.attributes.get(k).map(String::as_str).unwrap_or("")
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn attributes(kvs: &[proto::KeyValue]) -> BTreeMap<String, String> {
    use proto::any_value::Value;
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                None => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// The spans of one export request.
fn records(req: &proto::ExportTraceServiceRequest) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            out.push(SpanRecord {
                trace_id: hex(&s.trace_id),
                span_id: hex(&s.span_id),
                parent_span_id: hex(&s.parent_span_id),
                trace_state: s.trace_state.clone(),
                name: s.name.clone(),
                kind: s.kind,
                start_ns: s.start_time_unix_nano,
                end_ns: s.end_time_unix_nano,
                attributes: attributes(&s.attributes),
                status: s.status.as_ref().map_or(0, |st| st.code),
                resource: resource.clone(),
            });
        }
    }
    out
}

/// The trace service: keeps what it is sent.
#[derive(Clone, Debug, Default)]
struct TraceService {
    spans: Arc<Mutex<Vec<SpanRecord>>>,
}

/// `Export`, as a unary gRPC method.
struct Export(TraceService);

impl tonic::server::UnaryService<proto::ExportTraceServiceRequest> for Export {
    type Response = proto::ExportTraceServiceResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<proto::ExportTraceServiceRequest>) -> Self::Future {
        let spans = self.0.spans.clone();
        Box::pin(async move {
            let got = records(request.get_ref());
            if let Ok(mut s) = spans.lock() {
                s.extend(got);
            }
            Ok(tonic::Response::new(proto::ExportTraceServiceResponse {}))
        })
    }
}

impl<B> Service<http::Request<B>> for TraceService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let svc = self.clone();
        Box::pin(async move {
            if req.uri().path() == EXPORT_PATH {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                return Ok(grpc.unary(Export(svc), req).await);
            }
            let mut r = http::Response::new(tonic::body::Body::default());
            r.headers_mut().insert(
                tonic::Status::GRPC_STATUS,
                http::HeaderValue::from(tonic::Code::Unimplemented as i32),
            );
            r.headers_mut()
                .insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
            Ok(r)
        })
    }
}

impl tonic::server::NamedService for TraceService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

/// A running receiver; stops with the test's runtime.
#[derive(Debug)]
pub struct Receiver {
    /// Where it listens (the gateway's `tracing.otlp_grpc`).
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<SpanRecord>>>,
}

impl Receiver {
    /// Starts a receiver on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let svc = TraceService::default();
        let spans = svc.spans.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        });
        Ok(Receiver { addr, spans })
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until `done` accepts the spans received (Envoy exports in batches,
    /// every 5 s or every 5 spans); returns them, or `None` after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[SpanRecord]) -> bool) -> Option<Vec<SpanRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return Some(spans);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

//! What the listener adds for observers: Envoy's OpenTelemetry tracer (one span
//! per client request, one per attempt, Switchyard's facts as attributes) with
//! the cluster that reaches the collector, and the decision-log access log.
//! The facts come from filter state the filter writes
//! (`switchyard_core::observe`).

use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::trace::v3 as trace;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3 as file_log;
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3 as cel_filter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::r#type::tracing::v3 as tag;
use switchyard_core::observe::{
    ATTEMPT_SPAN_FACTS, DECISION_STATE, REQUEST_SPAN_FACTS, SPAN_NAME_STATE,
};

use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;

use super::resources::{any, duration_ms, upstream_tls};
use crate::config::{Config, FilterBuild, Tracing};

/// Name of the cluster that reaches the OTLP collector.
pub const COLLECTOR_CLUSTER: &str = "switchyard_otel";

/// How long Envoy waits for the collector to take a batch of spans.
const EXPORT_TIMEOUT_MS: u64 = 5_000;

/// `%FILTER_STATE(<key>:PLAIN)%` for the key the filter build writes.
fn state(build: &FilterBuild, key: &str) -> String {
    format!("%FILTER_STATE({}:PLAIN)%", build.state_key(key))
}

/// The HCM's tracing: the OpenTelemetry provider exporting to
/// [`COLLECTOR_CLUSTER`], a span per attempt (the router's upstream spans), and
/// Switchyard's facts as custom tags. A client's `traceparent`/`tracestate`
/// are read by the connection manager before any filter runs, so the
/// planner's header allow-list (which drops them from the request) does not
/// stop the trace from being continued; each attempt carries its own
/// `traceparent`, injected by the router.
pub fn tracing(cfg: &Config) -> Option<hcm::http_connection_manager::Tracing> {
    let t = cfg.tracing.as_ref()?;
    let provider = trace::OpenTelemetryConfig {
        grpc_service: Some(core::GrpcService {
            timeout: Some(duration_ms(EXPORT_TIMEOUT_MS)),
            target_specifier: Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(
                core::grpc_service::EnvoyGrpc {
                    cluster_name: COLLECTOR_CLUSTER.to_string(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        service_name: t.service_name.clone(),
        ..Default::default()
    };
    let custom_tags = REQUEST_SPAN_FACTS
        .iter()
        .chain(ATTEMPT_SPAN_FACTS)
        .map(|(attribute, key)| tag::CustomTag {
            tag: attribute.to_string(),
            r#type: Some(tag::custom_tag::Type::Value(state(&cfg.filter, key))),
        })
        .collect();
    let percent = |value| envoy_types::pb::envoy::r#type::v3::Percent { value };
    Some(hcm::http_connection_manager::Tracing {
        random_sampling: Some(percent(t.sampling_percent)),
        client_sampling: Some(percent(100.0)),
        overall_sampling: Some(percent(100.0)),
        spawn_upstream_span: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        // Evaluated when the span ends: by then `:path` is the last attempt's
        // (the adapter rewrites the shared header map), so the name comes from
        // the planner (`chat <model>`, OpenTelemetry's GenAI convention).
        operation: state(&cfg.filter, SPAN_NAME_STATE),
        upstream_operation: "attempt %UPSTREAM_CLUSTER%".to_string(),
        custom_tags,
        provider: Some(trace::tracing::Http {
            name: "envoy.tracers.opentelemetry".to_string(),
            config_type: Some(trace::tracing::http::ConfigType::TypedConfig(any(
                &provider,
            ))),
        }),
        ..Default::default()
    })
}

/// The cluster that reaches the collector: HTTP/2 (gRPC), static for an IP
/// literal, logical DNS for a name, TLS with SNI and the system CA bundle for
/// `https://`.
pub fn collector_cluster(t: &Tracing) -> cluster::Cluster {
    let discovery = if t.host.parse::<std::net::IpAddr>().is_ok() {
        cluster::cluster::DiscoveryType::Static
    } else {
        cluster::cluster::DiscoveryType::LogicalDns
    };
    let options = upstream_http::HttpProtocolOptions {
        upstream_protocol_options: Some(
            upstream_http::http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                upstream_http::http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        upstream_http::http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            core::Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    };
    let transport_socket = t.tls.then(|| upstream_tls(&t.host, &["h2"]));
    cluster::Cluster {
        name: COLLECTOR_CLUSTER.to_string(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
            discovery as i32,
        )),
        connect_timeout: Some(duration_ms(1000)),
        dns_lookup_family: cluster::cluster::DnsLookupFamily::V4Preferred as i32,
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            any(&options),
        )]
        .into_iter()
        .collect(),
        transport_socket,
        load_assignment: Some(endpoint::ClusterLoadAssignment {
            cluster_name: COLLECTOR_CLUSTER.to_string(),
            endpoints: vec![endpoint::LocalityLbEndpoints {
                lb_endpoints: vec![endpoint::LbEndpoint {
                    host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                        endpoint::Endpoint {
                            address: Some(core::Address {
                                address: Some(core::address::Address::SocketAddress(
                                    core::SocketAddress {
                                        address: t.host.clone(),
                                        port_specifier: Some(
                                            core::socket_address::PortSpecifier::PortValue(
                                                u32::from(t.port),
                                            ),
                                        ),
                                        ..Default::default()
                                    },
                                )),
                            }),
                            hostname: t.host.clone(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The decision log: one line per request the planner recorded, the JSON
/// object it left in filter state [`DECISION_STATE`] (requests Envoy answered
/// before the planner saw them have none and are not logged).
pub fn access_logs(cfg: &Config) -> Vec<accesslog::AccessLog> {
    let Some(d) = &cfg.decision_log else {
        return Vec::new();
    };
    let key = cfg.filter.state_key(DECISION_STATE);
    let log = file_log::FileAccessLog {
        path: d.path.display().to_string(),
        access_log_format: Some(file_log::file_access_log::AccessLogFormat::LogFormat(
            core::SubstitutionFormatString {
                format: Some(core::substitution_format_string::Format::TextFormatSource(
                    core::DataSource {
                        specifier: Some(core::data_source::Specifier::InlineString(format!(
                            "{}\n",
                            state(&cfg.filter, DECISION_STATE)
                        ))),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
        )),
    };
    let only_recorded = accesslog::AccessLogFilter {
        filter_specifier: Some(
            accesslog::access_log_filter::FilterSpecifier::ExtensionFilter(
                accesslog::ExtensionFilter {
                    name: "envoy.access_loggers.extension_filters.cel".to_string(),
                    config_type: Some(accesslog::extension_filter::ConfigType::TypedConfig(any(
                        &cel_filter::ExpressionFilter {
                            expression: format!("'{key}' in filter_state"),
                            ..Default::default()
                        },
                    ))),
                },
            ),
        ),
    };
    vec![accesslog::AccessLog {
        name: "envoy.access_loggers.file".to_string(),
        filter: Some(only_recorded),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(any(&log))),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(filter: &str, extra: &str) -> Config {
        let text = format!(
            "{filter}\nproviders:\n  - {{name: a, dialect: openai, base_url: 'http://127.0.0.1:1/v1', api_key: {{value: k}}}}\nroutes:\n  - {{model: chat, chain: [a/m]}}\n{extra}"
        );
        crate::config::parse(&text, "t.yaml", Path::new("/"), &|_| None).unwrap()
    }

    fn tag_value(t: &hcm::http_connection_manager::Tracing, name: &str) -> String {
        t.custom_tags
            .iter()
            .find(|c| c.tag == name)
            .and_then(|c| match &c.r#type {
                Some(tag::custom_tag::Type::Value(v)) => Some(v.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    #[test]
    fn tags_read_the_filter_state_of_the_build() {
        let extra = "tracing: { otlp_grpc: '127.0.0.1:4317', sampling_percent: 10 }\n";
        let wasm = cfg("filter: { wasm: /x.wasm }", extra);
        let t = tracing(&wasm).unwrap();
        assert_eq!(
            tag_value(&t, "switchyard.route"),
            "%FILTER_STATE(wasm.sy_t_route:PLAIN)%"
        );
        assert_eq!(t.operation, "%FILTER_STATE(wasm.sy_t_name:PLAIN)%");
        assert_eq!(t.random_sampling.as_ref().map(|p| p.value), Some(10.0));
        assert_eq!(t.spawn_upstream_span.as_ref().map(|b| b.value), Some(true));
        let native = cfg("filter: { module: /x.so }", extra);
        let t = tracing(&native).unwrap();
        assert_eq!(
            tag_value(&t, "switchyard.attempt.result"),
            "%FILTER_STATE(sy_t_attempt_result:PLAIN)%"
        );
        assert_eq!(
            collector_cluster(native.tracing.as_ref().unwrap()).name,
            COLLECTOR_CLUSTER
        );
        assert!(tracing(&cfg("filter: { module: /x.so }", "")).is_none());
    }

    #[test]
    fn the_decision_log_prints_one_filter_state_value_when_set() {
        let c = cfg(
            "filter: { wasm: /x.wasm }",
            "decision_log: { path: /var/log/d.log }\n",
        );
        let logs = access_logs(&c);
        assert_eq!(logs.len(), 1);
        let Some(accesslog::access_log::ConfigType::TypedConfig(any)) = &logs[0].config_type else {
            panic!()
        };
        let file =
            <file_log::FileAccessLog as prost::Message>::decode(any.value.as_slice()).unwrap();
        assert_eq!(file.path, "/var/log/d.log");
        let Some(accesslog::access_log_filter::FilterSpecifier::ExtensionFilter(f)) = logs[0]
            .filter
            .as_ref()
            .and_then(|f| f.filter_specifier.as_ref())
        else {
            panic!()
        };
        let Some(accesslog::extension_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!()
        };
        let cel =
            <cel_filter::ExpressionFilter as prost::Message>::decode(any.value.as_slice()).unwrap();
        assert_eq!(cel.expression, "'wasm.sy_decision' in filter_state");
        assert!(access_logs(&cfg("filter: { wasm: /x.wasm }", "")).is_empty());
    }
}
